"""The registry: the plugin lifecycle, each step checked, audited and atomic."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest

from services_ai_plugins import (
    AuditEvent,
    ConflictError,
    DependencyError,
    Manifest,
    MemoryStorage,
    PluginNotFound,
    PluginStatus,
    Registry,
    RequirementsError,
    SettingsError,
    SQLiteStorage,
    Suspension,
    TransitionError,
)
from services_ai_plugins.storage import Change, Storage

HASH = "0" * 64
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
#: A Fernet key (32 bytes, url-safe base64) for the secret settings.
SECRET_KEY = "dGVzdC1yZWdpc3RyeS1zZWNyZXQta2V5LTMyYnl0ZXM="


def manifest(plugin_id: str = "crm-sync", version: str = "1.0.0", **extra: Any) -> Manifest:
    document: dict[str, Any] = {
        "id": plugin_id,
        "name": plugin_id.replace("-", " ").title(),
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


class Clock:
    """A clock that moves one minute per reading."""

    def __init__(self) -> None:
        self.ticks = itertools.count()

    def __call__(self) -> datetime:
        return START + timedelta(minutes=next(self.ticks))


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    store: Storage = (
        MemoryStorage() if request.param == "memory" else SQLiteStorage(tmp_path / "r.db")
    )
    yield store
    store.close()


@pytest.fixture
def registry(storage: Storage) -> Registry:
    return Registry(storage, clock=Clock(), secret_keys=[SECRET_KEY])


def approved(registry: Registry, plugin_id: str = "crm-sync", **extra: Any) -> None:
    registry.install(manifest(plugin_id, **extra), actor="dev", code_hash=HASH)
    registry.approve(plugin_id, actor="admin")


def audit_count(registry: Registry) -> int:
    return len(registry.audit_log(limit=100_000))


def test_install_records_a_pending_plugin_with_history_and_audit(registry: Registry) -> None:
    """install: pending, one version in the history, one audit event naming the hash."""
    record = registry.install(manifest(), actor="dev", code_hash=HASH, package_path="/p/crm")
    assert (record.status, record.revision, record.installed_by) == (PluginStatus.PENDING, 1, "dev")
    assert registry.plugin("crm-sync") == record
    assert registry.manifest("crm-sync") == manifest()
    assert [(v.version, v.code_hash) for v in registry.history("crm-sync")] == [("1.0.0", HASH)]
    [event] = registry.audit_log()
    assert (event.action, event.actor, event.plugin_id) == ("install", "dev", "crm-sync")
    assert event.after == {"status": "pending", "version": "1.0.0", "code_hash": HASH}


def test_a_second_install_needs_reinstall(registry: Registry) -> None:
    """Installing over an installed plugin is refused unless it is a reinstall."""
    registry.install(manifest(), actor="dev", code_hash=HASH)
    with pytest.raises(TransitionError, match="reinstall=True") as caught:
        registry.install(manifest(), actor="dev", code_hash=HASH)
    assert caught.value.status == "pending"
    assert audit_count(registry) == 1


def test_approve_grants_declared_permissions_and_records_who(registry: Registry) -> None:
    """approve: approved, the manifest's permissions granted, who and when recorded."""
    registry.install(manifest(), actor="dev", code_hash=HASH)
    record = registry.approve("crm-sync", actor="admin")
    assert record.status is PluginStatus.APPROVED
    assert record.granted_permissions == ("read_leads",)
    assert record.approved_by == "admin"
    assert record.approved_at == START + timedelta(minutes=1)
    assert registry.audit_log(action="approve")[0].after == {
        "status": "approved",
        "granted_permissions": ["read_leads"],
        "version": "1.0.0",
        "code_hash": HASH,
    }


def test_a_rejected_plugin_needs_a_new_install(registry: Registry) -> None:
    """reject needs a reason; a rejected plugin cannot be approved, only installed again."""
    registry.install(manifest(), actor="dev", code_hash=HASH)
    with pytest.raises(ValueError, match="reason"):
        registry.reject("crm-sync", actor="admin", reason=" ")
    record = registry.reject("crm-sync", actor="admin", reason="phones home")
    assert (record.status, record.status_reason) == (PluginStatus.REJECTED, "phones home")
    with pytest.raises(TransitionError) as caught:
        registry.approve("crm-sync", actor="admin")
    assert (caught.value.status, caught.value.allowed) == ("rejected", ("install", "uninstall"))
    assert "cannot approve plugin 'crm-sync': it is rejected" in str(caught.value)
    again = registry.install(manifest(version="1.0.1"), actor="dev", code_hash=HASH)
    assert (again.status, again.revision, again.status_reason) == (PluginStatus.PENDING, 3, None)


def test_enable_only_when_approved(registry: Registry) -> None:
    """A pending plugin cannot be enabled; an approved one can, per tenant."""
    registry.install(manifest(), actor="dev", code_hash=HASH)
    with pytest.raises(TransitionError, match="it is pending"):
        registry.enable("crm-sync", "acme", actor="owner")
    registry.approve("crm-sync", actor="admin")
    record = registry.enable("crm-sync", "acme", actor="owner")
    assert (record.enabled, record.revision, record.changed_by) == (True, 1, "owner")
    assert registry.enabled_plugins("acme") == ["crm-sync"]
    assert registry.enabled_plugins("globex") == []


