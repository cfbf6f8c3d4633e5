"""The PluginAPI: every method checked against the grants, scoped to one tenant."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import attrs
import pytest

from services_ai_plugins import (
    HostServices,
    PermissionDenied,
    PluginAPI,
    QuotaExceeded,
    RateLimited,
    requires,
)
from services_ai_plugins.errors import TenantScopeError
from services_ai_plugins.events import Context, Lead
from services_ai_plugins.storage import StoreUsage
from services_ai_plugins.types import (
    DEFAULT_PERMISSIONS,
    ApiLimits,
    ApiMeter,
    DeniedCall,
    Permission,
    PermissionCatalogue,
    Rate,
    Risk,
)
from services_ai_plugins_testing.fakes import FakeHostServices

ALL = frozenset(p.name for p in DEFAULT_PERMISSIONS)


class World:
    """Fake services with one record of each kind in two tenants."""

    def __init__(self) -> None:
        self.services = FakeHostServices()
        self.lead = self.services.add_lead("acme", name="Ada")
        self.booking = self.services.add_booking("acme")
        self.invoice = self.services.add_invoice("acme")
        self.user = self.services.add_user("acme")
        self.other_lead = self.services.add_lead("globex", name="Grace")
        self.denied: list[DeniedCall] = []

    def api(self, grants: frozenset[str], tenant: str | None = "acme") -> PluginAPI:
        return PluginAPI(
            "crm-sync",
            self.services,
            tenant=tenant,
            grants=grants,
            on_denied=self.denied.append,
        )


Call = Callable[[PluginAPI, World], Any]

#: (API method, the permission it needs, a call of it, the host service it reaches)
CHECKED: list[tuple[str, str, Call, str]] = [
    ("get_lead", "read_leads", lambda api, w: api.get_lead(w.lead.id), "get_lead"),
    ("list_leads", "read_leads", lambda api, w: api.list_leads(limit=5), "list_leads"),
    (
        "update_lead",
        "write_leads",
        lambda api, w: api.update_lead(w.lead.id, {"status": "won"}),
        "update_lead",
    ),
    ("get_booking", "read_bookings", lambda api, w: api.get_booking(w.booking.id), "get_booking"),
    ("list_bookings", "read_bookings", lambda api, w: api.list_bookings(), "list_bookings"),
    (
        "update_booking",
        "write_bookings",
        lambda api, w: api.update_booking(w.booking.id, {"status": "confirmed"}),
        "update_booking",
    ),
    ("get_invoice", "read_invoices", lambda api, w: api.get_invoice(w.invoice.id), "get_invoice"),
    ("list_invoices", "read_invoices", lambda api, w: api.list_invoices(), "list_invoices"),
    ("get_user", "read_users", lambda api, w: api.get_user(w.user.id), "get_user"),
    (
        "send_notification",
        "send_notifications",
        lambda api, w: api.send_notification("New lead", channel="sales"),
        "send_notification",
    ),
    (
        "send_email",
        "send_email",
        lambda api, w: api.send_email("ada@example.com", "Hello", "Welcome"),
        "send_email",
    ),
    ("send_sms", "send_sms", lambda api, w: api.send_sms("+15550100", "Hi"), "send_sms"),
]
IDS = [case[0] for case in CHECKED]

#: Methods on the plugin's own data: no permission, but a tenant.
OWN: list[tuple[str, Call, str]] = [
    ("get_settings", lambda api, w: api.get_settings(), "get_settings"),
    ("store_get", lambda api, w: api.store_get("k"), "store_get"),
    ("store_set", lambda api, w: api.store_set("k", {"n": 1}), "store_set"),
    ("store_delete", lambda api, w: api.store_delete("k"), "store_delete"),
]


def test_every_method_is_covered_here() -> None:
    """This table names every API method and the permission it declares."""
    declared = PluginAPI.permissions()
    table = {name: permission for name, permission, _, _ in CHECKED}
    table.update({name: None for name, _, _ in OWN})
    table["get_setting"] = None
    table["http_request"] = "http_requests"  # reaches no host service: tests/egress/
    assert declared == dict(sorted(table.items()))
    assert PluginAPI.check_catalogue(PermissionCatalogue()) == []


@pytest.mark.parametrize(("method", "permission", "call", "service"), CHECKED, ids=IDS)
def test_allowed_with_the_grant_and_scoped_to_the_tenant(
    method: str, permission: str, call: Call, service: str
) -> None:
    """With its permission a method reaches host services, always for the API's tenant."""
    world = World()
    call(world.api(frozenset({permission})), world)
    assert [(name, tenant) for name, tenant, _ in world.services.calls] == [(service, "acme")]
    assert world.denied == []


