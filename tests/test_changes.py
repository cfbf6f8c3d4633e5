"""host.add_change_listener and host.is_active: what adapters cache, and when to drop it.

Every plugin is a real archive installed through the real host (the tests'
``Installer``); the failing one runs in a sandbox worker, as uploads do.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import BreakerPolicy, PluginHost, SandboxPolicy, SQLiteStorage
from services_ai_plugins.events import Context
from services_ai_plugins.storage import SourceKind
from services_ai_plugins.types import Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

HEADER = "from services_ai_plugins import hookimpl\n\n\nclass Plugin:\n"

IN_PROCESS = SandboxPolicy(isolation=dict.fromkeys(SourceKind, Isolation.INPROCESS), timeout=30.0)

ACME = Context(tenant="acme")

QUIET = """
@hookimpl
def lead_created(self, lead):
    pass
"""

FAILING = """
@hookimpl
def lead_created(self, lead):
    raise RuntimeError("always")
"""


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


def watch(host: PluginHost, plugin_id: str, tenant: str = "acme") -> list[bool]:
    """What ``is_active`` said each time the host's listener was called."""
    seen: list[bool] = []
    host.add_change_listener(lambda: seen.append(host.is_active(plugin_id, tenant)))
    return seen


def test_listeners_hear_of_each_lifecycle_step_and_see_its_result(
    hosts: Hosts, install: Installer
) -> None:
    """approve, enable, suspend, resume, disable, uninstall: one notice each, after the
    snapshot changed (is_active, read in the listener, already answers the new way)."""
    host: PluginHost = hosts(sandbox=IN_PROCESS)
    install(host, "alpha", QUIET, approve=False)
    host.refresh()
    seen = watch(host, "alpha")
    registry = host.registry
    steps: list[Callable[[], object]] = [
        lambda: registry.approve("alpha", actor="admin"),
        lambda: registry.enable("alpha", "acme", actor="admin"),
        lambda: host.suspend("alpha", actor="admin", reason="audit", tenant="acme"),
        lambda: host.resume("alpha", actor="admin", tenant="acme"),
        lambda: registry.disable("alpha", "acme", actor="admin"),
        lambda: registry.enable("alpha", "acme", actor="admin"),
        lambda: host.suspend("alpha", actor="admin", reason="everywhere"),
        lambda: host.resume("alpha", actor="admin"),
        lambda: registry.uninstall("alpha", actor="admin"),
    ]
    for step in steps:
        step()
        assert host.refresh()
    assert seen == [False, True, False, True, False, True, False, True, False]
    assert not host.refresh()  # nothing changed: no notice
    assert len(seen) == len(steps)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")
def test_a_breaker_trip_is_a_change_and_is_active_turns_false(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """An uploaded plugin that keeps failing is suspended for the tenant by the breaker: the
    listener hears of it and is_active says so; the quiet plugin stays active."""
    host: PluginHost = hosts(
        sandbox=SandboxPolicy(timeout=30.0),
        breaker=BreakerPolicy(consecutive_failures=2, failure_rate=0),
    )
    install(host, "failing", FAILING)
    install(host, "quiet", QUIET)
    host.refresh()
    seen = watch(host, "failing")
    assert host.is_active("failing", "acme")
    for _ in range(2):
        host.hook.lead_created(lead=services.make_lead("acme"), context=ACME)
    host.flush()  # applies the trip: the suspension is written
    host.refresh()
    assert seen == [False]
    assert not host.is_active("failing", "acme")
    assert host.is_active("quiet", "acme")


def test_another_process_change_is_heard_at_the_next_tick(
    tmp_path: Path, hosts: Hosts, install: Installer
) -> None:
    """Two hosts on one SQLite file: a change made through the first is heard by the second's
    listener at its next tick, and its is_active follows."""
    storages = [SQLiteStorage(tmp_path / "r.db"), SQLiteStorage(tmp_path / "r.db")]
    first: PluginHost = hosts(storage=storages[0], sandbox=IN_PROCESS)
    second: PluginHost = hosts(storage=storages[1], sandbox=IN_PROCESS, refresh_interval=0)
    install(first, "shared", QUIET)
    seen = watch(second, "shared")
    assert second.is_active("shared", "acme")  # its tick took the new snapshot
    assert seen == [True]
    first.registry.disable("shared", "acme", actor="admin")
    assert not second.is_active("shared", "acme")
    assert seen == [True, False]
    for host in (first, second):
        host.close()
    for storage in storages:
        storage.close()


def test_unsubscribe_stops_the_notices(hosts: Hosts, install: Installer) -> None:
    host: PluginHost = hosts(sandbox=IN_PROCESS)
    install(host, "alpha", QUIET, tenants=())
    host.refresh()
    heard: list[str] = []
    stop = host.add_change_listener(lambda: heard.append("a"))
    host.add_change_listener(lambda: heard.append("b"))
    host.registry.enable("alpha", "acme", actor="admin")
    host.refresh()
    stop()
    stop()  # twice: nothing more happens
    host.registry.disable("alpha", "acme", actor="admin")
    host.refresh()
    assert heard == ["a", "b", "b"]


def test_a_raising_listener_is_contained(
    hosts: Hosts, install: Installer, caplog: pytest.LogCaptureFixture
) -> None:
    """Its exception is logged; the host's refresh goes on and the next listener is told."""
    host: PluginHost = hosts(sandbox=IN_PROCESS)
    install(host, "alpha", QUIET, tenants=())
    host.refresh()

    def broken() -> None:
        raise RuntimeError("listener bug")

    heard: list[bool] = []
    host.add_change_listener(broken)
    host.add_change_listener(lambda: heard.append(host.is_active("alpha", "acme")))
    host.registry.enable("alpha", "acme", actor="admin")
    with caplog.at_level(logging.ERROR, logger="services_ai_plugins.host"):
        assert host.refresh()
    assert heard == [True]
    assert "listener bug" in caplog.text
    with pytest.raises(TypeError, match="callable"):
        host.add_change_listener("not a function")  # type: ignore[arg-type]


def test_a_listener_refreshing_the_host_does_not_recurse(hosts: Hosts, install: Installer) -> None:
    """A listener that forces a refresh itself causes one more round, not an endless loop."""
    host: PluginHost = hosts(sandbox=IN_PROCESS)
    install(host, "alpha", QUIET, tenants=())
    host.refresh()
    rounds: list[int] = []

    def refreshing() -> None:
        rounds.append(len(rounds))
        if len(rounds) < 5:
            host.refresh(force=True)

    host.add_change_listener(refreshing)
    host.refresh(force=True)
    assert rounds == [0, 1, 2, 3, 4]


def test_is_active_cases(hosts: Hosts, install: Installer) -> None:
    """Enabled for the tenant only; never for pending or unknown plugins; not while suspended
    there or everywhere; typed arguments."""
    host: PluginHost = hosts(sandbox=IN_PROCESS)
    install(host, "alpha", QUIET, tenants=["acme"])
    install(host, "waiting", QUIET, approve=False)
    assert host.is_active("alpha", "acme")
    assert not host.is_active("alpha", "globex")
    assert not host.is_active("waiting", "acme")
    assert not host.is_active("nobody", "acme")
    host.suspend("alpha", actor="admin", reason="x", tenant="acme")
    assert not host.is_active("alpha", "acme")
    host.resume("alpha", actor="admin", tenant="acme")
    assert host.is_active("alpha", "acme")
    host.suspend("alpha", actor="admin", reason="x")
    assert not host.is_active("alpha", "acme")
    with pytest.raises(TypeError, match="two strings"):
        host.is_active("alpha", None)  # type: ignore[arg-type]
