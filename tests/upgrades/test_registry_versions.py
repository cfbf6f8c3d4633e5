"""The registry's versions: staged upgrades, the switch, rollback, retention, diffs, archives.

The registry alone, on MemoryStorage and SQLite (the host's part, running
``plugin_upgraded``, is tested in ``test_host_upgrades.py``).
"""

from __future__ import annotations

import hashlib
import itertools
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from services_ai_plugins import (
    ConflictError,
    Manifest,
    MemoryStorage,
    PluginStatus,
    Registry,
    SQLiteStorage,
    TransitionError,
    UpgradeError,
    VersionError,
)
from services_ai_plugins._registry import switch_holder
from services_ai_plugins._versions import UpgradePolicy
from services_ai_plugins.storage import Storage

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
#: A Fernet key for the secret settings.
SECRET_KEY = "dGVzdC1yZWdpc3RyeS1zZWNyZXQta2V5LTMyYnl0ZXM="


def manifest(version: str = "1.0.0", **extra: Any) -> Manifest:
    document: dict[str, Any] = {
        "id": "crm-sync",
        "name": "CRM Sync",
        "version": version,
        "permissions": ["read_leads"],
        "optional_permissions": ["export_leads"],
        "settings": [
            {"name": "token", "type": "secret"},
            {"name": "limit", "type": "integer", "default": 10, "min": 1},
            {"name": "label", "type": "string", "required": True},
        ],
        **extra,
    }
    return Manifest.from_dict(document)


def code(version: str) -> str:
    return hashlib.sha256(version.encode()).hexdigest()


class Clock:
    """One minute per reading."""

    def __init__(self) -> None:
        self.ticks = itertools.count()

    def __call__(self) -> datetime:
        return START + timedelta(minutes=next(self.ticks))


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    made: Storage = (
        MemoryStorage() if request.param == "memory" else SQLiteStorage(tmp_path / "r.db")
    )
    yield made
    made.close()


def registry_over(storage: Storage, **policy: Any) -> Registry:
    return Registry(
        storage, clock=Clock(), secret_keys=[SECRET_KEY], upgrades=UpgradePolicy(**policy)
    )


@pytest.fixture
def registry(storage: Storage) -> Registry:
    return registry_over(storage)


def running(registry: Registry, version: str = "1.0.0", **extra: Any) -> None:
    """crm-sync ``version`` approved, enabled for acme with settings, export granted."""
    registry.install(manifest(version, **extra), actor="ops", code_hash=code(version))
    registry.approve("crm-sync", actor="admin")
    registry.enable("crm-sync", "acme", actor="admin")
    registry.set_settings(
        "crm-sync", "acme", {"label": "Acme", "limit": 5, "token": "s3cret"}, actor="admin"
    )
    registry.grant("crm-sync", "acme", "export_leads", actor="admin")


def stage(registry: Registry, version: str = "2.0.0", **extra: Any) -> None:
    registry.install(
        manifest(version, **extra), actor="ops", code_hash=code(version), reinstall=True
    )


def switch(registry: Registry, changes: dict[str, dict[str, object]] | None = None) -> None:
    plan = registry.prepare_upgrade("crm-sync")
    assert plan is not None
    assert plan.problem is None
    registry.complete_upgrade(plan, changes, actor="host")


def actions(registry: Registry) -> list[str]:
    return [e.action for e in reversed(registry.audit_log(plugin_id="crm-sync"))]


# -- staging -----------------------------------------------------------------------------------


def test_a_new_version_is_staged_beside_the_running_one(registry: Registry) -> None:
    running(registry)
    stage(registry)
    record = registry.plugin("crm-sync")
    assert record.status is PluginStatus.APPROVED
    assert record.version == "1.0.0"
    assert record.staged is not None
    assert record.staged.version == "2.0.0"
    assert record.staged.approved_at is None
    # Still running for acme, with its grants and settings, until the switch.
    assert registry.enabled_plugins("acme") == ["crm-sync"]
    assert registry.grants("crm-sync", "acme") == {"read_leads", "export_leads"}
    assert registry.get_settings("crm-sync", "acme")["token"] == "s3cret"
    assert registry.prepare_upgrade("crm-sync") is None  # not approved yet
    assert actions(registry)[-1] == "stage"
    assert [v.version for v in registry.history("crm-sync")] == ["1.0.0", "2.0.0"]


def test_installing_over_a_running_plugin_needs_reinstall(registry: Registry) -> None:
    running(registry)
    with pytest.raises(TransitionError, match="reinstall=True"):
        registry.install(manifest("2.0.0"), actor="ops", code_hash=code("2.0.0"))


