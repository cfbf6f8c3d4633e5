"""The data-access log end to end on PostgreSQL (issue 22): a sandboxed plugin reads leads through
a real host over ``PostgresStorage``; after the flush, ``Registry.access_log`` over another
connection and the CLI's ``access --db postgresql://...`` show exactly those calls.

Needs a PostgreSQL server: ``$SERVICES_AI_PLUGINS_PG_URL``, else a throwaway one; skipped,
saying why, when neither can be had (a failure in CI), as every PostgreSQL test.
"""

from __future__ import annotations

import io
import json
import os
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Installer
from services_ai_plugins import PluginHost, Registry, SandboxPolicy
from services_ai_plugins._cli._main import EXIT_OK, main
from services_ai_plugins.events import Context
from services_ai_plugins_testing.fakes import FakeHostServices

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

HEADER = "from services_ai_plugins import hookimpl\n\n\nclass Plugin:\n"


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """A ``postgresql://`` URL of a new, empty database on the test server, dropped after."""
    import psycopg

    name = f"saip_access_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    parts = urllib.parse.urlsplit(postgres_url)
    yield urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def cli(url: str, plugins: Path, *args: str) -> tuple[int, Any]:
    """Run ``access ... --json --db URL`` in process: (exit code, its rows)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["access", *args, "--json", "--db", url, "--plugins-dir", str(plugins)],
        stdout=out,
        stderr=err,
    )
    assert err.getvalue() == ""
    return code, json.loads(out.getvalue())["access"]


def test_a_sandboxed_plugins_reads_are_in_the_postgresql_log(
    database_url: str, tmp_path: Path
) -> None:
    from services_ai_plugins import PostgresStorage

    services = FakeHostServices()
    plugins = tmp_path / "plugins"
    host = PluginHost(
        services,
        storage=PostgresStorage(database_url, max_size=2),
        plugins_dir=plugins,
        entry_points=False,
        sandbox=SandboxPolicy(timeout=30.0, start_timeout=60.0),
        flush_interval=3600,
    )
    try:
        Installer(tmp_path / "src", HEADER)(
            host,
            "reader",
            """
            @hookimpl
            def lead_created(self, lead, api):
                api.get_lead(lead.id)
                api.list_leads(limit=5)
                api.get_lead("lead-of-someone-else")
            """,
        )
        older = services.make_lead("acme", name="Bob")
        lead = services.make_lead("acme", name="Ada")
        host.hook.lead_created(lead=lead, context=Context(tenant="acme"))
        assert hasattr(host.plugins()["reader"], "pid")  # it ran in a worker
        host.flush()
    finally:
        host.close()

    expected = [
        ("get_lead", "lead", ["lead-of-someone-else"], 0),
        ("list_leads", "lead", sorted([lead.id, older.id]), 2),
        ("get_lead", "lead", [lead.id], 1),
    ]
    storage = PostgresStorage(database_url, max_size=1)
    try:
        records = Registry(storage).access_log(plugin_id="reader", tenant="acme")
    finally:
        storage.close()
    assert [(r.method, r.record_type, sorted(r.record_ids), r.count) for r in records] == expected
    assert {(r.plugin_id, r.tenant, r.permission) for r in records} == {
        ("reader", "acme", "read_leads")
    }

    code, rows = cli(database_url, plugins, "--plugin", "reader", "--tenant", "acme")
    assert code == EXIT_OK
    assert [
        (r["method"], r["record_type"], sorted(r["record_ids"]), r["count"]) for r in rows
    ] == expected
    code, rows = cli(database_url, plugins, "--record", "lead-of-someone-else")
    assert (code, [(r["plugin_id"], r["method"]) for r in rows]) == (
        EXIT_OK,
        [("reader", "get_lead")],
    )
    assert cli(database_url, plugins, "--tenant", "globex") == (EXIT_OK, [])
