"""Event payloads: one strategy per record type, at a tenant, realistic and valid."""

from __future__ import annotations

import html
import json
import unicodedata
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

from hypothesis import strategies as st

from services_ai_plugins.events import (
    HTTP_METHODS,
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

from ._base import LOWER, cached, word
from ._json import any_json_values
from ._strings import plugin_ids, sampled

if TYPE_CHECKING:
    from collections.abc import Callable

    from services_ai_plugins.types import JSONValue

__all__ = [
    "DRAWERS",
    "PAYLOAD_DIGITS",
    "REASONS",
    "Drawer",
    "api_requests",
    "api_responses",
    "bookings",
    "contexts",
    "emails",
    "html_fragments",
    "invoice_lines",
    "invoices",
    "json_objects",
    "leads",
    "notifications",
    "payloads",
    "reports",
    "routes",
    "sms",
    "tenants",
    "tenants_of",
    "users",
    "widgets",
]

_T = TypeVar("_T")


# -- event payloads ------------------------------------------------------------------------------
#
# One ``_draw_<record>(draw, tenant)`` per payload type draws a valid record of that tenant;
# records inside it (a Context's user, an Invoice's lines) are drawn by the same functions with
# the same tenant. The public strategies only choose the tenant and call them.

#: What a strategy of event payloads takes as its tenant: one tenant, a strategy of them, or
#: None for :func:`tenants`.
_TenantOption: TypeAlias = "str | st.SearchStrategy[str] | None"
Drawer: TypeAlias = "Callable[[st.DrawFn, str], Any]"

#: Payloads without a tenant of their own: a part of another record, and a plugin's URL.
_UNTENANTED: Final = frozenset({InvoiceLine, Route})

_TENANT_NAMES: Final = (
    "acme",
    "globex",
    "initech",
    "umbrella",
    "stark-industries",
    "wayne-enterprises",
    "müller-söhne",
    "tenant-1",
)
_FIRST_NAMES: Final = (
    "Ada",
    "Grace",
    "Alan",
    "Hank",
    "Margaret",
    "Zoë",
    "José",
    "Łukasz",
    "Søren",
    "Aiko",
    "Chidi",
    "Fatima",
    "Ольга",
    "Mei",
    "Siobhán",
    "Priya",
)
_LAST_NAMES: Final = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Scorpio",
    "Hamilton",
    "Müller",
    "García",
    "Kowalski",
    "Tanaka",
    "Okafor",
    "Haddad",
    "Иванова",
    "Wong",
    "O'Brien",
    "de la Cruz",
    "Smith-Jones",
)
_COMPANIES: Final = (
    "Globex",
    "Initech",
    "Umbrella Corporation",
    "Stark Industries",
    "Wayne Enterprises",
    "Müller & Söhne GmbH",
    "Soylent Corp.",
    "Tyrell",
    "株式会社サンプル",
)
#: Reserved example domains: nothing a plugin sends to these addresses reaches anyone.
_DOMAINS: Final = (
    "example.com",
    "example.org",
    "example.net",
    "globex.example",
    "mail.example",
)
_LEAD_SOURCES: Final = ("website", "referral", "import", "event", "partner", "cold_call")
_LEAD_STATUSES: Final = ("new", "contacted", "qualified", "proposal", "won", "lost")
_BOOKING_STATUSES: Final = ("pending", "confirmed", "cancelled", "completed", "no_show")
_SERVICES: Final = (
    "Initial consultation",
    "Follow-up call",
    "Site visit",
    "Haircut & beard trim",
    "Massage (60 min)",
    "Dental check-up",
    "Onboarding workshop",
)
#: Minutes a booking lasts; 0 is allowed (a reminder, a call slot) and worth testing.
_DURATIONS: Final = (0, 15, 30, 45, 60, 90, 120, 240, 480)
_LINE_ITEMS: Final = (
    "Consulting (hours)",
    "Setup fee",
    "Monthly subscription",
    "Travel expenses",
    "Training day",
    "Support plan — Gold",
    "Licence, 12 months",
)
_CURRENCIES: Final = ("EUR", "USD", "GBP", "CHF", "SEK", "JPY", "AUD")
#: Days between issuing an invoice and its due date.
_PAYMENT_TERMS: Final = (0, 7, 14, 30, 60)
_DISCOUNT_PERCENT: Final = (5, 10, 15, 20)
_ROLES: Final = ("owner", "admin", "sales", "support", "billing", "staff")
_LOCALES: Final = ("en-GB", "en-US", "de-DE", "fr-FR", "es-ES", "ja-JP", "pt-BR", "ar-EG")
_SUBJECTS: Final = (
    "Your consultation",
    "Invoice {number}",
    "Welcome aboard!",
    "Reminder: your appointment",
    "Re: your enquiry",
    "Ihre Rechnung",
)
_SENTENCES: Final = (
    "Thanks for getting in touch.",
    "See you on Tuesday at 10:00.",
    "Please find the invoice attached.",
    "Your booking is confirmed.",
    "Let us know if anything changes.",
    "Vielen Dank für Ihre Anfrage!",
    "ご予約ありがとうございます。",
)
_NOTICES: Final = (
    "New lead from {name}",
    "Booking confirmed for {name}",
    "Invoice paid by {name}",
    "{name} cancelled an appointment",
    "Sync failed: the CRM did not answer",
)
_CHANNELS: Final = ("in_app", "email", "slack", "sms")
_LEVELS: Final = ("info", "success", "warning", "error")
_REPORT_KINDS: Final = ("sales", "bookings", "invoices", "leads", "activity")
_WIDGET_TITLES: Final = (
    "Open leads",
    "Revenue this month",
    "Upcoming bookings",
    "Overdue invoices",
    "Zoë's pipeline",
)
_WIDGET_SIZES: Final = ("small", "medium", "large", "full")
_FRAGMENTS: Final = (
    '<script defer src="https://stats.example/t.js"></script>',
    '<meta name="robots" content="noindex">',
    '<link rel="stylesheet" href="https://cdn.example/site.css">',
    "<style>.banner{color:#c00}</style>",
    '<div id="chat-widget" data-tenant="1"></div>',
    "<!-- added by a plugin -->",
)
_PLACEMENTS: Final = ("head", "footer")
_METHODS: Final = tuple(sorted(HTTP_METHODS))
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_PATH_WORDS: Final = ("stats", "leads", "webhook", "sync", "export", "settings", "v1", "42")
_HEADERS: Final = (
    ("accept", "application/json"),
    ("accept-language", "de-DE,de;q=0.9,en;q=0.8"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
    ("x-request-id", "7f3a9c"),
    ("x-forwarded-for", "203.0.113.7"),
)
_QUERY_KEYS: Final = ("page", "limit", "q", "period", "sort")
_STATUS_CODES: Final = (200, 201, 204, 301, 302, 400, 401, 403, 404, 409, 422, 500, 503)
_DATA_KEYS: Final = ("utm_campaign", "employees", "industry", "budget", "tags", "score")
REASONS: Final = (
    "5 failures in a row in lead_created (TimeoutError)",
    "error rate 62% over the last 50 calls of filter_email",
    "suspended for 3 tenants: now suspended everywhere",
)
#: Common UTC offsets in minutes, with the odd ones (+05:45, -03:30) that catch naive arithmetic.
_COMMON_OFFSETS: Final = (0, 60, 120, -300, -240, -420, 330, 345, -210, 540, 600, 780, -600)
#: The span of generated moments (naive: ``st.datetimes`` adds the zone).
_EARLIEST: Final = datetime(2015, 1, 1)
_LATEST: Final = datetime(2035, 12, 31, 23, 59, 59)


def _offset_zone(minutes: int) -> timezone:
    return timezone(timedelta(minutes=minutes))


@cached
def _zones() -> st.SearchStrategy[timezone]:
    common = st.sampled_from(_COMMON_OFFSETS).map(_offset_zone)
    # Any whole minute within the offsets in use (-12:00 to +14:00, with a margin).
    return common | st.integers(min_value=-14 * 60, max_value=14 * 60).map(_offset_zone)


@cached
def _moments() -> st.SearchStrategy[datetime]:
    return st.datetimes(min_value=_EARLIEST, max_value=_LATEST, timezones=_zones())


@cached
def _days() -> st.SearchStrategy[date]:
    return st.dates(min_value=_EARLIEST.date(), max_value=_LATEST.date())


def _cents(amount: int) -> Decimal:
    """``amount`` cents as a Decimal with two places: 1999 -> Decimal('19.99'), 100 -> '1.00'."""
    return Decimal(amount).scaleb(-2)


@cached
def _money(low: int, high: int) -> st.SearchStrategy[Decimal]:
    """Amounts with two places, from ``low`` to ``high`` cents."""
    return st.integers(min_value=low, max_value=high).map(_cents)


@cached
def _quantities() -> st.SearchStrategy[Decimal]:
    """Units (1 to 100) or hours in quarters (0.25 to 40.00)."""
    units = st.integers(min_value=1, max_value=100).map(Decimal)
    hours = st.integers(min_value=1, max_value=160).map(lambda quarters: _cents(25 * quarters))
    return units | hours


@cached
def _serials() -> st.SearchStrategy[int]:
    return st.integers(min_value=1, max_value=999_999)


@cached
def _record_ids(prefix: str) -> st.SearchStrategy[str]:
    """Ids as hosts make them: ``lead-2041``, a database's ``2041``, or a UUID."""
    return st.one_of(
        _serials().map(lambda n: f"{prefix}-{n}"),
        _serials().map(str),
        st.uuids().map(str),
    )


@cached
def _tenant_names() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(_TENANT_NAMES),
        plugin_ids(),  # slugs, such as a host's subdomains
        st.uuids().map(str),
        _serials().map(str),
    )