def test_an_older_version_needs_the_downgrade_flag(registry: Registry) -> None:
    running(registry, "2.0.0")
    with pytest.raises(VersionError, match=r"older than the installed version 2\.0\.0.*downgrade"):
        stage(registry, "1.5.0")
    assert registry.plugin("crm-sync").staged is None
    registry.install(
        manifest("1.5.0"), actor="ops", code_hash=code("1.5.0"), reinstall=True, downgrade=True
    )
    staged = registry.plugin("crm-sync").staged
    assert staged is not None
    assert staged.version == "1.5.0"


def test_versions_compare_by_pep_440_not_as_text(registry: Registry) -> None:
    running(registry, "1.9.0")
    stage(registry, "1.10.0")  # newer, though "1.10.0" < "1.9.0" as text
    registry.approve("crm-sync", actor="admin")
    switch(registry)
    with pytest.raises(VersionError, match="older"):
        stage(registry, "1.10.0rc1")  # a pre-release of it is older


def test_a_running_version_is_not_installed_again(registry: Registry) -> None:
    running(registry)
    with pytest.raises(VersionError, match="runs already; a new version needs a new version"):
        registry.install(manifest(), actor="ops", code_hash=code("rebuilt"), reinstall=True)


def test_the_same_code_is_not_installed_twice(registry: Registry) -> None:
    registry.install(manifest(), actor="ops", code_hash=code("1.0.0"))
    with pytest.raises(VersionError, match="same code hash"):
        registry.install(manifest(), actor="ops", code_hash=code("1.0.0"), reinstall=True)
    registry.install(manifest(), actor="ops", code_hash=code("rebuilt"), reinstall=True)
    assert registry.plugin("crm-sync").code_hash == code("rebuilt")  # pending: replaced


def test_a_pending_plugin_is_replaced_not_staged(registry: Registry) -> None:
    registry.install(manifest(), actor="ops", code_hash=code("1.0.0"))
    registry.install(manifest("1.1.0"), actor="ops", code_hash=code("1.1.0"), reinstall=True)
    record = registry.plugin("crm-sync")
    assert (record.status, record.version, record.staged) == (PluginStatus.PENDING, "1.1.0", None)


def test_rejecting_a_staged_version_keeps_the_running_one(registry: Registry) -> None:
    running(registry)
    stage(registry)
    registry.reject("crm-sync", actor="admin", reason="asks too much")
    record = registry.plugin("crm-sync")
    assert (record.status, record.version, record.staged) == (PluginStatus.APPROVED, "1.0.0", None)
    event = registry.audit_log(plugin_id="crm-sync")[0]
    assert event.action == "reject"
    assert event.after == {
        "version": "1.0.0",
        "reason": "asks too much",
    }


def test_approving_a_staged_version_records_what_was_approved(registry: Registry) -> None:
    running(registry)
    stage(registry, permissions=["read_leads", "send_email"])
    registry.approve("crm-sync", actor="admin")
    record = registry.plugin("crm-sync")
    assert record.version == "1.0.0"  # the switch is a host's job
    assert record.staged is not None
    assert record.staged.approved_by == "admin"
    event = registry.audit_log(plugin_id="crm-sync")[0]
    assert event.action == "approve upgrade"
    assert event.actor == "admin"
    assert event.after is not None
    approved = event.after["approved"]
    assert isinstance(approved, dict)
    assert "send_email" in str(approved)
    with pytest.raises(TransitionError, match="approved already"):
        registry.approve("crm-sync", actor="admin")


def test_auto_approval_only_for_a_version_that_asks_for_nothing_new(storage: Storage) -> None:
    registry = registry_over(storage, auto_approve=True)
    running(registry)
    stage(registry, "1.1.0")  # the same permissions, hooks and requirements
    staged = registry.plugin("crm-sync").staged
    assert staged is not None
    assert staged.auto_approved
    assert staged.approved_by == "upgrade-policy"
    event = registry.audit_log(plugin_id="crm-sync")[0]
    assert (event.action, event.actor) == ("approve upgrade", "upgrade-policy")
    switch(registry)
    stage(registry, "1.2.0", permissions=["read_leads", "send_email"])  # asks for more
    staged = registry.plugin("crm-sync").staged
    assert staged is not None
    assert staged.approved_at is None
    assert not staged.auto_approved


# -- the switch --------------------------------------------------------------------------------


