"""Staged upgrades through a real host: the old version serves until the switch, a migration
rewrites a setting, and any failure rolls back while calls go on.

Every version is a real folder packed into a real archive; sandboxed ones run in
worker processes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from upgrade_kit import version_archive

from conftest import Hosts
from services_ai_plugins import MemoryStorage, PluginHost, SandboxPolicy, VersionError
from services_ai_plugins._versions import UpgradePolicy
from services_ai_plugins.events import Context

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

ACME = Context(tenant="acme")

#: Where the plugin runs: in the host's process (trusted by the operator), or sandboxed.
PLACES = {
    "in-process": SandboxPolicy(trusted=["crm-sync"]),
    "sandboxed": SandboxPolicy(timeout=3.0),
}


@pytest.fixture(params=list(PLACES))
def place(request: pytest.FixtureRequest) -> str:
    return cast("str", request.param)


@pytest.fixture
def make_host(hosts: Hosts, place: str) -> Callable[..., PluginHost]:
    def make(**options: Any) -> PluginHost:
        policy = options.pop("upgrades", UpgradePolicy(migration_timeout=3.0))
        return cast("PluginHost", hosts(sandbox=PLACES[place], upgrades=policy, **options))

    return make


def titles(host: PluginHost) -> list[str]:
    return [w.title for w in host.hook.dashboard_widget(context=ACME)]


def first_version(host: PluginHost, root: Path, body: str = "") -> None:
    host.install(version_archive(root, "1.0.0", body), actor="ops")
    host.registry.approve("crm-sync", actor="admin")
    host.registry.enable("crm-sync", "acme", actor="admin")
    host.registry.set_settings("crm-sync", "acme", {"label": "Acme"}, actor="admin")
    assert titles(host) == ["v1.0.0 Acme"]


def test_the_old_version_serves_until_the_new_one_is_approved(
    make_host: Callable[..., PluginHost], tmp_path: Path
) -> None:
    host = make_host()
    first_version(host, tmp_path)
    host.install(version_archive(tmp_path, "2.0.0"), actor="ops", reinstall=True)
    host.refresh()
    assert titles(host) == ["v1.0.0 Acme"]  # staged: waiting for an admin
    host.registry.approve("crm-sync", actor="admin")
    assert titles(host) == ["v2.0.0 Acme"]  # switched at this call's refresh
    assert [e.action for e in host.registry.audit_log(plugin_id="crm-sync", limit=4)] == [
        "upgrade",
        "upgrade started",
        "approve upgrade",
        "stage",
    ]
    started = host.registry.audit_log(plugin_id="crm-sync", action="upgrade started")[0]
    assert started.after is not None
    assert str(started.after["by"]).split(":")[1] == str(os.getpid())


MIGRATION = """
@hookimpl
def plugin_upgraded(self, plugin_id, from_version, to_version, context, api, settings):
    api.store_set("migrated", [from_version, to_version, context.tenant, settings["label"]])
    return {"label": settings["label"].upper() + " (migrated)"}
"""


def test_a_migration_rewrites_a_setting_for_each_tenant(
    make_host: Callable[..., PluginHost], tmp_path: Path, services: Any
) -> None:
    host = make_host()
    first_version(host, tmp_path)
    host.registry.enable("crm-sync", "globex", actor="admin")
    host.registry.enable("crm-sync", "initech", actor="admin")
    host.registry.disable("crm-sync", "initech", actor="admin")  # not running there
    host.install(version_archive(tmp_path, "2.0.0", MIGRATION), actor="ops", reinstall=True)
    host.registry.approve("crm-sync", actor="admin")
    host.refresh()
    assert titles(host) == ["v2.0.0 ACME (migrated)"]
    assert services.stored("acme", "crm-sync")["migrated"] == ["1.0.0", "2.0.0", "acme", "Acme"]
    assert services.stored("globex", "crm-sync")["migrated"][2:] == ["globex", "none"]
    assert "migrated" not in services.stored("initech", "crm-sync")
    assert host.registry.get_settings("crm-sync", "globex")["label"] == "NONE (migrated)"
    assert host.registry.get_settings("crm-sync", "initech")["label"] == "none"


FAILING = """
@hookimpl
def plugin_upgraded(self, plugin_id, from_version, to_version, context, api, settings):
    time.sleep(0.3)
    raise RuntimeError("cannot migrate " + context.tenant)
