"""PostgresStorage: schema migrations, errors translated at the seam, the change feed, code point
order, concurrent writers, value round trips, and agreement with MemoryStorage.

The storage contract runs against it in test_storage_contract.py; these tests cover what is
particular to PostgreSQL. Each test works in a schema (or database) of its own, dropped
afterwards.
"""

from __future__ import annotations

import hashlib
import logging
import random
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from test_sqlite import at, delta, event, failure, install, plugin, scenario, tenant_change

import pg_cluster
from services_ai_plugins._storage._memory import MemoryStorage
from services_ai_plugins._storage._postgres import _migrations as migrations
from services_ai_plugins._storage._postgres import _storage as pg_storage
from services_ai_plugins._storage._postgres._storage import PostgresStorage
from services_ai_plugins._storage._protocol import (
    AuditQuery,
    Change,
    MetricsDelta,
    PluginStatus,
    SourceKind,
    StagedVersion,
    TenantRecord,
)
from services_ai_plugins._storage._sqlite import SQLiteStorage
from services_ai_plugins.errors import ConflictError, StorageError
from services_ai_plugins.storage import ChangeFeed, Storage

psycopg = pytest.importorskip("psycopg")
psycopg_pool = pytest.importorskip("psycopg_pool")
sql = psycopg.sql
make_conninfo = psycopg.conninfo.make_conninfo

#: How long a change may take to reach a watcher.
FEED_DELAY = 1.0


def raw(url: str) -> Any:
    """A plain autocommit psycopg connection, closed on leaving the block."""
    return psycopg.connect(url, autocommit=True)


def q(template: str, schema: str, **names: str) -> Any:
    """``template`` with ``{schema}`` and the other ``names`` as quoted identifiers."""
    identifiers = {key: sql.Identifier(value) for key, value in names.items()}
    return sql.SQL(template).format(schema=sql.Identifier(schema), **identifiers)


def drop_schema(url: str, schema: str) -> None:
    with raw(url) as conn:
        conn.execute(q("DROP SCHEMA IF EXISTS {schema} CASCADE", schema))


@pytest.fixture
def new_schema(postgres_url: str) -> Iterator[Callable[[], str]]:
    """Make up schema names; every one is dropped after the test."""
    made: list[str] = []

    def make() -> str:
        made.append(f"test_{uuid.uuid4().hex[:16]}")
        return made[-1]

    yield make
    for schema in made:
        drop_schema(postgres_url, schema)


@pytest.fixture
def schema(new_schema: Callable[[], str]) -> str:
    """The test's schema (it does not exist yet)."""
    return new_schema()


@pytest.fixture
def opener(postgres_url: str, schema: str) -> Iterator[Callable[..., PostgresStorage]]:
    """Open PostgresStorage objects on the test's schema; all of them are closed afterwards."""
    opened: list[PostgresStorage] = []

    def open_storage(**options: Any) -> PostgresStorage:
        options.setdefault("schema", schema)
        storage = PostgresStorage(options.pop("url", postgres_url), **options)
        opened.append(storage)
        return storage

    yield open_storage
    for storage in opened:
        storage.close()


@pytest.fixture
def storage(opener: Callable[..., PostgresStorage]) -> PostgresStorage:
    """A PostgresStorage on a fresh schema."""
    return opener()


def columns(url: str, schema: str) -> list[tuple[Any, ...]]:
    """Every column of the schema's tables: table, column, type and collation."""
    with raw(url) as conn:
        return conn.execute(
            "SELECT table_name, column_name, data_type, collation_name"
            " FROM information_schema.columns WHERE table_schema = %s"
            " ORDER BY table_name, ordinal_position",
            (schema,),
        ).fetchall()


def dump(url: str, schema: str) -> tuple[list[tuple[Any, ...]], dict[str, list[str]]]:
    """Every column of the schema, and every table's rows (as JSON text)."""
    found = columns(url, schema)
    with raw(url) as conn:
        rows = {
            table: sorted(
                row[0]
                for row in conn.execute(
                    q("SELECT row_to_json(t)::text FROM {schema}.{table} t", schema, table=table)
                )
            )
            for table in sorted({row[0] for row in found})
        }
    return found, rows


def applied(url: str, schema: str) -> list[tuple[Any, ...]]:
    with raw(url) as conn:
        return conn.execute(
            q(
                "SELECT version, description, applied_at FROM {schema}.schema_migrations"
                " ORDER BY version",
                schema,
            )
        ).fetchall()


