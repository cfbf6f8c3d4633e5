"""The storage contract: one pytest suite that every :class:`~services_ai_plugins.Storage` passes.

Write a backend over your own database or ORM (Django, SQLAlchemy, ...), then
subclass :class:`StorageContract` in a test module and give it a ``storage``
fixture that yields a fresh, empty instance::

    import pytest
    from collections.abc import Iterator

    from services_ai_plugins.storage import Storage
    from services_ai_plugins_testing.storage_contract import StorageContract


    class TestMyStorage(StorageContract):
        @pytest.fixture
        def storage(self) -> Iterator[Storage]:
            store = MyStorage(...)
            yield store
            store.close()

Every ``test_*`` method then runs against your backend. Each states in its
docstring the behaviour it checks, and each failure says what the storage
returned and what the contract expects. The bundled memory and SQLite
backends pass the same suite.

The suite checks, for each part of the protocol:

* commits: every field of every record round-trips; the revision rule of
  :class:`~services_ai_plugins.Change` (``ConflictError`` with ``expected`` and
  ``actual``); a failed commit writes nothing; the generation grows by one per
  commit and ``commit`` returns it;
* versions: a plugin's archive and staged version round-trip; a change writes
  several tenant records at once (``Change.tenants``), all or nothing; kept
  versions are stored (``Change.keep``, replacing the plugin's copy of that
  version), forgotten (``Change.forget``) and listed oldest ``kept_at`` first;
* archives: ``put_artifact`` keeps bytes under their SHA-256, refuses a bad key
  or data that does not match it (``ValueError``), keeps the first copy when a
  hash is stored again (also by racing threads); ``get_artifact``,
  ``delete_artifact`` and ``artifacts`` read and forget them, and none of it
  moves the generation;
* queries: ``list_plugins``, ``list_tenants``, ``enabled_plugins`` (approved,
  enabled and not suspended for the tenant), ``versions`` and ``audit`` (every
  filter of :class:`~services_ai_plugins.AuditQuery`), with their orders;
* failures and metrics: stored in batches, queried (by plugin, by resolved,
  with a checked ``limit``), resolved (all, per tenant, or by id) and summed,
  without moving the generation;
* the data-access log: ``record_access`` stores batches of
  :class:`~services_ai_plugins.storage.AccessRecord` (every field round-trips,
  the storage gives the ids), ``access_log`` filters by every field of
  :class:`~services_ai_plugins.storage.AccessQuery` (``record_id``: one of a
  record's ids) newest first with a limit, ``prune_access`` forgets the records
  before a moment and says how many, and none of it moves the generation;
* the store quota ledger: ``charge_store`` counts keys and bytes per (plugin,
  tenant), returns a key's previous size, refuses a charge past ``max_keys``
  or ``max_bytes`` with ``QuotaExceeded`` (writing nothing) but lets a store
  over its limits shrink, and ``store_usage`` reports the totals;
* the plugins' key-value stores the SDK keeps: ``store_write`` keeps JSON
  values per (plugin, tenant) and charges them to the ledger in the same
  transaction (a refused write keeps neither the value nor its charge),
  ``store_read`` returns copies, ``store_remove`` and ``drop_store`` forget
  values and their charges (not the charges of values the host keeps), and
  an uninstall (a change with ``clear_tenants``) drops the plugin's store;
* concurrency: the storage is used from several threads at once; commits to
  different records all apply, of two writers racing for one record exactly
  one wins, and concurrent store charges and store writes never take a store
  past its limits.

Records are built with :func:`make_plugin`, :func:`make_tenant`,
:func:`make_audit`, :func:`make_version`, :func:`make_failure`,
:func:`make_metrics`, :func:`make_staged` and :func:`make_kept`: each has
defaults for every field and takes any of them as a keyword. They are
public, for extra tests of your own.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

import attrs
import pytest

from services_ai_plugins import (
    AuditEvent,
    ConflictError,
    FailureRecord,
    HookMetrics,
    PluginRecord,
    PluginStatus,
    QuotaExceeded,
    StorageError,
    TenantRecord,
)
from services_ai_plugins.storage import (
    AccessQuery,
    AccessRecord,
    AccessStorage,
    ArtifactInfo,
    AuditQuery,
    Change,
    KeptVersion,
    MetricsDelta,
    SourceKind,
    StagedVersion,
    Storage,
    StoreUsage,
    VersionRecord,
)
from services_ai_plugins_testing._diff import differences, expect_same

if TYPE_CHECKING:
    from services_ai_plugins.types import JSONValue

__all__ = [
    "BASE_TIME",
    "StorageContract",
    "make_access",
    "make_audit",
    "make_failure",
    "make_kept",
    "make_metrics",
    "make_plugin",
    "make_staged",
    "make_tenant",
    "make_version",
]

#: The default moment of every record the helpers build (timezone-aware, UTC).
BASE_TIME: Final = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)

#: How long a thread of the concurrency tests may take before the test gives up.
_THREAD_TIMEOUT: Final = 30.0

_T = TypeVar("_T")


def make_plugin(
    plugin_id: str = "example-plugin",
    *,
    name: str | None = None,
    version: str = "1.0.0",
    status: PluginStatus = PluginStatus.PENDING,
    manifest: Mapping[str, JSONValue] | None = None,
    code_hash: str | None = None,
    source: SourceKind = SourceKind.FOLDER,
    package_path: str | None = None,
    installed_at: datetime = BASE_TIME,
    installed_by: str = "admin",
    approved_at: datetime | None = None,
    approved_by: str | None = None,
    status_reason: str | None = None,
    granted_permissions: Iterable[str] = (),
    revision: int = 1,
    artifact: str | None = None,
    staged: StagedVersion | None = None,
) -> PluginRecord:
    """Build a :class:`~services_ai_plugins.PluginRecord`; every field can be given.

    By default: a pending plugin installed from a folder at :data:`BASE_TIME`,
    revision 1. ``name`` defaults to a title made of the id, ``manifest`` to a
    minimal manifest with the id, name and version, and ``code_hash`` to a
    SHA-256 of the id and version. No archive, nothing staged.

    >>> make_plugin("crm-sync", status=PluginStatus.APPROVED).name
    'Crm Sync'
    """
    title = name if name is not None else plugin_id.replace("-", " ").title()
    return PluginRecord(
        id=plugin_id,
        name=title,
        version=version,
        status=status,
        manifest=manifest if manifest is not None else _manifest(plugin_id, title, version),
        code_hash=code_hash if code_hash is not None else _sha256(f"{plugin_id}=={version}"),
        source=source,
        package_path=package_path,
        installed_at=installed_at,
        installed_by=installed_by,
        approved_at=approved_at,
        approved_by=approved_by,
        status_reason=status_reason,
        granted_permissions=tuple(granted_permissions),
        revision=revision,
        artifact=artifact,
        staged=staged,
    )


def make_staged(
    version: str = "2.0.0",
    *,
    plugin_id: str = "example-plugin",
    manifest: Mapping[str, JSONValue] | None = None,
    code_hash: str | None = None,
    source: SourceKind = SourceKind.ARCHIVE,
    package_path: str | None = None,
    artifact: str | None = None,
    installed_at: datetime = BASE_TIME,
    installed_by: str = "admin",
    approved_at: datetime | None = None,
    approved_by: str | None = None,
    auto_approved: bool = False,
) -> StagedVersion:
    """Build a :class:`~services_ai_plugins.storage.StagedVersion`; every field can be given.

    By default: version 2.0.0 of ``plugin_id`` from an archive, installed at
    :data:`BASE_TIME` and waiting for approval; ``manifest`` and ``code_hash``
    as in :func:`make_plugin`.
    """
    title = plugin_id.replace("-", " ").title()
    return StagedVersion(
        version=version,
        manifest=manifest if manifest is not None else _manifest(plugin_id, title, version),
        code_hash=code_hash if code_hash is not None else _sha256(f"{plugin_id}=={version}"),
        source=source,
        package_path=package_path,
        artifact=artifact,
        installed_at=installed_at,
        installed_by=installed_by,
        approved_at=approved_at,
        approved_by=approved_by,
        auto_approved=auto_approved,
    )


def make_kept(
    plugin_id: str = "example-plugin",
    version: str = "1.0.0",
    *,
    manifest: Mapping[str, JSONValue] | None = None,
    code_hash: str | None = None,
    source: SourceKind = SourceKind.ARCHIVE,
    package_path: str | None = None,
    artifact: str | None = None,
    granted_permissions: Iterable[str] = (),
    tenants: Mapping[str, Mapping[str, JSONValue]] | None = None,
    kept_at: datetime = BASE_TIME,
) -> KeptVersion:
    """Build a :class:`~services_ai_plugins.storage.KeptVersion`; every field can be given.

    By default: version 1.0.0 from an archive, kept at :data:`BASE_TIME`
    without tenants; ``manifest`` and ``code_hash`` as in :func:`make_plugin`.
    """
    title = plugin_id.replace("-", " ").title()
    return KeptVersion(
        plugin_id=plugin_id,
        version=version,
        manifest=manifest if manifest is not None else _manifest(plugin_id, title, version),
        code_hash=code_hash if code_hash is not None else _sha256(f"{plugin_id}=={version}"),
        source=source,
        package_path=package_path,
        artifact=artifact,
        granted_permissions=tuple(granted_permissions),
        tenants=tenants if tenants is not None else {},
        kept_at=kept_at,
    )


def make_tenant(
    plugin_id: str = "example-plugin",
    tenant: str = "acme",
    *,
    enabled: bool = False,
    suspended_reason: str | None = None,
    optional_grants: Iterable[str] = (),
    settings: Mapping[str, JSONValue] | None = None,
    changed_at: datetime = BASE_TIME,
    changed_by: str = "admin",
    revision: int = 1,
) -> TenantRecord:
    """Build a :class:`~services_ai_plugins.TenantRecord`; every field can be given.

    By default: disabled, not suspended, no grants, no settings, changed at
    :data:`BASE_TIME`, revision 1.
    """
    return TenantRecord(
        plugin_id=plugin_id,
        tenant=tenant,
        enabled=enabled,
        suspended_reason=suspended_reason,
        optional_grants=tuple(optional_grants),
        settings=settings if settings is not None else {},
        changed_at=changed_at,
        changed_by=changed_by,
        revision=revision,
    )


def make_audit(
    plugin_id: str = "example-plugin",
    action: str = "install",
    *,
    actor: str = "admin",
    at: datetime = BASE_TIME,
    tenant: str | None = None,
    before: Mapping[str, JSONValue] | None = None,
    after: Mapping[str, JSONValue] | None = None,
) -> AuditEvent:
    """Build an :class:`~services_ai_plugins.AuditEvent` without an id (the storage gives it)."""
    return AuditEvent(
        at=at,
        actor=actor,
        action=action,
        plugin_id=plugin_id,
        tenant=tenant,
        before=before,
        after=after,
    )


def make_version(
    plugin_id: str = "example-plugin",
    version: str = "1.0.0",
    *,
    code_hash: str | None = None,
    changelog: str | None = None,
    installed_at: datetime = BASE_TIME,
    installed_by: str = "admin",
) -> VersionRecord:
    """Build a :class:`~services_ai_plugins.VersionRecord`; ``code_hash`` as in :func:`make_plugin`.

    By default: version 1.0.0 without a changelog, installed at :data:`BASE_TIME`.
    """
    return VersionRecord(
        plugin_id=plugin_id,
        version=version,
        code_hash=code_hash if code_hash is not None else _sha256(f"{plugin_id}=={version}"),
        changelog=changelog,
        installed_at=installed_at,
        installed_by=installed_by,
    )


def make_failure(
    plugin_id: str = "example-plugin",
    *,
    tenant: str | None = "acme",
    hook: str = "lead_created",
    exc_type: str = "ValueError",
    message: str = "boom",
    traceback: str = 'Traceback (most recent call last):\n  File "main.py"\nValueError: boom',
    at: datetime = BASE_TIME,
    resolved: bool = False,
) -> FailureRecord:
    """Build a :class:`~services_ai_plugins.FailureRecord` without an id (the storage gives it)."""
    return FailureRecord(
        plugin_id=plugin_id,
        tenant=tenant,
        hook=hook,
        exc_type=exc_type,
        message=message,
        traceback=traceback,
        at=at,
        resolved=resolved,
    )


def make_access(
    plugin_id: str = "example-plugin",
    *,
    tenant: str = "acme",
    method: str = "get_lead",
    permission: str = "read_leads",
    record_type: str | None = "lead",
    record_ids: Sequence[str] = ("lead-1",),
    count: int = 1,
    at: datetime = BASE_TIME,
) -> AccessRecord:
    """Build an :class:`~services_ai_plugins.storage.AccessRecord` without an id (the storage
    gives it): by default one lead read."""
    return AccessRecord(
        plugin_id=plugin_id,
        tenant=tenant,
        method=method,
        permission=permission,
        record_type=record_type,
        record_ids=tuple(record_ids),
        count=count,
        at=at,
    )


def _access(storage: Storage) -> AccessStorage:
    assert isinstance(storage, AccessStorage), (
        f"{type(storage).__name__} keeps no data-access log: it needs record_access, "
        "access_log and prune_access (AccessStorage)"
    )
    return storage


def make_metrics(
    plugin_id: str = "example-plugin",
    hook: str = "lead_created",
    *,
    calls: int = 1,
    errors: int = 0,
    total_duration: float = 0.5,
    max_duration: float = 0.5,
    last_call: datetime = BASE_TIME,
) -> MetricsDelta:
    """Build a :class:`~services_ai_plugins.MetricsDelta`: by default one call of half a second."""
    return MetricsDelta(
        plugin_id=plugin_id,
        hook=hook,
        calls=calls,
        errors=errors,
        total_duration=total_duration,
        max_duration=max_duration,
        last_call=last_call,
    )


class StorageContract:
    """The behaviour every :class:`~services_ai_plugins.Storage` backend must have.

    Subclass it in a test module (its name starting with ``Test``) and override
    the ``storage`` fixture to yield a fresh, empty backend, closing it
    afterwards; see the module docstring. Each test gets its own instance.

    The backend is used from several threads at once by the concurrency tests,
    as a web application's request threads use it.

    This base class is never collected on its own, even when imported under a
    ``Test*`` name: subclasses are collected unless they set ``__test__ = False``
    themselves (an abstract intermediate class, say).
    """

    __test__: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__test__" not in cls.__dict__:
            cls.__test__ = True

    @pytest.fixture
    def storage(self) -> Iterator[Storage]:
        """The backend under test: override this fixture to yield a fresh, empty instance."""
        pytest.fail(
            f"{type(self).__name__} runs the storage contract but does not define the "
            "`storage` fixture: override it in the class to yield a fresh, empty "
            "instance of your backend (and close it afterwards), e.g.\n\n"
            "    @pytest.fixture\n"
            "    def storage(self) -> Iterator[Storage]:\n"
            "        store = MyStorage(...)\n"
            "        yield store\n"
            "        store.close()",
            pytrace=False,
        )

    # -- a new storage ---------------------------------------------------------------------

    def test_is_a_storage(self, storage: Storage) -> None:
        """The backend satisfies the runtime-checkable Storage protocol."""
        assert isinstance(storage, Storage), (
            f"{type(storage).__name__} lacks a method of the Storage protocol: "
            f"{', '.join(_missing_methods(storage))}"
        )

    def test_new_storage_is_empty(self, storage: Storage) -> None:
        """A new storage is at generation 0 and every query returns nothing."""
        expect_same(storage.generation(), 0, "generation() of a new storage")
        expect_same(storage.get_plugin("example-plugin"), None, "get_plugin() of a new storage")
        expect_same(
            storage.get_tenant("example-plugin", "acme"), None, "get_tenant() of a new storage"
        )
        expect_same(storage.list_plugins(), [], "list_plugins() of a new storage")
        expect_same(
            storage.list_plugins(PluginStatus.APPROVED),
            [],
            "list_plugins(APPROVED) of a new storage",
        )
        expect_same(storage.list_tenants("example-plugin"), [], "list_tenants() of a new storage")
        expect_same(storage.enabled_plugins("acme"), [], "enabled_plugins() of a new storage")
        expect_same(storage.versions("example-plugin"), [], "versions() of a new storage")
        expect_same(storage.audit(AuditQuery()), [], "audit() of a new storage")
        expect_same(storage.failures(), [], "failures() of a new storage")
        expect_same(storage.metrics(), [], "metrics() of a new storage")
        expect_same(storage.kept_versions("example-plugin"), [], "kept_versions() of a new storage")
        expect_same(storage.artifacts(), [], "artifacts() of a new storage")
        expect_same(
            storage.get_artifact(_sha256("nothing")), None, "get_artifact() of a new storage"
        )

    # -- plugin records --------------------------------------------------------------------

    def test_new_plugin_round_trips_every_field(self, storage: Storage) -> None:
        """A plugin committed at revision 1 reads back equal, field by field and type by type."""
        plugin = make_plugin(
            "unicode-plugin",
            name="Ünïcødé 插件 “quotes” 🚀",
            version="2.0.0rc1",
            status=PluginStatus.APPROVED,
            manifest=_NESTED_JSON,
            source=SourceKind.ARCHIVE,
            package_path="/srv/plugins/unicode-plugin/2.0.0rc1",
            installed_at=BASE_TIME,
            installed_by="ådmin@example.com",
            # Another offset than UTC: the same instant must come back.
            approved_at=datetime(2024, 5, 2, 9, 30, 0, 1, tzinfo=timezone(timedelta(hours=5.5))),
            approved_by="root",
            status_reason="looks fine ✓",
            granted_permissions=("read_leads", "send_notifications"),
        )
        storage.commit(Change(plugin_id=plugin.id, plugin=plugin, audit=make_audit(plugin.id)))
        expect_same(storage.get_plugin(plugin.id), plugin, "get_plugin() after committing it")
        expect_same(storage.list_plugins(), [plugin], "list_plugins() after committing it")

    def test_minimal_plugin_keeps_empty_and_none_fields(self, storage: Storage) -> None:
        """Optional fields left None and an empty permission tuple read back as None and ()."""
        plugin = make_plugin(source=SourceKind.ENTRY_POINT, manifest={"id": "example-plugin"})
        storage.commit(Change(plugin_id=plugin.id, plugin=plugin, audit=make_audit(plugin.id)))
        expect_same(storage.get_plugin(plugin.id), plugin, "get_plugin() of a minimal plugin")

    def test_commit_returns_the_generation_which_grows_by_one(self, storage: Storage) -> None:
        """Each commit moves the generation by exactly one and returns the new value."""
        for number, plugin_id in enumerate(("alpha", "beta", "gamma"), start=1):
            plugin = make_plugin(plugin_id)
            returned = storage.commit(
                Change(plugin_id=plugin_id, plugin=plugin, audit=make_audit(plugin_id))
            )
            expect_same(returned, number, f"commit() #{number} must return the new generation")
            expect_same(storage.generation(), number, f"generation() after {number} commit(s)")
        # A change may write only its audit event (and check the plugin's revision).
        returned = storage.commit(
            Change(plugin_id="alpha", plugin_revision=1, audit=make_audit("alpha", "inspect"))
        )
        expect_same(returned, 4, "commit() of an audit-only change must return the new generation")
        expect_same(storage.generation(), 4, "generation() after an audit-only change")

    def test_next_revision_replaces_the_plugin(self, storage: Storage) -> None:
        """A plugin record at revision r + 1 replaces the stored one at revision r."""
        pending = make_plugin()
        _commit_plugin(storage, pending)
        approved = attrs.evolve(
            pending,
            status=PluginStatus.APPROVED,
            approved_at=BASE_TIME + timedelta(hours=1),
            approved_by="root",
            granted_permissions=("read_leads",),
            revision=2,
        )
        _commit_plugin(storage, approved, action="approve")
        suspended = attrs.evolve(
            approved, status=PluginStatus.SUSPENDED, status_reason="too many failures", revision=3
        )
        _commit_plugin(storage, suspended, action="suspend")
        expect_same(storage.get_plugin(pending.id), suspended, "get_plugin() after two updates")
        expect_same(storage.list_plugins(), [suspended], "list_plugins() after two updates")

    def test_list_plugins_is_sorted_by_id(self, storage: Storage) -> None:
        """list_plugins() returns the plugins by id, whatever the order they were written in."""
        for plugin_id in ("zeta", "alpha", "mid"):
            _commit_plugin(storage, make_plugin(plugin_id))
        expect_same(
            [p.id for p in storage.list_plugins()], ["alpha", "mid", "zeta"], "list_plugins() ids"
        )

    def test_list_plugins_filters_by_status(self, storage: Storage) -> None:
        """list_plugins(status) returns only the plugins with that status, by id."""
        statuses = {
            "epsilon": PluginStatus.APPROVED,
            "delta": PluginStatus.PENDING,
            "gamma": PluginStatus.APPROVED,
            "beta": PluginStatus.SUSPENDED,
            "alpha": PluginStatus.UNINSTALLED,
        }
        for plugin_id, status in statuses.items():
            _commit_plugin(storage, make_plugin(plugin_id, status=status))
        for status in PluginStatus:
            expected = sorted(p for p, s in statuses.items() if s is status)
            expect_same(
                [p.id for p in storage.list_plugins(status)],
                expected,
                f"list_plugins({status}) ids",
            )
        expect_same(
            [p.id for p in storage.list_plugins()],
            sorted(statuses),
            "list_plugins() ids without a status filter",
        )

    # -- revisions and conflicts -----------------------------------------------------------

    def test_new_plugin_over_an_existing_one_conflicts(self, storage: Storage) -> None:
        """Writing revision 1 of a plugin that exists raises ConflictError(expected=0, actual=1)."""
        _commit_plugin(storage, make_plugin())
        again = make_plugin(version="2.0.0")
        _expect_conflict(
            storage,
            Change(plugin_id=again.id, plugin=again, audit=make_audit(again.id)),
            expected=0,
            actual=1,
            what="installing a plugin id that is already stored",
        )

    def test_skipped_revision_conflicts(self, storage: Storage) -> None:
        """Writing revision 3 over stored revision 1 raises ConflictError(expected=2, actual=1)."""
        _commit_plugin(storage, make_plugin())
        skipped = make_plugin(status=PluginStatus.APPROVED, revision=3)
        _expect_conflict(
            storage,
            Change(plugin_id=skipped.id, plugin=skipped, audit=make_audit(skipped.id, "approve")),
            expected=2,
            actual=1,
            what="writing revision 3 over revision 1",
        )

    def test_update_of_a_missing_plugin_conflicts(self, storage: Storage) -> None:
        """Writing revision 2 of a plugin not stored raises ConflictError(expected=1, actual=0)."""
        update = make_plugin(status=PluginStatus.APPROVED, revision=2)
        _expect_conflict(
            storage,
            Change(plugin_id=update.id, plugin=update, audit=make_audit(update.id, "approve")),
            expected=1,
            actual=0,
            what="writing revision 2 of a plugin that is not stored",
        )

    def test_stale_plugin_revision_conflicts(self, storage: Storage) -> None:
        """A plugin_revision that is not the stored one raises ConflictError with both revisions."""
        plugin = make_plugin()
        _commit_plugin(storage, plugin)
        _commit_plugin(storage, attrs.evolve(plugin, status=PluginStatus.APPROVED, revision=2))
        _expect_conflict(
            storage,
            Change(plugin_id=plugin.id, plugin_revision=1, audit=make_audit(plugin.id, "inspect")),
            expected=1,
            actual=2,
            what="a change decided on revision 1 of a plugin now at revision 2",
        )
        _expect_conflict(
            storage,
            Change(plugin_id="missing", plugin_revision=1, audit=make_audit("missing", "inspect")),
            expected=1,
            actual=0,
            what="a change decided on revision 1 of a plugin that is not stored",
        )

    def test_plugin_conflict_writes_nothing(self, storage: Storage) -> None:
        """A change whose plugin revision conflicts writes none of its parts, not even its audit."""
        plugin = make_plugin(status=PluginStatus.APPROVED)
        _commit_plugin(storage, plugin)
        _commit_tenant(storage, make_tenant(enabled=True))
        before = _observe(storage, plugin.id)
        stale = attrs.evolve(plugin, version="2.0.0", revision=3)
        change = Change(
            plugin_id=plugin.id,
            plugin=stale,
            tenant=make_tenant(tenant="globex", enabled=True),
            version=make_version(version="2.0.0"),
            clear_tenants=True,
            audit=make_audit(plugin.id, "upgrade"),
        )
        _expect_conflict(storage, change, expected=2, actual=1, what="a stale plugin record")
        _expect_unchanged(storage, plugin.id, before, "a change that raised ConflictError")

    def test_tenant_conflict_writes_nothing(self, storage: Storage) -> None:
        """A change whose tenant revision conflicts writes nothing, not even its plugin record."""
        plugin = make_plugin(status=PluginStatus.APPROVED)
        _commit_plugin(storage, plugin)
        _commit_tenant(storage, make_tenant(enabled=True))
        before = _observe(storage, plugin.id)
        change = Change(
            plugin_id=plugin.id,
            plugin=attrs.evolve(plugin, version="2.0.0", revision=2),
            tenant=make_tenant(enabled=False, revision=3),
            version=make_version(version="2.0.0"),
            audit=make_audit(plugin.id, "upgrade"),
        )
        _expect_conflict(storage, change, expected=2, actual=1, what="a stale tenant record")
        _expect_unchanged(storage, plugin.id, before, "a change that raised ConflictError")

    def test_conflict_after_clear_tenants_writes_nothing(self, storage: Storage) -> None:
        """A conflicting change with clear_tenants leaves every tenant record in place."""
        plugin = make_plugin(status=PluginStatus.APPROVED)
        _commit_plugin(storage, plugin)
        _commit_tenant(storage, make_tenant(tenant="acme", enabled=True))
        _commit_tenant(storage, make_tenant(tenant="globex", enabled=True))
        before = _observe(storage, plugin.id)
        # clear_tenants removes the stored records first, so only revision 1 may follow it.
        change = Change(
            plugin_id=plugin.id,
            plugin=attrs.evolve(plugin, status=PluginStatus.UNINSTALLED, revision=2),
            tenant=make_tenant(tenant="acme", revision=2),
            clear_tenants=True,
            audit=make_audit(plugin.id, "uninstall"),
        )
        _expect_conflict(
            storage,
            change,
            expected=1,
            actual=0,
            what="a tenant record at revision 2 in a change that clears the tenants",
        )
        _expect_unchanged(storage, plugin.id, before, "a change that raised ConflictError")

    # -- tenant records --------------------------------------------------------------------

    def test_tenant_create_and_update_round_trip(self, storage: Storage) -> None:
        """A tenant record is created at revision 1, updated at revision 2, and reads back equal."""
        plugin = make_plugin(status=PluginStatus.APPROVED)
        _commit_plugin(storage, plugin)
        created = make_tenant(
            tenant="café-東京",
            enabled=True,
            optional_grants=("send_email", "read_invoices"),
            settings={
                "api_key": "s3cr3t ✓",
                "retries": 3,
                "ratio": 0.25,
                "verbose": False,
                "nothing": None,
                "tags": ["a", "ü", 1, 2.5, True, None, []],
                "nested": {"deep": {"deeper": [{"x": 1}], "empty": {}}},
            },
            changed_by="ådmin",
        )
        _commit_tenant(storage, created)
        expect_same(
            storage.get_tenant(plugin.id, created.tenant), created, "get_tenant() after creating it"
        )
        updated = attrs.evolve(
            created,
            enabled=False,
            optional_grants=(),
            settings={"api_key": "new"},
            changed_at=BASE_TIME + timedelta(days=1),
            changed_by="someone else",
            revision=2,
        )
        _commit_tenant(storage, updated, action="disable")
        expect_same(
            storage.get_tenant(plugin.id, created.tenant), updated, "get_tenant() after updating it"
        )
        expect_same(storage.list_tenants(plugin.id), [updated], "list_tenants() after the update")
        expect_same(
            storage.get_tenant(plugin.id, "other"), None, "get_tenant() of a tenant never written"
        )

    def test_tenant_suspension_round_trips(self, storage: Storage) -> None:
        """suspended_reason reads back as written: set, replaced, and cleared to None."""
        _commit_plugin(storage, make_plugin(status=PluginStatus.APPROVED))
        suspended = make_tenant(enabled=True, suspended_reason="5 failures in a row: “boom” ✓")
        _commit_tenant(storage, suspended, action="suspend")
        expect_same(
            storage.get_tenant("example-plugin", "acme"),
            suspended,
            "get_tenant() of a tenant record with a suspended_reason",
        )
        expect_same(
            storage.list_tenants("example-plugin"),
            [suspended],
            "list_tenants() with a suspended tenant record",
        )
        resumed = attrs.evolve(suspended, suspended_reason=None, revision=2)
        _commit_tenant(storage, resumed, action="resume")
        expect_same(
            storage.get_tenant("example-plugin", "acme"),
            resumed,
            "get_tenant() after clearing suspended_reason (it must read back as None)",
        )
        again = attrs.evolve(resumed, suspended_reason="again", revision=3)
        _commit_tenant(storage, again, action="suspend")
        expect_same(
            storage.get_tenant("example-plugin", "acme"),
            again,
            "get_tenant() after suspending the tenant a second time",
        )

    def test_new_tenant_over_an_existing_one_conflicts(self, storage: Storage) -> None:
        """Creating a stored tenant record again raises ConflictError(expected=0, actual=1)."""
        _commit_plugin(storage, make_plugin())
        _commit_tenant(storage, make_tenant(enabled=True))
        before = _observe(storage, "example-plugin")
        _expect_conflict(
            storage,
            _tenant_change(make_tenant(enabled=False)),
            expected=0,
            actual=1,
            what="creating a tenant record that is already stored",
        )
        _expect_unchanged(storage, "example-plugin", before, "a change that raised ConflictError")

    def test_stale_tenant_update_conflicts(self, storage: Storage) -> None:
        """Writing a tenant record at a revision other than stored + 1 raises ConflictError."""
        _commit_plugin(storage, make_plugin())
        _commit_tenant(storage, make_tenant())
        _commit_tenant(storage, make_tenant(enabled=True, revision=2))
        _expect_conflict(
            storage,
            _tenant_change(make_tenant(settings={"lost": "update"}, revision=2)),
            expected=1,
            actual=2,
            what="a second writer of revision 2 of a tenant record",
        )
        _expect_conflict(
            storage,
            _tenant_change(make_tenant(revision=4)),
            expected=3,
            actual=2,
            what="writing revision 4 of a tenant record at revision 2",
        )
        _expect_conflict(
            storage,
            _tenant_change(make_tenant(tenant="globex", revision=2)),
            expected=1,
            actual=0,
            what="writing revision 2 of a tenant record that is not stored",
        )
        expect_same(
            storage.get_tenant("example-plugin", "acme"),
            make_tenant(enabled=True, revision=2),
            "get_tenant() after conflicting writes",
        )

    def test_tenant_write_checks_the_plugin_revision(self, storage: Storage) -> None:
        """A tenant write based on a stale plugin revision raises ConflictError, writing nothing."""
        plugin = make_plugin()
        _commit_plugin(storage, plugin)
        _commit_plugin(storage, attrs.evolve(plugin, status=PluginStatus.SUSPENDED, revision=2))
        before = _observe(storage, plugin.id)
        _expect_conflict(
            storage,
            _tenant_change(make_tenant(enabled=True), plugin_revision=1),
            expected=1,
            actual=2,
            what="enabling a tenant on the strength of revision 1 of a plugin now at revision 2",
        )
        _expect_unchanged(storage, plugin.id, before, "a change that raised ConflictError")
        _commit_tenant(storage, make_tenant(enabled=True), plugin_revision=2)
        expect_same(
            storage.get_tenant(plugin.id, "acme"),
            make_tenant(enabled=True),
            "get_tenant() after a write checked against the current plugin revision",
        )

    def test_plugin_and_tenant_written_in_one_change(self, storage: Storage) -> None:
        """A change with a plugin and a tenant record writes both, moving the generation once."""
        plugin = make_plugin()
        _commit_plugin(storage, plugin)
        approved = attrs.evolve(plugin, status=PluginStatus.APPROVED, revision=2)
        tenant = make_tenant(enabled=True)
        generation = storage.commit(
            Change(
                plugin_id=plugin.id,
                plugin=approved,
                tenant=tenant,
                audit=make_audit(plugin.id, "approve"),
            )
        )
        expect_same(generation, 2, "commit() of a plugin and a tenant record together")
        expect_same(storage.get_plugin(plugin.id), approved, "get_plugin() after the change")
        expect_same(storage.get_tenant(plugin.id, "acme"), tenant, "get_tenant() after the change")

    def test_list_tenants_is_sorted_and_per_plugin(self, storage: Storage) -> None:
        """list_tenants(plugin) returns that plugin's tenant records only, by tenant."""
        for plugin_id in ("alpha", "beta"):
            _commit_plugin(storage, make_plugin(plugin_id))
        for tenant in ("zulu", "alpha", "mike"):
            _commit_tenant(storage, make_tenant("alpha", tenant, enabled=tenant != "mike"))
        _commit_tenant(storage, make_tenant("beta", "bravo"))
        expect_same(
            storage.list_tenants("alpha"),
            [
                make_tenant("alpha", "alpha", enabled=True),
                make_tenant("alpha", "mike"),
                make_tenant("alpha", "zulu", enabled=True),
            ],
            "list_tenants('alpha')",
        )
        expect_same(
            storage.list_tenants("beta"), [make_tenant("beta", "bravo")], "list_tenants('beta')"
        )
        expect_same(storage.list_tenants("gamma"), [], "list_tenants() of an unknown plugin")

    # -- clear_tenants ---------------------------------------------------------------------

    def test_clear_tenants_removes_only_that_plugins_records(self, storage: Storage) -> None:
        """clear_tenants removes every tenant record of the plugin and none of other plugins."""
        for plugin_id in ("alpha", "beta"):
            _commit_plugin(storage, make_plugin(plugin_id, status=PluginStatus.APPROVED))
            for tenant in ("acme", "globex"):
                _commit_tenant(storage, make_tenant(plugin_id, tenant, enabled=True))
        _commit_tenant(storage, make_tenant("alpha", "acme", revision=2))
        storage.commit(
            Change(
                plugin_id="alpha",
                plugin=make_plugin("alpha", status=PluginStatus.UNINSTALLED, revision=2),
                clear_tenants=True,
                audit=make_audit("alpha", "uninstall"),
            )
        )
        expect_same(storage.list_tenants("alpha"), [], "list_tenants() of a cleared plugin")
        expect_same(storage.get_tenant("alpha", "acme"), None, "get_tenant() of a cleared plugin")
        expect_same(
            storage.list_tenants("beta"),
            [
                make_tenant("beta", "acme", enabled=True),
                make_tenant("beta", "globex", enabled=True),
            ],
            "list_tenants() of another plugin after clearing one",
        )
        expect_same(storage.enabled_plugins("acme"), ["beta"], "enabled_plugins() after clearing")

    def test_clear_tenants_keeps_the_tenant_written_with_it(self, storage: Storage) -> None:
        """A tenant record at revision 1 in a change that clears the tenants survives it."""
        plugin = make_plugin(status=PluginStatus.APPROVED)
        _commit_plugin(storage, plugin)
        _commit_tenant(storage, make_tenant(tenant="acme", enabled=True))
        _commit_tenant(storage, make_tenant(tenant="acme", enabled=True, revision=2))
        _commit_tenant(storage, make_tenant(tenant="globex", enabled=True))
        fresh = make_tenant(tenant="acme", settings={"fresh": True})
        storage.commit(
            Change(
                plugin_id=plugin.id,
                plugin=attrs.evolve(plugin, version="2.0.0", revision=2),
                tenant=fresh,
                clear_tenants=True,
                audit=make_audit(plugin.id, "reinstall"),
            )
        )
        expect_same(
            storage.list_tenants(plugin.id),
            [fresh],
            "list_tenants() after a change that cleared the tenants and wrote one",
        )

    # -- enabled_plugins -------------------------------------------------------------------

    def test_enabled_plugins_are_approved_enabled_and_sorted(self, storage: Storage) -> None:
        """enabled_plugins(tenant) lists the approved plugins enabled for that tenant, by id."""
        plugins = {
            "zeta": (PluginStatus.APPROVED, {"acme": True}),
            "alpha": (PluginStatus.APPROVED, {"acme": True, "globex": True}),
            "mid": (PluginStatus.APPROVED, {"acme": True, "globex": False}),
            "disabled": (PluginStatus.APPROVED, {"acme": False}),
            "pending": (PluginStatus.PENDING, {"acme": True}),
            "suspended": (PluginStatus.SUSPENDED, {"acme": True}),
            "rejected": (PluginStatus.REJECTED, {"acme": True}),
            "uninstalled": (PluginStatus.UNINSTALLED, {"acme": True}),
            "other": (PluginStatus.APPROVED, {"globex": True}),
            "nobody": (PluginStatus.APPROVED, {}),
        }
        for plugin_id, (status, tenants) in plugins.items():
            _commit_plugin(storage, make_plugin(plugin_id, status=status))
            for tenant, enabled in tenants.items():
                _commit_tenant(storage, make_tenant(plugin_id, tenant, enabled=enabled))
        expect_same(
            storage.enabled_plugins("acme"), ["alpha", "mid", "zeta"], "enabled_plugins('acme')"
        )
        expect_same(
            storage.enabled_plugins("globex"), ["alpha", "other"], "enabled_plugins('globex')"
        )
        expect_same(
            storage.enabled_plugins("initech"), [], "enabled_plugins() of a tenant with none"
        )

    def test_enabled_plugins_leave_out_suspended_tenants(self, storage: Storage) -> None:
        """A plugin suspended for a tenant is not listed for it, but is for its other tenants."""
        tenants: dict[str, dict[str, tuple[bool, str | None]]] = {
            "alpha": {"acme": (True, None), "globex": (True, "5 failures")},
            "beta": {"acme": (True, "timeouts"), "globex": (True, None)},
            "gamma": {"acme": (False, "disabled and suspended")},
            "delta": {"acme": (True, None)},
        }
        for plugin_id, records in tenants.items():
            _commit_plugin(storage, make_plugin(plugin_id, status=PluginStatus.APPROVED))
            for tenant, (enabled, reason) in records.items():
                record = make_tenant(plugin_id, tenant, enabled=enabled, suspended_reason=reason)
                _commit_tenant(storage, record)
        expect_same(
            storage.enabled_plugins("acme"),
            ["alpha", "delta"],
            "enabled_plugins('acme') (beta and gamma are suspended for acme)",
        )
        expect_same(
            storage.enabled_plugins("globex"),
            ["beta"],
            "enabled_plugins('globex') (alpha is suspended for globex)",
        )

    def test_enabled_plugins_follow_status_and_activation(self, storage: Storage) -> None:
        """enabled_plugins() follows each change of the plugin's status and the tenant's flag."""
        pending = make_plugin()
        _commit_plugin(storage, pending)
        _commit_tenant(storage, make_tenant(enabled=True))
        expect_same(storage.enabled_plugins("acme"), [], "enabled_plugins() while pending")
        approved = attrs.evolve(pending, status=PluginStatus.APPROVED, revision=2)
        _commit_plugin(storage, approved, action="approve")
        expect_same(
            storage.enabled_plugins("acme"), [pending.id], "enabled_plugins() once approved"
        )
        _commit_tenant(storage, make_tenant(revision=2), plugin_revision=2)
        expect_same(storage.enabled_plugins("acme"), [], "enabled_plugins() once disabled")
        _commit_tenant(storage, make_tenant(enabled=True, revision=3), plugin_revision=2)
        expect_same(
            storage.enabled_plugins("acme"), [pending.id], "enabled_plugins() once re-enabled"
        )
        _commit_tenant(
            storage,
            make_tenant(enabled=True, suspended_reason="timeouts", revision=4),
            plugin_revision=2,
            action="suspend",
        )
        expect_same(
            storage.enabled_plugins("acme"), [], "enabled_plugins() once suspended for the tenant"
        )
        _commit_tenant(storage, make_tenant(enabled=True, revision=5), plugin_revision=2)
        expect_same(
            storage.enabled_plugins("acme"),
            [pending.id],
            "enabled_plugins() once the tenant's suspension is lifted",
        )
        suspended = attrs.evolve(approved, status=PluginStatus.SUSPENDED, revision=3)
        _commit_plugin(storage, suspended, action="suspend")
        expect_same(storage.enabled_plugins("acme"), [], "enabled_plugins() once suspended")

    # -- versions --------------------------------------------------------------------------

    def test_versions_are_kept_in_order_per_plugin(self, storage: Storage) -> None:
        """Every version record is kept, even a repeated version, oldest first, per plugin."""
        history = [
            make_version("alpha", "1.0.0", changelog=None),
            make_version("beta", "0.1.0", installed_at=BASE_TIME + timedelta(minutes=1)),
            make_version(
                "alpha",
                "2.0.0",
                changelog="## 2.0.0\n\n* Ünïcødé ✓",
                installed_at=BASE_TIME + timedelta(minutes=2),
                installed_by="root",
            ),
            # A rollback installs 1.0.0 again: a third record, not a replaced first one.
            make_version("alpha", "1.0.0", installed_at=BASE_TIME + timedelta(minutes=3)),
        ]
        revisions: dict[str, int] = {}
        for record in history:
            revision = revisions.get(record.plugin_id, 0) + 1
            revisions[record.plugin_id] = revision
            plugin = make_plugin(record.plugin_id, version=record.version, revision=revision)
            _commit_plugin(storage, plugin, action="install", version=record)
        expect_same(
            storage.versions("alpha"),
            [r for r in history if r.plugin_id == "alpha"],
            "versions('alpha')",
        )
        expect_same(storage.versions("beta"), [history[1]], "versions('beta')")
        expect_same(storage.versions("gamma"), [], "versions() of an unknown plugin")

    # -- audit -----------------------------------------------------------------------------

    def test_each_commit_writes_exactly_its_audit_event(self, storage: Storage) -> None:
        """Each commit stores its audit event once, with an int id the storage assigns."""
        plugin = make_plugin()
        events = [
            make_audit(plugin.id, "install", after={"status": "pending", "version": "1.0.0"}),
            make_audit(
                plugin.id,
                "configure",
                actor="ådmin",
                tenant="café-東京",
                at=BASE_TIME + timedelta(seconds=1),
                before={"settings": {"api_key": "***", "retries": 3}, "enabled": False},
                after=_NESTED_JSON,
            ),
            make_audit(plugin.id, "inspect", at=BASE_TIME + timedelta(seconds=2), before={}),
        ]
        _commit_plugin(storage, plugin, audit=events[0])
        storage.commit(
            Change(
                plugin_id=plugin.id,
                plugin_revision=1,
                tenant=make_tenant(tenant="café-東京"),
                audit=events[1],
            )
        )
        storage.commit(Change(plugin_id=plugin.id, plugin_revision=1, audit=events[2]))
        stored = storage.audit(AuditQuery())
        expect_same(len(stored), 3, "number of audit events after three commits")
        _expect_ids([e.id for e in stored], "audit()")
        expected = [attrs.evolve(e, id=s.id) for e, s in zip(reversed(events), stored, strict=True)]
        expect_same(stored, expected, "audit() after three commits (newest first)")

    def test_audit_ids_grow_and_order_newest_first(self, storage: Storage) -> None:
        """Audit ids strictly grow with each commit, and audit() orders by id, not by time."""
        _commit_plugin(storage, make_plugin(), audit=make_audit(after={"seq": 1}))
        # The events' own times go backwards: the order must still follow the commits.
        for seq in range(2, 6):
            at = BASE_TIME - timedelta(minutes=seq)
            _log(storage, make_audit(action="inspect", at=at, after={"seq": seq}))
        stored = storage.audit(AuditQuery())
        expect_same(
            _seqs(stored), [5, 4, 3, 2, 1], "audit() order, by after['seq'] (newest commit first)"
        )
        ids = _expect_ids([e.id for e in stored], "audit()")
        assert ids == sorted(set(ids), reverse=True), (
            f"audit() ids must strictly grow with each commit; newest first they are {ids}"
        )

    def test_audit_filters_by_plugin_tenant_actor_and_action(self, storage: Storage) -> None:
        """Each AuditQuery field filters the events, and given together they must all match."""
        _audit_history(storage)
        cases: list[tuple[AuditQuery, list[int]]] = [
            (AuditQuery(), [6, 5, 4, 3, 2, 1]),
            (AuditQuery(plugin_id="alpha"), [6, 5, 3, 1]),
            (AuditQuery(plugin_id="beta"), [4, 2]),
            (AuditQuery(plugin_id="gamma"), []),
            (AuditQuery(tenant="acme"), [6, 4, 3]),
            (AuditQuery(tenant="globex"), [5]),
            (AuditQuery(actor="bob"), [5, 4, 2]),
            (AuditQuery(action="enable"), [4, 3]),
            (AuditQuery(plugin_id="alpha", tenant="acme"), [6, 3]),
            (AuditQuery(plugin_id="alpha", tenant="acme", actor="alice", action="enable"), [3]),
            (AuditQuery(plugin_id="beta", actor="alice"), []),
        ]
        for query, expected in cases:
            expect_same(
                _seqs(storage.audit(query)), expected, f"events (by after['seq']) of {_call(query)}"
            )

    def test_audit_since_is_inclusive_and_until_exclusive(self, storage: Storage) -> None:
        """AuditQuery.since keeps events at that moment; until drops them."""
        _audit_history(storage)
        minute = timedelta(minutes=1)
        cases: list[tuple[AuditQuery, list[int]]] = [
            (AuditQuery(since=BASE_TIME + 2 * minute), [6, 5, 4, 3]),
            (AuditQuery(until=BASE_TIME + 2 * minute), [2, 1]),
            (AuditQuery(since=BASE_TIME + minute, until=BASE_TIME + 4 * minute), [4, 3, 2]),
            (AuditQuery(since=BASE_TIME + 2 * minute, until=BASE_TIME + 2 * minute), []),
            (AuditQuery(since=BASE_TIME + 10 * minute), []),
            (AuditQuery(plugin_id="alpha", since=BASE_TIME + minute), [6, 5, 3]),
        ]
        for query, expected in cases:
            expect_same(
                _seqs(storage.audit(query)), expected, f"events (by after['seq']) of {_call(query)}"
            )

    def test_audit_time_filters_compare_instants(self, storage: Storage) -> None:
        """since and until given in another UTC offset select the same instants."""
        _audit_history(storage)
        since = (BASE_TIME + timedelta(minutes=2)).astimezone(timezone(timedelta(hours=-5)))
        until = (BASE_TIME + timedelta(minutes=5)).astimezone(timezone(timedelta(hours=9)))
        query = AuditQuery(since=since, until=until)
        expect_same(
            _seqs(storage.audit(query)), [5, 4, 3], f"events (by after['seq']) of {_call(query)}"
        )

    def test_audit_limit_keeps_the_newest(self, storage: Storage) -> None:
        """AuditQuery.limit returns at most that many events, the newest ones."""
        _audit_history(storage)
        cases: list[tuple[AuditQuery, list[int]]] = [
            (AuditQuery(limit=2), [6, 5]),
            (AuditQuery(limit=1), [6]),
            (AuditQuery(limit=0), []),
            (AuditQuery(limit=6), [6, 5, 4, 3, 2, 1]),
            (AuditQuery(limit=100), [6, 5, 4, 3, 2, 1]),
            (AuditQuery(plugin_id="alpha", limit=3), [6, 5, 3]),
            (AuditQuery(tenant="acme", until=BASE_TIME + timedelta(minutes=5), limit=1), [4]),
        ]
        for query, expected in cases:
            expect_same(
                _seqs(storage.audit(query)), expected, f"events (by after['seq']) of {_call(query)}"
            )

    # -- failures --------------------------------------------------------------------------

    def test_record_failures_stores_the_batch_newest_first(self, storage: Storage) -> None:
        """record_failures() stores each failure with an id; failures() lists them newest first."""
        first = [
            make_failure("alpha", message="one", at=BASE_TIME),
            make_failure(
                "alpha",
                tenant=None,
                hook="invoice_paid",
                exc_type="builtins.KeyError",
                message="two: ünïcødé ✓",
                traceback="Traceback …\n  two\n",
                at=BASE_TIME + timedelta(seconds=1),
            ),
        ]
        second = [make_failure("beta", message="three", at=BASE_TIME + timedelta(seconds=2))]
        storage.record_failures(first)
        storage.record_failures(second)
        storage.record_failures([])
        stored = storage.failures()
        expect_same(_messages(stored), ["three", "two: ünïcødé ✓", "one"], "failures() order")
        _expect_ids([f.id for f in stored], "failures()")
        expected = [
            attrs.evolve(f, id=s.id)
            for f, s in zip([*second, *reversed(first)], stored, strict=True)
        ]
        expect_same(stored, expected, "failures() after two batches")

    def test_failures_filter_by_plugin_resolved_and_limit(self, storage: Storage) -> None:
        """failures() filters by plugin and resolved (None, False, True); limit keeps the newest."""
        storage.record_failures(
            [
                make_failure("alpha", message="a1", at=BASE_TIME),
                make_failure("beta", message="b1", at=BASE_TIME + timedelta(seconds=1)),
                make_failure(
                    "alpha", message="a2", resolved=True, at=BASE_TIME + timedelta(seconds=2)
                ),
                make_failure("alpha", message="a3", at=BASE_TIME + timedelta(seconds=3)),
                make_failure(
                    "beta", message="b2", resolved=True, at=BASE_TIME + timedelta(seconds=4)
                ),
            ]
        )
        cases: list[tuple[str, list[str], list[str]]] = [
            ("failures()", _messages(storage.failures()), ["b2", "a3", "a2", "b1", "a1"]),
            ("failures('alpha')", _messages(storage.failures("alpha")), ["a3", "a2", "a1"]),
            ("failures('beta')", _messages(storage.failures("beta")), ["b2", "b1"]),
            ("failures('gamma')", _messages(storage.failures("gamma")), []),
            (
                "failures(resolved=None)",
                _messages(storage.failures(resolved=None)),
                ["b2", "a3", "a2", "b1", "a1"],
            ),
            (
                "failures(resolved=False)",
                _messages(storage.failures(resolved=False)),
                ["a3", "b1", "a1"],
            ),
            ("failures(resolved=True)", _messages(storage.failures(resolved=True)), ["b2", "a2"]),
            (
                "failures('alpha', resolved=False)",
                _messages(storage.failures("alpha", resolved=False)),
                ["a3", "a1"],
            ),
            (
                "failures('alpha', resolved=True)",
                _messages(storage.failures("alpha", resolved=True)),
                ["a2"],
            ),
            ("failures(limit=2)", _messages(storage.failures(limit=2)), ["b2", "a3"]),
            ("failures(limit=0)", _messages(storage.failures(limit=0)), []),
            (
                "failures('alpha', resolved=False, limit=1)",
                _messages(storage.failures("alpha", resolved=False, limit=1)),
                ["a3"],
            ),
            (
                "failures(resolved=True, limit=1)",
                _messages(storage.failures(resolved=True, limit=1)),
                ["b2"],
            ),
        ]
        for call, got, expected in cases:
            expect_same(got, expected, f"messages of {call}")
        resolved_flags = [f.resolved for f in storage.failures(resolved=True)]
        expect_same(resolved_flags, [True, True], "resolved flags of failures(resolved=True)")

    def test_failures_refuse_a_bad_limit(self, storage: Storage) -> None:
        """failures(limit=...) raises ValueError naming limit unless it is an int >= 0 (no bool)."""
        storage.record_failures([make_failure()])
        for bad in (-1, -1000, True, False, 1.5, "3", None):
            try:
                storage.failures(limit=bad)  # type: ignore[arg-type]  # refused on purpose
            except ValueError as exc:
                if "limit" not in str(exc):
                    pytest.fail(
                        f"failures(limit={bad!r}) raised ValueError({exc}), which must name "
                        "`limit`",
                        pytrace=False,
                    )
            except Exception as exc:  # noqa: BLE001 - any other error is reported as wrong
                pytest.fail(
                    f"failures(limit={bad!r}) raised {type(exc).__name__}({exc}); it must raise "
                    "ValueError naming `limit`",
                    pytrace=False,
                )
            else:
                pytest.fail(
                    f"failures(limit={bad!r}) returned instead of raising ValueError: limit "
                    "must be a non-negative int, and a bool is not one",
                    pytrace=False,
                )

    def test_resolve_failures_for_one_tenant(self, storage: Storage) -> None:
        """resolve_failures(plugin, tenant) resolves only that tenant's unresolved failures."""
        storage.record_failures(
            [
                make_failure("alpha", tenant="acme", message="a-acme-1"),
                make_failure("alpha", tenant="acme", message="a-acme-old", resolved=True),
                make_failure("alpha", tenant="globex", message="a-globex"),
                make_failure("alpha", tenant=None, message="a-none"),
                make_failure("beta", tenant="acme", message="b-acme"),
                make_failure("alpha", tenant="acme", message="a-acme-2"),
            ]
        )
        expect_same(
            storage.resolve_failures("alpha", "acme"),
            2,
            "resolve_failures('alpha', 'acme') count (already resolved ones do not count)",
        )
        expect_same(
            sorted(_messages(storage.failures(resolved=False))),
            ["a-globex", "a-none", "b-acme"],
            "unresolved failures after resolve_failures('alpha', 'acme')",
        )
        expect_same(
            storage.resolve_failures("alpha", "acme"), 0, "resolve_failures() a second time"
        )

    def test_resolve_failures_for_every_tenant(self, storage: Storage) -> None:
        """resolve_failures(plugin) resolves the plugin's failures for every tenant, no others."""
        storage.record_failures(
            [
                make_failure("alpha", tenant="acme", message="a-acme"),
                make_failure("alpha", tenant=None, message="a-none"),
                make_failure("alpha", tenant="globex", message="a-globex", resolved=True),
                make_failure("beta", tenant="acme", message="b-acme"),
            ]
        )
        expect_same(storage.resolve_failures("alpha"), 2, "resolve_failures('alpha') count")
        expect_same(
            _messages(storage.failures(resolved=False)),
            ["b-acme"],
            "unresolved failures after resolve_failures('alpha')",
        )
        resolved = {f.message: f.resolved for f in storage.failures()}
        expect_same(
            resolved,
            {"a-acme": True, "a-none": True, "a-globex": True, "b-acme": False},
            "resolved flags after resolve_failures('alpha')",
        )
        expect_same(storage.resolve_failures("gamma"), 0, "resolve_failures() of another plugin")

    def test_resolve_failures_by_id(self, storage: Storage) -> None:
        """resolve_failures(plugin, ids=...) resolves only those of the plugin's failures."""
        storage.record_failures(
            [
                make_failure("alpha", tenant="acme", message="a1"),
                make_failure("alpha", tenant="globex", message="a2"),
                make_failure("alpha", tenant="acme", message="a3"),
                make_failure("alpha", tenant="acme", message="a4", resolved=True),
                make_failure("beta", tenant="acme", message="b1"),
            ]
        )
        ids = _ids_by_message(storage.failures())
        missing = max(ids.values()) + 1000
        chosen = [ids["a1"], ids["a2"], ids["a4"], ids["b1"], missing]
        expect_same(
            storage.resolve_failures("alpha", ids=chosen),
            2,
            "resolve_failures('alpha', ids=[a1, a2, a4 (resolved), b1 (beta), unknown]) count",
        )
        flags = {f.message: f.resolved for f in storage.failures()}
        expect_same(
            flags,
            {"a1": True, "a2": True, "a3": False, "a4": True, "b1": False},
            "resolved flags after resolving a1, a2, a4 and b1 by id as plugin alpha "
            "(b1 is beta's and must stay unresolved)",
        )
        expect_same(storage.resolve_failures("alpha", ids=[]), 0, "resolve_failures() with no ids")
        expect_same(
            [f.message for f in storage.failures(resolved=False)],
            ["b1", "a3"],
            "unresolved failures after resolve_failures(ids=[])",
        )

    def test_resolve_failures_by_id_and_tenant(self, storage: Storage) -> None:
        """With both a tenant and ids, only the given failures of that tenant are resolved."""
        storage.record_failures(
            [
                make_failure("alpha", tenant="acme", message="acme-1"),
                make_failure("alpha", tenant="globex", message="globex-1"),
                make_failure("alpha", tenant="acme", message="acme-2"),
            ]
        )
        ids = _ids_by_message(storage.failures())
        chosen = [ids["acme-1"], ids["globex-1"], ids["acme-1"]]
        expect_same(
            storage.resolve_failures("alpha", "acme", ids=chosen),
            1,
            "resolve_failures('alpha', 'acme', ids=[acme-1, globex-1, acme-1]) count "
            "(an id given twice counts once)",
        )
        expect_same(
            [f.message for f in storage.failures(resolved=False)],
            ["acme-2", "globex-1"],
            "unresolved failures after resolving acme-1 and globex-1 for tenant acme only",
        )

    def test_resolve_failures_refuses_ids_that_are_not_ints(self, storage: Storage) -> None:
        """resolve_failures(ids=...) raises ValueError naming ids for a non-int or bool id."""
        storage.record_failures([make_failure()])
        for bad in (["1"], [True], [1.0], "1"):
            try:
                storage.resolve_failures("example-plugin", ids=bad)  # type: ignore[arg-type]
            except ValueError as exc:
                if "ids" not in str(exc):
                    pytest.fail(
                        f"resolve_failures(ids={bad!r}) raised ValueError({exc}), which must "
                        "name `ids`",
                        pytrace=False,
                    )
            except Exception as exc:  # noqa: BLE001 - any other error is reported as wrong
                pytest.fail(
                    f"resolve_failures(ids={bad!r}) raised {type(exc).__name__}({exc}); it "
                    "must raise ValueError naming `ids`",
                    pytrace=False,
                )
            else:
                pytest.fail(
                    f"resolve_failures(ids={bad!r}) returned instead of raising ValueError",
                    pytrace=False,
                )
        expect_same(
            [f.resolved for f in storage.failures()],
            [False],
            "resolved flags after resolve_failures() calls that were refused",
        )

    def test_failures_do_not_move_the_generation(self, storage: Storage) -> None:
        """Recording and resolving failures leave the generation and the audit trail alone."""
        _commit_plugin(storage, make_plugin())
        storage.record_failures([make_failure(), make_failure(tenant=None)])
        storage.resolve_failures("example-plugin")
        expect_same(storage.generation(), 1, "generation() after recording failures")
        expect_same(len(storage.audit(AuditQuery())), 1, "audit events after recording failures")

    # -- metrics ---------------------------------------------------------------------------

    def test_record_metrics_adds_up_across_batches(self, storage: Storage) -> None:
        """Calls, errors and durations add up; max_duration and last_call keep the maximum."""
        # Durations are exact binary fractions, so any order of addition gives the same sum.
        storage.record_metrics(
            [
                make_metrics(
                    calls=2,
                    errors=1,
                    total_duration=0.5,
                    max_duration=0.375,
                    last_call=BASE_TIME + timedelta(minutes=1),
                ),
            ]
        )
        storage.record_metrics(
            [
                make_metrics(
                    calls=4,
                    errors=0,
                    total_duration=1.25,
                    max_duration=0.75,
                    last_call=BASE_TIME,  # older than the stored last call
                ),
            ]
        )
        storage.record_metrics(
            [
                make_metrics(
                    calls=1,
                    errors=1,
                    total_duration=0.125,
                    max_duration=0.125,
                    last_call=BASE_TIME + timedelta(minutes=5),
                ),
            ]
        )
        storage.record_metrics([])
        expected = HookMetrics(
            plugin_id="example-plugin",
            hook="lead_created",
            calls=7,
            errors=2,
            total_duration=1.875,
            max_duration=0.75,
            last_call=BASE_TIME + timedelta(minutes=5),
        )
        expect_same(storage.metrics(), [expected], "metrics() after three batches")

    def test_record_metrics_adds_up_within_one_batch(self, storage: Storage) -> None:
        """Several deltas for one (plugin, hook) in one batch all count."""
        storage.record_metrics(
            [
                make_metrics(calls=1, total_duration=0.25, max_duration=0.25),
                make_metrics(hook="invoice_paid", calls=5, errors=5),
                make_metrics(
                    calls=3,
                    errors=2,
                    total_duration=1.5,
                    max_duration=1.0,
                    last_call=BASE_TIME - timedelta(seconds=1),
                ),
                make_metrics(
                    calls=2,
                    total_duration=0.5,
                    max_duration=0.5,
                    last_call=BASE_TIME + timedelta(seconds=1),
                ),
            ]
        )
        expected = [
            HookMetrics(
                plugin_id="example-plugin",
                hook="invoice_paid",
                calls=5,
                errors=5,
                total_duration=0.5,
                max_duration=0.5,
                last_call=BASE_TIME,
            ),
            HookMetrics(
                plugin_id="example-plugin",
                hook="lead_created",
                calls=6,
                errors=2,
                total_duration=2.25,
                max_duration=1.0,
                last_call=BASE_TIME + timedelta(seconds=1),
            ),
        ]
        expect_same(storage.metrics(), expected, "metrics() after one batch")

    def test_metrics_are_sorted_and_filtered_by_plugin(self, storage: Storage) -> None:
        """metrics() is sorted by plugin then hook; metrics(plugin) returns only that plugin's."""
        storage.record_metrics(
            [
                make_metrics("beta", "zeta_hook"),
                make_metrics("alpha", "yankee_hook"),
                make_metrics("beta", "alpha_hook"),
            ]
        )
        storage.record_metrics([make_metrics("alpha", "bravo_hook")])

        def keys(metrics: list[HookMetrics]) -> list[tuple[str, str]]:
            return [(m.plugin_id, m.hook) for m in metrics]

        expect_same(
            keys(storage.metrics()),
            [
                ("alpha", "bravo_hook"),
                ("alpha", "yankee_hook"),
                ("beta", "alpha_hook"),
                ("beta", "zeta_hook"),
            ],
            "metrics() keys",
        )
        expect_same(
            keys(storage.metrics("beta")),
            [("beta", "alpha_hook"), ("beta", "zeta_hook")],
            "metrics('beta') keys",
        )
        expect_same(storage.metrics("gamma"), [], "metrics() of a plugin without any")

    def test_metrics_do_not_move_the_generation(self, storage: Storage) -> None:
        """Recording metrics leaves the generation and the audit trail alone."""
        _commit_plugin(storage, make_plugin())
        storage.record_metrics([make_metrics(), make_metrics(hook="other")])
        expect_same(storage.generation(), 1, "generation() after recording metrics")
        expect_same(len(storage.audit(AuditQuery())), 1, "audit events after recording metrics")

    # -- the data-access log -----------------------------------------------------------------

    def test_access_records_round_trip_newest_first(self, storage: Storage) -> None:
        """Every field of an access record comes back, with an id the storage gave; newest
        first, records of one moment by id (the later stored first); empty batches are fine."""
        access = _access(storage)
        first = make_access(record_ids=["lead-1", "lead-2"], method="list_leads", count=7)
        second = make_access(
            record_type=None,
            record_ids=[],
            count=0,
            method="send_email",
            permission="send_email",
            at=BASE_TIME + timedelta(seconds=1),
        )
        third = make_access(tenant="globex", at=BASE_TIME)
        access.record_access([first, second])
        access.record_access([])
        access.record_access([third])
        found = access.access_log(AccessQuery())
        expect_same(
            [attrs.evolve(r, id=None) for r in found],
            [second, third, first],
            "access_log() of three records, newest first",
        )
        ids = [r.id for r in found]
        expect_same(all(isinstance(i, int) for i in ids), True, f"ids given: {ids}")
        expect_same(len(set(ids)), 3, f"distinct ids: {ids}")
        expect_same(found[0].at.utcoffset(), timedelta(0), "the moment of a stored record (UTC)")

    def test_access_log_filters_by_every_field(self, storage: Storage) -> None:
        """Each field of AccessQuery narrows the records; record_id matches one of the ids."""
        access = _access(storage)
        access.record_access(
            [
                make_access("alpha", record_ids=["lead-1", "lead-2"], method="list_leads"),
                make_access("alpha", tenant="globex", at=BASE_TIME + timedelta(hours=1)),
                make_access(
                    "beta",
                    record_type="booking",
                    record_ids=["booking-1"],
                    method="get_booking",
                    permission="read_bookings",
                    at=BASE_TIME + timedelta(hours=2),
                ),
            ]
        )

        def methods(**query: Any) -> list[tuple[str, str, str]]:
            return [
                (r.plugin_id, r.tenant, r.method) for r in access.access_log(AccessQuery(**query))
            ]

        expect_same(
            methods(plugin_id="alpha", tenant="acme"),
            [("alpha", "acme", "list_leads")],
            "access_log(plugin_id, tenant)",
        )
        expect_same(methods(tenant="globex"), [("alpha", "globex", "get_lead")], "by tenant")
        expect_same(methods(method="get_booking"), [("beta", "acme", "get_booking")], "by method")
        expect_same(
            methods(record_type="lead"),
            [("alpha", "globex", "get_lead"), ("alpha", "acme", "list_leads")],
            "by type",
        )
        expect_same(methods(record_id="lead-2"), [("alpha", "acme", "list_leads")], "by an id")
        expect_same(
            methods(record_id="lead-1"),
            [("alpha", "globex", "get_lead"), ("alpha", "acme", "list_leads")],
            "by an id",
        )
        expect_same(methods(record_id="lead"), [], "an id that is only a prefix matches nothing")
        expect_same(
            methods(since=BASE_TIME + timedelta(hours=1)),
            [("beta", "acme", "get_booking"), ("alpha", "globex", "get_lead")],
            "since",
        )
        expect_same(
            methods(until=BASE_TIME + timedelta(hours=1)),
            [("alpha", "acme", "list_leads")],
            "until (excluded)",
        )
        expect_same(methods(limit=1), [("beta", "acme", "get_booking")], "limit")
        expect_same(methods(limit=0), [], "limit=0")
        expect_same(methods(plugin_id="gamma"), [], "a plugin without records")

    def test_prune_access_forgets_older_records(self, storage: Storage) -> None:
        """prune_access(before) forgets the records before ``before`` and returns how many."""
        access = _access(storage)
        access.record_access(
            [make_access(at=BASE_TIME - timedelta(days=d), method=f"m{d}") for d in (0, 10, 100)]
        )
        expect_same(access.prune_access(BASE_TIME - timedelta(days=10)), 1, "pruned")
        expect_same([r.method for r in access.access_log(AccessQuery())], ["m0", "m10"], "kept")
        expect_same(access.prune_access(BASE_TIME - timedelta(days=10)), 0, "pruned again")

    def test_access_does_not_move_the_generation(self, storage: Storage) -> None:
        """Recording and pruning access records leave the generation and the audit alone."""
        access = _access(storage)
        _commit_plugin(storage, make_plugin())
        access.record_access([make_access(), make_access(tenant="globex")])
        access.prune_access(BASE_TIME + timedelta(days=1))
        expect_same(storage.generation(), 1, "generation() after recording access")
        expect_same(len(storage.audit(AuditQuery())), 1, "audit events after recording access")

    # -- the store quota ledger ------------------------------------------------------------

    def test_store_usage_counts_keys_and_bytes_per_plugin_and_tenant(
        self, storage: Storage
    ) -> None:
        """charge_store records each key's size and returns its previous one; store_usage sums
        them per (plugin, tenant); a size of None forgets the key."""
        expect_same(
            storage.store_usage("example-plugin", "acme"),
            StoreUsage(keys=0, bytes=0),
            "store_usage() of a new storage",
        )
        steps: list[tuple[str, str, str, int | None, int | None]] = [
            # (plugin, tenant, key, size, the previous size charge_store must return)
            ("example-plugin", "acme", "cursor", 10, None),
            ("example-plugin", "acme", "seen", 20, None),
            ("example-plugin", "acme", "cursor", 5, 10),
            ("example-plugin", "globex", "cursor", 7, None),
            ("other-plugin", "acme", "cursor", 100, None),
            ("example-plugin", "acme", "seen", None, 20),
            ("example-plugin", "acme", "never-set", None, None),
        ]
        for plugin_id, tenant, key, size, previous in steps:
            expect_same(
                storage.charge_store(plugin_id, tenant, key, size),
                previous,
                f"charge_store({plugin_id!r}, {tenant!r}, {key!r}, {size!r}) (the size before)",
            )
        for plugin_id, tenant, usage in [
            ("example-plugin", "acme", StoreUsage(keys=1, bytes=5)),
            ("example-plugin", "globex", StoreUsage(keys=1, bytes=7)),
            ("other-plugin", "acme", StoreUsage(keys=1, bytes=100)),
            ("other-plugin", "globex", StoreUsage(keys=0, bytes=0)),
        ]:
            expect_same(
                storage.store_usage(plugin_id, tenant),
                usage,
                f"store_usage({plugin_id!r}, {tenant!r})",
            )
        storage.charge_store("example-plugin", "acme", "cursor", None)
        expect_same(
            storage.store_usage("example-plugin", "acme"),
            StoreUsage(keys=0, bytes=0),
            "store_usage() once every key is forgotten",
        )

    def test_store_charge_past_a_limit_is_refused_and_writes_nothing(
        self, storage: Storage
    ) -> None:
        """A charge that grows the store past max_keys or max_bytes raises QuotaExceeded
        (naming the limit, its value and what the store would hold) and records nothing;
        replacing a key within the limits is allowed."""
        charge = storage.charge_store
        charge("example-plugin", "acme", "a", 40, max_keys=2, max_bytes=100)
        charge("example-plugin", "acme", "b", 40, max_keys=2, max_bytes=100)
        refusals = [
            ("c", 1, "store_keys", 2, 3),
            ("a", 61, "store_bytes", 100, 101),
        ]
        for key, size, limit, allowed, requested in refusals:
            with pytest.raises(QuotaExceeded) as caught:
                charge("example-plugin", "acme", key, size, max_keys=2, max_bytes=100)
            refused = caught.value
            expect_same(
                (refused.plugin_id, refused.tenant, refused.limit),
                ("example-plugin", "acme", limit),
                f"(plugin_id, tenant, limit) of the QuotaExceeded for key {key!r}",
            )
            expect_same(
                (refused.allowed, refused.requested),
                (allowed, requested),
                f"(allowed, requested) of the QuotaExceeded for key {key!r}",
            )
            expect_same(
                storage.store_usage("example-plugin", "acme"),
                StoreUsage(keys=2, bytes=80),
                f"store_usage() after the refused charge of key {key!r}",
            )
        expect_same(
            charge("example-plugin", "acme", "c", None),
            None,
            "charge_store() forgetting the refused key 'c' (it must never have been recorded)",
        )
        expect_same(
            charge("example-plugin", "acme", "a", 60, max_keys=2, max_bytes=100),
            40,
            "charge_store() replacing key 'a' up to the byte limit",
        )
        expect_same(
            storage.store_usage("example-plugin", "acme"),
            StoreUsage(keys=2, bytes=100),
            "store_usage() at the limits",
        )

    def test_a_store_over_lowered_limits_may_shrink(self, storage: Storage) -> None:
        """Once limits are lowered below what a store holds, charges that shrink it still
        pass; charges that grow it do not."""
        for key in ("a", "b", "c"):
            storage.charge_store("example-plugin", "acme", key, 50)
        storage.charge_store("example-plugin", "acme", "a", 10, max_keys=1, max_bytes=20)
        storage.charge_store("example-plugin", "acme", "b", None, max_keys=1, max_bytes=20)
        expect_same(
            storage.store_usage("example-plugin", "acme"),
            StoreUsage(keys=2, bytes=60),
            "store_usage() after shrinking charges over lowered limits",
        )
        with pytest.raises(QuotaExceeded):
            storage.charge_store("example-plugin", "acme", "a", 11, max_keys=1, max_bytes=20)

    def test_store_charge_refuses_a_bad_size(self, storage: Storage) -> None:
        """A size that is not None or a non-negative int is refused with ValueError."""
        for size in (-1, True, "5", 1.5):
            with pytest.raises(ValueError, match="size"):
                storage.charge_store("example-plugin", "acme", "k", size)  # type: ignore[arg-type]
        expect_same(
            storage.store_usage("example-plugin", "acme"),
            StoreUsage(keys=0, bytes=0),
            "store_usage() after refused sizes",
        )

    def test_store_charges_do_not_move_the_generation(self, storage: Storage) -> None:
        """Store charges leave the generation and the audit trail alone."""
        storage.charge_store("example-plugin", "acme", "k", 3)
        storage.charge_store("example-plugin", "acme", "k", None)
        expect_same(storage.generation(), 0, "generation() after store charges")
        expect_same(storage.audit(AuditQuery()), [], "audit events after store charges")

    # -- the plugins' key-value stores -----------------------------------------------------

    def test_store_keeps_json_values_per_plugin_and_tenant(self, storage: Storage) -> None:
        """store_read returns what store_write kept, every JSON type exactly (a boolean stays a
        boolean), or None; one key holds a value per (plugin, tenant)."""
        for key, value in _STORE_VALUES.items():
            storage.store_write("example-plugin", "acme", key, value)
        for key, value in _STORE_VALUES.items():
            expect_same(
                storage.store_read("example-plugin", "acme", key),
                value,
                f"store_read('example-plugin', 'acme', {key!r}) after store_write() of {value!r}",
            )
        storage.store_write("example-plugin", "globex", "text", "globex's")
        storage.store_write("other-plugin", "acme", "text", {"other": True})
        for plugin_id, tenant, expected in [
            ("example-plugin", "acme", _STORE_VALUES["text"]),
            ("example-plugin", "globex", "globex's"),
            ("other-plugin", "acme", {"other": True}),
            ("other-plugin", "globex", None),
        ]:
            expect_same(
                storage.store_read(plugin_id, tenant, "text"),
                expected,
                f"store_read({plugin_id!r}, {tenant!r}, 'text'): each (plugin, tenant) has "
                "its own store",
            )
        storage.store_write("example-plugin", "acme", "int", [2, 3])
        expect_same(
            storage.store_read("example-plugin", "acme", "int"),
            [2, 3],
            "store_read() after a second store_write() of the key replaced its value",
        )

    def test_store_read_returns_a_copy(self, storage: Storage) -> None:
        """Changing what store_write was given, or what store_read returned, changes nothing
        stored."""
        value: dict[str, JSONValue] = {"seen": ["lead-1"]}
        storage.store_write("example-plugin", "acme", "seen", value)
        seen = value["seen"]
        assert isinstance(seen, list)
        seen.append("changed after store_write()")
        got = storage.store_read("example-plugin", "acme", "seen")
        expect_same(got, {"seen": ["lead-1"]}, "store_read() after the caller changed its value")
        if isinstance(got, dict) and isinstance(got["seen"], list):
            got["seen"].append("changed after store_read()")
        expect_same(
            storage.store_read("example-plugin", "acme", "seen"),
            {"seen": ["lead-1"]},
            "store_read() after the caller changed what an earlier store_read() returned",
        )

    def test_store_write_and_remove_charge_the_ledger(self, storage: Storage) -> None:
        """Each written value is charged its key's and its JSON's UTF-8 bytes, replaced values
        re-charged; store_remove forgets the value and its charge, and says whether it was
        there."""
        values: dict[str, JSONValue] = {"cursor": 12, "name": "Zoë", "flags": [True, None]}
        for key, value in values.items():
            storage.store_write("example-plugin", "acme", key, value)
        expect_same(
            storage.store_usage("example-plugin", "acme"),
            StoreUsage(keys=3, bytes=sum(_store_size(k, v) for k, v in values.items())),
            "store_usage() after three store_write() calls",
        )
        storage.store_write("example-plugin", "acme", "cursor", 123456)
        values["cursor"] = 123456
        expect_same(
            storage.store_usage("example-plugin", "acme"),
            StoreUsage(keys=3, bytes=sum(_store_size(k, v) for k, v in values.items())),
            "store_usage() after replacing the value of 'cursor'",
        )
        expect_same(
            storage.store_remove("example-plugin", "acme", "name"),
            True,
            "store_remove() of a key the store holds",
        )
        expect_same(
            storage.store_remove("example-plugin", "acme", "name"),
            False,
            "store_remove() of a key no longer there",
        )
        del values["name"]
        expect_same(
            storage.store_read("example-plugin", "acme", "name"), None, "store_read() of it"
        )
        expect_same(
            storage.store_usage("example-plugin", "acme"),
            StoreUsage(keys=2, bytes=sum(_store_size(k, v) for k, v in values.items())),
            "store_usage() after store_remove()",
        )
        expect_same(storage.generation(), 0, "generation() after store writes and removals")
        expect_same(storage.audit(AuditQuery()), [], "audit events after store writes")

    def test_store_write_past_a_limit_is_refused_and_keeps_nothing(self, storage: Storage) -> None:
        """A write past max_keys or max_bytes raises QuotaExceeded and keeps neither the value
        nor its charge: a replaced value stays the old one."""
        storage.store_write("example-plugin", "acme", "a", "x" * 10, max_keys=2, max_bytes=60)
        storage.store_write("example-plugin", "acme", "b", "y" * 10, max_keys=2, max_bytes=60)
        before = storage.store_usage("example-plugin", "acme")
        refused: list[tuple[str, JSONValue, str]] = [
            ("c", 1, "store_keys"),
            ("a", "z" * 50, "store_bytes"),
        ]
        for key, value, limit in refused:
            with pytest.raises(QuotaExceeded) as caught:
                storage.store_write("example-plugin", "acme", key, value, max_keys=2, max_bytes=60)
            expect_same(caught.value.limit, limit, f"QuotaExceeded.limit of the write of {key!r}")
            expect_same(
                storage.store_usage("example-plugin", "acme"),
                before,
                f"store_usage() after the refused write of {key!r}",
            )
        expect_same(
            storage.store_read("example-plugin", "acme", "c"),
            None,
            "store_read() of a key whose write was refused",
        )
        expect_same(
            storage.store_read("example-plugin", "acme", "a"),
            "x" * 10,
            "store_read() of a key whose replacement was refused: the old value",
        )

    def test_store_write_refuses_a_value_that_is_not_json(self, storage: Storage) -> None:
        """A value JSON cannot carry is a ValueError naming the key; nothing is kept."""
        for value in (float("nan"), {1: "x"}, b"bytes", {"set": {1, 2}}):
            with pytest.raises(ValueError, match="'k'"):
                storage.store_write("example-plugin", "acme", "k", value)  # type: ignore[arg-type]
        expect_same(storage.store_read("example-plugin", "acme", "k"), None, "store_read()")
        expect_same(
            storage.store_usage("example-plugin", "acme"),
            StoreUsage(keys=0, bytes=0),
            "store_usage() after refused values",
        )

    def test_drop_store_forgets_values_and_their_charges(self, storage: Storage) -> None:
        """drop_store(plugin, tenant) forgets that tenant's values, drop_store(plugin) every
        tenant's, with their charges; other plugins' stores, and charges of values the host
        keeps (charge_store), stay."""
        for tenant in ("acme", "globex", "initech"):
            for key in ("a", "b"):
                storage.store_write("example-plugin", tenant, key, key * 3)
        storage.store_write("other-plugin", "acme", "a", "kept")
        storage.charge_store("example-plugin", "acme", "hosts-own", 7)
        expect_same(storage.drop_store("example-plugin", "acme"), 2, "drop_store() of one tenant")
        expect_same(
            [storage.store_read("example-plugin", t, "a") for t in ("acme", "globex")],
            [None, "aaa"],
            "store_read() of the dropped tenant and of another tenant",
        )
        expect_same(
            storage.store_usage("example-plugin", "acme"),
            StoreUsage(keys=1, bytes=7),
            "store_usage() after drop_store(): the host's own charge stays",
        )
        expect_same(storage.drop_store("example-plugin"), 4, "drop_store() of every tenant")
        for tenant in ("globex", "initech"):
            expect_same(
                (
                    storage.store_read("example-plugin", tenant, "b"),
                    storage.store_usage("example-plugin", tenant),
                ),
                (None, StoreUsage()),
                f"the store of tenant {tenant!r} after drop_store() of every tenant",
            )
        expect_same(
            storage.store_read("other-plugin", "acme", "a"),
            "kept",
            "another plugin's store after drop_store()",
        )
        expect_same(storage.drop_store("example-plugin"), 0, "drop_store() of an empty store")

    def test_uninstall_drops_the_plugins_store(self, storage: Storage) -> None:
        """A committed change with clear_tenants (an uninstall) drops the plugin's store for
        every tenant, with its charges; a change without it (a disable) keeps it."""
        for plugin_id in ("alpha", "beta"):
            _commit_plugin(storage, make_plugin(plugin_id, status=PluginStatus.APPROVED))
            _commit_tenant(storage, make_tenant(plugin_id, "acme", enabled=True))
            for tenant in ("acme", "globex"):
                storage.store_write(plugin_id, tenant, "cursor", {"page": 2})
        _commit_tenant(storage, make_tenant("alpha", "acme", enabled=False, revision=2))
        expect_same(
            storage.store_read("alpha", "acme", "cursor"),
            {"page": 2},
            "store_read() after the plugin was disabled for the tenant: the store stays",
        )
        storage.commit(
            Change(
                plugin_id="alpha",
                plugin=make_plugin("alpha", status=PluginStatus.UNINSTALLED, revision=2),
                clear_tenants=True,
                audit=make_audit("alpha", "uninstall"),
            )
        )
        for tenant in ("acme", "globex"):
            expect_same(
                (
                    storage.store_read("alpha", tenant, "cursor"),
                    storage.store_usage("alpha", tenant),
                ),
                (None, StoreUsage()),
                f"the uninstalled plugin's store for tenant {tenant!r}",
            )
            expect_same(
                storage.store_read("beta", tenant, "cursor"),
                {"page": 2},
                f"another plugin's store for tenant {tenant!r} after an uninstall",
            )

    # -- staged versions and archives of plugins -------------------------------------------

    def test_staged_version_round_trips_every_field(self, storage: Storage) -> None:
        """A plugin's archive and its staged version read back equal, field by field."""
        staged = make_staged(
            "2.0.0rc1",
            manifest=_NESTED_JSON,
            package_path="/srv/plugins/example-plugin/2.0.0rc1",
            artifact=_sha256("archive of 2.0.0rc1"),
            installed_at=BASE_TIME + timedelta(days=1),
            installed_by="ådmin@example.com",
            # Another offset than UTC: the same instant must come back.
            approved_at=datetime(2024, 5, 3, 8, 0, 0, 5, tzinfo=timezone(timedelta(hours=-7))),
            approved_by="upgrade policy",
            auto_approved=True,
        )
        plugin = make_plugin(
            status=PluginStatus.APPROVED,
            source=SourceKind.ARCHIVE,
            artifact=_sha256("archive of 1.0.0"),
            staged=staged,
        )
        _commit_plugin(storage, plugin)
        expect_same(storage.get_plugin(plugin.id), plugin, "get_plugin() of a staged plugin")
        expect_same(storage.list_plugins(), [plugin], "list_plugins() of a staged plugin")

    def test_staged_version_waits_is_approved_and_is_switched_to(self, storage: Storage) -> None:
        """A staged version is stored waiting, then approved, then cleared by the switch."""
        running = make_plugin(
            status=PluginStatus.APPROVED, source=SourceKind.ARCHIVE, artifact=_sha256("1.0.0")
        )
        _commit_plugin(storage, running)
        waiting = make_staged(artifact=_sha256("2.0.0"), installed_at=BASE_TIME + timedelta(1))
        steps = [
            ("stage", attrs.evolve(running, staged=waiting, revision=2)),
            (
                "approve",
                attrs.evolve(
                    running,
                    staged=attrs.evolve(
                        waiting, approved_at=BASE_TIME + timedelta(2), approved_by="root"
                    ),
                    revision=3,
                ),
            ),
            (
                "switch",
                attrs.evolve(
                    running,
                    version=waiting.version,
                    manifest=waiting.manifest,
                    code_hash=waiting.code_hash,
                    artifact=waiting.artifact,
                    staged=None,
                    revision=4,
                ),
            ),
        ]
        for action, record in steps:
            _commit_plugin(storage, record, action=action)
            expect_same(storage.get_plugin(running.id), record, f"get_plugin() after {action!r}")

    # -- several tenants in one change -------------------------------------------------------

    def test_change_writes_several_tenants_at_once(self, storage: Storage) -> None:
        """Change.tenants writes more tenant records with ``tenant``, new and updated alike,
        in one commit (one generation, one audit event)."""
        plugin = make_plugin(status=PluginStatus.APPROVED)
        _commit_plugin(storage, plugin)
        _commit_tenant(storage, make_tenant(tenant="acme", enabled=True))
        written = (
            make_tenant(tenant="acme", settings={"limit": 2}, revision=2),
            make_tenant(tenant="globex", enabled=True, settings={"limit": 3}),
            make_tenant(tenant="initech", optional_grants=["send_sms"]),
        )
        generation = storage.commit(
            Change(
                plugin_id=plugin.id,
                plugin_revision=1,
                tenant=written[0],
                tenants=written[1:],
                audit=make_audit(plugin.id, "configure"),
            )
        )
        expect_same(generation, 3, "commit() of a change writing three tenants")
        expect_same(storage.list_tenants(plugin.id), list(written), "list_tenants() after it")
        expect_same(len(storage.audit(AuditQuery())), 3, "audit events after three commits")
        # An upgrade: the plugin and the migrated settings of every tenant, without ``tenant``.
        upgraded = attrs.evolve(plugin, version="2.0.0", revision=2)
        migrated = (
            attrs.evolve(written[0], settings={"limit": 2, "new": True}, revision=3),
            attrs.evolve(written[1], settings={"limit": 3, "new": True}, revision=2),
        )
        storage.commit(
            Change(
                plugin_id=plugin.id,
                plugin=upgraded,
                tenants=migrated,
                audit=make_audit(plugin.id, "upgrade"),
            )
        )
        expect_same(storage.get_plugin(plugin.id), upgraded, "get_plugin() after the upgrade")
        expect_same(
            storage.list_tenants(plugin.id),
            [*migrated, written[2]],
            "list_tenants() after an upgrade that migrated two tenants",
        )
        expect_same(storage.generation(), 4, "generation() after four commits")

    def test_conflict_on_a_later_tenant_writes_nothing(self, storage: Storage) -> None:
        """A change whose second tenant record conflicts writes none of its parts: not the
        first tenant, the plugin, the version, the kept versions or the audit event."""
        plugin = make_plugin(status=PluginStatus.APPROVED)
        _commit_plugin(storage, plugin)
        _commit_tenant(storage, make_tenant(tenant="acme", enabled=True))
        _commit_tenant(storage, make_tenant(tenant="globex", enabled=True))
        storage.commit(
            Change(
                plugin_id=plugin.id,
                plugin_revision=1,
                keep=make_kept(version="0.9.0"),
                audit=make_audit(plugin.id, "keep"),
            )
        )
        before = _observe(storage, plugin.id)
        for later, expected, actual in [
            (make_tenant(tenant="globex", settings={"x": 1}, revision=3), 2, 1),
            (make_tenant(tenant="initech", revision=2), 1, 0),
        ]:
            change = Change(
                plugin_id=plugin.id,
                plugin=attrs.evolve(plugin, version="2.0.0", revision=2),
                tenant=make_tenant(tenant="acme", settings={"migrated": True}, revision=2),
                tenants=(later,),
                version=make_version(version="2.0.0"),
                keep=make_kept(version="1.0.0"),
                forget=("0.9.0",),
                audit=make_audit(plugin.id, "upgrade"),
            )
            _expect_conflict(
                storage,
                change,
                expected=expected,
                actual=actual,
                what=f"a change whose second tenant record ({later.tenant!r}) is stale",
            )
            _expect_unchanged(storage, plugin.id, before, "a change that raised ConflictError")

    # -- kept versions -----------------------------------------------------------------------

    def test_kept_version_round_trips_every_field(self, storage: Storage) -> None:
        """A kept version reads back equal, field by field, with each tenant's state."""
        _commit_plugin(storage, make_plugin(status=PluginStatus.APPROVED))
        kept = make_kept(
            version="1.0.0rc1",
            manifest=_NESTED_JSON,
            code_hash=_sha256("kept"),
            source=SourceKind.FOLDER,
            package_path="/srv/plugins/example-plugin/1.0.0rc1",
            artifact=_sha256("archive of 1.0.0rc1"),
            granted_permissions=["read_leads", "send_notifications"],
            tenants={
                "acme": {
                    "settings": {"limit": 2**40, "ratio": 0.125, "token": "sealed:Zm9v", "x": None},
                    "optional_grants": ["send_sms"],
                },
                "Zoë 插件": {"settings": {}, "optional_grants": []},
            },
            kept_at=datetime(2024, 5, 4, 1, 2, 3, 4, tzinfo=timezone(timedelta(hours=9))),
        )
        storage.commit(
            Change(
                plugin_id=kept.plugin_id,
                plugin_revision=1,
                keep=kept,
                audit=make_audit(kept.plugin_id, "keep"),
            )
        )
        expect_same(storage.kept_versions(kept.plugin_id), [kept], "kept_versions()")

    def test_kept_versions_are_kept_replaced_and_forgotten(self, storage: Storage) -> None:
        """Keeping a version adds it or replaces the plugin's copy of it; forgetting removes
        the versions named (an unknown one is harmless); other plugins' stay; each step is one
        commit. Listed oldest kept_at first."""
        hour = timedelta(hours=1)
        _commit_plugin(storage, make_plugin(status=PluginStatus.APPROVED))
        _commit_plugin(storage, make_plugin("other-plugin"))
        others = make_kept("other-plugin", "1.0.0", kept_at=BASE_TIME)
        first = make_kept(version="1.0.0", kept_at=BASE_TIME + hour, tenants={"acme": {"n": 1}})
        second = make_kept(version="2.0.0", kept_at=BASE_TIME + 2 * hour)
        again = make_kept(
            version="1.0.0",
            kept_at=BASE_TIME + 3 * hour,
            artifact=_sha256("1.0.0"),
            tenants={"acme": {"n": 2}, "globex": {"n": 3}},
        )
        renewed = make_kept(version="2.0.0", kept_at=BASE_TIME + 4 * hour, package_path="/p")
        steps: list[tuple[str, KeptVersion | None, tuple[str, ...], list[KeptVersion]]] = [
            ("keep 1.0.0", first, (), [first]),
            ("keep 2.0.0", second, (), [first, second]),
            ("keep 1.0.0 again", again, (), [second, again]),
            ("forget 1.0.0 and 9.9.9", None, ("1.0.0", "9.9.9"), [second]),
            ("forget 2.0.0 and keep it anew", renewed, ("2.0.0",), [renewed]),
        ]
        storage.commit(
            Change(
                plugin_id="other-plugin",
                plugin_revision=1,
                keep=others,
                audit=make_audit("other-plugin", "keep"),
            )
        )
        for number, (step, keep, forget, expected) in enumerate(steps, start=4):
            generation = storage.commit(
                Change(
                    plugin_id="example-plugin",
                    plugin_revision=1,
                    keep=keep,
                    forget=forget,
                    audit=make_audit(action="keep"),
                )
            )
            expect_same(generation, number, f"commit() of {step!r}")
            expect_same(
                storage.kept_versions("example-plugin"), expected, f"kept_versions() after {step}"
            )
            expect_same(
                storage.kept_versions("other-plugin"),
                [others],
                f"kept_versions() of another plugin after {step}",
            )
        expect_same(storage.kept_versions("missing"), [], "kept_versions() of an unknown plugin")

    def test_kept_versions_are_listed_by_kept_at(self, storage: Storage) -> None:
        """kept_versions() orders by kept_at (as instants), not by the order of the writes."""
        _commit_plugin(storage, make_plugin())
        later = make_kept(version="1.0.0", kept_at=BASE_TIME + timedelta(hours=2))
        # An hour earlier as an instant, though its local time reads later.
        earlier = make_kept(
            version="2.0.0",
            kept_at=(BASE_TIME + timedelta(hours=1)).astimezone(timezone(timedelta(hours=10))),
        )
        for kept in (later, earlier):
            storage.commit(
                Change(
                    plugin_id=kept.plugin_id,
                    plugin_revision=1,
                    keep=kept,
                    audit=make_audit(action="keep"),
                )
            )
        expect_same(storage.kept_versions("example-plugin"), [earlier, later], "kept_versions()")

    # -- archives ----------------------------------------------------------------------------

    def test_artifacts_are_kept_read_listed_and_deleted(self, storage: Storage) -> None:
        """put_artifact keeps any bytes under their SHA-256; get_artifact returns them as
        bytes; artifacts() lists each by hash with its size; delete_artifact forgets one and
        says whether it was there. None of it moves the generation or writes audit events."""
        archives = dict([_archive(1 << 21, 1), _archive(300, 2), _archive(0, 3)])
        started = datetime.now(timezone.utc)
        for sha256, data in archives.items():
            storage.put_artifact(sha256, data)
        ended = datetime.now(timezone.utc)
        for sha256, data in archives.items():
            got = storage.get_artifact(sha256)
            if type(got) is not bytes or got != data:
                pytest.fail(
                    f"get_artifact() of an archive of {len(data)} bytes returned "
                    f"{type(got).__name__} of {len(got) if got is not None else 0} bytes that "
                    f"{'match' if got == data else 'differ'}: it must return the bytes stored",
                    pytrace=False,
                )
        listed = storage.artifacts()
        expect_same(
            [(info.sha256, info.size) for info in listed],
            sorted((sha256, len(data)) for sha256, data in archives.items()),
            "(sha256, size) of artifacts(), by hash",
        )
        slack = timedelta(minutes=1)
        for info in listed:
            expect_same(type(info), ArtifactInfo, "the items of artifacts()")
            if not started - slack <= info.stored_at <= ended + slack:
                pytest.fail(
                    f"artifacts(): {info.sha256} was stored at {info.stored_at.isoformat()}, "
                    f"but put_artifact() ran from {started.isoformat()} to {ended.isoformat()}",
                    pytrace=False,
                )
        gone, *kept = sorted(archives)
        expect_same(storage.delete_artifact(gone), True, "delete_artifact() of a kept archive")
        expect_same(storage.get_artifact(gone), None, "get_artifact() of a deleted archive")
        expect_same(storage.delete_artifact(gone), False, "delete_artifact() of a deleted one")
        expect_same(
            [info.sha256 for info in storage.artifacts()], kept, "artifacts() after a delete"
        )
        expect_same(storage.get_artifact(kept[0]), archives[kept[0]], "get_artifact() of another")
        expect_same(storage.generation(), 0, "generation() after archive writes")
        expect_same(storage.audit(AuditQuery()), [], "audit() after archive writes")

    def test_artifact_with_a_bad_key_is_refused(self, storage: Storage) -> None:
        """put_artifact refuses, with ValueError, a key that is not a lowercase hex SHA-256,
        and stores nothing."""
        sha256, data = _archive(100, 4)
        for key in ["", "abc", sha256.upper(), sha256 + "0", "g" * 64, f" {sha256[1:]}"]:
            with pytest.raises(ValueError, match="SHA-256"):
                storage.put_artifact(key, data)
        expect_same(storage.artifacts(), [], "artifacts() after refused puts")

    def test_artifact_not_matching_its_data_is_refused(self, storage: Storage) -> None:
        """put_artifact refuses, with ValueError, data whose SHA-256 is not the key, and
        stores nothing under that key."""
        sha256, _ = _archive(100, 5)
        _, other = _archive(100, 6)
        with pytest.raises(ValueError, match="does not match"):
            storage.put_artifact(sha256, other)
        expect_same(storage.get_artifact(sha256), None, "get_artifact() after a refused put")
        expect_same(storage.artifacts(), [], "artifacts() after a refused put")

    def test_storing_an_artifact_again_keeps_the_first_copy(self, storage: Storage) -> None:
        """Storing a hash already kept is harmless: the first copy stays, stored_at with it."""
        sha256, data = _archive(1000, 7)
        storage.put_artifact(sha256, data)
        first = storage.artifacts()
        storage.put_artifact(sha256, data)
        expect_same(storage.artifacts(), first, "artifacts() after storing a hash again")
        expect_same(storage.get_artifact(sha256), data, "get_artifact() after storing it again")

    def test_racing_puts_of_one_artifact_all_pass(self, storage: Storage) -> None:
        """Threads storing the same archive at once all succeed; it is kept once."""
        sha256, data = _archive(1 << 16, 8)
        threads = 8
        barrier = threading.Barrier(threads)

        def put() -> None:
            barrier.wait(_THREAD_TIMEOUT)
            storage.put_artifact(sha256, data)

        outcomes = _run_in_threads([put] * threads, "threads storing one archive")
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            pytest.fail(
                f"{len(failed)} of {threads} threads storing one archive failed, first with "
                f"{type(failed[0]).__name__}: {failed[0]}. Storing a kept hash is harmless, "
                "also when another writer stores it at the same moment",
                pytrace=False,
            )
        expect_same(
            [(info.sha256, info.size) for info in storage.artifacts()],
            [(sha256, len(data))],
            "artifacts() after racing puts",
        )
        expect_same(storage.get_artifact(sha256), data, "get_artifact() after racing puts")

    # -- concurrency -----------------------------------------------------------------------

    def test_concurrent_store_writes_never_pass_a_limit(self, storage: Storage) -> None:
        """Threads writing new keys of one store at once: exactly as many are kept as the
        limit allows, the others get QuotaExceeded and keep nothing, and the totals match."""
        threads, per_thread, limit = 8, 5, 12
        barrier = threading.Barrier(threads)

        def writer(number: int) -> Callable[[], int]:
            def run() -> int:
                barrier.wait(_THREAD_TIMEOUT)
                passed = 0
                for index in range(per_thread):
                    try:
                        storage.store_write(
                            "example-plugin", "acme", f"k{number}-{index}", "v", max_keys=limit
                        )
                    except QuotaExceeded:
                        continue
                    passed += 1
                return passed

            return run

        outcomes = _run_in_threads([writer(n) for n in range(threads)], "concurrent writes")
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            pytest.fail(
                f"{len(failed)} of {threads} threads writing one store failed, first with "
                f"{type(failed[0]).__name__}: {failed[0]}. Concurrent writes must queue "
                "(charge and write in one transaction that excludes the others)",
                pytrace=False,
            )
        passed = sum(o for o in outcomes if not isinstance(o, BaseException))
        expect_same(passed, limit, f"writes kept under a limit of {limit} keys, concurrently")
        kept = [
            key
            for number in range(threads)
            for index in range(per_thread)
            if storage.store_read("example-plugin", "acme", key := f"k{number}-{index}") is not None
        ]
        expect_same(len(kept), limit, "values kept after concurrent writes")
        expect_same(
            storage.store_usage("example-plugin", "acme"),
            StoreUsage(keys=limit, bytes=sum(_store_size(key, "v") for key in kept)),
            "store_usage() after concurrent writes",
        )

    def test_concurrent_store_charges_never_pass_a_limit(self, storage: Storage) -> None:
        """Threads charging new keys of one store at once: exactly as many pass as the limit
        allows, the others get QuotaExceeded, and the totals match the keys recorded."""
        threads, per_thread, limit = 8, 5, 12
        barrier = threading.Barrier(threads)

        def writer(number: int) -> Callable[[], int]:
            def run() -> int:
                barrier.wait(_THREAD_TIMEOUT)
                passed = 0
                for index in range(per_thread):
                    try:
                        storage.charge_store(
                            "example-plugin", "acme", f"k{number}-{index}", 10, max_keys=limit
                        )
                    except QuotaExceeded:
                        continue
                    passed += 1
                return passed

            return run

        outcomes = _run_in_threads([writer(n) for n in range(threads)], "concurrent charges")
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            pytest.fail(
                f"{len(failed)} of {threads} threads charging one store failed, first with "
                f"{type(failed[0]).__name__}: {failed[0]}. Concurrent charges must queue "
                "(read the totals and write them in one transaction that excludes the others)",
                pytrace=False,
            )
        passed = sum(o for o in outcomes if not isinstance(o, BaseException))
        expect_same(passed, limit, f"charges that passed a limit of {limit} keys, concurrently")
        expect_same(
            storage.store_usage("example-plugin", "acme"),
            StoreUsage(keys=limit, bytes=10 * limit),
            "store_usage() after concurrent charges",
        )

    def test_concurrent_commits_to_different_tenants_all_apply(self, storage: Storage) -> None:
        """Threads committing to different tenants of one plugin at once all succeed, none lost."""
        plugin = make_plugin(status=PluginStatus.APPROVED)
        _commit_plugin(storage, plugin)
        threads, updates = 8, 4
        barrier = threading.Barrier(threads)

        def writer(tenant: str) -> Callable[[], list[int]]:
            def run() -> list[int]:
                barrier.wait(_THREAD_TIMEOUT)
                generations = []
                for revision in range(1, updates + 1):
                    record = make_tenant(
                        tenant=tenant,
                        enabled=revision % 2 == 1,
                        settings={"revision": revision},
                        revision=revision,
                    )
                    generations.append(storage.commit(_tenant_change(record)))
                return generations

            return run

        tenants = [f"tenant-{i:02d}" for i in range(threads)]
        outcomes = _run_in_threads([writer(t) for t in tenants], "concurrent commits")
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            pytest.fail(
                f"{len(failed)} of {threads} threads committing to different tenant records "
                f"failed, first with {type(failed[0]).__name__}: {failed[0]}. Writes to "
                "different records never conflict: the backend must serialise concurrent "
                "transactions (wait for locks) rather than fail them",
                pytrace=False,
            )
        total = threads * updates
        returned = sorted(g for o in outcomes if not isinstance(o, BaseException) for g in o)
        expect_same(
            returned,
            list(range(2, total + 2)),
            "generations returned by concurrent commits (each must get its own)",
        )
        expect_same(storage.generation(), total + 1, f"generation() after {total + 1} commits")
        expect_same(
            storage.list_tenants(plugin.id),
            [
                make_tenant(tenant=t, settings={"revision": updates}, revision=updates)
                for t in tenants
            ],
            "list_tenants() after concurrent commits",
        )
        events = storage.audit(AuditQuery())
        expect_same(len(events), total + 1, "audit events after concurrent commits")
        expect_same(
            len({e.id for e in events}), total + 1, "distinct audit ids after concurrent commits"
        )

    def test_racing_writers_of_one_tenant_record(self, storage: Storage) -> None:
        """Of two threads writing one tenant record at the same revision, exactly one wins."""
        _commit_plugin(storage, make_plugin(status=PluginStatus.APPROVED))
        for revision in range(1, 6):
            records = [
                make_tenant(changed_by=f"writer-{w}", enabled=w == 0, revision=revision)
                for w in range(2)
            ]
            winner = _race(storage, [_tenant_change(r) for r in records], revision)
            expect_same(
                storage.get_tenant("example-plugin", "acme"),
                records[winner],
                f"get_tenant() after the race for revision {revision}",
            )

    def test_racing_writers_of_one_plugin_record(self, storage: Storage) -> None:
        """Of two threads writing one plugin record at the same revision, exactly one wins."""
        for revision in range(1, 6):
            records = [
                make_plugin(
                    installed_by=f"writer-{w}", version=f"{revision}.{w}", revision=revision
                )
                for w in range(2)
            ]
            changes = [
                Change(
                    plugin_id=r.id,
                    plugin=r,
                    version=make_version(version=r.version),
                    audit=make_audit(actor=r.installed_by, action="upgrade"),
                )
                for r in records
            ]
            winner = _race(storage, changes, revision)
            expect_same(
                storage.get_plugin("example-plugin"),
                records[winner],
                f"get_plugin() after the race for revision {revision}",
            )
        expect_same(
            len(storage.versions("example-plugin")),
            5,
            "versions() after five races (one per winner)",
        )


