"""HostServices made cheap: a default for every method, the SDK's own plugin store, record builders.

Every promise is driven through the real host (``PluginHost`` with a ``SandboxPolicy``,
plugins installed from uploaded archives), in process and sandboxed alike.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import (
    HostServices,
    MemoryStorage,
    PluginAPI,
    PluginHost,
    QuotaExceeded,
    SandboxPolicy,
    SQLiteStorage,
)
from services_ai_plugins._api import DeniedCall, provides
from services_ai_plugins._cli._host import _CommandLineServices
from services_ai_plugins.errors import NotSupported
from services_ai_plugins.events import Context, Lead
from services_ai_plugins.storage import SourceKind, StoreUsage
from services_ai_plugins.types import (
    DEFAULT_PERMISSIONS,
    ApiLimits,
    ApiMeter,
    Isolation,
    JSONValue,
)
from services_ai_plugins_testing.fakes import FakeHostServices

ALL = frozenset(p.name for p in DEFAULT_PERMISSIONS)
ACME = Context(tenant="acme")

HEADER = (
    "import json\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.errors import NotSupported, QuotaExceeded\n\n\n"
    "class Plugin:\n"
)

#: Where an uploaded plugin runs: in the host's process, or in a sandbox worker.
WHERE = {
    "in-process": {"isolation": {SourceKind.ARCHIVE: Isolation.INPROCESS}},
    "sandboxed": {},
}


class LeadsOnly(HostServices):
    """An app that has leads and nothing else: it overrides one method."""

    def __init__(self, leads: Mapping[tuple[str, str], Lead] = {}) -> None:
        self.leads = dict(leads)

    def get_lead(self, tenant: str, lead_id: str) -> Lead | None:
        return self.leads.get((tenant, lead_id))


class NoBookings(FakeHostServices):
    """The fake app, without bookings: the HostServices defaults put back."""

    get_booking = HostServices.get_booking
    list_bookings = HostServices.list_bookings
    update_booking = HostServices.update_booking


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def denied() -> list[DeniedCall]:
    return []


@pytest.fixture(params=list(WHERE), ids=list(WHERE))
def make_host(
    request: pytest.FixtureRequest, hosts: Hosts, denied: list[DeniedCall]
) -> Callable[..., PluginHost]:
    where: dict[str, Any] = WHERE[request.param]

    def make(**options: Any) -> PluginHost:
        sandbox = SandboxPolicy(**{"timeout": 10.0, "start_timeout": 60.0, **where})
        return cast("PluginHost", hosts(sandbox=sandbox, on_denied=denied.append, **options))

    return make


def a_lead(tenant: str = "acme") -> Lead:
    return FakeHostServices().make_lead(tenant, name="Ada")


# -- 1. a default for every method ---------------------------------------------------------------


def test_an_app_overrides_only_what_it_has() -> None:
    """A subclass is HostServices; every method it does not override raises NotSupported, which
    names the method and what the app lacks."""
    lead = a_lead()
    services = LeadsOnly({("acme", lead.id): lead})
    assert isinstance(services, HostServices)
    assert services.get_lead("acme", lead.id) == lead
    with pytest.raises(NotSupported) as caught:
        services.get_booking("acme", "b-1")
    error = caught.value
    assert (error.method, error.what) == ("get_booking", "bookings")
    assert str(error) == "this app does not provide bookings (HostServices.get_booking)"
    assert isinstance(error, NotImplementedError)
    for method in ("send_sms", "list_invoices", "get_user", "update_lead", "store_get"):
        assert not provides(services, method)
    assert provides(services, "get_lead")


def test_an_app_that_implements_everything_without_subclassing_still_is_host_services() -> None:
    """A structural implementation (the command line's services define every method and do
    not subclass) is HostServices as before, and provides every method it defines."""
    services = _CommandLineServices(cast("Any", None))
    assert HostServices not in type(services).__mro__
    assert isinstance(services, HostServices)
    assert provides(services, "store_get")
    assert provides(services, "get_booking")


def test_the_api_raises_not_supported_and_logs_it_once_but_does_not_deny(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """api.get_booking() on an app without bookings raises NotSupported; it is no refusal of the
    plugin's rights (on_denied hears nothing) and is logged at INFO once per (plugin, method)."""
    denied: list[DeniedCall] = []
    services = LeadsOnly()
    api = PluginAPI("crm-sync", services, tenant="acme", grants=ALL, on_denied=denied.append)
    caplog.set_level(logging.INFO, logger="services_ai_plugins")
    for _ in range(3):
        with pytest.raises(NotSupported, match=r"HostServices\.get_booking"):
            api.get_booking("b-1")
    with pytest.raises(NotSupported, match=r"HostServices\.send_sms"):
        api.send_sms("+15550100", "Hi")
    other = PluginAPI("mailer", services, tenant="globex", grants=ALL, on_denied=denied.append)
    with pytest.raises(NotSupported):
        other.get_booking("b-1")
    assert denied == []
    logged = [
        (record.name, record.levelno, record.getMessage())
        for record in caplog.records
        if "NotSupported" in record.getMessage()
    ]
    assert [(name, level) for name, level, _ in logged] == [
        ("services_ai_plugins.plugins.crm-sync", logging.INFO),
        ("services_ai_plugins.plugins.crm-sync", logging.INFO),
        ("services_ai_plugins.plugins.mailer", logging.INFO),
    ]
    assert "get_booking()" in logged[0][2]
    assert "does not provide bookings" in logged[0][2]
    assert "send_sms()" in logged[1][2]