@pytest.mark.parametrize(("method", "permission", "call", "service"), CHECKED, ids=IDS)
def test_denied_without_the_grant(method: str, permission: str, call: Call, service: str) -> None:
    """Without its permission a method raises PermissionDenied, is recorded, and does nothing."""
    world = World()
    with pytest.raises(PermissionDenied) as caught:
        call(world.api(ALL - {permission}), world)
    error = caught.value
    assert (error.plugin_id, error.permission, error.method, error.tenant) == (
        "crm-sync",
        permission,
        method,
        "acme",
    )
    assert f"may not call {method}()" in str(error)
    assert isinstance(error, PermissionError)
    assert world.services.calls == []
    [denied] = world.denied
    assert (denied.method, denied.permission, denied.tenant) == (method, permission, "acme")


@pytest.mark.parametrize(("method", "permission", "call", "service"), CHECKED, ids=IDS)
def test_methods_need_a_tenant(method: str, permission: str, call: Call, service: str) -> None:
    """In a hook without a tenant, tenant-scoped methods refuse instead of guessing one."""
    world = World()
    with pytest.raises(TenantScopeError, match="where there is no tenant"):
        call(world.api(ALL, tenant=None), world)
    assert world.services.calls == []


class Leaky(FakeHostServices):
    """A faulty adapter: every record it returns belongs to tenant 'globex'."""

    def _get(self, kind: type, tenant: str, record_id: str) -> Any:
        record = super()._get(kind, tenant, record_id)
        return None if record is None else attrs.evolve(record, tenant="globex")

    def _list(self, kind: type, tenant: str, limit: int) -> list[Any]:
        return [attrs.evolve(r, tenant="globex") for r in super()._list(kind, tenant, limit)]

    def _update(self, kind: type, tenant: str, record_id: str, changes: Any) -> Any:
        return attrs.evolve(super()._update(kind, tenant, record_id, changes), tenant="globex")


RETURNING = [case for case in CHECKED if not case[0].startswith("send_")]


@pytest.mark.parametrize(
    ("method", "permission", "call", "service"), RETURNING, ids=[c[0] for c in RETURNING]
)
def test_foreign_tenant_data_is_refused(
    method: str, permission: str, call: Call, service: str
) -> None:
    """Records of another tenant from host services are refused and recorded."""
    world = World()
    leaky = Leaky()
    leaky._rows = world.services._rows
    api = PluginAPI("crm-sync", leaky, tenant="acme", grants=ALL, on_denied=world.denied.append)
    with pytest.raises(TenantScopeError) as caught:
        call(api, world)
    assert (caught.value.expected, caught.value.actual) == ("acme", "globex")
    assert [d.method for d in world.denied] == [method]


def test_a_plugin_cannot_reach_another_tenants_records() -> None:
    """An id of another tenant's lead finds nothing: the API asks for its own tenant."""
    world = World()
    api = world.api(ALL)
    assert api.get_lead(world.other_lead.id) is None
    assert [lead.tenant for lead in api.list_leads()] == ["acme"]


def test_messages_carry_the_apis_tenant() -> None:
    """Notifications, e-mail and SMS are built for the bound tenant."""
    world = World()
    api = world.api(ALL)
    api.send_notification("hello", channel="sales", level="warning")
    api.send_email(["a@example.com", "b@example.com"], "Subject", "Body", html="<p>Body</p>")
    api.send_sms("+15550100", "Hi")
    assert world.services.sent_notifications[0].tenant == "acme"
    assert world.services.sent_notifications[0].level == "warning"
    assert world.services.sent_emails[0].to == ("a@example.com", "b@example.com")
    assert world.services.sent_sms[0].tenant == "acme"


