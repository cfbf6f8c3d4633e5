"""What operators see: suspensions and load failures in list/show, requested permissions,
settings (secrets write-only), grant/revoke, CLI flags in messages, and --db URLs."""

from __future__ import annotations

import io
import json
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from conftest import CliRunner, plugin_folder
from services_ai_plugins._cli._main import EXIT_OK, EXIT_REFUSED, EXIT_USAGE

CRASHER = """\
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead):
        raise RuntimeError(f"boom: {lead.id}")
"""

WORKER = """\
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead):
        return lead.id
"""

BROKEN_IMPORT = """\
from services_ai_plugins import hookimpl

raise ImportError("this plugin needs the crm-client package")


class Plugin:
    @hookimpl
    def lead_created(self, lead):
        return lead.id
"""

SECRET = "hunter2-do-not-show"

SETTINGS = [
    {"name": "api_token", "type": "secret", "max_length": 40},
    {"name": "limit", "type": "integer", "default": 5, "min": 1},
]


class Operator(CliRunner):
    """Runs the CLI in-process against one registry and plugins folder."""

    def __init__(self, root: Path, db: str | None = None) -> None:
        super().__init__(root)
        if db is not None:
            self.db = db  # type: ignore[assignment]  # a URL instead of a file: --db takes both

    def ok(self, *args: str | Path) -> str:
        code, out, err = self(*args)
        assert code == EXIT_OK, (out, err)
        return out

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
        settings: Sequence[dict[str, Any]] = (),
    ) -> Path:
        """Write, install, approve and enable a plugin whose main.py is ``source``."""
        folder = plugin_folder(
            self.root, plugin_id, source, permissions=permissions, settings=settings
        )
        self.ok("install", folder)
        self.ok("approve", plugin_id)
        for tenant in tenants:
            self.ok("enable", plugin_id, "--tenant", tenant)
        return folder

    def trip_breaker(self, tenant: str = "acme") -> None:
        """Five failing calls in a row: the default breaker suspends the crasher for ``tenant``."""
        code, out, err = self(
            "call", "lead_created", "--tenant", tenant, "--sample", "--repeat", "5"
        )
        assert code == EXIT_REFUSED, (out, err)
        assert f"suspended crasher for tenant {tenant} by circuit-breaker" in out


@pytest.fixture(autouse=True)
def secret_keys(monkeypatch: pytest.MonkeyPatch) -> str:
    """The operator's secret key, in the environment the CLI reads it from."""
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    monkeypatch.setenv("SERVICES_AI_PLUGINS_SECRET_KEYS", key)
    return key


@pytest.fixture
def operator(tmp_path: Path) -> Operator:
    return Operator(tmp_path)


