"""check_plugin and ``services-ai-plugins check``: a plugin exercised in a throwaway host."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import strategies as st

from conftest import EXAMPLE_PLUGIN, ROOT, PluginWriter
from services_ai_plugins import check_plugin, pack_plugin
from services_ai_plugins._cli._main import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, main
from services_ai_plugins.events import Lead
from services_ai_plugins.tooling import CheckProblem, CheckReport, example
from services_ai_plugins_testing import strategies
from services_ai_plugins_testing.check import KINDS

DEMO_PLUGINS = ROOT / "src" / "services_ai_plugins" / "_demo_plugins"

MAILER = """\
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead, api):
        api.send_email(lead.email, "Welcome", f"Hello {lead.name}")
"""

CRASHER = """\
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead):
        return helper(lead)


def helper(lead):
    return lead.value / 0
"""

WRONG_ARGUMENT = """\
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, leed, api):
        pass
"""

WIDGET = """\
from services_ai_plugins import hookimpl
from services_ai_plugins.events import Widget


class Plugin:
    @hookimpl
    def dashboard_widget(self, context):
        return Widget(tenant=context.tenant, title="Hi", html="<p>hi</p>")
"""

QUIET = """\
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead, api):
        api.store_set("last", lead.id)
"""

SLEEPER = """\
import time

from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead):
        time.sleep(0.03)
"""

SLOW_ONCE = """\
import time

from services_ai_plugins import hookimpl


class Plugin:
    first = True

    @hookimpl
    def lead_created(self, lead):
        if Plugin.first:
            Plugin.first = False
            time.sleep(0.05)
"""

READER = """\
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead, api):
        found = api.get_lead(lead.id)
        if found != lead:
            raise LookupError(f"the host has no lead {lead.id}")
        if lead.tenant != api.tenant:
            raise ValueError(f"lead of tenant {lead.tenant} in a call for {api.tenant}")
"""

ROUTER = """\
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def register_routes(self, api):
        api.get_lead("lead-1")
        return []
"""

OWNER_THIEF = """\
import attrs

from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def resolve_lead_owner(self, lead):
        return attrs.evolve(lead, tenant="someone-else")
"""


def run(*args: str | Path) -> tuple[int, str, str]:
    """The command line in-process: (exit code, standard output, standard error)."""
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in args], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def write(
    write_plugin: PluginWriter,
    source: str,
    *,
    permissions: Sequence[str] = ("read_leads",),
    name: str = "plugin",
    **manifest: Any,
) -> Path:
    """A plugin folder ``tmp_path/<name>`` whose main.py is ``source`` (its class: Plugin)."""
    document: Mapping[str, Any] = {
        "id": name,
        "name": name.title(),
        "version": "1.0.0",
        "entry_point": "main.py",
        "plugin_class": "Plugin",
        "permissions": list(permissions),
        **manifest,
    }
    return write_plugin(document, {"main.py": source}, name=name)


def kinds(report: CheckReport) -> list[tuple[str, str, str | None]]:
    """(severity, kind, hook) of each problem, in order."""
    return [(p.severity, p.kind, p.hook) for p in report.problems]


def only(report: CheckReport, kind: str) -> CheckProblem:
    """The one problem of this kind."""
    found = [p for p in report.problems if p.kind == kind]
    assert len(found) == 1, report.problems
    return found[0]


# -- plugins that pass ---------------------------------------------------------------------------


@pytest.mark.parametrize("plugin", ["branding", "lead-notifier", "revenue-widget"])
def test_the_bundled_plugins_pass(plugin: str) -> None:
    """Each bundled plugin that works passes: no problem, and every hook it implements ran."""
    report = check_plugin(DEMO_PLUGINS / plugin)
    assert report.problems == (), report.problems
    assert report.ok
    assert report.loaded
    assert report.plugin_id == plugin
    assert len(report.hooks) == 2
    for hook in report.hooks:
        assert hook.receivable
        assert hook.calls >= 1
        assert hook.failed == 0


def test_the_example_plugin_passes_on_the_documented_examples() -> None:
    """examples/hello-plugin passes with the documented example payloads."""
    report = check_plugin(EXAMPLE_PLUGIN, examples=0)
    assert report.problems == ()
    assert [(h.hook, h.calls, h.failed) for h in report.hooks] == [("lead_created", 1, 0)]
    assert report.generated == 0


def test_the_example_plugin_passes_on_generated_payloads_too() -> None:
    """With the default generated leads (some without a value), hello-plugin still passes."""
    report = check_plugin(EXAMPLE_PLUGIN)
    assert report.ok, report.problems
    [hook] = report.hooks
    assert hook.calls > 1
    assert hook.failed == 0


def test_the_flaky_plugin_crashes_and_check_says_where() -> None:
    """flaky raises on purpose: one crash, with its type, message and the plugin's own frames."""
    report = check_plugin(DEMO_PLUGINS / "flaky", examples=0)
    assert not report.ok
    assert kinds(report) == [("error", "crash", "lead_created")]
    crash = report.problems[0]
    assert crash.message.startswith("ConnectionError: crm.example did not answer for lead-2041")
    assert "at main.py:20, in 1 of 1 call" in crash.message
    assert crash.detail[0] == "Traceback (most recent call last):"
    assert '  File "main.py", line 20, in lead_created' in crash.detail
    assert not any("services_ai_plugins" in line for line in crash.detail)
    assert crash.detail[-1] == "first raised with the documented example"
    assert [(h.calls, h.failed) for h in report.hooks] == [(1, 1)]


