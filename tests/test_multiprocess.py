"""Four OS processes drive one registry at once, on SQLite and on PostgreSQL: nothing is lost,
conflicts surface, and the final state is the one the audit trail describes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services_ai_plugins import Manifest, Registry, SQLiteStorage
from services_ai_plugins.storage import Storage

WORKER = Path(__file__).with_name("_registry_worker.py")
PROCESSES = 4
STEPS = 300
PLUGINS = ("alpha", "bravo", "charlie")

pytestmark = pytest.mark.slow

#: How to open the shared storage here, and what the workers are told to open.
Target = tuple[Callable[[], Storage], list[str]]


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "sqlite":
        db = tmp_path / "registry.db"
        yield (lambda: SQLiteStorage(db)), [str(db)]
        with sqlite3.connect(db) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return
    psycopg = pytest.importorskip("psycopg")
    from services_ai_plugins import PostgresStorage

    url: str = request.getfixturevalue("postgres_url")
    schema = f"multiprocess_{uuid.uuid4().hex[:16]}"
    yield (lambda: PostgresStorage(url, schema=schema)), [url, schema]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                psycopg.sql.Identifier(schema)
            )
        )


def test_concurrent_processes_lose_no_update(target: Target, tmp_path: Path) -> None:
    """Audit events match the successful steps one to one, conflicts are raised, and every
    plugin's status, tenant activation and settings are what its newest audit events say."""
    open_storage, where = target
    go = tmp_path / "go"
    setup = Registry(open_storage())
    for plugin_id in PLUGINS:
        document = {
            "id": plugin_id,
            "name": plugin_id.title(),
            "version": "1.0",
            "settings": [{"name": "limit", "type": "integer", "default": 0}],
        }
        setup.install(Manifest.from_dict(document), actor="setup", code_hash="c" * 64)
        setup.approve(plugin_id, actor="setup")
    database, *schema = where
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                database,
                str(go),
                str(n),
                str(STEPS),
                str(1000 + n),
                *schema,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    go.touch()
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        reports.append(json.loads(out))

    wrote = [actor for report in reports for actor in report["wrote"]]
    conflicts = sum(report["conflicts"] for report in reports)
    events = setup.audit_log(limit=1_000_000)
    actors = Counter(event.actor for event in events if event.actor != "setup")
    # No lost update: every step that reported a write has exactly one audit event,
    # and no event exists for a step that did not report one.
    assert actors == Counter(wrote)
    assert setup.storage.generation() == len(events) == len(wrote) + 6
    # Conflicts were surfaced as ConflictError (the workers count them), not hidden.
    assert conflicts > 0, "four processes on three plugins never raced: the test is too gentle"

    # The stored state is what the newest audit events say (events are newest first).
    status: dict[str, object] = {}
    enabled: dict[tuple[str, str], object] = {}
    limits: dict[tuple[str, str], object] = {}
    for event in events:
        after = event.after or {}
        if event.tenant is None and "status" in after:
            status.setdefault(event.plugin_id, after["status"])
        if event.tenant is not None and "enabled" in after:
            enabled.setdefault((event.plugin_id, event.tenant), after["enabled"])
        if event.action == "set settings" and event.tenant is not None:
            settings = after["settings"]
            assert isinstance(settings, dict)
            limits.setdefault((event.plugin_id, event.tenant), settings["limit"])
    for plugin_id in PLUGINS:
        record = setup.storage.get_plugin(plugin_id)
        assert record is not None
        assert record.status.value == status[plugin_id], plugin_id
        installs = [
            e
            for e in events
            if e.plugin_id == plugin_id and e.action in ("install", "reinstall", "stage")
        ]
        assert len(setup.storage.versions(plugin_id)) == len(installs)
    for (plugin_id, tenant), flag in enabled.items():
        tenant_record = setup.tenant(plugin_id, tenant)
        assert tenant_record is not None
        assert tenant_record.enabled == flag, (plugin_id, tenant)
    for (plugin_id, tenant), limit in limits.items():
        tenant_record = setup.tenant(plugin_id, tenant)
        assert tenant_record is not None
        assert tenant_record.settings.get("limit") == limit, (plugin_id, tenant)
    setup.storage.close()
