"""SQLiteStorage: connection setup, schema migrations, durability, atomic commits, errors
translated at the seam, concurrency between threads and connections, and agreement with
MemoryStorage."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services_ai_plugins._storage import _sqlite
from services_ai_plugins._storage._memory import MemoryStorage
from services_ai_plugins._storage._protocol import (
    AuditEvent,
    AuditQuery,
    Change,
    FailureRecord,
    MetricsDelta,
    PluginRecord,
    PluginStatus,
    SourceKind,
    StagedVersion,
    Storage,
    TenantRecord,
    VersionRecord,
)
from services_ai_plugins._storage._sqlite import SQLiteStorage
from services_ai_plugins.errors import ConflictError, StorageError
from services_ai_plugins.types import JSONValue

T0 = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    """A moment ``minutes`` after T0."""
    return T0 + timedelta(minutes=minutes)


def plugin(plugin_id: str = "crm-sync", **changes: Any) -> PluginRecord:
    """A pending plugin record at revision 1, with ``changes`` applied."""
    record = PluginRecord(
        id=plugin_id,
        name=plugin_id.replace("-", " ").title(),
        version="1.0.0",
        status=PluginStatus.PENDING,
        manifest={"id": plugin_id, "name": plugin_id, "version": "1.0.0"},
        code_hash="ab" * 32,
        source=SourceKind.FOLDER,
        package_path=f"/srv/plugins/{plugin_id}/1.0.0",
        installed_at=T0,
        installed_by="admin",
    )
    return attrs.evolve(record, **changes)


def event(plugin_id: str, action: str, *, when: datetime = T0, **fields: Any) -> AuditEvent:
    """An audit event by ``admin`` unless ``fields`` say otherwise."""
    return AuditEvent(
        **{"at": when, "actor": "admin", "action": action, "plugin_id": plugin_id, **fields}
    )


def install(storage: Storage, plugin_id: str = "crm-sync", *, when: datetime = T0) -> PluginRecord:
    """Commit the install of a new pending plugin (with its version record)."""
    record = plugin(plugin_id, installed_at=when)
    version = VersionRecord(
        plugin_id=plugin_id,
        version=record.version,
        code_hash=record.code_hash,
        changelog="First release",
        installed_at=when,
        installed_by="admin",
    )
    storage.commit(
        Change(
            plugin_id=plugin_id,
            plugin=record,
            version=version,
            audit=event(plugin_id, "install", when=when, after={"version": record.version}),
        )
    )
    return record


def tenant_change(
    plugin_id: str,
    tenant: str,
    revision: int,
    *,
    enabled: bool = True,
    plugin_revision: int | None = 1,
    when: datetime = T0,
    suspended_reason: str | None = None,
) -> Change:
    """A change writing the plugin's record for ``tenant`` at ``revision``."""
    return Change(
        plugin_id=plugin_id,
        plugin_revision=plugin_revision,
        tenant=TenantRecord(
            plugin_id=plugin_id,
            tenant=tenant,
            enabled=enabled,
            suspended_reason=suspended_reason,
            changed_at=when,
            changed_by="owner",
            revision=revision,
        ),
        audit=event(
            plugin_id, "enable" if enabled else "disable", when=when, tenant=tenant, actor="owner"
        ),
    )


def raw(path: Path) -> closing[sqlite3.Connection]:
    """A plain sqlite3 connection to the file, closed on leaving the block."""
    return closing(sqlite3.connect(path))


#: The columns of plugins that the schema's step 5 added.
VERSION_COLUMNS = ("artifact", "staged")


def old_database(path: Path, steps: int, *records: PluginRecord) -> None:
    """A database at schema step ``steps`` holding the plugin ``records``, written as that
    schema's columns hold them (no column of a later step)."""
    old_steps = _sqlite._MIGRATIONS[:steps]
    assert steps < len(_sqlite._MIGRATIONS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_sqlite, "_MIGRATIONS", old_steps)
        SQLiteStorage(path).close()
    with raw(path) as conn, conn:
        for record in records:
            params = {
                name: value
                for name, value in _sqlite._CODEC.plugin_params(record).items()
                if name not in VERSION_COLUMNS
            }
            names = ", ".join(params)
            marks = ", ".join(f":{name}" for name in params)
            conn.execute(f"INSERT INTO plugins ({names}) VALUES ({marks})", params)  # noqa: S608


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def failure(
    plugin_id: str, tenant: str | None, when: datetime, hook: str = "lead_created"
) -> FailureRecord:
    """A failure of ``hook``."""
    return FailureRecord(
        plugin_id=plugin_id,
        tenant=tenant,
        hook=hook,
        exc_type="ValueError",
        message="bad lead",
        traceback="Traceback (most recent call last): ...",
        at=when,
    )


