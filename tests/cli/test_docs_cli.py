"""``services-ai-plugins docs``: the reference for the SDK's defaults and a host's extras."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from reference_kit import write_extras
from services_ai_plugins import PluginAPI
from services_ai_plugins._cli._main import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, main
from services_ai_plugins._reference import build_reference, markdown_pages
from services_ai_plugins.hookspecs import HOOKS


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)


def cli(*args: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), stdout=out, stderr=err)
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
def extras(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of a host's extras module (reference_kit) in the working folder."""
    monkeypatch.chdir(tmp_path)
    name = write_extras(tmp_path)
    yield name
    sys.modules.pop(name, None)


def test_docs_prints_the_three_pages_in_markdown() -> None:
    """Without options: the SDK's hook, PluginAPI and permission pages, as `nox -s docs`
    writes them, on standard output."""
    run = cli("docs")
    assert run.code == EXIT_OK, run.err
    assert run.err == ""
    assert run.out == "\n".join(markdown_pages().values())
    for title in ("# Hook reference", "# PluginAPI reference", "# Permission reference"):
        assert f"\n{title}\n" in run.out
    for name in HOOKS:
        assert f"\n### {name}\n" in run.out


def test_docs_format_json_lists_every_hook_method_and_permission() -> None:
    """--format json prints the reference's JSON form: every hook and API method."""
    run = cli("docs", "--format", "json")
    assert run.code == EXIT_OK, run.err
    document = run.json()
    assert document == build_reference().to_dict()
    assert [h["name"] for h in document["hooks"]] == list(HOOKS)
    assert set(PluginAPI.permissions()) <= {m["name"] for m in document["methods"]}


def test_docs_json_option_wraps_the_result() -> None:
    """--json gives the one-object envelope: the reference, or the pages by file name."""
    wrapped = cli("docs", "--format", "json", "--json").json()
    assert wrapped["ok"] is True
    assert wrapped["reference"] == build_reference().to_dict()
    pages = cli("docs", "--json").json()
    assert pages == {"ok": True, "pages": markdown_pages()}


def test_a_hosts_extras_appear_in_docs_json(extras: str) -> None:
    """A host's hook specifications, PluginAPI subclass and permissions, named as module
    paths, are in the reference with the SDK's."""
    run = cli(
        "docs",
        "--format",
        "json",
        "--hookspecs",
        f"{extras}:HostHooks",
        "--api-class",
        f"{extras}:TicketAPI",
        "--permissions",
        f"{extras}:TICKETS",
        "--permissions",
        f"{extras}:MORE",
    )
    assert run.code == EXIT_OK, run.err
    document = run.json()
    hooks = {h["name"]: h for h in document["hooks"]}
    assert set(HOOKS) < set(hooks)
    assert hooks["crm_ticket_opened"]["builtin"] is False
    assert hooks["crm_ticket_opened"]["permissions"] == ["read_tickets"]
    methods = {m["name"]: m for m in document["methods"]}
    assert methods["list_tickets"]["permission"] == "read_tickets"
    assert methods["close_ticket"]["is_async"] is True
    assert document["api_class"] == f"{extras}.TicketAPI"
    permissions = {p["name"]: p for p in document["permissions"]}
    assert permissions["read_tickets"]["methods"] == ["list_tickets"]
    assert permissions["close_tickets"]["risk"] == "high"
    assert "read_leads" in permissions