def test_a_permission_is_checked_before_the_app_is_asked() -> None:
    """Without its grant a method is denied (and audited) even where the app lacks it: a
    plugin learns nothing about the app that its grants do not allow."""
    denied: list[DeniedCall] = []
    api = PluginAPI(
        "crm-sync", LeadsOnly(), tenant="acme", grants=frozenset(), on_denied=denied.append
    )
    with pytest.raises(PermissionError):
        api.get_booking("b-1")
    assert [d.method for d in denied] == ["get_booking"]


@pytest.fixture
def services() -> FakeHostServices:
    return NoBookings()


def test_plugins_catch_not_supported_in_process_and_sandboxed(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    denied: list[DeniedCall],
) -> None:
    """A plugin asking an app without bookings for one gets NotSupported, the same class in its
    worker as in process, with its fields; one that does not catch it fails with it, recorded
    as its failure and not as a denial."""
    host = make_host()
    install(
        host,
        "careful",
        """
        @hookimpl
        def lead_created(self, lead, api):
            try:
                api.get_booking("b-1")
            except NotSupported as error:
                api.store_set("refused", [
                    type(error).__module__, type(error).__name__, error.method, error.what,
                    str(error), isinstance(error, NotImplementedError),
                ])
        """,
        permissions=["read_leads", "read_bookings"],
    )
    install(
        host,
        "careless",
        """
        @hookimpl
        def lead_created(self, lead, api):
            api.list_bookings()
        """,
        permissions=["read_leads", "read_bookings"],
    )
    host.hook.lead_created(lead=services.make_lead("acme"), context=ACME)
    assert services.stored("acme", "careful")["refused"] == [
        "services_ai_plugins.errors",
        "NotSupported",
        "get_booking",
        "bookings",
        "this app does not provide bookings (HostServices.get_booking)",
        True,
    ]
    assert host.failures("careful") == []
    [failure] = host.failures("careless")
    assert failure.exc_type == "NotSupported"
    assert "HostServices.list_bookings" in failure.message
    assert denied == []


class SettingsNeverAsked(FakeHostServices):
    def get_settings(self, tenant: str, plugin_id: str) -> Mapping[str, JSONValue]:
        raise AssertionError("the host must never ask the app for a plugin's settings")


def test_the_host_gives_plugins_the_registrys_settings_never_the_apps(
    make_host: Callable[..., PluginHost], install: Installer, hosts: Hosts
) -> None:
    """api.get_settings() and api.get_setting() read the registry's settings (defaults filled
    in), in process and sandboxed; the app's get_settings is never called."""
    hosts.services = services = SettingsNeverAsked()
    host = make_host()
    install(
        host,
        "reader",
        """
        @hookimpl
        def lead_created(self, lead, api):
            api.store_set("settings", [api.get_settings(), api.get_setting("colour")])
        """,
        settings=[
            {"name": "greeting", "type": "string", "default": "Hello"},
            {"name": "colour", "type": "string", "default": "blue"},
        ],
    )
    host.registry.set_settings("reader", "acme", {"greeting": "Welcome"}, actor="admin")
    host.hook.lead_created(lead=services.make_lead("acme"), context=ACME)
    assert host.failures("reader") == []
    assert services.stored("acme", "reader")["settings"] == [
        {"greeting": "Welcome", "colour": "blue"},
        "blue",
    ]
    assert services.calls_to("get_settings") == []