def test_repeating_a_step_writes_nothing(registry: Registry) -> None:
    """Enabling an enabled plugin, or disabling one never enabled, is not a change."""
    approved(registry)
    registry.enable("crm-sync", "acme", actor="owner")
    count = audit_count(registry)
    assert registry.enable("crm-sync", "acme", actor="owner").revision == 1
    assert registry.disable("crm-sync", "globex", actor="owner").revision == 0
    assert registry.tenant("crm-sync", "globex") is None
    assert audit_count(registry) == count


def test_suspended_plugins_run_nowhere_until_resumed(registry: Registry) -> None:
    """suspend takes a plugin out of every tenant; resume brings it back."""
    approved(registry)
    for tenant in ("acme", "globex"):
        registry.enable("crm-sync", tenant, actor="owner")
    registry.suspend("crm-sync", actor="breaker", reason="5 failures in a row")
    assert registry.enabled_plugins("acme") == registry.enabled_plugins("globex") == []
    with pytest.raises(TransitionError):
        registry.enable("crm-sync", "initech", actor="owner")
    registry.disable("crm-sync", "globex", actor="owner")
    registry.resume("crm-sync", actor="admin")
    assert registry.enabled_plugins("acme") == ["crm-sync"]
    assert registry.enabled_plugins("globex") == []


def test_settings_are_validated_coerced_and_defaulted(registry: Registry) -> None:
    """set_settings coerces form text; get_settings fills in defaults."""
    approved(registry)
    assert registry.get_settings("crm-sync", "acme") == {"token": None, "limit": 10, "label": None}
    values = registry.set_settings("crm-sync", "acme", {"limit": "25", "label": "Sales"}, actor="o")
    assert values == {"token": None, "limit": 25, "label": "Sales"}
    assert registry.set_settings("crm-sync", "acme", {"limit": None}, actor="o")["limit"] == 10


def test_refused_settings_store_nothing(registry: Registry) -> None:
    """Invalid values raise SettingsError naming each setting, and nothing is written."""
    approved(registry)
    count = audit_count(registry)
    with pytest.raises(SettingsError) as caught:
        registry.set_settings("crm-sync", "acme", {"limit": 0, "colour": "red"}, actor="o")
    assert {p.path for p in caught.value.problems} == {"limit", "colour"}
    with pytest.raises(SettingsError, match="label: is required"):
        registry.set_settings("crm-sync", "acme", {"limit": 5}, actor="o", partial=False)
    assert audit_count(registry) == count
    assert registry.tenant("crm-sync", "acme") is None


def test_secrets_never_reach_the_audit_trail_or_reprs(registry: Registry) -> None:
    """A secret's value is masked in audit events and left out of the record's repr."""
    approved(registry)
    registry.set_settings("crm-sync", "acme", {"token": "hunter2", "label": "x"}, actor="o")
    [event] = registry.audit_log(action="set settings")
    assert event.after == {"settings": {"label": "x", "token": "********"}}
    assert event.before == {"settings": {"label": None, "token": None}}
    record = registry.tenant("crm-sync", "acme")
    assert record is not None
    assert "hunter2" not in repr(dict(record.settings))  # stored encrypted
    assert "hunter2" not in repr(record)
    assert "hunter2" not in repr(registry.audit_log())
    assert registry.get_settings("crm-sync", "acme")["token"] == "hunter2"


def test_optional_permissions_are_granted_per_tenant(registry: Registry) -> None:
    """grant/revoke change one tenant's optional grants; other permissions are refused."""
    approved(registry)
    assert registry.grant("crm-sync", "acme", "export_leads", actor="admin").optional_grants == (
        "export_leads",
    )
    assert registry.tenant("crm-sync", "globex") is None
    with pytest.raises(ValueError, match="not an optional permission"):
        registry.grant("crm-sync", "acme", "delete_everything", actor="admin")
    count = audit_count(registry)
    registry.grant("crm-sync", "acme", "export_leads", actor="admin")
    assert audit_count(registry) == count
    assert registry.revoke("crm-sync", "acme", "export_leads", actor="admin").optional_grants == ()


def test_uninstall_is_refused_while_enabled_plugins_depend_on_it(registry: Registry) -> None:
    """uninstall names the enabled dependents; once they are off it proceeds."""
    approved(registry)
    approved(registry, "lead-scorer", requires_plugins={"crm-sync": ">=1"})
    registry.enable("crm-sync", "acme", actor="owner")
    registry.enable("lead-scorer", "acme", actor="owner")
    with pytest.raises(DependencyError) as caught:
        registry.uninstall("crm-sync", actor="admin")
    assert caught.value.dependents == ("lead-scorer",)
    registry.disable("lead-scorer", "acme", actor="owner")
    record = registry.uninstall("crm-sync", actor="admin")
    assert record.status is PluginStatus.UNINSTALLED
    assert registry.tenant("crm-sync", "acme") is None
    assert registry.enabled_plugins("acme") == []
    assert len(registry.history("crm-sync")) == 1
    assert registry.audit_log(plugin_id="crm-sync")[0].action == "uninstall"
    with pytest.raises(TransitionError, match="allowed: install"):
        registry.enable("crm-sync", "acme", actor="owner")
    assert registry.install(manifest(), actor="dev", code_hash=HASH).revision == record.revision + 1