# -- test data -------------------------------------------------------------------------------

#: JSON with every kind of value, nested: manifests, settings and audit snapshots carry it.
_NESTED_JSON: Final[Mapping[str, JSONValue]] = {
    "id": "unicode-plugin",
    "name": "Ünïcødé 插件",
    "description": 'Line one\nline two \t "quoted" \\ back\u00a0slash 🚀',
    "permissions": ["read_leads", "send_notifications"],
    "settings": [
        {"name": "api_key", "type": "string", "required": True},
        {
            "name": "limits",
            "type": "json",
            "default": {"max": 2**40, "ratio": 0.125, "negative": -7, "flags": [True, False]},
        },
    ],
    "hooks": {},
    "empty_list": [],
    "nothing": None,
    "x-nested": {"a": {"b": {"c": [[1, 2], [3, [4, {"d": "deep"}]]]}}},
}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _manifest(plugin_id: str, name: str, version: str) -> dict[str, JSONValue]:
    return {
        "id": plugin_id,
        "name": name,
        "version": version,
        "entry_point": "main.py",
        "plugin_class": "Plugin",
    }


def _archive(size: int, seed: int) -> tuple[str, bytes]:
    """``size`` bytes that look random (every byte value, NULs too) and their SHA-256."""
    data = random.Random(seed).randbytes(size)  # noqa: S311 - test data, not secrets
    return hashlib.sha256(data).hexdigest(), data