def test_the_switch_migrates_settings_and_keeps_the_old_version(registry: Registry) -> None:
    running(registry)
    stage(
        registry,
        settings=[
            {"name": "token", "type": "secret"},
            {"name": "limit", "type": "integer", "default": 10, "min": 1},
            {"name": "label", "type": "string", "required": True},
            {"name": "region", "type": "choice", "choices": ["eu", "us"], "default": "eu"},
        ],
    )
    registry.approve("crm-sync", actor="admin")
    plan = registry.prepare_upgrade("crm-sync")
    assert plan is not None
    assert plan.problem is None
    assert plan.running == ("acme",)
    seen = registry.upgrade_settings(plan, "acme")
    assert seen == {"token": "s3cret", "limit": 5, "label": "Acme", "region": "eu"}
    registry.complete_upgrade(plan, {"acme": {"label": "ACME Corp"}}, actor="host")
    record = registry.plugin("crm-sync")
    assert (record.version, record.staged) == ("2.0.0", None)
    assert registry.get_settings("crm-sync", "acme") == {
        "token": "s3cret", "limit": 5, "label": "ACME Corp", "region": "eu",
    }  # fmt: skip
    assert [k.version for k in registry.kept_versions("crm-sync")] == ["1.0.0"]
    kept = registry.kept_versions("crm-sync")[0]
    assert kept.tenants["acme"]["settings"]["label"] == "Acme"  # type: ignore[index]
    event = registry.audit_log(plugin_id="crm-sync")[0]
    assert event.action == "upgrade"
    assert event.after is not None
    assert event.after["version"] == "2.0.0"
    assert event.after["migrated"] == ["acme"]


def test_a_required_setting_that_cannot_be_filled_is_a_refusal(registry: Registry) -> None:
    running(registry)
    stage(
        registry,
        settings=[
            {"name": "label", "type": "string", "required": True},
            {"name": "account", "type": "string", "required": True},
        ],
    )
    registry.approve("crm-sync", actor="admin")
    plan = registry.prepare_upgrade("crm-sync")
    assert plan is not None
    assert plan.problem is not None
    assert plan.problem.step == "settings"
    assert "account" in str(plan.problem)
    registry.fail_upgrade(plan, plan.problem, actor="host")
    record = registry.plugin("crm-sync")
    assert (record.version, record.staged) == ("1.0.0", None)
    assert registry.get_settings("crm-sync", "acme")["label"] == "Acme"
    event = registry.audit_log(plugin_id="crm-sync")[0]
    assert event.action == "upgrade failed"
    assert event.after is not None
    assert event.after["step"] == "settings"
    assert event.after["tenant"] == "acme"
    failure = registry.storage.failures("crm-sync")[0]
    assert failure.hook == "plugin_upgraded"
    assert "account" in failure.message


def test_settings_a_migration_returns_are_checked(registry: Registry) -> None:
    running(registry)
    stage(registry)
    registry.approve("crm-sync", actor="admin")
    plan = registry.prepare_upgrade("crm-sync")
    assert plan is not None
    with pytest.raises(UpgradeError, match="limit") as caught:
        registry.complete_upgrade(plan, {"acme": {"limit": 0}}, actor="host")
    assert caught.value.step == "settings"
    assert registry.plugin("crm-sync").version == "1.0.0"  # nothing written


def test_a_switch_planned_on_a_stale_read_writes_nothing(registry: Registry) -> None:
    running(registry)
    stage(registry)
    registry.approve("crm-sync", actor="admin")
    plan = registry.prepare_upgrade("crm-sync")
    assert plan is not None
    registry.set_settings("crm-sync", "acme", {"limit": 7}, actor="admin")  # meanwhile
    with pytest.raises(ConflictError):
        registry.complete_upgrade(plan, None, actor="host")
    assert registry.plugin("crm-sync").version == "1.0.0"
    assert registry.get_settings("crm-sync", "acme")["limit"] == 7
    switch(registry)  # a new plan sees the admin's change
    assert registry.get_settings("crm-sync", "acme")["limit"] == 7


def test_optional_grants_the_new_version_drops_go_at_the_switch(registry: Registry) -> None:
    running(registry)
    stage(registry, optional_permissions=[])
    registry.approve("crm-sync", actor="admin")
    assert "export_leads" in registry.grants("crm-sync", "acme")  # until the switch
    switch(registry)
    assert registry.grants("crm-sync", "acme") == {"read_leads"}


# -- rollback and retention --------------------------------------------------------------------


