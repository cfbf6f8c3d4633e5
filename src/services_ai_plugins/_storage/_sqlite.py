"""The embedded default storage backend: one SQLite file in WAL mode, with a versioned schema.

Every write is one ``BEGIN IMMEDIATE`` transaction, so writers in other threads
and processes queue on SQLite's write lock and the revision check of a
:class:`Change` runs while that lock is held. Reads are single autocommit
SELECTs. Datetimes are stored as fixed-width ISO-8601 UTC text (so text order is
time order) and JSON as compact UTF-8 text.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Final, cast, final

import attrs

from .._json import JSONValue
from ..errors import StorageError
from ._protocol import (
    AccessQuery,
    AccessRecord,
    ArtifactInfo,
    AuditEvent,
    AuditQuery,
    Change,
    FailureRecord,
    HookMetrics,
    KeptVersion,
    MetricsDelta,
    PluginRecord,
    PluginStatus,
    StoreUsage,
    TenantRecord,
    VersionRecord,
    charge,
    check_artifact,
    check_ids,
    check_limit,
    check_size,
    store_value,
    stored_value,
)
from ._rows import RowCodec

__all__ = ["SQLiteStorage"]

_logger = logging.getLogger("services_ai_plugins.storage")

#: What the driver (or the text/number conversions around it) raises; these
#: become StorageError at this seam. ValueError covers undecodable UTF-8, bad
#: JSON and unknown enum values in a damaged database.
_DRIVER_ERRORS: Final = (sqlite3.Error, OverflowError, ValueError)

_MEMORY: Final = ":memory:"


@attrs.frozen
class _Migration:
    """One step of the schema: applied once, in one transaction, in version order."""

    version: int
    description: str
    #: SQL statements separated by semicolons (no PRAGMAs: they are ignored
    #: inside a transaction).
    script: str


_SCHEMA_1: Final = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('generation', 0);

CREATE TABLE plugins (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    version             TEXT NOT NULL,
    status              TEXT NOT NULL,
    manifest            TEXT NOT NULL,
    code_hash           TEXT NOT NULL,
    source              TEXT NOT NULL,
    package_path        TEXT,
    installed_at        TEXT NOT NULL,
    installed_by        TEXT NOT NULL,
    approved_at         TEXT,
    approved_by         TEXT,
    status_reason       TEXT,
    granted_permissions TEXT NOT NULL,
    revision            INTEGER NOT NULL
);
CREATE INDEX plugins_status ON plugins (status, id);

CREATE TABLE plugin_tenants (
    plugin_id       TEXT NOT NULL REFERENCES plugins (id),
    tenant          TEXT NOT NULL,
    enabled         INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    optional_grants TEXT NOT NULL,
    settings        TEXT NOT NULL,
    changed_at      TEXT NOT NULL,
    changed_by      TEXT NOT NULL,
    revision        INTEGER NOT NULL,
    PRIMARY KEY (plugin_id, tenant)
);
CREATE INDEX plugin_tenants_enabled ON plugin_tenants (tenant, enabled, plugin_id);

-- History tables carry no foreign key: they outlive the plugin's row.
CREATE TABLE plugin_versions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    plugin_id    TEXT NOT NULL,
    version      TEXT NOT NULL,
    code_hash    TEXT NOT NULL,
    changelog    TEXT,
    installed_at TEXT NOT NULL,
    installed_by TEXT NOT NULL
);
CREATE INDEX plugin_versions_plugin ON plugin_versions (plugin_id, id);

CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    plugin_id   TEXT NOT NULL,
    tenant      TEXT,
    before_json TEXT,
    after_json  TEXT
);
CREATE INDEX audit_events_plugin ON audit_events (plugin_id, id);
CREATE INDEX audit_events_tenant ON audit_events (tenant, id);
CREATE INDEX audit_events_actor ON audit_events (actor, id);
CREATE INDEX audit_events_at ON audit_events (at);

CREATE TABLE failures (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    plugin_id TEXT NOT NULL,
    tenant    TEXT,
    hook      TEXT NOT NULL,
    exc_type  TEXT NOT NULL,
    message   TEXT NOT NULL,
    traceback TEXT NOT NULL,
    at        TEXT NOT NULL,
    resolved  INTEGER NOT NULL CHECK (resolved IN (0, 1))
);
CREATE INDEX failures_plugin ON failures (plugin_id, resolved, id);

CREATE TABLE hook_metrics (
    plugin_id      TEXT NOT NULL,
    hook           TEXT NOT NULL,
    calls          INTEGER NOT NULL,
    errors         INTEGER NOT NULL,
    total_duration REAL NOT NULL,
    max_duration   REAL NOT NULL,
    last_call      TEXT NOT NULL,
    PRIMARY KEY (plugin_id, hook)
);
"""

