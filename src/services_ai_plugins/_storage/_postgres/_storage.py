"""The PostgreSQL storage backend: a connection pool, a versioned schema of its own, a change feed.

Every commit is one transaction that first locks the row of the change counter
(``SELECT ... FOR UPDATE``), so writers in every thread and process queue as
they do on SQLite's write lock; it then reads the stored revisions with row
locks, checks them, writes, moves the counter and sends ``NOTIFY
services_ai_plugins_changes``, all before it commits. Reads are single
autocommit statements. Key columns sort with ``COLLATE "C"`` (code point order,
as Python sorts strings), datetimes are ``timestamptz`` and JSON is ``jsonb``,
written so that floats come back as floats.

psycopg and psycopg_pool are imported when a storage is made: neither
``import services_ai_plugins`` nor ``services_ai_plugins.PostgresStorage`` needs them.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import selectors
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final, cast, final

from ..._json import JSONValue, exact_json_text
from ...errors import StorageError
from .._protocol import (
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
from .._rows import RowCodec
from ._listen import CHANNEL, Listener
from ._migrations import prepare, render

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import DictRow
    from psycopg_pool import ConnectionPool

__all__ = ["PostgresStorage"]

_logger = logging.getLogger("services_ai_plugins.storage")

_INSTALL_HINT: Final = (
    "PostgresStorage needs psycopg 3 and psycopg_pool, which are not installed: "
    'pip install "services-ai-plugins[postgres]"'
)

#: A schema name we quote ourselves: letters, digits and underscores, at most 63 bytes.
_SCHEMA_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

#: What the driver (or the conversions around it) raises; these become
#: StorageError at this seam. ValueError covers text that cannot be encoded
#: (lone surrogates), bad JSON and unknown enum values in a damaged database.
_CONVERSION_ERRORS: Final = (ValueError, OverflowError)

#: TCP keepalives of the change feed's connection, unless the connection
#: string sets them: a dead server or network is noticed within about a minute.
_KEEPALIVES: Final = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}

_BIGINT: Final = range(-(2**63), 2**63)


_SELECT_PLUGINS: Final = """
SELECT id, name, version, status, manifest, code_hash, source, package_path, installed_at,
    installed_by, approved_at, approved_by, status_reason, granted_permissions, revision,
    artifact, staged
FROM {s}.plugins
"""
_SELECT_TENANTS: Final = """
SELECT plugin_id, tenant, enabled, suspended_reason, optional_grants, settings, changed_at,
    changed_by, revision
FROM {s}.plugin_tenants
"""
_SELECT_VERSIONS: Final = """
SELECT plugin_id, version, code_hash, changelog, installed_at, installed_by
FROM {s}.plugin_versions
"""
_SELECT_KEPT: Final = """
SELECT plugin_id, version, manifest, code_hash, source, package_path, artifact,
    granted_permissions, tenants, kept_at
FROM {s}.plugin_kept_versions
"""
_SELECT_AUDIT: Final = """
SELECT id, at, actor, action, plugin_id, tenant, before_json, after_json
FROM {s}.audit_events
"""
_SELECT_FAILURES: Final = """
SELECT id, plugin_id, tenant, hook, exc_type, message, traceback, at, resolved
FROM {s}.failures
"""
_SELECT_METRICS: Final = """
SELECT plugin_id, hook, calls, errors, total_duration, max_duration, last_call
FROM {s}.hook_metrics
"""

_UPSERT_PLUGIN: Final = """
INSERT INTO {s}.plugins (
    id, name, version, status, manifest, code_hash, source, package_path, installed_at,
    installed_by, approved_at, approved_by, status_reason, granted_permissions, revision,
    artifact, staged
) VALUES (
    %(id)s, %(name)s, %(version)s, %(status)s, %(manifest)s::jsonb, %(code_hash)s, %(source)s,
    %(package_path)s, %(installed_at)s, %(installed_by)s, %(approved_at)s, %(approved_by)s,
    %(status_reason)s, %(granted_permissions)s::text[], %(revision)s, %(artifact)s,
    %(staged)s::jsonb
)
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name,
    version = EXCLUDED.version,
    status = EXCLUDED.status,
    manifest = EXCLUDED.manifest,
    code_hash = EXCLUDED.code_hash,
    source = EXCLUDED.source,
    package_path = EXCLUDED.package_path,
    installed_at = EXCLUDED.installed_at,
    installed_by = EXCLUDED.installed_by,
    approved_at = EXCLUDED.approved_at,
    approved_by = EXCLUDED.approved_by,
    status_reason = EXCLUDED.status_reason,
    granted_permissions = EXCLUDED.granted_permissions,
    revision = EXCLUDED.revision,
    artifact = EXCLUDED.artifact,
    staged = EXCLUDED.staged
