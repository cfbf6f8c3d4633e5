"""Event payloads: the records hooks receive and plugins return.

Every payload is a frozen, slotted attrs record built with keyword arguments.
Each top-level payload carries the ``tenant`` it belongs to, so a plugin
never has to guess whose data it holds; :class:`InvoiceLine` (a part of an
:class:`Invoice`) and :class:`Route` (a plugin's own URL) are the two
exceptions.

Records check themselves when built: datetimes must be timezone-aware, money
is :class:`~decimal.Decimal`, a route's path and methods must make sense.
A mistake raises :class:`ValueError` (a wrong value) or :class:`TypeError`
(a wrong kind of value) naming the field::

    >>> Lead(id="lead-1", tenant="acme", name="Ada", value=12.5)
    Traceback (most recent call last):
    ...
    TypeError: an amount must be a Decimal or an int (got 12.5); write Decimal('12.5')

This module holds the records only. Their JSON form for the process sandbox
(``to_wire`` and ``from_wire``) lives in ``services_ai_plugins._payload_codec``,
and the documented example of each type (``example``) in
``services_ai_plugins._examples``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final, Literal, TypeAlias

import attrs

from ._json import JSONValue, check_json

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
    "Placement",
    "Report",
    "Route",
    "RouteHandler",
    "Sms",
    "User",
    "Widget",
    "normalise_routes",
]

#: Where an :class:`HtmlFragment` goes in the host's pages.
Placement: TypeAlias = Literal["head", "footer"]

#: The HTTP methods a :class:`Route` may serve.
HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_CURRENCY: Final = re.compile(r"[A-Z]{3}")
_TOKEN: Final = re.compile(r"[A-Z][A-Z-]*")


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

    >>> hours = InvoiceLine(description="Consulting", quantity=12, unit_price=Decimal("150.00"))
    >>> setup = InvoiceLine(description="Setup fee", quantity=1, unit_price=Decimal("150.00"))
    >>> invoice = Invoice(
    ...     id="inv-42",
    ...     tenant="acme",
    ...     number="2024-0042",
    ...     customer_name="Globex",
    ...     currency="EUR",
    ...     lines=(hours, setup),
    ... )
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


def _pairs(field: str, value: object) -> Iterable[object]:
    """A mapping's items, or an iterable of pairs as it is; a string or a non-iterable refused."""
    if isinstance(value, Mapping):
        return value.items()
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"ApiRequest.{field} must be a mapping or (name, value) pairs (got {value!r})"
        )
    return value


def _header_map(value: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    # Names are case-insensitive in HTTP: stored lower-case, repeats joined as RFC 9110 allows.
    entries = _pairs("headers", value)
    headers: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, tuple) or len(entry) != 2:
            raise TypeError(
                f"ApiRequest.headers must be a mapping or (name, value) pairs (got {entry!r})"
            )
        name, item = entry
        if not isinstance(name, str) or not isinstance(item, str):
            raise TypeError(
                f"ApiRequest.headers must hold strings as names and values (got {name!r}: {item!r})"
            )
        key = name.lower()
        headers[key] = f"{headers[key]}, {item}" if key in headers else item
    return headers


def _query_values(name: str, item: object) -> tuple[str, ...]:
    if isinstance(item, str):
        return (item,)
    if isinstance(item, (bytes, Mapping)) or not isinstance(item, Iterable):
        raise TypeError(
            f"ApiRequest.query[{name!r}] must be a string or a sequence of strings (got {item!r})"
        )
    values: list[str] = []
    for value in item:
        if not isinstance(value, str):
            raise TypeError(f"ApiRequest.query[{name!r}] must hold strings only (got {value!r})")
        values.append(value)
    if not values:
        raise ValueError(f"ApiRequest.query[{name!r}] must have at least one value (got none)")
    return tuple(values)


def _query_map(
    value: Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]],
) -> dict[str, tuple[str, ...]]:
    # A mapping gives each name its value or values; pairs (as urllib.parse.parse_qsl
    # returns them) may repeat a name, whose values then add up in order.
    query: dict[str, tuple[str, ...]] = {}
    for entry in _pairs("query", value):
        if not isinstance(entry, tuple) or len(entry) != 2:
            raise TypeError(
                f"ApiRequest.query must be a mapping or (name, value) pairs (got {entry!r})"
            )
        name, item = entry
        if not isinstance(name, str):
            raise TypeError(f"ApiRequest.query names must be strings (got {name!r})")
        query[name] = query.get(name, ()) + _query_values(name, item)
    return query


