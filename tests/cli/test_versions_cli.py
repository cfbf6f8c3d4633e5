"""The command line for versions: upgrade, rollback, diff, show's staged version and kept ones.

A real SQLite registry and real archives (each version a folder packed into a ZIP);
the switch to an approved version is a real PluginHost's, at its refresh.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import ROOT, CliRunner, Hosts
from services_ai_plugins import PluginHost, SandboxPolicy, SQLiteStorage, pack_plugin
from services_ai_plugins._cli._common import Site
from services_ai_plugins._cli._main import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, _parser, main
from services_ai_plugins._versions import UpgradePolicy
from services_ai_plugins.events import Context

ACME = Context(tenant="acme")

SOURCE = """\
VERSION = {version!r}

from services_ai_plugins import hookimpl
from services_ai_plugins.events import Widget


class Plugin:
    @hookimpl
    def dashboard_widget(self, context, settings):
        return Widget(
            tenant=context.tenant,
            title=f"v{{VERSION}} {{settings.get('label')}}",
            html="<p>x</p>",
        )
"""

SETTINGS: tuple[Mapping[str, Any], ...] = ({"name": "label", "type": "string", "default": "none"},)

#: Text a hostile plugin puts in its changelog: clear the screen, retitle the terminal, rewrite
#: the line, and a bidirectional override.
HOSTILE = "fixed\x1b[2J\x1b]0;pwned\x07 bugs\r\x1b[32mall approved\u202e"


class Cli(CliRunner):
    def ok(self, *args: str | Path) -> str:
        code, out, err = self(*args)
        assert code == EXIT_OK, (out, err)
        return out

    def json(self, *args: str | Path, code: int = EXIT_OK) -> Any:
        got, out, err = self(*args, "--json")
        assert got == code, (out, err)
        return json.loads(out)

    def version(
        self,
        version: str,
        *,
        permissions: Sequence[str] = ("dashboard_widgets",),
        **manifest: Any,
    ) -> Path:
        """A version of the plugin ``crm-sync``, packed: the archive's path."""
        folder = self.root / "src" / f"crm-sync-{version}"
        folder.mkdir(parents=True)
        document = {
            "id": "crm-sync",
            "name": "CRM Sync",
            "version": version,
            "entry_point": "main.py",
            "plugin_class": "Plugin",
            "permissions": list(permissions),
            "settings": [dict(s) for s in SETTINGS],
            **manifest,
        }
        (folder / "manifest.json").write_text(json.dumps(document))
        (folder / "main.py").write_text(SOURCE.format(version=version))
        return pack_plugin(folder, self.root / f"crm-sync-{version}.zip").path

    def running(self, version: str = "1.0.0") -> None:
        """Install, approve and enable ``version`` for acme (label ``Acme``)."""
        self.ok("install", self.version(version))
        self.ok("approve", "crm-sync")
        self.ok("enable", "crm-sync", "--tenant", "acme")
        self.ok("settings", "set", "crm-sync", "--tenant", "acme", "--set", "label=Acme")


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def folders(cli: Cli) -> list[str]:
    where = cli.plugins / "crm-sync"
    return sorted(p.name for p in where.iterdir()) if where.is_dir() else []


def make_host(hosts: Hosts, cli: Cli) -> PluginHost:
    """A real host on the command line's registry and plugins folder, its plugins sandboxed."""
    return cast(
        "PluginHost",
        hosts(
            storage=SQLiteStorage(cli.db),
            plugins_dir=cli.plugins,
            sandbox=SandboxPolicy(timeout=10.0),
        ),
    )


def titles(host: PluginHost) -> list[str]:
    return [w.title for w in host.hook.dashboard_widget(context=ACME)]


# -- upgrade -----------------------------------------------------------------------------------


def test_upgrade_stages_the_new_version_and_prints_its_diff(cli: Cli) -> None:
    """The running version stays; the text shows the diff against it and that it waits."""
    cli.running()
    out = cli.ok("upgrade", cli.version("2.0.0", permissions=("dashboard_widgets", "read_leads")))
    lines = out.splitlines()
    assert lines[0].startswith("staged crm-sync 2.0.0 beside the running 1.0.0")
    assert "Version 1.0.0 -> 2.0.0" in lines
    assert "  ! asks for the permission 'read_leads'" in lines
    assert "  + read_leads (risk medium): Read the tenant's leads." in lines
    assert lines[-1].startswith("waits for approval: services-ai-plugins approve crm-sync")
    shown = cli.json("show", "crm-sync")
    assert shown["version"] == "1.0.0"
    assert shown["status"] == "approved"
    assert shown["staged"]["version"] == "2.0.0"
    assert shown["staged"]["approved"] is False
    assert folders(cli) == ["1.0.0", "2.0.0"]
    events = cli.json("audit", "--plugin", "crm-sync", "--limit", "1")["events"]
    assert events[0]["action"] == "stage"
    assert events[0]["actor"] == "ops@test"


