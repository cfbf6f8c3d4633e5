"""Event payloads: the records hooks receive and plugins return.

Every payload is a frozen, slotted attrs record built with keyword arguments.
Each top-level payload carries the ``tenant`` it belongs to, so a plugin
never has to guess whose data it holds; :class:`InvoiceLine` (a part of an
:class:`Invoice`) and :class:`Route` (a plugin's own URL) are the two
exceptions.

Records check themselves when built: datetimes must be timezone-aware, money
is :class:`~decimal.Decimal`, a route's path and methods must make sense.
A mistake raises :class:`ValueError` (a wrong value) or :class:`TypeError`
(a wrong kind of value) naming the field.

For the process sandbox, :func:`to_wire` turns a payload into a JSON-ready
``dict`` and :func:`from_wire` reads one back, strictly::

    >>> lead = example(Lead)
    >>> wire = to_wire(lead)
    >>> wire["value"], wire["created_at"]
    ('4800.00', '2024-05-06T09:30:00+00:00')
    >>> from_wire(Lead, wire) == lead
    True

On the wire, :class:`~decimal.Decimal` values are strings, datetimes and dates
are ISO 8601 text, ``bytes`` are base64 text and tuples are arrays. A datetime
keeps its UTC offset but not its zone name: it comes back as the same instant
with a fixed-offset ``tzinfo``.

:func:`example` gives a realistic instance of every type in
:data:`PAYLOAD_TYPES`, for documentation, the CLI and tests.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, TypeAlias, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._converting import is_variadic_tuple, locate, strict_tuple_hooks
from ._json import JSONValue, check_int, check_json, json_type_name
from .errors import PayloadError, Problem

__all__ = [
    "HTTP_METHODS",
    "PAYLOAD_TYPES",
    "ApiRequest",
    "ApiResponse",
    "Booking",
    "Context",
    "Email",
    "HtmlFragment",
    "Invoice",
    "InvoiceLine",
    "Lead",
    "Notification",
    "PayloadError",
    "Placement",
    "Report",
    "Route",
    "RouteHandler",
    "Sms",
    "User",
    "Widget",
    "example",
    "from_wire",
    "normalise_routes",
    "to_wire",
]

_T = TypeVar("_T")

#: Where an :class:`HtmlFragment` goes in the host's pages.
Placement: TypeAlias = Literal["head", "footer"]

#: The HTTP methods a :class:`Route` may serve.
HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_CURRENCY: Final = re.compile(r"[A-Z]{3}")
_TOKEN: Final = re.compile(r"[A-Z][A-Z-]*")
_DECIMAL_TEXT: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


# -- field converters and validators -----------------------------------------------------------
#
# Converters copy what they are given (a caller's list or dict never becomes
# shared state of a frozen record) and refuse the mistakes that would
# otherwise pass silently, such as a single string where a tuple of strings
# belongs.


def _where(instance: object, attribute: attrs.Attribute[Any]) -> str:
    return f"{type(instance).__name__}.{attribute.name}"


def _tenant(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{_where(instance, attribute)} must be a string (got {value!r})")
    if not value.strip():
        raise ValueError(f"{_where(instance, attribute)} must not be empty")


def _aware(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None and attribute.default is None:
        return
    if not isinstance(value, datetime):
        raise TypeError(f"{_where(instance, attribute)} must be a datetime (got {value!r})")
    if value.utcoffset() is None:
        raise ValueError(
            f"{_where(instance, attribute)} must be timezone-aware (got the naive datetime "
            f"{value.isoformat()}); give it a tzinfo, e.g. datetime.now(timezone.utc)"
        )


def _day(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    # datetime is a subclass of date: a datetime here would lose its time on the wire.
    if value is not None and (not isinstance(value, date) or isinstance(value, datetime)):
        raise TypeError(f"{_where(instance, attribute)} must be a date (got {value!r})")


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{_where(instance, attribute)} must be an integer (got {value!r})")
    if value < 0:
        raise ValueError(f"{_where(instance, attribute)} must not be negative (got {value})")


def _must(
    test: Callable[[Any], bool], expected: str
) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    """A validator that raises ``ValueError("<Class>.<field> must be <expected> ...")``."""

    def validator(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not test(value):
            raise ValueError(f"{_where(instance, attribute)} must be {expected} (got {value!r})")

    return validator


def _body(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bytes):
        hint = "; encode text first, e.g. text.encode('utf-8')" if isinstance(value, str) else ""
        raise TypeError(f"{_where(instance, attribute)} must be bytes (got {value!r}){hint}")


def _decimal(value: Decimal | int) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        hint = f"; write Decimal({str(value)!r})" if isinstance(value, float) else ""
        raise TypeError(f"an amount must be a Decimal or an int (got {value!r}){hint}")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"an amount must be a finite number (got {value!r})")
    return number


def _optional_decimal(value: Decimal | int | None) -> Decimal | None:
    return None if value is None else _decimal(value)


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)):
        raise TypeError(f"expected a tuple of strings, not a single string ({value!r})")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"expected strings only (got {item!r})")
    return items


def _string_map(value: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a mapping of strings to strings (got {value!r})")
    entries: Iterable[tuple[object, object]] = value.items()  # checked, whatever the hint says
    for key, item in entries:
        if not isinstance(key, str) or not isinstance(item, str):
            raise TypeError(f"expected strings as keys and values (got {key!r}: {item!r})")
    return dict(value)


def _json_object(value: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a mapping of JSON values (got {value!r})")
    copy = check_json(dict(value))  # a deep copy: nested lists and dicts are not shared
    assert isinstance(copy, dict)  # check_json maps a dict to a dict
    return copy


def _lines(value: Iterable[InvoiceLine]) -> tuple[InvoiceLine, ...]:
    items = tuple(value)
    for item in items:
        if not isinstance(item, InvoiceLine):
            raise TypeError(f"Invoice.lines must hold InvoiceLine records (got {item!r})")
    return items


# -- the payloads ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class User:
    """A person of a tenant: who acts in a :class:`Context`, or sends an :class:`ApiRequest`.

    The host maps its own user model onto this record; plugins see nothing else
    of it.
    """

    #: The host's id for the user, as text.
    id: str
    #: The tenant (business) the user belongs to.
    tenant: str = attrs.field(validator=_tenant)
    #: The user's e-mail address.
    email: str
    #: The user's display name.
    name: str
    #: The host's role names for the user, such as ``"admin"`` or ``"sales"``.
    roles: tuple[str, ...] = attrs.field(default=(), converter=_strings)


@attrs.frozen(kw_only=True)
class Context:
    """Who, where and on whose behalf: passed with every tenant hook call.

    ``tenant`` is the tenant the hook runs for; the plugin's ``api`` is scoped
    to it. ``user`` is the person whose action triggered the hook, or None for
    background work (imports, schedules).
    """

    #: The tenant the hook runs for.
    tenant: str = attrs.field(validator=_tenant)
    #: The acting user, or None when no person triggered the event.
    user: User | None = None
    #: The host's id for the request or job, for correlating logs.
    request_id: str | None = None
    #: The client's IP address, when the event came from a web request.
    ip: str | None = None
    #: The preferred language, as a BCP 47 tag such as ``"en-GB"``.
    locale: str | None = None
    #: Anything else the host wants plugins to see (JSON values, copied).
    extras: Mapping[str, JSONValue] = attrs.field(factory=dict, converter=_json_object)


@attrs.frozen(kw_only=True)
class Lead:
    """A sales lead: the payload of ``lead_created``, ``lead_updated`` and similar hooks."""

    #: The host's id for the lead.
    id: str
    #: The tenant that owns the lead.
    tenant: str = attrs.field(validator=_tenant)
    #: The person's or company's name.
    name: str
    #: The contact e-mail address.
    email: str | None = None
    #: The contact phone number, as entered.
    phone: str | None = None
    #: The company the lead works for.
    company: str | None = None
    #: Where the lead came from, such as ``"website"`` or ``"referral"``.
    source: str | None = None
    #: The host's pipeline stage, such as ``"new"``, ``"contacted"``, ``"won"``.
    status: str = "new"
    #: The estimated deal value, in the tenant's currency.
    value: Decimal | None = attrs.field(default=None, converter=_optional_decimal)
    #: When the lead was created (timezone-aware).
    created_at: datetime | None = attrs.field(default=None, validator=_aware)
    #: The host's custom fields (JSON values, copied).
    data: Mapping[str, JSONValue] = attrs.field(factory=dict, converter=_json_object)


@attrs.frozen(kw_only=True)
class Booking:
    """An appointment: the payload of ``booking_created``, ``booking_cancelled`` and similar."""

    #: The host's id for the booking.
    id: str
    #: The tenant that owns the booking.
    tenant: str = attrs.field(validator=_tenant)
    #: Who booked.
    customer_name: str
    #: Where to reach the customer.
    customer_email: str
    #: The booked service, such as ``"Initial consultation"``.
    service: str
    #: When the appointment starts (timezone-aware).
    starts_at: datetime = attrs.field(validator=_aware)
    #: When it ends (timezone-aware, not before ``starts_at``).
    ends_at: datetime = attrs.field(validator=_aware)
    #: The host's state, such as ``"pending"``, ``"confirmed"``, ``"cancelled"``.
    status: str = "pending"
    #: The customer's phone number, as entered.
    customer_phone: str | None = None
    #: Free-text notes.
    notes: str = ""

    @ends_at.validator
    def _ends_after_start(self, attribute: attrs.Attribute[datetime], value: datetime) -> None:
        if value < self.starts_at:
            raise ValueError(
                f"Booking.ends_at ({value.isoformat()}) must not be before "
                f"starts_at ({self.starts_at.isoformat()})"
            )


@attrs.frozen(kw_only=True)
class InvoiceLine:
    """One line of an :class:`Invoice`: what was sold, how many, at what unit price."""

    #: What the line is for.
    description: str
    #: How many units (a Decimal, so that hours such as 1.5 are exact).
    quantity: Decimal = attrs.field(converter=_decimal)
    #: The price of one unit, in the invoice's currency.
    unit_price: Decimal = attrs.field(converter=_decimal)

    @property
    def total(self) -> Decimal:
        """``quantity * unit_price``, unrounded."""
        return self.quantity * self.unit_price


@attrs.frozen(kw_only=True)
class Invoice:
    """An invoice: the payload of ``invoice_created``, ``invoice_paid`` and similar hooks.

    >>> invoice = example(Invoice)
    >>> [line.total for line in invoice.lines], invoice.total
    ([Decimal('1800.00'), Decimal('150.00')], Decimal('1950.00'))
    """

    #: The host's id for the invoice.
    id: str
    #: The tenant that issued it.
    tenant: str = attrs.field(validator=_tenant)
    #: The invoice number printed on it.
    number: str
    #: Who is billed.
    customer_name: str
    #: The ISO 4217 currency code, such as ``"EUR"``.
    currency: str = attrs.field(
        validator=_must(lambda v: bool(_CURRENCY.fullmatch(v)), "an ISO 4217 code such as 'EUR'")
    )
    #: The lines, in order.
    lines: tuple[InvoiceLine, ...] = attrs.field(default=(), converter=_lines)
    #: The host's state, such as ``"draft"``, ``"sent"``, ``"paid"``, ``"void"``.
    status: str = "draft"
    #: Where the invoice is sent.
    customer_email: str | None = None
    #: The day it was issued.
    issued_on: date | None = attrs.field(default=None, validator=_day)
    #: The day payment is due.
    due_on: date | None = attrs.field(default=None, validator=_day)
    #: When it was paid in full (timezone-aware).
    paid_at: datetime | None = attrs.field(default=None, validator=_aware)

    @property
    def total(self) -> Decimal:
        """The sum of the lines' totals (``Decimal(0)`` without lines)."""
        return sum((line.total for line in self.lines), Decimal(0))