def test_a_new_version_is_staged_and_keeps_tenants_at_its_switch(registry: Registry) -> None:
    """A new version of an approved plugin waits beside it: the running one keeps serving its
    tenants until the switch, which keeps their activations and settings."""
    approved(registry)
    registry.enable("crm-sync", "acme", actor="owner")
    registry.set_settings("crm-sync", "acme", {"label": "Sales"}, actor="owner")
    registry.install(manifest(version="2.0.0"), actor="dev", code_hash="f" * 64, reinstall=True)
    assert registry.enabled_plugins("acme") == ["crm-sync"]
    assert registry.plugin("crm-sync").version == "1.0.0"
    registry.approve("crm-sync", actor="admin")
    plan = registry.prepare_upgrade("crm-sync")
    assert plan is not None
    registry.complete_upgrade(plan, None, actor="host")
    assert registry.plugin("crm-sync").version == "2.0.0"
    assert registry.enabled_plugins("acme") == ["crm-sync"]
    assert registry.get_settings("crm-sync", "acme")["label"] == "Sales"
    assert [v.version for v in registry.history("crm-sync")] == ["1.0.0", "2.0.0"]
    assert registry.audit_log(action="stage")[0].before == {"version": "1.0.0"}


def test_a_pending_reinstall_waits_for_approval_and_keeps_tenants(registry: Registry) -> None:
    """A new version of a pending plugin replaces it; its tenants' data waits for approval."""
    registry.install(manifest(), actor="dev", code_hash=HASH)
    registry.set_settings("crm-sync", "acme", {"label": "Sales"}, actor="owner")
    registry.install(manifest(version="2.0.0"), actor="dev", code_hash="f" * 64, reinstall=True)
    registry.approve("crm-sync", actor="admin")
    assert registry.get_settings("crm-sync", "acme")["label"] == "Sales"
    assert registry.audit_log(action="reinstall")[0].before == {
        "status": "pending",
        "version": "1.0.0",
    }


def test_the_audit_log_filters(registry: Registry) -> None:
    """audit_log filters by plugin, tenant, actor, action and time, newest first."""
    approved(registry)
    approved(registry, "mailer")
    registry.enable("crm-sync", "acme", actor="owner")
    registry.enable("mailer", "globex", actor="other")
    events = registry.audit_log()
    assert [e.action for e in events] == [
        "enable",
        "enable",
        "approve",
        "install",
        "approve",
        "install",
    ]
    assert [e.id for e in events] == sorted((e.id for e in events), reverse=True)
    assert [e.plugin_id for e in registry.audit_log(tenant="acme")] == ["crm-sync"]
    assert [e.tenant for e in registry.audit_log(actor="other")] == ["globex"]
    assert len(registry.audit_log(plugin_id="mailer")) == 3
    middle = START + timedelta(minutes=2)
    assert {
        e.at for e in registry.audit_log(since=middle, until=middle + timedelta(minutes=2))
    } == {
        middle,
        middle + timedelta(minutes=1),
    }
    assert len(registry.audit_log(limit=2)) == 2


def test_every_change_writes_exactly_one_audit_event(registry: Registry) -> None:
    """Each state change adds one audit event, in the same commit as the change."""
    steps = [
        lambda: registry.install(manifest(), actor="dev", code_hash=HASH),
        lambda: registry.approve("crm-sync", actor="admin"),
        lambda: registry.enable("crm-sync", "acme", actor="owner"),
        lambda: registry.set_settings("crm-sync", "acme", {"label": "x"}, actor="owner"),
        lambda: registry.grant("crm-sync", "acme", "export_leads", actor="admin"),
        lambda: registry.revoke("crm-sync", "acme", "export_leads", actor="admin"),
        lambda: registry.suspend("crm-sync", actor="admin", reason="r", tenant="acme"),
        lambda: registry.resume("crm-sync", actor="admin", tenant="acme"),
        lambda: registry.suspend("crm-sync", actor="admin", reason="r"),
        lambda: registry.resume("crm-sync", actor="admin"),
        lambda: registry.disable("crm-sync", "acme", actor="owner"),
        lambda: registry.uninstall("crm-sync", actor="admin"),
    ]
    for number, step in enumerate(steps, start=1):
        generation = registry.storage.generation()
        step()
        assert audit_count(registry) == number
        assert registry.storage.generation() == generation + 1


def test_unknown_plugins_and_bad_arguments(registry: Registry) -> None:
    """Unknown ids raise PluginNotFound; empty actors and tenants are refused."""
    with pytest.raises(PluginNotFound, match="no plugin 'ghost'"):
        registry.approve("ghost", actor="admin")
    with pytest.raises(LookupError):
        registry.plugin("ghost")
    with pytest.raises(ValueError, match="actor"):
        registry.install(manifest(), actor="", code_hash=HASH)
    approved(registry)
    with pytest.raises(ValueError, match="tenant"):
        registry.enable("crm-sync", "", actor="owner")