# -- committing ------------------------------------------------------------------------------


def _commit_plugin(
    storage: Storage,
    plugin: PluginRecord,
    *,
    action: str = "install",
    version: VersionRecord | None = None,
    audit: AuditEvent | None = None,
) -> int:
    return storage.commit(
        Change(
            plugin_id=plugin.id,
            plugin=plugin,
            version=version,
            audit=audit if audit is not None else make_audit(plugin.id, action),
        )
    )


def _tenant_change(
    tenant: TenantRecord, *, plugin_revision: int = 1, action: str = "enable"
) -> Change:
    return Change(
        plugin_id=tenant.plugin_id,
        plugin_revision=plugin_revision,
        tenant=tenant,
        audit=make_audit(tenant.plugin_id, action, actor=tenant.changed_by, tenant=tenant.tenant),
    )


def _commit_tenant(
    storage: Storage, tenant: TenantRecord, *, plugin_revision: int = 1, action: str = "enable"
) -> int:
    return storage.commit(_tenant_change(tenant, plugin_revision=plugin_revision, action=action))


def _log(storage: Storage, event: AuditEvent, plugin_revision: int = 1) -> int:
    """Commit a change that only writes ``event`` (after checking the plugin's revision)."""
    return storage.commit(
        Change(plugin_id=event.plugin_id, plugin_revision=plugin_revision, audit=event)
    )