"""

_UPSERT_TENANT: Final = """
INSERT INTO {s}.plugin_tenants (
    plugin_id, tenant, enabled, suspended_reason, optional_grants, settings, changed_at,
    changed_by, revision
) VALUES (
    %(plugin_id)s, %(tenant)s, %(enabled)s, %(suspended_reason)s, %(optional_grants)s::text[],
    %(settings)s::jsonb, %(changed_at)s, %(changed_by)s, %(revision)s
)
ON CONFLICT (plugin_id, tenant) DO UPDATE SET
    enabled = EXCLUDED.enabled,
    suspended_reason = EXCLUDED.suspended_reason,
    optional_grants = EXCLUDED.optional_grants,
    settings = EXCLUDED.settings,
    changed_at = EXCLUDED.changed_at,
    changed_by = EXCLUDED.changed_by,
    revision = EXCLUDED.revision
"""

_INSERT_VERSION: Final = """
INSERT INTO {s}.plugin_versions (
    plugin_id, version, code_hash, changelog, installed_at, installed_by
) VALUES (
    %(plugin_id)s, %(version)s, %(code_hash)s, %(changelog)s, %(installed_at)s, %(installed_by)s
)
"""

_UPSERT_KEPT: Final = """
INSERT INTO {s}.plugin_kept_versions (
    plugin_id, version, manifest, code_hash, source, package_path, artifact,
    granted_permissions, tenants, kept_at
) VALUES (
    %(plugin_id)s, %(version)s, %(manifest)s::jsonb, %(code_hash)s, %(source)s,
    %(package_path)s, %(artifact)s, %(granted_permissions)s::text[], %(tenants)s::jsonb,
    %(kept_at)s
)
ON CONFLICT (plugin_id, version) DO UPDATE SET
    manifest = EXCLUDED.manifest,
    code_hash = EXCLUDED.code_hash,
    source = EXCLUDED.source,
    package_path = EXCLUDED.package_path,
    artifact = EXCLUDED.artifact,
    granted_permissions = EXCLUDED.granted_permissions,
    tenants = EXCLUDED.tenants,
    kept_at = EXCLUDED.kept_at
"""
_FORGET_KEPT: Final = (
    "DELETE FROM {s}.plugin_kept_versions WHERE plugin_id = %s AND version = ANY(%s::text[])"
)
#: A hash already kept keeps its first copy (the bytes are the same): racing puts both pass.
_PUT_ARTIFACT: Final = """
INSERT INTO {s}.plugin_artifacts (sha256, data, size, stored_at) VALUES (%s, %s, %s, %s)
ON CONFLICT (sha256) DO NOTHING
"""

_INSERT_AUDIT: Final = """
INSERT INTO {s}.audit_events (
    at, actor, action, plugin_id, tenant, before_json, after_json
) VALUES (
    %(at)s, %(actor)s, %(action)s, %(plugin_id)s, %(tenant)s, %(before_json)s::jsonb,
    %(after_json)s::jsonb
)
"""

_INSERT_ACCESS: Final = """
INSERT INTO {s}.access_log (
    plugin_id, tenant, method, permission, record_type, record_ids, count, at
) VALUES (
    %(plugin_id)s, %(tenant)s, %(method)s, %(permission)s, %(record_type)s, %(record_ids)s,
    %(count)s, %(at)s
)
"""

_INSERT_FAILURE: Final = """
INSERT INTO {s}.failures (
    plugin_id, tenant, hook, exc_type, message, traceback, at, resolved
) VALUES (
    %(plugin_id)s, %(tenant)s, %(hook)s, %(exc_type)s, %(message)s, %(traceback)s, %(at)s,
    %(resolved)s
)
"""

_ADD_METRICS: Final = """
INSERT INTO {s}.hook_metrics (
    plugin_id, hook, calls, errors, total_duration, max_duration, last_call
) VALUES (
    %(plugin_id)s, %(hook)s, %(calls)s, %(errors)s, %(total_duration)s, %(max_duration)s,
    %(last_call)s
)
ON CONFLICT (plugin_id, hook) DO UPDATE SET
    calls = hook_metrics.calls + EXCLUDED.calls,
    errors = hook_metrics.errors + EXCLUDED.errors,
    total_duration = hook_metrics.total_duration + EXCLUDED.total_duration,
    max_duration = GREATEST(hook_metrics.max_duration, EXCLUDED.max_duration),
    last_call = GREATEST(hook_metrics.last_call, EXCLUDED.last_call)
