"""Question "postgres_list": listing the plugins active for a tenant on PostgreSQL.

SDK: ``PostgresStorage.enabled_plugins(tenant)`` (approved, enabled there, not
suspended there). Baseline: the same query on ``SQLiteStorage``. Both
registries hold 200 plugins and 1,000 tenants with 5 plugins each. A host asks
this once per tenant per snapshot, not per call.
"""

from __future__ import annotations

import atexit

from _harness import Contender, compare
from _postgres_bench import TENANT, postgres_storage, postgres_url, sqlite_storage


def main() -> None:
    postgres = postgres_storage(postgres_url())
    atexit.register(postgres.close)  # before the throwaway server stops (atexit runs last first)
    sqlite = sqlite_storage()
    assert postgres.enabled_plugins(TENANT) == sqlite.enabled_plugins(TENANT)
    compare(
        "postgres_list",
        sdk=Contender(
            "PostgresStorage.enabled_plugins",
            "one query over TCP",
            lambda: postgres.enabled_plugins(TENANT),
        ),
        baseline=Contender(
            "SQLiteStorage.enabled_plugins",
            "the same query in a local SQLite file",
            lambda: sqlite.enabled_plugins(TENANT),
        ),
    )


if __name__ == "__main__":
    main()