class Calls:
    """A change feed callback that counts its calls and can wait for them."""

    def __init__(self) -> None:
        self.count = 0
        self._cond = threading.Condition()

    def __call__(self) -> None:
        with self._cond:
            self.count += 1
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = FEED_DELAY) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.count >= count, timeout)


# Opening and migrating.

TABLES = [
    "access_log",
    "audit_events",
    "failures",
    "hook_metrics",
    "meta",
    "plugin_artifacts",
    "plugin_kept_versions",
    "plugin_tenants",
    "plugin_versions",
    "plugins",
    "schema_migrations",
    "store_sizes",
    "store_totals",
    "store_values",
]


def test_migrations_are_consecutive() -> None:
    """The migration list numbers its steps 1, 2, 3... in order."""
    versions = [m.version for m in migrations.MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1))


def test_open_creates_the_schema_and_reopening_changes_nothing(
    opener: Callable[..., PostgresStorage], postgres_url: str, schema: str
) -> None:
    """A fresh schema gets every table and each migration recorded once; opening it again
    changes nothing and takes no lock (it opens while another process holds the migration lock)."""
    opener().close()
    first = applied(postgres_url, schema)
    assert [row[0] for row in first] == [m.version for m in migrations.MIGRATIONS]
    before = dump(postgres_url, schema)
    assert sorted(before[1]) == TABLES
    with raw(postgres_url) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (migrations.LOCK_CLASS, schema))
        opener(timeout=2).close()
        opener(timeout=2).close()
    assert applied(postgres_url, schema) == first
    assert dump(postgres_url, schema) == before


def test_reopen_keeps_data(opener: Callable[..., PostgresStorage]) -> None:
    """Plugins, tenants, versions, audit, failures, metrics and the generation survive a reopen."""
    first = opener()
    install(first)
    first.commit(tenant_change("crm-sync", "acme", 1))
    first.record_failures([failure("crm-sync", "acme", at(1))])
    first.record_metrics([delta("crm-sync", "lead_created", 3, at(2))])
    before = {
        "plugins": first.list_plugins(),
        "tenants": first.list_tenants("crm-sync"),
        "versions": first.versions("crm-sync"),
        "audit": first.audit(AuditQuery()),
        "failures": first.failures(),
        "metrics": first.metrics(),
    }
    first.close()
    second = opener()
    assert second.generation() == 2
    assert second.list_plugins() == before["plugins"]
    assert second.list_tenants("crm-sync") == before["tenants"]
    assert second.versions("crm-sync") == before["versions"]
    assert second.audit(AuditQuery()) == before["audit"]
    assert second.failures() == before["failures"]
    assert second.metrics() == before["metrics"]


def test_newer_schema_refused_untouched(
    opener: Callable[..., PostgresStorage], postgres_url: str, schema: str
) -> None:
    """A schema migrated by a newer release is refused with StorageError and left as it was."""
    storage = opener()
    install(storage)
    storage.close()
    newer = len(migrations.MIGRATIONS) + 1
    with raw(postgres_url) as conn:
        conn.execute(
            q("INSERT INTO {schema}.schema_migrations VALUES (%s, %s, now())", schema),
            (newer, "from a later release"),
        )
    before = dump(postgres_url, schema)
    with pytest.raises(StorageError, match=rf"version {newer}, newer than this release"):
        opener()
    assert dump(postgres_url, schema) == before


def test_extra_migration_applied_to_existing_data(
    opener: Callable[..., PostgresStorage],
    postgres_url: str,
    schema: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A migration appended by a later release runs once on an existing schema; data survives."""
    old = opener()
    record = install(old)
    old.commit(tenant_change("crm-sync", "acme", 1))
    tenants = old.list_tenants("crm-sync")
    old.close()

    version = len(migrations.MIGRATIONS) + 1
    extra = migrations.Migration(
        version, "plugins get a homepage", "ALTER TABLE {s}.plugins ADD COLUMN homepage TEXT;"
    )
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, extra))
    new = opener()
    assert new.get_plugin("crm-sync") == record
    assert new.list_tenants("crm-sync") == tenants
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
    assert [row[0] for row in applied(postgres_url, schema)] == list(range(1, version + 1))
    assert ("plugins", "homepage", "text", None) in columns(postgres_url, schema)


def test_failed_migration_rolls_back(
    opener: Callable[..., PostgresStorage],
    postgres_url: str,
    schema: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A migration that fails half-way leaves the schema and data as they were."""
    install(opener())
    before = dump(postgres_url, schema)
    broken = migrations.Migration(
        len(migrations.MIGRATIONS) + 1,
        "half done",
        "ALTER TABLE {s}.plugins ADD COLUMN homepage TEXT; CREATE TABLE {s}.broken (;",
    )
    with monkeypatch.context() as patch:
        patch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, broken))
        with pytest.raises(StorageError, match="cannot open the database") as caught:
            opener()
    assert isinstance(caught.value.__cause__, psycopg.errors.SyntaxError)
    assert dump(postgres_url, schema) == before
    assert opener().get_plugin("crm-sync") == plugin()