@attrs.frozen(kw_only=True)
class Email:
    """An e-mail a plugin asks the host to send (``api.send_email``), or one the host sent."""

    #: The tenant on whose behalf it is sent.
    tenant: str = attrs.field(validator=_tenant)
    #: The recipients' addresses (at least one).
    to: tuple[str, ...] = attrs.field(
        converter=_strings, validator=_must(bool, "at least one address")
    )
    #: The subject line.
    subject: str
    #: The plain-text body.
    body: str
    #: An HTML alternative to ``body``.
    html: str | None = None
    #: Where replies go, when not to the tenant's sender address.
    reply_to: str | None = None
    #: Addresses in copy.
    cc: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    #: Addresses in blind copy.
    bcc: tuple[str, ...] = attrs.field(default=(), converter=_strings)


@attrs.frozen(kw_only=True)
class Sms:
    """A text message a plugin asks the host to send (``api.send_sms``)."""

    #: The tenant on whose behalf it is sent.
    tenant: str = attrs.field(validator=_tenant)
    #: The recipient's phone number, preferably in E.164 form (``"+4930123456"``).
    to: str
    #: The message text.
    text: str


@attrs.frozen(kw_only=True)
class Notification:
    """A message for people of the tenant: what ``api.send_notification`` sends.

    The host decides how it is delivered: ``channel`` and ``recipient`` are
    hints that it may ignore.
    """

    #: The tenant whose people are notified.
    tenant: str = attrs.field(validator=_tenant)
    #: The message text.
    message: str
    #: A delivery channel the host knows, such as ``"in_app"``, ``"email"``, ``"slack"``.
    channel: str | None = None
    #: A user id or address; None means the tenant's default audience.
    recipient: str | None = None
    #: ``"info"``, ``"success"``, ``"warning"`` or ``"error"``, by convention.
    level: str = "info"