def test_upgrade_json_has_the_plugin_the_staged_version_and_the_diff(cli: Cli) -> None:
    cli.running()
    document = cli.json("upgrade", cli.version("1.1.0"))
    assert document["ok"] is True
    assert document["plugin"]["version"] == "1.0.0"
    assert document["plugin"]["staged"] == document["staged"]
    assert document["staged"]["version"] == "1.1.0"
    assert document["staged"]["installed_by"] == "ops@test"
    assert document["staged"]["approved"] is False
    assert document["auto_approved"] is False
    assert document["diff"]["from"]["version"] == "1.0.0"
    assert document["diff"]["to"]["version"] == "1.1.0"
    assert document["diff"]["asks_for_nothing_new"] is True
    assert {c["path"] for c in document["diff"]["files"]["changed"]} == {
        "main.py",
        "manifest.json",
    }


def test_an_older_version_needs_downgrade(cli: Cli) -> None:
    """Refused with exit 1 and the VersionError naming --downgrade; no folder is written."""
    cli.running()
    older = cli.version("0.9.0")
    code, out, err = cli("upgrade", older)
    assert code == EXIT_REFUSED
    assert out == ""
    assert "older than the installed version 1.0.0; pass --downgrade" in err
    assert "downgrade=True" not in err
    document = cli.json("upgrade", older, code=EXIT_REFUSED)
    assert document["ok"] is False
    assert document["error"] == "VersionError"
    assert "pass --downgrade" in document["message"]
    assert folders(cli) == ["1.0.0"]
    assert cli.json("show", "crm-sync")["staged"] is None

    out = cli.ok("upgrade", older, "--downgrade")
    assert out.startswith("staged crm-sync 0.9.0 beside the running 1.0.0")
    # install --reinstall takes --downgrade too (the same path).
    code, _, err = cli("install", cli.version("0.8.0"), "--reinstall")
    assert (code, "pass --downgrade" in err) == (EXIT_REFUSED, True)
    assert cli("install", cli.root / "crm-sync-0.8.0.zip", "--reinstall", "--downgrade")[0] == 0
    assert cli.json("show", "crm-sync")["staged"]["version"] == "0.8.0"


def test_the_running_version_again_is_refused(cli: Cli) -> None:
    cli.running()
    with (cli.root / "src" / "crm-sync-1.0.0" / "main.py").open("a") as main_py:
        main_py.write("# rebuilt\n")
    rebuilt = pack_plugin(cli.root / "src" / "crm-sync-1.0.0", cli.root / "rebuilt.zip").path
    code, _, err = cli("upgrade", rebuilt)
    assert code == EXIT_REFUSED
    assert "this version runs already" in err


def test_upgrade_needs_an_installed_plugin(cli: Cli) -> None:
    """A plugin never installed, or rejected, is refused (exit 1) before anything is
    extracted: upgrade is not install."""
    archive = cli.version("1.0.0")
    code, _, err = cli("upgrade", archive)
    assert code == EXIT_REFUSED
    assert "no plugin 'crm-sync' is installed" in err
    assert not cli.plugins.joinpath("crm-sync").exists()
    assert cli.json("upgrade", archive, code=EXIT_REFUSED)["error"] == "PluginNotFound"

    cli.ok("install", archive)
    cli.ok("reject", "crm-sync", "--reason", "no")
    document = cli.json("upgrade", cli.version("1.1.0"), code=EXIT_REFUSED)
    assert document["error"] == "TransitionError"
    assert "install it instead" in document["message"]
    assert folders(cli) == ["1.0.0"]


def test_upgrade_of_a_pending_plugin_replaces_it(cli: Cli) -> None:
    """Nothing runs yet: the new version is pending in its place, with no diff."""
    cli.ok("install", cli.version("1.0.0"))
    out = cli.ok("upgrade", cli.version("1.1.0"))
    assert out.startswith("replaced pending crm-sync with 1.1.0: pending")
    document = cli.json("upgrade", cli.version("1.2.0"))
    assert document["plugin"]["version"] == "1.2.0"
    assert (document["staged"], document["diff"], document["auto_approved"]) == (None, None, False)