def test_rollback_returns_to_the_kept_version_with_its_settings(registry: Registry) -> None:
    running(registry)
    stage(registry)
    registry.approve("crm-sync", actor="admin")
    switch(registry, {"acme": {"label": "Changed by 2.0"}})
    registry.set_settings("crm-sync", "acme", {"limit": 9}, actor="admin")
    record = registry.rollback("crm-sync", actor="admin")
    assert (record.version, record.code_hash) == ("1.0.0", code("1.0.0"))
    assert registry.get_settings("crm-sync", "acme") == {
        "token": "s3cret", "limit": 5, "label": "Acme",
    }  # fmt: skip
    assert registry.grants("crm-sync", "acme") == {"read_leads", "export_leads"}
    # 2.0.0 is kept in turn: roll forward again, with its settings as they were.
    assert [k.version for k in registry.kept_versions("crm-sync")] == ["2.0.0"]
    registry.rollback("crm-sync", "2.0.0", actor="admin")
    assert registry.get_settings("crm-sync", "acme")["limit"] == 9
    assert actions(registry)[-2:] == ["rollback", "rollback"]


def test_rollback_needs_a_kept_version(registry: Registry) -> None:
    running(registry)
    with pytest.raises(VersionError, match="no earlier version is kept"):
        registry.rollback("crm-sync", actor="admin")
    stage(registry)
    registry.approve("crm-sync", actor="admin")
    switch(registry)
    with pytest.raises(VersionError, match=r"not kept \(kept: 1\.0\.0\)"):
        registry.rollback("crm-sync", "0.9", actor="admin")


def test_rollback_drops_a_staged_version(registry: Registry) -> None:
    running(registry)
    stage(registry)
    registry.approve("crm-sync", actor="admin")
    switch(registry)
    stage(registry, "3.0.0")
    registry.rollback("crm-sync", actor="admin")
    record = registry.plugin("crm-sync")
    assert (record.version, record.staged) == ("1.0.0", None)


def test_the_policy_keeps_only_so_many_versions(storage: Storage) -> None:
    registry = registry_over(storage, keep_versions=2)
    running(registry)
    for version in ("2.0.0", "3.0.0", "4.0.0"):
        stage(registry, version)
        registry.approve("crm-sync", actor="admin")
        switch(registry)
    assert [k.version for k in registry.kept_versions("crm-sync")] == ["2.0.0", "3.0.0"]
    none_kept = registry_over(storage, keep_versions=0)
    stage(none_kept, "5.0.0")
    none_kept.approve("crm-sync", actor="admin")
    plan = none_kept.prepare_upgrade("crm-sync")
    assert plan is not None
    none_kept.complete_upgrade(plan, None, actor="host")
    assert none_kept.kept_versions("crm-sync") == []


# -- archives ----------------------------------------------------------------------------------


def test_archives_no_kept_version_uses_are_collected(storage: Storage) -> None:
    registry = registry_over(storage, keep_versions=1)
    archives = {v: f"archive of {v}".encode() for v in ("1.0.0", "2.0.0", "3.0.0")}
    keys = {v: hashlib.sha256(data).hexdigest() for v, data in archives.items()}
    stray = b"uploaded, never recorded"
    registry.artifacts.put(hashlib.sha256(stray).hexdigest(), stray)
    for version, data in archives.items():
        registry.artifacts.put(keys[version], data)
        registry.install(
            manifest(version),
            actor="ops",
            code_hash=code(version),
            reinstall=version != "1.0.0",
            artifact=keys[version],
        )
        if version == "1.0.0":
            registry.approve("crm-sync", actor="admin")
        else:
            registry.approve("crm-sync", actor="admin")
            switch(registry)
    stored = {a.sha256 for a in registry.artifacts.list()}
    # Too young to collect: an install may be between storing its archive and recording it.
    assert keys["1.0.0"] in stored
    removed = registry.collect_artifacts(older_than=timedelta(0))
    assert set(removed) == {keys["1.0.0"], hashlib.sha256(stray).hexdigest()}
    assert {a.sha256 for a in registry.artifacts.list()} == {keys["2.0.0"], keys["3.0.0"]}
    assert registry.plugin("crm-sync").artifact == keys["3.0.0"]
    assert registry.kept_versions("crm-sync")[0].artifact == keys["2.0.0"]


def test_the_artifact_store_refuses_data_under_another_hash(registry: Registry) -> None:
    with pytest.raises(ValueError, match="does not match its data"):
        registry.artifacts.put("0" * 64, b"something else")
    with pytest.raises(ValueError, match="not a SHA-256"):
        registry.artifacts.put("../../etc/passwd", b"x")


