"""A worker process for the multiprocess tests: random registry steps on a shared storage.

Usage: python _registry_worker.py DB GO_FILE WORKER_NUMBER STEPS SEED [SCHEMA]
DB is an SQLite file, or a PostgreSQL URL (``postgresql://...``) whose tables are in SCHEMA.
Prints one JSON document: the actors of the steps that wrote, and counts.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from services_ai_plugins import (
    ConflictError,
    Manifest,
    PluginNotFound,
    PostgresStorage,
    Registry,
    SQLiteStorage,
    TransitionError,
    VersionError,
)
from services_ai_plugins.storage import Storage

PLUGINS = ("alpha", "bravo", "charlie")
TENANTS = ("t0", "t1", "t2", "t3")


def manifest(plugin_id: str, version: str) -> Manifest:
    return Manifest.from_dict(
        {
            "id": plugin_id,
            "name": plugin_id.title(),
            "version": version,
            "settings": [{"name": "limit", "type": "integer", "default": 0}],
        }
    )


def open_storage(db: str, schema: str | None) -> Storage:
    if db.startswith(("postgresql:", "postgres:")):
        return PostgresStorage(db, schema=schema or "services_ai_plugins", max_size=2)
    return SQLiteStorage(db, timeout=30)


def main() -> None:
    db, go, number, steps, seed = sys.argv[1:6]
    schema = sys.argv[6] if len(sys.argv) > 6 else None
    rng = random.Random(int(seed))
    registry = Registry(open_storage(db, schema))
    while not Path(go).exists():
        time.sleep(0.001)
    wrote: list[str] = []
    conflicts = refused = 0
    for step in range(int(steps)):
        actor = f"w{number}-{step}"
        plugin_id = rng.choice(PLUGINS)
        tenant = rng.choice(TENANTS)
        kind = rng.choice(
            [
                "settings",
                "settings",
                "enable",
                "disable",
                "suspend",
                "resume",
                "reinstall",
                "approve",
            ]
        )
        try:
            if kind == "settings":
                registry.set_settings(
                    plugin_id, tenant, {"limit": int(number) * 100_000 + step}, actor=actor
                )
                wrote.append(actor)
            elif kind in ("enable", "disable"):
                step_fn = registry.enable if kind == "enable" else registry.disable
                record = step_fn(plugin_id, tenant, actor=actor)
                # A step that changed nothing returns the record as it was (0: never stored).
                if record.revision > 0 and record.changed_by == actor:
                    wrote.append(actor)
            elif kind == "suspend":
                registry.suspend(plugin_id, actor=actor, reason="test")
                wrote.append(actor)
            elif kind == "resume":
                registry.resume(plugin_id, actor=actor)
                wrote.append(actor)
            elif kind == "reinstall":
                version = f"1.{number}.{step}"
                registry.install(
                    manifest(plugin_id, version), actor=actor, code_hash="c" * 64, reinstall=True
                )
                wrote.append(actor)
            else:
                registry.approve(plugin_id, actor=actor)
                wrote.append(actor)
        except ConflictError:
            conflicts += 1
        except (TransitionError, PluginNotFound, VersionError):
            refused += 1
    registry.storage.close()
    print(json.dumps({"wrote": wrote, "conflicts": conflicts, "refused": refused}))  # noqa: T201 - the report to the parent process


if __name__ == "__main__":
    main()