def test_an_api_without_host_settings_finds_none_when_the_app_has_none() -> None:
    """Built by hand without settings (a plugin's own test) over an app without the deprecated
    get_settings, the API has no settings: an empty mapping, never NotSupported."""
    api = PluginAPI("crm-sync", LeadsOnly(), tenant="acme", grants=frozenset())
    assert api.get_settings() == {}
    with pytest.raises(KeyError, match="settings: none"):
        api.get_setting("colour")


def test_pid_is_not_the_hosts_in_the_sandbox_only_sanity(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    request: pytest.FixtureRequest,
) -> None:
    """Sanity of this module's fixtures: the sandboxed variant really runs in another process."""
    host = make_host()
    install(
        host,
        "where",
        """
        @hookimpl
        def lead_created(self, lead, api):
            import os
            api.store_set("pid", os.getpid())
        """,
    )
    host.hook.lead_created(lead=services.make_lead("acme"), context=ACME)
    pid = services.stored("acme", "where")["pid"]
    sandboxed = "sandboxed" in request.node.callspec.id
    assert (pid != os.getpid()) is sandboxed


# -- the host services contract, for an app that has only some data --------------------------

pytest_plugins = ["pytester"]

_PARTIAL_ADAPTER = '''
import pytest
from services_ai_plugins import HostServices
from services_ai_plugins.errors import NotSupported
from services_ai_plugins_testing.fakes import FakeHostServices
from services_ai_plugins_testing.services_contract import HostServicesContract


class Services(HostServices):
    """Leads only; e-mail is overridden but refuses (a feature switched off)."""

    def __init__(self):
        self.fake = FakeHostServices()

    def get_lead(self, tenant, lead_id):
        return self.fake.get_lead(tenant, lead_id)

    def list_leads(self, tenant, *, limit):
        return self.fake.list_leads(tenant, limit=limit)

    def send_email(self, tenant, email):
        raise NotSupported("send_email", "e-mail")
%s

class Seed:
    def __init__(self, services):
        self.services = services

    def lead(self, tenant, **fields):
        return self.services.fake.make_lead(tenant, **fields)

    def booking(self, tenant, **fields):
        raise AssertionError("the contract must not seed what the app does not provide")

    invoice = user = booking


class TestPartial(HostServicesContract):
    @pytest.fixture
    def services(self):
        return Services()

    @pytest.fixture
    def seed(self, services):
        return Seed(services)
'''


def test_an_app_with_some_data_passes_the_contract_for_what_it_has(
    pytester: pytest.Pytester,
) -> None:
    """The contract runs what the app provides and reports the rest as skipped ("not provided
    by this app"), never failed: methods it inherits and one that raises NotSupported alike."""
    pytester.makepyfile(_PARTIAL_ADAPTER % "")
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-rs")
    outcomes = result.parseoutcomes()
    assert "failed" not in outcomes, result.stdout.str()
    assert "error" not in outcomes, result.stdout.str()
    # get_lead (3 tests), list_leads (2), the protocol, the store-methods rule: 7 pass.
    assert outcomes["passed"] == 7, result.stdout.str()
    output = result.stdout.str()
    assert "HostServices.get_booking (the default raises NotSupported)" in output
    assert "send_email('acme', " in output
    assert "this app does not provide e-mail (HostServices.send_email)" in output


def test_an_app_must_override_all_three_store_methods_or_none(
    pytester: pytest.Pytester,
) -> None:
    """An adapter that keeps store_get but leaves store_set to the default fails the contract,
    naming the methods: its plugins' values would be half the app's and half the SDK's."""
    half_store = """
    def store_get(self, tenant, plugin_id, key):
        return None
"""
    pytester.makepyfile(_PARTIAL_ADAPTER % half_store)
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-rf")
    assert result.parseoutcomes()["failed"] == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["*Services overrides store_get but not store_set, store_delete: override all three*"]
    )


# -- 2. the plugins' key-value store, kept by the SDK ------------------------------------------


class Nothing(HostServices):
    """An app that provides no data and no channel at all."""


