"""Question "registry_list": the plugins enabled for one tenant, on SQLite.

SDK: ``Registry.enabled_plugins(tenant)`` over ``SQLiteStorage`` (1,000 plugins,
10,000 tenants, 50,000 activations). Baseline: the same query on a bare
``sqlite3`` connection to the same file, rows turned into a list of ids.
Target: at most 1.5x.
"""

from __future__ import annotations

import sqlite3

from _harness import Contender, compare
from _registry_db import TENANT, database
from services_ai_plugins import Registry, SQLiteStorage

QUERY = """
SELECT t.plugin_id FROM plugin_tenants AS t JOIN plugins AS p ON p.id = t.plugin_id
WHERE t.tenant = ? AND t.enabled = 1 AND p.status = 'approved' ORDER BY t.plugin_id
"""


def main() -> None:
    path = database()
    registry = Registry(SQLiteStorage(path))
    connection = sqlite3.connect(path, isolation_level=None)
    expected = [row[0] for row in connection.execute(QUERY, (TENANT,))]
    assert registry.enabled_plugins(TENANT) == expected, "the two sides disagree"

    def bare() -> list[str]:
        return [str(row[0]) for row in connection.execute(QUERY, (TENANT,)).fetchall()]

    compare(
        "registry_list",
        sdk=Contender(
            "Registry.enabled_plugins",
            "approved and enabled plugins of one tenant, via SQLiteStorage",
            lambda: registry.enabled_plugins(TENANT),
        ),
        baseline=Contender("sqlite3 query", "the same join on a bare connection", bare),
    )


if __name__ == "__main__":
    main()