def test_install_keeps_its_refusal_and_install_reinstall_stages_as_upgrade(cli: Cli) -> None:
    """install of an installed plugin without --reinstall is refused; with it, it is the
    upgrade path: the version is staged and the same diff is printed."""
    cli.running()
    archive = cli.version("2.0.0")
    code, _, err = cli("install", archive)
    assert code == EXIT_REFUSED
    assert "pass --reinstall to replace it" in err
    assert folders(cli) == ["1.0.0"]
    out = cli.ok("install", archive, "--reinstall")
    assert out.startswith("staged crm-sync 2.0.0 beside the running 1.0.0")
    assert "Version 1.0.0 -> 2.0.0" in out.splitlines()
    document = cli.json("install", cli.version("2.1.0"), "--reinstall")
    assert document["version"] == "1.0.0"  # install's document is the plugin's, as before
    assert document["staged"]["version"] == "2.1.0"
    assert document["diff"]["to"]["version"] == "2.1.0"


def test_the_site_upgrade_policy_approves_only_what_asks_for_nothing_new(
    cli: Cli, tmp_path: Path
) -> None:
    """At a site whose host approves updates that ask for nothing new, upgrade says so; one
    that asks for a new permission still waits for an admin."""
    site = Site(
        prog="manage.py plugins",
        open_storage=lambda: SQLiteStorage(cli.db),
        plugins_dir=lambda: cli.plugins,
        host=lambda: pytest.fail("upgrade needs no host"),
        actor="site-admin",
        decided_by="the site decides",
        upgrades=lambda: UpgradePolicy(auto_approve=True),
    )

    def at_site(*args: str | Path) -> tuple[int, Any]:
        out = io.StringIO()
        code = main([*map(str, args), "--json"], stdout=out, stderr=out, site=site)
        return code, json.loads(out.getvalue())

    cli.running()
    code, document = at_site("upgrade", cli.version("1.1.0"))
    assert code == EXIT_OK, document
    assert document["auto_approved"] is True
    assert document["staged"]["approved_by"] == "upgrade-policy"
    out = io.StringIO()
    assert main(["show", "crm-sync"], stdout=out, site=site) == EXIT_OK
    assert "approved by the upgrade policy (asks for nothing new)" in out.getvalue()

    code, document = at_site(
        "upgrade", cli.version("1.2.0", permissions=("dashboard_widgets", "read_leads"))
    )
    assert code == EXIT_OK, document
    assert document["auto_approved"] is False
    assert document["staged"]["approved"] is False
    assert document["diff"]["reasons"] == ["asks for the permission 'read_leads'"]
    # The command line's own registry has the default policy: every version waits.
    text = cli.ok("upgrade", cli.version("1.3.0"))
    assert "waits for approval" in text


# -- the switch, rollback ----------------------------------------------------------------------


def test_rollback_returns_to_the_kept_version_a_host_switched_from(cli: Cli, hosts: Hosts) -> None:
    """upgrade, approve (CLI), the switch (a real sandboxed host), then rollback (CLI): the
    host serves the old version again, with the tenant's settings as they were."""
    cli.running()
    host = make_host(hosts, cli)
    assert titles(host) == ["v1.0.0 Acme"]
    cli.ok("upgrade", cli.version("2.0.0"))
    cli.ok("approve", "crm-sync")
    host.refresh()
    assert titles(host) == ["v2.0.0 Acme"]
    cli.ok("settings", "set", "crm-sync", "--tenant", "acme", "--set", "label=Changed")

    shown = cli.json("show", "crm-sync")
    assert shown["version"] == "2.0.0"
    assert [k["version"] for k in shown["kept_versions"]] == ["1.0.0"]
    assert shown["kept_versions"][0]["tenants"] == ["acme"]
    assert "kept for rollback: 1.0.0" in cli.ok("show", "crm-sync")

    out = cli.ok("rollback", "crm-sync")
    assert out.splitlines()[0] == "rolled back crm-sync from 2.0.0 to 1.0.0"
    host.refresh()
    assert titles(host) == ["v1.0.0 Acme"]
    # The version left is kept in turn: rolling "back" to it undoes the rollback.
    document = cli.json("rollback", "crm-sync", "--to", "2.0.0")
    assert (document["from"], document["to"]) == ("1.0.0", "2.0.0")
    assert document["plugin"]["version"] == "2.0.0"
    assert [k["version"] for k in document["kept_versions"]] == ["1.0.0"]
    host.refresh()
    assert titles(host) == ["v2.0.0 Changed"]
    actions = [e["action"] for e in cli.json("audit", "--plugin", "crm-sync")["events"]]
    assert actions[:2] == ["rollback", "rollback"]


