"""The plugin lifecycle over a storage backend: every step checked, audited and atomic."""

from __future__ import annotations

import copy
import logging
import os
import socket
import types
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final, final, overload

import attrs
from packaging.version import InvalidVersion, Version

from ._dependencies import enable_order
from ._json import JSONValue
from ._manifest import Manifest
from ._permissions import PermissionCatalogue
from ._secrets import SecretBox, SecretKeys, is_sealed
from ._settings import SettingType
from ._storage._protocol import (
    AccessQuery,
    AccessRecord,
    AccessStorage,
    ArtifactStore,
    AuditEvent,
    AuditQuery,
    Change,
    FailureRecord,
    KeptVersion,
    PluginRecord,
    PluginStatus,
    SourceKind,
    StagedVersion,
    Storage,
    StorageArtifacts,
    TenantRecord,
    VersionRecord,
    failure_of,
)
from ._versions import (
    FileEntry,
    UpgradePolicy,
    VersionDiff,
    VersionSide,
    archive_files,
    asks_for_nothing_new,
    diff_versions,
    folder_files,
    migrate_settings,
)
from .errors import (
    ConflictError,
    DependencyError,
    PluginError,
    PluginNotFound,
    Problem,
    RequirementsError,
    SecretKeyError,
    SettingsError,
    StorageError,
    TransitionError,
    UpgradeError,
    VersionError,
)

__all__ = ["Registry", "RegistryEvent", "Suspension", "TenantView", "UpgradePlan"]

#: How many of a plugin's newest unresolved failures are searched for a load failure.
_FAILURES_READ: Final = 200

_logger = logging.getLogger("services_ai_plugins.registry")

#: What a secret setting's value is replaced with in audit records.
MASK: Final = "********"

#: Where the registry reads the time of each change (timezone-aware).
Clock = Callable[[], datetime]
#: Called with no arguments after each change the registry commits.
ChangeCallback = Callable[[], None]
#: Called with each change the registry commits, after ``ChangeCallback``.
EventCallback = Callable[["RegistryEvent"], None]

# The actions each status allows; TransitionError lists them.
_ALLOWED: Final[Mapping[PluginStatus, tuple[str, ...]]] = {
    PluginStatus.PENDING: (
        "approve", "reject", "reinstall", "uninstall", "set settings", "grant", "revoke", "disable",
    ),
    PluginStatus.APPROVED: (
        "enable", "disable", "suspend", "reinstall", "rollback", "uninstall", "set settings",
        "grant", "revoke",
    ),
    PluginStatus.SUSPENDED: (
        "resume", "disable", "reinstall", "rollback", "uninstall", "set settings", "grant",
        "revoke",
    ),
    PluginStatus.REJECTED: ("install", "uninstall"),
    PluginStatus.UNINSTALLED: ("install",),
}  # fmt: skip


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@attrs.frozen(kw_only=True)
class Suspension:
    """One suspension in force: a plugin stopped everywhere, or for one tenant.

    :meth:`Registry.suspensions` lists them, for an admin page.
    """

    plugin_id: str
    #: The tenant the plugin is suspended for, or None: suspended everywhere.
    tenant: str | None
    #: Why it was suspended.
    reason: str
    #: When it was suspended.
    since: datetime
    #: Who suspended it (the ``actor`` of the step).
    by: str


@attrs.frozen(kw_only=True)
class RegistryEvent:
    """One change the registry committed, as its ``on_event`` listener hears of it.

    A host fires the lifecycle hooks from these (see :class:`PluginHost`).
    """

    #: The step, as its audit event names it: ``"install"``, ``"approve"``,
    #: ``"enable"``, ``"disable"``, ``"set settings"``, ``"uninstall"``, ...
    action: str
    plugin_id: str
    #: The tenant of a tenant step (enable, settings, ...), else None.
    tenant: str | None
    #: For ``"set settings"``: each setting whose value changed, to its new value
    #: (its default when it was reset), secret values masked; else empty.
    changed: Mapping[str, JSONValue] = attrs.field(factory=dict)


_NO_SETTINGS: Final[Mapping[str, JSONValue]] = types.MappingProxyType({})


@attrs.frozen(kw_only=True)
class UpgradePlan:
    """An approved staged version, ready for its switch (:meth:`Registry.prepare_upgrade`).

    Read at one revision of the plugin: :meth:`Registry.complete_upgrade`
    commits only if nothing changed since (else :class:`ConflictError`).
    """

    #: The plugin's record as read (its ``staged`` is the version to switch to).
    record: PluginRecord
    staged: StagedVersion
    #: The running version's manifest, and the staged one's.
    old_manifest: Manifest
    manifest: Manifest
    #: Every tenant record of the plugin, as read.
    tenants: Mapping[str, TenantRecord]
    #: Each tenant's stored settings migrated to the new schema (secrets still sealed).
    stored: Mapping[str, Mapping[str, JSONValue]]
    #: The tenants ``plugin_upgraded`` runs for: enabled there and not suspended there.
    running: tuple[str, ...]
    #: Why the switch cannot be made (a tenant's settings cannot be migrated), or None.
    problem: UpgradeError | None = None

    @property
    def plugin_id(self) -> str:
        return self.record.id

    @property
    def from_version(self) -> str:
        return self.record.version

    @property
    def to_version(self) -> str:
        return self.staged.version


@attrs.frozen(kw_only=True)
class TenantView:
    """What plugins may do for one tenant, read at once (:meth:`Registry.tenant_view`)."""

    #: The tenant (None: no tenant; every plugin asked about is active, with no settings).
    tenant: str | None
    #: The plugins, of those asked about, that run for the tenant: approved, enabled there
    #: and not suspended there.
    active: frozenset[str]
    #: Each plugin's permissions for the tenant (see :meth:`Registry.grants`).
    grants: Mapping[str, frozenset[str]]
    #: Each plugin's settings for the tenant, read-only (see :meth:`Registry.get_settings`;
    #: a secret that cannot be decrypted reads as not set, and is logged).
    settings: Mapping[str, Mapping[str, JSONValue]]


#: The audit action of a failure notice (:meth:`Registry.notice_failing`).
FAILING: Final = "failing"
#: The most failure messages a notice's digest keeps (the newest).
NOTICE_MESSAGES: Final = 5
#: The most characters a notice keeps of each failure's type and of its message.
NOTICE_MESSAGE: Final = 300
#: The most failures one notice reads back.
_NOTICE_READ: Final = 1000