_STORE_LEDGER: Final = """
-- What each plugin keeps in its key-value store per tenant (the values live with the
-- host services); the totals row is read and written by every charge.
CREATE TABLE store_totals (
    plugin_id TEXT NOT NULL,
    tenant    TEXT NOT NULL,
    keys      INTEGER NOT NULL,
    bytes     INTEGER NOT NULL,
    PRIMARY KEY (plugin_id, tenant)
);
CREATE TABLE store_sizes (
    plugin_id TEXT NOT NULL,
    tenant    TEXT NOT NULL,
    key       TEXT NOT NULL,
    bytes     INTEGER NOT NULL,
    PRIMARY KEY (plugin_id, tenant, key)
);
"""

_STORE_VALUES: Final = """
-- The plugins' key-value stores the SDK keeps (for host services without their own), as
-- JSON text; each value's size is charged in store_sizes in the same transaction.
CREATE TABLE store_values (
    plugin_id TEXT NOT NULL,
    tenant    TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (plugin_id, tenant, key)
);
"""

_VERSIONS: Final = """
-- The archive a plugin's code is materialised from, and a version staged beside the
-- running one (one JSON object).
ALTER TABLE plugins ADD COLUMN artifact TEXT;
ALTER TABLE plugins ADD COLUMN staged TEXT;

-- Versions that ran before, kept for a rollback: one per (plugin, version). No foreign
-- key, as for the history tables. Listed by kept_at, then by rowid (which an upsert keeps).
CREATE TABLE plugin_kept_versions (
    plugin_id           TEXT NOT NULL,
    version             TEXT NOT NULL,
    manifest            TEXT NOT NULL,
    code_hash           TEXT NOT NULL,
    source              TEXT NOT NULL,
    package_path        TEXT,
    artifact            TEXT,
    granted_permissions TEXT NOT NULL,
    tenants             TEXT NOT NULL,
    kept_at             TEXT NOT NULL,
    PRIMARY KEY (plugin_id, version)
);

-- Uploaded archives by the SHA-256 (lowercase hex) of their bytes.
CREATE TABLE plugin_artifacts (
    sha256    TEXT PRIMARY KEY,
    data      BLOB NOT NULL,
    size      INTEGER NOT NULL,
    stored_at TEXT NOT NULL
);
"""

# The data-access log: one row per granted API call on tenant data (issue 22). record_ids is
# a JSON array of at most MAX_ACCESS_IDS ids; count is how many records the call returned.
_ACCESS_LOG: Final = """
CREATE TABLE access_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    plugin_id   TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    method      TEXT NOT NULL,
    permission  TEXT NOT NULL,
    record_type TEXT,
    record_ids  TEXT NOT NULL,
    count       INTEGER NOT NULL,
    at          TEXT NOT NULL
);
CREATE INDEX access_log_plugin_tenant ON access_log (plugin_id, tenant, at);
CREATE INDEX access_log_tenant ON access_log (tenant, at);
CREATE INDEX access_log_at ON access_log (at);
"""

#: The schema, step by step. Append-only: a release that changes the schema
#: adds the next version at the end and never edits a published step, since
#: databases in the field have already applied it.
_MIGRATIONS: tuple[_Migration, ...] = (
    _Migration(1, "plugins, tenants, versions, audit, failures and metrics", _SCHEMA_1),
    _Migration(
        2,
        "tenant records get a suspension reason",
        "ALTER TABLE plugin_tenants ADD COLUMN suspended_reason TEXT;",
    ),
    _Migration(3, "the ledger of plugin store quotas", _STORE_LEDGER),
    _Migration(4, "the plugins' key-value stores kept by the SDK", _STORE_VALUES),
    _Migration(5, "staged and kept plugin versions, and the plugins' archives", _VERSIONS),
    _Migration(6, "the data-access log", _ACCESS_LOG),
)