def test_step_3_schema_migrates_to_staged_and_kept_versions(
    opener: Callable[..., PostgresStorage],
    postgres_url: str,
    schema: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A schema at step 3 (before versions and archives) holding a plugin opens and migrates in
    place: the plugin reads back with no archive and nothing staged, then takes all of them."""
    approved = plugin(status=PluginStatus.APPROVED, revision=2)
    with monkeypatch.context() as patch:
        patch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:3])
        opener().close()
    params = {
        name: value
        for name, value in pg_storage._CODEC.plugin_params(approved).items()
        if name not in ("artifact", "staged")
    }
    with raw(postgres_url) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {schema}.plugins ({names}) VALUES ({values})").format(
                schema=sql.Identifier(schema),
                names=sql.SQL(", ").join(map(sql.Identifier, params)),
                values=sql.SQL(", ").join(map(sql.Placeholder, params)),
            ),
            params,
        )
    assert "plugin_artifacts" not in {row[0] for row in columns(postgres_url, schema)}

    new = opener()
    assert [row[0] for row in applied(postgres_url, schema)] == [
        m.version for m in migrations.MIGRATIONS
    ]
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


def test_processes_opening_at_once_migrate_once(
    postgres_url: str, schema: str, opener: Callable[..., PostgresStorage]
) -> None:
    """Eight openers racing on a fresh schema all succeed; each migration is applied once."""
    start = threading.Barrier(8)

    def open_it(_: int) -> int:
        start.wait()
        return opener().generation()

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(open_it, range(8))) == [0] * 8
    assert [row[0] for row in applied(postgres_url, schema)] == [
        m.version for m in migrations.MIGRATIONS
    ]


def test_migrations_wait_for_the_advisory_lock(
    postgres_url: str, schema: str, opener: Callable[..., PostgresStorage]
) -> None:
    """Migrating waits while another process holds the schema's migration lock, then runs."""
    opened: list[PostgresStorage] = []
    with raw(postgres_url) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (migrations.LOCK_CLASS, schema))
        thread = threading.Thread(target=lambda: opened.append(opener()))
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "the migration did not wait for the lock"
        holder.execute(
            "SELECT pg_advisory_unlock(%s, hashtext(%s))", (migrations.LOCK_CLASS, schema)
        )
        thread.join(10)
    assert not thread.is_alive()
    assert opened[0].generation() == 0


def test_non_utf8_database_refused(postgres_url: str) -> None:
    """A database that is not UTF-8 is refused with StorageError before anything is created."""
    name = f"saip_ascii_{uuid.uuid4().hex[:12]}"
    with raw(postgres_url) as conn:
        conn.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'SQL_ASCII'"
            " LC_COLLATE 'C' LC_CTYPE 'C'"
        )
    try:
        url = make_conninfo(postgres_url, dbname=name)
        with pytest.raises(StorageError, match="needs a UTF8 database"):
            PostgresStorage(url)
        with raw(url) as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = 'services_ai_plugins'"
            ).fetchone()
        assert found is None
    finally:
        with raw(postgres_url) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"schema": ""}, "schema"),
        ({"schema": "1abc"}, "schema"),
        ({"schema": 'a"b'}, "schema"),
        ({"schema": "a-b"}, "schema"),
        ({"schema": "x" * 64}, "schema"),
        ({"min_size": -1}, "min_size"),
        ({"max_size": 0}, "max_size"),
        ({"min_size": 5, "max_size": 4}, "max_size"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1.0}, "timeout"),
        ({"timeout": True}, "timeout"),
    ],
)
def test_bad_options_refused_before_connecting(options: dict[str, Any], named: str) -> None:
    """A bad schema name, pool size or timeout is a ValueError naming it; nothing connects."""
    with pytest.raises(ValueError, match=named):
        PostgresStorage("postgresql://nobody@127.0.0.1:1/none", **options)