@final
class Registry:
    """The lifecycle state machine of plugins, over any :class:`Storage`.

    ::

        install ─▶ pending ─approve─▶ approved ─suspend─▶ suspended
                      │                 │  ▲                 │
                      └─reject─▶ rejected  └─────resume──────┘
        enable/disable per tenant: approved only (disable: always)
        suspend/resume per tenant (tenant=...): approved only
        uninstall: any state ─▶ uninstalled (history and audit kept)

    A plugin runs for a tenant while it is approved, enabled for the tenant
    and not suspended for it.

    Every method that changes something takes the ``actor`` (who asks) and
    writes exactly one audit event in the same transaction as the change. A
    step that would change nothing (enabling an enabled plugin) writes
    nothing. Concurrent writers never overwrite each other: a step decided on
    a stale read raises :class:`ConflictError`; re-read and retry.

    ``clock`` gives the time of each change (timezone-aware). ``on_change``,
    if given, is called with no arguments after every change the registry
    commits (not after a step that writes nothing or fails), so a host can
    mark its caches stale at once. ``on_event``, if given, is called next,
    in the same thread, with a :class:`RegistryEvent` saying what changed. An
    exception either raises is logged on the ``services_ai_plugins.registry``
    logger; it neither undoes nor hides the committed change, and the step
    returns as usual.

    ``secret_keys`` are the Fernet keys that encrypt ``secret`` settings at
    rest, newest first (the newest encrypts, every one decrypts); default:
    ``$SERVICES_AI_PLUGINS_SECRET_KEYS``, comma-separated. They need the
    ``secrets`` extra (``cryptography``); see :meth:`set_settings` and
    :meth:`rotate_secrets`.

    :raises PluginNotFound: for an id that was never installed.
    :raises TransitionError: for a step the plugin's state does not allow.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        clock: Clock = _utcnow,
        on_change: ChangeCallback | None = None,
        secret_keys: SecretKeys | None = None,
        on_event: EventCallback | None = None,
        upgrades: UpgradePolicy | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        self._secrets: Final = SecretBox(secret_keys)
        self._upgrades: Final = upgrades if upgrades is not None else UpgradePolicy()
        self._artifacts: Final[ArtifactStore] = (
            artifacts if artifacts is not None else StorageArtifacts(storage)
        )
        # The plaintext secrets already warned about, so each is logged once.
        self._plaintext_warned: set[tuple[str, str, str]] = set()
        self._storage: Final = storage
        self._clock: Final = clock
        self._on_change: Final = on_change
        self._on_event: Final = on_event
        self._manifests: dict[tuple[str, int], Manifest] = {}
        self._declarations: dict[tuple[str, int], tuple[frozenset[str], frozenset[str]]] = {}

    @property
    def storage(self) -> Storage:
        """The storage backend."""
        return self._storage

    @property
    def upgrades(self) -> UpgradePolicy:
        """What a new version of an approved plugin needs, and how many versions are kept."""
        return self._upgrades

    @property
    def artifacts(self) -> ArtifactStore:
        """Where uploaded archives are kept, by SHA-256 (default: in :attr:`storage`)."""
        return self._artifacts

    # -- plugin-level steps ----------------------------------------------------------------------

    def install(
        self,
        manifest: Manifest,
        *,
        actor: str,
        code_hash: str,
        source: SourceKind = SourceKind.FOLDER,
        package_path: str | None = None,
        reinstall: bool = False,
        downgrade: bool = False,
        artifact: str | None = None,
    ) -> PluginRecord:
        """Record a new plugin, or a new version of one.

        A new plugin (or one rejected or uninstalled before) waits for approval
        (pending). A new version of a pending plugin replaces it, with
        ``reinstall=True``, and waits for approval again.

        A new version of an approved or suspended plugin (``reinstall=True``)
        is **staged**: installed beside the running version, which keeps
        serving every tenant with its settings while the new one waits for
        :meth:`approve` (or is approved at once by the upgrade policy when it
        asks for nothing new: see :class:`UpgradePolicy`). Once approved, the
        first host that refreshes makes the switch (:meth:`prepare_upgrade`,
        :meth:`complete_upgrade`): it migrates each tenant's settings, runs the
        plugin's ``plugin_upgraded`` and commits, or rolls back
        (:meth:`fail_upgrade`). A staged version is replaced by the next one
        installed.

        Versions are compared with PEP 440: a version older than the installed
        one is refused without ``downgrade=True``; the same version is allowed
        (a rebuilt package) unless its code hash is the same too.
        ``artifact`` is the SHA-256 of the uploaded archive in
        :attr:`artifacts`, from which every host materialises the code.

        When a pending plugin is replaced, optional permissions granted to an
        earlier version that the new manifest no longer lists in
        ``optional_permissions`` are revoked for every tenant, each with a
        ``revoke`` audit event by ``actor`` naming them (``dropped``) and the
        version that no longer declares them (a staged version's are dropped
        at its switch).

        :raises TransitionError: a plugin installed without ``reinstall=True``.
        :raises VersionError: an older version without ``downgrade=True``, or
            the code already installed.
        """
        now = self._clock()
        current = self.check_install(manifest, reinstall=reinstall, downgrade=downgrade)
        version = str(manifest.version)
        if current is not None and current.status not in _REPLACEABLE:
            if code_hash == current.code_hash and version == current.version:
                raise VersionError(
                    manifest.id, version, "this code is installed already (same code hash)"
                )
            if current.status is not PluginStatus.PENDING:
                return self._stage(
                    current,
                    manifest,
                    actor=actor,
                    now=now,
                    code_hash=code_hash,
                    source=source,
                    package_path=package_path,
                    artifact=artifact,
                )
        record = PluginRecord(
            id=manifest.id,
            name=manifest.name,
            version=version,
            status=PluginStatus.PENDING,
            manifest=manifest.to_dict(),
            code_hash=code_hash,
            source=source,
            package_path=package_path,
            installed_at=now,
            installed_by=actor,
            revision=current.revision + 1 if current is not None else 1,
            artifact=artifact,
        )
        before: dict[str, JSONValue] | None = None
        if current is not None:
            before = {"status": current.status.value, "version": current.version}
        action = "reinstall" if current is not None and reinstall else "install"
        after: dict[str, JSONValue] = {
            "status": "pending",
            "version": version,
            "code_hash": code_hash,
        }
        if artifact is not None:
            after["artifact"] = artifact
        self._commit(
            Change(
                plugin_id=manifest.id,
                plugin=record,
                version=self._history(manifest, code_hash, actor, now),
                audit=self._audit(now, actor, action, manifest.id, before=before, after=after),
            )
        )
        if current is not None:
            self._drop_undeclared(manifest.id, actor)
        return record

    def check_install(
        self, manifest: Manifest, *, reinstall: bool = False, downgrade: bool = False
    ) -> PluginRecord | None:
        """Whether :meth:`install` would take ``manifest`` (its code aside): raise if not.

        Returns the plugin's current record (None when it was never installed).
        Installers call it before they write any file, so a refused version
        never touches the running one's folder.

        :raises TransitionError: installed, and ``reinstall`` not given.
        :raises VersionError: older than the installed version without
            ``downgrade``; or the version a running plugin runs (a new version
            needs a new number, as the running one's folder is in use).
        """
        current = self._storage.get_plugin(manifest.id)
        if current is None or current.status in _REPLACEABLE:
            return current
        if not reinstall:
            raise TransitionError(
                manifest.id,
                "install",
                current.status.value,
                _ALLOWED[current.status],
                reason="it is already installed; pass reinstall=True to install a new version",
            )
        new = manifest.version
        if new < Version(current.version) and not downgrade:
            raise VersionError(
                manifest.id,
                str(new),
                f"older than the installed version {current.version}; pass downgrade=True "
                "(CLI: --downgrade) to install it anyway",
            )
        if str(new) == current.version and current.status in _RUNNING:
            raise VersionError(
                manifest.id,
                str(new),
                "this version runs already; a new version needs a new version number",
            )
        return current

    def _history(
        self, manifest: Manifest, code_hash: str, actor: str, now: datetime
    ) -> VersionRecord:
        return VersionRecord(
            plugin_id=manifest.id,
            version=str(manifest.version),
            code_hash=code_hash,
            changelog=manifest.changelog,
            installed_at=now,
            installed_by=actor,
        )

    def _stage(
        self,
        current: PluginRecord,
        manifest: Manifest,
        *,
        actor: str,
        now: datetime,
        code_hash: str,
        source: SourceKind,
        package_path: str | None,
        artifact: str | None,
    ) -> PluginRecord:
        """Install a new version of a running plugin beside it (see :meth:`install`)."""
        staged = StagedVersion(
            version=str(manifest.version),
            manifest=manifest.to_dict(),
            code_hash=code_hash,
            source=source,
            package_path=package_path,
            artifact=artifact,
            installed_at=now,
            installed_by=actor,
        )
        record = attrs.evolve(current, staged=staged, revision=current.revision + 1)
        before: dict[str, JSONValue] = {"version": current.version}
        if current.staged is not None:
            before["staged"] = current.staged.version
        after: dict[str, JSONValue] = {"staged": staged.version, "code_hash": code_hash}
        if artifact is not None:
            after["artifact"] = artifact
        self._commit(
            Change(
                plugin_id=current.id,
                plugin=record,
                version=self._history(manifest, code_hash, actor, now),
                audit=self._audit(now, actor, "stage", current.id, before=before, after=after),
            )
        )
        if self._upgrades.auto_approve and not asks_for_nothing_new(
            self._manifest(current), manifest
        ):
            try:
                return self._approve_staged(record, actor=_POLICY, auto=True)
            except ConflictError:  # changed meanwhile (an admin was quicker): theirs stands
                return self.plugin(current.id)
        return record

    def approve(self, plugin_id: str, *, actor: str) -> PluginRecord:
        """Approve a pending plugin, granting the permissions its manifest declares; or
        approve the staged new version of a running one (see :meth:`install`).

        The audit event records what was approved: the version, its code hash
        and permissions, and for a staged version the summary of its
        :meth:`diff` against the running one.
        """
        found = self.plugin(plugin_id)
        if found.staged is not None and found.status in _RUNNING:
            if found.staged.approved_at is not None:
                raise TransitionError(
                    plugin_id,
                    "approve",
                    found.status.value,
                    _ALLOWED[found.status],
                    reason=f"version {found.staged.version} is approved already; "
                    "a host switches to it at its next refresh",
                )
            return self._approve_staged(found, actor=actor, auto=False)
        current = self._require(plugin_id, "approve", PluginStatus.PENDING)
        now = self._clock()
        manifest = self._manifest(current)
        granted = tuple(manifest.permissions)
        extra: dict[str, JSONValue] = {
            "granted_permissions": list(granted),
            "version": current.version,
            "code_hash": current.code_hash,
        }
        # What tenants hold besides, as the plugin will see it: only what this manifest declares.
        shown: dict[str, JSONValue] = {}
        for record in self._storage.list_tenants(plugin_id):
            held = [p for p in record.optional_grants if p in manifest.optional_permissions]
            if held:
                shown[record.tenant] = list(held)
        if shown:
            extra["optional_grants"] = shown
        return self._set_status(
            current,
            PluginStatus.APPROVED,
            actor=actor,
            action="approve",
            now=now,
            approved_at=now,
            approved_by=actor,
            granted_permissions=granted,
            status_reason=None,
            extra=extra,
        )

    def reject(self, plugin_id: str, *, actor: str, reason: str) -> PluginRecord:
        """Refuse a pending plugin, saying why; only a new install brings it back.

        For a running plugin with a staged version waiting for approval, that
        version is refused and dropped; the running one goes on.
        """
        _require_text(reason, "reason")
        found = self.plugin(plugin_id)
        if found.staged is not None and found.status in _RUNNING:
            if found.staged.approved_at is not None:
                raise TransitionError(
                    plugin_id,
                    "reject",
                    found.status.value,
                    _ALLOWED[found.status],
                    reason=f"version {found.staged.version} is approved already",
                )
            return self._drop_staged(found, actor=actor, action="reject", reason=reason)
        current = self._require(plugin_id, "reject", PluginStatus.PENDING)
        return self._set_status(
            current, PluginStatus.REJECTED, actor=actor, action="reject", status_reason=reason
        )

    @overload
    def suspend(
        self, plugin_id: str, *, actor: str, reason: str, tenant: None = None
    ) -> PluginRecord: ...

    @overload
    def suspend(self, plugin_id: str, *, actor: str, reason: str, tenant: str) -> TenantRecord: ...

    @overload
    def suspend(
        self, plugin_id: str, *, actor: str, reason: str, tenant: str | None = None
    ) -> PluginRecord | TenantRecord: ...

    def suspend(
        self, plugin_id: str, *, actor: str, reason: str, tenant: str | None = None
    ) -> PluginRecord | TenantRecord:
        """Stop an approved plugin everywhere, or for one ``tenant``, until :meth:`resume`.

        Without ``tenant`` the plugin's status becomes suspended (``reason`` in
        its ``status_reason``): it runs nowhere, and its tenants' activations
        and settings wait for :meth:`resume`. Returns the plugin's record.

        With ``tenant`` the plugin stays approved and stops for that tenant
        only: the tenant's record gets ``suspended_reason`` (it is created if
        the tenant has none). Enabling or disabling the plugin for the tenant
        leaves the suspension in place; only ``resume(..., tenant=...)``
        lifts it. Returns the tenant's record. Suspending a tenant that is
        already suspended writes nothing and keeps the first reason.

        A circuit breaker stopping a plugin for the tenant it fails for::

            registry.suspend("crm-sync", actor="breaker", reason="5 failures", tenant="acme")
            registry.enabled_plugins("acme")  # no 'crm-sync' until resumed for acme

        :raises ValueError: for an empty ``reason``, ``actor`` or ``tenant``.
        :raises TransitionError: unless the plugin is approved.
        :raises PluginNotFound: for an id that was never installed.
        """
        _require_text(reason, "reason")
        if tenant is not None:
            _require_text(actor, "actor")
            _require_text(tenant, "tenant")
            plugin = self._require_for_tenant(plugin_id, "suspend", tenant)
            stored = self._storage.get_tenant(plugin_id, tenant)
            if stored is not None and stored.suspended_reason is not None:
                return stored
            return self._write_tenant(
                plugin,
                stored,
                tenant,
                actor,
                "suspend",
                before={"suspended_reason": None},
                after={"suspended_reason": reason},
                suspended_reason=reason,
            )
        current = self._require(plugin_id, "suspend", PluginStatus.APPROVED)
        return self._set_status(
            current, PluginStatus.SUSPENDED, actor=actor, action="suspend", status_reason=reason
        )

    @overload
    def resume(self, plugin_id: str, *, actor: str, tenant: None = None) -> PluginRecord: ...

    @overload
    def resume(self, plugin_id: str, *, actor: str, tenant: str) -> TenantRecord: ...

    @overload
    def resume(
        self, plugin_id: str, *, actor: str, tenant: str | None = None
    ) -> PluginRecord | TenantRecord: ...

    def resume(
        self, plugin_id: str, *, actor: str, tenant: str | None = None
    ) -> PluginRecord | TenantRecord:
        """Let a suspended plugin run again where it is enabled, or lift one tenant's suspension.

        Without ``tenant`` the plugin must be suspended; it becomes approved
        again and runs where it is enabled and not suspended for the tenant.
        Returns the plugin's record.

        With ``tenant`` the plugin must be approved; the tenant's
        ``suspended_reason`` is cleared and the plugin runs there again if it
        is enabled. Returns the tenant's record: unchanged, with nothing
        written, when the tenant was not suspended.

        :raises ValueError: for an empty ``actor`` or ``tenant``.
        :raises TransitionError: unless the plugin is suspended (without
            ``tenant``) or approved (with ``tenant``).
        :raises PluginNotFound: for an id that was never installed.
        """
        if tenant is not None:
            _require_text(actor, "actor")
            _require_text(tenant, "tenant")
            plugin = self._require_for_tenant(plugin_id, "resume", tenant)
            stored = self._storage.get_tenant(plugin_id, tenant)
            if stored is None or stored.suspended_reason is None:
                return stored or self._unstored(plugin_id, tenant, actor)
            return self._write_tenant(
                plugin,
                stored,
                tenant,
                actor,
                "resume",
                before={"suspended_reason": stored.suspended_reason},
                after={"suspended_reason": None},
                suspended_reason=None,
            )
        current = self._require(plugin_id, "resume", PluginStatus.SUSPENDED)
        return self._set_status(
            current, PluginStatus.APPROVED, actor=actor, action="resume", status_reason=None
        )

    def uninstall(self, plugin_id: str, *, actor: str) -> PluginRecord:
        """Remove a plugin: its tenant data goes, its history and audit trail stay.

        :raises DependencyError: while approved plugins enabled for some tenant
            require it.
        """
        current = self._require(plugin_id, "uninstall", *_INSTALLED)
        dependents = [
            other.id
            for other in self._storage.list_plugins(PluginStatus.APPROVED)
            if other.id != plugin_id
            and plugin_id in self._manifest(other).requires_plugins
            and any(t.enabled for t in self._storage.list_tenants(other.id))
        ]
        if dependents:
            raise DependencyError(plugin_id, dependents)
        return self._set_status(
            current,
            PluginStatus.UNINSTALLED,
            actor=actor,
            action="uninstall",
            granted_permissions=(),
            status_reason=None,
            clear_tenants=True,
            staged=None,
        )

    # -- tenant-level steps ----------------------------------------------------------------------

    def enable(
        self, plugin_id: str, tenant: str, *, actor: str, with_requirements: bool = False
    ) -> TenantRecord:
        """Turn an approved plugin on for one tenant.

        A suspension for the tenant (:meth:`suspend` with ``tenant``) stays in
        place: the plugin runs there only once it is resumed.

        The plugins it requires (``requires_plugins``) must already run for the
        tenant, in a version its specifiers accept. With
        ``with_requirements=True`` they are enabled first (requirements before
        dependants, each step with its own audit event).

        :raises RequirementsError: listing every requirement not met.
        """
        plugin = self._require(plugin_id, "enable", PluginStatus.APPROVED)
        missing = self._unmet_requirements(plugin, tenant)
        if missing and with_requirements:
            manifests = {
                p.id: self._manifest(p)
                for p in self._storage.list_plugins()
                if p.status is not PluginStatus.UNINSTALLED
            }
            for required in enable_order(plugin_id, manifests)[:-1]:
                self.enable(required, tenant, actor=actor)
            missing = self._unmet_requirements(plugin, tenant)
        if missing:
            raise RequirementsError(plugin_id, missing)
        return self._set_enabled(plugin_id, tenant, True, actor=actor)

    def disable(self, plugin_id: str, tenant: str, *, actor: str) -> TenantRecord:
        """Turn a plugin off for one tenant (allowed in every installed state).

        A suspension for the tenant stays in place (only :meth:`resume` lifts it).

        :raises DependencyError: while plugins running for the tenant require it.
        """
        dependents = [
            other
            for other in self._storage.enabled_plugins(tenant)
            if other != plugin_id and plugin_id in self.manifest(other).requires_plugins
        ]
        if dependents:
            raise DependencyError(plugin_id, dependents, action="disable", tenant=tenant)
        return self._set_enabled(plugin_id, tenant, False, actor=actor)

    def _unmet_requirements(self, plugin: PluginRecord, tenant: str) -> list[Problem]:
        requirements = self._manifest(plugin).requires_plugins
        if not requirements:
            return []
        running = set(self._storage.enabled_plugins(tenant))
        problems: list[Problem] = []
        for required, specifier in requirements.items():
            path = f"requires_plugins.{required}"
            if required not in running:
                problems.append(Problem(path, f"{required} is not enabled for tenant {tenant!r}"))
                continue
            version = self.plugin(required).version
            if not specifier.contains(version, prereleases=True):
                problems.append(Problem(path, f"{required} is version {version}, not {specifier}"))
        return problems

    def get_settings(self, plugin_id: str, tenant: str) -> dict[str, JSONValue]:
        """The tenant's settings, every one of the schema: set values, else defaults.

        A stored value that no longer fits the schema (after an upgrade) gives
        way to the default. Secrets come decrypted.

        :raises SecretKeyError: when a stored secret opens with none of the
            keys (naming the plugin, tenant and setting), or there are none.
        """
        plugin = self.plugin(plugin_id)
        return self._settings(plugin, self._storage.get_tenant(plugin_id, tenant), strict=True)

    def _settings(
        self, plugin: PluginRecord, stored: TenantRecord | None, *, strict: bool = False
    ) -> dict[str, JSONValue]:
        """:meth:`get_settings` from records already read (a host reads them once for both).

        Unless ``strict``, a secret that cannot be decrypted is logged (as an
        error naming it, never its value) and read as not set: one plugin's
        unreadable secret must not stop the tenant's other plugins.
        """
        values = stored.settings if stored is not None else {}
        tenant = stored.tenant if stored is not None else ""
        return self._read(self._manifest(plugin), plugin.id, tenant, values, strict=strict)

    def _read(
        self,
        manifest: Manifest,
        plugin_id: str,
        tenant: str,
        values: Mapping[str, JSONValue],
        *,
        strict: bool,
    ) -> dict[str, JSONValue]:
        result: dict[str, JSONValue] = {}
        for spec in manifest.settings:
            value = values.get(spec.name)
            if spec.type is SettingType.SECRET and value is not None:
                try:
                    value = self._open(plugin_id, tenant, spec.name, value)
                except SecretKeyError as error:
                    if strict:
                        raise
                    _logger.error("%s", error)
                    value = None
            try:
                result[spec.name] = spec.coerce(value) if value is not None else None
            except ValueError:
                result[spec.name] = None
            if result[spec.name] is None:
                result[spec.name] = copy.deepcopy(spec.default)
        return result

    def set_settings(
        self,
        plugin_id: str,
        tenant: str,
        values: Mapping[str, object],
        *,
        actor: str,
        partial: bool = True,
    ) -> dict[str, JSONValue]:
        """Check, coerce and store setting values for one tenant; return them all.

        With ``partial=True`` (the default) only the given settings change, and
        ``None`` resets one to its default. With ``partial=False`` the values
        replace every setting and required ones must be present. Secret values
        are masked in the audit event, and stored encrypted with the newest
        secret key (see :class:`Registry`); setting a secret to the value it
        has changes nothing. A secret stored in plain text before secrets were
        encrypted is encrypted by the next change of the tenant's settings
        (or by :meth:`rotate_secrets`).

        :raises SettingsError: listing every refused value; nothing is stored.
        :raises SecretKeyError: when a secret is set and there is no key, or
            no ``cryptography`` (the ``secrets`` extra); nothing is stored.
        """
        plugin = self._require(plugin_id, "set settings", *_CONFIGURABLE)
        manifest = self._manifest(plugin)
        checked = manifest.validate_settings(values, partial=partial)
        secrets = {str(s.name) for s in manifest.settings if s.type is SettingType.SECRET}
        stored = self._storage.get_tenant(plugin_id, tenant)
        old = dict(stored.settings) if stored is not None else {}
        for key in secrets & set(checked):
            checked[key] = self._sealed(plugin_id, tenant, key, checked[key], old.get(key))
        new = {**old, **checked} if partial else dict(checked)
        new = {key: value for key, value in new.items() if value is not None}
        if new != old and self._secrets.configured:
            for key in secrets:  # plaintext secrets from before encryption: sealed as we write
                if isinstance(new.get(key), str):
                    new[key] = self._sealed(plugin_id, tenant, key, new[key], None)
        if new != old:
            changed = sorted(set(old) | set(new))
            # What the plugin sees changed: its values, defaults filled in.
            defaults = {str(s.name): copy.deepcopy(s.default) for s in manifest.settings}
            seen, was = {**defaults, **new}, {**defaults, **old}
            moved = [key for key in changed if seen.get(key) != was.get(key)]
            self._write_tenant(
                plugin,
                stored,
                tenant,
                actor,
                "set settings",
                before={"settings": _masked(old, changed, secrets)},
                after={"settings": _masked(new, changed, secrets)},
                changed_settings=_masked(seen, moved, secrets),
                settings=new,
            )
        # Not strict: the change is committed, and another secret unreadable must not hide it.
        return self._settings(plugin, self._storage.get_tenant(plugin_id, tenant))

    def rotate_secrets(self, *, actor: str) -> int:
        """Re-encrypt every stored secret with the newest secret key; return how many
        tenant records were rewritten.

        To rotate keys: put the new key first (``secret_keys`` or
        ``$SERVICES_AI_PLUGINS_SECRET_KEYS``), call this, then drop the old
        key. Secrets stored in plain text before secrets were encrypted are
        encrypted too (the migration for existing databases). Each tenant
        record rewritten is its own change with a ``rotate secrets`` audit
        event naming its settings (never their values); a record whose
        secrets are all under the newest key is left alone, so calling it
        again is harmless.

        :raises SecretKeyError: when there is no key, or a stored secret opens
            with none of them (the records before it stay rotated: fix the
            keys and call it again).
        """
        _require_text(actor, "actor")
        self._secrets.require()
        rewritten = 0
        for plugin in self._storage.list_plugins():
            if plugin.status is PluginStatus.UNINSTALLED:
                continue
            for record in self._storage.list_tenants(plugin.id):
                rewritten += self._rotate_tenant(plugin.id, record.tenant, actor)
        return rewritten

    def _rotate_tenant(self, plugin_id: str, tenant: str, actor: str) -> int:
        """Re-encrypt one tenant's secrets of one plugin; 1 if its record was rewritten."""
        for attempt in range(_DROP_ATTEMPTS):
            plugin = self.plugin(plugin_id)
            stored = self._storage.get_tenant(plugin_id, tenant)
            if stored is None or plugin.status is PluginStatus.UNINSTALLED:
                return 0
            specs = {str(s.name): s.type for s in self._manifest(plugin).settings}
            settings = dict(stored.settings)
            rotated: list[str] = []
            for name, value in stored.settings.items():
                kind = specs.get(name)
                # Secrets, and sealed values of settings the manifest no longer has.
                secret = kind is SettingType.SECRET and isinstance(value, str)
                if not (
                    secret or ((kind is None or kind is SettingType.SECRET) and is_sealed(value))
                ):
                    continue
                if self._secrets.is_current(value):
                    continue
                plain = self._open(plugin_id, tenant, name, value)
                if not isinstance(plain, str):
                    continue
                settings[name] = self._secrets.seal(
                    plain, plugin_id=plugin_id, tenant=tenant, setting=name
                )
                rotated.append(name)
            if not rotated:
                return 0
            try:
                self._write_tenant(
                    plugin,
                    stored,
                    tenant,
                    actor,
                    "rotate secrets",
                    before={"settings": _masked(stored.settings, rotated, set(rotated))},
                    after={"settings": _masked(settings, rotated, set(rotated))},
                    settings=settings,
                )
            except ConflictError:
                if attempt == _DROP_ATTEMPTS - 1:
                    raise
                continue
            return 1
        return 0

    def _open(self, plugin_id: str, tenant: str, setting: str, value: JSONValue) -> JSONValue:
        """A stored secret's plaintext: decrypted, or as stored when in plain text (warned once)."""
        if is_sealed(value):
            assert isinstance(value, Mapping)
            return self._secrets.open(value, plugin_id=plugin_id, tenant=tenant, setting=setting)
        key = (plugin_id, tenant, setting)
        if key not in self._plaintext_warned:
            if len(self._plaintext_warned) > 4096:
                self._plaintext_warned.clear()
            self._plaintext_warned.add(key)
            _logger.warning(
                "secret setting %r of plugin %r for tenant %r is stored in plain text (from "
                "before secrets were encrypted): the next change of the tenant's settings, or "
                "Registry.rotate_secrets(), encrypts it",
                setting,
                plugin_id,
                tenant,
            )
        return value

    def _sealed(
        self, plugin_id: str, tenant: str, setting: str, value: JSONValue, previous: JSONValue
    ) -> JSONValue:
        """The value to store for a secret: ``previous`` when it already seals ``value``."""
        if not isinstance(value, str):
            return value  # None: unset
        if is_sealed(previous) and self._secrets.configured:
            try:
                if self._open(plugin_id, tenant, setting, previous) == value:
                    return previous
            except SecretKeyError:
                pass  # sealed under a key since lost: the new value replaces it
        return self._secrets.seal(value, plugin_id=plugin_id, tenant=tenant, setting=setting)

    def grant(self, plugin_id: str, tenant: str, permission: str, *, actor: str) -> TenantRecord:
        """Grant one of the plugin's optional permissions for one tenant.

        :raises ValueError: when the installed manifest does not list it in
            ``optional_permissions``.
        """
        return self._set_grant(plugin_id, tenant, permission, True, actor=actor)

    def revoke(self, plugin_id: str, tenant: str, permission: str, *, actor: str) -> TenantRecord:
        """Take back an optional permission for one tenant.

        Any permission stored for the tenant can be revoked, also one the
        installed manifest no longer declares.

        :raises ValueError: when it is neither stored for the tenant nor an
            optional permission of the installed manifest.
        """
        return self._set_grant(plugin_id, tenant, permission, False, actor=actor)

    # -- versions: the switch, rollback, diffs ----------------------------------------------------

    def _approve_staged(self, current: PluginRecord, *, actor: str, auto: bool) -> PluginRecord:
        staged = current.staged
        assert staged is not None
        now = self._clock()
        record = attrs.evolve(
            current,
            staged=attrs.evolve(staged, approved_at=now, approved_by=actor, auto_approved=auto),
            revision=current.revision + 1,
        )
        after: dict[str, JSONValue] = {
            "staged": staged.version,
            "code_hash": staged.code_hash,
            "approved": self._diff(
                self._running_side(current), self._staged_side(staged)
            ).summary(),
        }
        if auto:
            after["auto_approved"] = True
            after["policy"] = "asks for nothing new"
        self._commit_plugin(
            record,
            "approve upgrade",
            now=now,
            actor=actor,
            before={"version": current.version},
            after=after,
        )
        return record

    def _drop_staged(
        self, current: PluginRecord, *, actor: str, action: str, reason: str
    ) -> PluginRecord:
        staged = current.staged
        assert staged is not None
        record = attrs.evolve(current, staged=None, revision=current.revision + 1)
        self._commit_plugin(
            record,
            action,
            now=self._clock(),
            actor=actor,
            before={"version": current.version, "staged": staged.version},
            after={"version": current.version, "reason": reason},
        )
        return record

    def prepare_upgrade(self, plugin_id: str) -> UpgradePlan | None:
        """What the switch to the plugin's approved staged version will write, or None when
        there is no such version (for hosts: :class:`PluginHost` calls it at each refresh).

        The tenants' stored settings are migrated to the new schema: values kept
        where the new field still takes them, defaults for new fields (read from
        the schema), values of removed fields dropped.

        A tenant whose settings cannot be migrated (a required value that
        cannot be filled) makes the plan's ``problem`` (an :class:`UpgradeError`
        with ``step="settings"``, naming the fields): the caller rolls back with
        :meth:`fail_upgrade`.
        """
        record = self._storage.get_plugin(plugin_id)
        if (
            record is None
            or record.status is not PluginStatus.APPROVED
            or record.staged is None
            or record.staged.approved_at is None
            or self._claimed(record.staged)
        ):
            return None
        staged = record.staged
        old = self._manifest(record)
        new = Manifest.from_dict(dict(staged.manifest))
        tenants = {t.tenant: t for t in self._storage.list_tenants(plugin_id)}
        stored: dict[str, Mapping[str, JSONValue]] = {}
        problem: UpgradeError | None = None
        for name, tenant in tenants.items():
            try:
                stored[name] = migrate_settings(old.settings, new.settings, tenant.settings)
            except SettingsError as error:
                problem = UpgradeError(
                    plugin_id, record.version, staged.version, "settings", str(error), tenant=name
                )
                problem.__cause__ = error
                break
        running = tuple(
            name for name, t in tenants.items() if t.enabled and t.suspended_reason is None
        )
        return UpgradePlan(
            record=record,
            staged=staged,
            old_manifest=old,
            manifest=new,
            tenants=tenants,
            stored=stored,
            running=running,
            problem=problem,
        )

    def claim_upgrade(
        self, plan: UpgradePlan, *, actor: str, holder: str, lease: timedelta
    ) -> UpgradePlan:
        """Claim the switch for one host before it runs migrations, so ``plugin_upgraded``
        runs once per change: other hosts' :meth:`prepare_upgrade` returns None while the
        claim holds. Audited as ``upgrade started``; returns the plan at the new revision.

        ``holder`` names the host (``host:pid:token``, see :func:`switch_holder`); the
        claim holds for ``lease``, or until its holder is found gone (a process of this
        machine that no longer runs, say after a ``kill -9``).

        :raises ConflictError: another host claimed it first, or the plugin changed.
        """
        now = self._clock()
        staged = attrs.evolve(plan.staged, switching_by=holder, switching_until=now + lease)
        record = attrs.evolve(plan.record, staged=staged, revision=plan.record.revision + 1)
        self._commit_plugin(
            record,
            "upgrade started",
            now=now,
            actor=actor,
            before={"version": plan.from_version},
            after={"staged": plan.to_version, "by": holder},
        )
        return attrs.evolve(plan, record=record, staged=staged)

    def _claimed(self, staged: StagedVersion) -> bool:
        """Whether another host's claim on the switch still holds."""
        if staged.switching_by is None or staged.switching_until is None:
            return False
        if staged.switching_until <= self._clock():
            return False
        return not _holder_gone(staged.switching_by)

    def upgrade_settings(self, plan: UpgradePlan, tenant: str) -> dict[str, JSONValue]:
        """The settings ``plugin_upgraded`` receives for ``tenant``: migrated, every one of the
        new schema (defaults filled in), secrets decrypted."""
        return self._read(
            plan.manifest, plan.plugin_id, tenant, plan.stored.get(tenant, {}), strict=False
        )

    def complete_upgrade(
        self,
        plan: UpgradePlan,
        changes: Mapping[str, Mapping[str, object]] | None = None,
        *,
        actor: str,
    ) -> PluginRecord:
        """Switch to the staged version in one transaction (for hosts, after ``plugin_upgraded``).

        Writes the new version as the running one, each tenant's migrated settings
        with the ``changes`` its migration returned (checked against the new
        schema; ``None`` resets one), drops optional grants the new version does
        not declare (named per tenant in the audit event's ``dropped``), keeps
        the previous version (its code and each tenant's state) for
        :meth:`rollback` and forgets versions past the policy's ``keep_versions``.
        Audited as ``upgrade``; archives no longer used are then collected
        (:meth:`collect_artifacts`).

        :raises UpgradeError: (``step="settings"``) when a migration's changes
            are refused; nothing is written.
        :raises ConflictError: the plugin or a tenant changed since the plan was
            made; nothing is written (the next refresh makes a new plan).
        """
        now = self._clock()
        current, staged, manifest = plan.record, plan.staged, plan.manifest
        secrets = {str(s.name) for s in manifest.settings if s.type is SettingType.SECRET}
        stored = {name: dict(values) for name, values in plan.stored.items()}
        for tenant, values in (changes or {}).items():
            try:
                checked = manifest.validate_settings(values, partial=True)
            except SettingsError as error:
                raise UpgradeError(
                    current.id, current.version, staged.version, "settings", str(error),
                    tenant=tenant,
                ) from error  # fmt: skip
            old = stored.setdefault(tenant, {})
            for key in secrets & set(checked):
                checked[key] = self._sealed(current.id, tenant, key, checked[key], old.get(key))
            old.update(checked)
            stored[tenant] = {k: v for k, v in old.items() if v is not None}
        optional = set(manifest.optional_permissions)
        records = []
        dropped: dict[str, JSONValue] = {}
        for name, record in plan.tenants.items():
            gone = [p for p in record.optional_grants if p not in optional]
            if gone:
                dropped[name] = list[JSONValue](gone)
            records.append(
                attrs.evolve(
                    record,
                    settings=stored.get(name, {}),
                    optional_grants=tuple(p for p in record.optional_grants if p in optional),
                    changed_at=now,
                    changed_by=actor,
                    revision=record.revision + 1,
                )
            )
        keep, forget = self._retain(
            current, plan.tenants.values(), now, arriving=staged.version, trim=True
        )
        new = attrs.evolve(
            current,
            name=manifest.name,
            version=staged.version,
            manifest=staged.manifest,
            code_hash=staged.code_hash,
            source=staged.source,
            package_path=staged.package_path,
            artifact=staged.artifact,
            approved_at=staged.approved_at,
            approved_by=staged.approved_by,
            granted_permissions=tuple(manifest.permissions),
            staged=None,
            revision=current.revision + 1,
        )
        after: dict[str, JSONValue] = {
            "version": staged.version,
            "code_hash": staged.code_hash,
            "migrated": list[JSONValue](plan.running),
        }
        if dropped:  # optional grants of the old version the new one no longer declares
            after["dropped"] = dropped
        if changes:
            changed: dict[str, JSONValue] = {
                t: list[JSONValue](sorted(v)) for t, v in changes.items()
            }
            after["settings_changed"] = changed
        self._commit_plugin(
            new,
            "upgrade",
            now=now,
            actor=actor,
            before={"version": current.version, "code_hash": current.code_hash},
            after=after,
            tenants=tuple(records),
            keep=keep,
            forget=forget,
        )
        self._collect_quietly()
        return new

    def fail_upgrade(self, plan: UpgradePlan, error: UpgradeError, *, actor: str) -> None:
        """Roll back a switch that failed: the staged version is dropped, the running one
        serves on with its settings untouched; the failure is recorded (hook
        ``plugin_upgraded``, with its traceback) and audited as ``upgrade failed``.

        Nothing happens when the plugin changed since the plan (another host
        finished the switch, say).
        """
        self._storage.record_failures(
            [failure_of(plan.plugin_id, error, hook="plugin_upgraded", tenant=error.tenant)]
        )
        record = attrs.evolve(plan.record, staged=None, revision=plan.record.revision + 1)
        after: dict[str, JSONValue] = {
            "version": plan.from_version,
            "failed": plan.to_version,
            "step": error.step,
            "reason": error.reason,
        }
        if error.tenant is not None:
            after["tenant"] = error.tenant
        try:
            self._commit_plugin(
                record,
                "upgrade failed",
                now=self._clock(),
                actor=actor,
                before={"version": plan.from_version, "staged": plan.to_version},
                after=after,
            )
        except ConflictError:
            _logger.info("upgrade of %r changed meanwhile; its failure here stands alone",
                         plan.plugin_id)  # fmt: skip

    def rollback(
        self, plugin_id: str, to_version: str | None = None, *, actor: str
    ) -> PluginRecord:
        """Return an approved or suspended plugin to a kept earlier version (default: the newest
        kept one), with each tenant's settings and optional grants as they were when
        it stopped running.

        The version left is kept in turn (so a rollback can be undone with another;
        no kept version is forgotten, whatever this registry's ``keep_versions``:
        retention applies at a switch), a staged version is dropped, and tenants
        enabled since keep their settings where the older schema takes them. Audited
        as ``rollback``. Hosts load the older code at their next refresh; no hook
        runs.

        :raises VersionError: when no version (or not ``to_version``) is kept.
        """
        current = self._require(plugin_id, "rollback", *_RUNNING)
        kept = [k for k in self._storage.kept_versions(plugin_id) if k.version != current.version]
        if to_version is None:
            if not kept:
                raise VersionError(plugin_id, None, "no earlier version is kept to roll back to")
            target = kept[-1]
        else:
            wanted = _normal(plugin_id, to_version)
            matches = [k for k in kept if k.version == wanted]
            if not matches:
                have = ", ".join(k.version for k in kept) or "none"
                raise VersionError(
                    plugin_id, to_version, f"this version is not kept (kept: {have})"
                )
            target = matches[-1]
        now = self._clock()
        manifest = Manifest.from_dict(dict(target.manifest))
        names = {str(s.name) for s in manifest.settings}
        tenants = self._storage.list_tenants(plugin_id)
        records = []
        for record in tenants:
            then = target.tenants.get(record.tenant)
            if then is not None:
                settings = dict(_mapping(then.get("settings")))
                grants = tuple(str(p) for p in _sequence(then.get("optional_grants")))
            else:
                settings = {k: v for k, v in record.settings.items() if k in names}
                grants = record.optional_grants
            optional = set(manifest.optional_permissions)
            records.append(
                attrs.evolve(
                    record,
                    settings=settings,
                    optional_grants=tuple(p for p in grants if p in optional),
                    changed_at=now,
                    changed_by=actor,
                    revision=record.revision + 1,
                )
            )
        # No trimming: a rollback keeps as many versions as it found (it swaps the one left
        # for the one returned to), whatever the caller's policy says.
        keep, forget = self._retain(current, tenants, now, arriving=target.version, trim=False)
        new = attrs.evolve(
            current,
            name=manifest.name,
            version=target.version,
            manifest=target.manifest,
            code_hash=target.code_hash,
            source=target.source,
            package_path=target.package_path,
            artifact=target.artifact,
            granted_permissions=target.granted_permissions,
            approved_at=now,
            approved_by=actor,
            staged=None,
            revision=current.revision + 1,
        )
        self._commit_plugin(
            new,
            "rollback",
            now=now,
            actor=actor,
            before={"version": current.version, "code_hash": current.code_hash},
            after={"version": target.version, "code_hash": target.code_hash},
            tenants=tuple(records),
            keep=keep,
            forget=forget,
        )
        self._collect_quietly()
        return new

    def _retain(
        self,
        current: PluginRecord,
        tenants: Iterable[TenantRecord],
        now: datetime,
        *,
        arriving: str,
        trim: bool,
    ) -> tuple[KeptVersion | None, tuple[str, ...]]:
        """The running version to keep as it leaves, and the kept versions to forget: the
        arriving one, and with ``trim`` those past the policy's ``keep_versions``."""
        kept = self._storage.kept_versions(current.id)
        leaving = KeptVersion(
            plugin_id=current.id,
            version=current.version,
            manifest=current.manifest,
            code_hash=current.code_hash,
            source=current.source,
            package_path=current.package_path,
            artifact=current.artifact,
            granted_permissions=current.granted_permissions,
            tenants={t.tenant: _state(t) for t in tenants},
            kept_at=now,
        )
        others = [k.version for k in kept if k.version not in (current.version, arriving)]
        if not trim:
            return leaving, tuple(k.version for k in kept if k.version not in others)
        budget = self._upgrades.keep_versions
        stay = others[max(0, len(others) - (budget - 1)) :] if budget > 1 else []
        forget = tuple(k.version for k in kept if k.version not in stay)
        return (leaving if budget > 0 else None), forget

    def kept_versions(self, plugin_id: str) -> list[KeptVersion]:
        """The earlier versions kept for :meth:`rollback`, oldest first."""
        return self._storage.kept_versions(plugin_id)

    def diff(
        self,
        plugin_id: str,
        from_version: str | None = None,
        to_version: str | None = None,
        *,
        catalogue: PermissionCatalogue | None = None,
    ) -> VersionDiff:
        """What changed between two versions of a plugin: permissions (with description and
        risk), hooks, settings schema, requirements, files (with sizes), code hashes,
        changelog.

        The versions are the running one, the staged one and the kept ones. By
        default: from the running version to the staged one, or, with none staged,
        from the newest kept version to the running one.

        :raises VersionError: naming a version that is neither running, staged nor
            kept, or when there is nothing to compare.
        """
        record = self.plugin(plugin_id)
        sides: dict[str, VersionSide] = {}
        for kept in self._storage.kept_versions(plugin_id):
            sides[kept.version] = self._side(
                kept.version, kept.manifest, kept.code_hash, kept.artifact, kept.package_path
            )
        sides[record.version] = self._running_side(record)
        if record.staged is not None:
            sides[record.staged.version] = self._staged_side(record.staged)
        if from_version is None and to_version is None:
            if record.staged is not None:
                old, new = sides[record.version], sides[record.staged.version]
            else:
                earlier = [k.version for k in self._storage.kept_versions(plugin_id)]
                earlier = [v for v in earlier if v != record.version]
                if not earlier:
                    raise VersionError(
                        plugin_id, None, "only one version is installed: nothing to compare"
                    )
                old, new = sides[earlier[-1]], sides[record.version]
        else:
            old = self._pick(plugin_id, sides, from_version, record.version)
            new = self._pick(
                plugin_id,
                sides,
                to_version,
                record.staged.version if record.staged is not None else record.version,
            )
        return self._diff(old, new, catalogue)

    def _pick(
        self, plugin_id: str, sides: Mapping[str, VersionSide], version: str | None, default: str
    ) -> VersionSide:
        wanted = default if version is None else _normal(plugin_id, version)
        side = sides.get(wanted)
        if side is None:
            have = ", ".join(sorted(sides)) or "none"
            raise VersionError(
                plugin_id, version, f"not running, staged or kept (known here: {have})"
            )
        return side

    def _diff(
        self, old: VersionSide, new: VersionSide, catalogue: PermissionCatalogue | None = None
    ) -> VersionDiff:
        return diff_versions(
            old, new, catalogue if catalogue is not None else PermissionCatalogue()
        )

    def _running_side(self, record: PluginRecord) -> VersionSide:
        return self._side(
            record.version, record.manifest, record.code_hash, record.artifact, record.package_path
        )

    def _staged_side(self, staged: StagedVersion) -> VersionSide:
        return self._side(
            staged.version, staged.manifest, staged.code_hash, staged.artifact, staged.package_path
        )

    def _side(
        self,
        version: str,
        manifest: Mapping[str, JSONValue],
        code_hash: str,
        artifact: str | None,
        package_path: str | None,
    ) -> VersionSide:
        files: Mapping[str, FileEntry] | None = None
        try:
            data = self._artifacts.get(artifact) if artifact is not None else None
            if data is not None:
                files = archive_files(data)
            elif package_path is not None and Path(package_path).is_dir():
                files = folder_files(package_path)
        except (OSError, PluginError, ValueError) as error:  # the listing is a courtesy
            _logger.warning("cannot list the files of version %s: %s", version, error)
        return VersionSide(
            version=version,
            manifest=Manifest.from_dict(dict(manifest)),
            code_hash=code_hash,
            files=files,
        )

    def collect_artifacts(self, *, older_than: timedelta = timedelta(hours=1)) -> list[str]:
        """Remove archives no version uses (running, staged or kept, of any plugin) from
        :attr:`artifacts`; return their hashes.

        Archives stored less than ``older_than`` ago stay: an install may have
        stored its archive and not yet recorded the version that uses it.
        """
        used: set[str] = set()
        for record in self._storage.list_plugins():
            if record.status is not PluginStatus.UNINSTALLED and record.artifact is not None:
                used.add(record.artifact)
            if record.staged is not None and record.staged.artifact is not None:
                used.add(record.staged.artifact)
            used.update(k.artifact for k in self._storage.kept_versions(record.id) if k.artifact)
        # The store stamps archives with the real time, not the registry's clock.
        cutoff = datetime.now(timezone.utc) - older_than
        removed = []
        for info in self._artifacts.list():
            stale = info.sha256 not in used and info.stored_at < cutoff
            if stale and self._artifacts.delete(info.sha256):
                removed.append(info.sha256)
        return removed

    def _collect_quietly(self) -> None:
        try:
            self.collect_artifacts()
        except Exception:  # the change is committed; a later collection catches up
            _logger.exception("cannot collect unused plugin archives")

    # -- queries ---------------------------------------------------------------------------------

    def plugin(self, plugin_id: str) -> PluginRecord:
        """The plugin's record (also when uninstalled).

        :raises PluginNotFound: when it was never installed.
        """
        record = self._storage.get_plugin(plugin_id)
        if record is None:
            raise PluginNotFound(plugin_id)
        return record

    def manifest(self, plugin_id: str) -> Manifest:
        """The installed manifest of the plugin."""
        return self._manifest(self.plugin(plugin_id))

    def plugins(self, status: PluginStatus | None = None) -> list[PluginRecord]:
        """Every plugin, or those in ``status``, by id."""
        return self._storage.list_plugins(status)

    def enabled_plugins(self, tenant: str) -> list[str]:
        """Ids of the plugins that run for ``tenant``, sorted.

        Those that are approved, enabled there and not suspended for it.
        """
        return self._storage.enabled_plugins(tenant)

    def tenant(self, plugin_id: str, tenant: str) -> TenantRecord | None:
        """The plugin's record for ``tenant`` (activation, grants, settings), if any."""
        return self._storage.get_tenant(plugin_id, tenant)

    def grants(self, plugin_id: str, tenant: str) -> frozenset[str]:
        """The permissions the plugin holds for ``tenant``: none unless it is approved and
        not suspended there.

        The approved permissions of its manifest plus the optional ones granted
        for this tenant, only those the installed manifest declares (a grant
        stored for an earlier version that no longer declares it counts for
        nothing); the snapshot a host gives the plugin's ``PluginAPI``.
        """
        plugin = self._storage.get_plugin(plugin_id)
        if plugin is None:
            return frozenset()
        return self._grants(plugin, self._storage.get_tenant(plugin_id, tenant))

    def tenant_view(
        self,
        tenant: str | None,
        plugins: Iterable[PluginRecord] | None = None,
        *,
        running_only: bool = True,
    ) -> TenantView:
        """The grants and settings of plugins for ``tenant``, in one read of its activations.

        ``plugins`` are the records to answer for (a host passes the records it
        loaded; default: every approved plugin). With ``running_only`` the view
        holds the grants and settings of the active ones only (the plugins that
        run for the tenant); otherwise of every one given, enabled there or not
        (a lifecycle hook of a plugin just disabled). Without a tenant every
        plugin given is active, its grants are its approved permissions and its
        settings are empty.

        ::

            view = registry.tenant_view("acme")
            if "crm-sync" in view.active and "read_leads" in view.grants["crm-sync"]:
                ...
        """
        records = {
            record.id: record
            for record in (
                plugins
                if plugins is not None
                else self._storage.list_plugins(PluginStatus.APPROVED)
            )
        }
        if tenant is None:
            return TenantView(
                tenant=None,
                active=frozenset(records),
                grants={pid: self._grants(record, None) for pid, record in records.items()},
                settings=dict.fromkeys(records, _NO_SETTINGS),
            )
        active = frozenset(self._storage.enabled_plugins(tenant)) & frozenset(records)
        shown = active if running_only else frozenset(records)
        # One read of each plugin's tenant record serves its grants and its settings.
        stored = {pid: self._storage.get_tenant(pid, tenant) for pid in shown}
        return TenantView(
            tenant=tenant,
            active=active,
            grants={pid: self._grants(records[pid], stored[pid]) for pid in shown},
            settings={
                pid: types.MappingProxyType(self._settings(records[pid], stored[pid]))
                for pid in shown
            },
        )

    def manifest_of(self, record: PluginRecord) -> Manifest:
        """The manifest of a plugin record, parsed once per revision (the registry caches it).

        :raises ManifestError: when the record's manifest is not valid.
        """
        return self._manifest(record)

    def _grants(self, plugin: PluginRecord, record: TenantRecord | None) -> frozenset[str]:
        """:meth:`grants` from records already read (a host reads them once for both)."""
        if plugin.status is not PluginStatus.APPROVED:
            return frozenset()
        if record is not None and record.suspended_reason is not None:
            return frozenset()  # suspended for this tenant: it may do nothing there
        declared = self._declared(plugin)
        held = frozenset(plugin.granted_permissions) & declared[0]
        if record is not None and record.optional_grants:
            held |= frozenset(record.optional_grants) & declared[1]
        return held

    def _declared(self, plugin: PluginRecord) -> tuple[frozenset[str], frozenset[str]]:
        """The permissions and optional permissions the plugin's installed manifest declares
        (none when it cannot be read)."""
        key = (plugin.id, plugin.revision)
        declared = self._declarations.get(key)
        if declared is None:
            try:
                manifest = self._manifest(plugin)
            except PluginError:
                _logger.exception("the manifest of plugin %r cannot be read", plugin.id)
                return frozenset(), frozenset()
            if len(self._declarations) > 1024:
                self._declarations.clear()
            declared = self._declarations[key] = (
                frozenset(manifest.permissions),
                frozenset(manifest.optional_permissions),
            )
        return declared

    def suspensions(self, plugin_id: str | None = None) -> list[Suspension]:
        """Every suspension in force (of one plugin, or of all), for an admin page.

        A plugin whose status is suspended gives one :class:`Suspension` with
        ``tenant=None`` and its ``status_reason``; ``since`` and ``by`` come
        from the newest plugin-wide ``suspend`` event of its audit trail (the
        install's time and actor when there is none). Each tenant the plugin
        is suspended for gives one with that tenant and its
        ``suspended_reason``; ``since`` and ``by`` are the last change of the
        tenant's record, which is the suspension unless the tenant's
        activation, settings or grants changed since. The list is sorted by
        plugin id, then tenant (the plugin-wide one first). An id that was
        never installed has none.
        """
        if plugin_id is None:
            plugins = self._storage.list_plugins()
        else:
            record = self._storage.get_plugin(plugin_id)
            plugins = [record] if record is not None else []
        found: list[Suspension] = []
        for plugin in plugins:
            if plugin.status is PluginStatus.SUSPENDED:
                since, by = self._suspended_since(plugin)
                reason = plugin.status_reason or ""
                found.append(
                    Suspension(plugin_id=plugin.id, tenant=None, reason=reason, since=since, by=by)
                )
            if plugin.status is PluginStatus.UNINSTALLED:
                continue  # uninstall removed its tenant records
            found.extend(
                Suspension(
                    plugin_id=plugin.id,
                    tenant=record.tenant,
                    reason=record.suspended_reason,
                    since=record.changed_at,
                    by=record.changed_by,
                )
                for record in self._storage.list_tenants(plugin.id)
                if record.suspended_reason is not None
            )
        return sorted(found, key=lambda s: (s.plugin_id, s.tenant is not None, s.tenant or ""))

    def resolve_failures(
        self,
        plugin_id: str,
        *,
        actor: str,
        tenant: str | None = None,
        ids: Iterable[int] | None = None,
    ) -> int:
        """Mark the plugin's failures resolved (of one tenant, or only ``ids``) and audit it
        (action ``resolve``, by ``actor``, with how many and which); return how many.

        Nothing is audited when nothing was unresolved. The failures are marked first;
        the audit event follows in its own write.
        """
        _require_text(actor, "actor")
        chosen = list(ids) if ids is not None else None
        count = self._storage.resolve_failures(plugin_id, tenant, ids=chosen)
        if count:
            after: dict[str, JSONValue] = {"resolved": count}
            if chosen is not None:
                after["failures"] = list(chosen)
            event = self._audit(
                self._clock(), actor, "resolve", plugin_id, tenant=tenant, after=after
            )
            self._commit(Change(plugin_id=plugin_id, audit=event))
        return count

    def notice_failing(
        self, plugin_id: str, *, actor: str, interval: timedelta
    ) -> AuditEvent | None:
        """Write a ``failing`` notice for the plugin's failures since its last notice, and
        return it; None when its last notice is younger than ``interval`` or nothing new failed.

        The notice is an audit event (action ``failing``) whose ``after`` is a digest:
        ``count``, ``hooks``, ``tenants``, the newest ``messages`` (at most
        :data:`NOTICE_MESSAGES`, each cut to :data:`NOTICE_MESSAGE` characters), ``since``
        (the last notice's time, or None), ``last_failure`` (the newest failure's id: the
        next notice counts the failures after it) and a ``token`` naming the writer's
        notice. Every host hears it at its refresh (:meth:`PluginHost.refresh`).
        """
        _require_text(actor, "actor")
        now = self._clock()
        last = self._storage.audit(AuditQuery(plugin_id=plugin_id, action=FAILING, limit=1))
        if last and now - last[0].at < interval:
            return None
        # New: after the newest failure the last notice counted (ids grow; clocks may not).
        seen = last[0].after.get("last_failure") if last and last[0].after else None
        floor = seen if isinstance(seen, int) else 0
        new = [
            f
            for f in self._storage.failures(plugin_id, resolved=False, limit=_NOTICE_READ)
            if (f.id or 0) > floor
        ]
        if not new:
            return None
        digest: dict[str, JSONValue] = {
            "count": len(new),
            "hooks": list[JSONValue](sorted({f.hook for f in new})),
            "tenants": list[JSONValue](sorted({f.tenant for f in new if f.tenant is not None})),
            "messages": [  # the newest first
                f"{f.exc_type[:NOTICE_MESSAGE]}: {f.message[:NOTICE_MESSAGE]}"
                for f in new[:NOTICE_MESSAGES]
            ],
            "since": last[0].at.isoformat() if last else None,
            "last_failure": max(f.id or 0 for f in new),
            "token": uuid.uuid4().hex,
        }
        event = self._audit(now, actor, FAILING, plugin_id, after=digest)
        self._commit(Change(plugin_id=plugin_id, audit=event))
        return event

    def load_failure(self, record: PluginRecord) -> FailureRecord | None:
        """Why an approved plugin cannot load: its newest unresolved ``load`` failure since
        its approval, or None.

        A host records one when the plugin's code is missing or changed, or its import or
        plugin object fails. One from before the latest approval (a fixed version
        reinstalled and approved again) no longer counts, nor one marked resolved.
        """
        if record.status is not PluginStatus.APPROVED:
            return None
        since = record.approved_at or record.installed_at
        for failure in self._storage.failures(record.id, resolved=False, limit=_FAILURES_READ):
            if failure.hook == "load" and failure.at >= since:
                return failure
        return None

    def history(self, plugin_id: str) -> list[VersionRecord]:
        """Every version of the plugin ever installed, oldest first."""
        return self._storage.versions(plugin_id)

    def audit_log(
        self,
        *,
        plugin_id: str | None = None,
        tenant: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        """Audit events, newest first, filtered by every argument given."""
        query = AuditQuery(
            plugin_id=plugin_id,
            tenant=tenant,
            actor=actor,
            action=action,
            since=since,
            until=until,
            limit=limit,
        )
        return self._storage.audit(query)

    def access_log(
        self,
        *,
        plugin_id: str | None = None,
        tenant: str | None = None,
        method: str | None = None,
        record_type: str | None = None,
        record_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[AccessRecord]:
        """The data-access log: granted API calls on tenant data, newest first, filtered by
        every argument given (``record_id``: records whose ids hold it).

        What the hosts flushed so far (a host flushes every ``flush_interval``;
        :meth:`PluginHost.access` flushes its own first). Refused calls are not here:
        they went to the host's ``on_denied`` as :class:`DeniedCall` reports.

        :raises StorageError: when the storage keeps no access log.
        :raises ValueError: when ``limit`` is negative or a moment is naive.
        """
        storage = self._storage
        if not isinstance(storage, AccessStorage):
            raise StorageError(f"{type(storage).__name__} keeps no data-access log")
        query = AccessQuery(
            plugin_id=plugin_id,
            tenant=tenant,
            method=method,
            record_type=record_type,
            record_id=record_id,
            since=since,
            until=until,
            limit=limit,
        )
        return storage.access_log(query)

    # -- helpers ---------------------------------------------------------------------------------

    def _commit(
        self, change: Change, *, changed_settings: Mapping[str, JSONValue] | None = None
    ) -> None:
        self._storage.commit(change)
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:
                # The change is committed: a failing listener must not make it look undone.
                _logger.exception(
                    "on_change callback failed after %r of plugin %r",
                    change.audit.action,
                    change.plugin_id,
                )
        if self._on_event is not None:
            event = RegistryEvent(
                action=change.audit.action,
                plugin_id=change.plugin_id,
                tenant=change.audit.tenant,
                changed=dict(changed_settings or {}),
            )
            try:
                self._on_event(event)
            except Exception:
                _logger.exception(
                    "on_event callback failed after %r of plugin %r",
                    change.audit.action,
                    change.plugin_id,
                )

    def _commit_plugin(
        self,
        record: PluginRecord,
        action: str,
        *,
        now: datetime,
        actor: str,
        before: Mapping[str, JSONValue] | None,
        after: Mapping[str, JSONValue] | None,
        **change: Any,
    ) -> None:
        """Commit the plugin's new ``record`` (and the rest of ``change``) with its audit event."""
        audit = self._audit(now, actor, action, record.id, before=before, after=after)
        self._commit(Change(plugin_id=record.id, plugin=record, audit=audit, **change))

    def _suspended_since(self, plugin: PluginRecord) -> tuple[datetime, str]:
        """When and by whom the plugin was suspended: its newest plugin-wide suspend event."""
        limit = 16
        while True:
            query = AuditQuery(plugin_id=plugin.id, action="suspend", limit=limit)
            events = self._storage.audit(query)
            for event in events:
                if event.tenant is None:  # tenant suspensions are logged as "suspend" too
                    return event.at, event.actor
            if len(events) < limit:
                return plugin.installed_at, plugin.installed_by
            limit *= 4

    def _require_for_tenant(self, plugin_id: str, action: str, tenant: str) -> PluginRecord:
        record = self.plugin(plugin_id)
        if record.status is not PluginStatus.APPROVED:
            raise TransitionError(
                plugin_id,
                action,
                record.status.value,
                _ALLOWED[record.status],
                reason=f"{action} for tenant {tenant!r} needs an approved plugin",
            )
        return record

    def _require(self, plugin_id: str, action: str, *states: PluginStatus) -> PluginRecord:
        record = self.plugin(plugin_id)
        if record.status not in states:
            raise TransitionError(plugin_id, action, record.status.value, _ALLOWED[record.status])
        return record

    def _manifest(self, record: PluginRecord) -> Manifest:
        key = (record.id, record.revision)
        manifest = self._manifests.get(key)
        if manifest is None:
            if len(self._manifests) > 1024:
                self._manifests.clear()
            manifest = self._manifests[key] = Manifest.from_dict(dict(record.manifest))
        return manifest

    def _audit(
        self,
        now: datetime,
        actor: str,
        action: str,
        plugin_id: str,
        *,
        tenant: str | None = None,
        before: Mapping[str, JSONValue] | None = None,
        after: Mapping[str, JSONValue] | None = None,
    ) -> AuditEvent:
        _require_text(actor, "actor")
        return AuditEvent(
            at=now,
            actor=actor,
            action=action,
            plugin_id=plugin_id,
            tenant=tenant,
            before=before,
            after=after,
        )

    def _set_status(
        self,
        current: PluginRecord,
        status: PluginStatus,
        *,
        actor: str,
        action: str,
        now: datetime | None = None,
        clear_tenants: bool = False,
        extra: Mapping[str, JSONValue] | None = None,
        **changes: Any,
    ) -> PluginRecord:
        now = now or self._clock()
        record = attrs.evolve(current, status=status, revision=current.revision + 1, **changes)
        after: dict[str, JSONValue] = {"status": status.value}
        if record.status_reason is not None:
            after["reason"] = record.status_reason
        after.update(extra or {})
        self._commit_plugin(
            record,
            action,
            now=now,
            actor=actor,
            before={"status": current.status.value},
            after=after,
            clear_tenants=clear_tenants,
        )
        return record

    def _write_tenant(
        self,
        plugin: PluginRecord,
        stored: TenantRecord | None,
        tenant: str,
        actor: str,
        action: str,
        *,
        before: Mapping[str, JSONValue],
        after: Mapping[str, JSONValue],
        changed_settings: Mapping[str, JSONValue] | None = None,
        **changes: Any,
    ) -> TenantRecord:
        """Commit a change to the plugin's tenant record, with its audit event.

        The change is pinned to the plugin's revision, so a decision taken on a
        status another writer has changed since raises ConflictError.
        """
        _require_text(tenant, "tenant")
        now = self._clock()
        if stored is None:
            stored = TenantRecord(
                plugin_id=plugin.id, tenant=tenant, changed_at=now, changed_by=actor, revision=0
            )
        record = attrs.evolve(
            stored, changed_at=now, changed_by=actor, revision=stored.revision + 1, **changes
        )
        audit = self._audit(
            now, actor, action, plugin.id, tenant=tenant, before=before, after=after
        )
        self._commit(
            Change(
                plugin_id=plugin.id, plugin_revision=plugin.revision, tenant=record, audit=audit
            ),
            changed_settings=changed_settings,
        )
        return record

    def _unstored(self, plugin_id: str, tenant: str, actor: str) -> TenantRecord:
        """What a tenant that was never configured looks like (revision 0: not stored)."""
        _require_text(tenant, "tenant")
        return TenantRecord(
            plugin_id=plugin_id,
            tenant=tenant,
            changed_at=self._clock(),
            changed_by=actor,
            revision=0,
        )

    def _set_enabled(
        self, plugin_id: str, tenant: str, enabled: bool, *, actor: str
    ) -> TenantRecord:
        action = "enable" if enabled else "disable"
        allowed = (PluginStatus.APPROVED,) if enabled else _CONFIGURABLE
        plugin = self._require(plugin_id, action, *allowed)
        stored = self._storage.get_tenant(plugin_id, tenant)
        if stored is not None and stored.enabled is enabled:
            return stored
        if stored is None and not enabled:
            return self._unstored(plugin_id, tenant, actor)
        return self._write_tenant(
            plugin,
            stored,
            tenant,
            actor,
            action,
            before={"enabled": not enabled},
            after={"enabled": enabled},
            enabled=enabled,
        )

    def _drop_undeclared(self, plugin_id: str, actor: str) -> None:
        """Revoke, tenant by tenant, the optional grants the installed manifest does not declare.

        Each tenant's revocation is its own change with its own audit event.
        The grants a plugin holds never include them anyway (see
        :meth:`grants`), so a revocation that keeps conflicting is logged and
        left for :meth:`revoke`.
        """
        for tenant in [t.tenant for t in self._storage.list_tenants(plugin_id)]:
            for _ in range(_DROP_ATTEMPTS):
                plugin = self.plugin(plugin_id)
                stored = self._storage.get_tenant(plugin_id, tenant)
                if stored is None or plugin.status not in _CONFIGURABLE:
                    break
                optional = self._manifest(plugin).optional_permissions
                kept = tuple(p for p in stored.optional_grants if p in optional)
                if kept == stored.optional_grants:
                    break
                dropped = tuple(p for p in stored.optional_grants if p not in optional)
                try:
                    self._write_tenant(
                        plugin,
                        stored,
                        tenant,
                        actor,
                        "revoke",
                        before={"optional_grants": list(stored.optional_grants)},
                        after={
                            "optional_grants": list(kept),
                            "dropped": list(dropped),
                            "reason": f"version {plugin.version} does not declare them",
                        },
                        optional_grants=kept,
                    )
                except ConflictError:
                    continue
                break
            else:
                _logger.warning(
                    "could not revoke the undeclared grants of plugin %r for tenant %r "
                    "(they count for nothing; revoke them by hand)",
                    plugin_id,
                    tenant,
                )

    def _set_grant(
        self, plugin_id: str, tenant: str, permission: str, granted: bool, *, actor: str
    ) -> TenantRecord:
        action = "grant" if granted else "revoke"
        plugin = self._require(plugin_id, action, *_CONFIGURABLE)
        optional = self._manifest(plugin).optional_permissions
        stored = self._storage.get_tenant(plugin_id, tenant)
        old = stored.optional_grants if stored is not None else ()
        # Any stored grant can be revoked, also one the installed version no longer declares.
        if permission not in optional and (granted or permission not in old):
            listed = ", ".join(optional) or "none"
            held = f"; granted for tenant {tenant!r}: {', '.join(old)}" if old else ""
            raise ValueError(
                f"{permission!r} is not an optional permission of plugin {plugin_id!r} "
                f"(optional permissions: {listed}{held})"
            )
        new = (
            tuple(sorted({*old, permission}))
            if granted
            else tuple(p for p in old if p != permission)
        )
        if new == old:
            return stored or self._unstored(plugin_id, tenant, actor)
        return self._write_tenant(
            plugin,
            stored,
            tenant,
            actor,
            action,
            before={"optional_grants": list(old)},
            after={"optional_grants": list(new)},
            optional_grants=new,
        )


#: How often dropping a tenant's undeclared grants is retried after a ConflictError.
_DROP_ATTEMPTS: Final = 5

_INSTALLED: Final = (
    PluginStatus.PENDING,
    PluginStatus.APPROVED,
    PluginStatus.SUSPENDED,
    PluginStatus.REJECTED,
)
_CONFIGURABLE: Final = (PluginStatus.PENDING, PluginStatus.APPROVED, PluginStatus.SUSPENDED)
#: The states whose version serves (or would, once resumed): a new version is staged beside it.
_RUNNING: Final = (PluginStatus.APPROVED, PluginStatus.SUSPENDED)
#: The states a new install replaces without ``reinstall``.
_REPLACEABLE: Final = (PluginStatus.REJECTED, PluginStatus.UNINSTALLED)
#: The actor of an approval the upgrade policy made.
_POLICY: Final = "upgrade-policy"


def _normal(plugin_id: str, version: str) -> str:
    """A version as the registry stores it (PEP 440, normalised)."""
    try:
        return str(Version(version))
    except InvalidVersion:
        raise VersionError(plugin_id, version, "not a PEP 440 version") from None


def switch_holder() -> str:
    """This process's name in a switch claim: ``<host name>:<pid>:<random>``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _holder_gone(holder: str) -> bool:
    """Whether a claim's holder is a process of this machine that no longer runs."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine's: its lease decides
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists (another user's, say)
        return False
    return False


def _state(record: TenantRecord) -> dict[str, JSONValue]:
    """What a kept version keeps of one tenant (see :class:`KeptVersion`)."""
    grants: list[JSONValue] = list(record.optional_grants)
    return {"settings": dict(record.settings), "optional_grants": grants}


def _mapping(value: object) -> Mapping[str, JSONValue]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: object) -> list[JSONValue]:
    return list(value) if isinstance(value, list) else []


def _require_text(value: object, name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string (got {value!r})")


def _masked(
    values: Mapping[str, JSONValue], keys: list[str], secrets: set[str]
) -> dict[str, JSONValue]:
    return {
        key: (MASK if key in secrets and values.get(key) is not None else values.get(key))
        for key in keys
    }