def tenants() -> st.SearchStrategy[str]:
    """Tenant names as hosts use them: ``acme``, slugs, UUIDs and numbers as text.

    Every one is a valid ``tenant`` of the event payloads (a non-blank string).
    """
    return _tenant_names()


@cached
def _pinned(tenant: str) -> st.SearchStrategy[str]:
    return st.just(tenant)


def tenants_of(tenant: _TenantOption) -> st.SearchStrategy[str]:
    if tenant is None:
        return _tenant_names()
    if isinstance(tenant, str):
        if not tenant.strip():
            raise ValueError(f"tenant must be a non-blank string (got {tenant!r})")
        return _pinned(tenant)
    if isinstance(tenant, st.SearchStrategy):
        return tenant
    raise TypeError(f"tenant must be a str, a strategy of str, or None (got {tenant!r})")


def _ascii_slug(text: str) -> str:
    """``text`` folded to lower-case ASCII letters and digits (``Zoë`` -> ``zoe``)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(char for char in folded.lower() if char.isalnum())


def _draw_person(draw: st.DrawFn) -> tuple[str, str]:
    """A full name and an e-mail address made from it, at a reserved example domain."""
    first = draw(sampled(_FIRST_NAMES))
    last = draw(sampled(_LAST_NAMES))
    local = ".".join(part for part in (_ascii_slug(first), _ascii_slug(last)) if part)
    return f"{first} {last}", f"{local or 'contact'}@{draw(sampled(_DOMAINS))}"


def _draw_address(draw: st.DrawFn) -> str:
    return _draw_person(draw)[1]


def _draw_phone(draw: st.DrawFn, *, e164: bool = False) -> str:
    """A fictional number (US 555-01xx, UK Ofcom drama range), as entered or in E.164 form."""
    if draw(st.booleans()):
        digits = f"{draw(st.integers(min_value=0, max_value=99)):02d}"
        spaced, compact = f"+1 555 01{digits}", f"+155501{digits}"
    else:
        digits = f"{draw(st.integers(min_value=0, max_value=999)):03d}"
        spaced, compact = f"+44 20 7946 0{digits}", f"+442079460{digits}"
    return compact if e164 or draw(st.booleans()) else spaced


def _draw_optional(draw: st.DrawFn, strategy: st.SearchStrategy[_T]) -> _T | None:
    # False (None) is what Hypothesis shrinks to: a failing example keeps only what it needs.
    return draw(strategy) if draw(st.booleans()) else None


#: Integers in the JSON of payloads have up to 15 digits: every one is exact in a float (below
#: 2**53), as a browser's JavaScript reads it.
PAYLOAD_DIGITS: Final = 15


@cached
def json_objects() -> st.SearchStrategy[dict[str, JSONValue]]:
    keys = st.sampled_from(_DATA_KEYS) | st.text(max_size=12)
    return st.dictionaries(keys, any_json_values(6, PAYLOAD_DIGITS), max_size=4)


def _draw_user(draw: st.DrawFn, tenant: str) -> User:
    name, email = _draw_person(draw)
    roles = draw(st.lists(st.sampled_from(_ROLES), max_size=3, unique=True))
    return User(
        id=draw(_record_ids("u")), tenant=tenant, email=email, name=name, roles=tuple(roles)
    )


def _draw_context(draw: st.DrawFn, tenant: str) -> Context:
    return Context(
        tenant=tenant,
        user=_draw_user(draw, tenant) if draw(st.booleans()) else None,
        request_id=_draw_optional(draw, _serials().map(lambda n: f"req-{n:06x}")),
        ip=_draw_optional(draw, st.ip_addresses().map(str)),
        locale=_draw_optional(draw, sampled(_LOCALES)),
        extras=draw(json_objects()),
    )


def _draw_lead(draw: st.DrawFn, tenant: str) -> Lead:
    name, email = _draw_person(draw)
    return Lead(
        id=draw(_record_ids("lead")),
        tenant=tenant,
        name=name,
        email=email if draw(st.booleans()) else None,
        phone=_draw_phone(draw) if draw(st.booleans()) else None,
        company=_draw_optional(draw, sampled(_COMPANIES)),
        source=_draw_optional(draw, sampled(_LEAD_SOURCES)),
        status=draw(sampled(_LEAD_STATUSES)),
        value=_draw_optional(draw, _money(0, 100_000_000)),
        created_at=_draw_optional(draw, _moments()),
        data=draw(json_objects()),
    )


def _draw_booking(draw: st.DrawFn, tenant: str) -> Booking:
    name, email = _draw_person(draw)
    starts_at = draw(_moments())
    minutes = draw(st.sampled_from(_DURATIONS))
    return Booking(
        id=draw(_record_ids("bk")),
        tenant=tenant,
        customer_name=name,
        customer_email=email,
        service=draw(sampled(_SERVICES)),
        starts_at=starts_at,
        ends_at=starts_at + timedelta(minutes=minutes),
        status=draw(sampled(_BOOKING_STATUSES)),
        customer_phone=_draw_phone(draw) if draw(st.booleans()) else None,
        notes=draw(sampled(_SENTENCES)) if draw(st.booleans()) else "",
    )


def _draw_invoice_line(draw: st.DrawFn, tenant: str = "") -> InvoiceLine:
    return InvoiceLine(
        description=draw(sampled(_LINE_ITEMS)),
        quantity=draw(_quantities()),
        unit_price=draw(_money(1, 5_000_000)),
    )


def _draw_invoice(draw: st.DrawFn, tenant: str) -> Invoice:
    status = draw(sampled(("draft", "sent", "paid", "void", "overdue")))
    count = draw(st.integers(min_value=0 if status == "draft" else 1, max_value=5))
    lines = [_draw_invoice_line(draw) for _ in range(count)]
    subtotal = sum((line.total for line in lines), Decimal(0))
    if subtotal > 0 and draw(st.booleans()):
        # A discount, never more than the rest: the invoice's total stays positive.
        percent = draw(st.sampled_from(_DISCOUNT_PERCENT))
        discount = (subtotal * percent / 100).quantize(Decimal("0.01"), ROUND_DOWN)
        lines.append(
            InvoiceLine(
                description=f"Discount {percent}%", quantity=Decimal(1), unit_price=-discount
            )
        )
    issued_on = draw(_days()) if status != "draft" or draw(st.booleans()) else None
    due_on = None
    if issued_on is not None and draw(st.booleans()):
        due_on = issued_on + timedelta(days=draw(st.sampled_from(_PAYMENT_TERMS)))
    paid_at = None
    if status == "paid":
        assert issued_on is not None  # for mypy: only drafts may lack it
        paid_on = issued_on + timedelta(days=draw(st.integers(min_value=0, max_value=90)))
        paid_at = datetime.combine(paid_on, time.min, tzinfo=timezone.utc) + timedelta(
            seconds=draw(st.integers(min_value=0, max_value=86_399))
        )
    customer, email = _draw_person(draw)
    year = (issued_on or draw(_days())).year
    return Invoice(
        id=draw(_record_ids("inv")),
        tenant=tenant,
        number=f"{year}-{draw(st.integers(min_value=1, max_value=9999)):04d}",
        customer_name=draw(sampled(_COMPANIES)) if draw(st.booleans()) else customer,
        currency=draw(sampled(_CURRENCIES)),
        lines=tuple(lines),
        status=status,
        customer_email=email if draw(st.booleans()) else None,
        issued_on=issued_on,
        due_on=due_on,
        paid_at=paid_at,
    )


def _draw_email(draw: st.DrawFn, tenant: str) -> Email:
    first = draw(sampled(_FIRST_NAMES))
    sentences = draw(st.lists(sampled(_SENTENCES), min_size=1, max_size=3))
    body = f"Hello {first},\n\n" + " ".join(sentences) + "\n\nThe team"
    paragraphs = [f"Hello {first},", " ".join(sentences), "The team"]
    subject = draw(sampled(_SUBJECTS)).format(number=f"2024-{draw(_serials()):06d}")
    return Email(
        tenant=tenant,
        to=tuple(_draw_address(draw) for _ in range(draw(st.integers(1, 3)))),
        subject=subject,
        body=body,
        html="".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
        if draw(st.booleans())
        else None,
        reply_to=_draw_address(draw) if draw(st.booleans()) else None,
        cc=tuple(_draw_address(draw) for _ in range(draw(st.integers(0, 2)))),
        bcc=tuple(_draw_address(draw) for _ in range(draw(st.integers(0, 1)))),
    )


def _draw_sms(draw: st.DrawFn, tenant: str) -> Sms:
    text = draw(sampled(_SENTENCES))
    if draw(st.booleans()):
        text = f"{draw(sampled(_FIRST_NAMES))}: {text}"
    return Sms(tenant=tenant, to=_draw_phone(draw, e164=True), text=text[:160])


def _draw_notification(draw: st.DrawFn, tenant: str) -> Notification:
    name, email = _draw_person(draw)
    recipient = None
    if draw(st.booleans()):
        recipient = draw(_record_ids("u")) if draw(st.booleans()) else email
    return Notification(
        tenant=tenant,
        message=draw(sampled(_NOTICES)).format(name=name),
        channel=_draw_optional(draw, sampled(_CHANNELS)),
        recipient=recipient,
        level=draw(sampled(_LEVELS)),
    )


def _draw_report(draw: st.DrawFn, tenant: str) -> Report:
    report_id = draw(_record_ids("rep"))
    kind = draw(sampled(_REPORT_KINDS))
    generated_at = draw(_moments())
    url = f"https://files.example.com/reports/{report_id}.csv"
    return Report(
        id=report_id,
        tenant=tenant,
        name=f"{kind.capitalize()}, {generated_at:%B %Y}",
        kind=kind,
        generated_at=generated_at,
        rows=draw(st.integers(min_value=0, max_value=100_000)),
        url=url if draw(st.booleans()) else None,
    )


def _draw_widget(draw: st.DrawFn, tenant: str) -> Widget:
    title = draw(sampled(_WIDGET_TITLES))
    count = draw(st.integers(min_value=0, max_value=10_000))
    return Widget(
        tenant=tenant,
        title=title,
        html=f"<p><strong>{count}</strong> {html.escape(title.lower())}</p>",
        size=draw(sampled(_WIDGET_SIZES)),
        order=draw(st.integers(min_value=-10, max_value=100)),
        plugin_id=_draw_optional(draw, plugin_ids()),
    )


def _draw_html_fragment(draw: st.DrawFn, tenant: str) -> HtmlFragment:
    return HtmlFragment(
        tenant=tenant,
        html=draw(sampled(_FRAGMENTS)),
        placement=draw(st.sampled_from(_PLACEMENTS)),
        plugin_id=_draw_optional(draw, plugin_ids()),
    )


def _draw_path(draw: st.DrawFn) -> str:
    segments = draw(st.lists(sampled(_PATH_WORDS), max_size=3))
    return "/" + "/".join(segments)


@cached
def _query() -> st.SearchStrategy[dict[str, list[str]]]:
    # A name may repeat in a query string: every value is kept, in order.
    keys = st.sampled_from(_QUERY_KEYS) | word(LOWER, LOWER + "_", 0, 8)
    values = st.lists(st.text(max_size=20), min_size=1, max_size=3)
    return st.dictionaries(keys, values, max_size=3)


def _any_case(draw: st.DrawFn, name: str) -> str:
    """``name`` as a client may spell it: ``accept``, ``Accept`` or ``ACCEPT``."""
    return draw(st.sampled_from((name, name.title(), name.upper())))


def _draw_api_request(draw: st.DrawFn, tenant: str) -> ApiRequest:
    method = draw(sampled(_METHODS))
    chosen = draw(st.lists(st.sampled_from(_HEADERS), max_size=3, unique=True))
    # Names in any case: the record stores them lower-case.
    headers = {_any_case(draw, name): value for name, value in chosen}
    body = b""
    if method in _BODY_METHODS:
        body = json.dumps(draw(json_objects()), ensure_ascii=False).encode("utf-8")
        headers[_any_case(draw, "content-type")] = "application/json"
    params = {"id": draw(_record_ids("lead"))} if draw(st.booleans()) else {}
    path = _draw_path(draw)
    mount = draw(st.sampled_from(("", "/plugins", "/app/ext")))
    return ApiRequest(
        tenant=tenant,
        method=method,
        path=path,
        route_path=draw(st.sampled_from((path, _draw_path(draw)))),
        full_path=mount + path,
        headers=headers,
        query=draw(_query()),
        path_params=params,
        body=body,
        user=_draw_user(draw, tenant) if draw(st.booleans()) else None,
    )


def _draw_api_response(draw: st.DrawFn, tenant: str) -> ApiResponse:
    status = draw(st.sampled_from(_STATUS_CODES) | st.integers(min_value=100, max_value=599))
    if draw(st.booleans()):
        return ApiResponse.json(tenant, draw(json_objects()), status)
    return ApiResponse(
        tenant=tenant,
        status=status,
        headers={"content-type": "text/plain; charset=utf-8"} if draw(st.booleans()) else {},
        body=draw(sampled(_SENTENCES)).encode("utf-8") if draw(st.booleans()) else b"",
    )


def _answer(request: ApiRequest) -> ApiResponse:
    """The handler of generated routes: echoes the method and path as JSON."""
    return ApiResponse.json(request.tenant, {"method": request.method, "path": request.path})


def _draw_route(draw: st.DrawFn, tenant: str = "") -> Route:
    methods = draw(st.lists(sampled(_METHODS), min_size=1, max_size=3, unique=True))
    return Route(
        path=_draw_path(draw),
        handler=_answer,
        name=draw(plugin_ids()),
        methods=tuple(methods),
    )


DRAWERS: Final[Mapping[type, Drawer]] = {
    Context: _draw_context,
    User: _draw_user,
    Lead: _draw_lead,
    Booking: _draw_booking,
    Invoice: _draw_invoice,
    InvoiceLine: _draw_invoice_line,
    Email: _draw_email,
    Sms: _draw_sms,
    Notification: _draw_notification,
    Report: _draw_report,
    Widget: _draw_widget,
    Route: _draw_route,
    HtmlFragment: _draw_html_fragment,
    ApiRequest: _draw_api_request,
    ApiResponse: _draw_api_response,
}


@st.composite
def _records(draw: st.DrawFn, cls: type, tenants: st.SearchStrategy[str]) -> Any:
    return DRAWERS[cls](draw, "" if cls in _UNTENANTED else draw(tenants))


@cached
def _records_at(cls: type, tenant: str | None) -> st.SearchStrategy[Any]:
    return _records(cls, tenants_of(tenant))


def _payloads(cls: type, tenant: _TenantOption) -> st.SearchStrategy[Any]:
    if tenant is None or isinstance(tenant, str):
        tenants_of(tenant)  # refuses a blank tenant before the cache sees it
        return _records_at(cls, tenant)
    return _records(cls, tenants_of(tenant))


def payloads(
    cls: type[_T], *, tenant: str | st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[_T]:
    """Valid instances of the payload type ``cls``.

    ``cls`` is one of :data:`~services_ai_plugins.events.PAYLOAD_TYPES`. The
    strategy is the same as the one named after the type (``payloads(Lead)`` is
    :func:`leads`), for tests parametrised over the types. ``tenant`` pins the
    tenant, as there; the two payloads without one (:class:`InvoiceLine` and
    :class:`Route`) ignore it.

    :raises TypeError: when ``cls`` is not a payload type.
    :raises ValueError: when ``tenant`` is a blank string.
    """
    if cls not in DRAWERS:
        raise TypeError(f"not an event payload type: {cls!r}")
    strategy: st.SearchStrategy[_T] = _payloads(cls, tenant)
    return strategy


def contexts(*, tenant: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Context]:
    """Valid :class:`~services_ai_plugins.events.Context` records.

    Each one may have an acting :func:`users` record (of the same tenant), a
    request id, an IPv4 or IPv6 address, a locale such as ``de-DE`` and JSON
    ``extras``. ``tenant`` pins the tenant: one name, or a strategy of names;
    by default :func:`tenants`. So do the other payload strategies::

        @given(sais.leads(tenant="acme"), sais.contexts(tenant="acme"))
        def test_lead_created(lead, context): ...

    :raises ValueError: when ``tenant`` is a blank string.
    """
    strategy: st.SearchStrategy[Context] = _payloads(Context, tenant)
    return strategy


def users(*, tenant: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[User]:
    """Valid :class:`~services_ai_plugins.events.User` records.

    A name, an address made from it and some roles. Names include non-ASCII
    ones (``Zoë``, ``Łukasz``, ``Ольга``); addresses are at reserved example
    domains. ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[User] = _payloads(User, tenant)
    return strategy


