"""Failure notices (issue 22): ``plugin_failing`` in every process, rate-limited, one e-mail each.

The plugins are uploaded archives run by real hosts (in process and in sandbox workers);
two hosts on one storage stand for two processes of one app.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import services_ai_plugins
from conftest import Hosts, Installer
from services_ai_plugins import (
    BreakerPolicy,
    FailureMailer,
    PluginHost,
    PluginStatus,
    Registry,
    SandboxPolicy,
    hookimpl,
)
from services_ai_plugins._json import JSONValue
from services_ai_plugins.events import Context
from services_ai_plugins.storage import SourceKind, SQLiteStorage
from services_ai_plugins.types import Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

HEADER = "from services_ai_plugins import hookimpl\n\n\nclass Plugin:\n"

FAILING = """
@hookimpl
def lead_created(self, lead):
    raise RuntimeError("lead " + lead.id + " broke")
"""

HOSTILE = """
@hookimpl
def lead_created(self, lead):
    raise RuntimeError(
        "<script>alert(1)</script>\\x1b[31m\\u202e\\r\\nSubject: forged " + "x" * 200_000
    )
"""

ACME = Context(tenant="acme")
IN_PROCESS = SandboxPolicy(isolation=dict.fromkeys(SourceKind, Isolation.INPROCESS))
SANDBOXED = SandboxPolicy(timeout=10.0)
#: The hosts never look at the storage or write by themselves: the tests tick them.
QUIET: dict[str, Any] = {"refresh_interval": 3600, "flush_interval": 3600}


class Heard:
    """A host listener that records each ``plugin_failing`` and ``plugin_suspended``."""

    def __init__(self) -> None:
        self.failing: list[tuple[str, dict[str, JSONValue], int, bool]] = []
        self.suspended: list[tuple[str, str | None, str, bool]] = []

    @hookimpl
    def plugin_suspended(
        self, plugin_id: str, reason: str, tenant: str | None, context: Context | None
    ) -> None:
        self.suspended.append((plugin_id, tenant, reason, context is not None))

    @hookimpl
    def plugin_failing(
        self, plugin_id: str, digest: dict[str, JSONValue], notice: int, origin: bool
    ) -> None:
        self.failing.append((plugin_id, dict(digest), notice, origin))


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


def fail(host: PluginHost, services: FakeHostServices, times: int = 1) -> None:
    for _ in range(times):
        host.hook.lead_created(lead=services.make_lead("acme", name="Ada"), context=ACME)


def tick(*hosts: PluginHost) -> None:
    """What each host does on its own, in order: write its failures (and notices), look again."""
    for host in hosts:
        host.flush()
    for host in hosts:
        host.refresh()


def shift(host: PluginHost, monkeypatch: pytest.MonkeyPatch, by: timedelta) -> None:
    """Move the clock of the host's registry (the notices' time) ``by`` ahead of now."""
    monkeypatch.setattr(host.registry, "_clock", lambda: datetime.now(timezone.utc) + by)


@pytest.mark.parametrize("policy", [IN_PROCESS, SANDBOXED], ids=["in process", "sandboxed"])
def test_failures_give_one_notice_per_interval_with_a_digest_of_what_failed_since(
    hosts: Hosts,
    install: Installer,
    services: FakeHostServices,
    monkeypatch: pytest.MonkeyPatch,
    policy: SandboxPolicy,
) -> None:
    host = hosts(sandbox=policy, **QUIET)
    heard = Heard()
    host.add_listener(heard)
    install(host, "flaky", FAILING)
    fail(host, services, 3)
    tick(host)
    [(plugin_id, digest, notice, origin)] = heard.failing
    assert (plugin_id, origin) == ("flaky", True)
    assert digest["count"] == 3
    assert digest["hooks"] == ["lead_created"]
    assert digest["tenants"] == ["acme"]
    assert digest["since"] is None
    messages = digest["messages"]
    assert isinstance(messages, list)
    assert len(messages) == 3
    assert all("RuntimeError: lead " in str(m) and "broke" in str(m) for m in messages)
    assert "token" not in digest  # the writer's mark stays inside the host
    # More failures inside the interval: no second notice (and none written).
    fail(host, services, 2)
    tick(host)
    tick(host)
    assert len(heard.failing) == 1
    assert len(host.registry.audit_log(plugin_id="flaky", action="failing")) == 1
    # After the interval: a new notice, counting every failure since the last one.
    shift(host, monkeypatch, timedelta(minutes=16))
    fail(host, services, 1)
    tick(host)
    assert len(heard.failing) == 2
    _, digest, second, origin = heard.failing[1]
    assert second > notice
    assert origin
    assert digest["count"] == 3
    assert digest["since"] is not None


def test_a_notice_interval_is_a_host_option(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """With no interval, every flush that wrote new failures writes a notice; none without."""
    host = hosts(sandbox=IN_PROCESS, notice_interval=timedelta(0), **QUIET)
    heard = Heard()
    host.add_listener(heard)
    install(host, "flaky", FAILING)
    fail(host, services, 1)
    tick(host)
    fail(host, services, 2)
    tick(host)
    tick(host)  # nothing new failed: nothing to tell
    assert [d["count"] for _, d, _, _ in heard.failing] == [1, 2]


def test_a_host_without_a_failing_listener_writes_no_notice(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """Failures alone change nothing for a host that nobody listens to: no extra commit."""
    host = hosts(sandbox=IN_PROCESS, **QUIET)
    install(host, "flaky", FAILING)
    newest = newest_audit(host)
    fail(host, services, 2)
    tick(host)
    assert len(host.failures("flaky")) == 2
    assert host.registry.audit_log(action="failing") == []
    assert newest_audit(host) == newest  # no registry change at all


def newest_audit(host: PluginHost) -> int | None:
    return host.registry.audit_log(limit=1)[0].id


@pytest.fixture(params=["sqlite", "postgres"])
def shared_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """Opens storages on one database (one per host, as separate processes would)."""
    opened: list[Any] = []
    if request.param == "sqlite":

        def make() -> Any:
            opened.append(SQLiteStorage(tmp_path / "registry.db", timeout=30))
            return opened[-1]

    else:
        from services_ai_plugins.storage import PostgresStorage

        url = request.getfixturevalue("postgres_url")
        schema = f"notices_{uuid.uuid4().hex[:16]}"

        def make() -> Any:
            opened.append(PostgresStorage(url, schema=schema, max_size=2))
            return opened[-1]

    try:
        yield make
    finally:
        for storage in opened:
            storage.close()
        if request.param == "postgres":
            from psycopg import connect, sql

            with connect(url, autocommit=True) as conn:
                drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                conn.execute(drop)


def two_hosts(
    hosts: Hosts, install: Installer, make: Callable[[], Any], tmp_path: Path
) -> tuple[list[PluginHost], list[Heard], list[FakeHostServices]]:
    made, heard, mail = [], [], []
    for _ in range(2):
        host = hosts(storage=make(), plugins_dir=tmp_path / "plugins", sandbox=IN_PROCESS, **QUIET)
        heard.append(Heard())
        mail.append(FakeHostServices())
        host.add_listener(heard[-1], name="heard")
        host.add_listener(FailureMailer(mail[-1], to=["ops@example.com"], tenant="ops"))
        made.append(host)
    install(made[0], "flaky", FAILING)
    made[1].refresh(force=True)
    return made, heard, mail


def test_two_processes_both_hear_a_notice_once_and_one_email_goes_out(
    hosts: Hosts,
    install: Installer,
    services: FakeHostServices,
    shared_storage: Callable[[], Any],
    tmp_path: Path,
) -> None:
    (a, b), heard, mail = two_hosts(hosts, install, shared_storage, tmp_path)
    assert "flaky" in b.plugins()
    fail(a, services, 2)
    fail(b, services, 1)
    tick(a, b)
    tick(a, b)
    [(_, in_a, notice_a, origin_a)] = heard[0].failing
    [(_, in_b, notice_b, origin_b)] = heard[1].failing
    assert notice_a == notice_b
    assert in_a == in_b
    assert (origin_a, origin_b) == (True, False)  # a flushed first: its notice
    assert in_a["count"] == 2  # b's failure came after it: the next notice's
    [email] = mail[0].emails() + mail[1].emails()
    assert email.to == ("ops@example.com",)
    assert email.tenant == "ops"
    assert "flaky" in email.subject
    assert "failed 2 time(s)" in email.body


def test_two_notices_written_at_once_count_once_everywhere(
    hosts: Hosts,
    install: Installer,
    services: FakeHostServices,
    shared_storage: Callable[[], Any],
    tmp_path: Path,
) -> None:
    """Two processes that both found no recent notice and both wrote one: the first counts.

    The race is played by writing the second notice past the rate limit (interval 0).
    """
    (a, b), heard, mail = two_hosts(hosts, install, shared_storage, tmp_path)
    fail(a, services, 2)
    a.flush()
    fail(b, services, 1)
    b.flush()  # b's own check sees a's notice: it writes none
    assert b.registry.notice_failing("flaky", actor="test", interval=timedelta(0)) is not None
    assert len(a.registry.audit_log(plugin_id="flaky", action="failing")) == 2
    tick(a, b)
    assert len(heard[0].failing) == len(heard[1].failing) == 1
    assert heard[0].failing[0][2] == heard[1].failing[0][2]
    assert len(mail[0].emails() + mail[1].emails()) == 1


def test_a_host_started_later_does_not_replay_old_notices(
    hosts: Hosts,
    install: Installer,
    services: FakeHostServices,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    db = tmp_path / "registry.db"
    first = hosts(storage=SQLiteStorage(db), sandbox=IN_PROCESS, **QUIET)
    first.add_listener(Heard())  # a host writes notices when it has a listener
    install(first, "flaky", FAILING)
    fail(first, services, 1)
    tick(first)
    assert first.registry.audit_log(action="failing")
    later = hosts(
        storage=SQLiteStorage(db),
        plugins_dir=tmp_path / "plugins",
        sandbox=IN_PROCESS,
        **QUIET,
    )
    heard = Heard()
    later.add_listener(heard)
    later.refresh(force=True)
    tick(later)
    assert heard.failing == []
    # The next notice (after the interval) it hears.
    shift(first, monkeypatch, timedelta(hours=1))
    fail(first, services, 1)
    tick(first, later)
    [(plugin_id, digest, _, origin)] = heard.failing
    assert (plugin_id, digest["count"], origin) == ("flaky", 1, False)


def test_a_hostile_plugins_messages_are_bounded_and_escaped_in_the_email(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """A sandboxed plugin fails with markup, control characters and a huge message."""
    host = hosts(sandbox=SANDBOXED, **QUIET)
    admin = FakeHostServices()
    host.add_listener(FailureMailer(admin, to=["ops@example.com"], tenant="ops"))
    install(host, "hostile", HOSTILE)
    fail(host, services, 8)
    tick(host)
    [email] = admin.emails()
    assert email.html is not None
    for text in (email.subject, email.body, email.html):
        assert "\x1b" not in text
        assert "\u202e" not in text
        assert "\r" not in text
    assert "\n" not in email.subject
    assert "<script>" not in email.html
    assert "&lt;script&gt;" in email.html
    assert "Subject: forged" not in email.body.splitlines()[0]
    assert email.body.count("- RuntimeError") == 5  # the newest five only
    assert max(len(line) for line in email.body.splitlines()) <= 2 + 300  # "- " and a message
    assert len(email.body) < 5_000
    assert len(email.html) < 10_000
    [event] = host.registry.audit_log(plugin_id="hostile", action="failing")
    assert event.after is not None
    assert all(len(str(m)) <= 700 for m in event.after["messages"])


def test_a_breaker_suspension_is_heard_once_in_every_process(
    hosts: Hosts,
    install: Installer,
    services: FakeHostServices,
    shared_storage: Callable[[], Any],
    tmp_path: Path,
) -> None:
    """The process whose breaker tripped hears it with the call's context; the other at its
    refresh, without one; each once. A host started after it does not hear it."""
    made, heard = [], []
    for _ in range(2):
        host = hosts(
            storage=shared_storage(),
            plugins_dir=tmp_path / "plugins",
            sandbox=SANDBOXED,
            breaker=BreakerPolicy(consecutive_failures=2, failure_rate=0),
            **QUIET,
        )
        heard.append(Heard())
        host.add_listener(heard[-1])
        made.append(host)
    a, b = made
    install(a, "flaky", FAILING)
    b.refresh(force=True)
    fail(a, services, 2)
    tick(a, b)
    tick(a, b)
    [(_, _, reason, _)] = heard[0].suspended
    assert "2 consecutive failures" in reason
    assert heard[0].suspended == [("flaky", "acme", reason, True)]
    assert heard[1].suspended == [("flaky", "acme", reason, False)]
    later = hosts(storage=shared_storage(), plugins_dir=tmp_path / "plugins", **QUIET)
    late = Heard()
    later.add_listener(late)
    tick(later)
    assert late.suspended == []


def test_an_admin_suspension_is_heard_once_in_every_process(
    hosts: Hosts,
    install: Installer,
    shared_storage: Callable[[], Any],
    tmp_path: Path,
) -> None:
    """An admin's suspension, from a process without a host (a Registry of its own) or
    through a host, reaches every host at its refresh: each once, without a context.
    Resuming fires nothing; a host started later replays none."""
    (a, b), heard, _ = two_hosts(hosts, install, shared_storage, tmp_path)
    admin = Registry(shared_storage())  # another process: the admin pages, a script
    admin.suspend("flaky", actor="admin", reason="acme asked", tenant="acme")
    assert heard[0].suspended == heard[1].suspended == []  # nobody looked yet
    tick(a, b)
    tick(a, b)
    assert heard[0].suspended == heard[1].suspended == [("flaky", "acme", "acme asked", False)]
    a.suspend("flaky", actor="admin", reason="under review")
    everywhere = ("flaky", None, "under review", False)
    tick(a, b)
    tick(a, b)
    assert heard[0].suspended[1:] == heard[1].suspended[1:] == [everywhere]
    admin.resume("flaky", actor="admin")
    b.resume("flaky", actor="admin", tenant="acme")
    tick(a, b)
    assert len(heard[0].suspended) == len(heard[1].suspended) == 2  # no hook for resuming
    later = hosts(storage=shared_storage(), plugins_dir=tmp_path / "plugins", **QUIET)
    late = Heard()
    later.add_listener(late)
    tick(later)
    assert late.suspended == []
    admin.suspend("flaky", actor="admin", reason="again", tenant="acme")
    tick(a, b, later)
    again = ("flaky", "acme", "again", False)
    assert heard[0].suspended[2:] == heard[1].suspended[2:] == late.suspended == [again]


def test_a_suspension_made_with_the_cli_is_heard_by_a_running_host(
    hosts: Hosts, install: Installer, services: FakeHostServices, tmp_path: Path
) -> None:
    """``python -m services_ai_plugins suspend`` in its own process: the running host hears
    it once at its refresh; the CLI again (already suspended, nothing written) adds nothing."""
    db = tmp_path / "registry.db"
    host = hosts(storage=SQLiteStorage(db), sandbox=IN_PROCESS, **QUIET)
    heard = Heard()
    host.add_listener(heard)
    install(host, "flaky", FAILING)
    source = str(Path(services_ai_plugins.__file__).parents[1])
    command = [
        sys.executable,
        "-m",
        "services_ai_plugins",
        "suspend",
        "flaky",
        "--tenant",
        "acme",
        "--reason",
        "seen in the CLI",
        "--db",
        str(db),
        "--plugins-dir",
        str(tmp_path / "plugins"),
        "--actor",
        "ops@test",
    ]
    env = {**os.environ, "PYTHONPATH": source}
    for _ in range(2):
        run = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=120, env=env
        )
        assert run.returncode == 0, run.stderr
        tick(host)
        assert heard.suspended == [("flaky", "acme", "seen in the CLI", False)]
    trace = host.trace_hook("lead_created", lead=services.make_lead("acme"), context=ACME)
    assert trace.ran == ()  # and the host honours it


def tamper(host: PluginHost, plugin_id: str) -> None:
    """Change the installed code of the plugin (the folder every host of the app loads)."""
    folder = host.registry.plugin(plugin_id).package_path
    assert folder is not None
    main = Path(folder) / "main.py"
    main.write_text(main.read_text() + "\n# changed after the install\n")


def test_a_code_change_found_by_a_worker_start_is_heard_once_in_every_process(
    hosts: Hosts,
    install: Installer,
    services: FakeHostServices,
    shared_storage: Callable[[], Any],
    tmp_path: Path,
) -> None:
    """A sandboxed plugin's code changed under live hosts: the host whose worker start finds
    it suspends the plugin everywhere and hears it at once; the other at its refresh."""
    made, heard = [], []
    for policy in (SANDBOXED, IN_PROCESS):
        host = hosts(
            storage=shared_storage(), plugins_dir=tmp_path / "plugins", sandbox=policy, **QUIET
        )
        heard.append(Heard())
        host.add_listener(heard[-1])
        made.append(host)
    a, b = made
    install(a, "flaky", FAILING)
    for host in made:
        host.refresh(force=True)
        assert "flaky" in host.plugins()  # loaded (verified), no worker started yet
    tamper(a, "flaky")
    fail(a, services)  # the first worker start hashes the folder: no code of it runs
    [(plugin_id, tenant, reason, context)] = heard[0].suspended
    assert (plugin_id, tenant, context) == ("flaky", None, False)
    assert "changed since it was installed" in reason
    assert a.registry.plugin("flaky").status is PluginStatus.SUSPENDED
    tick(a, b)
    tick(a, b)
    assert heard[0].suspended == heard[1].suspended == [("flaky", None, reason, False)]


def test_a_code_change_found_at_load_is_heard_once_in_every_process(
    hosts: Hosts,
    install: Installer,
    shared_storage: Callable[[], Any],
    tmp_path: Path,
) -> None:
    """A plugin's code changed between its upload and its approval: the first host to load
    it refuses and suspends it; every host (that one too) hears it once, at its refresh."""
    made, heard = [], []
    for _ in range(2):
        host = hosts(
            storage=shared_storage(), plugins_dir=tmp_path / "plugins", sandbox=IN_PROCESS, **QUIET
        )
        heard.append(Heard())
        host.add_listener(heard[-1])
        made.append(host)
    a, b = made
    install(a, "flaky", FAILING, approve=False)
    tamper(a, "flaky")
    a.registry.approve("flaky", actor="admin")
    tick(a, b)
    tick(a, b)
    assert "flaky" not in a.plugins()
    assert "flaky" not in b.plugins()
    [(plugin_id, tenant, reason, context)] = heard[0].suspended
    assert (plugin_id, tenant, context) == ("flaky", None, False)
    assert "changed since it was installed" in reason
    assert heard[1].suspended == heard[0].suspended


def test_the_process_that_writes_a_notice_mails_it_with_that_write(
    hosts: Hosts,
    install: Installer,
    services: FakeHostServices,
    shared_storage: Callable[[], Any],
    tmp_path: Path,
) -> None:
    """The writer hears its notice in the flush that wrote it: a process that dies before its
    next refresh has mailed already, and the others (origin False) mail nothing."""
    (a, b), heard, mail = two_hosts(hosts, install, shared_storage, tmp_path)
    fail(a, services, 2)
    a.flush()  # writes the failures and the notice; a dies here, before any refresh
    [email] = mail[0].emails()
    assert "failed 2 time(s)" in email.body
    assert [origin for *_, origin in heard[0].failing] == [True]
    tick(b)
    tick(b)
    assert [origin for *_, origin in heard[1].failing] == [False]
    assert mail[1].emails() == []


def test_a_host_closing_mails_the_notice_its_last_flush_writes(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """Closing flushes (the sandboxed plugin's failures, their notice): the notice is mailed."""
    host = hosts(sandbox=SANDBOXED, **QUIET)
    admin = FakeHostServices()
    host.add_listener(FailureMailer(admin, to=["ops@example.com"], tenant="ops"))
    install(host, "hostile", HOSTILE)
    fail(host, services, 3)
    assert admin.emails() == []
    host.close()
    [email] = admin.emails()
    assert "failed 3 time(s)" in email.body
    assert "\x1b" not in email.body
