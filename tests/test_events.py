"""Event payloads: the records, routes, and the payloads the strategies generate."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, get_type_hints

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import Version

from services_ai_plugins import MemoryStorage, PluginHost
from services_ai_plugins._json import MAX_INT_DIGITS
from services_ai_plugins._sandbox._wire import decode, encode
from services_ai_plugins.errors import PayloadError
from services_ai_plugins.events import (
    HTTP_METHODS,
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
    normalise_routes,
)
from services_ai_plugins.hookspecs import HOOKS, plugin_manager
from services_ai_plugins.tooling import example, from_wire, to_wire
from services_ai_plugins_testing import strategies as sais
from services_ai_plugins_testing.fakes import FakeHostServices
from services_ai_plugins_testing.strategies import json_values

WIRE_TYPES = [cls for cls in PAYLOAD_TYPES if cls is not Route]
#: The payloads that are parts of others or not tenant data, and so carry no tenant.
UNTENANTED = {InvoiceLine, Route}
#: Every datetime field of the payloads.
DATETIME_FIELDS = [
    (Lead, "created_at"),
    (Booking, "starts_at"),
    (Booking, "ends_at"),
    (Invoice, "paid_at"),
    (Report, "generated_at"),
]


def _ids(cls: type[Any]) -> str:
    return cls.__name__


def _wrong(value: object) -> Any:
    """``value``, typed so that a test may pass a value of the wrong type on purpose."""
    return value


def _view(request: ApiRequest) -> ApiResponse:
    return ApiResponse(tenant=request.tenant)


def _roundtrip(payload: Any) -> Any:
    """Through the wire and JSON text, as the sandbox sends it."""
    text = json.dumps(to_wire(payload))
    return from_wire(type(payload), json.loads(text))


# -- the records -------------------------------------------------------------------------------


def test_payload_types_are_the_agreed_names() -> None:
    """PAYLOAD_TYPES lists exactly the agreed records, and __all__ names each of them."""
    from services_ai_plugins import events

    names = {cls.__name__ for cls in PAYLOAD_TYPES}
    assert names == {
        "Context",
        "User",
        "Lead",
        "Booking",
        "Invoice",
        "InvoiceLine",
        "Email",
        "Sms",
        "Notification",
        "Report",
        "Widget",
        "Route",
        "HtmlFragment",
        "ApiRequest",
        "ApiResponse",
    }
    assert names <= set(events.__all__)
    for name in events.__all__:
        assert getattr(events, name) is not None


@pytest.mark.parametrize("cls", PAYLOAD_TYPES, ids=_ids)
def test_records_are_frozen_slotted_and_documented(cls: type[Any]) -> None:
    """Every payload is a frozen, slotted, keyword-only attrs class with a docstring."""
    instance = example(cls)
    assert attrs.has(cls)
    assert "__slots__" in vars(cls)
    assert not hasattr(instance, "__dict__")
    first = attrs.fields(cls)[0].name
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(instance, first, getattr(instance, first))
    assert all(field.kw_only for field in attrs.fields(cls))
    assert cls.__doc__
    assert cls.__doc__.strip()


@pytest.mark.parametrize("cls", PAYLOAD_TYPES, ids=_ids)
def test_top_level_payloads_carry_a_tenant(cls: type[Any]) -> None:
    """Every payload but InvoiceLine and Route has a required str tenant; the others have none."""
    fields = attrs.fields_dict(cls)
    if cls in UNTENANTED:
        assert "tenant" not in fields
        return
    assert get_type_hints(cls)["tenant"] is str
    assert fields["tenant"].default is attrs.NOTHING
    assert example(cls).tenant == "acme"
    with pytest.raises(ValueError, match=r"\.tenant must not be empty"):
        attrs.evolve(example(cls), tenant=" ")


@pytest.mark.parametrize("cls", [User, Lead, Booking, Invoice, Report], ids=_ids)
def test_records_with_an_identity_have_an_id(cls: type[Any]) -> None:
    """User, Lead, Booking, Invoice and Report have a required str id."""
    assert get_type_hints(cls)["id"] is str
    assert attrs.fields_dict(cls)["id"].default is attrs.NOTHING


@pytest.mark.parametrize(("cls", "name"), DATETIME_FIELDS, ids=lambda v: getattr(v, "__name__", v))
def test_naive_datetimes_are_refused(cls: type[Any], name: str) -> None:
    """Each datetime field refuses a naive datetime with a ValueError naming the field."""
    naive = datetime(2024, 5, 14, 10, 0)
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{name} must be timezone-aware"):
        attrs.evolve(example(cls), **{name: naive})


def test_optional_datetimes_may_be_none_required_ones_may_not() -> None:
    """None is accepted for optional datetimes and refused for required ones."""
    assert attrs.evolve(example(Lead), created_at=None).created_at is None
    with pytest.raises(TypeError, match=r"Report\.generated_at must be a datetime"):
        attrs.evolve(example(Report), generated_at=_wrong(None))


def test_booking_must_not_end_before_it_starts() -> None:
    """A booking ending before it starts is refused; a zero-length one is allowed."""
    booking = example(Booking)
    with pytest.raises(ValueError, match="must not be before starts_at"):
        attrs.evolve(booking, ends_at=booking.starts_at - timedelta(minutes=1))
    assert attrs.evolve(booking, ends_at=booking.starts_at).ends_at == booking.starts_at


def test_date_fields_refuse_datetimes() -> None:
    """Invoice.issued_on takes a date; a datetime (which would lose its time) is refused."""
    with pytest.raises(TypeError, match=r"Invoice\.issued_on must be a date"):
        attrs.evolve(example(Invoice), issued_on=datetime(2024, 5, 31, tzinfo=timezone.utc))


def test_amounts_are_decimals() -> None:
    """Amounts take Decimal or int; floats and non-finite numbers are refused."""
    line = InvoiceLine(description="Seats", quantity=3, unit_price=Decimal("9.99"))
    assert line.quantity == Decimal(3)
    assert isinstance(line.quantity, Decimal)
    with pytest.raises(TypeError, match=r"write Decimal\('0\.1'\)"):
        InvoiceLine(description="x", quantity=Decimal(1), unit_price=_wrong(0.1))
    with pytest.raises(ValueError, match="finite"):
        attrs.evolve(example(Lead), value=Decimal("Infinity"))


def test_invoice_totals() -> None:
    """A line's total is quantity x unit price; an invoice's total sums its lines (0 if none)."""
    invoice = example(Invoice)
    assert invoice.lines[0].total == Decimal("1800.00")
    assert invoice.total == Decimal("1950.00")
    assert attrs.evolve(invoice, lines=()).total == Decimal(0)


def test_invoice_lines_and_currency_are_checked() -> None:
    """Invoice.lines holds InvoiceLine records and currency is an ISO 4217 code."""
    with pytest.raises(TypeError, match="InvoiceLine records"):
        attrs.evolve(example(Invoice), lines=_wrong(({"description": "x"},)))
    with pytest.raises(ValueError, match="ISO 4217"):
        attrs.evolve(example(Invoice), currency="euro")


def test_collections_are_copied() -> None:
    """Lists and dicts given to a record are copied, so later changes to them do not leak in."""
    data: dict[str, Any] = {"tags": ["vip"]}
    roles = ["sales"]
    lead = attrs.evolve(example(Lead), data=data)
    user = attrs.evolve(example(User), roles=roles)
    data["tags"].append("changed")
    roles.append("admin")
    assert lead.data == {"tags": ["vip"]}
    assert user.roles == ("sales",)
    assert type(lead.data) is dict


def test_a_single_string_is_not_a_tuple_of_strings() -> None:
    """Email.to given one address as a string is refused, not split into characters."""
    with pytest.raises(TypeError, match="not a single string"):
        Email(tenant="acme", to="a@example.com", subject="s", body="b")
    with pytest.raises(ValueError, match="at least one address"):
        Email(tenant="acme", to=(), subject="s", body="b")


def test_json_values_only_in_json_fields() -> None:
    """Lead.data and Context.extras refuse values that JSON cannot carry."""
    with pytest.raises(ValueError, match="JSON value"):
        attrs.evolve(example(Lead), data=_wrong({"when": date(2024, 1, 1)}))
    with pytest.raises(ValueError, match="finite"):
        attrs.evolve(example(Context), extras={"ratio": float("nan")})


def test_html_fragment_placement() -> None:
    """HtmlFragment.placement is 'head' or 'footer'."""
    assert attrs.evolve(example(HtmlFragment), placement="footer").placement == "footer"
    with pytest.raises(ValueError, match="'head' or 'footer'"):
        attrs.evolve(example(HtmlFragment), placement=_wrong("body"))


def test_api_request_and_response_are_checked() -> None:
    """Requests need an upper-case method and a '/' path; responses a 100-599 status and bytes."""
    request = example(ApiRequest)
    with pytest.raises(ValueError, match="upper-case method"):
        attrs.evolve(request, method="get")
    with pytest.raises(ValueError, match="starting with '/'"):
        attrs.evolve(request, path="stats")
    with pytest.raises(ValueError, match="100-599"):
        ApiResponse(tenant="acme", status=700)
    with pytest.raises(TypeError, match="encode text first"):
        ApiResponse(tenant="acme", body=_wrong("text"))
    with pytest.raises(TypeError, match="strings as keys and values"):
        ApiResponse(tenant="acme", headers=_wrong({"x-count": 3}))


def _get(**fields: Any) -> ApiRequest:
    return ApiRequest(tenant="acme", method="GET", **{"path": "/crm/leads", **fields})


def test_api_request_paths_default_to_the_path_below_the_mount() -> None:
    """route_path and full_path default to path; each is set on its own and must start with '/'."""
    request = _get()
    assert (request.path, request.route_path, request.full_path) == ("/crm/leads",) * 3
    routed = attrs.evolve(request, route_path="/leads")
    assert (routed.path, routed.route_path, routed.full_path) == (
        "/crm/leads",
        "/leads",
        "/crm/leads",
    )
    mounted = _get(full_path="/plugins/crm/leads")
    assert (mounted.route_path, mounted.full_path) == ("/crm/leads", "/plugins/crm/leads")
    for field in ("path", "route_path", "full_path"):
        with pytest.raises(ValueError, match=rf"ApiRequest\.{field} must be .*starting with '/'"):
            _get(**{field: "leads"})
        with pytest.raises(TypeError, match=rf"ApiRequest\.{field} must be a string"):
            _get(**{field: _wrong(b"/leads")})


def test_api_request_header_names_are_lower_case_and_repeats_joined() -> None:
    """Header names are stored lower-case; names equal once lower-cased are joined with ', '."""
    request = _get(headers={"Content-Type": "text/plain", "X-Tag": "a", "x-tag": "b", "X-TAG": "c"})
    assert request.headers == {"content-type": "text/plain", "x-tag": "a, b, c"}
    pairs = _get(headers=[("Accept", "text/html"), ("ACCEPT", "*/*")])
    assert pairs.headers == {"accept": "text/html, */*"}
    assert attrs.evolve(request) == request  # stored lower-case: converting again changes nothing
    with pytest.raises(TypeError, match="strings as names and values"):
        _get(headers=_wrong({"x-count": 3}))
    with pytest.raises(
        TypeError, match=r"ApiRequest\.headers must be a mapping or \(name, value\)"
    ):
        _get(headers=_wrong("accept: */*"))


def test_api_request_query_keeps_every_value_in_order() -> None:
    """A query name holds every value in order; a string is one value; pairs add up by name."""
    request = _get(query={"tag": ["new", "hot", "new"], "page": "2", "empty": ""})
    assert request.query == {"tag": ("new", "hot", "new"), "page": ("2",), "empty": ("",)}
    pairs = _get(query=[("tag", "new"), ("page", "2"), ("tag", "hot")])
    assert pairs.query == {"tag": ("new", "hot"), "page": ("2",)}
    assert list(pairs.query) == ["tag", "page"]


def test_query_value_is_the_first_value() -> None:
    """query_value gives the first value of a name, or the default when the name was not sent."""
    request = _get(query={"tag": ["new", "hot"], "empty": ""})
    assert request.query_value("tag") == "new"
    assert request.query_value("empty", "x") == ""
    assert request.query_value("page") is None
    assert request.query_value("page", "1") == "1"


@pytest.mark.parametrize(
    ("query", "error", "message"),
    [
        ({"tag": []}, ValueError, r"query\['tag'\] must have at least one value"),
        ({"tag": ["a", 1]}, TypeError, r"query\['tag'\] must hold strings only \(got 1\)"),
        ({"tag": b"a"}, TypeError, r"query\['tag'\] must be a string or a sequence of strings"),
        ({"tag": {"a": "b"}}, TypeError, r"query\['tag'\] must be a string or a sequence"),
        ({"tag": 3}, TypeError, r"query\['tag'\] must be a string or a sequence of strings"),
        ({1: "a"}, TypeError, r"query names must be strings \(got 1\)"),
        ("tag=a", TypeError, r"query must be a mapping or \(name, value\) pairs"),
        ([("tag",)], TypeError, r"query must be a mapping or \(name, value\) pairs"),
    ],
)
def test_api_request_query_refuses_what_is_not_text(
    query: Any, error: type[Exception], message: str
) -> None:
    """A query value must be a string or strings, at least one: the error names the parameter."""
    with pytest.raises(error, match=message):
        _get(query=query)


def _through_the_sandbox_wire(request: ApiRequest, *, trusted: bool) -> Any:
    """As the host sends a route's request to a worker (trusted) or as a worker's data is read."""
    text = json.dumps(encode({"request": request}))
    return decode(json.loads(text), trusted=trusted)["request"]


@given(request=sais.api_requests())
def test_api_requests_cross_every_wire_with_every_query_value_in_order(request: ApiRequest) -> None:
    """The payload codec and the sandbox's wire (both readers) give back the same request,
    every query value of every name in its order, headers lower-case, all three paths."""
    for back in (
        _roundtrip(request),
        _through_the_sandbox_wire(request, trusted=True),
        _through_the_sandbox_wire(request, trusted=False),
    ):
        assert back == request
        assert list(back.query.items()) == list(request.query.items())
        assert all(name == name.lower() for name in back.headers)
        assert (back.path, back.route_path, back.full_path) == (
            request.path,
            request.route_path,
            request.full_path,
        )


def test_api_response_json() -> None:
    """ApiResponse.json writes compact UTF-8 JSON, keeps extra headers and refuses NaN."""
    data: Any = {"name": "Zoë", "n": (1, 2)}  # a tuple, which JSON writes as an array
    response = ApiResponse.json("acme", data, 201, headers={"x-a": "1"})
    assert response.status == 201
    assert response.headers == {"content-type": "application/json", "x-a": "1"}
    assert json.loads(response.body) == {"name": "Zoë", "n": [1, 2]}
    assert "Zoë".encode() in response.body
    with pytest.raises(ValueError, match=r"ApiResponse\.json: data must be a finite number"):
        ApiResponse.json("acme", {"ratio": float("nan")})


# -- routes ------------------------------------------------------------------------------------


def test_route_defaults_to_get() -> None:
    """A Route serves GET unless told otherwise and keeps the handler it was given."""
    route = Route(path="/leads/<id>", handler=_view, name="lead")
    assert route.methods == ("GET",)
    assert route.handler is _view
    assert Route(path="/", handler=_view, name="home", methods=["POST", "PUT"]).methods == (
        "POST",
        "PUT",
    )


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("stats", "must start with '/'"),
        ("", "must start with '/'"),
        ("/stats?x=1", "must not contain spaces, '\\?' or '#'"),
        ("/a b", "must not contain spaces"),
        ("/a/../b", "'.' or '..' segments"),
        ("/a/./b", "'.' or '..' segments"),
    ],
)
def test_route_path_is_checked(path: str, message: str) -> None:
    """A route path must start with '/' and hold no spaces, query, fragment or dot segments."""
    with pytest.raises(ValueError, match=message):
        Route(path=path, handler=_view, name="r")


@pytest.mark.parametrize(
    ("methods", "error", "message"),
    [
        (("get",), ValueError, "upper-case HTTP methods.*got 'get'; write 'GET'"),
        (("FETCH",), ValueError, "got 'FETCH'$"),
        ((), ValueError, "at least one HTTP method"),
        (("GET", "GET"), ValueError, "names a method twice"),
        ("GET", TypeError, "not a single string"),
        ((1,), TypeError, "strings only"),
    ],
)
def test_route_methods_are_checked(methods: Any, error: type[Exception], message: str) -> None:
    """Route methods must be a non-empty tuple of distinct upper-case HTTP methods."""
    with pytest.raises(error, match=message):
        Route(path="/r", handler=_view, name="r", methods=methods)


def test_route_needs_a_callable_handler_and_a_name() -> None:
    """A Route refuses a handler that is not callable and an empty name."""
    with pytest.raises(TypeError, match="handler must be callable"):
        Route(path="/r", handler=_wrong("views.stats"), name="r")
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        Route(path="/r", handler=_view, name="")


def test_every_allowed_method_makes_a_route() -> None:
    """Every method in HTTP_METHODS is accepted."""
    route = Route(path="/r", handler=_view, name="r", methods=tuple(sorted(HTTP_METHODS)))
    assert set(route.methods) == HTTP_METHODS


def _generated() -> Iterator[object]:
    yield ("one/", _view, "one")
    yield Route(path="/two", handler=_view, name="two", methods=("POST",))


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        (None, []),
        ([], []),
        (Route(path="/a", handler=_view, name="a"), [("/a", "a", ("GET",))]),
        (("/a", _view, "a"), [("/a", "a", ("GET",))]),
        (("a/", _view, "a"), [("/a/", "a", ("GET",))]),
        ([("a", _view, "a"), ("b", _view, "b")], [("/a", "a", ("GET",)), ("/b", "b", ("GET",))]),
        (
            (("a", _view, "a"), ("b", _view, "b"), ("c", _view, "c")),
            [("/a", "a", ("GET",)), ("/b", "b", ("GET",)), ("/c", "c", ("GET",))],
        ),
        (_generated(), [("/one/", "one", ("GET",)), ("/two", "two", ("POST",))]),
    ],
    ids=["none", "empty", "route", "tuple", "relative", "list", "tuple-of-tuples", "generator"],
)
def test_normalise_routes_accepts_every_shape(returned: object, expected: list[Any]) -> None:
    """None, a Route, a (path, view, name) tuple and iterables of those become Routes."""
    routes = normalise_routes("crm-sync", returned)
    assert all(isinstance(route, Route) for route in routes)
    assert [(r.path, r.name, r.methods) for r in routes] == expected
    assert all(route.handler is _view for route in routes)


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ("/a", "returned str '/a'"),
        (b"/a", "returned bytes"),
        (42, "returned int 42"),
        ({"/a": _view}, "returned dict"),
        ([("/a", _view, "a"), 42], "item 1 is int 42"),
        ([("/a", _view)], r"item 0 is tuple \('/a', "),
        ([("/a", _view, "a", "extra")], "item 0 is tuple"),
        ([("/a", "views.stats", "a")], "with a callable view"),
        ([["/a", _view, "a"]], "item 0 is list"),
    ],
)
def test_normalise_routes_refuses_other_shapes(returned: object, message: str) -> None:
    """Anything else is a TypeError naming the plugin and the offending item."""
    with pytest.raises(TypeError, match=message) as caught:
        normalise_routes("crm-sync", returned)
    assert "plugin 'crm-sync'" in str(caught.value)


def test_normalise_routes_reports_invalid_routes_by_plugin() -> None:
    """A bad route from a tuple, or two routes with one name, is a ValueError naming the plugin."""
    with pytest.raises(ValueError, match=r"plugin 'crm-sync': register_routes item 0: .*spaces"):
        normalise_routes("crm-sync", ("a b", _view, "a"))
    with pytest.raises(ValueError, match=r"plugin 'crm-sync'.*two routes named 'a'"):
        normalise_routes("crm-sync", [("a", _view, "a"), ("b", _view, "a")])


# -- properties --------------------------------------------------------------------------------

#: The payload types that carry a tenant.
TENANTED = [cls for cls in PAYLOAD_TYPES if cls not in UNTENANTED]
#: The strategy named after each payload type.
NAMED: dict[type[Any], Callable[..., st.SearchStrategy[Any]]] = {
    Context: sais.contexts,
    User: sais.users,
    Lead: sais.leads,
    Booking: sais.bookings,
    Invoice: sais.invoices,
    InvoiceLine: sais.invoice_lines,
    Email: sais.emails,
    Sms: sais.sms,
    Notification: sais.notifications,
    Report: sais.reports,
    Widget: sais.widgets,
    Route: sais.routes,
    HtmlFragment: sais.html_fragments,
    ApiRequest: sais.api_requests,
    ApiResponse: sais.api_responses,
}
#: The hooks plugins receive: hook_arguments() must cover every one.
PLUGIN_HOOKS = [name for name, info in HOOKS.items() if not info.host_only]
#: What the host fills in for each plugin, where a specification names it.
INJECTED = {"api", "settings", "plugin_id"}


def _tenants_in(value: Any) -> set[str]:
    """The tenant of every record in ``value``, nested records, tuples and dicts included."""
    found: set[str] = set()
    if attrs.has(type(value)):
        if "tenant" in attrs.fields_dict(type(value)):
            found.add(value.tenant)
        for field in attrs.fields(type(value)):
            found |= _tenants_in(getattr(value, field.name))
    elif isinstance(value, (tuple, list)):
        for item in value:
            found |= _tenants_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            found |= _tenants_in(item)
    return found


def _has_cents(amount: Decimal) -> bool:
    exponent = amount.as_tuple().exponent
    return amount.is_finite() and exponent == -2


def test_every_payload_type_has_a_strategy() -> None:
    """services_ai_plugins_testing.strategies has a strategy for each type of PAYLOAD_TYPES."""
    assert set(NAMED) == set(PAYLOAD_TYPES)
    assert {strategy.__name__ for strategy in NAMED.values()} <= set(sais.__all__)


@pytest.mark.parametrize("cls", PAYLOAD_TYPES, ids=_ids)
@given(data=st.data())
def test_strategies_draw_valid_payloads(cls: type[Any], data: st.DataObject) -> None:
    """The strategy named after each type, and payloads(type), draw instances that pass the
    type's own checks again when rebuilt."""
    for strategy in (NAMED[cls](), sais.payloads(cls)):
        payload = data.draw(strategy)
        assert type(payload) is cls
        attrs.validate(payload)
        assert attrs.evolve(payload) == payload  # the converters and validators run again