# -- plugins that do not -------------------------------------------------------------------------


def test_a_missing_permission_is_named(write_plugin: PluginWriter) -> None:
    """send_email without the send_email permission: permission-denied, naming it; no crash."""
    report = check_plugin(write(write_plugin, MAILER), examples=0)
    assert kinds(report) == [("error", "permission-denied", "lead_created")]
    denied = report.problems[0]
    assert denied.permission == "send_email"
    assert "called send_email() without the 'send_email' permission" in denied.message
    assert "declare it in the manifest's permissions" in denied.message


def test_the_permission_declared_the_same_plugin_passes(write_plugin: PluginWriter) -> None:
    """With send_email declared the same plugin passes, and the e-mail went out."""
    folder = write(write_plugin, MAILER, permissions=["read_leads", "send_email"])
    assert check_plugin(folder, examples=0).problems == ()


def test_a_crashing_hook_is_reported_with_its_traceback(write_plugin: PluginWriter) -> None:
    """An exception deep in the plugin's code: the crash names the innermost frame."""
    report = check_plugin(write(write_plugin, CRASHER), examples=0)
    crash = only(report, "crash")
    assert crash.hook == "lead_created"
    assert crash.message.startswith("InvalidOperation") or crash.message.startswith(
        "DivisionByZero"
    )
    assert "(at main.py:11, in 1 of 1 call)" in crash.message
    assert crash.detail[1:3] == (
        '  File "main.py", line 7, in lead_created',
        "    return helper(lead)",
    )


def test_a_wrong_argument_is_named_with_its_hook(write_plugin: PluginWriter) -> None:
    """An argument the specification lacks: the host refuses the plugin; check names both."""
    report = check_plugin(write(write_plugin, WRONG_ARGUMENT))
    assert kinds(report) == [("error", "unknown-argument", "lead_created")]
    problem = report.problems[0]
    assert problem.argument == "leed"
    assert "takes 'leed', which the specification does not have" in problem.message
    assert "did you mean 'lead'?" in problem.message
    assert "specification: lead_created(lead, context, api, settings)" in problem.detail
    assert not report.loaded
    assert report.hooks == ()


def test_every_refused_implementation_is_listed(write_plugin: PluginWriter) -> None:
    """pluggy stops at the first refusal; check lists them all, and what it would ignore."""
    source = """\
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_craeted(self, lead):
        pass

    @hookimpl(hookwrapper=True)
    def lead_updated(self, lead):
        yield

    @hookimpl
    def plugin_suspended(self, plugin_id):
        pass

    @hookimpl
    def lead_deleted(self, lead, api=None):
        pass
"""
    report = check_plugin(write(write_plugin, source))
    assert sorted(kinds(report)) == [
        ("error", "hook-wrapper", "lead_updated"),
        ("error", "host-only-hook", "plugin_suspended"),
        ("error", "unknown-hook", "lead_craeted"),
        ("warning", "ignored-argument", "lead_deleted"),
    ]
    assert "did you mean 'lead_created'?" in only(report, "unknown-hook").message
    assert only(report, "ignored-argument").argument == "api"


