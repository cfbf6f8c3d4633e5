"""``manage.py plugins``: the SDK's command line on the Django project's registry and host.

The registry is the one ``SERVICES_AI_PLUGINS['STORAGE']`` names (``REGISTRY_STORAGE``:
a SQLite file until the project's own database holds it), the plugins folder
``PLUGINS_DIR``; ``call`` goes through the project's host, whose ``HostServices`` read
the example CRM's models. Uploaded plugins run sandboxed, as the example project's
settings say.
"""

from __future__ import annotations

import getpass
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from business.models import Business, Lead
from cryptography.fernet import Fernet
from django.conf import Settings
from django.core.management import call_command
from django.core.management.base import CommandError

from django_adapter.conftest import REGISTRY_STORAGE
from services_ai_plugins import pack_plugin
from services_ai_plugins._registry import Registry
from services_ai_plugins._storage._sqlite import SQLiteStorage
from services_ai_plugins.django import conf
from services_ai_plugins.storage import PluginStatus

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="uploaded plugins run in forked workers"),
]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django_app"
SRC = Path(__file__).resolve().parents[2] / "src"

#: Reads the tenant's leads through the API and looks up the lead it is given by its id;
#: talks on standard output, which must not spoil the command's output.
READER = """\
import os

from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead, api):
        print("a plugin talking on standard output")
        found = api.get_lead(lead.id)
        return {
            "pid": os.getpid(),
            "tenant": api.tenant,
            "leads": sorted(row.name for row in api.list_leads()),
            "given": None if found is None else [found.tenant, found.name],
            "settings": [api.get_setting("greeting"), api.get_setting("token")],
        }
"""

CRASHER = """\
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead):
        raise RuntimeError("boom: " + lead.id)
"""


KEY = Fernet.generate_key().decode()