def _audit_history(storage: Storage) -> None:
    """Six events, a minute apart, numbered by ``after["seq"]`` (1 is the oldest)."""
    minute = timedelta(minutes=1)
    _commit_plugin(
        storage,
        make_plugin("alpha"),
        audit=make_audit("alpha", actor="alice", at=BASE_TIME, after={"seq": 1}),
    )
    _commit_plugin(
        storage,
        make_plugin("beta"),
        audit=make_audit("beta", actor="bob", at=BASE_TIME + minute, after={"seq": 2}),
    )
    for seq, plugin_id, actor, action, tenant in [
        (3, "alpha", "alice", "enable", "acme"),
        (4, "beta", "bob", "enable", "acme"),
        (5, "alpha", "bob", "configure", "globex"),
        (6, "alpha", "alice", "disable", "acme"),
    ]:
        event = make_audit(
            plugin_id,
            action,
            actor=actor,
            tenant=tenant,
            at=BASE_TIME + (seq - 1) * minute,
            after={"seq": seq},
        )
        _log(storage, event)


def _seqs(events: Sequence[AuditEvent]) -> list[object]:
    return [e.after.get("seq") if e.after is not None else None for e in events]


def _messages(failures: Sequence[FailureRecord]) -> list[str]:
    return [f.message for f in failures]