def test_an_unreceivable_hook_is_an_error(write_plugin: PluginWriter) -> None:
    """dashboard_widget without dashboard_widgets: the host never calls it, check says so."""
    report = check_plugin(write(write_plugin, WIDGET, permissions=[]))
    problem = only(report, "unreceivable-hook")
    assert (problem.severity, problem.hook, problem.permission) == (
        "error",
        "dashboard_widget",
        "dashboard_widgets",
    )
    assert [(h.hook, h.receivable, h.calls) for h in report.hooks] == [
        ("dashboard_widget", False, 0)
    ]
    fixed = write(write_plugin, WIDGET, permissions=["dashboard_widgets"], name="fixed")
    assert check_plugin(fixed).problems == ()


def test_an_unused_permission_is_a_warning(write_plugin: PluginWriter) -> None:
    """A declared permission nothing needed is a warning: the check passes, exit code 0."""
    folder = write(write_plugin, QUIET, permissions=["read_leads", "send_sms"])
    report = check_plugin(folder)
    problem = only(report, "unused-permission")
    assert (problem.severity, problem.permission, problem.path) == (
        "warning",
        "send_sms",
        "permissions[1]",
    )
    assert report.ok
    code, out, err = run("check", folder)
    assert code == EXIT_OK, err
    assert "warning  unused-permission  permissions[1]: 'send_sms' is declared" in out
    assert out.splitlines()[-1] == "ok: 0 errors, 1 warning"


def test_a_permission_used_through_the_api_is_not_unused(write_plugin: PluginWriter) -> None:
    """A permission no hook requires but an API call needed is in use."""
    folder = write(write_plugin, MAILER, permissions=["read_leads", "send_email"])
    assert not [p for p in check_plugin(folder).problems if p.kind == "unused-permission"]


def test_a_slow_hook_is_a_warning(write_plugin: PluginWriter) -> None:
    """A call slower than --slow-ms is a warning (exit 0); under a higher limit it is not."""
    folder = write(write_plugin, SLEEPER)
    code, out, err = run("check", folder, "--slow-ms", "5", "--examples", "0")
    assert code == EXIT_OK, err
    problem_lines = [line for line in out.splitlines() if "slow-hook" in line]
    assert len(problem_lines) == 1
    assert problem_lines[0].startswith("warning  slow-hook          lead_created: slowest call")
    assert "over the limit of 5 ms (in 1 of 1 call)" in problem_lines[0]
    assert check_plugin(folder, slow_ms=10_000, examples=0).problems == ()


def test_a_slow_call_is_timed_again_before_it_is_reported(write_plugin: PluginWriter) -> None:
    """A call that is slow once (an import, a cache filled, a stalled machine) is a note.

    The check repeats a call over the limit with the same arguments and counts
    the faster time, so a one-time cost is not a slow hook, but one that is slow
    every time (the sleeper above) still is.
    """
    folder = write(write_plugin, SLOW_ONCE)
    report = check_plugin(folder, slow_ms=20, examples=0)
    assert report.problems == ()
    (note,) = report.notes
    assert note.startswith("lead_created: one call took ")
    assert "ms when repeated: a one-time cost" in note
    (hook,) = report.hooks
    assert hook.calls == 1
    assert hook.max_duration < 0.02
    assert hook.total_duration >= 0.05  # the call as it ran: the repeat is not a call


def test_a_call_without_a_tenant_of_a_tenant_method(write_plugin: PluginWriter) -> None:
    """register_routes has no tenant: api.get_lead there is reported, not a crash."""
    folder = write(write_plugin, ROUTER, permissions=["register_routes", "read_leads"])
    report = check_plugin(folder, examples=0)
    assert kinds(report) == [("error", "no-tenant", "register_routes")]
    assert "called get_lead(), which works for a tenant only" in report.problems[0].message


def test_a_refused_result_is_reported(write_plugin: PluginWriter) -> None:
    """A result that is another tenant's record is refused by the host: an error."""
    folder = write(write_plugin, OWNER_THIEF, permissions=["read_leads", "read_users"])
    report = check_plugin(folder, examples=0)
    problem = only(report, "refused-result")
    assert problem.hook == "resolve_lead_owner"
    assert "a record of tenant 'someone-else' in a call for tenant 'check'" in problem.message


