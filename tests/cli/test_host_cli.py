"""The host commands: call, failures, metrics, suspend, resume, resolve."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from conftest import CliRunner, plugin_folder
from services_ai_plugins._api import HostServices
from services_ai_plugins._cli._host import NoHostServices, _CommandLineServices
from services_ai_plugins._cli._main import EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from services_ai_plugins._examples import example
from services_ai_plugins._payload_codec import to_wire
from services_ai_plugins._registry import Registry
from services_ai_plugins._storage._sqlite import SQLiteStorage
from services_ai_plugins.events import ApiRequest, Email, Invoice, Lead

GREETER = """\
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead, api, settings):
        api.store_set("seen", lead.id)
        greeting = api.get_setting("greeting")
        assert greeting == settings["greeting"]
        return f"{greeting} {lead.name} of {lead.tenant} ({api.store_get('seen')})"
"""

CRASHER = """\
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead):
        raise RuntimeError(f"boom: {lead.id}")
"""

READER = """\
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead, api):
        return api.get_lead(lead.id)
"""

ROUTER = """\
from services_ai_plugins import hookimpl
from services_ai_plugins.events import ApiResponse, Route


class Plugin:
    def hello(self, request):
        return ApiResponse.json(request.tenant, {"hello": True})

    @hookimpl
    def register_routes(self, plugin_id):
        return [Route(path="/hello", handler=self.hello, name=plugin_id)]
"""

PRINTER = """\
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead):
        print("a plugin talking on standard output")
        return lead.company
"""


class Cli(CliRunner):
    """Runs the CLI in-process against one database and plugins folder."""

    def json(self, *args: str | Path, code: int = EXIT_OK) -> Any:
        got, out, err = self(*args, "--json")
        assert got == code, (out, err)
        return json.loads(out)

    def deploy(
        self,
        plugin_id: str,
        source: str,
        *,
        permissions: Sequence[str] = ("read_leads",),
        tenants: Sequence[str] = ("acme",),
    ) -> None:
        """Write, install, approve and enable a plugin whose main.py is ``source``."""
        greeting = {"name": "greeting", "type": "string", "default": "Hello"}
        folder = plugin_folder(
            self.root, plugin_id, source, permissions=permissions, settings=[greeting]
        )
        for step in (("install", folder), ("approve", plugin_id)):
            code, _, err = self(*step)
            assert code == EXIT_OK, err
        for tenant in tenants:
            code, _, err = self("enable", plugin_id, "--tenant", tenant)
            assert code == EXIT_OK, err


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture
def deployed(cli: Cli) -> Cli:
    """greeter (works) and crasher (always raises), both enabled for acme."""
    cli.deploy("greeter", GREETER)
    cli.deploy("crasher", CRASHER)
    return cli


def outcome_lines(out: str) -> dict[str, str]:
    """The outcome lines of one call's output, by plugin id."""
    lines = [line.split() for line in out.splitlines() if line.startswith("  ")]
    return {words[1]: " ".join(words) for words in lines if words[0] in ("ok", "failed")}


def lead_data(**changes: Any) -> str:
    return json.dumps({"lead": {**to_wire(example(Lead)), **changes}})


# -- call ----------------------------------------------------------------------------------------


def test_call_with_samples_shows_each_plugins_outcome(deployed: Cli) -> None:
    """--sample fires the hook with the example lead; a raising plugin is a failure, exit 1."""
    code, out, err = deployed("call", "lead_created", "--tenant", "acme", "--sample")
    assert code == EXIT_REFUSED
    assert out.splitlines()[0] == "called lead_created for tenant acme: 2 plugins ran, 1 failed"
    lines = outcome_lines(out)
    assert lines["greeter"].startswith("ok greeter")
    assert lines["greeter"].endswith('returned "Hello Hank Scorpio of acme (lead-2041)"')
    assert lines["crasher"].startswith("failed crasher")
    assert lines["crasher"].endswith("RuntimeError: boom: lead-2041")
    assert "Traceback" not in err
    assert "Traceback" not in out