# Errors translated at the seam.


def test_unreachable_server_is_a_storage_error() -> None:
    """A server that cannot be reached is a StorageError (from psycopg's), without the password."""
    port = pg_cluster._free_port()
    with pytest.raises(StorageError, match="cannot open the database") as caught:
        PostgresStorage(f"postgresql://ada:hunter2@127.0.0.1:{port}/app", timeout=2)
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    assert f"postgresql://ada@127.0.0.1:{port}/app" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_repr_names_the_database_but_not_the_password(
    opener: Callable[..., PostgresStorage], postgres_url: str, schema: str
) -> None:
    """The repr shows user, host, port, database and schema, never the password."""
    with_password = make_conninfo(postgres_url, password="hunter2")
    storage = opener(url=with_password)
    shown = repr(storage)
    assert shown.startswith("PostgresStorage('postgresql://postgres@")
    assert shown.endswith(f"/postgres', schema={schema!r})")
    assert "hunter2" not in shown


@pytest.mark.slow
def test_server_gone_is_a_storage_error_and_the_feed_calls_back() -> None:
    """Once the server is gone every call raises StorageError (never psycopg's errors), the
    change feed calls its watchers, and close() still works."""
    folder = tempfile.mkdtemp(prefix="services-ai-plugins-pg-gone-")
    try:
        url = pg_cluster.start(folder)
    except pg_cluster.ClusterError as error:
        pg_cluster.stop(folder)
        pytest.skip(f"cannot start a second PostgreSQL server: {error}")
    storage = PostgresStorage(url, timeout=1)
    try:
        install(storage)
        calls = Calls()
        storage.watch(calls)
        pg_cluster.stop(folder)
        assert calls.wait_for(1, 5), "the feed did not call back when it lost the server"
        for call in (
            storage.generation,
            lambda: storage.commit(tenant_change("crm-sync", "acme", 1)),
        ):
            with pytest.raises(StorageError) as caught:
                call()
            assert not isinstance(caught.value, psycopg.Error)
            assert isinstance(caught.value.__cause__, psycopg.Error)
    finally:
        storage.close()
        pg_cluster.stop(folder)


def test_busy_pool_times_out_with_storage_error(opener: Callable[..., PostgresStorage]) -> None:
    """When no pooled connection is free within the timeout, the call raises StorageError."""
    storage = opener(min_size=1, max_size=1, timeout=0.5)
    with storage._pool.connection():
        started = time.monotonic()
        with pytest.raises(StorageError, match=r"no database connection within 0\.5 s") as caught:
            storage.generation()
        assert time.monotonic() - started < 5
    assert isinstance(caught.value.__cause__, psycopg_pool.PoolTimeout)
    assert storage.generation() == 0


def test_commit_waits_for_the_write_lock_up_to_the_timeout(
    opener: Callable[..., PostgresStorage], postgres_url: str, schema: str
) -> None:
    """A commit queues behind another writer's lock on the change counter, for up to `timeout`,
    then raises StorageError and writes nothing."""
    storage = opener(timeout=0.5)
    install(storage)
    with raw(postgres_url) as other, other.transaction():
        other.execute(
            q("SELECT value FROM {schema}.meta WHERE key = 'generation' FOR UPDATE", schema)
        )
        with pytest.raises(StorageError) as caught:
            storage.commit(tenant_change("crm-sync", "acme", 1))
    assert isinstance(caught.value.__cause__, psycopg.errors.LockNotAvailable)
    assert storage.generation() == 1
    assert storage.get_tenant("crm-sync", "acme") is None


def test_values_the_database_refuses_are_storage_errors(storage: PostgresStorage) -> None:
    """Text with NUL or lone surrogates and JSON with NaN raise StorageError; nothing is written."""
    bad = [
        plugin("nul-name", name="a\x00b"),
        plugin("surrogate-\udc80"),
        plugin("nan", manifest={"id": "nan", "ratio": float("nan")}),
        plugin("not-json", manifest={"id": "x", "when": datetime.now(timezone.utc)}),
    ]
    for record in bad:
        with pytest.raises(StorageError) as caught:
            storage.commit(Change(plugin_id=record.id, plugin=record, audit=event(record.id, "x")))
        assert not isinstance(caught.value, psycopg.Error)
    with pytest.raises(StorageError, match="naive datetime"):
        storage.audit(AuditQuery(since=datetime(2025, 1, 1)))
    assert storage.generation() == 0
    assert storage.list_plugins() == []
    assert storage.audit(AuditQuery()) == []