class Interfering:
    """A storage that lets another writer commit just before the first commit."""

    def __init__(self, inner: Storage, interfere: Any) -> None:
        self.inner = inner
        self.interfere = interfere

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def commit(self, change: Any) -> int:
        interfere, self.interfere = self.interfere, None
        if interfere is not None:
            interfere()
        return self.inner.commit(change)


def test_a_decision_on_a_stale_read_is_a_conflict(storage: Storage) -> None:
    """A step decided on a state another writer changed raises ConflictError, writes nothing."""
    other = Registry(storage, clock=Clock())
    approved(other)
    racing = Registry(
        Interfering(storage, lambda: other.suspend("crm-sync", actor="x", reason="r")),  # type: ignore[arg-type]
        clock=Clock(),
    )
    count = audit_count(other)
    with pytest.raises(ConflictError) as caught:
        racing.enable("crm-sync", "acme", actor="owner")
    assert (caught.value.expected, caught.value.actual) == (2, 3)
    assert audit_count(other) == count + 1  # only the suspension
    assert other.tenant("crm-sync", "acme") is None


def test_grants_are_the_snapshot_a_plugin_api_receives(registry: Registry) -> None:
    """grants(): nothing until approved or while suspended, else approved plus optional ones."""
    registry.install(manifest(), actor="dev", code_hash=HASH)
    assert registry.grants("crm-sync", "acme") == frozenset()
    registry.approve("crm-sync", actor="admin")
    assert registry.grants("crm-sync", "acme") == {"read_leads"}
    registry.grant("crm-sync", "acme", "export_leads", actor="admin")
    assert registry.grants("crm-sync", "acme") == {"read_leads", "export_leads"}
    assert registry.grants("crm-sync", "globex") == {"read_leads"}
    registry.suspend("crm-sync", actor="breaker", reason="failing", tenant="acme")
    assert registry.grants("crm-sync", "acme") == frozenset()
    assert registry.grants("crm-sync", "globex") == {"read_leads"}
    registry.resume("crm-sync", actor="admin", tenant="acme")
    assert registry.grants("crm-sync", "acme") == {"read_leads", "export_leads"}
    registry.suspend("crm-sync", actor="admin", reason="r")
    assert registry.grants("crm-sync", "acme") == frozenset()
    assert registry.grants("ghost", "acme") == frozenset()


def test_grants_count_only_what_the_installed_manifest_declares(registry: Registry) -> None:
    """A grant stored for a permission the installed manifest does not declare (written by an
    older release, or an upgrade cut short) is no part of grants(); revoke removes it."""
    approved(registry)
    stored = registry.grant("crm-sync", "acme", "export_leads", actor="admin")
    plugin = registry.plugin("crm-sync")
    registry.storage.commit(
        Change(
            plugin_id="crm-sync",
            plugin_revision=plugin.revision,
            tenant=attrs.evolve(
                stored,
                optional_grants=("delete_everything", "export_leads"),
                revision=stored.revision + 1,
            ),
            audit=AuditEvent(at=START, actor="old-release", action="grant", plugin_id="crm-sync"),
        )
    )
    assert registry.grants("crm-sync", "acme") == {"read_leads", "export_leads"}
    with pytest.raises(ValueError, match="not an optional permission"):
        registry.grant("crm-sync", "acme", "delete_everything", actor="admin")
    record = registry.revoke("crm-sync", "acme", "delete_everything", actor="admin")
    assert record.optional_grants == ("export_leads",)
    assert registry.audit_log(action="revoke")[0].after == {"optional_grants": ["export_leads"]}
    with pytest.raises(ValueError, match="granted for tenant 'acme': export_leads"):
        registry.revoke("crm-sync", "acme", "delete_everything", actor="admin")


def test_an_upgrade_revokes_the_optional_grants_it_no_longer_declares(registry: Registry) -> None:
    """Reinstalling a pending plugin with a manifest that drops an optional permission revokes it
    for every tenant that held it, one audit event each naming what was dropped; grants it
    still declares stay, and the approval shows them. (A staged version's are dropped at its
    switch: tests/upgrades.)"""
    registry.install(
        manifest(optional_permissions=["export_leads", "send_email"]), actor="dev", code_hash=HASH
    )
    registry.grant("crm-sync", "acme", "export_leads", actor="admin")
    registry.grant("crm-sync", "acme", "send_email", actor="admin")
    registry.grant("crm-sync", "globex", "send_email", actor="admin")
    registry.set_settings("crm-sync", "initech", {"label": "Initech"}, actor="admin")
    registry.install(
        manifest(version="2.0.0", optional_permissions=["send_email"]),
        actor="dev",
        code_hash=HASH,
        reinstall=True,
    )
    [revoke] = registry.audit_log(action="revoke")
    assert (revoke.actor, revoke.tenant, revoke.before, revoke.after) == (
        "dev",
        "acme",
        {"optional_grants": ["export_leads", "send_email"]},
        {
            "optional_grants": ["send_email"],
            "dropped": ["export_leads"],
            "reason": "version 2.0.0 does not declare them",
        },
    )
    assert registry.tenant("crm-sync", "acme").optional_grants == ("send_email",)  # type: ignore[union-attr]
    assert registry.tenant("crm-sync", "globex").optional_grants == ("send_email",)  # type: ignore[union-attr]
    registry.approve("crm-sync", actor="admin")
    assert registry.audit_log(action="approve")[0].after == {
        "status": "approved",
        "granted_permissions": ["read_leads"],
        "version": "2.0.0",
        "code_hash": HASH,
        "optional_grants": {"acme": ["send_email"], "globex": ["send_email"]},
    }
    assert registry.grants("crm-sync", "acme") == {"read_leads", "send_email"}
    count = audit_count(registry)
    registry.install(
        manifest(version="3.0.0", optional_permissions=["send_email"]),
        actor="dev",
        code_hash=HASH,
        reinstall=True,
    )
    assert audit_count(registry) == count + 1  # staged: nothing revoked until its switch


