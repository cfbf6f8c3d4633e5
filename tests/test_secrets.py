"""Secret settings at rest: encrypted in every backend, decrypted for the plugin only.

Secrets are set through the public API (``Registry.set_settings`` or the
host's registry): the command line has no command that sets settings yet. The
command line's part is tested where it has one: it reads the keys from
``$SERVICES_AI_PLUGINS_SECRET_KEYS`` to run plugins, and never prints a secret.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import CliRunner, Hosts, Installer, plugin_folder
from services_ai_plugins import (
    AuditEvent,
    Manifest,
    MemoryStorage,
    PluginError,
    PluginHost,
    Registry,
    SandboxPolicy,
    SQLiteStorage,
    TenantRecord,
)
from services_ai_plugins._cli._main import EXIT_OK
from services_ai_plugins.errors import SecretKeyError
from services_ai_plugins.events import Context
from services_ai_plugins.storage import Change, Storage
from services_ai_plugins_testing.fakes import FakeHostServices

fernet = pytest.importorskip("cryptography.fernet")

ENV = "SERVICES_AI_PLUGINS_SECRET_KEYS"
HASH = "0" * 64
#: The secret every test sets: it must never be found at rest or in any output.
SECRET = "sk-live-7f3a9c1e-TOPSECRET-0d4b"
OTHER_SECRET = "sk-live-globex-ANOTHER-5e6f"

SETTINGS = [
    {"name": "token", "type": "secret"},
    {"name": "label", "type": "string"},
]


def new_key() -> str:
    return str(fernet.Fernet.generate_key().decode("ascii"))


KEY_1 = new_key()
KEY_2 = new_key()


def manifest(plugin_id: str = "crm-sync") -> Manifest:
    return Manifest.from_dict(
        {"id": plugin_id, "name": "Crm Sync", "version": "1.0.0", "settings": SETTINGS}
    )


def approved(registry: Registry, plugin_id: str = "crm-sync") -> Registry:
    registry.install(manifest(plugin_id), actor="dev", code_hash=HASH)
    registry.approve(plugin_id, actor="admin")
    return registry


def at_rest(folder: Path) -> bytes:
    """Every byte of every file under ``folder`` (a database, its journal and its WAL, ...)."""
    return b"".join(path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file())


@pytest.fixture(autouse=True)
def no_keys_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says which keys it has; none come from the machine's environment."""
    monkeypatch.delenv(ENV, raising=False)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SQLiteStorage]:
    folder = tmp_path / "db"
    folder.mkdir()
    storage = SQLiteStorage(folder / "registry.db")
    yield storage
    storage.close()


# -- at rest -------------------------------------------------------------------------------------


def test_a_secret_set_through_the_registry_is_not_in_the_sqlite_files(
    db: SQLiteStorage, tmp_path: Path
) -> None:
    """The database file (and its WAL) hold the secret encrypted; the same keys read it back."""
    registry = approved(Registry(db, secret_keys=[KEY_1]))
    values = registry.set_settings(
        "crm-sync", "acme", {"token": SECRET, "label": "visible-label"}, actor="owner"
    )
    assert values["token"] == SECRET  # the caller gets back what it set
    stored = registry.tenant("crm-sync", "acme")
    assert stored is not None
    assert set(stored.settings["token"]) == {"$fernet"}  # type: ignore[arg-type]
    db.close()
    content = at_rest(tmp_path / "db")
    assert b"visible-label" in content  # the record is there: the search below can find text
    assert b"$fernet" in content
    assert SECRET.encode() not in content
    reopened = SQLiteStorage(tmp_path / "db" / "registry.db")
    try:
        assert Registry(reopened, secret_keys=[KEY_1]).get_settings("crm-sync", "acme") == {
            "token": SECRET,
            "label": "visible-label",
        }
    finally:
        reopened.close()


def test_every_backend_stores_the_secret_encrypted(tmp_path: Path) -> None:
    """Memory storage too: what the storage holds is the sealed value, whatever the backend."""
    storage = MemoryStorage()
    registry = approved(Registry(storage, secret_keys=[KEY_1]))
    registry.set_settings("crm-sync", "acme", {"token": SECRET}, actor="owner")
    record = storage.get_tenant("crm-sync", "acme")
    assert record is not None
    assert SECRET not in json.dumps(dict(record.settings))
    assert registry.get_settings("crm-sync", "acme")["token"] == SECRET