@pytest.mark.parametrize("cls", WIRE_TYPES, ids=_ids)
@given(data=st.data())
def test_generated_payloads_round_trip(cls: type[Any], data: st.DataObject) -> None:
    """Every generated payload survives the wire and JSON text unchanged."""
    payload = data.draw(sais.payloads(cls))
    assert _roundtrip(payload) == payload


@pytest.mark.parametrize("cls", TENANTED, ids=_ids)
@given(data=st.data(), tenant=sais.tenants())
def test_a_pinned_tenant_is_the_tenant_of_every_record(
    cls: type[Any], data: st.DataObject, tenant: str
) -> None:
    """tenant= pins the tenant of a payload and of the records in it (a context's user, ...);
    a strategy of tenants picks one per payload; by default nested records share the tenant."""
    assert _tenants_in(data.draw(NAMED[cls](tenant=tenant))) == {tenant}
    assert _tenants_in(data.draw(sais.payloads(cls, tenant=tenant))) == {tenant}
    pinned = data.draw(NAMED[cls](tenant=st.sampled_from(["acme", "globex"])))
    assert _tenants_in(pinned) in ({"acme"}, {"globex"})
    assert len(_tenants_in(data.draw(NAMED[cls]()))) == 1


@given(sais.leads())
def test_generated_leads_are_realistic(lead: Lead) -> None:
    """A lead's value has two decimal places, its time is aware and its address is one."""
    assert lead.value is None or (_has_cents(lead.value) and lead.value >= 0)
    assert lead.created_at is None or lead.created_at.utcoffset() is not None
    assert lead.email is None or lead.email.count("@") == 1
    assert lead.name.strip()