def test_enabling_needs_the_required_plugins_running(registry: Registry) -> None:
    """A plugin runs for a tenant only where its required plugins run, in a version it accepts."""
    approved(registry)
    approved(registry, "lead-scorer", requires_plugins={"crm-sync": ">=1"})
    with pytest.raises(RequirementsError) as caught:
        registry.enable("lead-scorer", "acme", actor="owner")
    assert [(p.path, p.message) for p in caught.value.problems] == [
        ("requires_plugins.crm-sync", "crm-sync is not enabled for tenant 'acme'")
    ]
    assert registry.tenant("lead-scorer", "acme") is None
    registry.enable("lead-scorer", "acme", actor="owner", with_requirements=True)
    assert registry.enabled_plugins("acme") == ["crm-sync", "lead-scorer"]
    assert [e.plugin_id for e in registry.audit_log(action="enable")] == ["lead-scorer", "crm-sync"]


def test_a_version_the_dependant_does_not_accept_is_refused(registry: Registry) -> None:
    """The running version of a required plugin must satisfy the specifier."""
    approved(registry)
    approved(registry, "lead-scorer", requires_plugins={"crm-sync": ">=2"})
    registry.enable("crm-sync", "acme", actor="owner")
    with pytest.raises(RequirementsError, match=r"crm-sync is version 1.0.0, not >=2"):
        registry.enable("lead-scorer", "acme", actor="owner")


def test_disabling_a_plugin_that_enabled_dependants_need_is_refused(registry: Registry) -> None:
    """disable names the dependants that still run for the tenant; other tenants are free."""
    approved(registry)
    approved(registry, "lead-scorer", requires_plugins={"crm-sync": ""})
    registry.enable("lead-scorer", "acme", actor="owner", with_requirements=True)
    registry.enable("crm-sync", "globex", actor="owner")
    with pytest.raises(
        DependencyError, match="cannot disable plugin 'crm-sync' for tenant 'acme'"
    ) as caught:
        registry.disable("crm-sync", "acme", actor="owner")
    assert caught.value.dependents == ("lead-scorer",)
    registry.disable("crm-sync", "globex", actor="owner")
    registry.disable("lead-scorer", "acme", actor="owner")
    registry.disable("crm-sync", "acme", actor="owner")
    assert registry.enabled_plugins("acme") == []


# -- suspension for one tenant ---------------------------------------------------------------


def test_a_tenant_suspension_stops_the_plugin_for_that_tenant_only(registry: Registry) -> None:
    """suspend(tenant=...) stops the plugin for one tenant; resume(tenant=...) brings it back."""
    approved(registry)
    for tenant in ("acme", "globex"):
        registry.enable("crm-sync", tenant, actor="owner")
    record = registry.suspend("crm-sync", actor="breaker", reason="5 failures", tenant="acme")
    assert (record.tenant, record.enabled, record.suspended_reason) == ("acme", True, "5 failures")
    assert (record.revision, record.changed_by) == (2, "breaker")
    assert registry.tenant("crm-sync", "acme") == record
    assert registry.plugin("crm-sync").status is PluginStatus.APPROVED
    assert registry.enabled_plugins("acme") == []
    assert registry.enabled_plugins("globex") == ["crm-sync"]
    [event] = registry.audit_log(action="suspend")
    assert (event.actor, event.tenant) == ("breaker", "acme")
    assert (event.before, event.after) == (
        {"suspended_reason": None},
        {"suspended_reason": "5 failures"},
    )

    resumed = registry.resume("crm-sync", actor="admin", tenant="acme")
    assert (resumed.suspended_reason, resumed.enabled, resumed.revision) == (None, True, 3)
    assert registry.enabled_plugins("acme") == ["crm-sync"]
    [event] = registry.audit_log(action="resume")
    assert (event.actor, event.tenant) == ("admin", "acme")
    assert (event.before, event.after) == (
        {"suspended_reason": "5 failures"},
        {"suspended_reason": None},
    )


def test_a_tenant_that_was_never_configured_can_be_suspended(registry: Registry) -> None:
    """Suspending a tenant with no record creates one, disabled and suspended."""
    approved(registry)
    record = registry.suspend("crm-sync", actor="admin", reason="abuse", tenant="initech")
    assert (record.enabled, record.suspended_reason, record.revision) == (False, "abuse", 1)
    registry.enable("crm-sync", "initech", actor="owner")
    assert registry.enabled_plugins("initech") == []