def by_id(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {plugin["id"]: plugin for plugin in document["plugins"]}


# -- suspensions -----------------------------------------------------------------------------


def test_show_and_list_name_the_breakers_tenant_suspension(operator: Operator) -> None:
    """After the breaker trips for one tenant, show and list (text and JSON) name the suspension:
    tenant, reason, by whom and since when; resuming the tenant clears it."""
    operator.deploy("crasher", CRASHER, tenants=("acme", "initech"))
    operator.deploy("worker", WORKER)
    operator.trip_breaker()

    shown = operator.json("show", "crasher")
    assert shown["status"] == "approved"  # a tenant suspension leaves the plugin approved
    [suspension] = shown["suspensions"]
    assert suspension["tenant"] == "acme"
    assert suspension["by"] == "circuit-breaker"
    assert "lead_created" in suspension["reason"]
    assert "consecutive failures" in suspension["reason"]
    assert suspension["since"]
    text = operator.ok("show", "crasher")
    assert "suspended for tenant acme by circuit-breaker since " in text
    assert "initech" not in text.split("suspended for tenant", 1)[1].splitlines()[0]

    listed = by_id(operator.json("list"))
    assert [s["tenant"] for s in listed["crasher"]["suspensions"]] == ["acme"]
    assert listed["crasher"]["suspensions"][0]["by"] == "circuit-breaker"
    assert listed["worker"]["suspensions"] == []
    lines = operator.ok("list").splitlines()
    crasher = lines.index(next(line for line in lines if line.startswith("crasher ")))
    assert lines[crasher + 1].startswith("  suspended for tenant acme by circuit-breaker")

    operator.ok("resume", "crasher", "--tenant", "acme")
    assert operator.json("show", "crasher")["suspensions"] == []
    assert "suspended" not in operator.ok("list")


def test_a_plugin_wide_suspension_names_who_suspended_it(operator: Operator) -> None:
    """suspend without --tenant: show gives the reason, the actor and no tenant."""
    operator.deploy("worker", WORKER)
    operator.ok("suspend", "worker", "--reason", "CRM down until Monday")
    [suspension] = operator.json("show", "worker")["suspensions"]
    assert suspension["tenant"] is None
    assert suspension["reason"] == "CRM down until Monday"
    assert suspension["by"] == "ops@test"
    assert "suspended everywhere by ops@test since " in operator.ok("show", "worker")
    assert by_id(operator.json("list"))["worker"]["suspensions"] == [suspension]


# -- approved but cannot load ------------------------------------------------------------------


def test_an_approved_plugin_that_cannot_load_shows_why(operator: Operator) -> None:
    """A host that could not import an approved plugin recorded a load failure: show and list
    give its exception and message; resolve clears it."""
    operator.deploy("broken", BROKEN_IMPORT)
    operator.deploy("worker", WORKER)
    code, out, err = operator("call", "lead_created", "--tenant", "acme", "--sample")
    assert code == EXIT_REFUSED, (out, err)
    assert "not loaded: broken" in out

    failure = operator.json("show", "broken")["load_failure"]
    assert failure is not None
    assert "crm-client" in failure["message"]
    assert failure["exc_type"]
    assert f"cannot load: {failure['exc_type']}: " in operator.ok("show", "broken")
    listed = by_id(operator.json("list"))
    assert listed["broken"]["load_failure"] == failure
    assert listed["worker"]["load_failure"] is None
    assert "  cannot load: " in operator.ok("list")

    operator.ok("resolve", "broken")
    assert operator.json("show", "broken")["load_failure"] is None
    assert "cannot load" not in operator.ok("list")


def test_a_load_failure_from_before_the_latest_approval_no_longer_counts(
    operator: Operator,
) -> None:
    """The fixed code, a new version approved and switched to, is not shown as unable to
    load (its old failure stays unresolved in `failures`)."""
    folder = operator.deploy("broken", BROKEN_IMPORT)
    operator("call", "lead_created", "--tenant", "acme", "--sample")
    assert operator.json("show", "broken")["load_failure"] is not None
    (folder / "main.py").write_text(WORKER)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "version": "1.0.1"}))
    operator.ok("install", folder, "--reinstall")  # staged beside the broken 1.0.0
    operator.ok("approve", "broken")
    assert operator.json("show", "broken")["load_failure"] is not None  # 1.0.0 still runs
    # The host of `call` switches to 1.0.1 at its refresh, then runs it.
    code, out, err = operator("call", "lead_created", "--tenant", "acme", "--sample")
    assert code == EXIT_OK, (out, err)
    shown = operator.json("show", "broken")
    assert (shown["version"], shown["load_failure"]) == ("1.0.1", None)
    assert operator.json("failures", "broken", "--unresolved")["failures"]


# -- permissions asked for ---------------------------------------------------------------------