@given(sais.bookings())
def test_generated_bookings_end_after_they_start(booking: Booking) -> None:
    """A booking ends 0 minutes to 8 hours after it starts, both times aware."""
    assert booking.starts_at.utcoffset() is not None
    assert booking.ends_at.utcoffset() is not None
    assert timedelta(0) <= booking.ends_at - booking.starts_at <= timedelta(hours=8)


@given(sais.invoices())
def test_generated_invoices_are_consistent(invoice: Invoice) -> None:
    """Prices have two places, the total is not negative, and the dates follow the status."""
    assert all(_has_cents(line.unit_price) for line in invoice.lines)
    assert all(line.quantity > 0 for line in invoice.lines)
    assert invoice.total >= 0
    assert (invoice.status == "paid") == (invoice.paid_at is not None)
    if invoice.status != "draft":
        assert invoice.issued_on is not None
        assert invoice.lines
    if invoice.due_on is not None:
        assert invoice.issued_on is not None
        assert invoice.due_on >= invoice.issued_on
    if invoice.paid_at is not None:
        assert invoice.issued_on is not None
        assert invoice.paid_at.utcoffset() is not None
        assert invoice.paid_at.date() >= invoice.issued_on


@given(sais.invoices())
def test_random_invoices_round_trip(invoice: Invoice) -> None:
    """Any generated Invoice survives the wire and JSON text unchanged, total included."""
    back = _roundtrip(invoice)
    assert back == invoice
    assert back.total == invoice.total