def _ids_by_message(failures: Sequence[FailureRecord]) -> dict[str, int]:
    """Each failure's id by its message, failing unless every failure has a distinct int id."""
    ids = _expect_ids([f.id for f in failures], "failures()")
    return dict(zip(_messages(failures), ids, strict=True))


# -- checking --------------------------------------------------------------------------------


def _call(query: AuditQuery) -> str:
    """``audit(AuditQuery(...))`` with only the fields given, datetimes in ISO format."""
    fields = []
    for field in attrs.fields(AuditQuery):
        value = getattr(query, field.name)
        if value != field.default:
            shown = value.isoformat() if isinstance(value, datetime) else repr(value)
            fields.append(f"{field.name}={shown}")
    return f"audit(AuditQuery({', '.join(fields)}))"


def _expect_ids(ids: Sequence[int | None], call: str) -> list[int]:
    """Fail unless every id is a distinct int; return them."""
    found = [i for i in ids if isinstance(i, int) and not isinstance(i, bool)]
    if len(found) != len(ids) or len(set(found)) != len(found):
        pytest.fail(
            f"{call} returned the ids {list(ids)}: the storage must give each record a "
            "distinct int id when it stores it",
            pytrace=False,
        )
    return found


def _missing_methods(storage: object) -> list[str]:
    wanted = [
        name
        for name in dir(Storage)
        if not name.startswith("_") and callable(getattr(Storage, name, None))
    ]
    return [name for name in wanted if not callable(getattr(storage, name, None))]