def test_call_as_json_has_each_outcome(deployed: Cli) -> None:
    """--json prints one document: hook, tenant, result, and each plugin's part in the call."""
    document = deployed.json("call", "lead_created", "--tenant", "acme", "--sample", code=1)
    assert (document["ok"], document["hook"], document["tenant"]) == (False, "lead_created", "acme")
    assert document["result"] is None  # lead_created is a NOTIFY hook
    outcomes = {o["plugin_id"]: o for o in document["outcomes"]}
    assert outcomes["greeter"]["ok"] is True
    assert outcomes["greeter"]["result"] == "Hello Hank Scorpio of acme (lead-2041)"
    assert outcomes["greeter"]["failure"] is None
    assert outcomes["crasher"]["ok"] is False
    assert outcomes["crasher"]["result"] is None
    failure = outcomes["crasher"]["failure"]
    assert (failure["exc_type"], failure["message"]) == ("RuntimeError", "boom: lead-2041")
    assert "raise RuntimeError" in failure["traceback"]
    assert all(o["duration"] >= 0 for o in document["outcomes"])
    assert document["suspended"] == []


def test_call_exits_0_when_every_plugin_worked(cli: Cli) -> None:
    """Exit 0 when no plugin failed; the samples' tenant is the one of --tenant."""
    cli.deploy("greeter", GREETER, tenants=("globex",))
    code, out, err = cli("call", "lead_created", "--tenant", "globex", "--sample")
    assert code == EXIT_OK, err
    assert "Hank Scorpio of globex" in outcome_lines(out)["greeter"]
    assert cli.json("call", "lead_created", "--tenant", "globex", "--sample")["ok"] is True


def test_call_runs_only_the_tenants_plugins(deployed: Cli) -> None:
    """A tenant with no plugin enabled: nothing runs, which is no failure."""
    code, out, _ = deployed("call", "lead_created", "--tenant", "initech", "--sample")
    assert code == EXIT_OK
    assert "no plugin ran" in out
    assert "read_leads" in out


def test_call_with_data_structures_the_json_lead(deployed: Cli) -> None:
    """--data takes the payloads in their JSON form, structured into the spec's types."""
    data = lead_data(id="lead-7", name="Ada", tenant="acme", value="12.50")
    document = deployed.json("call", "lead_created", "--tenant", "acme", "--data", data, code=1)
    outcomes = {o["plugin_id"]: o for o in document["outcomes"]}
    assert outcomes["greeter"]["result"] == "Hello Ada of acme (lead-7)"
    assert outcomes["crasher"]["failure"]["message"] == "boom: lead-7"


def test_a_filter_hooks_result_is_shown_in_its_json_form(deployed: Cli) -> None:
    """A FILTER hook's result is printed, payloads as JSON; tuple and Mapping arguments work."""
    data = json.dumps({"request": to_wire(example(ApiRequest))})
    document = deployed.json("call", "api_request", "--tenant", "acme", "--data", data)
    assert document["kind"] == "filter"
    assert document["result"] == to_wire(example(ApiRequest))
    code, out, _ = deployed("call", "api_request", "--tenant", "acme", "--data", data)
    assert code == EXIT_OK
    assert 'result: {"tenant": "acme", "method": "GET", "path": "/lead-stats/stats"' in out
    lines = [{"description": "Fee", "quantity": "1", "unit_price": "9.90"}]
    invoice = to_wire(example(Invoice))
    data = json.dumps({"lines": lines, "invoice": invoice})
    document = deployed.json("call", "filter_invoice_lines", "--tenant", "acme", "--data", data)
    assert document["result"] == lines
    data = json.dumps({"lead": to_wire(example(Lead)), "changes": {"notes": [1, {"a": None}]}})
    assert deployed("call", "lead_updated", "--tenant", "acme", "--data", data)[0] == EXIT_OK


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--data", lead_data(value=12)], "lead.value: must be a decimal number as a string"),
        (["--data", lead_data(tenant="globex")], "lead.tenant: is 'globex', but the call is for"),
        (["--data", '{"leed": {}}'], "leed: unknown argument (its arguments: lead); did you mean"),
        (["--data", "{}"], "lead: is required (a Lead)"),
        ([], "lead: is required (a Lead): give it with --data, or use --sample"),
        (["--data", '{"lead": {}, "api": 1}'], "api: is not given in --data"),
        (["--data", "[1, 2"], "--data: is not valid JSON"),
        (
            ["--data", "[1, 2]"],
            "--data: must be a JSON object of lead_created's arguments (got array)",
        ),
    ],
)
def test_data_that_does_not_fit_the_spec_is_refused(
    deployed: Cli, arguments: list[str], expected: str
) -> None:
    """Exit 1 with the hook and the argument named; no traceback, nothing runs or is recorded."""
    code, out, err = deployed("call", "lead_created", "--tenant", "acme", *arguments)
    assert code == EXIT_REFUSED
    assert out == ""
    assert err.startswith("error: lead_created: invalid call")
    assert expected in err
    assert "Traceback" not in err
    assert deployed.json("failures")["failures"] == []
    assert deployed.json("metrics")["metrics"] == []