def test_a_secret_is_not_in_the_postgresql_rows_nor_in_pg_dump(postgres_url: str) -> None:
    """Every row of every table, and pg_dump's output, hold the secret encrypted only."""
    psycopg = pytest.importorskip("psycopg")
    from services_ai_plugins import PostgresStorage

    schema = f"test_secrets_{uuid.uuid4().hex[:16]}"
    storage = PostgresStorage(postgres_url, schema=schema)
    try:
        registry = approved(Registry(storage, secret_keys=[KEY_1]))
        registry.set_settings(
            "crm-sync", "acme", {"token": SECRET, "label": "visible-label"}, actor="owner"
        )
        assert registry.get_settings("crm-sync", "acme")["token"] == SECRET
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    (schema,),
                )
            ]
            rows = [
                row[0]
                for table in tables
                for row in conn.execute(
                    psycopg.sql.SQL("SELECT row_to_json(t)::text FROM {}.{} t").format(
                        psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table)
                    )
                )
            ]
        text = "\n".join(rows)
        assert "visible-label" in text
        assert "$fernet" in text
        assert SECRET not in text
        pg_dump = shutil.which("pg_dump")
        if pg_dump is not None:
            done = subprocess.run(
                [pg_dump, "--schema", schema, "--dbname", postgres_url],
                capture_output=True,
                check=False,
                timeout=120,
            )
            if done.returncode == 0:
                assert b"visible-label" in done.stdout
                assert SECRET.encode() not in done.stdout
            else:  # only a pg_dump older than the server may refuse: the rows suffice then
                assert b"version mismatch" in done.stderr, done.stderr
    finally:
        storage.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    psycopg.sql.Identifier(schema)
                )
            )


# -- the plugin sees the decrypted value ---------------------------------------------------------


READ_TOKEN = """
@hookimpl
def lead_created(self, lead, api, settings):
    seen = [settings["token"], api.get_setting("token"), api.get_settings()["token"]]
    api.store_set("token", seen)
"""


@pytest.mark.parametrize(
    "isolation", [{"archive": "inprocess"}, {}], ids=["in-process", "sandboxed"]
)
def test_a_plugin_receives_its_tenants_decrypted_secret(
    hosts: Hosts,
    services: FakeHostServices,
    tmp_path: Path,
    isolation: dict[str, str],
) -> None:
    """Through the hook's ``settings`` and ``api.get_setting(s)``, each tenant its own value."""
    folder = tmp_path / "db"
    folder.mkdir()
    storage = SQLiteStorage(folder / "registry.db")
    host = hosts(
        storage=storage,
        sandbox=SandboxPolicy(isolation=isolation, timeout=10.0),
        secret_keys=[KEY_1],
    )
    Installer(tmp_path, "from services_ai_plugins import hookimpl\n\n\nclass Plugin:\n")(
        host, "reader", READ_TOKEN, tenants=("acme", "globex"), settings=SETTINGS
    )
    host.registry.set_settings("reader", "acme", {"token": SECRET}, actor="owner")
    host.registry.set_settings("reader", "globex", {"token": OTHER_SECRET}, actor="owner")
    for tenant, expected in (("acme", SECRET), ("globex", OTHER_SECRET)):
        lead = services.make_lead(tenant)
        host.hook.lead_created(lead=lead, context=Context(tenant=tenant))
        assert services.stored(tenant, "reader")["token"] == [expected] * 3
    assert host.failures("reader") == []
    assert SECRET.encode() not in at_rest(folder)