STORE_COUNTER = """
@hookimpl
def lead_created(self, lead, api):
    before = api.store_get("owner")
    api.store_set("owner", lead.tenant)
    api.store_set("seen", (api.store_get("seen") or 0) + 1)
    api.store_set("log", (api.store_get("log") or []) + [[lead.id, before]])
"""


def test_the_sdk_keeps_the_store_of_an_app_that_provides_nothing(
    make_host: Callable[..., PluginHost],
    install: Installer,
    hosts: Hosts,
    tmp_path: Path,
    denied: list[DeniedCall],
) -> None:
    """With services that implement nothing, api.store_set/store_get work, in process and
    sandboxed, on the host's own storage (here SQLite), per tenant: tenant B never reads what
    tenant A kept under the same key."""
    hosts.services = Nothing()
    storage = SQLiteStorage(tmp_path / "registry.db")
    host = make_host(storage=storage)
    install(host, "counter", STORE_COUNTER, tenants=("acme", "globex"))
    leads = FakeHostServices()
    for tenant in ("acme", "acme", "globex"):
        lead = leads.make_lead(tenant)
        host.hook.lead_created(lead=lead, context=Context(tenant=tenant))
    assert host.failures("counter") == []
    assert denied == []
    acme_log = storage.store_read("counter", "acme", "log")
    globex_log = storage.store_read("counter", "globex", "log")
    assert isinstance(acme_log, list)
    assert [before for _, before in acme_log] == [None, "acme"]
    assert [before for _, before in cast("list[Any]", globex_log)] == [None]  # never acme's
    assert storage.store_read("counter", "acme", "seen") == 2
    assert storage.store_read("counter", "globex", "seen") == 1
    assert storage.store_read("counter", "globex", "owner") == "globex"
    usage = host.meter.store_usage("counter", "acme")
    assert usage.keys == 3
    assert usage.bytes == sum(
        len(key) + len(json.dumps(storage.store_read("counter", "acme", key), ensure_ascii=False))
        for key in ("owner", "seen", "log")
    )


def test_a_hostile_plugin_cannot_store_past_its_quota(
    make_host: Callable[..., PluginHost],
    install: Installer,
    hosts: Hosts,
    denied: list[DeniedCall],
) -> None:
    """A plugin writing key after key, then one value over the byte limit, gets QuotaExceeded
    (in process and sandboxed); the SDK's store holds exactly what fit and nothing of the
    refused writes, and each refusal is audited."""
    hosts.services = Nothing()
    storage = MemoryStorage()
    host = make_host(storage=storage, limits=ApiLimits(store_keys=5, store_bytes=400))
    install(
        host,
        "hoarder",
        """
        @hookimpl
        def lead_created(self, lead, api):
            for number in range(1000):
                api.store_set(f"k{number}", "x" * 20)
        """,
    )
    install(
        host,
        "bloater",
        """
        @hookimpl
        def lead_created(self, lead, api):
            api.store_set("small", "kept")
            try:
                api.store_set("small", "y" * 500)
            except QuotaExceeded as refused:
                api.store_set("refused", [refused.limit, refused.allowed, refused.requested])
            api.store_set("big", "z" * 1000)
        """,
    )
    host.hook.lead_created(lead=a_lead(), context=ACME)
    [failure] = host.failures("hoarder")
    assert failure.exc_type == "QuotaExceeded"
    assert "store_keys" in failure.message
    assert [storage.store_read("hoarder", "acme", f"k{n}") for n in range(6)] == [
        *(["x" * 20] * 5),
        None,
    ]
    assert host.meter.store_usage("hoarder", "acme") == StoreUsage(keys=5, bytes=5 * (2 + 22))
    [failure] = host.failures("bloater")
    assert failure.exc_type == "QuotaExceeded"
    assert storage.store_read("bloater", "acme", "small") == "kept"
    assert storage.store_read("bloater", "acme", "refused") == ["store_bytes", 400, 507]
    assert storage.store_read("bloater", "acme", "big") is None
    assert host.meter.store_usage("bloater", "acme") == StoreUsage(
        keys=2, bytes=len("small") + 6 + len("refused") + len('["store_bytes", 400, 507]')
    )
    assert sorted((d.plugin_id, d.method) for d in denied) == [
        ("bloater", "store_set"),
        ("bloater", "store_set"),
        ("hoarder", "store_set"),
    ]