def test_a_refused_call_as_json_lists_the_problems(deployed: Cli) -> None:
    """--json refusals carry the hook as source and one problem per argument at fault."""
    data = json.dumps({"lead": {**to_wire(example(Lead)), "value": 1, "name": None}, "x": 1})
    document = deployed.json("call", "lead_created", "--tenant", "acme", "--data", data, code=1)
    assert (document["ok"], document["error"], document["source"]) == (
        False,
        "HookCallError",
        "lead_created",
    )
    assert {p["path"] for p in document["problems"]} == {"x", "lead.value", "lead.name"}


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["lead_craeted", "--tenant", "acme"], "unknown hook 'lead_craeted'; did you mean"),
        (["lead_created", "--sample"], "--tenant: is required: lead_created runs for one tenant"),
        (["plugin_installed", "--sample"], "version: has no example (a str)"),
        (["plugin_suspended", "--sample"], "only the host receives this hook"),
    ],
)
def test_calls_that_cannot_be_made_are_refused(
    deployed: Cli, arguments: list[str], expected: str
) -> None:
    """Unknown hooks, a missing tenant, samples that do not exist: exit 1, said plainly."""
    code, _, err = deployed("call", *arguments)
    assert code == EXIT_REFUSED
    assert expected in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "arguments",
    [
        ["--sample", "--data", "{}"],
        ["--sample", "--repeat", "0"],
        ["--sample", "--repeat", "many"],
    ],
)
def test_call_usage_errors_exit_2(deployed: Cli, arguments: list[str]) -> None:
    """--data and --sample exclude each other; --repeat is a positive whole number."""
    code, _, err = deployed("call", "lead_created", "--tenant", "acme", *arguments)
    assert code == EXIT_USAGE
    assert "usage:" in err


def test_plugins_that_need_host_data_fail_visibly(cli: Cli) -> None:
    """The command line has no host services: a data call is the plugin's failure, says why."""
    cli.deploy("reader", READER)
    document = cli.json("call", "lead_created", "--tenant", "acme", "--sample", code=1)
    [outcome] = document["outcomes"]
    assert outcome["failure"]["exc_type"] == "NoHostServices"
    assert outcome["failure"]["message"].startswith(
        "no host services in the command line: get_lead()"
    )


def test_the_command_lines_host_services(deployed: Cli) -> None:
    """Settings come from the registry, the store lives in memory, data calls are refused."""
    storage = SQLiteStorage(deployed.db)
    try:
        services = _CommandLineServices(Registry(storage))
        assert isinstance(services, HostServices)
        assert services.get_settings("acme", "greeter") == {"greeting": "Hello"}
        services.store_set("acme", "greeter", "seen", ["lead-1"])
        assert services.store_get("acme", "greeter", "seen") == ["lead-1"]
        assert services.store_get("globex", "greeter", "seen") is None
        services.store_delete("acme", "greeter", "seen")
        assert services.store_get("acme", "greeter", "seen") is None
        with pytest.raises(NoHostServices, match=r"command line: send_email\(\) needs the host"):
            services.send_email("acme", example(Email))
        with pytest.raises(NoHostServices, match=r"list_leads\(\)"):
            services.list_leads("acme", limit=10)
    finally:
        storage.close()