def _expect_conflict(
    storage: Storage, change: Change, *, expected: int, actual: int, what: str
) -> ConflictError:
    try:
        storage.commit(change)
    except ConflictError as exc:
        expect_same(
            (exc.expected, exc.actual),
            (expected, actual),
            f"(expected, actual) revisions of the ConflictError raised by {what}",
        )
        return exc
    except StorageError as exc:
        pytest.fail(
            f"{what}: commit() raised {type(exc).__name__}({exc}), but a revision mismatch "
            "must raise ConflictError; call Change.check() before writing",
            pytrace=False,
        )
    pytest.fail(
        f"{what}: commit() succeeded, but must raise ConflictError (expected revision "
        f"{expected}, found {actual}) and write nothing; call Change.check() with the "
        "stored records inside the transaction",
        pytrace=False,
    )


def _observe(storage: Storage, plugin_id: str) -> dict[str, object]:
    """Everything a commit to ``plugin_id`` could change, by the call that reads it."""
    return {
        "generation()": storage.generation(),
        "list_plugins()": storage.list_plugins(),
        f"list_tenants({plugin_id!r})": storage.list_tenants(plugin_id),
        f"versions({plugin_id!r})": storage.versions(plugin_id),
        "audit(AuditQuery())": storage.audit(AuditQuery()),
        "enabled_plugins('acme')": storage.enabled_plugins("acme"),
        "enabled_plugins('globex')": storage.enabled_plugins("globex"),
        f"kept_versions({plugin_id!r})": storage.kept_versions(plugin_id),
        "artifacts()": storage.artifacts(),
    }