def test_an_import_failure_is_a_load_problem(write_plugin: PluginWriter) -> None:
    """Code that fails to import: a load problem with the plugin's own frames."""
    folder = write_plugin(
        {
            "id": "broken",
            "name": "Broken",
            "version": "1.0.0",
            "entry_point": "main.py",
            "plugin_class": "Plugin",
        },
        {
            "main.py": "from . import helpers\n\n\nclass Plugin:\n    pass\n",
            "helpers.py": "raise RuntimeError('no database here')\n",
        },
    )
    report = check_plugin(folder)
    assert kinds(report) == [("error", "load", "load")]
    problem = report.problems[0]
    assert problem.message == "RuntimeError: no database here"
    assert '  File "helpers.py", line 1, in <module>' in problem.detail
    assert not any("_loader.py" in line for line in problem.detail)


def test_a_plugin_that_exits_while_importing_is_reported(write_plugin: PluginWriter) -> None:
    """sys.exit() at import is a load problem, not the end of the check (or of the CLI)."""
    folder = write(write_plugin, "import sys\n\nsys.exit(3)\n\n\nclass Plugin:\n    pass\n")
    report = check_plugin(folder)
    assert kinds(report) == [("error", "load", "load")]
    assert report.problems[0].message == "SystemExit: 3"
    code, out, _ = run("check", folder)
    assert code == EXIT_REFUSED
    assert "error    load" in out


def test_an_invalid_manifest_stops_the_check(write_plugin: PluginWriter) -> None:
    """A manifest that breaks rules: each problem by its path, nothing imported."""
    folder = write(write_plugin, QUIET, permissions=["Read Leads"], version="one")
    report = check_plugin(folder)
    assert [(p.severity, p.kind, p.path) for p in report.problems] == [
        ("error", "invalid", "version"),
        ("error", "invalid", "permissions[0]"),
    ]
    assert (report.plugin_id, report.loaded, report.hooks) == (None, False, ())


def test_a_manifest_alone_cannot_be_checked(write_plugin: PluginWriter) -> None:
    """A bare manifest.json has no code to run: refused as invalid."""
    folder = write(write_plugin, QUIET)
    report = check_plugin(folder / "manifest.json")
    assert kinds(report) == [("error", "invalid", None)]
    assert "give the plugin's folder or ZIP" in report.problems[0].message


def test_unmet_requirements_are_errors_and_the_hooks_still_run(
    write_plugin: PluginWriter,
) -> None:
    """requires_api this SDK does not offer is an error; the hooks are still exercised."""
    folder = write(write_plugin, CRASHER, requires_api=">=99")
    report = check_plugin(folder, examples=0)
    assert [p.kind for p in report.problems] == ["requirements", "crash"]
    assert report.problems[0].path == "requires_api"


def test_the_manifests_hooks_list_is_compared(write_plugin: PluginWriter) -> None:
    """A hooks list that differs from the implementations: a warning per difference."""
    folder = write(write_plugin, QUIET, hooks=["lead_updated"])
    report = check_plugin(folder, examples=0)
    assert kinds(report) == [
        ("warning", "manifest-hooks", None),
        ("warning", "manifest-hooks", "lead_created"),
    ]
    assert report.problems[0].path == "hooks[0]"


def test_the_tenant_and_the_seeded_records(write_plugin: PluginWriter) -> None:
    """Payloads belong to --tenant, and the host services hold the example lead for it."""
    folder = write(write_plugin, READER)
    assert check_plugin(folder, tenant="globex", examples=0).problems == ()
    code, out, err = run("check", folder, "--tenant", "globex", "--examples", "0")
    assert code == EXIT_OK, err
    assert "checked plugin 1.0.0 for tenant globex: 1 hook, 1 call" in out


# -- archives ------------------------------------------------------------------------------------


def test_a_zip_is_checked_like_its_folder(tmp_path: Path) -> None:
    """A packed plugin is installed as uploaded and checked: the same crash as its folder."""
    archive = pack_plugin(DEMO_PLUGINS / "flaky", tmp_path / "flaky.zip").path
    report = check_plugin(archive, examples=0)
    assert report.source == str(archive)
    assert kinds(report) == [("error", "crash", "lead_created")]
    assert '  File "main.py", line 20, in lead_created' in report.problems[0].detail
    good = pack_plugin(DEMO_PLUGINS / "lead-notifier", tmp_path / "good.zip").path
    assert check_plugin(good).ok