def test_a_tenant_less_hook_runs_for_every_approved_plugin(cli: Cli) -> None:
    """register_routes needs no tenant; --tenant is ignored with a note; routes print as JSON."""
    cli.deploy("router", ROUTER, permissions=["register_routes"], tenants=())
    document = cli.json("call", "register_routes")
    assert document["tenant"] is None
    assert document["notes"] == []
    [routes] = document["result"]
    assert routes == [{"path": "/hello", "methods": ["GET"], "name": "router", "native": False}]
    code, out, _ = cli("call", "register_routes", "--tenant", "acme")
    assert code == EXIT_OK
    assert out.splitlines()[0] == "called register_routes: 1 plugin ran, 0 failed"
    assert "note: register_routes runs without a tenant: --tenant acme is ignored" in out


def test_a_plugin_that_cannot_load_is_reported(deployed: Cli) -> None:
    """An enabled plugin whose code is gone is listed as not loaded, and the call exits 1."""
    shutil.rmtree(deployed.plugins / "greeter")
    storage = SQLiteStorage(deployed.db)
    try:  # and its kept archive, from which a host would materialise it again
        record = storage.get_plugin("greeter")
        assert record is not None
        assert record.artifact is not None
        storage.delete_artifact(record.artifact)
    finally:
        storage.close()
    code, out, err = deployed("call", "lead_created", "--tenant", "acme", "--sample")
    assert code == EXIT_REFUSED
    assert set(outcome_lines(out)) == {"crasher"}
    assert "not loaded: greeter (it should run here" in out
    assert "log: plugin 'greeter' not loaded" in err
    document = deployed.json("call", "lead_created", "--tenant", "initech", "--sample")
    assert document["not_loaded"] == []


def test_a_plugins_print_does_not_spoil_the_json(cli: Cli) -> None:
    """What plugin code prints goes to standard error; standard output stays one document."""
    cli.deploy("printer", PRINTER)
    code, out, err = cli("call", "lead_created", "--tenant", "acme", "--sample", "--json")
    assert code == EXIT_OK
    assert json.loads(out)["outcomes"][0]["result"] == "Globex"
    assert "a plugin talking on standard output" in err


def test_repeat_shows_the_breaker_suspending_a_failing_plugin(deployed: Cli) -> None:
    """--repeat 6: crasher fails 5 times in a row, is suspended for acme and runs no more."""
    code, out, err = deployed(
        "call", "lead_created", "--tenant", "acme", "--sample", "--repeat", "6"
    )
    assert code == EXIT_REFUSED
    lines = out.splitlines()
    assert lines[0] == "called lead_created for tenant acme 6 times: 2 plugins ran, 5 failed calls"
    rows = {line.split()[0]: line.split()[1:4] for line in lines[2:4]}
    assert rows == {"crasher": ["5", "0", "5"], "greeter": ["6", "6", "0"]}
    assert lines[4] == (
        "suspended crasher for tenant acme by circuit-breaker: lead_created: 5 consecutive failures"
    )
    assert "Traceback" not in err
    assert [p["id"] for p in deployed.json("list", "--tenant", "acme")["plugins"]] == ["greeter"]
    code, _, err = deployed("resume", "crasher")
    assert code == EXIT_REFUSED
    assert "suspended for tenant acme only; resume with --tenant" in err

    failures = deployed.json("failures")["failures"]
    assert len(failures) == 5
    assert {(f["plugin_id"], f["tenant"], f["hook"]) for f in failures} == {
        ("crasher", "acme", "lead_created")
    }
    assert [f["id"] for f in failures] == sorted((f["id"] for f in failures), reverse=True)
    assert failures[0]["exc_type"] == "RuntimeError"
    assert failures[0]["resolved"] is False
    code, out, _ = deployed("failures", "crasher", "--limit", "2")
    assert code == EXIT_OK
    assert len(out.splitlines()) == 2
    assert "crasher [acme] lead_created: RuntimeError: boom: lead-2041" in out

    metrics = {m["plugin_id"]: m for m in deployed.json("metrics")["metrics"]}
    assert (metrics["crasher"]["calls"], metrics["crasher"]["errors"]) == (5, 5)
    assert metrics["crasher"]["error_rate"] == 1.0
    assert (metrics["greeter"]["calls"], metrics["greeter"]["errors"]) == (6, 0)
    assert metrics["greeter"]["max_duration"] <= metrics["greeter"]["total_duration"]
    assert metrics["greeter"]["mean_duration"] == pytest.approx(
        metrics["greeter"]["total_duration"] / 6
    )
    code, out, _ = deployed("metrics", "crasher")
    assert code == EXIT_OK
    assert out.splitlines()[0].split()[:5] == ["plugin", "hook", "calls", "errors", "rate"]
    assert out.splitlines()[1].split()[:5] == ["crasher", "lead_created", "5", "5", "100%"]


