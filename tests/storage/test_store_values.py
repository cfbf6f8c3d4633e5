"""The SDK's plugin stores on SQLite and PostgreSQL: existing databases migrate, and processes
racing to fill one store never take it past its quota."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from services_ai_plugins._storage._postgres._storage import PostgresStorage
from services_ai_plugins._storage._sqlite import SQLiteStorage
from services_ai_plugins.storage import Storage, StoreUsage

#: Processes racing, new keys each tries to write, and the store's key limit.
RACERS, WRITES, LIMIT = 4, 10, 15

RACER = textwrap.dedent(
    """
    import os, sys, time
    from services_ai_plugins.errors import QuotaExceeded

    kind, where, schema, start, number = sys.argv[1:]
    if kind == "sqlite":
        from services_ai_plugins import SQLiteStorage
        storage = SQLiteStorage(where, timeout=60)
    else:
        from services_ai_plugins import PostgresStorage
        storage = PostgresStorage(where, schema=schema, timeout=60)
    print("ready", flush=True)
    while not os.path.exists(start):
        time.sleep(0.001)
    kept = 0
    for index in range(%(writes)d):
        try:
            storage.store_write("racer", "acme", f"p{number}-{index}", "v" * 10, max_keys=%(limit)d)
        except QuotaExceeded:
            continue
        kept += 1
    storage.close()
    print(kept, flush=True)
    """
) % {"writes": WRITES, "limit": LIMIT}


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A schema of the test's own on the test server, dropped afterwards."""
    from psycopg import connect, sql

    schema = f"store_{uuid.uuid4().hex[:16]}"
    yield schema
    with connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _race(kind: str, where: str, schema: str, tmp_path: Path) -> list[int]:
    """Start the racers, let them go at once, and return how many writes each kept."""
    start = tmp_path / "start"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, kind, where, schema, str(start), str(number)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for number in range(RACERS)
    ]
    try:
        for racer in racers:
            assert racer.stdout is not None
            assert racer.stdout.readline().strip() == "ready", racer.stderr
        start.touch()
        kept = []
        for racer in racers:
            out, err = racer.communicate(timeout=180)
            assert racer.returncode == 0, err
            kept.append(int(out.split()[-1]))
        return kept
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.wait()


def _expect_exactly_the_limit(storage: Storage, kept: list[int]) -> None:
    assert sum(kept) == LIMIT
    values = [
        storage.store_read("racer", "acme", f"p{number}-{index}")
        for number in range(RACERS)
        for index in range(WRITES)
    ]
    assert sum(value is not None for value in values) == LIMIT
    size = len("p0-0") + len('"vvvvvvvvvv"')
    assert storage.store_usage("racer", "acme") == StoreUsage(keys=LIMIT, bytes=LIMIT * size)


def test_processes_racing_on_sqlite_never_pass_the_quota(tmp_path: Path) -> None:
    """Four processes writing new keys of one store in one SQLite file at once: exactly as many
    values are kept, and charged, as the key limit allows."""
    path = tmp_path / "registry.db"
    SQLiteStorage(path).close()  # migrated before the race
    kept = _race("sqlite", str(path), "", tmp_path)
    storage = SQLiteStorage(path)
    try:
        _expect_exactly_the_limit(storage, kept)
    finally:
        storage.close()


def test_processes_racing_on_postgres_never_pass_the_quota(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    """The same race on PostgreSQL: each write locks its store's totals row first."""
    PostgresStorage(postgres_url, schema=pg_schema).close()
    kept = _race("postgres", postgres_url, pg_schema, tmp_path)
    storage = PostgresStorage(postgres_url, schema=pg_schema)
    try:
        _expect_exactly_the_limit(storage, kept)
    finally:
        storage.close()


def test_a_sqlite_database_of_the_previous_schema_migrates(tmp_path: Path) -> None:
    """A database file made before the SDK kept stores (schema 3) gets the store_values table
    on opening; its ledger charges stay, and the SDK's store works."""
    path = tmp_path / "registry.db"
    storage = SQLiteStorage(path)
    storage.charge_store("crm-sync", "acme", "hosts-own", 9)
    storage.close()
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DROP TABLE store_values")
        conn.execute("DELETE FROM schema_migrations WHERE version = 4")
    storage = SQLiteStorage(path)
    try:
        assert storage.store_usage("crm-sync", "acme") == StoreUsage(keys=1, bytes=9)
        storage.store_write("crm-sync", "acme", "k", [1])
        assert storage.store_read("crm-sync", "acme", "k") == [1]
        assert storage.store_usage("crm-sync", "acme") == StoreUsage(keys=2, bytes=9 + 1 + 3)
    finally:
        storage.close()
    with closing(sqlite3.connect(path)) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == [1, 2, 3, 4, 5, 6]


def test_a_postgres_schema_of_the_previous_version_migrates(
    postgres_url: str, pg_schema: str
) -> None:
    """A schema made before the SDK kept stores (version 2) gets store_values on opening."""
    from psycopg import connect, sql

    storage = PostgresStorage(postgres_url, schema=pg_schema)
    storage.charge_store("crm-sync", "acme", "hosts-own", 9)
    storage.close()
    with connect(postgres_url, autocommit=True) as conn:
        name = sql.Identifier(pg_schema)
        conn.execute(sql.SQL("DROP TABLE {}.store_values").format(name))
        conn.execute(sql.SQL("DELETE FROM {}.schema_migrations WHERE version = 3").format(name))
    storage = PostgresStorage(postgres_url, schema=pg_schema)
    try:
        assert storage.store_usage("crm-sync", "acme") == StoreUsage(keys=1, bytes=9)
        storage.store_write("crm-sync", "acme", "k", {"a": "ü"})
        assert storage.store_read("crm-sync", "acme", "k") == {"a": "ü"}
    finally:
        storage.close()