def test_closed_storage_raises(opener: Callable[..., PostgresStorage]) -> None:
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
        lambda: storage.record_failures([failure("crm-sync", None, at(0))]),
        storage.failures,
        lambda: storage.resolve_failures("crm-sync"),
        lambda: storage.resolve_failures("crm-sync", ids=[1]),
        lambda: storage.resolve_failures("crm-sync", ids=[]),
        lambda: storage.record_metrics([]),
        storage.metrics,
        lambda: storage.watch(lambda: None),
    ]
    for call in calls:
        with pytest.raises(StorageError, match="is closed"):
            call()


def test_dropped_pool_connections_are_replaced(
    opener: Callable[..., PostgresStorage], postgres_url: str, schema: str
) -> None:
    """Pooled connections the server dropped are replaced before use: calls keep working."""
    name = f"test-{schema}"
    storage = opener(url=make_conninfo(postgres_url, application_name=name), min_size=3)
    install(storage)
    count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    with raw(postgres_url) as conn:
        # The pool opens its connections in the background: wait for all three.
        deadline = time.monotonic() + 10
        while conn.execute(count, (name,)).fetchone() != (3,) and time.monotonic() < deadline:
            time.sleep(0.05)
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        ).fetchall()
        # ... and for the server to have closed them (the client sees the close then).
        while conn.execute(count, (name,)).fetchone() != (0,) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert killed == [(True,)] * 3
    for _ in range(5):
        assert storage.generation() == 1
    storage.commit(tenant_change("crm-sync", "acme", 1))
    assert storage.generation() == 2


