"""One PluginHost in a process of its own, on a shared registry (run by test_two_processes.py).

    _host_process.py <sqlite path | postgres url> <schema or -> <plugins_dir> install <zip>
    _host_process.py <sqlite path | postgres url> <schema or -> <plugins_dir> serve

``install`` installs the ZIP, approves it, enables it for acme, calls the dashboard once
and prints the titles it got (one JSON line). ``serve`` answers each ``call`` line read from
stdin with the widgets it gets then (``[[title, html], ...]``), until ``quit``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from artifact_kit import recorded_artifact

from services_ai_plugins import PluginHost, SandboxPolicy
from services_ai_plugins.events import Context
from services_ai_plugins.storage import PostgresStorage, SQLiteStorage, Storage
from services_ai_plugins_testing.fakes import FakeHostServices

ACME = Context(tenant="acme")


def main() -> None:
    database, schema, plugins, mode, *rest = sys.argv[1:]
    storage: Storage
    if database.startswith("postgresql://"):
        storage = PostgresStorage(database, schema=schema, max_size=2)
    else:
        storage = SQLiteStorage(database)
    host = PluginHost(
        FakeHostServices(),
        storage=storage,
        plugins_dir=plugins,
        entry_points=False,
        sandbox=SandboxPolicy(timeout=20.0),
        refresh_interval=0,
    )
    try:
        if mode == "install":
            archive = Path(rest[0])
            record = host.install(archive, actor="ops")
            recorded_artifact(host.registry, record.id, archive.read_bytes())
            host.registry.approve(record.id, actor="admin")
            host.registry.enable(record.id, "acme", actor="admin")
            print(json.dumps(widgets(host)), flush=True)  # noqa: T201 - the parent reads it
        else:
            for line in sys.stdin:
                if line.strip() == "quit":
                    break
                print(json.dumps(widgets(host)), flush=True)  # noqa: T201 - as above
    finally:
        host.close()


def widgets(host: PluginHost) -> list[list[str]]:
    return [[w.title, w.html] for w in host.hook.dashboard_widget(context=ACME)]


if __name__ == "__main__":
    main()
