"""A Hypothesis state machine drives the registry with random steps and checks its invariants.

Versions are part of the model: a new version of a running plugin is staged beside it,
approved or rejected, switched to, rolled back from; kept versions follow the policy.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from services_ai_plugins import (
    DependencyError,
    Manifest,
    MemoryStorage,
    PluginNotFound,
    PluginStatus,
    Registry,
    RequirementsError,
    SQLiteStorage,
    TransitionError,
    VersionError,
)
from services_ai_plugins.storage import Storage

PLUGINS = ("alpha", "bravo", "charlie")
TENANTS = ("acme", "globex")
REASONS = ("timeouts", "5 failures")
HASH = "a" * 64
CONFIGURABLE = {PluginStatus.PENDING, PluginStatus.APPROVED, PluginStatus.SUSPENDED}


#: How many earlier versions the registry keeps (its default policy).
KEEP = 3


def manifest(plugin_id: str, version: int = 1) -> Manifest:
    document: dict[str, Any] = {
        "id": plugin_id,
        "name": plugin_id.title(),
        "version": f"{version}.0",
        "optional_permissions": ["export"],
        "settings": [{"name": "limit", "type": "integer", "default": 1, "min": 0}],
    }
    if plugin_id == "bravo":
        document["requires_plugins"] = {"alpha": ""}
    return Manifest.from_dict(document)


def code(plugin_id: str, version: int) -> str:
    return f"{plugin_id}:{version}".encode().hex().ljust(64, "0")[:64]


class RegistryMachine(RuleBasedStateMachine):
    """The model: each plugin's status, and what each tenant has set or had suspended."""

    def __init__(self) -> None:
        super().__init__()
        self.storage = self.make_storage()
        self.registry = Registry(self.storage)
        self.status: dict[str, PluginStatus] = {}
        self.enabled: set[tuple[str, str]] = set()
        self.grants: set[tuple[str, str]] = set()
        self.limits: dict[tuple[str, str], int] = {}
        #: (plugin, tenant) -> the reason it is suspended for that tenant.
        self.suspended: dict[tuple[str, str], str] = {}
        self.changes = 0
        self.revisions: dict[str, int] = {}
        self.generation = 0
        #: Each plugin's running version, its staged one (version, approved) and kept ones.
        self.version: dict[str, int] = {}
        self.staged: dict[str, tuple[int, bool]] = {}
        self.kept: dict[str, list[int]] = {}
        #: The last version number used per plugin (each install takes the next).
        self.numbers: dict[str, int] = {}

    def make_storage(self) -> Storage:
        return MemoryStorage()

    def teardown(self) -> None:
        self.storage.close()

    # -- the model's predictions ----------------------------------------------------------------

    def expect(self, allowed: bool, call: Any, *, changes: bool = True) -> bool:
        """Run ``call``; it must succeed exactly when the model allows it."""
        before = self.audit_count()
        try:
            call()
        except (
            TransitionError,
            DependencyError,
            PluginNotFound,
            RequirementsError,
            VersionError,
        ) as error:
            assert not allowed, f"refused a step the model allows: {error}"
            assert self.audit_count() == before, "a refused step wrote an audit event"
            return False
        assert allowed, "performed a step the model forbids"
        if changes:
            self.changes += 1
        return True

    def audit_count(self) -> int:
        return len(self.registry.audit_log(limit=1_000_000))

    def running(self, plugin_id: str, tenant: str) -> bool:
        return (
            (plugin_id, tenant) in self.enabled
            and (plugin_id, tenant) not in self.suspended
            and self.status[plugin_id] is PluginStatus.APPROVED
        )

    def dependents(self, plugin_id: str) -> bool:
        return (
            plugin_id == "alpha"
            and self.status.get("bravo") is PluginStatus.APPROVED
            and any((p, t) in self.enabled for p, t in self.enabled if p == "bravo")
        )

    # -- rules ----------------------------------------------------------------------------------

    @rule(plugin_id=st.sampled_from(PLUGINS), reinstall=st.booleans())
    def install(self, plugin_id: str, reinstall: bool) -> None:
        status = self.status.get(plugin_id)
        fresh = status in (None, PluginStatus.REJECTED, PluginStatus.UNINSTALLED)
        number = self.numbers.get(plugin_id, 0) + 1
        call = lambda: self.registry.install(  # noqa: E731 - a deferred call
            manifest(plugin_id, number),
            actor="dev",
            code_hash=code(plugin_id, number),
            reinstall=reinstall,
        )
        if not self.expect(fresh or reinstall, call):
            return
        self.numbers[plugin_id] = number
        if fresh or status is PluginStatus.PENDING:
            self.status[plugin_id] = PluginStatus.PENDING
            self.version[plugin_id] = number
            self.staged.pop(plugin_id, None)
            if fresh:
                self.kept[plugin_id] = []
        else:  # running: staged beside it
            self.staged[plugin_id] = (number, False)

    @rule(plugin_id=st.sampled_from(PLUGINS))
    def approve(self, plugin_id: str) -> None:
        status = self.status.get(plugin_id)
        staged = self.staged.get(plugin_id)
        if staged is not None:
            allowed = not staged[1]
            if self.expect(allowed, lambda: self.registry.approve(plugin_id, actor="admin")):
                self.staged[plugin_id] = (staged[0], True)
            return
        allowed = status is PluginStatus.PENDING
        if self.expect(allowed, lambda: self.registry.approve(plugin_id, actor="admin")):
            self.status[plugin_id] = PluginStatus.APPROVED

    @precondition(lambda self: bool(self.status))
    @rule(plugin_id=st.sampled_from(PLUGINS))
    def reject(self, plugin_id: str) -> None:
        staged = self.staged.get(plugin_id)
        call = lambda: self.registry.reject(plugin_id, actor="admin", reason="no")  # noqa: E731
        if staged is not None:
            if self.expect(not staged[1], call):
                del self.staged[plugin_id]
            return
        allowed = self.status.get(plugin_id) is PluginStatus.PENDING
        if self.expect(allowed, call):
            self.status[plugin_id] = PluginStatus.REJECTED

    @rule(plugin_id=st.sampled_from(PLUGINS))
    def switch(self, plugin_id: str) -> None:
        """What a host's refresh does: switch to the approved staged version of a plugin."""
        staged = self.staged.get(plugin_id)
        due = (
            staged is not None and staged[1] and self.status.get(plugin_id) is PluginStatus.APPROVED
        )
        plan = self.registry.prepare_upgrade(plugin_id)
        assert (plan is not None) == due
        if plan is None or staged is None:
            return
        assert plan.problem is None
        self.registry.complete_upgrade(plan, None, actor="host")
        self.changes += 1
        self._leave(plugin_id, arriving=staged[0])
        self.version[plugin_id] = staged[0]
        del self.staged[plugin_id]

    @rule(plugin_id=st.sampled_from(PLUGINS), newest=st.booleans())
    def rollback(self, plugin_id: str, newest: bool) -> None:
        status = self.status.get(plugin_id)
        kept = self.kept.get(plugin_id, [])
        target = kept[-1] if kept and newest else (kept[0] if kept else None)
        allowed = status in (PluginStatus.APPROVED, PluginStatus.SUSPENDED) and target is not None
        to_version = None if newest else (f"{target}.0" if target is not None else "1.0")
        call = lambda: self.registry.rollback(plugin_id, to_version, actor="admin")  # noqa: E731
        if not self.expect(allowed, call):
            return
        assert target is not None
        others = [v for v in self.kept[plugin_id] if v != target]
        self.kept[plugin_id] = [*others, self.version[plugin_id]]  # no trimming at a rollback
        self.version[plugin_id] = target
        self.staged.pop(plugin_id, None)

    def _leave(self, plugin_id: str, *, arriving: int) -> None:
        """The running version is kept as it leaves; the policy forgets the oldest."""
        others = [v for v in self.kept[plugin_id] if v not in (self.version[plugin_id], arriving)]
        self.kept[plugin_id] = [
            *others[max(0, len(others) - (KEEP - 1)) :],
            self.version[plugin_id],
        ]

    @rule(plugin_id=st.sampled_from(PLUGINS))
    def suspend(self, plugin_id: str) -> None:
        allowed = self.status.get(plugin_id) is PluginStatus.APPROVED
        call = lambda: self.registry.suspend(plugin_id, actor="breaker", reason="fails")  # noqa: E731
        if self.expect(allowed, call):
            self.status[plugin_id] = PluginStatus.SUSPENDED

    @rule(plugin_id=st.sampled_from(PLUGINS))
    def resume(self, plugin_id: str) -> None:
        allowed = self.status.get(plugin_id) is PluginStatus.SUSPENDED
        if self.expect(allowed, lambda: self.registry.resume(plugin_id, actor="admin")):
            self.status[plugin_id] = PluginStatus.APPROVED

    @rule(
        plugin_id=st.sampled_from(PLUGINS),
        tenant=st.sampled_from(TENANTS),
        reason=st.sampled_from(REASONS),
    )
    def suspend_for_tenant(self, plugin_id: str, tenant: str, reason: str) -> None:
        allowed = self.status.get(plugin_id) is PluginStatus.APPROVED
        key = (plugin_id, tenant)
        new = key not in self.suspended
        call = lambda: self.registry.suspend(  # noqa: E731 - a deferred call
            plugin_id, actor="breaker", reason=reason, tenant=tenant
        )
        if self.expect(allowed, call, changes=new):
            self.suspended.setdefault(key, reason)  # a second suspension keeps the first reason

    @rule(plugin_id=st.sampled_from(PLUGINS), tenant=st.sampled_from(TENANTS))
    def resume_for_tenant(self, plugin_id: str, tenant: str) -> None:
        allowed = self.status.get(plugin_id) is PluginStatus.APPROVED
        key = (plugin_id, tenant)
        call = lambda: self.registry.resume(plugin_id, actor="admin", tenant=tenant)  # noqa: E731
        if self.expect(allowed, call, changes=key in self.suspended):
            self.suspended.pop(key, None)

    @rule(plugin_id=st.sampled_from(PLUGINS), tenant=st.sampled_from(TENANTS))
    def enable(self, plugin_id: str, tenant: str) -> None:
        # bravo requires alpha: it may run for a tenant only where alpha runs.
        requirements_met = plugin_id != "bravo" or self.running("alpha", tenant)
        allowed = self.status.get(plugin_id) is PluginStatus.APPROVED and requirements_met
        new = (plugin_id, tenant) not in self.enabled
        call = lambda: self.registry.enable(plugin_id, tenant, actor="owner")  # noqa: E731
        if self.expect(allowed, call, changes=new):
            self.enabled.add((plugin_id, tenant))

    @rule(plugin_id=st.sampled_from(PLUGINS), tenant=st.sampled_from(TENANTS))
    def disable(self, plugin_id: str, tenant: str) -> None:
        needed = plugin_id == "alpha" and self.running("bravo", tenant)
        allowed = self.status.get(plugin_id) in CONFIGURABLE and not needed
        new = (plugin_id, tenant) in self.enabled
        call = lambda: self.registry.disable(plugin_id, tenant, actor="owner")  # noqa: E731
        if self.expect(allowed, call, changes=new):
            self.enabled.discard((plugin_id, tenant))

    @rule(
        plugin_id=st.sampled_from(PLUGINS),
        tenant=st.sampled_from(TENANTS),
        grant=st.booleans(),
    )
    def grant_or_revoke(self, plugin_id: str, tenant: str, grant: bool) -> None:
        allowed = self.status.get(plugin_id) in CONFIGURABLE
        key = (plugin_id, tenant)
        new = (key not in self.grants) if grant else (key in self.grants)
        step = self.registry.grant if grant else self.registry.revoke
        call = lambda: step(plugin_id, tenant, "export", actor="admin")  # noqa: E731
        if self.expect(allowed, call, changes=new):
            (self.grants.add if grant else self.grants.discard)(key)

    @rule(
        plugin_id=st.sampled_from(PLUGINS),
        tenant=st.sampled_from(TENANTS),
        limit=st.integers(0, 3),
    )
    def set_limit(self, plugin_id: str, tenant: str, limit: int) -> None:
        allowed = self.status.get(plugin_id) in CONFIGURABLE
        key = (plugin_id, tenant)
        new = self.limits.get(key) != limit
        call = lambda: self.registry.set_settings(  # noqa: E731
            plugin_id, tenant, {"limit": limit}, actor="owner"
        )
        if self.expect(allowed, call, changes=new):
            self.limits[key] = limit

    @rule(plugin_id=st.sampled_from(PLUGINS))
    def uninstall(self, plugin_id: str) -> None:
        status = self.status.get(plugin_id)
        allowed = status is not None and status is not PluginStatus.UNINSTALLED
        if allowed and self.dependents(plugin_id):
            try:
                self.registry.uninstall(plugin_id, actor="admin")
            except DependencyError as error:
                assert error.dependents == ("bravo",)
                return
            raise AssertionError("uninstalled a plugin that enabled plugins require")
        if self.expect(allowed, lambda: self.registry.uninstall(plugin_id, actor="admin")):
            self.status[plugin_id] = PluginStatus.UNINSTALLED
            self.staged.pop(plugin_id, None)
            for table in (self.enabled, self.grants):
                table.difference_update({(plugin_id, t) for t in TENANTS})
            for tenant in TENANTS:
                self.limits.pop((plugin_id, tenant), None)
                self.suspended.pop((plugin_id, tenant), None)

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def only_approved_enabled_unsuspended_plugins_run(self) -> None:
        """enabled_plugins(t) is exactly approved & enabled for t & not suspended for t."""
        for tenant in TENANTS:
            running = self.registry.enabled_plugins(tenant)
            expected = sorted(
                p
                for p, t in self.enabled
                if t == tenant
                and self.status[p] is PluginStatus.APPROVED
                and (p, t) not in self.suspended
            )
            assert running == expected
            for plugin_id in running:
                assert self.registry.plugin(plugin_id).status is PluginStatus.APPROVED
                record = self.registry.tenant(plugin_id, tenant)
                assert record is not None
                assert record.suspended_reason is None

    @invariant()
    def suspensions_match_the_model(self) -> None:
        """suspensions() lists the suspended plugins and the tenant suspensions, sorted."""
        expected = [
            (p, None, "fails")
            for p, s in sorted(self.status.items())
            if s is PluginStatus.SUSPENDED
        ]
        expected += [(p, t, reason) for (p, t), reason in self.suspended.items()]
        expected.sort(key=lambda e: (e[0], e[1] is not None, e[1] or ""))
        found = [(s.plugin_id, s.tenant, s.reason) for s in self.registry.suspensions()]
        assert found == expected

    @invariant()
    def every_change_has_its_audit_event(self) -> None:
        """The audit trail holds exactly one event per change made."""
        assert self.audit_count() == self.changes

    @invariant()
    def revisions_and_the_counter_only_grow(self) -> None:
        """Plugin revisions never go back; the change counter moves with every change."""
        for record in self.registry.plugins():
            assert record.revision >= self.revisions.get(record.id, 0)
            self.revisions[record.id] = record.revision
            assert record.status is self.status[record.id]
        generation = self.storage.generation()
        assert generation == self.changes
        assert generation >= self.generation
        self.generation = generation

    @invariant()
    def versions_match_the_model(self) -> None:
        """The running, staged and kept versions are what the steps made them."""
        for plugin_id in self.status:
            record = self.registry.plugin(plugin_id)
            assert record.version == f"{self.version[plugin_id]}.0"
            assert record.code_hash == code(plugin_id, self.version[plugin_id])
            staged = self.staged.get(plugin_id)
            if staged is None:
                assert record.staged is None
            else:
                assert record.staged is not None
                assert record.staged.version == f"{staged[0]}.0"
                assert (record.staged.approved_at is not None) == staged[1]
            kept = [k.version for k in self.registry.kept_versions(plugin_id)]
            assert kept == [f"{v}.0" for v in self.kept.get(plugin_id, [])]

    @invariant()
    def settings_match_the_model(self) -> None:
        """Stored settings and grants are what the successful steps set."""
        for plugin_id, status in self.status.items():
            if status is PluginStatus.UNINSTALLED:
                continue
            for tenant in TENANTS:
                limit = self.limits.get((plugin_id, tenant), 1)
                assert self.registry.get_settings(plugin_id, tenant) == {"limit": limit}
                record = self.registry.tenant(plugin_id, tenant)
                grants = record.optional_grants if record is not None else ()
                assert grants == (("export",) if (plugin_id, tenant) in self.grants else ())
                reason = record.suspended_reason if record is not None else None
                assert reason == self.suspended.get((plugin_id, tenant))


class SQLiteRegistryMachine(RegistryMachine):
    """The same machine over a SQLite file."""

    def make_storage(self) -> Storage:
        self.folder = tempfile.TemporaryDirectory()
        return SQLiteStorage(Path(self.folder.name) / "registry.db")

    def teardown(self) -> None:
        super().teardown()
        self.folder.cleanup()


TestRegistryMachine = RegistryMachine.TestCase
TestRegistryMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestSQLiteRegistryMachine = SQLiteRegistryMachine.TestCase
TestSQLiteRegistryMachine.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None
)
