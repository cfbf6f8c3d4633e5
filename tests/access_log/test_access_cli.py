"""The ``access`` command: an admin reads what a plugin touched, from the registry a host wrote."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from conftest import CliRunner, Installer
from services_ai_plugins import PluginHost, SandboxPolicy
from services_ai_plugins._cli._main import EXIT_OK, EXIT_USAGE
from services_ai_plugins.events import Context
from services_ai_plugins.storage import AccessRecord, SQLiteStorage
from services_ai_plugins_testing.fakes import FakeHostServices

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

HEADER = "from services_ai_plugins import hookimpl\n\n\nclass Plugin:\n"


@pytest.fixture
def cli(tmp_path: Path) -> CliRunner:
    return CliRunner(tmp_path / "site")


@pytest.fixture
def recorded(cli: CliRunner, tmp_path: Path) -> dict[str, Any]:
    """A sandboxed plugin read a lead of acme through a real host on the CLI's registry, and
    one record of two weeks ago is there too."""
    cli.root.mkdir()
    (tmp_path / "src").mkdir()
    services = FakeHostServices()
    storage = SQLiteStorage(cli.db)
    host = PluginHost(
        services,
        storage=storage,
        plugins_dir=cli.plugins,
        entry_points=False,
        sandbox=SandboxPolicy(timeout=30.0, start_timeout=60.0),
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
            """,
            tenants=("acme", "globex"),
        )
        old = services.make_lead("acme", name="Old")
        lead = services.make_lead("acme", name="Ada")
        host.hook.lead_created(lead=lead, context=Context(tenant="acme"))
        assert hasattr(host.plugins()["reader"], "pid")  # it ran in a worker
    finally:
        host.close()  # flushes the access log
    storage = SQLiteStorage(cli.db)
    try:
        storage.record_access(
            [
                AccessRecord(
                    plugin_id="reader",
                    tenant="acme",
                    method="get_lead",
                    permission="read_leads",
                    record_type="lead",
                    record_ids=[old.id],
                    count=1,
                    at=datetime.now(timezone.utc) - timedelta(days=14),
                )
            ]
        )
    finally:
        storage.close()
    return {"lead": lead.id, "old": old.id}


def test_access_as_json_answers_what_a_plugin_touched_last_week(
    cli: CliRunner, recorded: dict[str, Any]
) -> None:
    code, out, err = cli(
        "access", "--plugin", "reader", "--tenant", "acme", "--since", "7d", "--json"
    )
    assert (code, err) == (EXIT_OK, "")
    rows = json.loads(out)["access"]
    assert [(r["method"], r["permission"], r["record_type"]) for r in rows] == [
        ("list_leads", "read_leads", "lead"),
        ("get_lead", "read_leads", "lead"),
    ]
    assert rows[1]["record_ids"] == [recorded["lead"]]
    assert set(rows[0]["record_ids"]) == {recorded["lead"], recorded["old"]}
    assert rows[0]["count"] == 2
    assert {r["plugin_id"] for r in rows} == {"reader"}
    assert {r["tenant"] for r in rows} == {"acme"}


def test_access_filters_and_text_output(cli: CliRunner, recorded: dict[str, Any]) -> None:
    code, out, _ = cli("access", "--record", recorded["old"], "--method", "get_lead")
    assert code == EXIT_OK
    lines = out.splitlines()
    assert len(lines) == 1  # the two-week-old read only
    assert f"reader [acme] get_lead (read_leads) lead {recorded['old']}" in lines[0]
    code, out, _ = cli("access", "--tenant", "globex")
    assert (code, out.strip()) == (EXIT_OK, "no data access")
    code, out, _ = cli("access", "--plugin", "reader", "--json")
    assert len(json.loads(out)["access"]) == 3
    code, out, _ = cli("access", "--plugin", "reader", "--limit", "1", "--json")
    assert [r["method"] for r in json.loads(out)["access"]] == ["list_leads"]
    until = (datetime.now(timezone.utc) - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%S")
    code, out, _ = cli("access", "--until", until, "--json")
    assert [r["record_ids"] for r in json.loads(out)["access"]] == [[recorded["old"]]]


def test_a_bad_moment_is_a_usage_error_that_says_what_it_takes(cli: CliRunner) -> None:
    code, _, err = cli("access", "--since", "last tuesday")
    assert code == EXIT_USAGE
    assert "ISO 8601" in err
    assert "7d" in err