_CREATE_MIGRATIONS: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL
)
"""

_UPSERT_PLUGIN: Final = """
INSERT INTO plugins (
    id, name, version, status, manifest, code_hash, source, package_path, installed_at,
    installed_by, approved_at, approved_by, status_reason, granted_permissions, revision,
    artifact, staged
) VALUES (
    :id, :name, :version, :status, :manifest, :code_hash, :source, :package_path, :installed_at,
    :installed_by, :approved_at, :approved_by, :status_reason, :granted_permissions, :revision,
    :artifact, :staged
)
ON CONFLICT (id) DO UPDATE SET
    name = excluded.name,
    version = excluded.version,
    status = excluded.status,
    manifest = excluded.manifest,
    code_hash = excluded.code_hash,
    source = excluded.source,
    package_path = excluded.package_path,
    installed_at = excluded.installed_at,
    installed_by = excluded.installed_by,
    approved_at = excluded.approved_at,
    approved_by = excluded.approved_by,
    status_reason = excluded.status_reason,
    granted_permissions = excluded.granted_permissions,
    revision = excluded.revision,
    artifact = excluded.artifact,
    staged = excluded.staged
"""

_UPSERT_TENANT: Final = """
INSERT INTO plugin_tenants (
    plugin_id, tenant, enabled, suspended_reason, optional_grants, settings, changed_at,
    changed_by, revision
) VALUES (
    :plugin_id, :tenant, :enabled, :suspended_reason, :optional_grants, :settings, :changed_at,
    :changed_by, :revision
)
ON CONFLICT (plugin_id, tenant) DO UPDATE SET
    enabled = excluded.enabled,
    suspended_reason = excluded.suspended_reason,
    optional_grants = excluded.optional_grants,
    settings = excluded.settings,
    changed_at = excluded.changed_at,
    changed_by = excluded.changed_by,
    revision = excluded.revision
"""

_INSERT_VERSION: Final = """
INSERT INTO plugin_versions (plugin_id, version, code_hash, changelog, installed_at, installed_by)
VALUES (:plugin_id, :version, :code_hash, :changelog, :installed_at, :installed_by)
"""

_UPSERT_KEPT: Final = """
INSERT INTO plugin_kept_versions (
    plugin_id, version, manifest, code_hash, source, package_path, artifact,
    granted_permissions, tenants, kept_at
) VALUES (
    :plugin_id, :version, :manifest, :code_hash, :source, :package_path, :artifact,
    :granted_permissions, :tenants, :kept_at
)
ON CONFLICT (plugin_id, version) DO UPDATE SET
    manifest = excluded.manifest,
    code_hash = excluded.code_hash,
    source = excluded.source,
    package_path = excluded.package_path,
    artifact = excluded.artifact,
    granted_permissions = excluded.granted_permissions,
    tenants = excluded.tenants,
    kept_at = excluded.kept_at
"""

_INSERT_AUDIT: Final = """
INSERT INTO audit_events (at, actor, action, plugin_id, tenant, before_json, after_json)
VALUES (:at, :actor, :action, :plugin_id, :tenant, :before_json, :after_json)
"""

_INSERT_ACCESS: Final = """
INSERT INTO access_log (plugin_id, tenant, method, permission, record_type, record_ids, count, at)
VALUES (:plugin_id, :tenant, :method, :permission, :record_type, :record_ids, :count, :at)
"""

_INSERT_FAILURE: Final = """
INSERT INTO failures (plugin_id, tenant, hook, exc_type, message, traceback, at, resolved)
VALUES (:plugin_id, :tenant, :hook, :exc_type, :message, :traceback, :at, :resolved)
"""

# Python's max() and SQLite's scalar max() agree here: durations are REALs and
# fixed-width UTC text sorts in time order.
_ADD_METRICS: Final = """
INSERT INTO hook_metrics (
    plugin_id, hook, calls, errors, total_duration, max_duration, last_call
) VALUES (
    :plugin_id, :hook, :calls, :errors, :total_duration, :max_duration, :last_call
)
ON CONFLICT (plugin_id, hook) DO UPDATE SET
    calls = calls + excluded.calls,
    errors = errors + excluded.errors,
    total_duration = total_duration + excluded.total_duration,
    max_duration = max(max_duration, excluded.max_duration),
    last_call = max(last_call, excluded.last_call)