"""

HANGING = """
@hookimpl
def plugin_upgraded(self, plugin_id, from_version, to_version, context, api, settings):
    time.sleep(60)
"""

GARBAGE = """
@hookimpl
def plugin_upgraded(self, plugin_id, from_version, to_version, context, api, settings):
    return ["not", "settings"]
"""

REFUSED = """
@hookimpl
def plugin_upgraded(self, plugin_id, from_version, to_version, context, api, settings):
    return {"undeclared": "x"}
"""

BROKEN_IMPORT = """
raise ImportError("the new version cannot even be imported")
"""

CASES = {
    "raises": (FAILING, "migration", "cannot migrate acme"),
    "hangs": (HANGING, "timeout", ""),
    "returns garbage": (GARBAGE, "migration", "not None or a mapping"),
    "returns refused settings": (REFUSED, "settings", "undeclared"),
    "cannot load": (BROKEN_IMPORT, "load", "cannot even be imported"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_failing_upgrade_rolls_back_while_calls_go_on(
    make_host: Callable[..., PluginHost], tmp_path: Path, case: str
) -> None:
    body, step, message = CASES[case]
    host = make_host()
    first_version(host, tmp_path)
    if case == "cannot load":
        body = "\n@hookimpl\ndef lead_created(self, lead):\n    pass\n"
    archive = version_archive(tmp_path, "2.0.0", body)
    if case == "cannot load":  # a module-level error in the new version's code
        archive = _with_broken_module(tmp_path, archive)
    host.install(archive, actor="ops", reinstall=True)
    # Calls in flight from another thread all the time the switch is tried.
    seen: list[list[str]] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            seen.append(titles(host))

    server = threading.Thread(target=serve)
    server.start()
    try:
        host.registry.approve("crm-sync", actor="admin")
        host.refresh()
    finally:
        stop.set()
        server.join(30)
    assert seen
    assert all(answer == ["v1.0.0 Acme"] for answer in seen)
    assert titles(host) == ["v1.0.0 Acme"]
    record = host.registry.plugin("crm-sync")
    assert (record.version, record.staged) == ("1.0.0", None)
    assert host.registry.get_settings("crm-sync", "acme")["label"] == "Acme"
    event = host.registry.audit_log(plugin_id="crm-sync", limit=1)[0]
    assert event.action == "upgrade failed"
    assert event.after is not None
    assert event.after["step"] == step
    assert event.after["failed"] == "2.0.0"
    assert message in str(event.after["reason"])
    [failure] = [f for f in host.failures("crm-sync") if f.hook == "plugin_upgraded"]
    assert message in failure.message or message in failure.traceback


def _with_broken_module(root: Path, archive: Path) -> Path:
    """The same version, whose main module raises as it is imported."""
    import zipfile

    from services_ai_plugins import pack_plugin

    folder = root / "broken"
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(folder)
    main = folder / "main.py"
    main.write_text(BROKEN_IMPORT + main.read_text())
    return pack_plugin(folder, root / "broken.zip").path


def test_a_manual_rollback_serves_the_old_version_again(
    make_host: Callable[..., PluginHost], tmp_path: Path
) -> None:
    host = make_host()
    first_version(host, tmp_path)
    host.install(version_archive(tmp_path, "2.0.0", MIGRATION), actor="ops", reinstall=True)
    host.registry.approve("crm-sync", actor="admin")
    assert titles(host) == ["v2.0.0 ACME (migrated)"]
    host.registry.rollback("crm-sync", actor="admin")
    assert titles(host) == ["v1.0.0 Acme"]  # its code, and its settings as they were


def test_a_downgrade_is_refused_without_the_flag(
    make_host: Callable[..., PluginHost], tmp_path: Path
) -> None:
    host = make_host()
    host.install(version_archive(tmp_path, "2.0.0"), actor="ops")
    host.registry.approve("crm-sync", actor="admin")
    host.registry.enable("crm-sync", "acme", actor="admin")
    older = version_archive(tmp_path, "1.0.0")
    with pytest.raises(VersionError, match="downgrade"):
        host.install(older, actor="ops", reinstall=True)
    assert titles(host) == ["v2.0.0 none"]
    assert not (host.plugins_dir / "crm-sync" / "1.0.0").exists()  # nothing left behind
    host.install(older, actor="ops", reinstall=True, downgrade=True)
    host.registry.approve("crm-sync", actor="admin")
    assert titles(host) == ["v1.0.0 none"]


def test_auto_approval_applies_only_to_an_update_asking_for_nothing_new(
    make_host: Callable[..., PluginHost], tmp_path: Path
) -> None:
    host = make_host(upgrades=UpgradePolicy(auto_approve=True, migration_timeout=3.0))
    first_version(host, tmp_path)
    host.install(version_archive(tmp_path, "1.1.0"), actor="ops", reinstall=True)
    assert titles(host) == ["v1.1.0 Acme"]  # approved by the policy, switched at once
    approval = host.registry.audit_log(plugin_id="crm-sync", action="approve upgrade")[0]
    assert approval.actor == "upgrade-policy"
    assert approval.after is not None
    assert approval.after["auto_approved"] is True
    asks_more = version_archive(tmp_path, "1.2.0", permissions=("dashboard_widgets", "send_email"))
    host.install(asks_more, actor="ops", reinstall=True)
    assert titles(host) == ["v1.1.0 Acme"]  # waits for an admin
    staged = host.registry.plugin("crm-sync").staged
    assert staged is not None
    assert staged.approved_at is None


COUNTING = """
@hookimpl
def plugin_upgraded(self, plugin_id, from_version, to_version, context, api, settings):
    time.sleep(0.2)
    api.store_set("runs", (api.store_get("runs") or 0) + 1)