def leads(*, tenant: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Lead]:
    """Valid :class:`~services_ai_plugins.events.Lead` records.

    A person's name, maybe an address, a fictional phone number, a company,
    a source and a pipeline status; ``value`` a Decimal with two places
    (0.00 to 1,000,000.00) or None; ``created_at`` timezone-aware (any
    whole-minute offset, 2015 to 2035) or None; JSON ``data``. ``tenant`` as
    for :func:`contexts`.
    """
    strategy: st.SearchStrategy[Lead] = _payloads(Lead, tenant)
    return strategy


def bookings(*, tenant: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Booking]:
    """Valid :class:`~services_ai_plugins.events.Booking` records.

    ``starts_at`` is timezone-aware and ``ends_at`` 0 minutes to 8 hours later,
    in the same zone (so never before it); a service, a status such as
    ``confirmed``, a customer with an address and maybe a phone number.
    ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[Booking] = _payloads(Booking, tenant)
    return strategy


def invoice_lines() -> st.SearchStrategy[InvoiceLine]:
    """Valid :class:`~services_ai_plugins.events.InvoiceLine` records (they have no tenant).

    ``quantity`` is a whole number of units (1 to 100) or of quarter hours
    (0.25 to 40.00), ``unit_price`` a Decimal with two places (0.01 to
    50,000.00).
    """
    strategy: st.SearchStrategy[InvoiceLine] = _payloads(InvoiceLine, None)
    return strategy


def invoices(*, tenant: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Invoice]:
    """Valid, consistent :class:`~services_ai_plugins.events.Invoice` records.

    One to five :func:`invoice_lines` (drafts may have none), sometimes with a
    discount line of 5 to 20 % that never exceeds the rest, so ``total`` is
    never negative. The status decides the dates: every invoice but a draft
    has ``issued_on``; ``due_on``, when set, is 0 to 60 days after it; only a
    ``paid`` invoice has ``paid_at``, a UTC moment on or after the day it was
    issued. ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[Invoice] = _payloads(Invoice, tenant)
    return strategy