def test_a_sandboxed_plugin_cannot_find_the_keys(
    hosts: Hosts, services: FakeHostServices, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keys stay in the host: a hostile plugin's worker has none in its environment,
    nor in any /proc environ it can read, nor in its settings."""
    monkeypatch.setenv(ENV, f"{KEY_2},{KEY_1}")
    host = hosts(sandbox=SandboxPolicy(timeout=10.0))
    hunter = """
    @hookimpl
    def lead_created(self, lead, api, settings):
        found = [json.dumps(dict(os.environ)), json.dumps(dict(settings))]
        found.append(json.dumps(api.get_settings()))
        try:
            listed = os.listdir("/proc")
        except OSError:
            listed = []
        for pid in ["self", str(os.getppid()), *map(str, range(1, 300)), *listed]:
            try:
                with open(f"/proc/{pid}/environ", "rb") as stream:
                    found.append(stream.read().decode("latin-1"))
            except OSError:
                pass
        api.store_set("found", "\\n".join(found))
    """
    header = "import json, os\nfrom services_ai_plugins import hookimpl\n\n\nclass Plugin:\n"
    Installer(tmp_path, header)(host, "hunter", hunter, settings=SETTINGS)
    host.registry.set_settings("hunter", "acme", {"token": SECRET}, actor="owner")
    host.hook.lead_created(lead=services.make_lead("acme"), context=Context(tenant="acme"))
    assert host.failures("hunter") == []
    found = str(services.stored("acme", "hunter")["found"])
    assert SECRET in found  # its own secret it may read: the search did run
    for leaked in (KEY_1, KEY_2, ENV):
        assert leaked not in found


# -- keys: missing, wrong, rotated, badly written ------------------------------------------------


def test_setting_a_secret_without_a_key_is_refused_and_stores_nothing(
    db: SQLiteStorage,
) -> None:
    """The error names the env var and the secret; other settings and plugins keep working."""
    registry = approved(Registry(db))
    with pytest.raises(SecretKeyError) as caught:
        registry.set_settings("crm-sync", "acme", {"token": SECRET, "label": "x"}, actor="o")
    error = caught.value
    assert (error.plugin_id, error.tenant, error.setting) == ("crm-sync", "acme", "token")
    assert ENV in str(error)
    assert "no secret keys are configured" in str(error)
    assert isinstance(error, PluginError)
    assert registry.tenant("crm-sync", "acme") is None
    assert registry.audit_log(action="set settings") == []
    assert registry.set_settings("crm-sync", "acme", {"label": "x"}, actor="o") == {
        "token": None,
        "label": "x",
    }
    with pytest.raises(SecretKeyError, match="no secret keys"):
        registry.rotate_secrets(actor="ops")


def test_a_secret_under_another_key_is_a_clear_error_naming_it(db: SQLiteStorage) -> None:
    """get_settings names plugin, tenant and setting, never the value; setting it anew works."""
    approved(Registry(db, secret_keys=[KEY_1])).set_settings(
        "crm-sync", "acme", {"token": SECRET, "label": "x"}, actor="owner"
    )
    wrong = Registry(db, secret_keys=[KEY_2])
    with pytest.raises(SecretKeyError) as caught:
        wrong.get_settings("crm-sync", "acme")
    error = caught.value
    assert (error.plugin_id, error.tenant, error.setting) == ("crm-sync", "acme", "token")
    assert "secret setting 'token' of plugin 'crm-sync' for tenant 'acme'" in str(error)
    assert "none of the 1 secret key(s) from secret_keys decrypts it" in str(error)
    assert SECRET not in str(error)
    assert KEY_2 not in str(error)
    with pytest.raises(SecretKeyError):
        Registry(db).get_settings("crm-sync", "acme")  # no key at all
    # The lost key's secret is replaced by setting it again under the key there is.
    assert wrong.set_settings("crm-sync", "acme", {"token": "new"}, actor="owner")["token"] == "new"
    assert wrong.get_settings("crm-sync", "acme") == {"token": "new", "label": "x"}


OTHER = """
@hookimpl
def lead_created(self, lead, api):
    api.store_set("ran", 1)
"""


def test_a_host_with_the_wrong_key_logs_the_secret_as_unreadable_and_runs_the_rest(
    hosts: Hosts,
    services: FakeHostServices,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The plugin gets None for the secret it cannot have; other plugins are untouched."""
    folder = tmp_path / "db"
    folder.mkdir()
    storage = SQLiteStorage(folder / "registry.db")
    first = hosts(storage=storage, secret_keys=[KEY_1])
    install = Installer(tmp_path, "from services_ai_plugins import hookimpl\n\n\nclass Plugin:\n")
    install(first, "reader", READ_TOKEN, settings=SETTINGS)
    install(first, "other", OTHER)
    first.registry.set_settings("reader", "acme", {"token": SECRET}, actor="owner")
    first.close()
    host = hosts(storage=storage, secret_keys=[KEY_2])
    with caplog.at_level(logging.DEBUG, logger="services_ai_plugins"):
        host.hook.lead_created(lead=services.make_lead("acme"), context=Context(tenant="acme"))
    assert services.stored("acme", "reader")["token"] == [None] * 3
    assert services.stored("acme", "other")["ran"] == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("secret setting 'token' of plugin 'reader' for tenant 'acme'" in m for m in errors)
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_rotation_re_encrypts_every_secret_with_the_newest_key(db: SQLiteStorage) -> None:
    """New key first, rotate, drop the old key: every secret still reads, and rotating again
    changes nothing."""
    old = approved(Registry(db, secret_keys=[KEY_1]))
    approved(old, "lead-scorer")
    old.set_settings("crm-sync", "acme", {"token": SECRET}, actor="owner")
    old.set_settings("crm-sync", "globex", {"token": OTHER_SECRET}, actor="owner")
    old.set_settings("lead-scorer", "acme", {"label": "no secret here"}, actor="owner")
    both = Registry(db, secret_keys=[KEY_2, KEY_1])
    assert both.get_settings("crm-sync", "acme")["token"] == SECRET  # old keys still decrypt
    assert both.rotate_secrets(actor="ops") == 2
    events = both.audit_log(action="rotate secrets")
    assert sorted(e.tenant or "" for e in events) == ["acme", "globex"]
    assert all(e.actor == "ops" for e in events)
    assert events[0].after == {"settings": {"token": "********"}}
    assert SECRET not in repr(events)
    assert OTHER_SECRET not in repr(events)
    assert both.rotate_secrets(actor="ops") == 0
    new = Registry(db, secret_keys=[KEY_2])
    assert new.get_settings("crm-sync", "acme")["token"] == SECRET
    assert new.get_settings("crm-sync", "globex")["token"] == OTHER_SECRET
    with pytest.raises(SecretKeyError, match="'globex'"):
        Registry(db, secret_keys=[KEY_1]).get_settings("crm-sync", "globex")


def test_a_new_key_put_first_encrypts_new_secrets(db: SQLiteStorage) -> None:
    """The newest key encrypts: once set under [new, old], only the new key is needed."""
    approved(Registry(db, secret_keys=[KEY_2, KEY_1])).set_settings(
        "crm-sync", "acme", {"token": SECRET}, actor="owner"
    )
    assert Registry(db, secret_keys=[KEY_2]).get_settings("crm-sync", "acme")["token"] == SECRET
    with pytest.raises(SecretKeyError):
        Registry(db, secret_keys=[KEY_1]).get_settings("crm-sync", "acme")


def test_setting_a_secret_to_its_value_changes_nothing(db: SQLiteStorage) -> None:
    """Encryption is not a change: the same value writes no audit event and keeps the record."""
    registry = approved(Registry(db, secret_keys=[KEY_1]))
    first = registry.set_settings("crm-sync", "acme", {"token": SECRET}, actor="owner")
    record = registry.tenant("crm-sync", "acme")
    assert registry.set_settings("crm-sync", "acme", {"token": SECRET}, actor="owner") == first
    assert registry.tenant("crm-sync", "acme") == record
    assert len(registry.audit_log(action="set settings")) == 1
    registry.set_settings("crm-sync", "acme", {"token": None}, actor="owner")
    assert registry.get_settings("crm-sync", "acme")["token"] is None
    assert Registry(db).get_settings("crm-sync", "acme")["token"] is None  # nothing to decrypt


def plaintext_secret(storage: Storage, registry: Registry) -> None:
    """Store a secret the way the SDK did before secrets were encrypted: in plain text."""
    now = datetime.now(timezone.utc)
    storage.commit(
        Change(
            plugin_id="crm-sync",
            plugin_revision=registry.plugin("crm-sync").revision,
            tenant=TenantRecord(
                plugin_id="crm-sync",
                tenant="acme",
                settings={"token": SECRET},
                changed_at=now,
                changed_by="owner",
            ),
            audit=AuditEvent(
                at=now, actor="owner", action="set settings", plugin_id="crm-sync", tenant="acme"
            ),
        )
    )


@pytest.mark.parametrize("how", ["rotate", "next write"])
def test_a_plaintext_secret_from_before_is_read_with_a_warning_and_encrypted(
    db: SQLiteStorage, tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """Existing databases: a plain secret still reads (warned once, without its value); the next
    change of the tenant's settings, or rotate_secrets, encrypts it."""
    registry = approved(Registry(db, secret_keys=[KEY_1]))
    plaintext_secret(db, registry)
    with caplog.at_level(logging.WARNING, logger="services_ai_plugins"):
        assert registry.get_settings("crm-sync", "acme")["token"] == SECRET
        registry.get_settings("crm-sync", "acme")
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "'token' of plugin 'crm-sync' for tenant 'acme' is stored in plain text" in warnings[0]
    assert SECRET not in warnings[0]
    if how == "rotate":
        assert registry.rotate_secrets(actor="ops") == 1
    else:
        registry.set_settings("crm-sync", "acme", {"label": "changed"}, actor="owner")
    db.close()
    assert SECRET.encode() not in at_rest(tmp_path / "db")  # also not in a stale WAL frame?
    reopened = SQLiteStorage(tmp_path / "db" / "registry.db")
    try:
        assert (
            Registry(reopened, secret_keys=[KEY_1]).get_settings("crm-sync", "acme")["token"]
            == SECRET
        )
    finally:
        reopened.close()


# -- key text ------------------------------------------------------------------------------------


def test_keys_come_from_the_environment_newest_first(
    db: SQLiteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Comma-separated, spaces allowed: the first encrypts, every one decrypts."""
    monkeypatch.setenv(ENV, f" {KEY_2} , {KEY_1},")
    approved(Registry(db)).set_settings("crm-sync", "acme", {"token": SECRET}, actor="owner")
    assert Registry(db, secret_keys=[KEY_2]).get_settings("crm-sync", "acme")["token"] == SECRET
    monkeypatch.setenv(ENV, KEY_1)
    with pytest.raises(SecretKeyError, match=r"from \$SERVICES_AI_PLUGINS_SECRET_KEYS"):
        Registry(db).get_settings("crm-sync", "acme")


@pytest.mark.parametrize(
    "text", ["not-a-key", f"{new_key()},short", "x" * 44], ids=["word", "second", "not-base64"]
)
def test_badly_written_keys_are_refused_at_once_without_repeating_them(
    db: SQLiteStorage, monkeypatch: pytest.MonkeyPatch, services: FakeHostServices, text: str
) -> None:
    """The error names the variable and the key's position, never its text."""
    monkeypatch.setenv(ENV, text)
    position = "key 2 of 2" if "," in text else "key 1 of 1"
    for make in (
        lambda: Registry(db),
        lambda: PluginHost(services, storage=db, entry_points=False),
    ):
        with pytest.raises(SecretKeyError) as caught:
            make()
        message = str(caught.value)
        assert message.startswith(f"$SERVICES_AI_PLUGINS_SECRET_KEYS: {position} is not a Fernet")
        assert all(part not in message for part in text.split(","))
        assert caught.value.__cause__ is None
    monkeypatch.delenv(ENV)
    with pytest.raises(SecretKeyError, match=r"^secret_keys: key 1 of 1 is not a Fernet key"):
        Registry(db, secret_keys=["nope"])
    with pytest.raises(TypeError, match="a list of keys"):
        Registry(db, secret_keys=KEY_1)


def test_without_cryptography_only_secrets_need_the_extra(
    db: SQLiteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Setting a secret names the extra to install; everything else keeps working."""
    for name in [m for m in sys.modules if m == "cryptography" or m.startswith("cryptography.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cryptography", None)  # import cryptography: ImportError
    for keys in (None, [KEY_1]):
        registry = Registry(db, secret_keys=keys)
        if keys is None:
            approved(registry)
        with pytest.raises(SecretKeyError, match=r"pip install 'services-ai-plugins\[secrets\]'"):
            registry.set_settings("crm-sync", "acme", {"token": SECRET}, actor="owner")
        registry.set_settings("crm-sync", "acme", {"label": "plain"}, actor="owner")
        assert registry.get_settings("crm-sync", "acme") == {"token": None, "label": "plain"}


# -- the command line ----------------------------------------------------------------------------


REPORTER = """\
import hashlib

from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead, settings):
        token = settings["token"]
        return None if token is None else hashlib.sha256(token.encode()).hexdigest()
"""


def test_the_command_line_reads_keys_from_the_environment_and_never_shows_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``call`` hands the plugin the decrypted secret (keys from the env var); ``show``,
    ``audit`` and ``call`` print no secret, in text or JSON; the database holds none."""
    monkeypatch.setenv(ENV, KEY_1)
    cli = CliRunner(tmp_path)
    folder = plugin_folder(tmp_path, "reporter", REPORTER, settings=SETTINGS)
    for step in (
        ("install", folder),
        ("approve", "reporter"),
        ("enable", "reporter", "--tenant", "acme"),
    ):
        code, _, err = cli(*step)
        assert code == EXIT_OK, err
    storage = SQLiteStorage(cli.db)
    try:
        Registry(storage).set_settings("reporter", "acme", {"token": SECRET}, actor="owner")
    finally:
        storage.close()
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    outputs = []
    for command in (
        ("call", "lead_created", "--tenant", "acme", "--sample"),
        ("call", "lead_created", "--tenant", "acme", "--sample", "--json"),
        ("show", "reporter"),
        ("show", "reporter", "--json"),
        ("audit",),
        ("audit", "--json"),
    ):
        code, out, err = cli(*command)
        assert code == EXIT_OK, (command, out, err)
        outputs.append(out + err)
    assert digest in outputs[0]
    assert digest in outputs[1]
    assert "token" in outputs[3]  # show lists the setting's name
    assert all(SECRET not in output for output in outputs)
    assert SECRET.encode() not in at_rest(tmp_path)  # db, WAL, plugins folder, all of it
    monkeypatch.delenv(ENV)
    code, out, err = cli("call", "lead_created", "--tenant", "acme", "--sample", "--json")
    assert code == EXIT_OK, err
    assert digest not in out  # without the key the plugin gets no secret
    assert SECRET not in out + err


def test_check_plugin_runs_a_plugin_with_a_secret_without_any_key_configured(
    tmp_path: Path,
) -> None:
    """``check`` keeps nothing: its throwaway registry encrypts under a key of its own."""
    from services_ai_plugins import check_plugin

    source = (
        "from services_ai_plugins import hookimpl\n\n\nclass Plugin:\n"
        "    @hookimpl\n"
        "    def lead_created(self, lead, settings):\n"
        f"        if settings['token'] != {SECRET!r}:\n"
        "            raise RuntimeError('not the secret that was set')\n"
    )
    folder = plugin_folder(tmp_path, "checked", source, settings=SETTINGS)
    report = check_plugin(folder, settings={"token": SECRET})
    assert report.loaded
    assert report.problems == ()
    assert "lead_created" in [hook.hook for hook in report.hooks]


def test_the_plugin_harness_sets_secrets_without_any_key_configured(tmp_path: Path) -> None:
    """Plugin authors' tests (the ``plugin_host`` fixture) set secrets like any setting."""
    from services_ai_plugins_testing.harness import PluginHarness

    source = (
        "from services_ai_plugins import hookimpl\n\n\nclass Plugin:\n"
        "    @hookimpl\n"
        "    def lead_created(self, lead, api, settings):\n"
        "        api.store_set('token', settings['token'])\n"
    )
    folder = plugin_folder(tmp_path, "authored", source, settings=SETTINGS)
    harness = PluginHarness(FakeHostServices(), tmp_path / "harness")
    try:
        harness.add(folder, settings={"token": SECRET})
        harness.fire("lead_created").assert_ok()
        assert harness.services.stored("acme", "authored")["token"] == SECRET
    finally:
        harness.close()


def test_neither_secrets_nor_keys_show_in_logs_reprs_or_audit_events(
    db: SQLiteStorage, caplog: pytest.LogCaptureFixture
) -> None:
    """Everything the registry logs, repr()s or audits around a secret's life is free of it."""
    with caplog.at_level(logging.DEBUG):
        registry = approved(Registry(db, secret_keys=[KEY_1]))
        registry.set_settings("crm-sync", "acme", {"token": SECRET, "label": "x"}, actor="o")
        registry.set_settings("crm-sync", "acme", {"token": OTHER_SECRET}, actor="o")
        rotated = Registry(db, secret_keys=[KEY_2, KEY_1])
        rotated.rotate_secrets(actor="ops")
        with pytest.raises(SecretKeyError) as caught:
            Registry(db, secret_keys=[KEY_1]).get_settings("crm-sync", "acme")
    shown = [
        *(record.getMessage() for record in caplog.records),
        repr(registry),
        repr(rotated),
        repr(registry.tenant("crm-sync", "acme")),
        repr(registry.audit_log()),
        repr(rotated._secrets),
        str(caught.value),
        repr(caught.value),
    ]
    events = registry.audit_log(action="set settings")
    assert [e.after for e in events] == [{"settings": {"label": "x", "token": "********"}}] * 2
    assert [e.before for e in events] == [
        {"settings": {"label": "x", "token": "********"}},  # the newest first
        {"settings": {"label": None, "token": None}},
    ]
    for text in shown:
        for hidden in (SECRET, OTHER_SECRET, KEY_1, KEY_2):
            assert hidden not in text