"""

#: Locks (creating it if need be) and reads a store's totals row: charges of one store queue here.
_LOCK_STORE: Final = """
INSERT INTO {s}.store_totals (plugin_id, tenant, keys, bytes) VALUES (%s, %s, 0, 0)
ON CONFLICT (plugin_id, tenant) DO UPDATE SET keys = store_totals.keys
RETURNING keys, bytes
"""
_STORE_SIZE: Final = (
    "SELECT bytes FROM {s}.store_sizes WHERE plugin_id = %s AND tenant = %s AND key = %s"
)
_SET_STORE_SIZE: Final = """
INSERT INTO {s}.store_sizes (plugin_id, tenant, key, bytes) VALUES (%s, %s, %s, %s)
ON CONFLICT (plugin_id, tenant, key) DO UPDATE SET bytes = EXCLUDED.bytes
"""
_DROP_STORE_SIZE: Final = (
    "DELETE FROM {s}.store_sizes WHERE plugin_id = %s AND tenant = %s AND key = %s"
)
_SET_STORE_TOTALS: Final = (
    "UPDATE {s}.store_totals SET keys = %s, bytes = %s WHERE plugin_id = %s AND tenant = %s"
)
_DROP_STORE_TOTALS: Final = "DELETE FROM {s}.store_totals WHERE plugin_id = %s AND tenant = %s"
_STORE_READ: Final = (
    "SELECT value FROM {s}.store_values WHERE plugin_id = %s AND tenant = %s AND key = %s"
)
_STORE_WRITE: Final = """
INSERT INTO {s}.store_values (plugin_id, tenant, key, value) VALUES (%s, %s, %s, %s)
ON CONFLICT (plugin_id, tenant, key) DO UPDATE SET value = EXCLUDED.value
"""
_STORE_REMOVE: Final = (
    "DELETE FROM {s}.store_values WHERE plugin_id = %s AND tenant = %s AND key = %s"
)
#: drop_store, for a plugin (``{w}``: ``plugin_id = %(plugin)s``, and maybe a tenant): lock
#: the stores' totals rows (in order, as charges lock them one each), drop the values' charges
#: and the values, recount the totals from the charges left (values the host services keep).
_DROP_STORE: Final = (
    "SELECT 1 FROM {s}.store_totals AS t WHERE {w} ORDER BY tenant FOR UPDATE",
    """DELETE FROM {s}.store_sizes AS t WHERE {w} AND EXISTS (
        SELECT 1 FROM {s}.store_values AS v
        WHERE v.plugin_id = t.plugin_id AND v.tenant = t.tenant AND v.key = t.key)""",
    """UPDATE {s}.store_totals AS t SET
        keys = (SELECT COUNT(*) FROM {s}.store_sizes AS z
                WHERE z.plugin_id = t.plugin_id AND z.tenant = t.tenant),
        bytes = (SELECT COALESCE(SUM(z.bytes), 0) FROM {s}.store_sizes AS z
                 WHERE z.plugin_id = t.plugin_id AND z.tenant = t.tenant)
    WHERE {w}""",
    "DELETE FROM {s}.store_totals AS t WHERE {w} AND t.keys = 0",
)
_DROP_VALUES: Final = "DELETE FROM {s}.store_values AS t WHERE {w}"

_GENERATION: Final = "SELECT value FROM {s}.meta WHERE key = 'generation'"
#: Taken first by every commit: commits queue here, as on SQLite's write lock.
_LOCK_GENERATION: Final = _GENERATION + " FOR UPDATE"
_PLUGIN_REVISION: Final = "SELECT revision FROM {s}.plugins WHERE id = %s FOR UPDATE"
_TENANT_REVISION: Final = (
    "SELECT revision FROM {s}.plugin_tenants WHERE plugin_id = %s AND tenant = %s FOR UPDATE"
)
_CLEAR_TENANTS: Final = "DELETE FROM {s}.plugin_tenants WHERE plugin_id = %s"
#: Moves the counter and notifies the watchers; both take effect at COMMIT.
_NEXT_GENERATION: Final = """
WITH moved AS (
    UPDATE {s}.meta SET value = value + 1 WHERE key = 'generation' RETURNING value
)
SELECT value, pg_notify(
    %(channel)s, json_build_object('schema', %(schema)s::text, 'generation', value)::text
)
FROM moved
"""


@final
class PostgresStorage:
    """Storage in a PostgreSQL database, for hosts that run on several machines.

    ``url_or_conninfo`` is a libpq connection string, as a URL
    (``postgresql://user:secret@db.example.com:5432/app``) or as
    ``key=value`` pairs; what it leaves out comes from the ``PG*`` environment
    variables, as with ``psql``. The tables live in their own PostgreSQL
    ``schema`` (created if missing, which needs the ``CREATE`` privilege on the
    database once), so they never mix with the application's. Opening the
    storage creates them, or brings an older schema up to date, in one
    transaction under an advisory lock: several processes may open it at once.

    A pool of ``min_size`` to ``max_size`` connections serves every thread.
    ``timeout`` (seconds) bounds the wait for a connection (connecting, or a
    free one from a busy pool) and for another writer's lock.

    It is also a :class:`~services_ai_plugins.ChangeFeed`: :meth:`watch`
    calls back when any process commits a change, through ``LISTEN``/``NOTIFY``.

    Needs the ``postgres`` extra: ``pip install "services-ai-plugins[postgres]"``.
    ::

        from services_ai_plugins import PluginHost, PostgresStorage

        storage = PostgresStorage("postgresql://plugins@db.internal/app", max_size=20)
        host = PluginHost(services, storage=storage)

    :raises ImportError: when psycopg or psycopg_pool is not installed.
    :raises ValueError: for a bad ``schema``, pool size or ``timeout``.
    :raises StorageError: when the database cannot be reached or is not UTF-8,
        or its schema is newer than this release knows. Every method raises it
        for a database failure (the psycopg error is its ``__cause__``), when
        no connection is free within ``timeout``, and once the storage is closed.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        url_or_conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        schema: str = "services_ai_plugins",
        timeout: float = 30.0,
    ) -> None:
        _check_options(schema, min_size, max_size, timeout)
        try:
            # The optional dependency is imported here, not at module level: the
            # package and this class stay importable without it.
            import psycopg  # noqa: PLC0415 - optional dependency, imported on first use
            import psycopg_pool  # noqa: PLC0415 - optional dependency, imported on first use
            from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 - the same
            from psycopg.rows import DictRow, dict_row  # noqa: PLC0415 - the same
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT, name=exc.name) from exc

        self._schema: Final = schema
        self._quoted: Final = f'"{schema}"'
        self._timeout: Final = timeout
        self._max_size: Final = max_size
        self._driver_error: Final = psycopg.Error
        self._errors: Final = (psycopg.Error, *_CONVERSION_ERRORS)
        self._pool_timeout: Final = psycopg_pool.PoolTimeout
        self._pool_closed: Final = psycopg_pool.PoolClosed
        self._lock: Final = threading.Lock()
        self._closed = False
        self._listener: Listener | None = None
        try:
            given = conninfo_to_dict(url_or_conninfo)
        except psycopg.Error as exc:
            raise StorageError(f"cannot read the connection string: {exc}") from exc
        #: Where the database is, for messages and the repr: never the password.
        self._where = _where(given)

        options: dict[str, Any] = {
            **_unless_given(given, connect_timeout=max(2, math.ceil(timeout))),
            # Python strings are Unicode: whatever the environment says, talk UTF-8.
            "client_encoding": "UTF8",
            # Shown in pg_stat_activity unless the connection string names the application.
            "fallback_application_name": "services-ai-plugins",
        }
        lock_timeout = f"{max(1, round(timeout * 1000))}ms"
        try:
            with psycopg.connect(url_or_conninfo, autocommit=True, **options) as conn:
                self._where = _where(
                    {
                        "user": conn.info.user,
                        "host": conn.info.host,
                        "port": conn.info.port,
                        "dbname": conn.info.dbname,
                    }
                )
                prepare(conn, schema, lock_timeout, self._where)
        except psycopg.Error as exc:
            raise StorageError(f"{self._where}: cannot open the database: {exc}") from exc

        def configure(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                "SELECT set_config('lock_timeout', %s, false),"
                " set_config('TimeZone', 'UTC', false)",
                (lock_timeout,),
            )

        self._pool: ConnectionPool[psycopg.Connection[DictRow]] = psycopg_pool.ConnectionPool(
            url_or_conninfo,
            connection_class=psycopg.Connection[DictRow],
            kwargs={**options, "autocommit": True, "row_factory": dict_row},
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            configure=configure,
            name=f"services-ai-plugins {self._where} {schema}",
        )
        try:
            self._pool.open(wait=min_size > 0, timeout=timeout)
        except psycopg.Error as exc:
            self._pool.close()
            raise StorageError(
                f"{self._where}: cannot open {min_size} connection(s) within {timeout:g} s: {exc}"
            ) from exc

        listen_options = {
            **options,
            **_unless_given(given, **_KEEPALIVES),
            "fallback_application_name": "services-ai-plugins change feed",
        }
        self._listen_connect: Final = functools.partial(
            psycopg.connect, url_or_conninfo, autocommit=True, **listen_options
        )

    def __repr__(self) -> str:
        return f"PostgresStorage({self._where!r}, schema={self._schema!r})"

    # -- Storage ---------------------------------------------------------------------------

    def generation(self) -> int:
        with self._connection() as conn:
            return _generation(conn.execute(self._sql(_GENERATION)).fetchone())

    def commit(self, change: Change) -> int:
        plugin = _CODEC.plugin_params(change.plugin) if change.plugin is not None else None
        written = change.written_tenants()
        tenants = [_CODEC.tenant_params(record) for record in written]
        version = _CODEC.version_params(change.version) if change.version is not None else None
        keep = _CODEC.kept_params(change.keep) if change.keep is not None else None
        audit = _CODEC.audit_params(change.audit)
        with self._transaction() as conn:
            conn.execute(self._sql(_LOCK_GENERATION))
            change.check_plugin(_revision(conn, self._sql(_PLUGIN_REVISION), change.plugin_id))
            for record in written:
                change.check_tenant(
                    record,
                    _revision(conn, self._sql(_TENANT_REVISION), change.plugin_id, record.tenant),
                )
            if change.clear_tenants:
                conn.execute(self._sql(_CLEAR_TENANTS), (change.plugin_id,))
                self._drop_store(conn, change.plugin_id, None)
            if plugin is not None:
                conn.execute(self._sql(_UPSERT_PLUGIN), plugin)
            for params in tenants:
                conn.execute(self._sql(_UPSERT_TENANT), params)
            if version is not None:
                conn.execute(self._sql(_INSERT_VERSION), version)
            # Forget before keep, so a change may forget a version and keep it anew.
            if change.forget:
                conn.execute(self._sql(_FORGET_KEPT), (change.plugin_id, list(change.forget)))
            if keep is not None:
                conn.execute(self._sql(_UPSERT_KEPT), keep)
            conn.execute(self._sql(_INSERT_AUDIT), audit)
            moved = conn.execute(
                self._sql(_NEXT_GENERATION), {"channel": CHANNEL, "schema": self._schema}
            ).fetchone()
            return _generation(moved)

    def get_plugin(self, plugin_id: str) -> PluginRecord | None:
        with self._connection() as conn:
            row = conn.execute(self._sql(_SELECT_PLUGINS + " WHERE id = %s"), (plugin_id,))
            found = row.fetchone()
            return None if found is None else _CODEC.plugin(found)

    def list_plugins(self, status: PluginStatus | None = None) -> list[PluginRecord]:
        with self._connection() as conn:
            if status is None:
                cursor = conn.execute(self._sql(_SELECT_PLUGINS + " ORDER BY id"))
            else:
                cursor = conn.execute(
                    self._sql(_SELECT_PLUGINS + " WHERE status = %s ORDER BY id"),
                    (PluginStatus(status).value,),
                )
            return [_CODEC.plugin(row) for row in cursor.fetchall()]

    def get_tenant(self, plugin_id: str, tenant: str) -> TenantRecord | None:
        with self._connection() as conn:
            found = conn.execute(
                self._sql(_SELECT_TENANTS + " WHERE plugin_id = %s AND tenant = %s"),
                (plugin_id, tenant),
            ).fetchone()
            return None if found is None else _CODEC.tenant(found)

    def list_tenants(self, plugin_id: str) -> list[TenantRecord]:
        with self._connection() as conn:
            rows = conn.execute(
                self._sql(_SELECT_TENANTS + " WHERE plugin_id = %s ORDER BY tenant"),
                (plugin_id,),
            ).fetchall()
            return [_CODEC.tenant(row) for row in rows]

    def enabled_plugins(self, tenant: str) -> list[str]:
        with self._connection() as conn:
            rows = conn.execute(
                self._sql(
                    """
                    SELECT t.plugin_id FROM {s}.plugin_tenants AS t
                    JOIN {s}.plugins AS p ON p.id = t.plugin_id
                    WHERE t.tenant = %s AND t.enabled AND t.suspended_reason IS NULL
                    AND p.status = %s
                    ORDER BY t.plugin_id
                    """
                ),
                (tenant, PluginStatus.APPROVED.value),
            ).fetchall()
            return [str(row["plugin_id"]) for row in rows]

    def versions(self, plugin_id: str) -> list[VersionRecord]:
        with self._connection() as conn:
            rows = conn.execute(
                self._sql(_SELECT_VERSIONS + " WHERE plugin_id = %s ORDER BY id"), (plugin_id,)
            ).fetchall()
            return [_CODEC.version(row) for row in rows]

    def kept_versions(self, plugin_id: str) -> list[KeptVersion]:
        with self._connection() as conn:
            rows = conn.execute(
                self._sql(_SELECT_KEPT + " WHERE plugin_id = %s ORDER BY kept_at, id"),
                (plugin_id,),
            ).fetchall()
            return [_CODEC.kept(row) for row in rows]

    def put_artifact(self, sha256: str, data: bytes) -> None:
        check_artifact(sha256, data)
        blob = bytes(data)
        with self._connection() as conn:
            # One statement: its own transaction.
            conn.execute(
                self._sql(_PUT_ARTIFACT), (sha256, blob, len(blob), datetime.now(timezone.utc))
            )

    def get_artifact(self, sha256: str) -> bytes | None:
        with self._connection() as conn:
            row = conn.execute(
                self._sql("SELECT data FROM {s}.plugin_artifacts WHERE sha256 = %s"), (sha256,)
            ).fetchone()
            return None if row is None else bytes(row["data"])

    def delete_artifact(self, sha256: str) -> bool:
        with self._connection() as conn:
            gone = conn.execute(
                self._sql("DELETE FROM {s}.plugin_artifacts WHERE sha256 = %s"), (sha256,)
            )
            return bool(gone.rowcount)

    def artifacts(self) -> list[ArtifactInfo]:
        with self._connection() as conn:
            rows = conn.execute(
                self._sql(
                    "SELECT sha256, size, stored_at FROM {s}.plugin_artifacts ORDER BY sha256"
                )
            ).fetchall()
            return [_CODEC.artifact(row) for row in rows]

    def audit(self, query: AuditQuery) -> list[AuditEvent]:
        where, params = _CODEC.audit_filter(query)
        with self._connection() as conn:
            rows = self._newest_first(conn, _SELECT_AUDIT, where, params, query.limit)
            return [_CODEC.audit(row) for row in rows]

    def record_failures(self, failures: Sequence[FailureRecord]) -> None:
        params = [_CODEC.failure_params(failure) for failure in failures]
        if not params:
            self._check_open()
            return
        with self._transaction() as conn, conn.cursor() as cursor:
            cursor.executemany(self._sql(_INSERT_FAILURE), params)

    def failures(
        self, plugin_id: str | None = None, *, resolved: bool | None = None, limit: int = 1000
    ) -> list[FailureRecord]:
        check_limit(limit)
        where, params = _CODEC.failure_filter(plugin_id, resolved)
        with self._connection() as conn:
            rows = self._newest_first(conn, _SELECT_FAILURES, where, params, limit)
            return [_CODEC.failure(row) for row in rows]

    def resolve_failures(
        self, plugin_id: str, tenant: str | None = None, *, ids: Sequence[int] | None = None
    ) -> int:
        sql = "UPDATE {s}.failures SET resolved = TRUE WHERE plugin_id = %s AND NOT resolved"
        params: list[object] = [plugin_id]
        if tenant is not None:
            sql += " AND tenant = %s"
            params.append(tenant)
        if ids is not None:
            # An id outside bigint names no failure: leave it out rather than fail the cast.
            wanted = [i for i in check_ids(ids) if i in _BIGINT]
            if not wanted:
                self._check_open()
                return 0
            sql += " AND id = ANY(%s::bigint[])"
            params.append(wanted)
        with self._connection() as conn:
            return conn.execute(self._sql(sql), params).rowcount

    def record_metrics(self, deltas: Sequence[MetricsDelta]) -> None:
        # In key order, so that concurrent batches lock their rows in one order
        # and never deadlock; a stable sort keeps a key's deltas in batch order.
        params = [
            _CODEC.metrics_params(delta)
            for delta in sorted(deltas, key=lambda d: (d.plugin_id, d.hook))
        ]
        if not params:
            self._check_open()
            return
        with self._transaction() as conn, conn.cursor() as cursor:
            # One row at a time, in order: a batch may hold one (plugin, hook) twice.
            cursor.executemany(self._sql(_ADD_METRICS), params)

    def record_access(self, records: Sequence[AccessRecord]) -> None:
        params = [_CODEC.access_params(record) for record in records]
        if not params:
            self._check_open()
            return
        with self._transaction() as conn, conn.cursor() as cursor:
            cursor.executemany(self._sql(_INSERT_ACCESS), params)

    def access_log(self, query: AccessQuery) -> list[AccessRecord]:
        check_limit(query.limit)
        where, params = _CODEC.access_filter(query, "record_ids @> ARRAY[%s]::text[]")
        sql = "SELECT * FROM {s}.access_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY at DESC, id DESC LIMIT %s"
        with self._connection() as conn:
            rows = conn.execute(self._sql(sql), (*params, query.limit)).fetchall()
        return [_CODEC.access(row) for row in rows]

    def prune_access(self, before: datetime) -> int:
        with self._transaction() as conn:
            cursor = conn.execute(self._sql("DELETE FROM {s}.access_log WHERE at < %s"), (before,))
            return cursor.rowcount

    def metrics(self, plugin_id: str | None = None) -> list[HookMetrics]:
        with self._connection() as conn:
            if plugin_id is None:
                cursor = conn.execute(self._sql(_SELECT_METRICS + " ORDER BY plugin_id, hook"))
            else:
                cursor = conn.execute(
                    self._sql(_SELECT_METRICS + " WHERE plugin_id = %s ORDER BY hook"),
                    (plugin_id,),
                )
            return [_CODEC.metrics(row) for row in cursor.fetchall()]

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
        if size is not None and size not in _BIGINT:
            raise StorageError(f"cannot store a size of {size} bytes: it is not a bigint")
        with self._transaction() as conn:
            return self._charge(
                conn, plugin_id, tenant, key, size, max_keys=max_keys, max_bytes=max_bytes
            )

    def _charge(
        self,
        conn: psycopg.Connection[DictRow],
        plugin_id: str,
        tenant: str,
        key: str,
        size: int | None,
        *,
        max_keys: int | None,
        max_bytes: int | None,
    ) -> int | None:
        """charge_store inside the caller's transaction (the store's totals row locked first)."""
        totals = conn.execute(self._sql(_LOCK_STORE), (plugin_id, tenant)).fetchone()
        usage = _usage(totals)
        row = conn.execute(self._sql(_STORE_SIZE), (plugin_id, tenant, key)).fetchone()
        previous = None if row is None else int(row["bytes"])
        after = charge(
            plugin_id, tenant, usage, previous, size, max_keys=max_keys, max_bytes=max_bytes
        )
        if size is None:
            conn.execute(self._sql(_DROP_STORE_SIZE), (plugin_id, tenant, key))
        else:
            conn.execute(self._sql(_SET_STORE_SIZE), (plugin_id, tenant, key, size))
        if after.keys:
            conn.execute(self._sql(_SET_STORE_TOTALS), (after.keys, after.bytes, plugin_id, tenant))
        else:
            conn.execute(self._sql(_DROP_STORE_TOTALS), (plugin_id, tenant))
        return previous

    def _drop_store(
        self, conn: psycopg.Connection[DictRow], plugin_id: str, tenant: str | None
    ) -> int:
        """drop_store inside the caller's transaction; how many values it dropped."""
        where = "t.plugin_id = %(plugin)s" + (
            "" if tenant is None else " AND t.tenant = %(tenant)s"
        )
        params = {"plugin": plugin_id, "tenant": tenant}
        for statement in _DROP_STORE:
            conn.execute(self._sql(statement.replace("{w}", where)), params)
        dropped = conn.execute(self._sql(_DROP_VALUES.replace("{w}", where)), params)
        return int(dropped.rowcount)

    def store_usage(self, plugin_id: str, tenant: str) -> StoreUsage:
        with self._connection() as conn:
            row = conn.execute(
                self._sql(
                    "SELECT keys, bytes FROM {s}.store_totals WHERE plugin_id = %s AND tenant = %s"
                ),
                (plugin_id, tenant),
            ).fetchone()
            return _usage(row)

    def store_read(self, plugin_id: str, tenant: str, key: str) -> JSONValue:
        with self._connection() as conn:
            row = conn.execute(self._sql(_STORE_READ), (plugin_id, tenant, key)).fetchone()
            return None if row is None else stored_value(str(row["value"]))

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
        # The charge and the value in one transaction, under the lock of the store's totals
        # row: a refused charge writes neither.
        with self._transaction() as conn:
            self._charge(conn, plugin_id, tenant, key, size, max_keys=max_keys, max_bytes=max_bytes)
            conn.execute(self._sql(_STORE_WRITE), (plugin_id, tenant, key, text))

    def store_remove(self, plugin_id: str, tenant: str, key: str) -> bool:
        with self._transaction() as conn:
            # Lock the store first, as a write does, then forget the value and its charge.
            conn.execute(self._sql(_LOCK_STORE), (plugin_id, tenant))
            gone = conn.execute(self._sql(_STORE_REMOVE), (plugin_id, tenant, key)).rowcount
            if gone:
                self._charge(conn, plugin_id, tenant, key, None, max_keys=None, max_bytes=None)
            else:
                conn.execute(self._sql(_DROP_STORE_TOTALS + " AND keys = 0"), (plugin_id, tenant))
            return bool(gone)

    def drop_store(self, plugin_id: str, tenant: str | None = None) -> int:
        with self._transaction() as conn:
            return self._drop_store(conn, plugin_id, tenant)

    def close(self) -> None:
        """Stop the change feed and close every connection; closing twice is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        self._pool.close()

    # -- ChangeFeed ------------------------------------------------------------------------

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` from the feed's thread soon after any process commits a change.

        The first call starts the feed: a daemon thread with a connection of
        its own (not one of the pool's) that ``LISTEN``\\ s on
        ``services_ai_plugins_changes``; it returns once the feed listens (or
        after ``timeout`` if the database cannot be reached). Every callback is
        called for each commit to this storage's schema, by any process. When
        the feed loses its connection it calls them once, then reconnects with
        growing delays (up to 10 s) and calls them once more when it listens
        again, since changes may have been missed in between. An exception a
        callback raises is logged on the ``services_ai_plugins.storage``
        logger. The returned function stops this callback (calling it twice is
        harmless); :meth:`close` stops the feed.

        :raises StorageError: when the storage is closed.
        """
        with self._lock:
            if self._closed:
                raise StorageError(f"{self!r} is closed")
            if self._listener is None:
                self._listener = Listener(
                    self._listen_connect,
                    self._driver_error,
                    self._schema,
                    f"services-ai-plugins change feed ({self._schema})",
                )
            listener = self._listener
        stop = listener.add(callback)
        listener.wait_ready(self._timeout)
        return stop

    # -- helpers ---------------------------------------------------------------------------

    def _sql(self, template: str) -> str:
        return render(template, self._quoted)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self!r} is closed")

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[DictRow]]:
        """A connection from the pool, in autocommit mode; driver errors become StorageError."""
        self._check_open()
        try:
            conn = self._live_connection()
            try:
                yield conn
            finally:
                self._pool.putconn(conn)
        except self._pool_closed as exc:
            raise StorageError(f"{self!r} is closed") from exc
        except self._pool_timeout as exc:
            raise StorageError(
                f"{self._where}: no database connection within {self._timeout:g} s (is the "
                f"server reachable? are all {self._max_size} connections of the pool busy?)"
            ) from exc
        except self._errors as exc:
            raise StorageError(f"{self._where}: {exc}") from exc

    def _live_connection(self) -> psycopg.Connection[DictRow]:
        """A pooled connection that the server has not closed.

        A connection the server closed (a restart, a failover, an idle timeout,
        ``pg_terminate_backend``) has data or the end of the stream waiting on
        its socket: it is closed and handed back, and the pool replaces it. The
        look costs no round trip, unlike the pool's own check, which also
        sleeps a growing delay after each dead connection it finds.
        """
        deadline = time.monotonic() + self._timeout
        while True:
            conn = self._pool.getconn(timeout=max(0.0, deadline - time.monotonic()))
            if not _closed_by_server(conn):
                return conn
            _logger.info("%s: replacing a connection the server closed", self._where)
            conn.close()
            self._pool.putconn(conn)

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[DictRow]]:
        """One transaction: committed if the block returns, rolled back if it raises."""
        with self._connection() as conn, conn.transaction():
            yield conn

    def _newest_first(
        self,
        conn: psycopg.Connection[DictRow],
        select: str,
        where: list[str],
        params: list[object],
        limit: int,
    ) -> list[DictRow]:
        """Rows of ``select`` by id, newest first, at most ``limit`` (not negative) of them."""
        sql = select
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT %s"
        return conn.execute(self._sql(sql), [*params, limit]).fetchall()