@pytest.mark.parametrize(("method", "call", "service"), OWN, ids=[c[0] for c in OWN])
def test_own_data_needs_no_permission_but_a_tenant(method: str, call: Call, service: str) -> None:
    """Settings and the key-value store need no grant, and are kept per tenant."""
    world = World()
    call(world.api(frozenset()), world)
    assert world.services.calls[0][:2] == (service, "acme")
    with pytest.raises(TenantScopeError):
        call(world.api(ALL, tenant=None), world)


def test_the_store_is_per_plugin_and_tenant() -> None:
    """A value kept for one tenant is not seen by another, nor by another plugin."""
    world = World()
    world.api(frozenset()).store_set("last", [1, 2])
    assert world.api(frozenset()).store_get("last") == [1, 2]
    assert world.api(frozenset(), tenant="globex").store_get("last", "none") == "none"
    other = PluginAPI("mailer", world.services, tenant="acme", grants=frozenset())
    assert other.store_get("last") is None
    world.api(frozenset()).store_delete("last")
    assert world.api(frozenset()).store_get("last") is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("", 1, "store key"),
        ("k" * 201, 1, "store key"),
        ("k", float("nan"), "finite"),
        ("k", {1: "x"}, "keys must be strings"),
        ("k", "x" * 70_000, "at most 65536"),
    ],
)
def test_store_values_are_checked(key: str, value: Any, message: str) -> None:
    """Keys and values that a store could not keep faithfully are refused."""
    with pytest.raises(ValueError, match=message):
        World().api(frozenset()).store_set(key, value)


def test_settings_are_read_through_the_api() -> None:
    """get_setting reads one value; an undeclared name is a KeyError naming the known ones."""
    world = World()
    world.services.settings[("acme", "crm-sync")] = {"threshold": 5}
    api = world.api(frozenset())
    assert api.get_setting("threshold") == 5
    with pytest.raises(KeyError, match="settings: threshold"):
        api.get_setting("colour")


@pytest.mark.parametrize(
    ("limit", "error"), [(0, ValueError), (1001, ValueError), (-1, ValueError), (True, TypeError)]
)
def test_list_limits_are_checked(limit: Any, error: type[Exception]) -> None:
    """List calls take an int limit from 1 to 1000 (a bool is no int here)."""
    with pytest.raises(error, match="limit"):
        World().api(ALL).list_leads(limit=limit)


def test_a_context_of_another_tenant_is_refused() -> None:
    """An API cannot be bound to a context of another tenant."""
    with pytest.raises(TenantScopeError):
        PluginAPI(
            "crm-sync",
            FakeHostServices(),
            tenant="acme",
            grants=frozenset(),
            context=Context(tenant="globex"),
        )


def test_hosts_add_methods_with_their_own_permissions() -> None:
    """A host subclass declares new methods and permissions; the same checks apply."""

    class TicketAPI(PluginAPI):
        __slots__ = ()

        @requires("read_tickets")
        def count_tickets(self) -> int:
            """How many tickets the tenant has."""
            self._require_tenant("count_tickets")
            return 3

    catalogue = PermissionCatalogue()
    assert TicketAPI.check_catalogue(catalogue) == ["read_tickets"]
    catalogue.add(Permission("read_tickets", "Read support tickets.", Risk.MEDIUM))
    assert TicketAPI.check_catalogue(catalogue) == []
    assert TicketAPI.permissions()["count_tickets"] == "read_tickets"
    services = FakeHostServices()
    assert TicketAPI("p", services, tenant="a", grants=frozenset({"read_tickets"})).count_tickets()
    with pytest.raises(PermissionDenied, match="read_tickets"):
        TicketAPI("p", services, tenant="a", grants=frozenset()).count_tickets()
    assert TicketAPI.count_tickets.__doc__ == "How many tickets the tenant has."


