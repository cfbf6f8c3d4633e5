"""Lifecycle hooks: the host fires them for the plugin concerned, once per change, after it commits.

Every plugin here is a real folder packed into a real archive and installed
through the host; the tests run each plugin in the host's process and in
worker processes (the sandbox), and make every change through
``host.registry`` or ``host.install``, as an app does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import (
    BreakerPolicy,
    MemoryStorage,
    PluginHost,
    PluginStatus,
    SandboxPolicy,
    hookimpl,
)
from services_ai_plugins.events import Context
from services_ai_plugins.storage import SourceKind
from services_ai_plugins.types import Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

HEADER = (
    "import logging, os, time\n"
    "from services_ai_plugins import hookimpl\n\n"
    "LOG = logging.getLogger('services_ai_plugins.plugins.lifecycle-test')\n\n\n"
    "class Plugin:\n"
)

#: Each lifecycle hook, logged as ``LIFE <hook> <receiver> <plugin_id> <tenant> <more>``.
RECORDER = """
@hookimpl
def plugin_installed(self, plugin_id, version, api):
    LOG.warning("LIFE installed %s %s %s %s", api.plugin_id, plugin_id, api.tenant, version)

@hookimpl
def plugin_approved(self, plugin_id, api):
    LOG.warning("LIFE approved %s %s %s -", api.plugin_id, plugin_id, api.tenant)

@hookimpl
def plugin_enabled(self, plugin_id, context, api, settings):
    api.store_set("enabled-pid", os.getpid())
    LOG.warning("LIFE enabled %s %s %s %s", api.plugin_id, plugin_id, context.tenant, api.tenant)

@hookimpl
def plugin_disabled(self, plugin_id, context, api, settings):
    api.store_set("disabled", True)
    LOG.warning("LIFE disabled %s %s %s %s", api.plugin_id, plugin_id, context.tenant, api.tenant)

@hookimpl
def plugin_settings_changed(self, plugin_id, changed, context, api, settings):
    LOG.warning(
        "LIFE settings %s %s %s %s|%s",
        api.plugin_id, plugin_id, context.tenant, sorted(changed.items()), sorted(settings.items()),
    )

@hookimpl
def plugin_uninstalled(self, plugin_id, api):
    LOG.warning("LIFE uninstalled %s %s %s %s", api.plugin_id, plugin_id, api.tenant,
                api.has_permission("read_leads"))

@hookimpl
def lead_created(self, lead, api):
    api.store_set("leads", (api.store_get("leads") or 0) + 1)
"""

#: Fails in every lifecycle hook.
FAILING = """
@hookimpl
def plugin_installed(self, plugin_id):
    raise RuntimeError("installed fails")

@hookimpl
def plugin_approved(self, plugin_id):
    raise RuntimeError("approved fails")

@hookimpl
def plugin_enabled(self, plugin_id):
    raise RuntimeError("enabled fails")

@hookimpl
def plugin_disabled(self, plugin_id):
    raise RuntimeError("disabled fails")

@hookimpl
def plugin_settings_changed(self, plugin_id, changed):
    raise RuntimeError("settings fails")

@hookimpl
def plugin_uninstalled(self, plugin_id):
    raise RuntimeError("uninstalled fails")
"""

SETTINGS = [
    {"name": "colour", "type": "string", "default": "blue"},
    {"name": "size", "type": "integer", "default": 1},
    {"name": "token", "type": "secret"},
]

#: Where plugins run: in the host's process, or each in worker processes.
WHERE = {
    "inprocess": dict.fromkeys(SourceKind, Isolation.INPROCESS),
    "process": {},
}


@pytest.fixture(params=sorted(WHERE))
def where(request: pytest.FixtureRequest) -> str:
    return cast("str", request.param)


class Refreshing(Installer):
    """Installs as :class:`Installer` does, then lets the host refresh, as its next call would:
    a plugin approved just now is loaded then, and its lifecycle hooks fire, in order."""

    def __call__(self, host: Any, plugin_id: str, body: str, **options: Any) -> None:
        super().__call__(host, plugin_id, body, **options)
        host.refresh()


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Refreshing(tmp_path, HEADER)


@pytest.fixture(autouse=True)
def secret_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key for the secret settings these plugins have, where the host reads it."""
    from cryptography.fernet import Fernet

    monkeypatch.setenv("SERVICES_AI_PLUGINS_SECRET_KEYS", Fernet.generate_key().decode())


