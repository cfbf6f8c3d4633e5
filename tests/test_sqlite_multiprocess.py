"""Four OS processes drive one SQLite registry at once: nothing is lost, conflicts surface."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from services_ai_plugins import Manifest, Registry, SQLiteStorage

WORKER = Path(__file__).with_name("_registry_worker.py")
PROCESSES = 4
STEPS = 300

pytestmark = pytest.mark.slow


def test_concurrent_processes_lose_no_update(tmp_path: Path) -> None:
    """Audit events match the successful steps one to one; the file is intact."""
    db = tmp_path / "registry.db"
    go = tmp_path / "go"
    setup = Registry(SQLiteStorage(db))
    for plugin_id in ("alpha", "bravo", "charlie"):
        document = {
            "id": plugin_id,
            "name": plugin_id.title(),
            "version": "1.0",
            "settings": [{"name": "limit", "type": "integer", "default": 0}],
        }
        setup.install(Manifest.from_dict(document), actor="setup", code_hash="c" * 64)
        setup.approve(plugin_id, actor="setup")
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(db), str(go), str(n), str(STEPS), str(1000 + n)],
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
    # The last write of each setting is what is stored.
    last: dict[tuple[str, str], object] = {}
    for event in reversed(events):
        if event.action == "set settings" and event.tenant is not None and event.after:
            settings = event.after["settings"]
            assert isinstance(settings, dict)
            last[(event.plugin_id, event.tenant)] = settings["limit"]
    for (plugin_id, tenant), limit in last.items():
        record = setup.tenant(plugin_id, tenant)
        assert record is not None
        assert record.settings.get("limit") == limit
    setup.storage.close()
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