# -- diffs -------------------------------------------------------------------------------------


def test_diff_of_the_staged_version_against_the_running_one(registry: Registry) -> None:
    running(registry)
    stage(
        registry,
        permissions=["read_leads", "send_email"],
        optional_permissions=[],
        requires_python=">=3.10",
        changelog="Sends a summary by e-mail.",
    )
    diff = registry.diff("crm-sync").to_dict()
    text = "\n".join(registry.diff("crm-sync").lines())
    assert "send_email" in str(diff)
    assert "export_leads" in str(diff)
    assert "requires_python" in str(diff)
    assert "Sends a summary by e-mail." in text
    with pytest.raises(VersionError):
        registry.diff("crm-sync", "0.1")


def test_diff_without_a_staged_version_compares_with_the_kept_one(registry: Registry) -> None:
    running(registry)
    with pytest.raises(VersionError, match="nothing to compare"):
        registry.diff("crm-sync")
    stage(registry, permissions=["read_leads", "read_bookings"])
    registry.approve("crm-sync", actor="admin")
    switch(registry)
    assert "read_bookings" in str(registry.diff("crm-sync").to_dict())
    assert "read_bookings" in str(registry.diff("crm-sync", "1.0.0", "2.0.0").to_dict())


# -- one host makes the switch ---------------------------------------------------------------


def test_a_claimed_switch_is_left_to_its_holder_until_it_is_gone(registry: Registry) -> None:
    running(registry)
    stage(registry)
    registry.approve("crm-sync", actor="admin")
    plan = registry.prepare_upgrade("crm-sync")
    assert plan is not None
    claimed = registry.claim_upgrade(
        plan, actor="host-a", holder=switch_holder(), lease=timedelta(hours=1)
    )
    assert registry.prepare_upgrade("crm-sync") is None  # another host waits for host-a
    with pytest.raises(ConflictError):  # and cannot claim it from a stale plan either
        registry.claim_upgrade(plan, actor="host-b", holder="b:1:x", lease=timedelta(hours=1))
    event = registry.audit_log(plugin_id="crm-sync")[0]
    assert event.action == "upgrade started"
    assert event.after == {"staged": "2.0.0", "by": claimed.staged.switching_by}
    registry.complete_upgrade(claimed, None, actor="host-a")
    assert registry.plugin("crm-sync").version == "2.0.0"


def test_a_claim_of_a_dead_process_or_past_its_lease_no_longer_holds(registry: Registry) -> None:
    running(registry)
    stage(registry)
    registry.approve("crm-sync", actor="admin")
    plan = registry.prepare_upgrade("crm-sync")
    assert plan is not None
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    holder = f"{socket.gethostname()}:{dead}:gone"
    registry.claim_upgrade(plan, actor="host-a", holder=holder, lease=timedelta(hours=1))
    again = registry.prepare_upgrade("crm-sync")  # its holder died (kill -9, say)
    assert again is not None
    elsewhere = registry.claim_upgrade(
        again, actor="host-b", holder="other-machine:1:x", lease=timedelta(minutes=2)
    )
    assert registry.prepare_upgrade("crm-sync") is None  # another machine's: its lease decides
    # The registry's clock moves a minute per reading: the lease is soon over.
    assert elsewhere.staged.switching_until is not None
    for _ in range(2):
        registry.prepare_upgrade("crm-sync")
    assert registry.prepare_upgrade("crm-sync") is not None


def test_a_rollback_forgets_no_version_whatever_its_callers_policy(storage: Storage) -> None:
    """Retention applies at a switch: a command line with the default policy rolling back a
    deployment that keeps more versions forgets none of them."""
    hosts_registry = registry_over(storage, keep_versions=5)
    running(hosts_registry)
    for version in ("2.0.0", "3.0.0", "4.0.0", "5.0.0"):
        stage(hosts_registry, version)
        hosts_registry.approve("crm-sync", actor="admin")
        switch(hosts_registry)
    assert len(hosts_registry.kept_versions("crm-sync")) == 4
    command_line = registry_over(storage, keep_versions=1)
    command_line.rollback("crm-sync", "2.0.0", actor="ops")
    kept = sorted(k.version for k in command_line.kept_versions("crm-sync"))
    assert kept == ["1.0.0", "3.0.0", "4.0.0", "5.0.0"]  # (its own clock orders them apart)