def emails(*, tenant: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Email]:
    """Valid :class:`~services_ai_plugins.events.Email` records.

    One to three recipients, a greeting and a few sentences, maybe an HTML
    part and a reply-to address; ``cc`` and ``bcc`` may be empty. Every
    address is at a reserved example domain. ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[Email] = _payloads(Email, tenant)
    return strategy


def sms(*, tenant: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Sms]:
    """Valid :class:`~services_ai_plugins.events.Sms` records.

    A fictional number in E.164 form and at most 160 characters of text.
    ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[Sms] = _payloads(Sms, tenant)
    return strategy


def notifications(
    *, tenant: str | st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[Notification]:
    """Valid :class:`~services_ai_plugins.events.Notification` records.

    A message, maybe a channel (``in_app``, ``slack``, ...) and a recipient
    (a user id or an address), and a level. ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[Notification] = _payloads(Notification, tenant)
    return strategy


def reports(*, tenant: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Report]:
    """Valid :class:`~services_ai_plugins.events.Report` records.

    A kind, a name for its month, a timezone-aware ``generated_at``, a number of
    rows and maybe a download URL. ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[Report] = _payloads(Report, tenant)
    return strategy


def widgets(*, tenant: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Widget]:
    """Valid :class:`~services_ai_plugins.events.Widget` records, with or without a ``plugin_id``.

    ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[Widget] = _payloads(Widget, tenant)
    return strategy


def html_fragments(
    *, tenant: str | st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[HtmlFragment]:
    """Valid :class:`~services_ai_plugins.events.HtmlFragment` records for the head or the footer.

    ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[HtmlFragment] = _payloads(HtmlFragment, tenant)
    return strategy


def api_requests(
    *, tenant: str | st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[ApiRequest]:
    """Valid :class:`~services_ai_plugins.events.ApiRequest` records.

    Any HTTP method of :data:`~services_ai_plugins.events.HTTP_METHODS`; a
    ``POST``, ``PUT`` or ``PATCH`` carries a JSON body and its content type.
    Headers, query and path parameters hold text: header names are given in
    any case (the record stores them lower-case) and a query name has one to
    three values; ``full_path`` is ``path`` under a mount point or none, and
    ``route_path`` another path or the same. The signed-in user, when there is
    one, is of the same tenant. ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[ApiRequest] = _payloads(ApiRequest, tenant)
    return strategy


def api_responses(
    *, tenant: str | st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[ApiResponse]:
    """Valid :class:`~services_ai_plugins.events.ApiResponse` records.

    JSON (made by :meth:`~services_ai_plugins.events.ApiResponse.json`) or
    text or empty, with any status from 100 to 599. ``tenant`` as for
    :func:`contexts`.
    """
    strategy: st.SearchStrategy[ApiResponse] = _payloads(ApiResponse, tenant)
    return strategy


def routes() -> st.SearchStrategy[Route]:
    """Valid :class:`~services_ai_plugins.events.Route` records (they have no tenant).

    Paths of up to three segments, one to three distinct methods, a slug
    name; the handler answers every request with its method and path as JSON.
    """
    strategy: st.SearchStrategy[Route] = _payloads(Route, None)
    return strategy