def test_the_catalogue() -> None:
    """The catalogue knows the defaults, takes new permissions, and refuses redefinitions."""
    catalogue = PermissionCatalogue()
    assert "read_leads" in catalogue
    assert catalogue["send_email"].risk is Risk.HIGH
    assert catalogue.unknown(["read_leads", "launch_rockets"]) == ["launch_rockets"]
    catalogue.add(catalogue["read_leads"])
    with pytest.raises(ValueError, match="already defined"):
        catalogue.add(Permission("read_leads", "Something else.", Risk.LOW))
    with pytest.raises(ValueError, match="permission name"):
        Permission("Read Leads", "x", Risk.LOW)
    with pytest.raises(KeyError, match="unknown permission"):
        catalogue["nope"]
    assert [p.name for p in catalogue] == sorted(p.name for p in catalogue)


def test_the_fake_services_satisfy_the_protocol() -> None:
    """The testing package's fake is a HostServices."""
    assert isinstance(FakeHostServices(), HostServices)


def test_the_api_exposes_little() -> None:
    """The API object has no __dict__: plugins cannot hang state on it or reach past slots."""
    api = World().api(ALL)
    assert not hasattr(api, "__dict__")
    with pytest.raises(AttributeError):
        api.anything = 1  # type: ignore[attr-defined]
    assert repr(api) == "PluginAPI(plugin_id='crm-sync', tenant='acme')"
    assert isinstance(World().lead, Lead)


# -- argument types --------------------------------------------------------------------------

#: (a call with an argument of the wrong type, the TypeError's message)
WRONG_TYPES: list[tuple[Call, str]] = [
    (lambda api, w: api.get_lead({"id": w.lead.id}), "get_lead(): lead_id must be str, not dict"),
    (lambda api, w: api.get_lead(lead_id=7), "get_lead(): lead_id must be str, not int"),
    (
        lambda api, w: api.update_lead(w.lead.id, [("status", "won")]),
        "update_lead(): changes must be a mapping, not list",
    ),
    (lambda api, w: api.list_leads(limit=5.0), "list_leads(): limit must be int, not float"),
    (
        lambda api, w: api.send_email(["a@example.com", 7], "s", "b"),
        "send_email(): to must be str or an iterable of str, not list",
    ),
    (
        lambda api, w: api.send_email({"a@example.com": 1}, "s", "b"),
        "send_email(): to must be str or an iterable of str, not dict",
    ),
    (
        lambda api, w: api.send_email("a@example.com", "s", "b", html=b"<p>"),
        "send_email(): html must be str or None, not bytes",
    ),
    (lambda api, w: api.send_sms("+15550100", None), "send_sms(): text must be str, not NoneType"),
    (lambda api, w: api.store_set(["k"], 1), "store_set(): key must be str, not list"),
    (lambda api, w: api.get_setting(("x",)), "get_setting(): name must be str, not tuple"),
]


@pytest.mark.parametrize(("call", "message"), WRONG_TYPES)
def test_arguments_of_the_wrong_type_are_refused_before_the_services(
    call: Call, message: str
) -> None:
    """Each argument is checked against the method's annotations: a wrong type raises
    TypeError naming the method and the argument, and no host service is called."""
    world = World()
    with pytest.raises(TypeError) as caught:
        call(world.api(ALL), world)
    assert str(caught.value) == f"PluginAPI.{message}"
    assert world.services.calls == []


def test_arguments_of_the_declared_types_pass() -> None:
    """Iterables of strings, None where allowed, and JSON values of any shape go through."""
    world = World()
    api = world.api(ALL)
    api.send_email(["a@example.com", "b@example.com"], "s", "b", reply_to=None)
    api.send_email(("a@example.com",), "s", "b")
    api.send_email(iter(["a@example.com"]), "s", "b")
    api.send_notification("hi", channel=None, recipient="ada", level="warning")
    api.store_set("k", {"nested": [1, 2.5, None, True]})
    assert [e.to for e in world.services.emails()] == [
        ("a@example.com", "b@example.com"),
        ("a@example.com",),
        ("a@example.com",),
    ]