def test_rollback_refusals_list_the_kept_versions(cli: Cli, hosts: Hosts) -> None:
    cli.running()
    code, _, err = cli("rollback", "crm-sync")
    assert code == EXIT_REFUSED
    assert "no earlier version is kept to roll back to" in err
    host = make_host(hosts, cli)
    cli.ok("upgrade", cli.version("2.0.0"))
    cli.ok("approve", "crm-sync")
    host.refresh()
    document = cli.json("rollback", "crm-sync", "--to", "1.5.0", code=EXIT_REFUSED)
    assert document["error"] == "VersionError"
    assert "this version is not kept (kept: 1.0.0)" in document["message"]
    code, _, err = cli("rollback", "crm-sync", "--to", "not a version")
    assert (code, "not a PEP 440 version" in err) == (EXIT_REFUSED, True)
    assert cli("rollback")[0] == EXIT_USAGE
    assert cli.json("show", "crm-sync")["version"] == "2.0.0"


def test_rollback_drops_a_staged_version(cli: Cli, hosts: Hosts) -> None:
    cli.running()
    host = make_host(hosts, cli)
    cli.ok("upgrade", cli.version("2.0.0"))
    cli.ok("approve", "crm-sync")
    host.refresh()
    cli.ok("upgrade", cli.version("3.0.0"))
    out = cli.ok("rollback", "crm-sync")
    assert "the staged version 3.0.0 was dropped" in out
    assert cli.json("show", "crm-sync")["staged"] is None


# -- diff --------------------------------------------------------------------------------------


def test_diff_compares_the_running_staged_and_kept_versions(cli: Cli, hosts: Hosts) -> None:
    cli.running()
    code, _, err = cli("diff", "crm-sync")
    assert (code, "only one version is installed" in err) == (EXIT_REFUSED, True)
    cli.ok("upgrade", cli.version("2.0.0", optional_permissions=["export_leads"]))
    out = cli.ok("diff", "crm-sync")
    assert out.splitlines()[0] == "Version 1.0.0 -> 2.0.0"
    assert "Optional permissions:" in out.splitlines()
    document = cli.json("diff", "crm-sync")
    assert document["plugin_id"] == "crm-sync"
    assert [p["name"] for p in document["diff"]["optional_permissions"]["added"]] == [
        "export_leads"
    ]
    reverse = cli.json("diff", "crm-sync", "--from", "2.0.0", "--to", "1.0.0")
    assert [p["name"] for p in reverse["diff"]["optional_permissions"]["removed"]] == [
        "export_leads"
    ]
    document = cli.json("diff", "crm-sync", "--from", "0.1", code=EXIT_REFUSED)
    assert document["error"] == "VersionError"
    assert "not running, staged or kept (known here: 1.0.0, 2.0.0)" in document["message"]
    assert cli("diff", "nobody")[0] == EXIT_REFUSED
    # After the switch, the default compares the newest kept version to the running one.
    cli.ok("approve", "crm-sync")
    make_host(hosts, cli).refresh()
    assert cli.ok("diff", "crm-sync").splitlines()[0] == "Version 1.0.0 -> 2.0.0"


def test_show_of_a_staged_version_prints_its_diff_against_the_running_one(cli: Cli) -> None:
    cli.running()
    cli.ok("upgrade", cli.version("2.0.0", permissions=("dashboard_widgets", "read_leads")))
    lines = cli.ok("show", "crm-sync").splitlines()
    at = lines.index("    waits for approval; its diff against the running version:")
    assert lines[at - 1].startswith("  staged 2.0.0: installed by ops@test at ")
    assert lines[at + 1] == "    Version 1.0.0 -> 2.0.0"
    assert "      + read_leads (risk medium): Read the tenant's leads." in lines
    document = cli.json("show", "crm-sync")
    assert document["staged_diff"]["to"]["version"] == "2.0.0"
    assert document["kept_versions"] == []
    cli.ok("approve", "crm-sync")
    text = cli.ok("show", "crm-sync")
    assert "approved by ops@test at " in text
    assert "hosts switch to it at their next refresh" in text
    assert cli.json("show", "crm-sync")["staged"]["approved_by"] == "ops@test"