def _check_options(schema: object, min_size: object, max_size: object, timeout: object) -> None:
    if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(
            f"schema must be 1 to 63 letters, digits or underscores, not starting with a "
            f"digit (got {schema!r})"
        )
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
        raise ValueError(f"min_size must be an int >= 0 (got {min_size!r})")
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < max(1, min_size):
        raise ValueError(f"max_size must be an int >= 1 and >= min_size (got {max_size!r})")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds (got {timeout!r})")


def _closed_by_server(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection is known dead: closed, or with something to read.

    An idle connection in autocommit mode that is not listening receives
    nothing unless the server is closing it (a FATAL error, then the end of the
    stream). At worst a stray notice makes us replace a working connection.
    """
    if conn.closed or conn.broken:
        return True
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(conn.fileno(), selectors.EVENT_READ)
            return bool(selector.select(timeout=0))
    except (OSError, ValueError):
        return True


def _unless_given(given: Mapping[str, object], **defaults: object) -> dict[str, object]:
    """The connection parameters of ``defaults`` that the connection string does not set."""
    return {key: value for key, value in defaults.items() if key not in given}


def _where(parts: Mapping[str, object]) -> str:
    """``postgresql://user@host:port/dbname`` with the parts that are known; no password."""
    user = parts.get("user")
    host = parts.get("host") or ""
    port = parts.get("port")
    dbname = parts.get("dbname")
    text = "postgresql://"
    if user:
        text += f"{user}@"
    text += str(host)
    if port:
        text += f":{port}"
    if dbname:
        text += f"/{dbname}"
    return text


# -- encoding: records to parameters -------------------------------------------------------


def _moment(value: datetime) -> datetime:
    """An aware datetime, as given: timestamptz keeps the instant."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise StorageError(
            f"cannot store the naive datetime {value.isoformat()}: "
            "records carry timezone-aware UTC datetimes"
        )
    return value


def _json(value: object, what: str) -> str:
    """``value`` as compact JSON text for a jsonb column.

    Floats are written with a decimal point and without an exponent: jsonb keeps
    a number's digits, and ``1e+20`` would come back as the int
    100000000000000000000, while ``100000000000000000000.0`` comes back a float.
    """
    try:
        return exact_json_text(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StorageError(f"cannot store {what} as JSON: {exc}") from exc


def _json_object(value: Mapping[str, JSONValue], what: str) -> str:
    return _json(dict(value), what)


# -- decoding: rows to records -------------------------------------------------------------


def _generation(row: DictRow | None) -> int:
    if row is None:
        raise StorageError("the change counter is missing: the schema was damaged")
    return int(row["value"])


def _usage(row: DictRow | None) -> StoreUsage:
    return (
        StoreUsage() if row is None else StoreUsage(keys=int(row["keys"]), bytes=int(row["bytes"]))
    )


def _revision(conn: psycopg.Connection[DictRow], sql: str, *params: str) -> int:
    """The stored revision a query finds (locking its row), or 0 when there is none."""
    row = conn.execute(sql, params).fetchone()
    return 0 if row is None else int(row["revision"])


def _time(value: datetime) -> datetime:
    """The instant in UTC, as the other backends return it."""
    return value.astimezone(timezone.utc)


def _object(value: object) -> dict[str, JSONValue]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, found {type(value).__name__}")
    return cast("dict[str, JSONValue]", value)


#: Datetimes as timestamptz, JSON objects as jsonb text, tuples of strings as text arrays.
_CODEC: Final = RowCodec(
    moment=_moment,
    json=_json_object,
    strings=lambda values, what: list(values),
    flag=bool,
    number=float,
    read_time=_time,
    read_object=_object,
    read_strings=tuple,
    marker="%s",
)