def test_repeat_as_json_is_a_summary_per_plugin(deployed: Cli) -> None:
    """--repeat --json gives per plugin calls/ok/failed/durations and the new suspensions."""
    document = deployed.json(
        "call", "lead_created", "--tenant", "acme", "--sample", "--repeat", "5", code=1
    )
    assert document["repeat"] == 5
    rows = {row["plugin_id"]: row for row in document["plugins"]}
    assert (rows["crasher"]["calls"], rows["crasher"]["ok"], rows["crasher"]["failed"]) == (5, 0, 5)
    assert rows["greeter"]["max_duration"] <= rows["greeter"]["total_duration"]
    [suspended] = document["suspended"]
    assert (suspended["plugin_id"], suspended["tenant"], suspended["by"]) == (
        "crasher",
        "acme",
        "circuit-breaker",
    )


def test_resolve_marks_failures_resolved(deployed: Cli) -> None:
    """resolve NAME --id N marks one; resolve NAME marks the rest; --unresolved filters."""
    deployed("call", "lead_created", "--tenant", "acme", "--sample", "--repeat", "3")
    ids = [f["id"] for f in deployed.json("failures", "crasher")["failures"]]
    assert (
        deployed("resolve", "crasher", "--id", str(ids[0]))[1] == "resolved 1 failure of crasher\n"
    )
    assert [f["id"] for f in deployed.json("failures", "--unresolved")["failures"]] == ids[1:]
    assert [f["id"] for f in deployed.json("failures", "--resolved")["failures"]] == ids[:1]
    document = deployed.json("resolve", "crasher", "--tenant", "acme")
    assert document["resolved"] == 2
    assert deployed.json("failures", "--unresolved")["failures"] == []
    events = [
        e
        for e in deployed.json("audit", "--plugin", "crasher")["events"]
        if e["action"] == "resolve"
    ]
    assert [(e["actor"], e["tenant"], e["after"]) for e in reversed(events)] == [
        (events[-1]["actor"], None, {"resolved": 1, "failures": ids[:1]}),
        (events[-1]["actor"], "acme", {"resolved": 2}),
    ]
    assert deployed.json("resolve", "crasher")["resolved"] == 0  # nothing left: no event
    after = deployed.json("audit", "--plugin", "crasher")["events"]
    assert [e["action"] for e in after].count("resolve") == 2
    assert deployed("failures", "--resolved", "--unresolved")[0] == EXIT_USAGE


# -- suspend, resume -----------------------------------------------------------------------------