def test_tenant_suspension_needs_an_approved_plugin(registry: Registry) -> None:
    """Suspending or resuming for a tenant is a TransitionError unless the plugin is approved."""
    registry.install(manifest(), actor="dev", code_hash=HASH)
    count = audit_count(registry)
    with pytest.raises(TransitionError, match="it is pending: suspend for tenant 'acme'") as caught:
        registry.suspend("crm-sync", actor="admin", reason="r", tenant="acme")
    assert (caught.value.action, caught.value.status) == ("suspend", "pending")
    with pytest.raises(TransitionError, match="it is pending"):
        registry.resume("crm-sync", actor="admin", tenant="acme")
    registry.approve("crm-sync", actor="admin")
    registry.suspend("crm-sync", actor="admin", reason="r", tenant="acme")
    registry.suspend("crm-sync", actor="admin", reason="everywhere")
    count = audit_count(registry)
    with pytest.raises(TransitionError, match="it is suspended: resume for tenant 'acme'"):
        registry.resume("crm-sync", actor="admin", tenant="acme")
    with pytest.raises(TransitionError, match="it is suspended"):
        registry.suspend("crm-sync", actor="admin", reason="r", tenant="globex")
    with pytest.raises(PluginNotFound):
        registry.suspend("ghost", actor="admin", reason="r", tenant="acme")
    assert audit_count(registry) == count
    assert registry.tenant("crm-sync", "globex") is None


def test_tenant_suspension_refuses_empty_reason_and_tenant(registry: Registry) -> None:
    """An empty reason or tenant is a ValueError, and nothing is written."""
    approved(registry)
    count = audit_count(registry)
    with pytest.raises(ValueError, match="reason"):
        registry.suspend("crm-sync", actor="admin", reason=" ", tenant="acme")
    with pytest.raises(ValueError, match="tenant"):
        registry.suspend("crm-sync", actor="admin", reason="r", tenant="")
    with pytest.raises(ValueError, match="tenant"):
        registry.resume("crm-sync", actor="admin", tenant=" ")
    assert audit_count(registry) == count


def test_repeated_tenant_suspension_steps_write_nothing(registry: Registry) -> None:
    """Resuming a tenant not suspended, or suspending a suspended one, writes nothing."""
    approved(registry)
    registry.enable("crm-sync", "acme", actor="owner")
    count, generation = audit_count(registry), registry.storage.generation()
    stored = registry.tenant("crm-sync", "acme")
    assert registry.resume("crm-sync", actor="admin", tenant="acme") == stored
    unstored = registry.resume("crm-sync", actor="admin", tenant="globex")
    assert (unstored.tenant, unstored.revision, unstored.suspended_reason) == ("globex", 0, None)
    assert registry.tenant("crm-sync", "globex") is None
    assert (audit_count(registry), registry.storage.generation()) == (count, generation)

    first = registry.suspend("crm-sync", actor="breaker", reason="first", tenant="acme")
    again = registry.suspend("crm-sync", actor="admin", reason="second", tenant="acme")
    assert again == first
    assert again.suspended_reason == "first"
    assert audit_count(registry) == count + 1


def test_only_resume_lifts_a_tenant_suspension(registry: Registry) -> None:
    """Disable, enable, settings, a plugin-wide suspension and a reinstall keep it in place."""
    approved(registry)
    registry.enable("crm-sync", "acme", actor="owner")
    registry.suspend("crm-sync", actor="breaker", reason="timeouts", tenant="acme")
    registry.disable("crm-sync", "acme", actor="owner")
    registry.enable("crm-sync", "acme", actor="owner")
    registry.set_settings("crm-sync", "acme", {"label": "Sales"}, actor="owner")
    registry.grant("crm-sync", "acme", "export_leads", actor="admin")
    registry.suspend("crm-sync", actor="admin", reason="everywhere")
    registry.resume("crm-sync", actor="admin")
    registry.install(manifest(version="2.0.0"), actor="dev", code_hash=HASH, reinstall=True)
    registry.approve("crm-sync", actor="admin")
    record = registry.tenant("crm-sync", "acme")
    assert record is not None
    assert (record.enabled, record.suspended_reason) == (True, "timeouts")
    assert registry.enabled_plugins("acme") == []
    registry.resume("crm-sync", actor="admin", tenant="acme")
    assert registry.enabled_plugins("acme") == ["crm-sync"]


def test_uninstall_drops_tenant_suspensions(registry: Registry) -> None:
    """Uninstalling removes the tenant records, and with them their suspensions."""
    approved(registry)
    registry.suspend("crm-sync", actor="admin", reason="r", tenant="acme")
    registry.uninstall("crm-sync", actor="admin")
    assert registry.suspensions() == []
    approved(registry)
    assert registry.tenant("crm-sync", "acme") is None