# Edge values the realistic strategies leave out: any Decimal, and any whole-second UTC offset
# (CPython reads "+00:00:00.000001" back as UTC, and no zone uses those).
_offsets = st.integers(min_value=-86399, max_value=86399).map(
    lambda seconds: timezone(timedelta(seconds=seconds))
)


@given(
    sais.leads(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=_offsets),
)
def test_any_decimal_and_offset_survive_the_wire(
    lead: Lead, value: Decimal, moment: datetime
) -> None:
    """A Decimal of any size and precision, and a datetime at any offset, come back equal."""
    lead = attrs.evolve(lead, value=value, created_at=moment)
    back = _roundtrip(lead)
    assert back == lead
    assert str(back.value) == str(value)


def test_payload_strategies_refuse_what_they_cannot_use() -> None:
    """payloads() of another type is a TypeError; a blank tenant a ValueError, a number a
    TypeError."""
    with pytest.raises(TypeError, match="not an event payload type"):
        sais.payloads(dict)
    with pytest.raises(ValueError, match="tenant must be a non-blank string"):
        sais.leads(tenant=" ")
    with pytest.raises(TypeError, match="tenant must be a str, a strategy of str, or None"):
        sais.hook_arguments("lead_created", tenant=_wrong(7))


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginHost]:
    """A host without plugins, over memory storage: it checks a call's arguments all the same."""
    with PluginHost(
        FakeHostServices(),
        storage=MemoryStorage(),
        plugins_dir=tmp_path_factory.mktemp("plugins"),
        entry_points=False,
    ) as plugin_host:
        yield plugin_host