def _expect_unchanged(
    storage: Storage, plugin_id: str, before: dict[str, object], after: str
) -> None:
    now = _observe(storage, plugin_id)
    problems = [
        f"{call} changed:\n    " + "\n    ".join(diffs)
        for call, value in before.items()
        if (diffs := differences(now[call], value, ""))
    ]
    if problems:
        pytest.fail(
            f"{after} must write nothing (the commit is atomic), yet:\n  " + "\n  ".join(problems),
            pytrace=False,
        )


# -- threads ---------------------------------------------------------------------------------


#: Values of every JSON type, and keys at the edges of what PluginAPI lets through.
_STORE_VALUES: Final[Mapping[str, JSONValue]] = {
    "text": "Zoë — ünïcødé ✓ 插件",
    "empty text": "",
    "int": 42,
    "negative": -7,
    "large int": 2**70,
    "float": 0.5,
    "true": True,
    "false": False,
    "null": None,
    "list": [1, "two", None, [3.5, False]],
    "object": {"nested": {"list": [1, 2], "flag": False}, "null": None, "": "empty key"},
    "control": 'tab\tnew line\nNUL\u0000 quote" backslash\\',
    "ключ with spaces/and:colons 'quoted'": "any text is a key",
    "k" * 200: "the longest key PluginAPI allows",
}