def test_show_of_a_pending_plugin_lists_what_it_asks_for(operator: Operator) -> None:
    """Each permission with the catalogue's description and risk; optional ones marked."""
    folder = plugin_folder(
        operator.root, "mailer", WORKER, permissions=("read_leads", "send_email")
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["optional_permissions"] = ["read_invoices"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    operator.ok("install", folder)

    shown = operator.json("show", "mailer")
    assert shown["status"] == "pending"
    assert shown["requested_permissions"] == [
        {
            "name": "read_leads",
            "optional": False,
            "description": "Read the tenant's leads.",
            "risk": "medium",
        },
        {
            "name": "send_email",
            "optional": False,
            "description": "Send e-mail on the tenant's behalf.",
            "risk": "high",
        },
        {
            "name": "read_invoices",
            "optional": True,
            "description": "Read the tenant's invoices.",
            "risk": "medium",
        },
    ]
    text = operator.ok("show", "mailer")
    assert "asks for:" in text
    [email] = [line for line in text.splitlines() if "send_email" in line]
    assert "high" in email
    assert "Send e-mail on the tenant's behalf." in email
    [invoices] = [line for line in text.splitlines() if "read_invoices" in line]
    assert "optional" in invoices


# -- messages name CLI flags -------------------------------------------------------------------


def test_installing_again_names_the_reinstall_flag(operator: Operator) -> None:
    """Both refusals of a second install (the same version, or a plugin already approved)
    tell the operator to pass --reinstall, not the Python argument reinstall=True."""
    folder = plugin_folder(operator.root, "worker", WORKER)
    operator.ok("install", folder)
    code, _, err = operator("install", folder)
    assert code == EXIT_REFUSED
    assert "--reinstall" in err
    assert "reinstall=True" not in err
    document = operator.json("install", folder, code=EXIT_REFUSED)
    assert document["error"] == "TransitionError"  # the registry refuses before extracting
    assert "pass --reinstall" in document["message"]

    # A new version of an approved plugin: the registry refuses it.
    operator.ok("approve", "worker")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = "1.1.0"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = operator("install", folder)
    assert code == EXIT_REFUSED
    assert "pass --reinstall to replace it" in err
    assert "reinstall=True" not in err
    assert operator.json("show", "worker")["version"] == "1.0.0"
    operator.ok("install", folder, "--reinstall")
    assert operator.json("show", "worker")["staged"]["version"] == "1.1.0"  # beside 1.0.0


# -- settings ----------------------------------------------------------------------------------


def test_settings_get_and_set_with_secrets_write_only(operator: Operator) -> None:
    """settings set stores values (text coerced as a form's); settings get shows every setting,
    a secret only as <set> or <not set>: never in text, JSON or the audit trail."""
    operator.deploy("mailer", WORKER, settings=SETTINGS)
    before = operator.json("settings", "get", "mailer", "--tenant", "acme")
    assert before["settings"] == [
        {"name": "api_token", "type": "secret", "secret": True, "set": False, "value": "<not set>"},
        {"name": "limit", "type": "integer", "secret": False, "set": False, "value": 5},
    ]
    out = operator.ok(
        "settings", "set", "mailer", "--tenant", "acme", "--set", f"api_token={SECRET}",
        "--set", "limit=7",
    )  # fmt: skip
    assert SECRET not in out
    assert "set api_token, limit of mailer for tenant acme" in out
    after = operator.json("settings", "get", "mailer", "--tenant", "acme")
    assert after["settings"] == [
        {"name": "api_token", "type": "secret", "secret": True, "set": True, "value": "<set>"},
        {"name": "limit", "type": "integer", "secret": False, "set": True, "value": 7},
    ]
    text = operator.ok("settings", "get", "mailer", "--tenant", "acme")
    assert SECRET not in text
    assert "<set>" in text
    other = operator.json("settings", "get", "mailer", "--tenant", "initech")
    assert other["settings"][0]["value"] == "<not set>"  # per tenant

    # The plugin gets the value: the registry holds it, only the CLI never shows it.
    audit = operator("audit", "--plugin", "mailer", "--json")[1]
    assert "set settings" in audit
    assert SECRET not in audit
    for command in (("show", "mailer"), ("list",)):
        assert SECRET not in operator(*command, "--json")[1]

    operator.ok("settings", "set", "mailer", "--tenant", "acme", "--reset", "limit")
    limit = operator.json("settings", "get", "mailer", "--tenant", "acme")["settings"][1]
    assert (limit["value"], limit["set"]) == (5, False)


def test_a_secret_set_through_the_cli_is_not_in_the_database_file(
    operator: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """settings set encrypts a secret with the key of SERVICES_AI_PLUGINS_SECRET_KEYS: its text
    is in none of the SQLite files' bytes; without a key, setting one is refused, exit 1."""
    operator.deploy("mailer", WORKER, settings=SETTINGS)
    operator.ok("settings", "set", "mailer", "--tenant", "acme", "--set", f"api_token={SECRET}")
    files = [path for path in operator.root.rglob("registry.db*") if path.is_file()]
    assert files
    assert all(SECRET.encode() not in path.read_bytes() for path in files)
    assert any(b"$fernet" in path.read_bytes() for path in files)  # the search can find things
    monkeypatch.delenv("SERVICES_AI_PLUGINS_SECRET_KEYS")
    code, out, err = operator(
        "settings", "set", "mailer", "--tenant", "initech", "--set", f"api_token={SECRET}"
    )
    assert code == EXIT_REFUSED
    assert "SERVICES_AI_PLUGINS_SECRET_KEYS" in err
    assert SECRET not in out + err
    assert "Traceback" not in err


def test_refused_settings_change_nothing_and_never_echo_a_secret(operator: Operator) -> None:
    """Bad values exit 1 naming the setting; a NAME=VALUE without '=' is a usage error that
    does not repeat what was typed; nothing to set exits 1."""
    operator.deploy("mailer", WORKER, settings=SETTINGS)
    too_long = "x" * 41 + SECRET
    code, _, err = operator(
        "settings", "set", "mailer", "--tenant", "acme", "--set", f"api_token={too_long}",
        "--set", "limit=0",
    )  # fmt: skip
    assert code == EXIT_REFUSED
    assert "api_token" in err
    assert "limit" in err
    assert SECRET not in err
    document = operator.json(
        "settings", "set", "mailer", "--tenant", "acme", "--set", "limit=lots", code=EXIT_REFUSED
    )
    assert document["error"] == "SettingsError"
    assert [p["path"] for p in document["problems"]] == ["limit"]
    values = operator.json("settings", "get", "mailer", "--tenant", "acme")["settings"]
    assert [v["set"] for v in values] == [False, False]
    assert "set settings" not in operator("audit", "--json")[1]

    code, _, err = operator("settings", "set", "mailer", "--tenant", "acme", "--set", SECRET)
    assert code == EXIT_USAGE
    assert SECRET not in err
    assert "NAME=VALUE" in err
    code, _, err = operator("settings", "set", "mailer", "--tenant", "acme")
    assert code == EXIT_REFUSED
    assert "--set NAME=VALUE or --reset NAME" in err
    code, _, err = operator("settings", "get", "ghost", "--tenant", "acme")
    assert code == EXIT_REFUSED
    assert "ghost" in err


# -- grant and revoke --------------------------------------------------------------------------


def test_grant_and_revoke_an_optional_permission(operator: Operator) -> None:
    """grant adds an optional permission for one tenant (audited); revoke takes it back; a
    permission the manifest does not offer as optional is refused."""
    folder = plugin_folder(operator.root, "mailer", WORKER)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["optional_permissions"] = ["send_email"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    operator.ok("install", folder)
    operator.ok("approve", "mailer")

    granted = operator.json("grant", "mailer", "send_email", "--tenant", "acme")
    assert granted["optional_grants"] == ["send_email"]
    assert granted["grants"] == ["read_leads", "send_email"]
    assert operator.json("show", "mailer")["tenants"][0]["optional_grants"] == ["send_email"]
    assert "holds: read_leads, send_email" in operator.ok(
        "grant", "mailer", "send_email", "--tenant", "initech"
    )
    revoked = operator.json("revoke", "mailer", "send_email", "--tenant", "acme")
    assert revoked["optional_grants"] == []
    assert revoked["grants"] == ["read_leads"]
    actions = [e["action"] for e in operator.json("audit", "--plugin", "mailer")["events"]]
    assert actions[:2] == ["revoke", "grant"]

    code, _, err = operator("grant", "mailer", "write_leads", "--tenant", "acme")
    assert code == EXIT_REFUSED
    assert "write_leads" in err
    assert operator("grant", "mailer", "send_email")[0] == EXIT_USAGE  # --tenant is required


# -- --db takes a PostgreSQL URL -------------------------------------------------------------


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """A ``postgresql://`` URL of a new, empty database on the test server."""
    import psycopg

    name = f"saip_cli_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    parts = urllib.parse.urlsplit(postgres_url)
    yield urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def dump(url: str) -> str:
    """Every row of every table of the SDK's schema, as JSON text."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url) as connection:
        tables = connection.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'services_ai_plugins'"
        ).fetchall()
        rows = []
        for (table,) in tables:
            query = sql.SQL("SELECT row_to_json(t)::text FROM services_ai_plugins.{} t").format(
                sql.Identifier(table)
            )
            rows += [row[0] for row in connection.execute(query).fetchall()]
    assert rows
    return "\n".join(rows)


def test_the_operator_cli_works_on_postgresql(database_url: str, tmp_path: Path) -> None:
    """--db postgresql://...: list, install, approve, enable, settings, call (the breaker's
    suspension written there) and show all work on the server."""
    operator = Operator(tmp_path, db=database_url)
    assert operator.json("list")["plugins"] == []
    assert operator.ok("list") == "no plugins\n"
    operator.deploy("crasher", CRASHER, settings=SETTINGS)
    operator.deploy("worker", WORKER)
    assert sorted(by_id(operator.json("list"))) == ["crasher", "worker"]
    operator.ok("settings", "set", "crasher", "--tenant", "acme", "--set", f"api_token={SECRET}")
    token = operator.json("settings", "get", "crasher", "--tenant", "acme")["settings"][0]
    assert token["value"] == "<set>"
    assert SECRET not in dump(database_url)  # encrypted at rest: in no row of any table
    assert "$fernet" in dump(database_url)  # (the dump holds the settings)
    operator.trip_breaker()
    [suspension] = operator.json("show", "crasher")["suspensions"]
    assert (suspension["tenant"], suspension["by"]) == ("acme", "circuit-breaker")
    assert by_id(operator.json("list", "--tenant", "acme")).keys() == {"worker"}
    assert operator.json("failures", "crasher")["failures"]
    assert not (tmp_path / "registry.db").exists()  # nothing went to a SQLite file


def test_the_environment_may_name_a_postgresql_url(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SERVICES_AI_PLUGINS_DB=postgresql://... stands in for --db."""
    from services_ai_plugins._cli._main import main

    monkeypatch.setenv("SERVICES_AI_PLUGINS_DB", database_url)
    folder = plugin_folder(tmp_path, "worker", WORKER)
    argv = ["install", str(folder), "--plugins-dir", str(tmp_path / "plugins"), "--actor", "env"]
    assert main(argv, stdout=io.StringIO()) == EXIT_OK
    out = io.StringIO()
    assert main(["list", "--json"], stdout=out) == EXIT_OK
    assert [p["id"] for p in json.loads(out.getvalue())["plugins"]] == ["worker"]
    monkeypatch.delenv("SERVICES_AI_PLUGINS_DB")
    out = io.StringIO()
    monkeypatch.chdir(tmp_path)
    assert main(["list", "--json"], stdout=out) == EXIT_OK
    assert json.loads(out.getvalue())["plugins"] == []  # the default file, not the server


def test_an_unreachable_database_url_is_refused_without_its_password(tmp_path: Path) -> None:
    """A server that cannot be reached exits 1 with a StorageError, not a traceback, and the
    password in the URL is not repeated."""
    operator = Operator(tmp_path, db="postgresql://ops:s3cr3t-pw@127.0.0.1:1/registry")
    pytest.importorskip("psycopg")
    for command in (("list",), ("failures",)):
        code, out, err = operator(*command)
        assert code == EXIT_REFUSED, (out, err)
        assert err.startswith("error: ")
        assert "Traceback" not in err
        assert "s3cr3t-pw" not in err
    document = operator.json("list", code=EXIT_REFUSED)
    assert document["error"] == "StorageError"
    assert "s3cr3t-pw" not in json.dumps(document)


def test_a_json_setting_takes_json_text(operator: Operator) -> None:
    """--set NAME=VALUE of a json setting is parsed as JSON (an object stays an object);
    text that is not JSON is refused naming the setting, and nothing is stored."""
    rules = {"name": "rules", "type": "json", "default": {}}
    operator.deploy("router", WORKER, settings=[rules, {"name": "label", "type": "string"}])
    operator.ok(
        "settings", "set", "router", "--tenant", "acme",
        "--set", 'rules={"owner": ["ada", "bob"], "limit": 3}', "--set", 'label={"not": "parsed"}',
    )  # fmt: skip
    values = operator.json("settings", "get", "router", "--tenant", "acme")["settings"]
    assert values[0]["value"] == {"owner": ["ada", "bob"], "limit": 3}
    assert values[1]["value"] == '{"not": "parsed"}'  # a string setting keeps the text
    document = operator.json(
        "settings", "set", "router", "--tenant", "acme", "--set", "rules={oops", "--set",
        "label=changed", code=EXIT_REFUSED,
    )  # fmt: skip
    assert document["error"] == "SettingsError"
    assert [p["path"] for p in document["problems"]] == ["rules"]
    values = operator.json("settings", "get", "router", "--tenant", "acme")["settings"]
    assert values[1]["value"] == '{"not": "parsed"}'
