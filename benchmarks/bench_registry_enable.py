"""Question "registry_enable": one enable transition with its audit event, on SQLite.

SDK: ``Registry.enable`` then ``Registry.disable`` for one (plugin, tenant) of
the shared database (1,000 plugins, 10,000 tenants): each is a checked,
audited transaction. Baseline: the same two transitions written by hand on a
bare ``sqlite3`` connection: in one ``BEGIN IMMEDIATE`` transaction each, read
the plugin's status, read the tenant row, write it, insert the audit event and
move the change counter. Target: at most 2x.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone

from _harness import Contender, compare
from _registry_db import database, plugin_id
from services_ai_plugins import Registry, SQLiteStorage

PLUGIN = plugin_id(123)
SDK_TENANT = "bench-sdk"
BARE_TENANT = "bench-bare"


def bare_transition(connection: sqlite3.Connection, enabled: bool) -> None:
    now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    connection.execute("BEGIN IMMEDIATE")
    try:
        status, _ = connection.execute(
            "SELECT status, revision FROM plugins WHERE id = ?", (PLUGIN,)
        ).fetchone()
        if enabled and status != "approved":
            raise RuntimeError("not approved")
        row = connection.execute(
            "SELECT enabled, revision FROM plugin_tenants WHERE plugin_id = ? AND tenant = ?",
            (PLUGIN, BARE_TENANT),
        ).fetchone()
        revision = row[1] + 1 if row else 1
        connection.execute(
            "INSERT INTO plugin_tenants (plugin_id, tenant, enabled, optional_grants, settings,"
            " changed_at, changed_by, revision) VALUES (?, ?, ?, '[]', '{}', ?, 'bench', ?)"
            " ON CONFLICT (plugin_id, tenant) DO UPDATE SET enabled = excluded.enabled,"
            " changed_at = excluded.changed_at, revision = excluded.revision",
            (PLUGIN, BARE_TENANT, int(enabled), now, revision),
        )
        connection.execute(
            "INSERT INTO audit_events (at, actor, action, plugin_id, tenant, before_json,"
            " after_json) VALUES (?, 'bench', ?, ?, ?, ?, ?)",
            (
                now,
                "enable" if enabled else "disable",
                PLUGIN,
                BARE_TENANT,
                json.dumps({"enabled": not enabled}),
                json.dumps({"enabled": enabled}),
            ),
        )
        connection.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def main() -> None:
    path = database()
    registry = Registry(SQLiteStorage(path))
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA busy_timeout = 10000")

    def sdk() -> None:
        registry.enable(PLUGIN, SDK_TENANT, actor="bench")
        registry.disable(PLUGIN, SDK_TENANT, actor="bench")

    def bare() -> None:
        bare_transition(connection, True)
        bare_transition(connection, False)

    compare(
        "registry_enable",
        sdk=Contender("Registry.enable+disable", "two audited transitions via SQLiteStorage", sdk),
        baseline=Contender(
            "sqlite3 by hand", "the same two transactions on a bare connection", bare
        ),
    )


if __name__ == "__main__":
    main()