def test_a_hosts_extras_appear_in_the_markdown(extras: str) -> None:
    """The Markdown pages have a section for the host's own hooks, and its methods."""
    run = cli(
        "docs",
        "--hookspecs",
        f"{extras}:HostHooks",
        "--api-class",
        f"{extras}:TicketAPI",
        "--permissions",
        f"{extras}:TICKETS",
        "--permissions",
        f"{extras}:MORE",
    )
    assert run.code == EXIT_OK, run.err
    assert "## The host's own hooks\n\n### crm_ticket_opened\n" in run.out
    assert "\n## list_tickets\n" in run.out
    assert "- **Defined in:** `TicketAPI`" in run.out
    assert "\n## read_tickets\n\nRead the tenant's support tickets.\n" in run.out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--hookspecs", "no_such_module_here"], "argument --hookspecs: cannot import 'no_such_"),
        (["--hookspecs", "{extras}:Missing"], "argument --hookspecs: '{extras}:Missing': "),
        (["--hookspecs", "{extras}:NOT_SPECS"], "is a int, not a module or class of hook spec"),
        (["--hookspecs", "{extras}:TicketAPI"], "specifies no hooks (no @spec or @hookspec)"),
        (["--hookspecs", "{extras}:"], "is not MODULE or MODULE:ATTRIBUTE"),
        (
            ["--api-class", "{extras}:HostHooks"],
            "argument --api-class: '{extras}:HostHooks' is not",
        ),
        (["--api-class", "{extras}:TICKETS"], "is not PluginAPI or a subclass of it"),
        (["--permissions", "{extras}:NOT_SPECS"], "argument --permissions: '{extras}:NOT_SPECS'"),
        (["--permissions", "{extras}:TicketAPI"], "not a PermissionCatalogue, a Permission"),
        (["--format", "html"], "argument --format: invalid choice: 'html'"),
    ],
)
def test_bad_option_values_are_usage_errors(extras: str, options: list[str], message: str) -> None:
    """A module path that cannot be imported or names the wrong kind of object is a usage
    error (exit 2) naming the option; nothing is printed on standard output."""
    run = cli("docs", *(option.format(extras=extras) for option in options))
    assert run.code == EXIT_USAGE
    assert run.out == ""
    assert message.format(extras=extras) in run.err
    assert "Traceback" not in run.err


def test_a_module_that_fails_on_import_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host module raising while imported is reported by its error, not a traceback."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken_host_specs.py").write_text("raise RuntimeError('no database here')\n")
    run = cli("docs", "--hookspecs", "broken_host_specs")
    assert run.code == EXIT_USAGE
    assert "cannot import 'broken_host_specs': RuntimeError: no database here" in run.err
    assert "Traceback" not in run.err
    sys.modules.pop("broken_host_specs", None)


def test_an_api_permission_missing_from_the_catalogue_is_refused(extras: str) -> None:
    """An API class whose method needs a permission nobody defined is refused (exit 1)
    with a message naming the method and the permission; --json reports it too."""
    run = cli("docs", "--api-class", f"{extras}:TicketAPI")
    assert run.code == EXIT_REFUSED
    assert run.out == ""
    assert "API method list_tickets needs 'read_tickets'" in run.err
    refused = cli("docs", "--api-class", f"{extras}:TicketAPI", "--json")
    assert refused.code == EXIT_REFUSED
    assert refused.json()["ok"] is False
    assert "close_ticket needs 'close_tickets'" in refused.json()["message"]


def test_a_hook_specified_twice_is_refused(extras: str) -> None:
    """Giving the same specifications twice is refused (exit 1), naming the hook."""
    run = cli(
        "docs",
        "--permissions",
        f"{extras}:TICKETS",
        "--hookspecs",
        f"{extras}:HostHooks",
        "--hookspecs",
        f"{extras}:HostHooks",
    )
    assert run.code == EXIT_REFUSED
    assert "crm_ticket_opened" in run.err


def test_docs_runs_as_a_program(extras: str, tmp_path: Path) -> None:
    """`python -m services_ai_plugins docs` finds a host module in the working folder."""
    env_path = str(ROOT / "src")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "services_ai_plugins",
            "docs",
            "--format",
            "json",
            "--hookspecs",
            f"{extras}:HostHooks",
            "--permissions",
            f"{extras}:TICKETS",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )
    assert completed.returncode == EXIT_OK, completed.stderr
    names = [hook["name"] for hook in json.loads(completed.stdout)["hooks"]]
    assert names[-1] == "crm_ticket_opened"