@attrs.frozen(kw_only=True)
class Report:
    """A generated report: the payload of ``report_generated`` and similar hooks."""

    #: The host's id for the report.
    id: str
    #: The tenant the report covers.
    tenant: str = attrs.field(validator=_tenant)
    #: The report's title.
    name: str
    #: What kind of report it is, such as ``"sales"`` or ``"bookings"``.
    kind: str
    #: When it was generated (timezone-aware).
    generated_at: datetime = attrs.field(validator=_aware)
    #: How many rows it holds.
    rows: int = attrs.field(default=0, validator=_non_negative)
    #: Where to download it, when the host stored it.
    url: str | None = None


@attrs.frozen(kw_only=True)
class Widget:
    """A dashboard box: what ``dashboard_widget`` implementations return, one each.

    The host places widgets by ``order`` (lowest first) and sizes them by
    ``size`` (``"small"``, ``"medium"``, ``"large"`` or ``"full"``, by
    convention). ``html`` is inserted into the page as it is: hosts should
    sanitise or sandbox it (for example in an ``iframe``) for untrusted plugins.
    """

    #: The tenant whose dashboard shows it.
    tenant: str = attrs.field(validator=_tenant)
    #: The box's heading.
    title: str
    #: The box's content.
    html: str
    #: How much room it asks for.
    size: str = "medium"
    #: Where it goes among the widgets (lowest first).
    order: int = 0
    #: The plugin that made it; the dispatcher fills it in when None.
    plugin_id: str | None = None


@attrs.frozen(kw_only=True)
class HtmlFragment:
    """HTML a plugin adds to the host's pages, in the ``<head>`` or before ``</body>``.

    What the ``inject_head`` and ``inject_footer`` hooks return. The host
    inserts ``html`` as it is, so it is for trusted plugins or must be sanitised.
    """

    #: The tenant whose pages get it.
    tenant: str = attrs.field(validator=_tenant)
    #: The markup.
    html: str
    #: ``"head"`` or ``"footer"``.
    placement: Placement = attrs.field(
        validator=_must(lambda v: v in ("head", "footer"), "'head' or 'footer'")
    )
    #: The plugin that made it; the dispatcher fills it in when None.
    plugin_id: str | None = None