def delta(
    plugin_id: str, hook: str, calls: int, when: datetime, slowest: float = 0.25
) -> MetricsDelta:
    """A metrics delta of ``calls`` calls, one error."""
    return MetricsDelta(
        plugin_id=plugin_id,
        hook=hook,
        calls=calls,
        errors=1,
        total_duration=calls * 0.1,
        max_duration=slowest,
        last_call=when,
    )


def snapshot(storage: Storage) -> dict[str, object]:
    """Everything the storage answers about crm-sync, for before/after comparisons."""
    return {
        "plugins": storage.list_plugins(),
        "tenants": storage.list_tenants("crm-sync"),
        "versions": storage.versions("crm-sync"),
        "audit": storage.audit(AuditQuery()),
        "failures": storage.failures(),
        "metrics": storage.metrics(),
        "generation": storage.generation(),
    }


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the test's database file goes (it does not exist yet)."""
    return tmp_path / "plugins.db"


@pytest.fixture
def opener(db_path: Path) -> Iterator[Callable[..., SQLiteStorage]]:
    """Open SQLiteStorage objects on ``db_path``; all of them are closed after the test."""
    opened: list[SQLiteStorage] = []

    def open_storage(**options: Any) -> SQLiteStorage:
        storage = SQLiteStorage(db_path, **options)
        opened.append(storage)
        return storage

    yield open_storage
    for storage in opened:
        storage.close()


@pytest.fixture
def storage(opener: Callable[..., SQLiteStorage]) -> SQLiteStorage:
    """A fresh SQLiteStorage on a file database."""
    return opener()


# Connection setup and the schema.


def test_connection_pragmas(opener: Callable[..., SQLiteStorage], db_path: Path) -> None:
    """The connection runs in WAL mode with NORMAL sync, foreign keys and the busy timeout."""
    storage = opener(timeout=2.5)
    conn = storage._conn
    assert conn is not None
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 2500
    assert conn.isolation_level is None
    with raw(db_path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_foreign_key_refuses_tenant_of_unknown_plugin(
    storage: SQLiteStorage, db_path: Path
) -> None:
    """Tenant data for a plugin that has no row is refused by Change and by the schema."""
    with pytest.raises(ValueError, match="tenant data needs a stored plugin"):
        tenant_change("ghost", "acme", 1, plugin_revision=0)
    with raw(db_path) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO plugin_tenants (plugin_id, tenant, enabled, optional_grants,"
                " settings, changed_at, changed_by, revision)"
                " VALUES ('ghost', 'acme', 1, '[]', '{}', 'x', 'x', 1)"
            )
    assert storage.get_tenant("ghost", "acme") is None
    assert storage.audit(AuditQuery()) == []
    assert storage.generation() == 0


def test_migrations_are_consecutive() -> None:
    """The migration list numbers its steps 1, 2, 3... in order."""
    versions = [m.version for m in _sqlite._MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1))


def test_migrations_recorded_once(opener: Callable[..., SQLiteStorage], db_path: Path) -> None:
    """Opening records every migration once; opening again applies nothing."""
    opener().close()
    with raw(db_path) as conn:
        first = conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
    assert [version for version, _ in first] == [m.version for m in _sqlite._MIGRATIONS]
    opener().close()
    opener().close()
    with raw(db_path) as conn:
        assert conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall() == first


def test_reopen_keeps_data(opener: Callable[..., SQLiteStorage]) -> None:
    """Plugins, tenants, versions, audit, failures, metrics and the generation survive a reopen."""
    first = opener()
    install(first)
    first.commit(tenant_change("crm-sync", "acme", 1))
    first.record_failures([failure("crm-sync", "acme", at(1))])
    first.record_metrics([delta("crm-sync", "lead_created", 3, at(2))])
    before = snapshot(first)
    first.close()
    second = opener()
    assert snapshot(second) == before
    assert second.generation() == 2


def test_newer_schema_refused_untouched(
    opener: Callable[..., SQLiteStorage], db_path: Path
) -> None:
    """A database migrated by a newer release is refused with StorageError and left as it was."""
    opener().close()
    newer = len(_sqlite._MIGRATIONS) + 1
    with raw(db_path) as conn, conn:
        conn.execute("INSERT INTO schema_migrations VALUES (?, '2030-01-01')", (newer,))
    digest = file_digest(db_path)
    with pytest.raises(StorageError, match=rf"version {newer}, newer than this release"):
        opener()
    assert file_digest(db_path) == digest