def test_a_refused_permission_is_reported_before_a_wrong_type() -> None:
    """Without the grant the call is a PermissionDenied, whatever its arguments."""
    world = World()
    with pytest.raises(PermissionDenied):
        world.api(frozenset()).get_lead({"id": 1})  # type: ignore[arg-type]


class Ticket:
    """A host's own record type, defined after the API class that names it."""


def test_a_hosts_own_methods_get_the_same_argument_checks() -> None:
    """A subclass's @requires methods are checked from their annotations too: classes named
    later in the module, Literal, Sequence; a name only a type checker sees is not checked."""

    class TicketAPI(PluginAPI):
        __slots__ = ()

        @requires("read_tickets")
        def find(
            self,
            number: int,
            *,
            status: Literal["open", "closed"] = "open",
            tags: Sequence[str] = (),
            like: Ticket | None = None,
            hint: NotImportedHere | None = None,  # type: ignore[name-defined]  # noqa: F821
        ) -> str:
            return f"{number} {status} {list(tags)}"

    api = TicketAPI("p", FakeHostServices(), tenant="a", grants=frozenset({"read_tickets"}))
    assert api.find(3, status="closed", tags=["vip"], like=Ticket(), hint=object()) == (
        "3 closed ['vip']"
    )
    refused = [
        (lambda: api.find("3"), "number must be int, not str"),
        (lambda: api.find(True), "number must be int, not bool"),
        (lambda: api.find(3, status="pending"), "status must be 'open' or 'closed', not str"),
        (lambda: api.find(3, tags="vip"), "tags must be a sequence of str, not str"),
        (lambda: api.find(3, like="t-1"), "like must be Ticket or None, not str"),
    ]
    for call, message in refused:
        with pytest.raises(TypeError) as caught:
            call()
        assert str(caught.value).endswith(f"find(): {message}")


@pytest.mark.parametrize("key", ["a\x00b", "\ud800"])
def test_store_keys_that_storage_cannot_hold_are_refused(key: str) -> None:
    """Keys with NUL or lone surrogates cannot be kept by every database: refused."""
    world = World()
    with pytest.raises(ValueError, match="NUL or lone surrogates"):
        world.api(frozenset()).store_set(key, 1)
    assert world.services.calls == []


# -- limits ----------------------------------------------------------------------------------


class Clock:
    """Seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limited(world: World, meter: ApiMeter, tenant: str = "acme") -> PluginAPI:
    return PluginAPI(
        "crm-sync",
        world.services,
        tenant=tenant,
        grants=ALL,
        on_denied=world.denied.append,
        meter=meter,
    )


def test_the_store_quota_counts_keys_and_bytes_and_deleting_makes_room() -> None:
    """A set that would take the store past its keys or bytes raises QuotaExceeded and keeps
    nothing; replacing or deleting keys makes room; other tenants have their own quota."""
    world = World()
    meter = ApiMeter(ApiLimits(store_keys=2, store_bytes=40))
    api = limited(world, meter)
    api.store_set("a", "x" * 8)  # 1 + 10 bytes
    api.store_set("b", "y" * 8)
    with pytest.raises(QuotaExceeded) as caught:
        api.store_set("c", 1)
    assert (caught.value.limit, caught.value.allowed, caught.value.requested) == (
        "store_keys",
        2,
        3,
    )
    assert (caught.value.plugin_id, caught.value.tenant) == ("crm-sync", "acme")
    with pytest.raises(QuotaExceeded, match="at most 40 bytes") as caught:
        api.store_set("b", "y" * 30)
    assert caught.value.requested == 11 + 1 + 32
    assert world.services.stored("acme", "crm-sync") == {"a": "x" * 8, "b": "y" * 8}
    assert [(d.method, d.permission) for d in world.denied] == [("store_set", None)] * 2
    api.store_delete("a")
    api.store_set("c", 1)
    api.store_set("b", "y" * 20)
    assert meter.store_usage("crm-sync", "acme") == StoreUsage(keys=2, bytes=2 + 1 + 22)
    limited(world, meter, "globex").store_set("a", "x" * 8)
    assert meter.store_usage("crm-sync", "globex") == StoreUsage(keys=1, bytes=11)


def test_a_failed_host_write_gives_its_charge_back() -> None:
    """When the host services fail to keep a value, the store's usage is what it was."""

    class Failing(FakeHostServices):
        def store_set(self, tenant: str, plugin_id: str, key: str, value: Any) -> None:
            if value == "boom":
                raise RuntimeError("database down")
            super().store_set(tenant, plugin_id, key, value)

    world = World()
    world.services = Failing()
    meter = ApiMeter(ApiLimits(store_keys=1))
    api = limited(world, meter)
    api.store_set("a", 1)
    with pytest.raises(RuntimeError, match="database down"):
        api.store_set("a", "boom")
    with pytest.raises(RuntimeError, match="database down"):
        limited(world, meter, "globex").store_set("a", "boom")
    assert meter.store_usage("crm-sync", "acme") == StoreUsage(keys=1, bytes=2)
    assert meter.store_usage("crm-sync", "globex") == StoreUsage()