def plugin_folder(root: Path, plugin_id: str, source: str) -> Path:
    """``root/src/<plugin_id>/``: ``main.py`` and a manifest (read_leads; a greeting and a
    secret token as settings)."""
    folder = root / "src" / plugin_id
    folder.mkdir(parents=True)
    manifest = {
        "id": plugin_id,
        "name": plugin_id.title(),
        "version": "1.0.0",
        "entry_point": "main.py",
        "plugin_class": "Plugin",
        "permissions": ["read_leads"],
        "settings": [
            {"name": "greeting", "type": "string", "default": "Hello"},
            {"name": "token", "type": "secret"},
        ],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(source)
    return folder


def packed(root: Path, plugin_id: str, source: str) -> Path:
    """The plugin as a vendor uploads it: a ZIP packed from its folder."""
    folder = plugin_folder(root, plugin_id, source)
    return pack_plugin(folder, root / f"{plugin_id}.zip").path


class Ran(NamedTuple):
    """One ``manage.py plugins ...`` through ``call_command``."""

    code: int
    out: str
    err: str
    #: The CommandError's message (None when the command succeeded).
    message: str | None

    def json(self) -> Any:
        return json.loads(self.out)


def plugins(*argv: str | Path) -> Ran:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("plugins", *map(str, argv), stdout=out, stderr=err)
    except CommandError as error:
        return Ran(error.returncode, out.getvalue(), err.getvalue(), str(error))
    return Ran(0, out.getvalue(), err.getvalue(), None)


def ok(*argv: str | Path) -> Ran:
    ran = plugins(*argv)
    assert ran.code == 0, ran
    return ran


class Project(NamedTuple):
    root: Path
    plugins_dir: Path
    acme_lead: Lead
    globex_lead: Lead


@pytest.fixture
def project(tmp_path: Path, settings: Settings) -> Project:
    """The CRM with two businesses and their leads; a registry (``REGISTRY_STORAGE``) and a
    plugins folder of its own."""
    plugins_dir = tmp_path / "plugins"
    settings.SERVICES_AI_PLUGINS = {
        **settings.SERVICES_AI_PLUGINS,
        "STORAGE": REGISTRY_STORAGE(tmp_path),
        "PLUGINS_DIR": str(plugins_dir),
        # Generous time-outs: the machine is shared and noisy.
        "SANDBOX": {
            **settings.SERVICES_AI_PLUGINS["SANDBOX"],
            "timeout": 30.0,
            "wait_timeout": 30.0,
        },
        "HOST": {
            **settings.SERVICES_AI_PLUGINS["HOST"],
            # The keys of secret settings: the host's, and manage.py plugins' too.
            "secret_keys": [KEY],
            # A host that would look at the registry, and write what it gathered, only
            # in an hour: `call` itself brings it up to date, and writes at its end.
            "refresh_interval": 3600.0,
            "flush_interval": 3600.0,
        },
    }
    acme = Business.objects.create(slug="acme", name="Acme")
    globex = Business.objects.create(slug="globex", name="Globex")
    acme_lead = Lead.objects.create(business=acme, name="Ada", company="Acme")
    Lead.objects.create(business=acme, name="Grace")
    globex_lead = Lead.objects.create(business=globex, name="Linus", company="Globex")
    return Project(tmp_path, plugins_dir, acme_lead, globex_lead)


def deploy(project: Project, plugin_id: str, source: str, *tenants: str) -> None:
    ok("install", packed(project.root, plugin_id, source))
    ok("approve", plugin_id)
    for tenant in tenants:
        ok("enable", plugin_id, "--tenant", tenant)


def lead_data(lead: Lead, tenant: str) -> str:
    return json.dumps({"lead": {"id": str(lead.pk), "tenant": tenant, "name": lead.name}})


def me() -> str:
    return f"manage.py:{getpass.getuser()}"


# -- the lifecycle, on the project's registry --------------------------------------------------


def test_install_approve_enable_and_call_work_on_the_projects_registry_and_host(
    project: Project,
) -> None:
    """Each step lands in the registry the settings name, by manage.py's actor; ``call``
    goes through the project's host: the plugin reads the CRM's leads of its tenant."""
    archive = packed(project.root, "reader", READER)

    installed = ok("install", archive, "--json").json()
    assert installed["ok"] is True
    assert installed["status"] == "pending"
    assert installed["installed_by"] == me()
    assert Path(installed["package_path"]).is_relative_to(project.plugins_dir)

    listing = ok("list")
    assert "reader" in listing.out
    assert "pending" in listing.out
    ok("approve", "reader")
    enabled = ok("enable", "reader", "--tenant", "acme", "--actor", "ops@crm")
    assert enabled.out.strip() == "enabled reader for tenant acme: approved"

    called = ok("call", "lead_created", "--tenant", "acme", "--sample", "--json").json()
    [outcome] = called["outcomes"]
    assert outcome["plugin_id"] == "reader"
    assert outcome["ok"] is True
    # The project's sandbox policy holds: the uploaded plugin ran in a worker process.
    assert outcome["result"].pop("pid") != os.getpid()
    # The CRM's leads of acme, read through the project's HostServices (the ORM).
    assert outcome["result"]["tenant"] == "acme"
    assert outcome["result"]["leads"] == ["Ada", "Grace"]
    assert called["not_loaded"] == []

    text = ok(
        "call", "lead_created", "--tenant", "acme", "--data", lead_data(project.acme_lead, "acme")
    )
    assert "ok" in text.out
    assert '"leads": ["Ada", "Grace"]' in text.out
    assert '"given": ["acme", "Ada"]' in text.out

    # The registry the settings name holds it all, with who did what.
    registry = Registry(conf.plugins_settings().open_storage())
    try:
        assert registry.plugin("reader").status is PluginStatus.APPROVED
        assert registry.enabled_plugins("acme") == ["reader"]
        assert registry.enabled_plugins("globex") == []
        actors = [(e.action, e.actor) for e in registry.audit_log(plugin_id="reader")]
    finally:
        registry.storage.close()
    assert actors == [("enable", "ops@crm"), ("approve", me()), ("install", me())]
    audit = ok("audit", "--plugin", "reader", "--json").json()
    assert [(e["action"], e["actor"]) for e in audit["events"]] == actors


def test_a_plugin_sees_only_the_tenant_it_is_called_for(project: Project) -> None:
    """Called for acme with the id of globex's lead, the plugin finds nothing of globex's;
    for globex, where it is not enabled, it does not run at all."""
    deploy(project, "reader", READER, "acme")

    called = ok(
        "call",
        "lead_created",
        "--tenant",
        "acme",
        "--data",
        lead_data(project.globex_lead, "acme"),
        "--json",
    ).json()
    [outcome] = called["outcomes"]
    outcome["result"].pop("pid")
    assert outcome["result"] == {
        "tenant": "acme",
        "leads": ["Ada", "Grace"],
        "given": None,
        "settings": ["Hello", None],
    }

    elsewhere = ok(
        "call",
        "lead_created",
        "--tenant",
        "globex",
        "--data",
        lead_data(project.globex_lead, "globex"),
        "--json",
    ).json()
    assert elsewhere["outcomes"] == []


def test_a_plugin_printing_does_not_spoil_the_json(project: Project) -> None:
    """What a (sandboxed) plugin prints goes to standard error: stdout stays one JSON document."""
    deploy(project, "reader", READER, "acme")
    called = ok("call", "lead_created", "--tenant", "acme", "--sample", "--json")
    assert called.json()["outcomes"][0]["ok"] is True  # the whole of stdout parses
    assert "a plugin talking on standard output" not in called.out


def test_a_failing_plugin_gives_the_clis_exit_code_and_its_failure_is_kept(
    project: Project,
) -> None:
    """``call`` with a crashing plugin exits 1 as the CLI does; the project's host wrote
    the failure where ``failures`` reads it, and the host stays usable for the next call."""
    deploy(project, "crasher", CRASHER, "acme")
    deploy(project, "reader", READER, "acme")

    ran = plugins("call", "lead_created", "--tenant", "acme", "--sample", "--json")
    assert ran.code == 1
    outcomes = {o["plugin_id"]: o for o in ran.json()["outcomes"]}
    assert outcomes["crasher"]["ok"] is False
    assert "boom" in outcomes["crasher"]["failure"]["message"]
    assert outcomes["reader"]["ok"] is True
    assert ran.message == "manage.py plugins call ended with exit code 1"

    failures = ok("failures", "crasher", "--json").json()["failures"]
    assert [(f["plugin_id"], f["tenant"], f["hook"]) for f in failures] == [
        ("crasher", "acme", "lead_created")
    ]
    again = plugins("call", "lead_created", "--tenant", "acme", "--sample", "--json")
    assert again.code == 1
    assert {o["plugin_id"] for o in again.json()["outcomes"]} == {"crasher", "reader"}


def test_check_runs_a_plugin_folder_in_a_throwaway_host(project: Project) -> None:
    """``check`` needs no registry: it installs nothing into the project's."""
    folder = plugin_folder(project.root, "reader", READER)
    checked = ok("check", folder, "--examples", "0", "--json").json()
    assert checked["ok"] is True
    assert checked["plugin_id"] == "reader"
    assert ok("list", "--json").json()["plugins"] == []


def test_the_other_operator_commands_work_on_the_project_and_its_host_sees_them(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """show, settings, suspend/resume, disable, metrics, resolve, uninstall: each changes or
    reads the project's registry, and the project's host (built by the first call) follows.
    A secret is sealed with the keys of the project's host (none in the environment)."""
    monkeypatch.delenv("SERVICES_AI_PLUGINS_SECRET_KEYS", raising=False)
    deploy(project, "reader", READER, "acme", "globex")

    def results(tenant: str) -> list[Any]:
        called = ok("call", "lead_created", "--tenant", tenant, "--sample", "--json").json()
        return [outcome["result"] for outcome in called["outcomes"]]

    [before] = results("acme")
    assert before["settings"] == ["Hello", None]

    shown = ok("show", "reader", "--json").json()
    assert [t["tenant"] for t in shown["tenants"]] == ["acme", "globex"]

    ok("settings", "set", "reader", "--tenant", "acme", "--set", "greeting=Hi", "--set", "token=s3")
    listed = ok("settings", "get", "reader", "--tenant", "acme", "--json").json()["settings"]
    assert {s["name"]: s["value"] for s in listed} == {"greeting": "Hi", "token": "<set>"}
    [after] = results("acme")
    assert after["settings"] == ["Hi", "s3"]  # the host opens what manage.py sealed

    ok("suspend", "reader", "--tenant", "acme", "--reason", "looks odd")
    assert results("acme") == []
    assert len(results("globex")) == 1
    ok("resume", "reader", "--tenant", "acme")
    assert len(results("acme")) == 1

    metrics = ok("metrics", "reader", "--json").json()["metrics"]
    assert [(m["hook"], m["calls"], m["errors"]) for m in metrics] == [("lead_created", 4, 0)]
    assert ok("resolve", "reader", "--json").json()["resolved"] == 0

    ok("disable", "reader", "--tenant", "globex")
    assert results("globex") == []
    ok("uninstall", "reader")
    assert results("acme") == []
    assert ok("list", "--status", "approved", "--json").json()["plugins"] == []


def test_sandbox_info_reports_the_projects_plugins_folder(project: Project) -> None:
    info = ok("sandbox-info", "--json").json()
    assert info["readable"][0] == str(project.plugins_dir)


# -- refusals ----------------------------------------------------------------------------------


def test_a_refused_input_gives_exit_code_1_and_the_clis_message(project: Project) -> None:
    ran = plugins("approve", "nope")
    assert ran.code == 1
    assert ran.err == "error: no plugin 'nope' is installed\n"
    assert ran.message == "no plugin 'nope' is installed"

    as_json = plugins("approve", "nope", "--json")
    assert as_json.code == 1
    assert as_json.message == "no plugin 'nope' is installed"
    assert as_json.json() == {
        "ok": False,
        "error": "PluginNotFound",
        "message": "no plugin 'nope' is installed",
    }

    bad = plugins("install", project.root / "missing.zip")
    assert bad.code == 1
    assert "no such file or folder" in (bad.message or "")


@pytest.mark.parametrize("option", ["--db", "--plugins-dir", "--plug"])
def test_db_and_plugins_dir_are_refused(project: Project, option: str) -> None:
    """The project's settings decide the registry and the plugins folder: a usage error (2)
    that says so, and nothing is written where the option pointed (an abbreviation too)."""
    elsewhere = project.root / "elsewhere"
    archive = packed(project.root, "reader", READER)
    ran = plugins("install", archive, option, elsewhere)
    assert ran.code == 2
    assert "SERVICES_AI_PLUGINS['STORAGE'] and ['PLUGINS_DIR']" in (ran.message or "")
    assert f"argument {'--plugins-dir' if option == '--plug' else option}:" in ran.err
    assert not elsewhere.exists()
    assert ok("list", "--json").json()["plugins"] == []


def test_a_wrong_setting_is_a_refusal_naming_its_key(project: Project, settings: Settings) -> None:
    settings.SERVICES_AI_PLUGINS = {**settings.SERVICES_AI_PLUGINS, "BREAKER": "five"}
    ran = plugins("list")
    assert ran.code == 1
    assert ran.message == (
        "SERVICES_AI_PLUGINS['BREAKER'] must be a dict of keyword arguments, not str"
    )


def test_a_usage_error_gives_exit_code_2(project: Project) -> None:
    ran = plugins("enable", "reader")  # --tenant missing
    assert ran.code == 2
    assert "the following arguments are required: --tenant" in (ran.message or "")


def test_one_commands_help_leaves_out_db_and_plugins_dir(project: Project) -> None:
    helped = ok("install", "--help")
    assert helped.out.startswith("usage: manage.py plugins install")
    assert "--actor" in helped.out
    assert "--json" in helped.out
    assert "--db" not in helped.out
    assert "--plugins-dir" not in helped.out


# -- a real manage.py ----------------------------------------------------------------------------


SETTINGS = """\
# The example CRM's settings, with the registry in a SQLite file of its own (until the
# project's database holds it) and generous sandbox time-outs (a shared, noisy machine).
from crm.settings import *  # noqa: F403

PLUGINS = SERVICES_AI_PLUGINS  # noqa: F405
SERVICES_AI_PLUGINS = {{
    **PLUGINS,
    "STORAGE": {registry!r},
    "SANDBOX": {{**PLUGINS["SANDBOX"], "timeout": 30.0, "wait_timeout": 30.0}},
    "HOST": {{"entry_points": False}},
}}
"""

SEED = """\
from business.models import Business, Lead
acme = Business.objects.create(slug="acme", name="Acme")
globex = Business.objects.create(slug="globex", name="Globex")
Lead.objects.create(business=acme, name="Ada")
Lead.objects.create(business=globex, name="Linus")
"""


Done = subprocess.CompletedProcess[str]


class ManagePy:
    def __init__(self, root: Path) -> None:
        self.env = {
            **os.environ,
            "CRM_DATA": str(root / "data"),
            "DJANGO_SETTINGS_MODULE": "cmd_settings",
            "PYTHONPATH": os.pathsep.join([str(SRC), str(root)]),
        }

    def __call__(self, *argv: str | Path, stdout: int = subprocess.PIPE) -> Done:
        return subprocess.run(
            [sys.executable, "manage.py", *map(str, argv)],
            cwd=EXAMPLE,
            env=self.env,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            check=False,
        )


def test_manage_py_plugins_in_the_example_project(tmp_path: Path) -> None:
    """The real command line: help, install ... call, JSON, and the CLI's exit codes."""
    (tmp_path / "data").mkdir()
    registry = tmp_path / "data" / "registry.db"
    (tmp_path / "cmd_settings.py").write_text(SETTINGS.format(registry=str(registry)))
    manage = ManagePy(tmp_path)
    for step in (("migrate", "-v", "0"), ("shell", "-c", SEED)):
        done = manage(*step)
        assert done.returncode == 0, done.stderr

    helped = manage("plugins", "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: manage.py plugins")
    for command in ("install", "list", "approve", "enable", "call", "check", "failures"):
        assert f"\n    {command} " in helped.stdout

    archive = packed(tmp_path, "reader", READER)
    for step in (
        ("install", archive),
        ("approve", "reader"),
        ("enable", "reader", "--tenant", "acme"),
    ):
        done = manage("plugins", *step)
        assert done.returncode == 0, done.stderr

    listed = manage("plugins", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [plugin] = json.loads(listed.stdout)["plugins"]
    assert (plugin["id"], plugin["status"], plugin["installed_by"]) == ("reader", "approved", me())

    called = manage("plugins", "call", "lead_created", "--tenant", "acme", "--sample")
    assert called.returncode == 0, called.stderr
    assert "ok" in called.stdout
    assert '"leads": ["Ada"]' in called.stdout
    assert "a plugin talking on standard output" in called.stderr

    refused = manage("plugins", "approve", "nope")
    assert refused.returncode == 1
    assert refused.stderr == "error: no plugin 'nope' is installed\n"
    assert refused.stdout == ""

    elsewhere = tmp_path / "other.db"
    usage = manage("plugins", "list", "--db", elsewhere)
    assert usage.returncode == 2
    assert "argument --db: is not taken by manage.py plugins" in usage.stderr
    assert "Traceback" not in usage.stderr
    assert not elsewhere.exists()

    # A reader that stops early (`| head`): exit 141 as the command line's, no traceback.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        piped = manage("plugins", "schema", stdout=write_end)
    finally:
        os.close(write_end)
    assert piped.returncode == 141
    assert "Traceback" not in piped.stderr
    assert "BrokenPipeError" not in piped.stderr

    # The registry is the file the settings name.
    storage = SQLiteStorage(registry)
    try:
        assert Registry(storage).enabled_plugins("acme") == ["reader"]
    finally:
        storage.close()


def test_print_help_is_the_command_lines() -> None:
    """``manage.py help plugins`` shows the command line's commands, not Django's options."""
    from services_ai_plugins.django.management.commands.plugins import Command

    out = io.StringIO()
    Command(stdout=out).print_help("manage.py", "plugins")
    text = out.getvalue()
    assert text.startswith("usage: manage.py plugins")
    assert "approve" in text
    assert "--settings" not in text