@pytest.mark.parametrize("hook", PLUGIN_HOOKS)
@given(data=st.data())
def test_hook_arguments_make_a_valid_call(hook: str, data: st.DataObject, host: PluginHost) -> None:
    """hook_arguments(hook) holds every argument of the spec but the injected ones, with valid
    records of the pinned tenant, and the host takes them as a call of the hook."""
    arguments = data.draw(sais.hook_arguments(hook, tenant="acme"))
    spec = getattr(plugin_manager().hook, hook).spec
    assert set(arguments) == set(spec.argnames) - INJECTED
    assert _tenants_in(arguments) <= {"acme"}
    if HOOKS[hook].tenant_scoped:
        assert arguments["context"].tenant == "acme"
    for value in arguments.values():
        for item in value if isinstance(value, tuple) else (value,):
            if attrs.has(type(item)):
                attrs.validate(item)
    host.call_hook(hook, **arguments)


@given(sais.hook_arguments("plugin_suspended"))
def test_hook_arguments_of_a_host_only_hook_include_plugin_id(arguments: dict[str, Any]) -> None:
    """plugin_suspended, which the host calls for itself, gets every argument, plugin_id too."""
    assert set(arguments) == {"plugin_id", "reason", "tenant", "context"}
    tenant, context = arguments["tenant"], arguments["context"]
    assert tenant is None or context is None or context.tenant == tenant


