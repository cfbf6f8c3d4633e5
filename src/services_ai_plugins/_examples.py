"""Documented example payloads, and hook arguments built from them.

:func:`example` gives a realistic instance of every type in
:data:`~services_ai_plugins.events.PAYLOAD_TYPES`, new on every call; the
examples tell one story (see :func:`example`). From them, the hook arguments
that the command line's ``call --sample`` passes, that ``check`` calls each
hook with first and that the test harness fires are built here:
:func:`parameter_types` reads a hook specification's parameter types,
:func:`example_values` fills them, :func:`sample_arguments` completes what a
caller gave. :data:`FILLED` and :data:`OPTIONAL` name the arguments nobody
builds from an example.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from . import events
from ._converting import is_variadic_tuple
from .errors import Problem
from .events import (
    PAYLOAD_TYPES,
    ApiRequest,
    ApiResponse,
    Booking,
    Context,
    Email,
    HtmlFragment,
    Invoice,
    InvoiceLine,
    Lead,
    Notification,
    Report,
    Route,
    Sms,
    User,
    Widget,
)

if TYPE_CHECKING:
    import pluggy

__all__ = [
    "FILLED",
    "OPTIONAL",
    "at_tenant",
    "example",
    "example_values",
    "parameter_types",
    "sample_arguments",
    "type_name",
]

_T = TypeVar("_T")

#: The arguments a caller fills itself (``context``) or the host fills per plugin.
FILLED: Final = frozenset({"context", "api", "settings"})
#: An argument the host fills with each plugin's own id when the caller leaves it out.
OPTIONAL: Final = frozenset({"plugin_id"})


# -- the payloads' examples -------------------------------------------------------------------
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
    """Ada's browser asking the lead-stats plugin, mounted at ``/plugins``, for this week's new
    and hot leads' figures (``GET /plugins/lead-stats/stats?period=week&tag=new&tag=hot``)."""
    return ApiRequest(
        tenant=_TENANT,
        method="GET",
        path="/lead-stats/stats",
        route_path="/stats",
        full_path="/plugins/lead-stats/stats",
        headers={"accept": "application/json"},
        query={"period": "week", "tag": ("new", "hot")},
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


# -- hook arguments from the examples ---------------------------------------------------------


def parameter_types(function: Any, names: Sequence[str]) -> dict[str, Any]:
    """The annotated types of a hook specification's parameters, resolved against the payloads.

    An annotation that cannot be resolved takes any JSON value (``typing.Any``).
    """
    module = sys.modules.get(getattr(function, "__module__", ""), None)
    namespace = {**vars(events), **(vars(module) if module is not None else {})}
    annotations: Mapping[str, Any] = getattr(function, "__annotations__", {})
    kinds: dict[str, Any] = {}
    for name in names:
        annotation = annotations.get(name, Any)
        if isinstance(annotation, str):

            def probe() -> None: ...

            probe.__annotations__ = {"value": annotation}
            try:
                annotation = typing.get_type_hints(probe, globalns=namespace)["value"]
            except Exception:  # noqa: BLE001 - any name we cannot resolve: take the JSON as it is
                annotation = Any
        kinds[name] = annotation
    return kinds


def example_values(
    hook: str, kinds: Mapping[str, Any], tenant: str | None
) -> tuple[dict[str, Any], list[Problem]]:
    """The documented examples for the parameters ``kinds``, with every ``tenant`` at ``tenant``.

    A payload is :func:`example`, a tuple of payloads holds one, a
    mapping is ``{}``, an optional parameter its type's example (or None).
    ``plugin_id`` is left out (the host gives each plugin its own). A
    parameter with no example (a plain ``str``) is a problem, by name.
    """
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, kind in kinds.items():
        if name in OPTIONAL:
            continue
        found, value = _example(kind, tenant)
        if found:
            values[name] = value
        else:
            problems.append(
                Problem(
                    name,
                    f"has no example ({type_name(kind)}); give {hook}'s arguments with --data",
                )
            )
    return values, problems


def sample_arguments(
    pm: pluggy.PluginManager, hook: str, tenant: str, given: Mapping[str, Any]
) -> dict[str, Any]:
    """``given``, completed with ``context`` and the documented example payloads at ``tenant``.

    What the test harness fires. The names the host fills per plugin (``api``,
    ``settings``, ``plugin_id``) are left out unless given.

    :raises KeyError: for a hook nobody specified.
    :raises ValueError: when an argument has no example and is not given.
    """
    from .hookspecs import hook_info  # noqa: PLC0415 - the hook specifications load when needed

    info = hook_info(hook, pm)
    caller: pluggy.HookCaller = getattr(pm.hook, hook)
    assert caller.spec is not None
    names = [n for n in caller.spec.argnames if n not in FILLED and n not in given]
    values, problems = example_values(hook, parameter_types(caller.spec.function, names), tenant)
    if problems:
        listed = "; ".join(f"{p.path}: {p.message}" for p in problems)
        raise ValueError(f"{hook}(): {listed}")
    arguments = {**values, **given}
    if info.tenant_scoped and "context" not in arguments:
        arguments["context"] = Context(tenant=tenant)
    return arguments


def _example(kind: Any, tenant: str | None) -> tuple[bool, Any]:
    if kind in PAYLOAD_TYPES and kind is not Route:
        made = example(kind)
        return True, made if tenant is None else at_tenant(made, tenant)
    if is_variadic_tuple(kind):
        found, item = _example(typing.get_args(kind)[0], tenant)
        return found, (item,) if found else None
    if typing.get_origin(kind) is Mapping:
        return True, {}
    arguments = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in arguments:
        for member in arguments:
            found, value = _example(member, tenant)
            if found:
                return True, value
        return True, None
    return False, None


def at_tenant(value: Any, tenant: str) -> Any:
    """``value`` with every ``tenant`` field of its records (nested ones too) set to ``tenant``."""
    if isinstance(value, tuple):
        return tuple(at_tenant(item, tenant) for item in value)
    if not attrs.has(type(value)):
        return value
    changes: dict[str, Any] = {}
    for field in attrs.fields(type(value)):
        current = getattr(value, field.name)
        if field.name == "tenant" and isinstance(current, str):
            changes[field.alias or field.name] = tenant
        elif attrs.has(type(current)) or isinstance(current, tuple):
            changes[field.alias or field.name] = at_tenant(current, tenant)
    return attrs.evolve(value, **changes)


def type_name(kind: Any) -> str:
    """A parameter type in words: ``a Lead``, ``any JSON value``, ``tuple[InvoiceLine, ...]``."""
    if kind is Any:
        return "any JSON value"
    if isinstance(kind, type):
        return f"a {kind.__name__}"
    return str(kind).replace("collections.abc.", "").replace("services_ai_plugins.events.", "")
