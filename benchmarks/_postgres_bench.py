"""Set-up of the PostgreSQL questions: a server, and the same small registry on both backends.

The server is ``$SERVICES_AI_PLUGINS_PG_URL``, or a throwaway cluster that the
main process starts (tests/pg_cluster.py) and stops at exit; pyperf's worker
processes inherit its URL. Each backend holds 200 approved plugins and 1,000
tenants with 5 plugins enabled each, built once per machine (keyed by layout).
"""

from __future__ import annotations

import atexit
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from services_ai_plugins import Manifest, PostgresStorage, Registry, SQLiteStorage
from services_ai_plugins.storage import Storage

ROOT: Final = Path(__file__).resolve().parent.parent
URL_ENV: Final = "SERVICES_AI_PLUGINS_PG_URL"
PLUGINS: Final = 200
TENANTS: Final = 1_000
PER_TENANT: Final = 5
LAYOUT: Final = "v1"
SCHEMA: Final = f"bench_registry_{LAYOUT}"
#: The tenant whose plugins are listed.
TENANT: Final = "tenant-0424"


def plugin_id(number: int) -> str:
    return f"plugin-{number:03d}"


def tenant_id(number: int) -> str:
    return f"tenant-{number:04d}"


def postgres_url() -> str:
    """The server's URL; starts a throwaway cluster (stopped at exit) when none is given."""
    url = os.environ.get(URL_ENV)
    if url:
        return url
    sys.path.insert(0, str(ROOT / "tests"))
    import pg_cluster  # type: ignore[import-not-found]  # noqa: PLC0415 - the tests' helper, on sys.path only now

    folder = tempfile.mkdtemp(prefix="services-ai-plugins-bench-pg-")
    url = str(pg_cluster.start(folder))
    atexit.register(pg_cluster.stop, folder)
    os.environ[URL_ENV] = url
    sys.argv.append(f"--inherit-environ={URL_ENV}")  # pyperf's workers use the same server
    return url


def _fill(storage: Storage) -> None:
    registry = Registry(storage)
    for number in range(PLUGINS):
        manifest = Manifest.from_dict(
            {"id": plugin_id(number), "name": f"Plugin {number}", "version": "1.0.0"}
        )
        registry.install(manifest, actor="bench", code_hash="0" * 64)
        registry.approve(manifest.id, actor="bench")
    for number in range(TENANTS):
        for offset in range(PER_TENANT):
            plugin = plugin_id((number * 7 + offset * 31) % PLUGINS)
            registry.enable(plugin, tenant_id(number), actor="bench")


def sqlite_storage() -> SQLiteStorage:
    """The SQLite registry (a file in the temporary folder, built on first use)."""
    path = Path(tempfile.gettempdir()) / f"services-ai-plugins-bench-pg-compare-{LAYOUT}.db"
    if not path.exists():
        building = path.with_suffix(".building")
        building.unlink(missing_ok=True)
        storage = SQLiteStorage(building)
        _fill(storage)
        storage.close()
        building.rename(path)
    return SQLiteStorage(path)


def postgres_storage(url: str) -> PostgresStorage:
    """The PostgreSQL registry (its own schema, built on first use)."""
    storage = PostgresStorage(url, schema=SCHEMA, max_size=2)
    if not storage.list_plugins():
        _fill(storage)
    return storage


def toggle(registry: Registry, tenant: str) -> Any:
    """One enable and one disable of a plugin for ``tenant``: two audited transitions."""
    registry.enable(plugin_id(123), tenant, actor="bench")
    return registry.disable(plugin_id(123), tenant, actor="bench")


def fresh_schema(url: str, name: str) -> str:
    """``name``, dropped first if an earlier run left it."""
    import psycopg  # noqa: PLC0415 - the postgres extra

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    return name