@attrs.frozen(kw_only=True)
class ApiRequest:
    """An HTTP request, independent of any web framework: what a :class:`Route` handler gets.

    The host's adapter builds it from the framework's request. ``headers`` and
    ``query`` hold one value per name (the adapter joins or picks repeats).
    """

    #: The tenant the request is for.
    tenant: str = attrs.field(validator=_tenant)
    #: The method, upper-case (``"GET"``, ``"POST"``, ...).
    method: str = attrs.field(
        validator=_must(lambda v: bool(_TOKEN.fullmatch(v)), "an upper-case method such as 'GET'")
    )
    #: The path, starting with ``/``, without the query string.
    path: str = attrs.field(
        validator=_must(lambda v: v.startswith("/"), "a path starting with '/'")
    )
    #: The request headers.
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_string_map)
    #: The query-string parameters.
    query: Mapping[str, str] = attrs.field(factory=dict, converter=_string_map)
    #: The values the adapter matched from the route's path pattern.
    path_params: Mapping[str, str] = attrs.field(factory=dict, converter=_string_map)
    #: The raw body.
    body: bytes = attrs.field(default=b"", validator=_body)
    #: The signed-in user, or None.
    user: User | None = None


@attrs.frozen(kw_only=True)
class ApiResponse:
    """An HTTP response, independent of any web framework: what a :class:`Route` handler returns.

    >>> response = ApiResponse.json("acme", {"open_leads": 3})
    >>> response.status, response.headers, response.body
    (200, {'content-type': 'application/json'}, b'{"open_leads":3}')
    """

    #: The tenant the response is for.
    tenant: str = attrs.field(validator=_tenant)
    #: The status code (100-599).
    status: int = attrs.field(
        default=200,
        validator=_must(
            lambda v: isinstance(v, int) and 100 <= v <= 599, "an HTTP status, 100-599"
        ),
    )
    #: The response headers.
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_string_map)
    #: The raw body.
    body: bytes = attrs.field(default=b"", validator=_body)

    @classmethod
    def json(
        cls,
        tenant: str,
        data: JSONValue,
        status: int = 200,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> ApiResponse:
        """A response whose body is ``data`` as compact UTF-8 JSON.

        ``content-type`` is ``application/json`` unless ``headers`` sets it.

        :raises ValueError: when ``data`` is not a JSON value (a ``NaN``, a set, ...).
        """
        try:
            checked = check_json(data)
        except ValueError as exc:
            raise ValueError(f"ApiResponse.json: data {exc}") from None
        text = json.dumps(checked, ensure_ascii=False, separators=(",", ":"))
        merged = {"content-type": "application/json", **(headers or {})}
        return cls(tenant=tenant, status=status, headers=merged, body=text.encode("utf-8"))


#: What serves a :class:`Route`: takes the request, returns the response.
RouteHandler: TypeAlias = Callable[[ApiRequest], ApiResponse]


def _route_path(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"Route.path must be a string (got {value!r})")
    if not value.startswith("/"):
        raise ValueError(f"Route.path must start with '/' (got {value!r})")
    if re.search(r"[\s?#]", value):
        raise ValueError(
            f"Route.path must not contain spaces, '?' or '#' (got {value!r}); "
            "query parameters arrive in ApiRequest.query"
        )
    if {".", ".."} & set(value.split("/")):
        raise ValueError(f"Route.path must not contain '.' or '..' segments (got {value!r})")


def _route_methods(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    assert isinstance(value, tuple)  # the converter made it one
    if not value:
        raise ValueError("Route.methods must name at least one HTTP method, such as ('GET',)")
    allowed = ", ".join(sorted(HTTP_METHODS))
    for method in value:
        if method not in HTTP_METHODS:
            hint = f"; write {method.upper()!r}" if method.upper() in HTTP_METHODS else ""
            raise ValueError(
                f"Route.methods must be upper-case HTTP methods ({allowed}); got {method!r}{hint}"
            )
    if len(set(value)) != len(value):
        raise ValueError(f"Route.methods names a method twice ({value!r})")


def _handler(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not callable(value):
        raise TypeError(f"Route.handler must be callable (got {value!r})")


def _route_name(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"Route.name must be a non-empty string (got {value!r})")


@attrs.frozen(kw_only=True)
class Route:
    """A URL a plugin serves: what ``register_routes`` implementations return.

    The host mounts it under the plugin's prefix and calls ``handler`` with an
    :class:`ApiRequest`. A route made by :func:`normalise_routes` from an
    original-system ``(path, view, name)`` tuple may hold a framework-native
    view instead; the host's adapter decides whether it can serve it.

    ``handler`` is code, not data: :func:`to_wire` leaves it out and
    :func:`from_wire` refuses ``Route``. A sandboxed plugin's routes are
    proxied by the sandbox, which calls the handler inside the worker.

    >>> Route(path="/stats", handler=print, name="stats", methods=("get",))
    Traceback (most recent call last):
    ...
    ValueError: Route.methods must be upper-case HTTP methods (DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT); got 'get'; write 'GET'
    """  # noqa: E501 - a doctest's expected output is one line

    #: The path below the plugin's prefix, starting with ``/``.
    path: str = attrs.field(validator=_route_path)
    #: What serves the route.
    handler: RouteHandler = attrs.field(validator=_handler)
    #: A name unique within the plugin, for reversing URLs.
    name: str = attrs.field(validator=_route_name)
    #: The HTTP methods served, upper-case.
    methods: tuple[str, ...] = attrs.field(
        default=("GET",), converter=_strings, validator=_route_methods
    )


#: Every payload type, in the order the docs list them.
PAYLOAD_TYPES: Final[tuple[type, ...]] = (
    Context,
    User,
    Lead,
    Booking,
    Invoice,
    InvoiceLine,
    Email,
    Sms,
    Notification,
    Report,
    Widget,
    Route,
    HtmlFragment,
    ApiRequest,
    ApiResponse,
)


# -- routes ------------------------------------------------------------------------------------


def normalise_routes(plugin_id: str, returned: object) -> list[Route]:
    """Turn what a plugin's ``register_routes`` returned into a list of :class:`Route`.

    Accepted: ``None`` (no routes), a :class:`Route`, a ``(path, view, name)``
    tuple as in the original system, or an iterable of routes and tuples.
    A tuple becomes ``Route(path=path, handler=view, name=name)`` serving
    ``GET``; its path gets a leading ``/`` when it has none, since the
    original system's paths were relative to the plugin's prefix.

    >>> routes = normalise_routes("crm-sync", [("stats/", print, "stats")])
    >>> [(r.path, r.name, r.methods) for r in routes]
    [('/stats/', 'stats', ('GET',))]

    :raises TypeError: for anything else, naming the plugin and the item.
    :raises ValueError: for a route that is not valid (such as a bad path) or
        names that repeat, naming the plugin.
    """
    if returned is None:
        return []
    items: list[object]
    if isinstance(returned, Route) or _is_route_tuple(returned):
        items = [returned]
    elif isinstance(returned, (str, bytes, Mapping)) or not isinstance(returned, Iterable):
        raise TypeError(
            f"plugin {plugin_id!r}: register_routes returned {_brief(returned)}; "
            "expected None, a Route, a (path, view, name) tuple, or a list of those"
        )
    else:
        items = list(returned)
    routes = [_route(plugin_id, index, item) for index, item in enumerate(items)]
    seen: set[str] = set()
    for route in routes:
        if route.name in seen:
            raise ValueError(
                f"plugin {plugin_id!r}: register_routes returned two routes named {route.name!r}"
            )
        seen.add(route.name)
    return routes


def _is_route_tuple(value: object) -> bool:
    return isinstance(value, tuple) and len(value) == 3 and isinstance(value[0], str)


def _route(plugin_id: str, index: int, item: object) -> Route:
    if isinstance(item, Route):
        return item
    if not (_is_route_tuple(item) and isinstance(item, tuple) and callable(item[1])):
        raise TypeError(
            f"plugin {plugin_id!r}: register_routes item {index} is {_brief(item)}; "
            "expected a Route or a (path, view, name) tuple with a callable view"
        )
    path, view, name = item
    try:
        return Route(path=path if path.startswith("/") else f"/{path}", handler=view, name=name)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"plugin {plugin_id!r}: register_routes item {index}: {exc}") from exc


def _brief(value: object) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"


# -- the wire ----------------------------------------------------------------------------------


def to_wire(payload: object) -> dict[str, JSONValue]:
    """A payload as a JSON-ready ``dict``: :func:`from_wire` reads it back equal.

    Decimals become strings, datetimes and dates ISO 8601 text, ``bytes``
    base64 text and tuples arrays; nested records become objects. Every field
    is written, including those at their default. A :class:`Route` is written
    without its ``handler``.

    :raises TypeError: when ``payload`` is not an instance of one of
        :data:`PAYLOAD_TYPES`.
    """
    if type(payload) not in PAYLOAD_TYPES:
        raise TypeError(f"not an event payload: {_brief(payload)}")
    document: dict[str, JSONValue] = _converter().unstructure(payload)
    return document


def from_wire(cls: type[_T], data: object) -> _T:
    """Read a payload of type ``cls`` from what :func:`to_wire` made.

    Strict: every required key must be there, no unknown key may be, and every
    value must have the wire type (a string for a Decimal, an array for a
    tuple, ...). Once the data has the right shape, records check themselves
    as when built in Python (a booking must not end before it starts, ...).

    >>> from_wire(Sms, {"tenant": "acme", "to": 4930123456, "txt": "Hi"})
    Traceback (most recent call last):
    ...
    services_ai_plugins.errors.PayloadError: invalid Sms payload (3 problems):
      txt: unknown key; did you mean 'text'?
      to: must be a string (got number)
      text: is required

    :raises PayloadError: listing every problem, each with its path.
    :raises TypeError: when ``cls`` is not a payload type, or is :class:`Route`
        (its handler is code and cannot cross the wire).
    """
    if cls is Route:
        raise TypeError(
            "Route cannot be read from the wire: its handler is code, not data; "
            "the sandbox proxies route handlers instead"
        )
    if cls not in PAYLOAD_TYPES:
        raise TypeError(f"not an event payload type: {cls!r}")
    if not isinstance(data, dict):
        problem = Problem("", f"must be a JSON object (got {json_type_name(data)})")
        raise PayloadError([problem], payload_type=cls)
    try:
        payload: _T = _converter().structure(data, cls)
    except (ClassValidationError, IterableValidationError, ValueError, TypeError) as exc:
        raise PayloadError(_unique(_problems(exc, "", cls)), payload_type=cls) from exc
    return payload


def _unique(problems: Iterator[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def _problems(exc: BaseException, path: str, cls: Any) -> Iterator[Problem]:
    """Flatten a cattrs validation error into located problems."""
    if isinstance(exc, IterableValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, index_note in with_notes:
            yield from _problems(sub, _join(path, index_note.index), index_note.type)
        for sub in without:
            yield from _problems(sub, path, cls)
    elif isinstance(exc, ClassValidationError):
        # Unknown keys first: a misspelt key explains the "is required" that follows.
        attribute_notes, others = exc.group_exceptions()
        for sub in others:
            yield from _problems(sub, path, exc.cl)
        for sub, attribute_note in attribute_notes:
            yield from _problems(sub, _join(path, attribute_note.name), attribute_note.type)
    elif isinstance(exc, ForbiddenExtraKeysError):
        known = [field.name for field in attrs.fields(exc.cl)]
        for key in sorted(exc.extra_fields):
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            yield Problem(_join(path, key), f"unknown key{hint}")
    elif isinstance(exc, KeyError):
        yield Problem(path, "is required")
    elif isinstance(exc, (ValueError, TypeError)):
        yield Problem(path, str(exc))
    else:  # pragma: no cover - a bug in a hook: let it surface
        raise exc


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
        return f"{path}.{part}" if path else part
    return f"{path}[{part!r}]"


def _string(value: object, _: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got {json_type_name(value)})")
    return value


def _integer(value: object, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer (got {json_type_name(value)})")
    return check_int(value)


def _decimal_from_wire(value: object, _: Any) -> Decimal:
    if not isinstance(value, str) or not _DECIMAL_TEXT.fullmatch(value):
        got = repr(value) if isinstance(value, str) else json_type_name(value)
        raise ValueError(f"must be a decimal number as a string, such as '12.50' (got {got})")
    try:
        return Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid numbers
        raise ValueError(f"is not a decimal number (got {value!r})") from None


def _datetime_from_wire(value: object, _: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 date-time string (got {json_type_name(value)})")
    # Python 3.10 does not read the "Z" that other languages write for UTC.
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"must be an ISO 8601 date-time such as '2024-05-06T09:30:00+00:00' (got {value!r})"
        ) from None
    if moment.utcoffset() is None:
        raise ValueError(f"must include a UTC offset, such as '+00:00' (got {value!r})")
    return moment


def _date_from_wire(value: object, _: Any) -> date:
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 date string (got {json_type_name(value)})")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"must be an ISO 8601 date such as '2024-05-31' (got {value!r})") from None


def _bytes_from_wire(value: object, _: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"must be base64 text (got {json_type_name(value)})")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64 text (standard alphabet, with padding)") from None


def _bytes_to_wire(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _is_mapping(kind: Any) -> bool:
    return get_origin(kind) is Mapping


def _is_literal(kind: Any) -> bool:
    return get_origin(kind) is Literal


def _tuple_to_wire(
    converter: cattrs.Converter,
) -> Callable[[Any], Callable[[tuple[Any, ...]], list[Any]]]:
    def factory(kind: Any) -> Callable[[tuple[Any, ...]], list[Any]]:
        item_kind = get_args(kind)[0]

        def hook(value: tuple[Any, ...]) -> list[Any]:
            return [converter.unstructure(item, item_kind) for item in value]

        return hook

    return factory


def _mapping_hook(kind: Any) -> Callable[[object, Any], dict[str, Any]]:
    # The payloads hold two kinds of mapping: str -> str (HTTP headers and
    # query) and str -> JSONValue (extras, custom data).
    strings = get_args(kind)[1] is str

    def hook(value: object, _: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValueError(f"must be an object (got {json_type_name(value)})")
        odd = [key for key in value if not isinstance(key, str)]
        if odd:
            raise ValueError(f"keys must be strings (got {odd[0]!r})")
        errors: list[Exception] = []
        copy: dict[str, Any] = {}
        for key, item in value.items():
            try:
                copy[key] = _string(item, str) if strings else check_json(item)
            except ValueError as exc:
                errors.append(locate(exc, key, str if strings else object))
        if errors:
            raise IterableValidationError("invalid entries", errors, dict)
        return copy

    return hook


def _mapping_to_wire(kind: Any) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    def hook(value: Mapping[str, Any]) -> dict[str, Any]:
        copy = check_json(dict(value))  # a deep copy: the wire shares nothing with the record
        assert isinstance(copy, dict)
        return copy

    return hook


def _literal_hook(kind: Any) -> Callable[[object, Any], object]:
    choices = get_args(kind)
    names = ", ".join(repr(choice) for choice in choices)

    def hook(value: object, _: Any) -> object:
        if isinstance(value, str) and value in choices:
            return value
        got = repr(value) if isinstance(value, str) else json_type_name(value)
        raise ValueError(f"must be one of {names} (got {got})")

    return hook


def _record_hooks(
    converter: cattrs.Converter,
) -> Callable[[Any], Callable[[object, Any], Any]]:
    def factory(cls: Any) -> Callable[[object, Any], Any]:
        generated = make_dict_structure_fn(
            cls, converter, _cattrs_forbid_extra_keys=True, _cattrs_detailed_validation=True
        )

        def hook(value: object, _: Any) -> Any:
            if not isinstance(value, dict):
                raise ValueError(f"must be an object (got {json_type_name(value)})")
            odd = [key for key in value if not isinstance(key, str)]
            if odd:
                raise ValueError(f"keys must be strings (got {odd[0]!r})")
            return generated(value, cls)

        return hook

    return factory


def _make_converter() -> cattrs.Converter:
    """Build the converter that reads and writes payloads (never cattrs' global one)."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(str, _string)
    converter.register_structure_hook(int, _integer)
    converter.register_structure_hook(Decimal, _decimal_from_wire)
    converter.register_unstructure_hook(Decimal, str)
    converter.register_structure_hook(datetime, _datetime_from_wire)
    converter.register_unstructure_hook(datetime, datetime.isoformat)
    converter.register_structure_hook(date, _date_from_wire)
    converter.register_unstructure_hook(date, date.isoformat)
    converter.register_structure_hook(bytes, _bytes_from_wire)
    converter.register_unstructure_hook(bytes, _bytes_to_wire)
    converter.register_structure_hook_factory(_is_literal, _literal_hook)
    converter.register_structure_hook_factory(is_variadic_tuple, strict_tuple_hooks(converter))
    converter.register_unstructure_hook_factory(is_variadic_tuple, _tuple_to_wire(converter))
    converter.register_structure_hook_factory(_is_mapping, _mapping_hook)
    converter.register_unstructure_hook_factory(_is_mapping, _mapping_to_wire)
    converter.register_structure_hook_factory(attrs.has, _record_hooks(converter))
    converter.register_unstructure_hook(
        Route, make_dict_unstructure_fn(Route, converter, handler=override(omit=True))
    )
    return converter


_CONVERTER: cattrs.Converter | None = None


def _converter() -> cattrs.Converter:
    global _CONVERTER  # noqa: PLW0603 - built once, on first use, so import stays cheap
    if _CONVERTER is None:
        _CONVERTER = _make_converter()
    return _CONVERTER


def _same(value: object, _: Any) -> object:
    return value


def _make_trusted_converter() -> cattrs.Converter:
    """A converter that reads what :func:`to_wire` wrote, without checking its shape again.

    For the sandbox's worker, which reads payloads from the host that wrote
    them from valid records: the records' own validators still run; the wire
    types are trusted. Never for data from a plugin.
    """
    converter = cattrs.Converter(forbid_extra_keys=False, detailed_validation=False)
    converter.register_structure_hook(str, _same)
    converter.register_structure_hook(int, _same)
    converter.register_structure_hook(Decimal, lambda value, _: Decimal(value))
    converter.register_structure_hook(datetime, lambda value, _: datetime.fromisoformat(value))
    converter.register_structure_hook(date, lambda value, _: date.fromisoformat(value))
    converter.register_structure_hook(bytes, lambda value, _: base64.b64decode(value))
    converter.register_structure_hook_func(_is_literal, _same)
    converter.register_structure_hook_func(_is_mapping, _same)
    return converter


_TRUSTED: cattrs.Converter | None = None


def _from_host(cls: type[_T], data: dict[str, Any]) -> _T:
    """Read a payload :func:`to_wire` wrote in the host (the sandbox worker's side)."""
    global _TRUSTED  # noqa: PLW0603 - built once, on first use
    if _TRUSTED is None:
        _TRUSTED = _make_trusted_converter()
    payload: _T = _TRUSTED.structure(data, cls)
    return payload


# -- examples ----------------------------------------------------------------------------------
#
# One builder per type, each a small, consistent story at the tenant "acme":
# Ada, a sales manager, works a lead from Globex and bills it.

_TENANT: Final = "acme"
_UTC: Final = timezone.utc
_BERLIN: Final = timezone(timedelta(hours=2))


def _example_user() -> User:
    """Ada Lovelace, a sales manager at the tenant ``acme``."""
    return User(
        id="u-1001", tenant=_TENANT, email="ada@acme.example", name="Ada Lovelace", roles=("sales",)
    )


def _example_context() -> Context:
    """Ada's request in the web app, in British English."""
    return Context(
        tenant=_TENANT,
        user=_example_user(),
        request_id="req-7f3a9c",
        ip="203.0.113.7",
        locale="en-GB",
        extras={"plan": "pro"},
    )


def _example_lead() -> Lead:
    """A website enquiry from Globex, worth an estimated 4,800 in the tenant's currency."""
    return Lead(
        id="lead-2041",
        tenant=_TENANT,
        name="Hank Scorpio",
        email="hank@globex.example",
        phone="+1 555 0100",
        company="Globex",
        source="website",
        value=Decimal("4800.00"),
        created_at=datetime(2024, 5, 6, 9, 30, tzinfo=_UTC),
        data={"utm_campaign": "spring-launch", "employees": 250},
    )


def _example_booking() -> Booking:
    """A one-hour consultation, confirmed, in Berlin summer time."""
    return Booking(
        id="bk-311",
        tenant=_TENANT,
        customer_name="Hank Scorpio",
        customer_email="hank@globex.example",
        service="Initial consultation",
        starts_at=datetime(2024, 5, 14, 10, 0, tzinfo=_BERLIN),
        ends_at=datetime(2024, 5, 14, 11, 0, tzinfo=_BERLIN),
        status="confirmed",
        customer_phone="+1 555 0100",
        notes="Bring last year's figures.",
    )


def _example_invoice_line() -> InvoiceLine:
    """Twelve hours of consulting at 150.00 an hour."""
    return InvoiceLine(
        description="Consulting (hours)", quantity=Decimal("12"), unit_price=Decimal("150.00")
    )


def _example_invoice() -> Invoice:
    """Invoice 2024-0042 to Globex: consulting plus a setup fee, sent and unpaid."""
    return Invoice(
        id="inv-42",
        tenant=_TENANT,
        number="2024-0042",
        customer_name="Globex",
        currency="EUR",
        lines=(
            _example_invoice_line(),
            InvoiceLine(description="Setup fee", quantity=Decimal(1), unit_price=Decimal("150.00")),
        ),
        status="sent",
        customer_email="billing@globex.example",
        issued_on=date(2024, 5, 31),
        due_on=date(2024, 6, 30),
    )


def _example_email() -> Email:
    """A follow-up to the Globex lead, in text and HTML."""
    return Email(
        tenant=_TENANT,
        to=("hank@globex.example",),
        subject="Your consultation on 14 May",
        body="Hello Hank,\n\nsee you on 14 May at 10:00.\n\nAda",
        html="<p>Hello Hank,</p><p>see you on 14 May at 10:00.</p><p>Ada</p>",
        reply_to="ada@acme.example",
    )


def _example_sms() -> Sms:
    """A booking reminder by text message."""
    return Sms(tenant=_TENANT, to="+15550100", text="Reminder: consultation tomorrow at 10:00.")


def _example_notification() -> Notification:
    """An in-app notice to Ada that a lead arrived."""
    return Notification(
        tenant=_TENANT,
        message="New lead from Globex (4,800.00)",
        channel="in_app",
        recipient="u-1001",
        level="success",
    )


def _example_report() -> Report:
    """The May sales report, 42 rows, stored as CSV."""
    return Report(
        id="rep-2024-05",
        tenant=_TENANT,
        name="Sales, May 2024",
        kind="sales",
        generated_at=datetime(2024, 6, 1, 6, 0, tzinfo=_UTC),
        rows=42,
        url="https://files.acme.example/reports/rep-2024-05.csv",
    )


def _example_widget() -> Widget:
    """A small dashboard box counting open leads."""
    return Widget(
        tenant=_TENANT,
        title="Open leads",
        html="<p><strong>12</strong> open leads</p>",
        size="small",
        order=10,
        plugin_id="lead-stats",
    )


def _example_html_fragment() -> HtmlFragment:
    """An analytics script added to the page head."""
    return HtmlFragment(
        tenant=_TENANT,
        html='<script defer src="https://stats.example/acme.js"></script>',
        placement="head",
        plugin_id="site-stats",
    )


def _example_api_request() -> ApiRequest:
    """Ada's browser asking the lead-stats plugin for this week's figures."""
    return ApiRequest(
        tenant=_TENANT,
        method="GET",
        path="/stats",
        headers={"accept": "application/json"},
        query={"period": "week"},
        user=_example_user(),
    )


def _example_api_response() -> ApiResponse:
    """The lead-stats plugin's JSON answer."""
    return ApiResponse.json(_TENANT, {"period": "week", "open_leads": 12})


def _lead_stats(request: ApiRequest) -> ApiResponse:
    """The example route's handler: answers with the example response's figures."""
    return ApiResponse.json(request.tenant, {"period": "week", "open_leads": 12})


def _example_route() -> Route:
    """The lead-stats plugin's ``GET /stats``."""
    return Route(path="/stats", handler=_lead_stats, name="lead-stats")


_EXAMPLES: Final[dict[type, Callable[[], object]]] = {
    Context: _example_context,
    User: _example_user,
    Lead: _example_lead,
    Booking: _example_booking,
    Invoice: _example_invoice,
    InvoiceLine: _example_invoice_line,
    Email: _example_email,
    Sms: _example_sms,
    Notification: _example_notification,
    Report: _example_report,
    Widget: _example_widget,
    Route: _example_route,
    HtmlFragment: _example_html_fragment,
    ApiRequest: _example_api_request,
    ApiResponse: _example_api_response,
}


def example(cls: type[_T]) -> _T:
    """A realistic instance of the payload type ``cls``, new on every call.

    The examples tell one story: at the tenant ``acme``, Ada (a sales manager)
    gets a lead from Globex, books a consultation and sends an invoice; a
    ``lead-stats`` plugin shows a dashboard widget and serves ``GET /stats``.
    Use them in documentation, the CLI and tests.

    >>> example(Lead).company
    'Globex'

    :raises TypeError: when ``cls`` is not one of :data:`PAYLOAD_TYPES`.
    """
    build = _EXAMPLES.get(cls)
    if build is None:
        raise TypeError(f"not an event payload type: {cls!r}")
    made = build()
    assert isinstance(made, cls)
    return made