def test_a_tenant_suspension_decided_on_a_stale_status_is_a_conflict(storage: Storage) -> None:
    """A tenant suspension decided before another writer suspended the plugin is refused."""
    other = Registry(storage, clock=Clock())
    approved(other)
    racing = Registry(
        Interfering(storage, lambda: other.suspend("crm-sync", actor="x", reason="r")),  # type: ignore[arg-type]
        clock=Clock(),
    )
    with pytest.raises(ConflictError):
        racing.suspend("crm-sync", actor="breaker", reason="r", tenant="acme")
    assert other.tenant("crm-sync", "acme") is None


# -- suspensions() ---------------------------------------------------------------------------


def test_suspensions_lists_plugin_wide_and_tenant_ones_sorted(storage: Storage) -> None:
    """suspensions(): by plugin, the plugin-wide one first, with the reason, time and actor."""
    clock = Clock()
    registry = Registry(storage, clock=clock)
    approved(registry, "mailer")
    approved(registry)
    registry.suspend("mailer", actor="breaker", reason="timeouts", tenant="globex")
    registry.suspend("mailer", actor="admin", reason="quota", tenant="acme")
    registry.suspend("crm-sync", actor="grace", reason="investigating")
    when = START + timedelta(minutes=next(clock.ticks) - 1)
    # A newer tenant-level suspend event must not be taken for the plugin-wide one.
    approved(registry, "zeta")
    registry.suspend("zeta", actor="breaker", reason="z", tenant="acme")
    registry.set_settings("mailer", "acme", {"label": "x"}, actor="owner")
    found = registry.suspensions()
    assert [(s.plugin_id, s.tenant, s.reason, s.by) for s in found] == [
        ("crm-sync", None, "investigating", "grace"),
        ("mailer", "acme", "quota", "owner"),  # the record's last change: the settings
        ("mailer", "globex", "timeouts", "breaker"),
        ("zeta", "acme", "z", "breaker"),
    ]
    assert found[0].since == when
    assert found[0].since == registry.audit_log(action="suspend", plugin_id="crm-sync")[0].at
    globex = registry.tenant("mailer", "globex")
    assert globex is not None
    assert found[2].since == globex.changed_at
    assert registry.suspensions("mailer") == found[1:3]
    assert registry.suspensions("ghost") == []
    registry.resume("mailer", actor="admin", tenant="acme")
    registry.resume("crm-sync", actor="admin")
    assert [(s.plugin_id, s.tenant) for s in registry.suspensions()] == [
        ("mailer", "globex"),
        ("zeta", "acme"),
    ]


def test_suspensions_of_a_plugin_suspended_with_and_without_tenants(registry: Registry) -> None:
    """A plugin suspended everywhere and for a tenant lists both, the plugin-wide one first."""
    approved(registry)
    registry.suspend("crm-sync", actor="breaker", reason="for acme", tenant="acme")
    registry.suspend("crm-sync", actor="admin", reason="everywhere")
    assert [(s.tenant, s.reason, s.by) for s in registry.suspensions("crm-sync")] == [
        (None, "everywhere", "admin"),
        ("acme", "for acme", "breaker"),
    ]


def test_a_suspension_without_its_audit_event_falls_back_to_the_install(storage: Storage) -> None:
    """A plugin stored as suspended with no suspend event dates from its install."""
    registry = Registry(storage, clock=Clock())
    approved(registry)
    record = registry.plugin("crm-sync")
    storage.commit(
        Change(
            plugin_id="crm-sync",
            plugin=attrs.evolve(
                record, status=PluginStatus.SUSPENDED, status_reason="imported", revision=3
            ),
            audit=AuditEvent(at=START, actor="migration", action="import", plugin_id="crm-sync"),
        )
    )
    assert registry.suspensions() == [
        Suspension(
            plugin_id="crm-sync",
            tenant=None,
            reason="imported",
            since=record.installed_at,
            by=record.installed_by,
        )
    ]


def test_a_suspension_dates_from_the_newest_plugin_wide_suspend_event(storage: Storage) -> None:
    """since/by skip newer tenant-level "suspend" events, however many an audit trail holds."""
    registry = Registry(storage, clock=Clock())
    approved(registry)
    registry.suspend("crm-sync", actor="breaker", reason="old")
    registry.resume("crm-sync", actor="admin")
    record = registry.suspend("crm-sync", actor="grace", reason="current")
    [event] = registry.audit_log(action="suspend", limit=1)
    # Events another tool wrote afterwards, tagged with tenants: more than one page of them.
    for minute in range(40):
        storage.commit(
            Change(
                plugin_id="crm-sync",
                plugin_revision=record.revision,
                audit=AuditEvent(
                    at=START + timedelta(hours=1, minutes=minute),
                    actor="tool",
                    action="suspend",
                    plugin_id="crm-sync",
                    tenant=f"tenant-{minute}",
                ),
            )
        )
    [found] = registry.suspensions()
    assert (found.reason, found.by, found.since) == ("current", "grace", event.at)


def test_suspension_is_a_frozen_record() -> None:
    """Suspension records compare by value and cannot be changed."""
    one = Suspension(plugin_id="p", tenant=None, reason="r", since=START, by="admin")
    assert one == Suspension(plugin_id="p", tenant=None, reason="r", since=START, by="admin")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        one.reason = "other"  # type: ignore[misc]


# -- on_change -------------------------------------------------------------------------------