def test_uninstall_drops_the_sdk_store_and_disable_keeps_it(
    make_host: Callable[..., PluginHost], install: Installer, hosts: Hosts
) -> None:
    """A plugin disabled for a tenant keeps its store there (as it keeps its settings); an
    uninstalled one loses it, with its quota charges, for every tenant."""
    hosts.services = Nothing()
    storage = MemoryStorage()
    host = make_host(storage=storage)
    install(host, "counter", STORE_COUNTER, tenants=("acme", "globex"))
    for tenant in ("acme", "globex"):
        host.hook.lead_created(lead=a_lead(tenant), context=Context(tenant=tenant))
    host.registry.disable("counter", "acme", actor="admin")
    assert storage.store_read("counter", "acme", "seen") == 1
    host.registry.uninstall("counter", actor="admin")
    for tenant in ("acme", "globex"):
        assert storage.store_read("counter", tenant, "seen") is None
        assert host.meter.store_usage("counter", tenant) == StoreUsage()


def test_the_apps_own_store_is_used_when_it_overrides_the_store_methods() -> None:
    """Services that override the three store methods keep the values (FakeHostServices
    does): the SDK keeps none of them, and still charges the quota ledger."""
    services = FakeHostServices()
    storage = MemoryStorage()
    meter = ApiMeter(ledger=storage)
    api = PluginAPI("crm-sync", services, tenant="acme", grants=frozenset(), meter=meter)
    api.store_set("cursor", 7)
    assert services.stored("acme", "crm-sync") == {"cursor": 7}
    assert storage.store_read("crm-sync", "acme", "cursor") is None
    assert api.store_get("cursor") == 7
    assert meter.store_usage("crm-sync", "acme") == StoreUsage(keys=1, bytes=len("cursor") + 1)


class HalfAStore(HostServices):
    def store_get(self, tenant: str, plugin_id: str, key: str) -> JSONValue:
        return "the app's"


def test_an_app_overriding_only_some_store_methods_is_refused_by_name() -> None:
    """Overriding store_get but not store_set would split a plugin's values between the app
    and the SDK: every store call raises TypeError naming what is missing, and nothing is kept."""
    storage = MemoryStorage()
    api = PluginAPI(
        "crm-sync", HalfAStore(), tenant="acme", grants=frozenset(), meter=ApiMeter(ledger=storage)
    )
    for call in (lambda: api.store_get("k"), lambda: api.store_set("k", 1)):
        with pytest.raises(TypeError, match="overrides store_get but not store_set, store_delete"):
            call()
    assert storage.store_usage("crm-sync", "acme") == StoreUsage()


class LedgerOnly:
    """A storage written before the SDK kept stores: a ledger, no values."""

    def __init__(self) -> None:
        self.ledger = MemoryStorage()

    def charge_store(self, *args: Any, **kwargs: Any) -> int | None:
        return self.ledger.charge_store(*args, **kwargs)

    def store_usage(self, plugin_id: str, tenant: str) -> StoreUsage:
        return self.ledger.store_usage(plugin_id, tenant)


def test_a_storage_that_keeps_no_values_offers_no_store() -> None:
    """With neither the app nor the storage keeping values, store calls raise NotSupported."""
    meter = ApiMeter(ledger=LedgerOnly())
    api = PluginAPI("crm-sync", Nothing(), tenant="acme", grants=frozenset(), meter=meter)
    with pytest.raises(NotSupported, match=r"plugin key-value store \(HostServices.store_set\)"):
        api.store_set("k", 1)
    with pytest.raises(NotSupported, match=r"HostServices.store_get"):
        api.store_get("k")


def test_a_standalone_api_keeps_the_store_in_memory() -> None:
    """A PluginAPI built by hand over services without a store (a plugin's own test) keeps the
    store in its meter's memory, with the same limits."""
    api = PluginAPI(
        "crm-sync",
        Nothing(),
        tenant="acme",
        grants=frozenset(),
        meter=ApiMeter(ApiLimits(store_keys=1)),
    )
    api.store_set("a", {"n": 1})
    assert api.store_get("a") == {"n": 1}
    with pytest.raises(QuotaExceeded):
        api.store_set("b", 2)
    assert api.store_get("b", "absent") == "absent"
    api.store_delete("a")
    api.store_set("b", 2)
    assert (api.store_get("a"), api.store_get("b")) == (None, 2)