def test_hostile_text_cannot_reach_the_terminal(cli: Cli) -> None:
    """A changelog and a setting description full of control codes (screen clear, title,
    carriage return, bidi override) are printed escaped by upgrade, show and diff."""
    cli.running()
    archive = cli.version(
        "2.0.0",
        changelog=HOSTILE,
        settings=[
            {"name": "label", "type": "string", "default": "none"},
            {"name": "mode", "type": "choice", "choices": [HOSTILE, "b"], "default": "b"},
        ],
    )
    outputs = [
        cli.ok("upgrade", archive),
        cli.ok("show", "crm-sync"),
        cli.ok("diff", "crm-sync"),
        cli.ok("audit", "--plugin", "crm-sync"),
    ]
    for out in outputs:
        for control in ("\x1b", "\x07", "\r", "\u202e"):
            assert control not in out
    assert "\\x1b[2J" in outputs[0]
    assert "\\u202e" in outputs[2]
    # JSON carries the text as it is, escaped by JSON itself.
    document = cli.json("diff", "crm-sync")
    assert document["diff"]["changelog"] == HOSTILE
    _, raw, _ = cli("diff", "crm-sync", "--json")
    assert "\x1b" not in raw


# -- settings, grant, revoke -------------------------------------------------------------------


def test_settings_grant_and_revoke_speak_json_and_keep_secrets_write_only(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.fernet import Fernet

    monkeypatch.setenv("SERVICES_AI_PLUGINS_SECRET_KEYS", Fernet.generate_key().decode())
    folder_archive = cli.version(
        "1.0.0",
        optional_permissions=["export_leads"],
        settings=[{"name": "token", "type": "secret"}, {"name": "label", "type": "string"}],
    )
    cli.ok("install", folder_archive)
    cli.ok("approve", "crm-sync")
    cli.ok("enable", "crm-sync", "--tenant", "acme")
    secret = "s3cr3t-value-7781"
    code, out, err = cli(
        "settings", "set", "crm-sync", "--tenant", "acme", "--set", f"token={secret}", "--json"
    )
    assert code == EXIT_OK, err
    assert secret not in out + err
    [token] = [s for s in json.loads(out)["settings"] if s["name"] == "token"]
    assert (token["set"], token["value"]) == (True, "<set>")
    for args in (("settings", "get", "crm-sync", "--tenant", "acme"), ("audit",)):
        for extra in ((), ("--json",)):
            code, out, err = cli(*args, *extra)
            assert code == EXIT_OK
            assert secret not in out + err
    grant = cli.json("grant", "crm-sync", "export_leads", "--tenant", "acme")
    assert grant["optional_grants"] == ["export_leads"]
    assert "export_leads" in grant["grants"]
    revoke = cli.json("revoke", "crm-sync", "export_leads", "--tenant", "acme")
    assert revoke["optional_grants"] == []
    document = cli.json("grant", "crm-sync", "read_invoices", "--tenant", "acme", code=1)
    assert document["ok"] is False


# -- a real process, the docs ------------------------------------------------------------------


def test_python_m_services_ai_plugins_upgrade(cli: Cli, tmp_path: Path) -> None:
    """The module runs upgrade in its own process: the diff on stdout, exit codes 0 and 1."""
    cli.running()
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "services_ai_plugins",
                *map(str, args),
                *("--db", str(cli.db), "--plugins-dir", str(cli.plugins), "--actor", "proc"),
            ],
            capture_output=True,
            text=True,
            env=environment,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )

    done = run("upgrade", cli.version("2.0.0", changelog=HOSTILE))
    assert done.returncode == EXIT_OK, done.stderr
    assert "Version 1.0.0 -> 2.0.0" in done.stdout.splitlines()
    assert "\x1b" not in done.stdout
    refused = run("upgrade", cli.version("0.1.0"))
    assert refused.returncode == EXIT_REFUSED
    assert "pass --downgrade" in refused.stderr
    assert "Traceback" not in refused.stderr


def _commands() -> list[str]:
    parser = _parser()
    [commands] = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sorted(cast("Mapping[str, Any]", commands.choices))


def test_every_command_is_in_the_docs_and_the_help() -> None:
    """docs/cli.md shows every command in its --help listing, and the version commands in
    the operator table with their options."""
    docs = (ROOT / "docs" / "cli.md").read_text()
    help_text = docs.split("$ services-ai-plugins --help", 1)[1].split("```", 1)[0]
    listed = {line.split()[0] for line in help_text.splitlines() if line.startswith("    ")}
    out = io.StringIO()
    assert main(["--help"], stdout=out) == EXIT_OK
    commands = _commands()
    assert {"upgrade", "rollback", "diff"} <= set(commands)
    for command in commands:
        assert command in listed, command
        assert f"\n    {command}" in out.getvalue(), command
    for row in (
        "| `upgrade ZIP\\|FOLDER [--downgrade]` |",
        "| `rollback NAME [--to VERSION]` |",
        "| `diff NAME [--from V] [--to V]` |",
        "| `install ZIP\\|FOLDER [--reinstall [--downgrade]]` |",
    ):
        assert row in docs, row