def test_on_change_is_called_after_every_commit(storage: Storage) -> None:
    """on_change runs once per committed change, after it is stored; not for no-ops or refusals."""
    seen: list[int] = []
    registry = Registry(storage, clock=Clock(), on_change=lambda: seen.append(storage.generation()))
    approved(registry)
    registry.enable("crm-sync", "acme", actor="owner")
    registry.suspend("crm-sync", actor="breaker", reason="r", tenant="acme")
    assert seen == [1, 2, 3, 4]
    registry.enable("crm-sync", "acme", actor="owner")
    registry.resume("crm-sync", actor="admin", tenant="globex")
    with pytest.raises(TransitionError):
        registry.approve("crm-sync", actor="admin")
    with pytest.raises(SettingsError):
        registry.set_settings("crm-sync", "acme", {"limit": 0}, actor="owner")
    assert seen == [1, 2, 3, 4]


def test_on_change_is_not_called_when_the_commit_fails(storage: Storage) -> None:
    """A commit refused with ConflictError does not call on_change."""
    other = Registry(storage, clock=Clock())
    approved(other)
    calls: list[None] = []
    racing = Registry(
        Interfering(storage, lambda: other.suspend("crm-sync", actor="x", reason="r")),  # type: ignore[arg-type]
        clock=Clock(),
        on_change=lambda: calls.append(None),
    )
    with pytest.raises(ConflictError):
        racing.enable("crm-sync", "acme", actor="owner")
    assert calls == []


def test_a_failing_on_change_neither_undoes_nor_hides_the_change(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing on_change is logged with its traceback; the step returns and the change stays."""

    def broken() -> None:
        raise RuntimeError("cache server down")

    registry = Registry(storage, clock=Clock(), on_change=broken)
    with caplog.at_level(logging.ERROR, logger="services_ai_plugins.registry"):
        record = registry.install(manifest(), actor="dev", code_hash=HASH)
        approved_record = registry.approve("crm-sync", actor="admin")
    assert record.status is PluginStatus.PENDING
    assert approved_record.status is PluginStatus.APPROVED
    assert registry.plugin("crm-sync") == approved_record
    assert storage.generation() == 2
    failures = [r for r in caplog.records if r.name == "services_ai_plugins.registry"]
    assert len(failures) == 2
    assert failures[0].levelno == logging.ERROR
    assert failures[0].exc_info is not None
    assert "cache server down" in str(failures[0].exc_info[1])
    assert "'install' of plugin 'crm-sync'" in failures[0].getMessage()


# -- a tenant's view in one read -----------------------------------------------------------------


def test_a_tenant_view_holds_the_grants_and_settings_of_the_plugins_that_run_there(
    registry: Registry,
) -> None:
    """tenant_view: active = approved, enabled there and not suspended there; with each one's
    grants (optional ones granted there) and settings (set values, else defaults; read-only)."""
    approved(registry, "crm-sync")
    approved(registry, "lead-scorer")
    approved(registry, "idle-one")
    registry.install(manifest("pending-one"), actor="dev", code_hash=HASH)
    for plugin_id in ("crm-sync", "lead-scorer"):
        registry.enable(plugin_id, "acme", actor="admin")
    registry.grant("crm-sync", "acme", "export_leads", actor="admin")
    registry.set_settings("crm-sync", "acme", {"label": "A", "token": "s3cret"}, actor="admin")
    registry.suspend("lead-scorer", actor="ops", reason="noisy", tenant="acme")
    view = registry.tenant_view("acme")
    assert view.tenant == "acme"
    assert view.active == {"crm-sync"}
    assert view.grants == {"crm-sync": frozenset({"read_leads", "export_leads"})}
    assert dict(view.settings["crm-sync"]) == {"token": "s3cret", "limit": 10, "label": "A"}
    with pytest.raises(TypeError):
        view.settings["crm-sync"]["label"] = "B"  # type: ignore[index]
    assert registry.tenant_view("globex").active == frozenset()


def test_a_tenant_view_of_given_records_and_of_no_tenant(registry: Registry) -> None:
    """Given records only; running_only=False answers for every one given; no tenant: all
    active, approved grants only, no settings."""
    approved(registry, "crm-sync")
    approved(registry, "lead-scorer")
    registry.enable("crm-sync", "acme", actor="admin")
    registry.grant("lead-scorer", "acme", "export_leads", actor="admin")
    records = [registry.plugin("crm-sync"), registry.plugin("lead-scorer")]
    only = registry.tenant_view("acme", records[1:])
    assert (only.active, dict(only.grants)) == (frozenset(), {})
    every = registry.tenant_view("acme", records[1:], running_only=False)
    assert every.active == frozenset()
    assert every.grants == {"lead-scorer": frozenset({"read_leads", "export_leads"})}
    assert every.settings["lead-scorer"]["limit"] == 10
    none = registry.tenant_view(None, records)
    assert none.active == {"crm-sync", "lead-scorer"}
    assert set(none.grants.values()) == {frozenset({"read_leads"})}
    assert all(dict(values) == {} for values in none.settings.values())
    assert registry.manifest_of(records[0]) == manifest("crm-sync")
