"""Question "postgres_enable": enabling (and disabling) a plugin for a tenant on PostgreSQL.

SDK: ``Registry.enable`` then ``Registry.disable`` on ``PostgresStorage`` (a
local server over TCP on 127.0.0.1). Baseline: the same two transitions on
``SQLiteStorage`` (WAL, one machine). Both registries hold 200 plugins and
1,000 tenants. The ratio is the price of a registry many machines share.
"""

from __future__ import annotations

import atexit

from _harness import Contender, compare
from _postgres_bench import postgres_storage, postgres_url, sqlite_storage, toggle
from services_ai_plugins import Registry


def main() -> None:
    storage = postgres_storage(postgres_url())
    atexit.register(storage.close)  # before the throwaway server stops (atexit runs last first)
    postgres = Registry(storage)
    sqlite = Registry(sqlite_storage())
    compare(
        "postgres_enable",
        sdk=Contender(
            "PostgresStorage enable+disable",
            "two checked, audited transactions over TCP",
            lambda: toggle(postgres, "bench-pg"),
        ),
        baseline=Contender(
            "SQLiteStorage enable+disable",
            "the same two transitions in a local SQLite file",
            lambda: toggle(sqlite, "bench-sqlite"),
        ),
    )


if __name__ == "__main__":
    main()