def test_import_needs_no_psycopg_and_a_missing_one_is_explained() -> None:
    """The package and the class resolve without importing psycopg; without psycopg,
    constructing a storage raises ImportError saying which extra to install."""
    code = textwrap.dedent(
        """
        import sys
        import services_ai_plugins, services_ai_plugins.storage
        services_ai_plugins.PostgresStorage, services_ai_plugins.storage.ChangeFeed
        print("psycopg" in sys.modules, "psycopg_pool" in sys.modules)
        sys.modules["psycopg"] = None  # as if psycopg were not installed
        try:
            services_ai_plugins.PostgresStorage("postgresql://nobody@127.0.0.1:1/none")
        except ImportError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded, message = result.stdout.strip().splitlines()
    assert loaded == "False False"
    assert 'pip install "services-ai-plugins[postgres]"' in message


# The change feed.


def test_only_postgres_storage_is_a_change_feed(storage: PostgresStorage) -> None:
    """PostgresStorage is a Storage and a ChangeFeed; the other bundled backends are no feeds."""
    assert isinstance(storage, Storage)
    assert isinstance(storage, ChangeFeed)
    assert not isinstance(MemoryStorage(), ChangeFeed)
    sqlite = SQLiteStorage(":memory:")
    assert not isinstance(sqlite, ChangeFeed)
    sqlite.close()


def test_commit_of_another_storage_calls_back_within_a_second(
    opener: Callable[..., PostgresStorage],
) -> None:
    """A commit through another PostgresStorage (another pool) calls the watcher within a second,
    once per commit."""
    watcher, writer = opener(), opener()
    calls = Calls()
    watcher.watch(calls)
    started = time.monotonic()
    install(writer)
    assert calls.wait_for(1), "no callback within a second of the commit"
    assert time.monotonic() - started < FEED_DELAY
    writer.commit(tenant_change("crm-sync", "acme", 1))
    writer.commit(tenant_change("crm-sync", "acme", 2, enabled=False))
    assert calls.wait_for(3)
    time.sleep(0.2)
    assert calls.count == 3


def test_only_commits_to_the_same_schema_call_back(
    opener: Callable[..., PostgresStorage], new_schema: Callable[[], str]
) -> None:
    """A refused commit, failures, metrics and commits to another schema call nobody back."""
    watcher = opener()
    install(watcher)
    calls = Calls()
    watcher.watch(calls)
    with pytest.raises(ConflictError):
        watcher.commit(tenant_change("crm-sync", "acme", 2))
    watcher.record_failures([failure("crm-sync", "acme", at(1))])
    watcher.resolve_failures("crm-sync")
    watcher.record_metrics([delta("crm-sync", "lead_created", 1, at(1))])
    install(opener(schema=new_schema()))
    time.sleep(0.3)
    assert calls.count == 0
    watcher.commit(tenant_change("crm-sync", "acme", 1))
    assert calls.wait_for(1)


def test_stop_function_stops_only_its_callback(opener: Callable[..., PostgresStorage]) -> None:
    """The function watch() returns stops that callback only; calling it twice is harmless."""
    watcher, writer = opener(), opener()
    first, second = Calls(), Calls()
    stop_first = watcher.watch(first)
    stop_second = watcher.watch(second)
    install(writer)
    assert first.wait_for(1)
    assert second.wait_for(1)
    stop_first()
    stop_first()
    writer.commit(tenant_change("crm-sync", "acme", 1))
    assert second.wait_for(2)
    stop_second()
    writer.commit(tenant_change("crm-sync", "acme", 2))
    time.sleep(0.3)
    assert (first.count, second.count) == (1, 2)


def test_callback_exception_is_logged_and_the_feed_goes_on(
    opener: Callable[..., PostgresStorage], caplog: pytest.LogCaptureFixture
) -> None:
    """A callback that raises is logged with its traceback; it and the others keep being called."""
    watcher, writer = opener(), opener()
    failing = Calls()

    def explode() -> None:
        failing()
        raise RuntimeError("boom in a watcher")

    calls = Calls()
    watcher.watch(explode)
    watcher.watch(calls)
    with caplog.at_level(logging.ERROR, logger="services_ai_plugins.storage"):
        install(writer)
        assert calls.wait_for(1)
        writer.commit(tenant_change("crm-sync", "acme", 1))
        assert calls.wait_for(2)
    assert failing.count == 2
    logged = [r for r in caplog.records if "change feed callback" in r.getMessage()]
    assert len(logged) == 2
    assert logged[0].exc_info is not None
    assert "boom in a watcher" in str(logged[0].exc_info[1])


def test_close_ends_the_feed(opener: Callable[..., PostgresStorage], postgres_url: str) -> None:
    """close() ends the feed's thread and its connection; watch() afterwards is a StorageError."""
    storage = opener()
    storage.watch(lambda: None)
    listener = storage._listener
    assert listener is not None
    assert listener.alive
    pid = listener.backend_pid
    assert pid is not None
    started = time.monotonic()
    storage.close()
    assert time.monotonic() - started < 2
    assert not listener.alive
    deadline = time.monotonic() + 5
    with raw(postgres_url) as conn:
        while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, "the feed's connection is still open"
            time.sleep(0.05)
    with pytest.raises(StorageError, match="is closed"):
        storage.watch(lambda: None)


def test_dropped_feed_connection_calls_back_and_reconnects(
    opener: Callable[..., PostgresStorage], postgres_url: str
) -> None:
    """When the server drops the feed's connection, the watchers are called (the loss), the feed
    reconnects and calls them once more, and later commits call back again."""
    watcher, writer = opener(), opener()
    calls = Calls()
    watcher.watch(calls)
    listener = watcher._listener
    assert listener is not None
    pid = listener.backend_pid
    random.seed(20261205)
    state = random.getstate()
    with raw(postgres_url) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert calls.wait_for(1, 2), "the loss of the connection did not call back"
    deadline = time.monotonic() + 5
    while listener.backend_pid in (None, pid):
        assert time.monotonic() < deadline, "the feed did not reconnect"
        time.sleep(0.02)
    # The reconnection's jitter has a generator of its own: the app's seeded random is untouched.
    assert random.getstate() == state
    assert calls.wait_for(2, 2), "the feed did not call back once it listened again"
    install(writer)
    assert calls.wait_for(3), "a commit after the reconnection did not call back"


# Order, concurrency and round trips.

#: Ids whose code point order differs from linguistic orders (\uff41 is a fullwidth "a").
IDS = [
    "b",
    "B",
    "a",
    "A",
    "é",
    "e",
    "Z",
    "z",
    "ß",
    "中",
    "🚀",
    "_x",
    "-y",
    "10",
    "9",
    "\uff41",
    "aa",
]


def _linguistic_database(conn: Any, name: str) -> bool:
    """Create a database whose default collation is not code point order; False if none can be."""
    attempts = [
        f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C'"
        " LOCALE_PROVIDER icu ICU_LOCALE 'en-US'",
        f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LOCALE 'en_US.UTF-8'",
    ]
    for statement in attempts:
        try:
            conn.execute(statement)
        except psycopg.Error:
            continue
        return True
    return False


def test_sorted_in_code_point_order_under_a_linguistic_collation(postgres_url: str) -> None:
    """Plugins, tenants, enabled plugins and metrics come sorted as Python sorts strings, even in
    a database whose own collation sorts otherwise (COLLATE "C" on the key columns)."""
    name = f"saip_icu_{uuid.uuid4().hex[:12]}"
    with raw(postgres_url) as conn:
        if not _linguistic_database(conn, name):
            pytest.skip("no ICU or en_US locale to make a linguistic database with")
    try:
        url = make_conninfo(postgres_url, dbname=name)
        with raw(url) as conn:
            plain = [
                r[0] for r in conn.execute("SELECT x FROM unnest(%s::text[]) x ORDER BY x", (IDS,))
            ]
        assert plain != sorted(IDS), "the database sorts by code point: the test proves nothing"
        storage = PostgresStorage(url)
        try:
            for plugin_id in IDS:
                record = plugin(plugin_id, status=PluginStatus.APPROVED)
                storage.commit(
                    Change(plugin_id=plugin_id, plugin=record, audit=event(plugin_id, "i"))
                )
                storage.commit(tenant_change(plugin_id, "acme", 1))
            for tenant in IDS:
                storage.commit(tenant_change("a", tenant, 1 + (tenant == "acme")))
            storage.record_metrics(
                [delta(p, h, 1, at(0)) for p in ("b", "a", "é") for h in reversed(IDS)]
            )
            assert [p.id for p in storage.list_plugins()] == sorted(IDS)
            assert [p.id for p in storage.list_plugins(PluginStatus.APPROVED)] == sorted(IDS)
            assert [t.tenant for t in storage.list_tenants("a")] == sorted([*IDS, "acme"])
            assert storage.enabled_plugins("acme") == sorted(IDS)
            assert [(m.plugin_id, m.hook) for m in storage.metrics()] == sorted(
                (p, h) for p in ("b", "a", "é") for h in IDS
            )
            assert [m.hook for m in storage.metrics("é")] == sorted(IDS)
        finally:
            storage.close()
    finally:
        with raw(postgres_url) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_concurrent_writers_get_conflicts_not_lost_updates(
    opener: Callable[..., PostgresStorage],
) -> None:
    """Threads incrementing one counter through two storages, each read-modify-commit and retry
    on ConflictError: every increment lands once, and conflicts were raised on the way."""
    stores = [opener(), opener()]
    install(stores[0])
    stores[0].commit(
        Change(
            plugin_id="crm-sync",
            plugin_revision=1,
            tenant=TenantRecord(
                plugin_id="crm-sync",
                tenant="acme",
                settings={"counter": 0},
                changed_at=at(0),
                changed_by="setup",
            ),
            audit=event("crm-sync", "configure", tenant="acme"),
        )
    )
    threads, increments = 6, 15
    start = threading.Barrier(threads)

    def work(number: int) -> int:
        store = stores[number % 2]
        conflicts = done = 0
        start.wait()
        while done < increments:
            record = store.get_tenant("crm-sync", "acme")
            assert record is not None
            counter = record.settings["counter"]
            assert isinstance(counter, int)
            updated = attrs.evolve(
                record,
                settings={"counter": counter + 1},
                changed_by=f"w{number}",
                revision=record.revision + 1,
            )
            try:
                store.commit(
                    Change(
                        plugin_id="crm-sync",
                        plugin_revision=1,
                        tenant=updated,
                        audit=event("crm-sync", "increment", tenant="acme", actor=f"w{number}"),
                    )
                )
            except ConflictError:
                conflicts += 1
            else:
                done += 1
        return conflicts

    with ThreadPoolExecutor(threads) as pool:
        conflicts = sum(pool.map(work, range(threads)))
    total = threads * increments
    final = stores[1].get_tenant("crm-sync", "acme")
    assert final is not None
    assert final.settings == {"counter": total}
    assert final.revision == 1 + total
    assert conflicts > 0, "the writers never raced: the test is too gentle"
    assert len(stores[1].audit(AuditQuery(action="increment"))) == total
    assert stores[1].generation() == 2 + total


def test_metrics_batches_from_threads_add_up_without_deadlocks(
    storage: PostgresStorage,
) -> None:
    """Batches naming the same (plugin, hook) keys in different orders, from several threads at
    once, all apply (no deadlock between them) and add up."""
    hooks = [f"hook_{n}" for n in range(6)]
    threads, batches = 4, 25
    start = threading.Barrier(threads)

    def work(number: int) -> None:
        rng = random.Random(number)
        start.wait()
        for _ in range(batches):
            order = rng.sample(hooks, len(hooks))
            storage.record_metrics(
                [
                    MetricsDelta(
                        plugin_id="crm-sync",
                        hook=hook,
                        calls=1,
                        errors=number % 2,
                        total_duration=0.25,
                        max_duration=0.5 + number,
                        last_call=at(number),
                    )
                    for hook in order
                ]
            )

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    totals = storage.metrics("crm-sync")
    assert [m.hook for m in totals] == hooks
    for metrics in totals:
        assert metrics.calls == threads * batches
        assert metrics.errors == batches * 2
        assert metrics.total_duration == 0.25 * threads * batches
        assert metrics.max_duration == 0.5 + threads - 1
        assert metrics.last_call == at(threads - 1)
    assert storage.generation() == 0


def test_datetimes_come_back_as_the_same_instants_in_utc(
    opener: Callable[..., PostgresStorage], postgres_url: str
) -> None:
    """Datetimes in any offset come back as the same instant in UTC (timezone.utc), whatever
    the session's time zone, to the microsecond."""
    storage = opener(url=make_conninfo(postgres_url, options="-c TimeZone=Asia/Kathmandu"))
    india = timezone(timedelta(hours=5, minutes=30))
    moment = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=india)
    record = plugin(installed_at=moment, approved_at=moment + timedelta(microseconds=1))
    storage.commit(
        Change(plugin_id=record.id, plugin=record, audit=event(record.id, "i", when=moment))
    )
    stored = storage.get_plugin(record.id)
    assert stored is not None
    for got, wanted in [
        (stored.installed_at, moment),
        (stored.approved_at, moment + timedelta(microseconds=1)),
        (storage.audit(AuditQuery())[0].at, moment),
    ]:
        assert got == wanted
        assert got is not None
        assert got.tzinfo is timezone.utc
    assert storage.audit(AuditQuery(since=moment, until=moment + timedelta(microseconds=1)))
    assert not storage.audit(AuditQuery(since=moment + timedelta(microseconds=1)))