def _request_path(what: str) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def validator(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, str):
            raise TypeError(f"ApiRequest.{attribute.name} must be a string (got {value!r})")
        if not value.startswith("/"):
            raise ValueError(
                f"ApiRequest.{attribute.name} must be {what} starting with '/' (got {value!r})"
            )

    return validator


@attrs.frozen(kw_only=True)
class ApiRequest:
    """An HTTP request, independent of any web framework: what a :class:`Route` handler gets.

    The host's adapter builds it from the framework's request, usually with
    :mod:`services_ai_plugins.web`. Three paths, each starting with ``/``
    and without the query string:

    - ``path``: below the adapter's mount point, what the host routes on
      (``/lead-stats/stats`` for the plugin ``lead-stats``'s route ``/stats``);
    - ``route_path``: the route's own path, as the handler sees it (``/stats``);
      the host sets it when it dispatches (it defaults to ``path``);
    - ``full_path``: the whole URL path, mount point included, for links and
      logs (it defaults to ``path``).

    Header names are stored lower-case: names that are equal once lower-cased
    are joined with ``", "``, in the order given. ``query`` keeps every value
    of each name, in order; a single string stands for one value, and
    :meth:`query_value` reads the first:

    >>> request = ApiRequest(
    ...     tenant="acme",
    ...     method="GET",
    ...     path="/lead-stats/stats",
    ...     headers={"Accept": "text/html", "accept": "application/json"},
    ...     query={"tag": ["new", "hot"], "period": "week"},
    ... )
    >>> request.headers
    {'accept': 'text/html, application/json'}
    >>> request.query
    {'tag': ('new', 'hot'), 'period': ('week',)}
    >>> request.query_value("tag"), request.query_value("page", "1")
    ('new', '1')
    >>> request.route_path, request.full_path
    ('/lead-stats/stats', '/lead-stats/stats')
    """

    #: The tenant the request is for.
    tenant: str = attrs.field(validator=_tenant)
    #: The method, upper-case (``"GET"``, ``"POST"``, ...).
    method: str = attrs.field(
        validator=_must(lambda v: bool(_TOKEN.fullmatch(v)), "an upper-case method such as 'GET'")
    )
    #: The path below the adapter's mount point, starting with ``/``, without the query
    #: string: what the host routes on (``/<plugin_id>/<route path>``).
    path: str = attrs.field(validator=_request_path("a path"))
    #: The route's own path as its handler sees it (``/stats``); defaults to ``path``.
    route_path: str = attrs.field(
        default=attrs.Factory(lambda self: self.path, takes_self=True),
        validator=_request_path("the route's path"),
    )
    #: The full URL path (mount point and ``path``), for links and logs; defaults to ``path``.
    full_path: str = attrs.field(
        default=attrs.Factory(lambda self: self.path, takes_self=True),
        validator=_request_path("the full URL path"),
    )
    #: The request headers, names lower-case (repeats joined with ``", "``).
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_header_map)
    #: The query-string parameters: every value of each name, in the order sent.
    query: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict, converter=_query_map)
    #: The values the host matched from the route's path pattern.
    path_params: Mapping[str, str] = attrs.field(factory=dict, converter=_string_map)
    #: The raw body.
    body: bytes = attrs.field(default=b"", validator=_body)
    #: The signed-in user, or None.
    user: User | None = None

    def query_value(self, name: str, default: str | None = None) -> str | None:
        """The FIRST value of the query parameter ``name``, or ``default`` when it was not sent.

        Like werkzeug's ``request.args.get``: ``?tag=new&tag=hot`` gives ``"new"``;
        read ``query[name]`` for every value.
        """
        values = self.query.get(name)
        return values[0] if values else default


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

    ``handler`` is code, not data: the payloads' wire form leaves it out, and
    reading a ``Route`` from the wire is refused. A sandboxed plugin's routes are
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
    #: True: ``handler`` is a framework-native view (it takes the web framework's own request,
    #: as the original system's ``(path, view, name)`` tuples do), served by the host's adapter
    #: in the host's process; a sandboxed plugin's native view is refused at load.
    native: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))


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
    A tuple becomes ``Route(path=path, handler=view, name=name, native=True)``
    serving ``GET``: the original system's views are framework-native (they
    take the web framework's request), which the host's adapter serves. Its
    path gets a leading ``/`` when it has none, since the original system's
    paths were relative to the plugin's prefix.

    >>> routes = normalise_routes("crm-sync", [("stats/", print, "stats")])
    >>> [(r.path, r.name, r.methods, r.native) for r in routes]
    [('/stats/', 'stats', ('GET',), True)]

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
        return Route(
            path=path if path.startswith("/") else f"/{path}", handler=view, name=name, native=True
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"plugin {plugin_id!r}: register_routes item {index}: {exc}") from exc


def _brief(value: object) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"