"""

_NEXT_GENERATION: Final = "UPDATE meta SET value = value + 1 WHERE key = 'generation'"
_GENERATION: Final = "SELECT value FROM meta WHERE key = 'generation'"

#: How many failure ids one UPDATE names (SQLite allows 999 parameters before 3.32).
_IDS_PER_STATEMENT: Final = 500


@final
class SQLiteStorage:
    """Storage in one SQLite database file: the embedded default backend.

    Safe to share between threads (one connection behind a lock) and between
    processes on one machine (WAL mode; writers queue on SQLite's write lock
    for up to ``timeout`` seconds). Opening a database creates its tables, or
    brings an older schema up to date in one transaction. The parent folder
    must exist; ``":memory:"`` gives a private database that lives as long as
    the object.

    :raises StorageError: when the file cannot be opened, is not a database,
        or has a schema newer than this release knows. Every method raises it
        for a database failure (the ``sqlite3`` error is its ``__cause__``) and
        once the storage is closed.

    >>> storage = SQLiteStorage(":memory:")
    >>> storage.generation()
    0
    >>> storage.close()

    .. versionadded:: 0.1.0
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 10.0) -> None:
        if timeout < 0:
            raise ValueError(f"timeout must not be negative, got {timeout!r}")
        self._path: Final = os.fspath(path)
        #: Serialises every use of the one connection (sqlite3 connections are
        #: not safe to use from two threads at once).
        self._lock: Final = threading.Lock()
        self._conn: sqlite3.Connection | None = _open(self._path, timeout)

    def __repr__(self) -> str:
        return f"SQLiteStorage({self._path!r})"

    def generation(self) -> int:
        with self._using() as conn:
            return _generation(conn)

    def commit(self, change: Change) -> int:
        plugin = _CODEC.plugin_params(change.plugin) if change.plugin is not None else None
        written = change.written_tenants()
        tenants = [_CODEC.tenant_params(record) for record in written]
        version = _CODEC.version_params(change.version) if change.version is not None else None
        keep = _CODEC.kept_params(change.keep) if change.keep is not None else None
        audit = _CODEC.audit_params(change.audit)
        with self._transaction() as conn:
            change.check_plugin(
                _revision(conn, "SELECT revision FROM plugins WHERE id = ?", change.plugin_id)
            )
            for record in written:
                change.check_tenant(
                    record,
                    _revision(
                        conn,
                        "SELECT revision FROM plugin_tenants WHERE plugin_id = ? AND tenant = ?",
                        change.plugin_id,
                        record.tenant,
                    ),
                )
            if change.clear_tenants:
                conn.execute("DELETE FROM plugin_tenants WHERE plugin_id = ?", (change.plugin_id,))
                _drop_store(conn, change.plugin_id, None)
            if plugin is not None:
                conn.execute(_UPSERT_PLUGIN, plugin)
            for params in tenants:
                conn.execute(_UPSERT_TENANT, params)
            if version is not None:
                conn.execute(_INSERT_VERSION, version)
            # Forget before keep, so a change may forget a version and keep it anew.
            conn.executemany(
                "DELETE FROM plugin_kept_versions WHERE plugin_id = ? AND version = ?",
                [(change.plugin_id, forgotten) for forgotten in change.forget],
            )
            if keep is not None:
                conn.execute(_UPSERT_KEPT, keep)
            conn.execute(_INSERT_AUDIT, audit)
            conn.execute(_NEXT_GENERATION)
            return _generation(conn)

    def get_plugin(self, plugin_id: str) -> PluginRecord | None:
        with self._using() as conn:
            return _fetch_plugin(conn, plugin_id)

    def list_plugins(self, status: PluginStatus | None = None) -> list[PluginRecord]:
        with self._using() as conn:
            if status is None:
                rows = conn.execute("SELECT * FROM plugins ORDER BY id").fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM plugins WHERE status = ? ORDER BY id", (status.value,)
                ).fetchall()
            return [_CODEC.plugin(row) for row in rows]

    def get_tenant(self, plugin_id: str, tenant: str) -> TenantRecord | None:
        with self._using() as conn:
            return _fetch_tenant(conn, plugin_id, tenant)

    def list_tenants(self, plugin_id: str) -> list[TenantRecord]:
        with self._using() as conn:
            rows = conn.execute(
                "SELECT * FROM plugin_tenants WHERE plugin_id = ? ORDER BY tenant", (plugin_id,)
            ).fetchall()
            return [_CODEC.tenant(row) for row in rows]

    def enabled_plugins(self, tenant: str) -> list[str]:
        with self._using() as conn:
            rows = conn.execute(
                """
                SELECT t.plugin_id FROM plugin_tenants AS t
                JOIN plugins AS p ON p.id = t.plugin_id
                WHERE t.tenant = ? AND t.enabled = 1 AND t.suspended_reason IS NULL
                AND p.status = ?
                ORDER BY t.plugin_id
                """,
                (tenant, PluginStatus.APPROVED.value),
            ).fetchall()
            return [str(row[0]) for row in rows]

    def versions(self, plugin_id: str) -> list[VersionRecord]:
        with self._using() as conn:
            rows = conn.execute(
                "SELECT * FROM plugin_versions WHERE plugin_id = ? ORDER BY id", (plugin_id,)
            ).fetchall()
            return [_CODEC.version(row) for row in rows]

    def kept_versions(self, plugin_id: str) -> list[KeptVersion]:
        with self._using() as conn:
            rows = conn.execute(
                "SELECT * FROM plugin_kept_versions WHERE plugin_id = ? ORDER BY kept_at, rowid",
                (plugin_id,),
            ).fetchall()
            return [_CODEC.kept(row) for row in rows]

    def put_artifact(self, sha256: str, data: bytes) -> None:
        check_artifact(sha256, data)
        blob = bytes(data)
        with self._transaction() as conn:
            # A hash already kept keeps its first copy: the bytes are the same.
            conn.execute(
                "INSERT INTO plugin_artifacts (sha256, data, size, stored_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (sha256) DO NOTHING",
                (sha256, blob, len(blob), _text(datetime.now(timezone.utc))),
            )

    def get_artifact(self, sha256: str) -> bytes | None:
        with self._using() as conn:
            row = conn.execute(
                "SELECT data FROM plugin_artifacts WHERE sha256 = ?", (sha256,)
            ).fetchone()
            return None if row is None else bytes(row[0])

    def delete_artifact(self, sha256: str) -> bool:
        with self._transaction() as conn:
            gone = conn.execute("DELETE FROM plugin_artifacts WHERE sha256 = ?", (sha256,))
            return bool(gone.rowcount)

    def artifacts(self) -> list[ArtifactInfo]:
        with self._using() as conn:
            rows = conn.execute(
                "SELECT sha256, size, stored_at FROM plugin_artifacts ORDER BY sha256"
            ).fetchall()
            return [_CODEC.artifact(row) for row in rows]

    def audit(self, query: AuditQuery) -> list[AuditEvent]:
        where, params = _CODEC.audit_filter(query)
        with self._using() as conn:
            rows = _newest_first(conn, "SELECT * FROM audit_events", where, params, query.limit)
            return [_CODEC.audit(row) for row in rows]

    def record_failures(self, failures: Sequence[FailureRecord]) -> None:
        params = [_CODEC.failure_params(failure) for failure in failures]
        if not params:
            with self._using():
                return
        with self._transaction() as conn:
            conn.executemany(_INSERT_FAILURE, params)

    def failures(
        self, plugin_id: str | None = None, *, resolved: bool | None = None, limit: int = 1000
    ) -> list[FailureRecord]:
        check_limit(limit)
        where, params = _CODEC.failure_filter(plugin_id, resolved)
        with self._using() as conn:
            rows = _newest_first(conn, "SELECT * FROM failures", where, params, limit)
            return [_CODEC.failure(row) for row in rows]

    def resolve_failures(
        self, plugin_id: str, tenant: str | None = None, *, ids: Sequence[int] | None = None
    ) -> int:
        sql = "UPDATE failures SET resolved = 1 WHERE plugin_id = ? AND resolved = 0"
        params: list[object] = [plugin_id]
        if tenant is not None:
            sql += " AND tenant = ?"
            params.append(tenant)
        if ids is None:
            with self._transaction() as conn:
                return conn.execute(sql, params).rowcount
        wanted = check_ids(ids)
        if not wanted:
            with self._using():
                return 0
        count = 0
        with self._transaction() as conn:
            # In chunks: SQLite limits the number of parameters of one statement.
            for start in range(0, len(wanted), _IDS_PER_STATEMENT):
                chunk = wanted[start : start + _IDS_PER_STATEMENT]
                marks = ", ".join("?" * len(chunk))
                count += conn.execute(f"{sql} AND id IN ({marks})", [*params, *chunk]).rowcount
        return count

    def record_metrics(self, deltas: Sequence[MetricsDelta]) -> None:
        params = [_CODEC.metrics_params(delta) for delta in deltas]
        if not params:
            with self._using():
                return
        with self._transaction() as conn:
            # One row at a time, in order: a batch may hold one (plugin, hook) twice.
            conn.executemany(_ADD_METRICS, params)

    def record_access(self, records: Sequence[AccessRecord]) -> None:
        params = [_CODEC.access_params(record) for record in records]
        if not params:
            with self._using():
                return
        with self._transaction() as conn:
            conn.executemany(_INSERT_ACCESS, params)

    def access_log(self, query: AccessQuery) -> list[AccessRecord]:
        check_limit(query.limit)
        where, params = _CODEC.access_filter(
            query, "EXISTS (SELECT 1 FROM json_each(record_ids) WHERE value = ?)"
        )
        sql = "SELECT * FROM access_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY at DESC, id DESC LIMIT ?"
        with self._using() as conn:
            rows = conn.execute(sql, (*params, query.limit)).fetchall()
            return [_CODEC.access(row) for row in rows]

    def prune_access(self, before: datetime) -> int:
        with self._transaction() as conn:
            return conn.execute("DELETE FROM access_log WHERE at < ?", (_text(before),)).rowcount

    def metrics(self, plugin_id: str | None = None) -> list[HookMetrics]:
        with self._using() as conn:
            if plugin_id is None:
                rows = conn.execute("SELECT * FROM hook_metrics ORDER BY plugin_id, hook")
            else:
                rows = conn.execute(
                    "SELECT * FROM hook_metrics WHERE plugin_id = ? ORDER BY hook", (plugin_id,)
                )
            return [_CODEC.metrics(row) for row in rows.fetchall()]

    def charge_store(
        self,
        plugin_id: str,
        tenant: str,
        key: str,
        size: int | None,
        *,
        max_keys: int | None = None,
        max_bytes: int | None = None,
    ) -> int | None:
        check_size(size)
        # BEGIN IMMEDIATE holds the write lock from the first read: charges queue.
        with self._transaction() as conn:
            return _charge(
                conn, plugin_id, tenant, key, size, max_keys=max_keys, max_bytes=max_bytes
            )

    def store_usage(self, plugin_id: str, tenant: str) -> StoreUsage:
        with self._using() as conn:
            return _store_usage(conn, plugin_id, tenant)

    def store_read(self, plugin_id: str, tenant: str, key: str) -> JSONValue:
        with self._using() as conn:
            row = conn.execute(
                "SELECT value FROM store_values WHERE plugin_id = ? AND tenant = ? AND key = ?",
                (plugin_id, tenant, key),
            ).fetchone()
            return None if row is None else stored_value(str(row[0]))

    def store_write(
        self,
        plugin_id: str,
        tenant: str,
        key: str,
        value: JSONValue,
        *,
        max_keys: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        text, size = store_value(key, value)
        # The charge and the value in one write transaction: a refused charge writes neither.
        with self._transaction() as conn:
            _charge(conn, plugin_id, tenant, key, size, max_keys=max_keys, max_bytes=max_bytes)
            conn.execute(
                "INSERT INTO store_values (plugin_id, tenant, key, value) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (plugin_id, tenant, key) DO UPDATE SET value = excluded.value",
                (plugin_id, tenant, key, text),
            )

    def store_remove(self, plugin_id: str, tenant: str, key: str) -> bool:
        with self._transaction() as conn:
            gone = conn.execute(
                "DELETE FROM store_values WHERE plugin_id = ? AND tenant = ? AND key = ?",
                (plugin_id, tenant, key),
            ).rowcount
            if gone:
                _charge(conn, plugin_id, tenant, key, None, max_keys=None, max_bytes=None)
            return bool(gone)

    def drop_store(self, plugin_id: str, tenant: str | None = None) -> int:
        with self._transaction() as conn:
            return _drop_store(conn, plugin_id, tenant)

    def close(self) -> None:
        """Close the connection; closing twice is harmless."""
        with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                try:
                    conn.close()
                except sqlite3.Error as exc:
                    raise StorageError(f"{self._path}: cannot close the database: {exc}") from exc

    @contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        """The open connection, held for this thread; driver errors become StorageError."""
        with self._lock:
            if self._conn is None:
                raise StorageError(f"{self!r} is closed")
            try:
                yield self._conn
            except _DRIVER_ERRORS as exc:
                raise StorageError(f"{self._path}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed if the block returns, rolled back if it raises."""
        with self._using() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise


def _open(path: str, timeout: float) -> sqlite3.Connection:
    """Connect, refuse a newer schema, switch to WAL and apply pending migrations."""
    if path != _MEMORY:
        folder = Path(path).parent
        if not folder.is_dir():
            raise StorageError(f"{path}: cannot open the database: folder {folder} does not exist")
    try:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StorageError(f"{path}: cannot open the database: {exc}") from exc
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {round(timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        # Refuse a newer schema before anything (such as the journal mode) is written.
        pending = _pending_migrations(conn, path)
        mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        if mode != "wal" and path != _MEMORY:
            _logger.warning("%s: WAL journal mode unavailable, using %r", path, mode)
        conn.execute("PRAGMA synchronous = NORMAL")
        if pending:
            _migrate(conn, path)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, _DRIVER_ERRORS):
            raise StorageError(f"{path}: cannot open the database: {exc}") from exc
        raise
    return conn


def _applied_versions(conn: sqlite3.Connection) -> set[int]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if exists is None:
        return set()
    return {int(row[0]) for row in conn.execute("SELECT version FROM schema_migrations")}


def _pending_migrations(conn: sqlite3.Connection, path: str) -> list[_Migration]:
    """The migrations not applied yet; StorageError if the schema is newer than the code."""
    applied = _applied_versions(conn)
    known = _MIGRATIONS[-1].version if _MIGRATIONS else 0
    newest = max(applied, default=0)
    if newest > known:
        raise StorageError(
            f"{path}: the database schema is at version {newest}, newer than this release "
            f"of services-ai-plugins knows (up to {known}); upgrade services-ai-plugins to use it"
        )
    return [m for m in _MIGRATIONS if m.version not in applied]


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    """Apply every pending migration in one write transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_CREATE_MIGRATIONS)
        # Another process may have migrated since the first look: decide under the lock.
        for migration in _pending_migrations(conn, path):
            for statement in _statements(migration.script):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                (migration.version, _text(datetime.now(timezone.utc))),
            )
            _logger.info(
                "%s: applied schema migration %d (%s)",
                path,
                migration.version,
                migration.description,
            )
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (``executescript`` would commit our transaction)."""
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                yield buffer
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        raise StorageError(f"incomplete SQL statement in a migration: {buffer.strip()!r}")


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite rolls back by itself after some errors (disk full, I/O): then there is nothing to do.
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _generation(conn: sqlite3.Connection) -> int:
    return int(conn.execute(_GENERATION).fetchone()[0])


def _newest_first(
    conn: sqlite3.Connection, select: str, where: list[str], params: list[object], limit: int
) -> list[sqlite3.Row]:
    """Rows of ``select`` by id, newest first, at most ``limit`` (not negative) of them."""
    sql = select
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    return conn.execute(sql, (*params, limit)).fetchall()


# Encoding: records to parameters.


def _text(value: datetime) -> str:
    """Fixed-width ISO-8601 UTC text, so that text order is time order."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise StorageError(
            f"cannot store the naive datetime {value.isoformat()}: "
            "records carry timezone-aware UTC datetimes"
        )
    try:
        return value.astimezone(timezone.utc).isoformat(timespec="microseconds")
    except OverflowError as exc:
        raise StorageError(f"cannot store the datetime {value.isoformat()}: {exc}") from exc


def _dumps(value: object, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise StorageError(f"cannot store {what} as JSON: {exc}") from exc


# Decoding: rows to records.


def _revision(conn: sqlite3.Connection, sql: str, *params: str) -> int:
    """The stored revision a query finds, or 0 when the record does not exist."""
    row = conn.execute(sql, params).fetchone()
    return 0 if row is None else int(row[0])


def _charge(
    conn: sqlite3.Connection,
    plugin_id: str,
    tenant: str,
    key: str,
    size: int | None,
    *,
    max_keys: int | None,
    max_bytes: int | None,
) -> int | None:
    """charge_store inside the caller's write transaction; the size recorded before."""
    owner = (plugin_id, tenant)
    usage = _store_usage(conn, plugin_id, tenant)
    row = conn.execute(
        "SELECT bytes FROM store_sizes WHERE plugin_id = ? AND tenant = ? AND key = ?",
        (*owner, key),
    ).fetchone()
    previous = None if row is None else int(row[0])
    after = charge(plugin_id, tenant, usage, previous, size, max_keys=max_keys, max_bytes=max_bytes)
    if size is None:
        conn.execute(
            "DELETE FROM store_sizes WHERE plugin_id = ? AND tenant = ? AND key = ?",
            (*owner, key),
        )
    else:
        conn.execute(
            "INSERT INTO store_sizes (plugin_id, tenant, key, bytes) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (plugin_id, tenant, key) DO UPDATE SET bytes = excluded.bytes",
            (*owner, key, size),
        )
    if after.keys:
        conn.execute(
            "INSERT INTO store_totals (plugin_id, tenant, keys, bytes) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (plugin_id, tenant) DO UPDATE SET"
            " keys = excluded.keys, bytes = excluded.bytes",
            (*owner, after.keys, after.bytes),
        )
    else:
        conn.execute("DELETE FROM store_totals WHERE plugin_id = ? AND tenant = ?", owner)
    return previous


def _drop_store(conn: sqlite3.Connection, plugin_id: str, tenant: str | None) -> int:
    """drop_store inside the caller's write transaction: the values, their charges, the totals
    recounted from the charges left (those of values the host services keep)."""
    where = "plugin_id = ?" + ("" if tenant is None else " AND tenant = ?")
    params = (plugin_id,) if tenant is None else (plugin_id, tenant)
    conn.execute(
        f"DELETE FROM store_sizes WHERE {where} AND EXISTS (SELECT 1 FROM store_values AS v"  # noqa: S608 - fixed text
        " WHERE v.plugin_id = store_sizes.plugin_id AND v.tenant = store_sizes.tenant"
        " AND v.key = store_sizes.key)",
        params,
    )
    conn.execute(f"DELETE FROM store_totals WHERE {where}", params)  # noqa: S608 - fixed text
    conn.execute(
        "INSERT INTO store_totals (plugin_id, tenant, keys, bytes)"  # noqa: S608 - fixed text
        f" SELECT plugin_id, tenant, COUNT(*), SUM(bytes) FROM store_sizes WHERE {where}"
        " GROUP BY plugin_id, tenant",
        params,
    )
    return int(conn.execute(f"DELETE FROM store_values WHERE {where}", params).rowcount)  # noqa: S608 - fixed text


def _store_usage(conn: sqlite3.Connection, plugin_id: str, tenant: str) -> StoreUsage:
    row = conn.execute(
        "SELECT keys, bytes FROM store_totals WHERE plugin_id = ? AND tenant = ?",
        (plugin_id, tenant),
    ).fetchone()
    return StoreUsage() if row is None else StoreUsage(keys=int(row[0]), bytes=int(row[1]))


def _fetch_plugin(conn: sqlite3.Connection, plugin_id: str) -> PluginRecord | None:
    row = conn.execute("SELECT * FROM plugins WHERE id = ?", (plugin_id,)).fetchone()
    return None if row is None else _CODEC.plugin(row)


def _fetch_tenant(conn: sqlite3.Connection, plugin_id: str, tenant: str) -> TenantRecord | None:
    row = conn.execute(
        "SELECT * FROM plugin_tenants WHERE plugin_id = ? AND tenant = ?", (plugin_id, tenant)
    ).fetchone()
    return None if row is None else _CODEC.tenant(row)


def _time(text: object) -> datetime:
    return datetime.fromisoformat(str(text))


def _object(text: object) -> dict[str, JSONValue]:
    return cast("dict[str, JSONValue]", json.loads(str(text)))


def _strings(text: object) -> tuple[str, ...]:
    return tuple(cast("list[str]", json.loads(str(text))))


#: Datetimes as ISO text, JSON objects and tuples of strings as JSON text, flags as 0 and 1.
_CODEC: Final = RowCodec(
    moment=_text,
    json=_dumps,
    strings=lambda values, what: _dumps(list(values), what),
    flag=int,
    number=lambda seconds: seconds,
    read_time=_time,
    read_object=_object,
    read_strings=_strings,
)