def _store_size(key: str, value: JSONValue) -> int:
    """What a store write charges: the key's UTF-8 bytes and the value's UTF-8 JSON."""
    return len(key.encode()) + len(json.dumps(value, ensure_ascii=False).encode())


def _run_in_threads(tasks: Sequence[Callable[[], _T]], what: str) -> list[_T | BaseException]:
    """Run each task in its own thread; return each one's result or exception, in order."""
    outcomes: dict[int, _T | BaseException] = {}

    def run(index: int) -> None:
        try:
            outcomes[index] = tasks[index]()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread, which reports it
            outcomes[index] = exc

    # Daemon threads: a backend that deadlocks fails the test instead of hanging the run.
    threads = [
        threading.Thread(target=run, args=(i,), name=f"storage-contract-{i}", daemon=True)
        for i in range(len(tasks))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(_THREAD_TIMEOUT)
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck:
        pytest.fail(
            f"{what}: {len(stuck)} of {len(threads)} threads were still running after "
            f"{_THREAD_TIMEOUT:.0f} s (a deadlock, or a lock that is never released?)",
            pytrace=False,
        )
    return [outcomes[i] for i in range(len(tasks))]


def _race(storage: Storage, changes: Sequence[Change], revision: int) -> int:
    """Commit ``changes`` from one thread each, all at once; return the index of the winner."""
    barrier = threading.Barrier(len(changes))
    start = storage.generation()

    def racer(change: Change) -> Callable[[], int]:
        def run() -> int:
            barrier.wait(_THREAD_TIMEOUT)
            return storage.commit(change)

        return run

    what = f"{len(changes)} threads writing revision {revision} of one record"
    outcomes = _run_in_threads([racer(c) for c in changes], what)
    winners = [i for i, o in enumerate(outcomes) if not isinstance(o, BaseException)]
    conflicts = [o for o in outcomes if isinstance(o, ConflictError)]
    others = [
        o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, ConflictError)
    ]
    if others:
        pytest.fail(
            f"{what}: a writer failed with {type(others[0]).__name__}: {others[0]}; the "
            "loser must get ConflictError (the backend must serialise the transactions)",
            pytrace=False,
        )
    if len(winners) != 1:
        pytest.fail(
            f"{what}: {len(winners)} writers succeeded, exactly one must; the others must "
            "get ConflictError (check the revision and write in one transaction, holding "
            "a write lock, or update only where the stored revision is still r - 1)",
            pytrace=False,
        )
    for conflict in conflicts:
        expect_same(
            (conflict.expected, conflict.actual),
            (revision - 1, revision),
            f"{what}: (expected, actual) revisions of the loser's ConflictError",
        )
    expect_same(outcomes[winners[0]], start + 1, f"{what}: the generation the winner got")
    expect_same(storage.generation(), start + 1, f"{what}: generation() after the race")
    return winners[0]
