"""A shared SQLite registry for the registry benchmarks: 1,000 plugins, 10,000 tenants.

Built once per machine (keyed by this layout's version) in the temporary folder
and reused by every pyperf worker; building it takes a few seconds.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Final

from services_ai_plugins import Manifest, Registry, SQLiteStorage

PLUGINS: Final = 1_000
TENANTS: Final = 10_000
#: How many plugins each tenant has enabled (so 50,000 activations in all).
PER_TENANT: Final = 5
LAYOUT: Final = "v1"

#: The tenant whose plugins are listed.
TENANT: Final = "tenant-04242"


def plugin_id(number: int) -> str:
    return f"plugin-{number:04d}"


def tenant_id(number: int) -> str:
    return f"tenant-{number:05d}"


def _manifest(number: int) -> Manifest:
    return Manifest.from_dict(
        {
            "id": plugin_id(number),
            "name": f"Plugin {number}",
            "version": "1.0.0",
            "permissions": ["read_leads", "send_notifications"],
            "settings": [
                {"name": "threshold", "type": "integer", "default": 10, "min": 0},
                {"name": "channel", "type": "choice", "choices": ["email", "sms"]},
            ],
        }
    )


def database() -> Path:
    """The benchmark database, built on first use."""
    path = Path(tempfile.gettempdir()) / f"services-ai-plugins-bench-registry-{LAYOUT}.db"
    if path.exists():
        return path
    building = path.with_name(f"{path.name}.{os.getpid()}.building")
    registry = Registry(SQLiteStorage(building))
    for number in range(PLUGINS):
        registry.install(_manifest(number), actor="bench", code_hash="b" * 64)
        registry.approve(plugin_id(number), actor="bench")
    registry.storage.close()
    now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    rows = [
        (plugin_id((t * 7 + k * 211) % PLUGINS), tenant_id(t), 1, "[]", "{}", now, "bench", 1)
        for t in range(TENANTS)
        for k in range(PER_TENANT)
    ]
    with sqlite3.connect(building) as connection:
        connection.executemany(
            "INSERT INTO plugin_tenants (plugin_id, tenant, enabled, optional_grants, settings,"
            " changed_at, changed_by, revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    connection.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{building}{suffix}").unlink(missing_ok=True)
    building.replace(path)
    return path


def describe() -> str:
    return json.dumps({"plugins": PLUGINS, "tenants": TENANTS, "activations": TENANTS * PER_TENANT})