def _types(value: object) -> object:
    """The value with every leaf replaced by its type, to compare int/float/bool exactly."""
    if isinstance(value, dict):
        return {key: _types(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_types(item) for item in value]
    return type(value)


def test_json_numbers_keep_their_type(storage: PostgresStorage) -> None:
    """Floats come back floats (even 1e20 and 5e-324) and ints ints (even beyond 64 bits)."""
    settings: dict[str, Any] = {
        "big_float": 1e20,
        "huge_float": -1.5e300,
        "tiny_float": 5e-324,
        "whole_float": 1.0,
        "third": 1 / 3,
        "zero": 0.0,
        "big_int": 2**70,
        "negative": -7,
        "mixed": [1, 1.0, 1e16, 12345678901234567890, True, None, "ü 🚀"],
        "nested": {"x": [{"y": 2.5e-10}], "empty": {}, "none": []},
    }
    install(storage)
    record = TenantRecord(
        plugin_id="crm-sync", tenant="acme", settings=settings, changed_at=at(0), changed_by="a"
    )
    storage.commit(
        Change(
            plugin_id="crm-sync",
            plugin_revision=1,
            tenant=record,
            audit=event("crm-sync", "configure", after=settings),
        )
    )
    stored = storage.get_tenant("crm-sync", "acme")
    assert stored is not None
    assert stored.settings == settings
    assert _types(stored.settings) == _types(settings)
    after = storage.audit(AuditQuery())[0].after
    assert after == settings
    assert _types(after) == _types(settings)


def test_matches_memory_storage(storage: PostgresStorage) -> None:
    """A full lifecycle gives the same answers from PostgresStorage as from MemoryStorage."""
    expected = scenario(MemoryStorage())
    actual = scenario(storage)
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key] == value, key