def test_extra_migration_applied_to_existing_data(
    opener: Callable[..., SQLiteStorage], db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration appended by a later release runs once on an existing database; data survives."""
    old = opener()
    record = install(old)
    old.commit(tenant_change("crm-sync", "acme", 1))
    before = snapshot(old)
    old.close()

    version = len(_sqlite._MIGRATIONS) + 1
    extra = _sqlite._Migration(
        version, "plugins get a homepage", "ALTER TABLE plugins ADD COLUMN homepage TEXT;"
    )
    monkeypatch.setattr(_sqlite, "_MIGRATIONS", (*_sqlite._MIGRATIONS, extra))
    new = opener()
    assert snapshot(new) == before
    assert new.generation() == 2
    new.commit(
        Change(
            plugin_id="crm-sync",
            plugin=attrs.evolve(record, revision=2),
            audit=event("crm-sync", "touch"),
        )
    )
    new.close()
    opener().close()

    with raw(db_path) as conn:
        applied = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
        columns = [row[1] for row in conn.execute("PRAGMA table_info(plugins)")]
    assert applied == [*range(1, version), version]
    assert "homepage" in columns


def test_failed_migration_rolls_back(
    opener: Callable[..., SQLiteStorage], db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that fails half-way leaves the schema and data as they were."""
    install(opener())
    broken = _sqlite._Migration(
        len(_sqlite._MIGRATIONS) + 1,
        "half done",
        "ALTER TABLE plugins ADD COLUMN homepage TEXT; CREATE TABLE broken (;",
    )
    with monkeypatch.context() as patch:
        patch.setattr(_sqlite, "_MIGRATIONS", (*_sqlite._MIGRATIONS, broken))
        with pytest.raises(StorageError) as caught:
            opener()
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    with raw(db_path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(plugins)")]
        applied = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
    assert "homepage" not in columns
    assert applied == [m.version for m in _sqlite._MIGRATIONS]
    assert opener().get_plugin("crm-sync") == plugin()


def test_schema_1_database_migrates_to_tenant_suspension(
    opener: Callable[..., SQLiteStorage], db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database of the first schema (no suspended_reason) opens, migrates and keeps its data."""
    approved = plugin(status=PluginStatus.APPROVED, revision=2)
    old_database(db_path, 1, approved)
    # A tenant row as the first schema holds it: eight columns, none for a suspension.
    with raw(db_path) as conn, conn:
        before = [row[1] for row in conn.execute("PRAGMA table_info(plugin_tenants)")]
        conn.execute(
            "INSERT INTO plugin_tenants VALUES ('crm-sync', 'acme', 1, '[\"x\"]', '{\"n\":1}',"
            " ?, 'owner', 1)",
            (_sqlite._text(T0),),
        )
    assert "suspended_reason" not in before

    new = opener()
    with raw(db_path) as conn:
        applied = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
        after = [row[1] for row in conn.execute("PRAGMA table_info(plugin_tenants)")]
    assert applied == [m.version for m in _sqlite._MIGRATIONS]
    assert after == [*before, "suspended_reason"]
    kept = TenantRecord(
        plugin_id="crm-sync",
        tenant="acme",
        enabled=True,
        optional_grants=("x",),
        settings={"n": 1},
        changed_at=T0,
        changed_by="owner",
    )
    assert new.get_tenant("crm-sync", "acme") == kept
    assert new.get_plugin("crm-sync") == approved
    assert new.enabled_plugins("acme") == ["crm-sync"]
    suspended = attrs.evolve(kept, suspended_reason="timeouts", revision=2)
    new.commit(
        Change(
            plugin_id="crm-sync",
            plugin_revision=2,
            tenant=suspended,
            audit=event("crm-sync", "suspend", tenant="acme"),
        )
    )
    assert new.enabled_plugins("acme") == []
    new.close()
    assert opener().get_tenant("crm-sync", "acme") == suspended


def test_step_4_database_migrates_to_staged_and_kept_versions(
    opener: Callable[..., SQLiteStorage], db_path: Path
) -> None:
    """A database of schema step 4 (before versions and archives) opens and migrates in place:
    its plugin reads back with no archive and nothing staged, then takes all of them."""
    approved = plugin(status=PluginStatus.APPROVED, revision=2)
    old_database(db_path, 4, approved)
    with raw(db_path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "plugin_artifacts" not in tables

    new = opener()
    with raw(db_path) as conn:
        applied = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
        columns = [row[1] for row in conn.execute("PRAGMA table_info(plugins)")]
    assert applied == [m.version for m in _sqlite._MIGRATIONS]
    assert columns[-2:] == list(VERSION_COLUMNS)
    found = new.get_plugin("crm-sync")
    assert found == approved
    assert found is not None
    assert (found.artifact, found.staged) == (None, None)
    assert new.kept_versions("crm-sync") == []
    assert new.artifacts() == []

    data = b"PK\x05\x06" + bytes(18)
    digest = hashlib.sha256(data).hexdigest()
    new.put_artifact(digest, data)
    staged = StagedVersion(
        version="2.0.0",
        manifest={"id": "crm-sync", "version": "2.0.0"},
        code_hash="cd" * 32,
        source=SourceKind.ARCHIVE,
        artifact=digest,
        installed_at=at(1),
        installed_by="admin",
    )
    upgraded = attrs.evolve(approved, artifact=digest, staged=staged, revision=3)
    new.commit(Change(plugin_id="crm-sync", plugin=upgraded, audit=event("crm-sync", "stage")))
    new.close()
    reopened = opener()
    assert reopened.get_plugin("crm-sync") == upgraded
    assert reopened.get_artifact(digest) == data


# Atomic commits.


def test_conflicting_commit_writes_nothing(storage: SQLiteStorage) -> None:
    """A commit whose revision does not match raises ConflictError and writes nothing."""
    record = install(storage)
    storage.commit(tenant_change("crm-sync", "acme", 1))
    before = snapshot(storage)
    stale_plugin = Change(
        plugin_id="crm-sync",
        plugin=attrs.evolve(record, status=PluginStatus.APPROVED, revision=3),
        tenant=TenantRecord(plugin_id="crm-sync", tenant="globex", changed_at=T0, changed_by="a"),
        audit=event("crm-sync", "approve"),
    )
    with pytest.raises(ConflictError) as caught:
        storage.commit(stale_plugin)
    assert (caught.value.expected, caught.value.actual) == (2, 1)
    with pytest.raises(ConflictError):
        storage.commit(tenant_change("crm-sync", "acme", 1, enabled=False))
    with pytest.raises(ConflictError):
        storage.commit(tenant_change("crm-sync", "acme", 2, plugin_revision=2))
    assert snapshot(storage) == before
    assert storage.generation() == 2
    assert storage.commit(tenant_change("crm-sync", "acme", 2, enabled=False)) == 3


def test_driver_error_mid_commit_rolls_back(storage: SQLiteStorage) -> None:
    """A database error after the first write rolls the whole change back, as StorageError."""
    record = plugin()
    bad_version = VersionRecord(
        plugin_id=record.id,
        version=record.version,
        code_hash=record.code_hash,
        changelog=None,
        installed_at=T0,
        installed_by=cast("str", None),  # NOT NULL: fails after the plugin row is written
    )
    change = Change(
        plugin_id=record.id, plugin=record, version=bad_version, audit=event(record.id, "install")
    )
    with pytest.raises(StorageError) as caught:
        storage.commit(change)
    assert type(caught.value) is StorageError
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    assert storage.get_plugin(record.id) is None
    assert storage.versions(record.id) == []
    assert storage.audit(AuditQuery()) == []
    assert storage.generation() == 0
    assert storage.commit(attrs.evolve(change, version=None)) == 1


def test_clear_tenants_then_write(storage: SQLiteStorage) -> None:
    """clear_tenants removes every tenant row of the plugin before the change's own rows."""
    record = install(storage)
    storage.commit(tenant_change("crm-sync", "acme", 1))
    storage.commit(tenant_change("crm-sync", "globex", 1))
    storage.commit(tenant_change("crm-sync", "globex", 2, enabled=False))
    fresh = TenantRecord(plugin_id="crm-sync", tenant="globex", changed_at=T0, changed_by="a")
    storage.commit(
        Change(
            plugin_id="crm-sync",
            plugin=attrs.evolve(record, revision=2),
            tenant=fresh,
            clear_tenants=True,
            audit=event("crm-sync", "reinstall"),
        )
    )
    assert storage.list_tenants("crm-sync") == [fresh]


def test_mismatched_plugin_ids_refused(storage: SQLiteStorage) -> None:
    """A change carrying another plugin's record is refused before anything is written."""
    with pytest.raises(ValueError, match="carries a plugin record of plugin 'other'"):
        Change(plugin_id="crm-sync", plugin=plugin("other"), audit=event("crm-sync", "x"))
    assert storage.generation() == 0


def test_failures_and_metrics_leave_generation(storage: SQLiteStorage) -> None:
    """Recording failures and metrics, and resolving failures, do not move the generation."""
    install(storage)
    storage.record_failures([failure("crm-sync", "acme", at(1))])
    storage.record_failures([])
    storage.record_metrics([delta("crm-sync", "lead_created", 1, at(1))])
    storage.record_metrics([])
    assert storage.resolve_failures("crm-sync") == 1
    assert storage.generation() == 1


# Values in and out.


def test_datetimes_round_trip(storage: SQLiteStorage) -> None:
    """Aware datetimes in any zone come back equal; naive ones are refused by the records."""
    cet = timezone(timedelta(hours=1))
    record = plugin(
        installed_at=datetime(2025, 1, 1, 12, 0, tzinfo=cet),
        approved_at=datetime(2025, 1, 2, 0, 0, 0, 1, tzinfo=timezone.utc),
    )
    storage.commit(Change(plugin_id=record.id, plugin=record, audit=event(record.id, "install")))
    stored = storage.get_plugin(record.id)
    assert stored == record
    assert stored is not None
    assert stored.installed_at.utcoffset() == timedelta(0)

    with pytest.raises(ValueError, match="must be timezone-aware"):
        event("naive", "x", when=datetime(2025, 1, 1))
    assert storage.generation() == 1


def test_audit_time_filters_across_offsets(storage: SQLiteStorage) -> None:
    """since/until compare instants, whatever offset the events and the query were given in."""
    plus2 = timezone(timedelta(hours=2))
    install(storage, when=datetime(2025, 1, 1, 8, 0, tzinfo=timezone.utc))
    moments = [
        datetime(2025, 1, 1, 10, 30, tzinfo=plus2),  # 08:30Z
        datetime(2025, 1, 1, 9, 0, tzinfo=timezone.utc),
        datetime(2025, 1, 1, 9, 0, 0, 1, tzinfo=timezone.utc),
        datetime(2025, 1, 1, 11, 30, tzinfo=plus2),  # 09:30Z
    ]
    for revision, moment in enumerate(moments, start=1):
        storage.commit(tenant_change("crm-sync", "acme", revision, when=moment))
    query = AuditQuery(
        since=datetime(2025, 1, 1, 11, 0, tzinfo=plus2),  # 09:00Z
        until=datetime(2025, 1, 1, 9, 30, tzinfo=timezone.utc),
    )
    assert [e.at for e in storage.audit(query)] == [moments[2], moments[1]]


def test_json_round_trips_unicode(storage: SQLiteStorage, db_path: Path) -> None:
    """JSON fields round-trip nested values and unicode, stored as compact UTF-8 text."""
    manifest = {"id": "crm-sync", "name": "Zürich ☕ 日本", "x-meta": {"n": [1, 2.5, True, None]}}
    record = plugin(manifest=manifest, granted_permissions=("read_leads", "send_ëmail"))
    storage.commit(Change(plugin_id=record.id, plugin=record, audit=event(record.id, "install")))
    settings: dict[str, JSONValue] = {
        "greeting": "héllo 👋",
        "limits": {"max": 10**18, "ratio": 0.1},
    }
    tenant = TenantRecord(
        plugin_id=record.id,
        tenant="ácme",
        settings=settings,
        optional_grants=("ẞ",),
        changed_at=T0,
        changed_by="ōwner",
    )
    storage.commit(
        Change(
            plugin_id=record.id,
            plugin_revision=1,
            tenant=tenant,
            audit=event(record.id, "configure", before={"greeting": None}, after=settings),
        )
    )
    assert storage.get_plugin(record.id) == record
    assert storage.get_tenant(record.id, "ácme") == tenant
    assert storage.audit(AuditQuery(action="configure"))[0].after == settings
    with raw(db_path) as conn:
        text = conn.execute("SELECT manifest FROM plugins").fetchone()[0]
    assert "Zürich ☕ 日本" in text
    assert ", " not in text


def test_memory_database() -> None:
    """ ":memory:" gives a working database private to the object."""
    first, second = SQLiteStorage(":memory:"), SQLiteStorage(":memory:")
    try:
        install(first)
        assert first.generation() == 1
        assert first.get_plugin("crm-sync") == plugin()
        assert second.generation() == 0
    finally:
        first.close()
        second.close()


# Errors at the seam.


def test_missing_parent_folder(tmp_path: Path) -> None:
    """A database in a folder that does not exist is a StorageError naming the path."""
    path = tmp_path / "missing" / "plugins.db"
    with pytest.raises(StorageError, match="does not exist") as caught:
        SQLiteStorage(path)
    assert str(path) in str(caught.value)
    assert not path.parent.exists()


def test_not_a_database(db_path: Path) -> None:
    """A file that is not a database is a StorageError (from sqlite3's), and is left alone."""
    db_path.write_bytes(b"this is not a database, just text\n" * 200)
    with pytest.raises(StorageError, match="not a database") as caught:
        SQLiteStorage(db_path)
    assert str(db_path) in str(caught.value)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
    assert db_path.read_bytes() == b"this is not a database, just text\n" * 200


def test_closed_storage_raises(opener: Callable[..., SQLiteStorage]) -> None:
    """Every method of a closed storage raises StorageError; closing twice is harmless."""
    storage = opener()
    install(storage)
    storage.close()
    storage.close()
    calls: list[Callable[[], object]] = [
        storage.generation,
        lambda: storage.commit(tenant_change("crm-sync", "acme", 1)),
        lambda: storage.get_plugin("crm-sync"),
        storage.list_plugins,
        lambda: storage.get_tenant("crm-sync", "acme"),
        lambda: storage.list_tenants("crm-sync"),
        lambda: storage.enabled_plugins("acme"),
        lambda: storage.versions("crm-sync"),
        lambda: storage.audit(AuditQuery()),
        lambda: storage.record_failures([]),
        storage.failures,
        lambda: storage.resolve_failures("crm-sync"),
        lambda: storage.resolve_failures("crm-sync", ids=[1]),
        lambda: storage.resolve_failures("crm-sync", ids=[]),
        lambda: storage.record_metrics([]),
        storage.metrics,
    ]
    for call in calls:
        with pytest.raises(StorageError, match="is closed"):
            call()


def test_repr_shows_path(storage: SQLiteStorage, db_path: Path) -> None:
    """The repr names the database file."""
    assert repr(storage) == f"SQLiteStorage({str(db_path)!r})"


def test_negative_timeout_refused(db_path: Path) -> None:
    """A negative timeout is refused before anything is opened."""
    with pytest.raises(ValueError, match="timeout"):
        SQLiteStorage(db_path, timeout=-1)
    assert not db_path.exists()


# Concurrency.


def test_two_objects_share_commits(opener: Callable[..., SQLiteStorage]) -> None:
    """Two storages on one file see each other's commits through the generation."""
    first, second = opener(), opener()
    assert second.generation() == 0
    install(first)
    assert second.generation() == 1
    assert second.get_plugin("crm-sync") == plugin()
    second.commit(tenant_change("crm-sync", "acme", 1))
    assert first.generation() == 2
    assert first.enabled_plugins("acme") == []  # pending plugins run nowhere
    assert first.get_tenant("crm-sync", "acme") == second.get_tenant("crm-sync", "acme")


def test_stale_write_from_other_connection_conflicts(opener: Callable[..., SQLiteStorage]) -> None:
    """A write decided on a record another connection has since changed is a ConflictError."""
    first, second = opener(), opener()
    record = install(first)
    seen = second.get_plugin("crm-sync")
    assert seen == record
    first.commit(
        Change(
            plugin_id="crm-sync",
            plugin=attrs.evolve(record, revision=2),
            audit=event("crm-sync", "approve"),
        )
    )
    with pytest.raises(ConflictError):
        second.commit(
            Change(
                plugin_id="crm-sync",
                plugin=attrs.evolve(seen, revision=2),
                audit=event("crm-sync", "reject"),
            )
        )
    assert [e.action for e in second.audit(AuditQuery())] == ["approve", "install"]


def test_racing_connections_one_writer_wins(opener: Callable[..., SQLiteStorage]) -> None:
    """Connections racing to write the same revision: one commits, the others get ConflictError."""
    install(opener())
    racers = [opener() for _ in range(8)]
    start = threading.Barrier(len(racers))

    def race(storage: SQLiteStorage) -> str:
        start.wait()
        try:
            storage.commit(tenant_change("crm-sync", "acme", 1))
        except ConflictError:
            return "conflict"
        return "committed"

    with ThreadPoolExecutor(len(racers)) as pool:
        outcomes = sorted(pool.map(race, racers))
    assert outcomes == ["committed"] + ["conflict"] * (len(racers) - 1)
    assert racers[0].generation() == 2


def test_threads_share_one_storage(storage: SQLiteStorage) -> None:
    """4 threads x 50 commits on one storage object are all applied, each moving the generation."""
    install(storage)

    def work(tenant: str) -> None:
        for revision in range(1, 51):
            storage.commit(tenant_change("crm-sync", tenant, revision, enabled=revision % 2 == 0))

    tenants = [f"tenant-{n}" for n in range(4)]
    with ThreadPoolExecutor(len(tenants)) as pool:
        list(pool.map(work, tenants))
    assert storage.generation() == 1 + 4 * 50
    assert [(r.tenant, r.revision) for r in storage.list_tenants("crm-sync")] == [
        (tenant, 50) for tenant in tenants
    ]
    assert len(storage.audit(AuditQuery())) == 1 + 4 * 50


def test_integrity_after_commits(storage: SQLiteStorage) -> None:
    """integrity_check and foreign_key_check are clean after a series of commits."""
    for number in range(5):
        install(storage, f"plugin-{number}")
        for tenant in range(4):
            storage.commit(tenant_change(f"plugin-{number}", f"t{tenant}", 1))
    storage.record_failures([failure("plugin-1", "t1", at(n)) for n in range(10)])
    conn = storage._conn
    assert conn is not None
    assert [tuple(row) for row in conn.execute("PRAGMA integrity_check")] == [("ok",)]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


# Agreement with MemoryStorage.


def scenario(storage: Storage) -> dict[str, object]:
    """Drive a storage through a lifecycle and collect every answer (ids left out)."""
    seen: dict[str, object] = {}
    records = {name: install(storage, name, when=at(n)) for n, name in enumerate("abc")}
    for n, name in enumerate("ab"):
        records[name] = attrs.evolve(
            records[name],
            status=PluginStatus.APPROVED,
            approved_at=at(10 + n),
            approved_by="root",
            granted_permissions=("read_leads",),
            revision=2,
        )
        storage.commit(
            Change(
                plugin_id=name,
                plugin=records[name],
                audit=event(name, "approve", when=at(10 + n), actor="root"),
            )
        )
    commits = [
        tenant_change("a", "acme", 1, plugin_revision=2, when=at(20)),
        tenant_change("a", "globex", 1, plugin_revision=2, when=at(21)),
        tenant_change("b", "acme", 1, plugin_revision=2, when=at(22)),
        tenant_change("c", "acme", 1, plugin_revision=1, when=at(23)),
        tenant_change("b", "acme", 2, plugin_revision=2, enabled=False, when=at(24)),
        tenant_change("b", "acme", 2, plugin_revision=2, when=at(25)),  # stale
        tenant_change("b", "acme", 3, plugin_revision=2, when=at(26)),
        tenant_change("a", "globex", 2, plugin_revision=2, when=at(27), suspended_reason="slow"),
        tenant_change("a", "globex", 3, plugin_revision=2, when=at(28), enabled=False),
    ]
    outcomes: list[object] = []
    seen["generations"] = outcomes
    for change in commits:
        try:
            outcomes.append(storage.commit(change))
        except ConflictError as exc:
            outcomes.append((exc.expected, exc.actual))
    seen["enabled before"] = storage.enabled_plugins("acme")
    seen["enabled globex before"] = storage.enabled_plugins("globex")
    records["a"] = attrs.evolve(
        records["a"], status=PluginStatus.SUSPENDED, status_reason="5 failures", revision=3
    )
    storage.commit(Change(plugin_id="a", plugin=records["a"], audit=event("a", "suspend")))
    storage.commit(
        Change(
            plugin_id="c",
            plugin=attrs.evolve(records["c"], status=PluginStatus.UNINSTALLED, revision=2),
            clear_tenants=True,
            audit=event("c", "uninstall", when=at(30), before={"status": "pending"}),
        )
    )
    upgraded = attrs.evolve(records["b"], version="2.0.0", code_hash="cd" * 32, revision=3)
    storage.commit(
        Change(
            plugin_id="b",
            plugin=upgraded,
            version=VersionRecord(
                plugin_id="b",
                version="2.0.0",
                code_hash=upgraded.code_hash,
                changelog=None,
                installed_at=at(31),
                installed_by="root",
            ),
            audit=event("b", "upgrade", when=at(31), actor="root"),
        )
    )
    storage.record_failures(
        [failure("a", "acme", at(40)), failure("a", "globex", at(41)), failure("b", None, at(42))]
    )
    seen["resolved"] = [
        storage.resolve_failures("a", "acme"),
        storage.resolve_failures("a", "acme"),
        storage.resolve_failures("b"),
    ]
    storage.record_failures(
        [failure("a", "globex", at(43)), failure("a", None, at(44)), failure("b", None, at(45))]
    )
    newest = storage.failures(limit=3)
    seen["resolved by id"] = [
        storage.resolve_failures("a", ids=[f.id for f in newest if f.id is not None]),
        storage.resolve_failures("a", "acme", ids=[f.id for f in newest if f.id is not None]),
    ]
    storage.record_metrics(
        [
            delta("b", "lead_created", 3, at(50)),
            delta("a", "lead_created", 2, at(52), slowest=0.5),
            delta("b", "lead_created", 4, at(49), slowest=0.75),
        ]
    )
    storage.record_metrics(
        [delta("b", "booking_made", 1, at(53)), delta("b", "lead_created", 1, at(48))]
    )

    for status in [None, *PluginStatus]:
        seen[f"plugins {status}"] = storage.list_plugins(status)
    for name in ["a", "b", "c", "zz"]:
        seen[f"plugin {name}"] = storage.get_plugin(name)
        seen[f"tenants {name}"] = storage.list_tenants(name)
        seen[f"tenant {name}"] = storage.get_tenant(name, "acme")
        seen[f"versions {name}"] = storage.versions(name)
    for tenant in ["acme", "globex", "nobody"]:
        seen[f"enabled {tenant}"] = storage.enabled_plugins(tenant)
    queries = [
        AuditQuery(),
        AuditQuery(plugin_id="b"),
        AuditQuery(tenant="acme"),
        AuditQuery(actor="root"),
        AuditQuery(action="enable", tenant="acme"),
        AuditQuery(since=at(21), until=at(30)),
        AuditQuery(limit=2),
        AuditQuery(limit=0),
        AuditQuery(plugin_id="zz"),
    ]
    for query in queries:
        seen[f"audit {query}"] = [attrs.evolve(e, id=None) for e in storage.audit(query)]
    for plugin_id, resolved, limit in [
        (None, None, 1000),
        ("a", None, 1000),
        (None, False, 1000),
        (None, True, 1000),
        ("a", True, 1),
        (None, None, 1),
        (None, None, 0),
    ]:
        found = storage.failures(plugin_id, resolved=resolved, limit=limit)
        seen[f"failures {plugin_id} {resolved} {limit}"] = [attrs.evolve(f, id=None) for f in found]
    for plugin_id in [None, "a", "b", "zz"]:
        seen[f"metrics {plugin_id}"] = storage.metrics(plugin_id)
    seen["generation"] = storage.generation()
    return seen


def test_matches_memory_storage(storage: SQLiteStorage) -> None:
    """A full lifecycle gives the same answers from SQLiteStorage as from MemoryStorage."""
    expected = scenario(MemoryStorage())
    actual = scenario(storage)
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key] == value, key


PLUGINS_OF_FAILURES = st.sampled_from(["a", "b"])
TENANTS_OF_FAILURES = st.sampled_from([None, "acme", "globex"])


@given(
    recorded=st.lists(
        st.tuples(PLUGINS_OF_FAILURES, TENANTS_OF_FAILURES, st.booleans()), max_size=10
    ),
    resolutions=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "zz"]),
            TENANTS_OF_FAILURES,
            st.none() | st.lists(st.integers(0, 12), max_size=5),
        ),
        max_size=4,
    ),
    resolved=st.sampled_from([None, False, True]),
    limit=st.integers(0, 12),
)
def test_failures_follow_the_model_in_both_backends(
    recorded: list[tuple[str, str | None, bool]],
    resolutions: list[tuple[str, str | None, list[int] | None]],
    resolved: bool | None,
    limit: int,
) -> None:
    """Resolving failures (by plugin, tenant and ids) and listing them (by resolved and limit)
    give what a list model predicts, in SQLiteStorage and MemoryStorage alike."""
    # The model: each failure by its position in ``recorded``, with its resolved flag.
    flags = [done for _, _, done in recorded]
    expected_counts: list[int] = []
    for plugin_id, tenant, positions in resolutions:
        chosen = set(range(len(recorded))) if positions is None else set(positions)
        hits = [
            n
            for n, (owner, where, _) in enumerate(recorded)
            if owner == plugin_id
            and (tenant is None or where == tenant)
            and n in chosen
            and not flags[n]
        ]
        for n in hits:
            flags[n] = True
        expected_counts.append(len(hits))
    newest_first = [n for n in reversed(range(len(recorded))) if resolved in (None, flags[n])]

    for storage in (MemoryStorage(), SQLiteStorage(":memory:")):
        try:
            storage.record_failures(
                [
                    attrs.evolve(failure(p, t, at(n)), message=str(n), resolved=done)
                    for n, (p, t, done) in enumerate(recorded)
                ]
            )
            ids = [f.id for f in reversed(storage.failures(limit=100))]
            known = [i for i in ids if i is not None]
            unknown = max(known, default=0) + 1
            counts = [
                storage.resolve_failures(
                    plugin_id,
                    tenant,
                    ids=None
                    if positions is None
                    else [known[n] if n < len(known) else unknown + n for n in positions],
                )
                for plugin_id, tenant, positions in resolutions
            ]
            assert counts == expected_counts, storage
            listed = storage.failures(resolved=resolved, limit=limit)
            assert [int(f.message) for f in listed] == newest_first[:limit], storage
            assert [f.resolved for f in listed] == [flags[int(f.message)] for f in listed]
        finally:
            storage.close()


def test_ids_newest_first(storage: SQLiteStorage) -> None:
    """Audit events and failures carry growing ids and are listed newest first."""
    for name in ["a", "b", "c"]:
        install(storage, name)
    storage.record_failures([failure("a", None, at(n)) for n in range(3)])
    for listed in (storage.audit(AuditQuery()), storage.failures()):
        ids = [item.id for item in listed if item.id is not None]
        assert len(ids) == 3
        assert ids == sorted(ids, reverse=True)
        assert len(set(ids)) == len(ids)