def test_an_unsafe_zip_is_refused_by_the_install_rules(tmp_path: Path) -> None:
    """A member that climbs out of the plugin folder: invalid, naming the rule; nothing runs."""
    archive = tmp_path / "escape.zip"
    manifest = {
        "id": "escape",
        "name": "Escape",
        "version": "1.0.0",
        "entry_point": "main.py",
        "plugin_class": "Plugin",
    }
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("manifest.json", json.dumps(manifest))
        zipped.writestr("main.py", "class Plugin:\n    pass\n")
        zipped.writestr("../escape.py", "print('out')\n")
    report = check_plugin(archive)
    assert kinds(report) == [("error", "invalid", None)]
    assert "[path-traversal]" in report.problems[0].message
    assert report.problems[0].path == "../escape.py"
    assert not report.loaded


# -- generated arguments -------------------------------------------------------------------------


def test_generated_arguments_run_after_the_example(
    write_plugin: PluginWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With strategies.hook_arguments, each hook also gets N generated calls, records seeded."""

    def hook_arguments(hook_name: str, *, tenant: str) -> st.SearchStrategy[dict[str, Any]]:
        assert hook_name == "lead_created"
        leads = st.integers(min_value=0).map(
            lambda n: attrs.evolve(example(Lead), id=f"lead-{n}", tenant=tenant)
        )
        return st.fixed_dictionaries({"lead": leads})

    monkeypatch.setattr(strategies, "hook_arguments", hook_arguments, raising=False)
    report = check_plugin(write(write_plugin, READER), examples=5)
    assert report.problems == ()
    assert report.generated == 5
    assert [(h.calls, h.failed) for h in report.hooks] == [(6, 0)]


def test_generated_arguments_find_what_the_example_does_not(
    write_plugin: PluginWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lead without a value crashes a plugin the example lead does not: it is reported."""

    def hook_arguments(hook_name: str, *, tenant: str) -> st.SearchStrategy[dict[str, Any]]:
        values = st.sampled_from([None, example(Lead).value])
        leads = values.map(lambda v: attrs.evolve(example(Lead), value=v, tenant=tenant))
        return st.fixed_dictionaries({"lead": leads})

    monkeypatch.setattr(strategies, "hook_arguments", hook_arguments, raising=False)
    source = CRASHER.replace("lead.value / 0", "lead.value + 1")
    report = check_plugin(write(write_plugin, source), examples=10)
    crash = only(report, "crash")
    assert crash.message.startswith("TypeError: unsupported operand type(s) for +: 'NoneType'")
    assert crash.detail[-1] == "first raised with generated arguments"


def test_without_hook_arguments_only_the_examples_run(
    write_plugin: PluginWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No strategies.hook_arguments: the examples alone, and a note says so."""
    monkeypatch.delattr(strategies, "hook_arguments", raising=False)
    report = check_plugin(write(write_plugin, QUIET), examples=5)
    assert report.generated == 0
    assert [h.calls for h in report.hooks] == [1]
    assert any("has no hook_arguments()" in note for note in report.notes)


def test_a_strategy_that_fails_is_a_note(
    write_plugin: PluginWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A strategy that cannot be built does not stop the check: the example still ran."""

    def hook_arguments(hook_name: str, *, tenant: str) -> st.SearchStrategy[dict[str, Any]]:
        raise KeyError(hook_name)

    monkeypatch.setattr(strategies, "hook_arguments", hook_arguments, raising=False)
    report = check_plugin(write(write_plugin, QUIET))
    assert report.ok
    assert [h.calls for h in report.hooks] == [1]
    assert report.notes == ("lead_created: no generated arguments: KeyError: 'lead_created'",)


# -- the report and the command line -------------------------------------------------------------


def test_bad_options_are_refused() -> None:
    """An empty tenant, a negative limit or count: ValueError (usage errors in the CLI)."""
    for options in ({"tenant": " "}, {"slow_ms": -1.0}, {"examples": -1}):
        with pytest.raises(ValueError, match="must"):
            check_plugin(EXAMPLE_PLUGIN, **options)
    for arguments in (
        ["--tenant", ""],
        ["--slow-ms", "-1"],
        ["--slow-ms", "nan"],
        ["--examples", "many"],
    ):
        code, out, err = run("check", EXAMPLE_PLUGIN, *arguments)
        assert code == EXIT_USAGE, (arguments, out)
        assert "usage:" in err
    assert run("check")[0] == EXIT_USAGE


def test_every_kind_is_documented() -> None:
    """Each kind a check reports is listed in KINDS and in docs/cli.md."""
    docs = (ROOT / "docs" / "cli.md").read_text()
    for kind in KINDS:
        assert f"`{kind}`" in docs, kind


def test_the_command_prints_a_line_per_problem_then_a_summary() -> None:
    """Human output: the problems, what ran per hook, the verdict; exit 1 for an error."""
    code, out, err = run("check", DEMO_PLUGINS / "flaky", "--examples", "0")
    assert code == EXIT_REFUSED
    lines = out.splitlines()
    assert lines[0].startswith("error    crash              lead_created: ConnectionError: ")
    assert lines[1] == (
        "checked flaky 0.1.0 for tenant check: 1 hook, 1 call (the documented examples)"
    )
    assert lines[2].split()[:4] == ["lead_created", "1", "call", "1"]
    assert lines[3] == "failed: 1 error, 0 warnings"
    assert "Traceback" not in err


def test_the_command_as_json(write_plugin: PluginWriter) -> None:
    """--json prints the report as one document; ok false and exit 1 for an error."""
    code, out, _ = run("check", write(write_plugin, MAILER), "--json", "--examples", "0")
    assert code == EXIT_REFUSED
    document = json.loads(out)
    assert document["ok"] is False
    assert (document["plugin_id"], document["tenant"], document["errors"]) == ("plugin", "check", 1)
    [problem] = document["problems"]
    assert problem["kind"] == "permission-denied"
    assert problem["permission"] == "send_email"
    assert document["hooks"][0]["hook"] == "lead_created"
    assert document["hooks"][0]["calls"] == 1
    assert document["loaded"] is True


def test_a_plugins_output_does_not_spoil_the_json(write_plugin: PluginWriter) -> None:
    """What plugin code prints goes to standard error; standard output stays one document."""
    source = QUIET.replace('api.store_set("last", lead.id)', 'print("hello from the plugin")')
    code, out, err = run("check", write(write_plugin, source), "--json")
    assert code == EXIT_OK
    assert json.loads(out)["ok"] is True
    assert "hello from the plugin" in err


@pytest.mark.slow
def test_python_dash_m_check(write_plugin: PluginWriter) -> None:
    """python -m services_ai_plugins check PATH --json runs in its own process: no traceback."""
    folder = DEMO_PLUGINS / "flaky"
    result = subprocess.run(
        [sys.executable, "-m", "services_ai_plugins", "check", str(folder), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == EXIT_REFUSED, result.stderr
    document = json.loads(result.stdout)
    assert [p["kind"] for p in document["problems"]] == ["crash"]
    assert "Traceback" not in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "services_ai_plugins", "check", str(EXAMPLE_PLUGIN), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(result.stdout)["plugin_id"] == "hello-plugin"


def test_the_report_as_a_dict_is_json() -> None:
    """to_dict() holds every field, in JSON types."""
    report = check_plugin(DEMO_PLUGINS / "flaky", examples=0)
    document = report.to_dict()
    assert json.loads(json.dumps(document)) == document
    assert set(document) == {
        "ok",
        "plugin_id",
        "version",
        "source",
        "tenant",
        "errors",
        "warnings",
        "problems",
        "hooks",
        "generated",
        "loaded",
        "notes",
    }
    assert str(report.problems[0]).startswith("error: crash: lead_created: ConnectionError")


def test_the_engine_is_the_test_kits_public_check_module() -> None:
    """services_ai_plugins_testing.check's __all__ is pinned; the SDK's names are its own."""
    import services_ai_plugins
    from services_ai_plugins import tooling
    from services_ai_plugins_testing import check

    assert set(check.__all__) == {
        "DEFAULT_EXAMPLES",
        "DEFAULT_SLOW_MS",
        "DEFAULT_TENANT",
        "KINDS",
        "CheckProblem",
        "CheckReport",
        "HookSummary",
        "check_plugin",
    }
    for name in check.__all__:
        assert getattr(check, name) is not None, name
    assert tooling.CheckReport is check.CheckReport
    assert tooling.CheckProblem is check.CheckProblem
    assert tooling.HookSummary is check.HookSummary
    report = services_ai_plugins.check_plugin(EXAMPLE_PLUGIN, examples=0)
    assert type(report) is check.CheckReport
    assert report.ok