"""


def test_two_hosts_on_one_registry_run_the_migration_once(
    make_host: Callable[..., PluginHost], tmp_path: Path, services: Any
) -> None:
    storage = MemoryStorage()
    first, second = make_host(storage=storage), make_host(storage=storage)
    first_version(first, tmp_path)
    first.install(version_archive(tmp_path, "2.0.0", COUNTING), actor="ops", reinstall=True)
    first.registry.approve("crm-sync", actor="admin")
    threads = [threading.Thread(target=host.refresh) for host in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for host in (first, second):
        host.refresh()
        assert titles(host) == ["v2.0.0 Acme"]
    assert services.stored("acme", "crm-sync")["runs"] == 1
    assert len(first.registry.audit_log(plugin_id="crm-sync", action="upgrade started")) == 1


def test_a_reviewer_checks_the_staged_code_even_on_another_machine(
    hosts: Hosts, tmp_path: Path
) -> None:
    """The admins' check runs on the version under review (the staged one), found on this
    machine or materialised from its archive when another machine installed it."""
    from services_ai_plugins._review import code_to_check
    from services_ai_plugins._sources._loader import check_code

    storage = MemoryStorage()
    installer = cast("PluginHost", hosts(storage=storage, plugins_dir=tmp_path / "a"))
    first_version(installer, tmp_path)
    installer.install(version_archive(tmp_path, "2.0.0"), actor="ops", reinstall=True)
    reviewer = cast("PluginHost", hosts(storage=storage, plugins_dir=tmp_path / "b"))
    record = reviewer.registry.plugin("crm-sync")
    assert record.staged is not None
    here = code_to_check(installer, record)
    assert here == Path(str(record.staged.package_path))
    # Another machine: the installer's folders are not there.
    (tmp_path / "a").rename(tmp_path / "elsewhere")
    there = code_to_check(reviewer, record)
    assert there.is_relative_to(tmp_path / "b")
    assert (there / "manifest.json").read_text().count('"2.0.0"') == 1
    check_code("crm-sync", there, record.staged.code_hash)


def test_new_code_changed_after_its_install_is_an_integrity_failure_rolled_back(
    make_host: Callable[..., PluginHost], tmp_path: Path
) -> None:
    """A staged version's files edited on disk before its switch (a hostile operator or
    plugin) are refused at the switch: the running version serves on."""
    host = make_host()
    first_version(host, tmp_path)
    host.install(version_archive(tmp_path, "2.0.0"), actor="ops", reinstall=True)
    staged = host.registry.plugin("crm-sync").staged
    assert staged is not None
    assert staged.package_path is not None
    main = Path(staged.package_path) / "main.py"
    main.write_text(main.read_text() + "\nimport os  # smuggled in after review\n")
    host.registry.approve("crm-sync", actor="admin")
    assert titles(host) == ["v1.0.0 Acme"]
    event = host.registry.audit_log(plugin_id="crm-sync", limit=1)[0]
    assert event.action == "upgrade failed"
    assert event.after is not None
    assert event.after["step"] == "integrity"
    assert host.registry.plugin("crm-sync").status.value == "approved"  # not suspended