def test_suspend_and_resume_for_one_tenant(deployed: Cli) -> None:
    """suspend --tenant stops the plugin there only; resume --tenant lets it run again."""
    deployed.deploy("other", GREETER, tenants=("acme", "globex"))
    code, out, err = deployed("suspend", "other", "--tenant", "acme", "--reason", "noisy")
    assert (code, out) == (EXIT_OK, "suspended other for tenant acme: noisy\n"), err
    ran = deployed.json("call", "lead_created", "--tenant", "acme", "--sample", code=1)
    assert "other" not in {o["plugin_id"] for o in ran["outcomes"]}
    ran = deployed.json("call", "lead_created", "--tenant", "globex", "--sample")
    assert {o["plugin_id"] for o in ran["outcomes"]} == {"other"}
    again = deployed("suspend", "other", "--tenant", "acme", "--reason", "still")
    assert again[1] == "other was already suspended for tenant acme: noisy\n"
    document = deployed.json("resume", "other", "--tenant", "acme")
    assert (document["changed"], document["status"], document["suspensions"]) == (
        True,
        "approved",
        [],
    )
    assert deployed("resume", "other", "--tenant", "acme")[1] == (
        "other was not suspended for tenant acme: nothing changed\n"
    )
    ran = deployed.json("call", "lead_created", "--tenant", "acme", "--sample", code=1)
    assert "other" in {o["plugin_id"] for o in ran["outcomes"]}
    events = deployed.json("audit", "--plugin", "other", "--limit", "2")["events"]
    assert [(e["action"], e["tenant"], e["actor"]) for e in events] == [
        ("resume", "acme", "ops@test"),
        ("suspend", "acme", "ops@test"),
    ]


def test_suspend_and_resume_everywhere(deployed: Cli) -> None:
    """Without --tenant the plugin's status changes; refused steps exit 1 with the reason."""
    document = deployed.json("suspend", "greeter", "--reason", "maintenance")
    assert document["status"] == "suspended"
    assert document["suspensions"][0]["tenant"] is None
    assert document["suspensions"][0]["reason"] == "maintenance"
    ran = deployed.json("call", "lead_created", "--tenant", "acme", "--sample", code=1)
    assert {o["plugin_id"] for o in ran["outcomes"]} == {"crasher"}
    code, _, err = deployed("suspend", "greeter", "--tenant", "acme", "--reason", "x")
    assert code == EXIT_REFUSED
    assert "greeter" in err
    assert deployed("resume", "greeter")[1] == "resumed greeter everywhere: approved\n"
    code, _, err = deployed("resume", "greeter")
    assert code == EXIT_REFUSED
    assert "approved" in err
    code, _, err = deployed("suspend", "ghost", "--reason", "x")
    assert (code, err) == (EXIT_REFUSED, "error: no plugin 'ghost' is installed\n")
    assert deployed("suspend", "greeter")[0] == EXIT_USAGE


# -- the database --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        ["failures"],
        ["metrics", "crasher"],
        ["resolve", "crasher"],
        ["suspend", "crasher", "--reason", "x"],
        ["resume", "crasher"],
        ["call", "register_routes"],
    ],
)
def test_no_command_creates_a_missing_database(cli: Cli, arguments: list[str]) -> None:
    """A --db that does not exist is refused, exit 1, and no file is left behind."""
    code, _, err = cli(*arguments)
    assert code == EXIT_REFUSED
    assert "no such registry database" in err
    assert not cli.db.exists()


def test_empty_lists_say_so(deployed: Cli) -> None:
    """No failures or metrics yet: a line says so; JSON lists are empty."""
    assert deployed("failures")[1] == "no failures\n"
    assert deployed("metrics")[1] == "no metrics\n"
    assert deployed.json("failures", "greeter") == {"ok": True, "failures": []}


def test_python_dash_m_call(deployed: Cli) -> None:
    """python -m services_ai_plugins call runs in its own process: JSON out, no traceback."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "services_ai_plugins",
            "call",
            "lead_created",
            "--db",
            str(deployed.db),
            "--plugins-dir",
            str(deployed.plugins),
            "--tenant",
            "acme",
            "--sample",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=deployed.root,
    )
    assert run.returncode == EXIT_REFUSED, run.stderr
    document = json.loads(run.stdout)
    assert {o["plugin_id"]: o["ok"] for o in document["outcomes"]} == {
        "greeter": True,
        "crasher": False,
    }
    assert "Traceback" not in run.stderr
    assert "log: hook lead_created failed for tenant 'acme': RuntimeError: boom" in run.stderr