def test_send_rates_refill_over_time_and_each_run_of_refusals_is_reported_once() -> None:
    """A token bucket per (plugin, tenant, method): bursts up to its count, then RateLimited
    with the seconds to wait; it refills at count / per. The first refusal after an allowed
    call is reported to on_denied, the rest of that run only raised."""
    world = World()
    clock = Clock()
    meter = ApiMeter(ApiLimits(rates={"send_sms": Rate(2, per=10.0)}), clock=clock)
    api = limited(world, meter)
    api.send_sms("+15550100", "1")
    api.send_sms("+15550100", "2")
    for _ in range(3):
        with pytest.raises(RateLimited) as caught:
            api.send_sms("+15550100", "3")
    assert (caught.value.limit, caught.value.allowed, caught.value.per) == ("send_sms", 2, 10.0)
    assert caught.value.retry_after == pytest.approx(5.0)
    assert len(world.services.sms()) == 2
    assert [(d.method, d.permission) for d in world.denied] == [("send_sms", None)]
    clock.now += 5.0
    api.send_sms("+15550100", "4")
    with pytest.raises(RateLimited):
        api.send_sms("+15550100", "5")
    assert len(world.denied) == 2
    limited(world, meter, "globex").send_sms("+15550100", "elsewhere")
    api.send_email("a@example.com", "s", "b")  # not in this meter's rates: unlimited
    assert len(world.services.sms()) == 4


def test_a_meter_shared_by_api_objects_keeps_its_counts() -> None:
    """API objects built anew (as a host does when its snapshot changes) share one meter."""
    world = World()
    meter = ApiMeter(ApiLimits(store_keys=1, rates={"send_notification": Rate(1, per=3600.0)}))
    limited(world, meter).store_set("a", 1)
    limited(world, meter).send_notification("hi")
    with pytest.raises(QuotaExceeded):
        limited(world, meter).store_set("b", 1)
    with pytest.raises(RateLimited):
        limited(world, meter).send_notification("again")


def test_limits_are_checked() -> None:
    """Limits are positive ints (or None: no limit); rates map method names to Rate."""
    assert ApiLimits(store_keys=None, store_bytes=None).store_keys is None
    assert ApiLimits().rates["send_sms"] == Rate(10, per=60.0)
    for bad in ({"store_keys": 0}, {"store_bytes": True}, {"store_value_bytes": None}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ApiLimits(**bad)
    with pytest.raises(ValueError, match="count"):
        Rate(0)
    with pytest.raises(ValueError, match="per"):
        Rate(1, per=0)
    with pytest.raises(TypeError, match="Rate"):
        ApiLimits(rates={"send_sms": 5})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="at most 10"):
        limited(World(), ApiMeter(ApiLimits(store_value_bytes=10))).store_set("k", "x" * 20)


def test_a_meter_needs_a_ledger_that_can_keep_store_usage() -> None:
    """A storage without the store-ledger methods (a backend of an older release) is refused
    when the meter is made, not at a plugin's first store_set."""
    with pytest.raises(TypeError, match="no charge_store and no store_usage"):
        ApiMeter(ledger=object())  # type: ignore[arg-type]