@pytest.fixture
def make_host(hosts: Hosts, where: str) -> Callable[..., PluginHost]:
    def make(**options: Any) -> PluginHost:
        sandbox = SandboxPolicy(isolation=WHERE[where], timeout=options.pop("timeout", 10.0))
        return cast("PluginHost", hosts(sandbox=sandbox, **options))

    return make


@pytest.fixture
def lives(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The lifecycle hooks the plugins received so far, in order (``<hook> <receiver> ...``)."""
    caplog.set_level(logging.INFO)

    def read() -> list[str]:
        found = []
        for record in caplog.records:
            message = record.getMessage()
            if "LIFE " in message:
                found.append(message.split("LIFE ", 1)[1])
        return found

    return read


def test_each_step_fires_its_hook_once_for_the_plugin_concerned_only(
    make_host: Callable[..., PluginHost],
    install: Installer,
    lives: Callable[[], list[str]],
    services: FakeHostServices,
    where: str,
) -> None:
    """Approve, enable, settings, disable, uninstall: each fires its hook once, to that plugin.

    An observer plugin that implements every lifecycle hook and runs for the
    same tenant hears of none of another plugin's changes.
    """
    host = make_host()
    install(host, "observer", RECORDER, tenants=("acme",))
    assert lives() == [
        "installed observer observer None 1.0.0",
        "approved observer observer None -",
        "enabled observer observer acme acme",
    ]
    install(host, "target", RECORDER, settings=SETTINGS, approve=False)
    assert lives()[3:] == []  # pending: its code does not run, nobody else hears of it
    host.registry.approve("target", actor="admin")
    host.registry.enable("target", "acme", actor="admin")
    assert lives()[3:] == []  # approved: loaded at the host's next refresh, its hooks wait for it
    host.hook.lead_created(lead=services.make_lead("acme"), context=Context(tenant="acme"))
    host.registry.set_settings("target", "acme", {"size": 3, "token": "s3cret"}, actor="admin")
    # Unchanged values are not reported; a reset one is, with its default.
    host.registry.set_settings("target", "acme", {"size": None, "colour": "blue"}, actor="admin")
    host.registry.enable("target", "acme", actor="admin")  # enabled already: no change, no hook
    host.registry.disable("target", "acme", actor="admin")
    host.registry.uninstall("target", actor="admin")
    assert lives()[3:] == [
        "installed target target None 1.0.0",
        "approved target target None -",
        "enabled target target acme acme",
        "settings target target acme [('size', 3), ('token', '********')]|"
        "[('colour', 'blue'), ('size', 3), ('token', 's3cret')]",
        "settings target target acme [('size', 1)]|"
        "[('colour', 'blue'), ('size', 1), ('token', 's3cret')]",
        "disabled target target acme acme",
        "uninstalled target target None True",
    ]
    # Nothing fires again later: not on a refresh, not on other calls.
    host.refresh(force=True)
    host.hook.lead_created(lead=services.make_lead("acme"), context=Context(tenant="acme"))
    assert len(lives()) == 10
    assert host.failures() == []
    assert "target" not in host.plugins()
    assert services.stored("acme", "target")["disabled"] is True
    assert services.stored("acme", "target")["leads"] == 1  # enabled hook first, then the call
    if where == "process":  # its tenant's hooks ran in its tenant's worker
        assert services.stored("acme", "target")["enabled-pid"] != os.getpid()


def test_a_disabled_plugin_still_receives_plugin_disabled_for_that_tenant_only(
    make_host: Callable[..., PluginHost],
    install: Installer,
    lives: Callable[[], list[str]],
    services: FakeHostServices,
) -> None:
    """It no longer runs for the tenant, yet gets its last call there, with that tenant's api."""
    host = make_host()
    install(host, "leaving", RECORDER, tenants=("acme", "globex"))
    host.registry.disable("leaving", "acme", actor="admin")
    host.hook.lead_created(lead=services.make_lead("acme"), context=Context(tenant="acme"))
    host.hook.lead_created(lead=services.make_lead("globex"), context=Context(tenant="globex"))
    assert [line for line in lives() if line.startswith("disabled")] == [
        "disabled leaving leaving acme acme"
    ]
    assert services.stored("acme", "leaving").get("disabled") is True
    assert "leads" not in services.stored("acme", "leaving")
    assert "disabled" not in services.stored("globex", "leaving")
    assert services.stored("globex", "leaving")["leads"] == 1


def test_a_failing_lifecycle_hook_is_the_plugins_failure_and_undoes_nothing(
    make_host: Callable[..., PluginHost],
    install: Installer,
) -> None:
    """Every hook raises: each failure is recorded under the plugin, hook and tenant; every
    change stands, and the registry steps return as usual (even with ``strict``)."""
    host = make_host(strict=True)
    install(host, "grumpy", FAILING, settings=SETTINGS)
    host.registry.set_settings("grumpy", "acme", {"size": 2}, actor="admin")
    host.registry.disable("grumpy", "acme", actor="admin")
    assert host.registry.plugin("grumpy").status is PluginStatus.APPROVED
    assert "grumpy" in host.plugins()
    assert host.registry.get_settings("grumpy", "acme")["size"] == 2
    host.registry.uninstall("grumpy", actor="admin")
    assert host.registry.plugin("grumpy").status is PluginStatus.UNINSTALLED
    assert "grumpy" not in host.plugins()
    recorded = sorted((f.hook, f.tenant, f.message) for f in host.failures("grumpy"))
    assert recorded == [
        ("plugin_approved", None, "approved fails"),
        ("plugin_disabled", "acme", "disabled fails"),
        ("plugin_enabled", "acme", "enabled fails"),
        ("plugin_installed", None, "installed fails"),
        ("plugin_settings_changed", "acme", "settings fails"),
        ("plugin_uninstalled", None, "uninstalled fails"),
    ]
    counted = {m.hook: (m.calls, m.errors) for m in host.metrics("grumpy")}
    assert counted["plugin_enabled"] == (1, 1)


def test_the_breaker_counts_lifecycle_failures_like_any(
    hosts: Hosts, install: Installer, where: str
) -> None:
    """A plugin whose plugin_enabled keeps failing is suspended for the tenant; it stays enabled."""
    host = hosts(
        sandbox=SandboxPolicy(isolation=WHERE[where], timeout=10.0),
        breaker=BreakerPolicy(consecutive_failures=1, failure_rate=0),
    )
    install(
        host,
        "grumpy",
        """
        @hookimpl
        def plugin_enabled(self, plugin_id, context):
            raise RuntimeError(context.tenant)
        """,
        tenants=("acme",),
    )
    assert [(s.tenant, s.reason) for s in host.suspensions("grumpy")] == [
        ("acme", "plugin_enabled: 1 consecutive failures")
    ]
    assert host.registry.tenant("grumpy", "acme").enabled  # type: ignore[union-attr]
    assert host.registry.plugin("grumpy").status is PluginStatus.APPROVED
    assert [(f.hook, f.tenant) for f in host.failures("grumpy")] == [("plugin_enabled", "acme")]


def test_a_tenantless_lifecycle_failure_that_trips_the_breaker_ends_the_plugins_hooks(
    hosts: Hosts, install: Installer, where: str
) -> None:
    """plugin_installed fails and the breaker suspends the plugin everywhere: it is unloaded,
    and plugin_approved is not sent to it (nor recorded as a failure of an unloaded plugin)."""
    host = hosts(
        sandbox=SandboxPolicy(isolation=WHERE[where], timeout=10.0),
        breaker=BreakerPolicy(consecutive_failures=1, failure_rate=0),
    )
    install(host, "grumpy", FAILING, approve=False)
    host.registry.approve("grumpy", actor="admin")
    host.refresh()
    assert host.registry.plugin("grumpy").status is PluginStatus.SUSPENDED
    assert "grumpy" not in host.plugins()
    assert [(f.hook, f.message) for f in host.failures("grumpy")] == [
        ("plugin_installed", "installed fails")
    ]


def test_only_the_process_that_made_the_change_fires_it(
    hosts: Hosts, install: Installer, lives: Callable[[], list[str]], where: str
) -> None:
    """A second host on the same storage loads the plugin, sees the changes, and fires nothing."""
    storage = MemoryStorage()
    sandbox = SandboxPolicy(isolation=WHERE[where], timeout=10.0)
    here = hosts(storage=storage, sandbox=sandbox, refresh_interval=0)
    install(here, "solo", RECORDER, tenants=())
    there = hosts(storage=storage, sandbox=sandbox, refresh_interval=0)
    assert "solo" in there.plugins()
    here.registry.enable("solo", "acme", actor="admin")
    here.registry.disable("solo", "acme", actor="admin")
    there.refresh()
    assert "solo" in there.plugins()
    here.registry.uninstall("solo", actor="admin")
    assert "solo" not in there.plugins()
    assert [line.split()[0] for line in lives()] == [
        "installed",
        "approved",
        "enabled",
        "disabled",
        "uninstalled",
    ]


def test_changes_made_through_another_hosts_registry_are_fired_by_that_host(
    hosts: Hosts, install: Installer, lives: Callable[[], list[str]]
) -> None:
    """The host that made the change fires it, even when the plugin was loaded by another."""
    storage = MemoryStorage()
    sandbox = SandboxPolicy(isolation=WHERE["process"], timeout=10.0)
    first = hosts(storage=storage, sandbox=sandbox)
    install(first, "shared", RECORDER, tenants=())
    second = hosts(storage=storage, sandbox=sandbox)
    second.registry.enable("shared", "acme", actor="admin")
    assert lives()[-1] == "enabled shared shared acme acme"
    assert len(lives()) == 3


class RefreshingStorage:
    """A memory storage that lets the host refresh right after each commit, before the
    registry tells the host of it (as another thread's hook call may)."""

    def __init__(self) -> None:
        self.inner = MemoryStorage()
        self.host: PluginHost | None = None

    def commit(self, change: Any) -> int:
        generation = self.inner.commit(change)
        if self.host is not None:
            self.host.refresh()
        return generation

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_an_uninstalled_plugin_gets_its_hook_even_when_a_refresh_came_first(
    hosts: Hosts, install: Installer, lives: Callable[[], list[str]], where: str
) -> None:
    """A refresh between the commit and the host's firing takes the plugin out of the calls but
    keeps it until it received plugin_uninstalled; then it is unloaded (its workers stopped)."""
    storage = RefreshingStorage()
    host = hosts(storage=storage, sandbox=SandboxPolicy(isolation=WHERE[where], timeout=10.0))
    install(host, "late", RECORDER, tenants=())
    plugin = host.plugins()["late"]
    storage.host = host
    host.registry.uninstall("late", actor="admin")
    assert lives()[-1] == "uninstalled late late None True"
    assert "late" not in host.plugins()
    if where == "process":
        assert plugin.pids() == {}  # type: ignore[attr-defined]
        assert [w for w in host.sandbox.workers() if w.plugin_id == "late"] == []


def test_a_hanging_uninstall_hook_is_cut_short_and_the_plugin_is_gone(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """A hostile sandboxed plugin that never returns from plugin_uninstalled: its worker is
    killed at the time limit, the failure recorded, and the uninstall stands."""
    host = hosts(sandbox=SandboxPolicy(timeout=1.0))
    install(
        host,
        "clingy",
        """
        @hookimpl
        def plugin_uninstalled(self, plugin_id, api):
            while True:
                time.sleep(1)
        """,
    )
    plugin = host.plugins()["clingy"]
    host.registry.uninstall("clingy", actor="admin")
    assert host.registry.plugin("clingy").status is PluginStatus.UNINSTALLED
    assert "clingy" not in host.plugins()
    assert plugin.pids() == {}  # type: ignore[attr-defined]
    [failure] = host.failures("clingy")
    assert failure.hook == "plugin_uninstalled"
    assert failure.tenant is None


def test_a_plugin_enabled_for_one_tenant_cannot_reach_another_from_its_hook(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """plugin_enabled runs in the tenant's own worker, with an api that serves that tenant only."""
    host = hosts(sandbox=SandboxPolicy(timeout=10.0))
    install(host, "greedy", RECORDER, tenants=("globex",))
    install(
        host,
        "nosy",
        """
        @hookimpl
        def plugin_enabled(self, plugin_id, context, api):
            api.store_set("pid", os.getpid())
            api.store_set("seen", [api.tenant, context.tenant])
        """,
        tenants=("acme",),
    )
    assert services.stored("acme", "nosy")["seen"] == ["acme", "acme"]
    assert services.stored("globex", "nosy") == {}
    workers = host.plugins()["nosy"].pids()  # type: ignore[attr-defined]
    assert workers["acme"] == services.stored("acme", "nosy")["pid"]


def test_a_plugin_object_installed_by_the_app_gets_its_hooks(
    tmp_path: Path, services: FakeHostServices
) -> None:
    """install_object, then approve through the host: the object receives both hooks, in order."""
    received: list[tuple[str, str]] = []

    class Shipped:
        manifest: ClassVar[dict[str, str]] = {
            "id": "shipped",
            "name": "Shipped",
            "version": "2.0.0",
            "entry_point": "main.py",
            "plugin_class": "Shipped",
        }

        @hookimpl
        def plugin_installed(self, plugin_id: str, version: str) -> None:
            received.append(("installed", version))

        @hookimpl
        def plugin_approved(self, plugin_id: str) -> None:
            received.append(("approved", plugin_id))

    with PluginHost(
        services, storage=MemoryStorage(), plugins_dir=tmp_path, entry_points=False
    ) as host:
        host.install_object(Shipped, actor="ops")
        assert received == []
        host.registry.approve("shipped", actor="admin")
        assert received == []  # loaded by the next refresh (its next call, or refresh())
        host.refresh()
        assert received == [("installed", "2.0.0"), ("approved", "shipped")]


def test_the_registry_tells_its_listener_of_each_committed_change_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """on_event hears of each committed step (not of a step that changes nothing or fails), with
    the really changed settings, secrets masked; a listener that raises undoes nothing."""
    from services_ai_plugins import Manifest, Registry, TransitionError

    events: list[tuple[str, str, str | None, dict[str, Any]]] = []

    def listen(event: Any) -> None:
        events.append((event.action, event.plugin_id, event.tenant, dict(event.changed)))
        raise RuntimeError("a broken listener")

    registry = Registry(MemoryStorage(), on_event=listen)
    document = {
        "id": "crm",
        "name": "CRM",
        "version": "1.0.0",
        "entry_point": "main.py",
        "plugin_class": "Plugin",
        "settings": SETTINGS,
    }
    registry.install(Manifest.from_dict(document), actor="ops", code_hash="0" * 64)
    registry.approve("crm", actor="admin")
    registry.enable("crm", "acme", actor="admin")
    registry.enable("crm", "acme", actor="admin")
    registry.set_settings("crm", "acme", {"colour": "blue", "token": "t"}, actor="admin")
    with pytest.raises(TransitionError):
        registry.approve("crm", actor="admin")
    registry.disable("crm", "acme", actor="admin")
    assert events == [
        ("install", "crm", None, {}),
        ("approve", "crm", None, {}),
        ("enable", "crm", "acme", {}),
        ("set settings", "crm", "acme", {"token": "********"}),
        ("disable", "crm", "acme", {}),
    ]
    assert registry.tenant("crm", "acme").enabled is False  # type: ignore[union-attr]
    assert "on_event callback failed after 'disable'" in caplog.text