@pytest.mark.parametrize(
    ("hook", "record"),
    [("lead_updated", Lead), ("booking_updated", Booking), ("invoice_updated", Invoice)],
)
@given(data=st.data())
def test_changes_name_fields_of_the_record_in_wire_form(
    hook: str, record: type[Any], data: st.DataObject
) -> None:
    """The changes of an *_updated hook map some of the record's fields to their values before
    the update, in wire form: the record as it was before reads back from the wire."""
    arguments = data.draw(sais.hook_arguments(hook))
    changes = arguments["changes"]
    payload = arguments[record.__name__.lower()]
    assert changes
    assert set(changes) <= set(attrs.fields_dict(record)) - {"id", "tenant"}
    assert type(from_wire(record, {**to_wire(payload), **changes})) is record


@given(sais.hook_arguments("filter_lead_data"))
def test_filter_lead_data_gets_lead_fields(arguments: dict[str, Any]) -> None:
    """filter_lead_data's data maps lead fields (never id or tenant) to wire values."""
    data = arguments["data"]
    assert set(data) <= set(attrs.fields_dict(Lead)) - {"id", "tenant"}
    assert json.loads(json.dumps(data)) == data


@given(sais.hook_arguments("filter_invoice_lines"), sais.hook_arguments("plugin_upgraded"))
def test_hook_arguments_that_belong_together_agree(
    lines_call: dict[str, Any], upgrade: dict[str, Any]
) -> None:
    """A filter chain of lines starts from the invoice's own; an upgrade goes up, not down."""
    assert lines_call["lines"] == lines_call["invoice"].lines
    assert Version(upgrade["from_version"]) <= Version(upgrade["to_version"])


def test_hook_arguments_of_an_unknown_hook_suggest_a_name() -> None:
    """An unknown hook name is a KeyError that suggests the closest built-in hook."""
    with pytest.raises(KeyError, match="did you mean 'lead_created'"):
        sais.hook_arguments("lead_create")


@given(
    st.sampled_from(WIRE_TYPES),
    st.data(),
    json_values(max_leaves=5, max_digits=MAX_INT_DIGITS),
)
def test_from_wire_fails_only_with_payload_error(
    cls: type[Any], data: st.DataObject, value: Any
) -> None:
    """Replacing one field of an example by any JSON value reads back or raises PayloadError."""
    wire = to_wire(example(cls))
    key = data.draw(st.sampled_from([*wire, "unknown"]))
    wire[key] = value
    try:
        payload: object = from_wire(cls, wire)
    except PayloadError as exc:
        assert exc.problems
    else:
        assert key != "unknown"
        assert type(payload) is cls
