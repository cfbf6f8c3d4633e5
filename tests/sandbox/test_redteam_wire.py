"""Red-team findings on the sandbox's frames, each replayed by a hostile plugin through the host.

Every plugin here is uploaded (packed, installed, approved, enabled) and runs in its worker
process. The hostile ones write frames of their own making on the worker's channel (``forge``
below: what ``os.write(3, ...)`` does, framed), or hold the protocol up. A well-behaved plugin
runs beside each of them and must keep working.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import (
    PluginHost,
    SandboxError,
    SandboxPolicy,
)
from services_ai_plugins._sandbox import _pool as _sandbox
from services_ai_plugins._sandbox._wire import Channel
from services_ai_plugins.events import Context, Lead
from services_ai_plugins_testing.fakes import FakeHostServices

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

HEADER = (
    "import json, logging, os, struct, threading, time\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import Widget\n\n\n"
    "def forge(api, body):\n"
    "    '''Write ``body`` (bytes) on the worker's channel as a frame of its own.'''\n"
    "    api._worker.channel.sock.sendall(struct.pack('>I', len(body)) + body)\n\n\n"
    "class Plugin:\n"
)

ACME = Context(tenant="acme")

HEALTHY = """
@hookimpl
def lead_created(self, lead, api):
    api.store_set("seen", (api.store_get("seen") or 0) + 1)
"""

#: How long a test waits for what must happen at once before it calls the host stuck.
PATIENCE = 60.0


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def make_host(hosts: Hosts) -> Callable[..., PluginHost]:
    def make(**policy: Any) -> PluginHost:
        return cast("PluginHost", hosts(sandbox=SandboxPolicy(**{"timeout": 3.0} | policy)))

    return make


def fire(host: PluginHost, services: FakeHostServices) -> Lead:
    lead = services.make_lead("acme", name="Ada")
    host.hook.lead_created(lead=lead, context=ACME)
    return lead


def finishes(action: Callable[[], object], what: str) -> None:
    """Run ``action`` in a thread; fail if it is still running after :data:`PATIENCE` seconds."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(PATIENCE)
    assert not thread.is_alive(), f"{what} was still blocked after {PATIENCE:g} s"
    if errors:
        raise errors[0]


def healthy_keeps_working(host: PluginHost, services: FakeHostServices, seen: int) -> None:
    fire(host, services)
    assert services.stored("acme", "healthy")["seen"] == seen


def pid_of(host: PluginHost, plugin_id: str) -> int | None:
    return host.plugins()[plugin_id].pid  # type: ignore[attr-defined,no-any-return]


# -- 6: sends have a deadline ----------------------------------------------------------------------

GLUTTON = """
@hookimpl
def lead_created(self, lead, api):
    api.store_set("ready", True)
    # Some 2 MB of leads asked for, and never read: the host's side of the socket fills up.
    forge(api, json.dumps(["api", api._call.id, "list_leads", [], {"limit": 400}]).encode())
    time.sleep(600)
"""


def many_big_leads(services: FakeHostServices) -> None:
    for number in range(400):
        services.make_lead("acme", name=f"{number} " + "x" * 5000)


def test_a_worker_that_never_reads_its_api_answer_is_stopped_at_the_deadline(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """The answer's send ends with the call's deadline: SandboxTimeout, the worker killed."""
    host = make_host(timeout=2.0)
    many_big_leads(services)
    install(host, "healthy", HEALTHY)
    install(host, "glutton", GLUTTON)
    finishes(lambda: fire(host, services), "a call whose worker reads nothing")
    [failure] = host.failures("glutton")
    assert failure.exc_type == "SandboxTimeout"
    assert pid_of(host, "glutton") is None  # killed; the next call starts another
    healthy_keeps_working(host, services, 2)
    finishes(host.close, "host.close()")


def test_closing_the_host_does_not_wait_for_a_call_stuck_on_its_worker(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """host.close() cuts a stuck call short (10 minutes of timeout left) instead of waiting."""
    host = make_host(timeout=600.0)
    many_big_leads(services)
    install(host, "glutton", GLUTTON)
    caller = threading.Thread(target=fire, args=(host, services), daemon=True)
    caller.start()
    for _ in range(int(PATIENCE * 10)):  # the worker is in its call, the host serving it
        if services.stored("acme", "glutton").get("ready"):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the plugin never ran")
    finishes(host.close, "host.close() during a stuck call")
    caller.join(PATIENCE)
    assert not caller.is_alive()


def test_closing_the_host_does_not_wait_for_a_worker_stuck_while_starting(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """A plugin whose import never ends holds its worker's start: closing cuts it short."""
    host = make_host(start_timeout=600.0)
    install(host, "sleeper", "time.sleep(600)\n" + HEALTHY)
    caller = threading.Thread(target=fire, args=(host, services), daemon=True)
    caller.start()
    for _ in range(int(PATIENCE * 10)):  # the call's refresh is loading it: a worker starting
        if host.sandbox._starting:
            break
        time.sleep(0.1)
    else:
        pytest.fail("no worker started")
    finishes(host.close, "host.close() while a worker starts")
    caller.join(PATIENCE)
    assert not caller.is_alive()


# -- 8: decoded size is bounded --------------------------------------------------------------------


@pytest.mark.parametrize(
    "items",
    [
        "b'[],' * 5_000_000",  # 15 MB of empty lists: some 800 MiB once parsed
        "b'{},' * 5_000_000",
        "b'0,' * 7_000_000",
        "b'[' * 200 + b']' * 200 + b',' + b'1,' * 300_000",  # just over the bound
    ],
)
def test_a_frame_of_millions_of_tiny_values_is_refused_before_it_is_parsed(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    items: str,
) -> None:
    host = make_host()
    install(host, "healthy", HEALTHY)
    install(
        host,
        "bomber",
        f"""
        @hookimpl
        def lead_created(self, lead, api):
            head = b'["api",%d,"store_set",["k",[' % api._call.id
            forge(api, head + {items} + b'null]],{{}}]')
            time.sleep(30)
        """,
    )
    fire(host, services)
    [failure] = host.failures("bomber")
    assert failure.exc_type == "SandboxError"
    assert "more than 250000 values" in failure.message
    assert pid_of(host, "bomber") is None
    assert "k" not in services.stored("acme", "bomber")
    healthy_keeps_working(host, services, 2)


def test_values_are_counted_outside_strings_and_a_big_text_passes(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    """A result holding text full of commas and brackets is one value, not a million."""
    host = make_host()
    install(
        host,
        "csv",
        """
        @hookimpl
        def dashboard_widget(self, context):
            return Widget(tenant=context.tenant, title="CSV", html="1,[2],{3}\\n" * 400_000)
        """,
        permissions=("dashboard_widgets",),
    )
    [widget] = host.hook.dashboard_widget(context=ACME)
    assert widget.html.count(",") == 800_000
    assert host.failures("csv") == []


def test_a_big_result_of_a_notify_hook_is_not_sent_and_a_forged_one_is_refused(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """lead_created's result is ignored: a big one is not sent (None); a forged one is refused."""
    host = make_host(max_frame=65536)
    install(
        host,
        "returner",
        """
        @hookimpl
        def lead_created(self, lead, api):
            return ["x" * 1000] * 1000 if lead.name == "big" else "small"
        """,
    )
    install(
        host,
        "forger",
        """
        @hookimpl
        def lead_created(self, lead, api):
            forge(api, json.dumps(["ok", api._call.id, "x" * 10_000]).encode())
            time.sleep(30)
        """,
    )
    traces = [
        host.trace_hook("lead_created", lead=services.make_lead("acme", name=name), context=ACME)
        for name in ("big", "small")
    ]
    results = [{o.plugin_id: o.result for o in trace.outcomes} for trace in traces]
    assert [r["returner"] for r in results] == [None, "small"]  # a small one shows in traces
    assert host.failures("returner") == []
    [failure, _] = host.failures("forger")
    assert failure.exc_type == "SandboxError"
    assert re.search(r"'ok' frame of \d+ bytes is over the limit of 4096", failure.message)


def test_a_log_frame_bigger_than_the_output_limit_allows_is_refused(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host(output_limit=1000)
    install(host, "healthy", HEALTHY)
    install(
        host,
        "logger",
        """
        @hookimpl
        def lead_created(self, lead, api):
            forge(api, json.dumps(["log", 20, "x", "y" * 100_000]).encode())
            time.sleep(30)
        """,
    )
    fire(host, services)
    [failure] = host.failures("logger")
    assert re.search(r"'log' frame of \d+ bytes is over the limit of 9024", failure.message)
    healthy_keeps_working(host, services, 2)


def test_api_answers_over_the_calls_byte_budget_are_refused_in_the_worker(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """Each answer counts: once the budget is spent, the API call raises SandboxError there."""
    host = make_host(max_call_bytes=300_000)
    install(
        host,
        "reader",
        """
        @hookimpl
        def lead_created(self, lead, api):
            from services_ai_plugins import SandboxError
            api.store_set("big", "x" * 60_000)
            for number in range(10):
                try:
                    api.store_get("big")
                except SandboxError as exc:
                    raise RuntimeError(f"refused at read {number}: {exc}") from None
        """,
    )
    fire(host, services)
    [failure] = host.failures("reader")
    assert failure.exc_type == "RuntimeError"  # the plugin's own: it saw the refusal and went on
    assert "refused at read 3" in failure.message
    assert "budget of 300000 bytes" in failure.message
    assert pid_of(host, "reader") is not None  # not a protocol break: the worker lives


def test_a_worker_sending_more_than_the_calls_byte_budget_is_stopped(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host(max_call_bytes=300_000)
    install(host, "healthy", HEALTHY)
    install(
        host,
        "writer",
        """
        @hookimpl
        def lead_created(self, lead, api):
            for number in range(10):
                api.store_set(f"k{number}", "x" * 60_000)
        """,
    )
    fire(host, services)
    [failure] = host.failures("writer")
    assert failure.exc_type == "SandboxError"
    assert "over the call's budget of 300000 bytes" in failure.message
    assert pid_of(host, "writer") is None
    stored = services.stored("acme", "writer")
    assert set(stored) == {"k0", "k1", "k2", "k3"}  # the fifth request was never read
    healthy_keeps_working(host, services, 2)


def test_api_requests_over_the_calls_budget_raise_in_the_worker(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host(max_api_calls=5)
    install(
        host,
        "chatty",
        """
        @hookimpl
        def lead_created(self, lead, api):
            from services_ai_plugins import SandboxError
            for number in range(10):
                try:
                    api.store_set(f"k{number}", number)
                except SandboxError as exc:
                    raise RuntimeError(f"refused at {number}: {exc}") from None
        """,
    )
    fire(host, services)
    [failure] = host.failures("chatty")
    assert "refused at 5" in failure.message
    assert "SandboxPolicy.max_api_calls" in failure.message
    assert set(services.stored("acme", "chatty")) == {f"k{n}" for n in range(5)}
    fire(host, services)  # the budget is per call
    assert len(host.failures("chatty")) == 2


# -- 12: strings that are not Unicode --------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "cause"),
    [
        (rb'"\ud800"', "not Unicode"),
        (rb'"ok \udfff then \ud83d"', "not Unicode"),
        (b'"\xed\xa0\x80"', "not UTF-8"),  # the UTF-8 form of a surrogate
    ],
)
def test_a_forged_failure_that_is_not_unicode_is_refused_and_failures_are_still_recorded(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    message: bytes,
    cause: str,
) -> None:
    host = make_host()
    install(host, "healthy", HEALTHY)
    install(
        host,
        "liar",
        f"""
        @hookimpl
        def lead_created(self, lead, api):
            forge(api, b'["raise",%d,"ValueError",' % api._call.id + {message!r} + b',"tb"]')
            time.sleep(30)
        """,
    )
    install(
        host,
        "failing",
        """
        @hookimpl
        def lead_created(self, lead, api):
            raise ValueError("an ordinary failure")
        """,
    )
    fire(host, services)
    [failure] = host.failures("liar")
    assert failure.exc_type == "SandboxError"
    assert cause in failure.message
    assert pid_of(host, "liar") is None
    fire(host, services)
    assert [f.message for f in host.failures("failing")] == ["an ordinary failure"] * 2
    assert services.stored("acme", "healthy")["seen"] == 2
    host.flush()  # the failures reach the storage, the refused one included
    assert len(host.failures("liar")) == 2


def test_a_plugin_whose_own_strings_are_not_unicode_fails_cleanly(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception naming an undecodable file, a log line, a result: escaped or refused."""
    host = make_host()
    install(
        host,
        "files",
        """
        @hookimpl
        def lead_created(self, lead, api):
            name = b"report-\\xff.csv".decode(errors="surrogateescape")
            logging.getLogger("files").warning("cannot read %s", name)
            raise FileNotFoundError(f"no such file: {name}")

        @hookimpl
        def dashboard_widget(self, context):
            return Widget(tenant=context.tenant, title="\\ud800", html="")
        """,
        permissions=("read_leads", "dashboard_widgets"),
    )
    with caplog.at_level(logging.WARNING, logger="services_ai_plugins.plugins.files"):
        fire(host, services)
    [failure] = host.failures("files")
    assert failure.exc_type == "FileNotFoundError"
    assert failure.message == "no such file: report-\\udcff.csv"
    assert "cannot read report-\\udcff.csv" in caplog.text
    pid = pid_of(host, "files")
    assert host.hook.dashboard_widget(context=ACME) == []
    [refused] = [f for f in host.failures("files") if f.hook == "dashboard_widget"]
    assert refused.exc_type == "WireError"
    assert "the result cannot be sent" in refused.message
    assert pid_of(host, "files") == pid  # the same worker throughout


# -- 15: NaN and Infinity --------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_numbers_json_does_not_allow_are_refused(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    number: str,
) -> None:
    host = make_host()
    install(host, "healthy", HEALTHY)
    install(
        host,
        "nan",
        f"""
        @hookimpl
        def lead_created(self, lead, api):
            forge(api, b'["api",%d,"store_set",["k",{number}],{{}}]' % api._call.id)
            time.sleep(30)
        """,
    )
    fire(host, services)
    [failure] = host.failures("nan")
    assert failure.exc_type == "SandboxError"
    assert "not JSON" in failure.message
    assert "k" not in services.stored("acme", "nan")
    assert pid_of(host, "nan") is None
    healthy_keeps_working(host, services, 2)


# -- 21: frames of another call --------------------------------------------------------------------


def test_a_thread_left_running_cannot_have_its_api_requests_served_in_a_later_call(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """Its frames carry its own call's id; in a later call the host refuses them and stops it."""
    host = make_host()
    install(
        host,
        "lingerer",
        """
        started = []

        @hookimpl
        def lead_created(self, lead, api):
            started = self.started
            if not started:  # the first call: leave a thread behind, then return
                worker, mine = api._worker, api._call.id

                def later():
                    while not worker.calls or worker.calls[-1].id == mine:
                        time.sleep(0.01)
                    request = ["api", mine, "store_set", ["stolen", lead.name], {}]
                    with worker.send_lock:  # during the next call, with the first one's id
                        worker.channel.send(request)

                started.append(threading.Thread(target=later, daemon=True))
                started[0].start()
                return
            time.sleep(2)  # the second call: the host serves it meanwhile
        """,
    )
    fire(host, services)
    assert host.failures("lingerer") == []
    fire(host, services)
    [failure] = host.failures("lingerer")
    assert failure.exc_type == "SandboxError"
    assert "frame of call" in failure.message
    assert "a thread left running" in failure.message
    assert "stolen" not in services.stored("acme", "lingerer")
    assert pid_of(host, "lingerer") is None


@pytest.mark.parametrize("kind", ["ok", "raise"])
def test_an_answer_with_another_calls_id_is_refused(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    kind: str,
) -> None:
    host = make_host()
    install(
        host,
        "stale",
        f"""
        @hookimpl
        def dashboard_widget(self, context, api):
            frame = ["ok", api._call.id - 1, None] if {kind!r} == "ok" else \\
                ["raise", api._call.id + 1, "ValueError", "x", "tb"]
            forge(api, json.dumps(frame).encode())
            time.sleep(30)
        """,
        permissions=("dashboard_widgets",),
    )
    assert host.hook.dashboard_widget(context=ACME) == []
    [failure] = host.failures("stale")
    assert failure.exc_type == "SandboxError"
    assert "frame of call" in failure.message


class ScriptedZygote:
    """The zygote's side of its channel, answering as a test says (late, or never)."""

    def __init__(self, sock: socket.socket) -> None:
        self.channel = Channel(sock)
        self.requests: list[list[Any]] = []

    def next_request(self) -> list[Any]:
        fds: list[int] = []
        message = self.channel.receive(PATIENCE, fds=fds)
        for fd in fds:
            os.close(fd)
        self.requests.append(message)
        return message


@pytest.fixture
def scripted() -> Iterator[tuple[Any, ScriptedZygote]]:
    """A host-side zygote talking to a :class:`ScriptedZygote`."""
    ours, theirs = socket.socketpair()
    zygote = object.__new__(_sandbox._Zygote)
    zygote.channel = Channel(ours)
    zygote._lock = threading.Lock()
    zygote._requests = 0
    zygote._orphans = []
    yield zygote, ScriptedZygote(theirs)
    ours.close()
    theirs.close()


def test_a_late_zygote_answer_never_passes_for_the_next_ones(
    monkeypatch: pytest.MonkeyPatch, scripted: tuple[Any, ScriptedZygote]
) -> None:
    """A wait answered too late, then a fork: the fork gets its own pid, not the dead one's."""
    zygote, peer = scripted
    monkeypatch.setattr(_sandbox, "_ZYGOTE_TIMEOUT", 0.3)
    assert zygote.wait(4242) is None  # the zygote is slow: the host gives up
    [_, number, pid] = peer.next_request()
    peer.channel.send(["status", number, pid, 9])  # ... and answers late
    monkeypatch.setattr(_sandbox, "_ZYGOTE_TIMEOUT", PATIENCE)
    done: list[int] = []
    with Path(os.devnull).open("rb") as null:  # what the fork passes to its worker
        thread = threading.Thread(target=lambda: done.append(zygote.fork({}, null.fileno())))
        thread.start()
        kind, number, _ = peer.next_request()
        assert kind == "fork"
        peer.channel.send(["forked", number, 5151])
        thread.join(PATIENCE)
    assert done == [5151]


def test_a_fork_answered_too_late_is_killed_and_reaped(
    monkeypatch: pytest.MonkeyPatch, scripted: tuple[Any, ScriptedZygote]
) -> None:
    """The worker of a fork the host gave up on is nobody's: killed (its group), then reaped."""
    zygote, peer = scripted
    monkeypatch.setattr(_sandbox, "_ZYGOTE_TIMEOUT", 0.3)
    orphan = subprocess.Popen(  # stands in for the late fork's worker, in a session of its own
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    try:
        with (
            pytest.raises(SandboxError, match="did not fork a worker"),
            Path(os.devnull).open() as null,
        ):
            zygote.fork({}, null.fileno())
        monkeypatch.setattr(_sandbox, "_ZYGOTE_TIMEOUT", PATIENCE)
        [_, late, _] = peer.next_request()
        peer.channel.send(["forked", late, orphan.pid])
        results: list[int | None] = []
        thread = threading.Thread(target=lambda: results.append(zygote.wait(777)))
        thread.start()
        kind, number, pid = peer.next_request()
        assert (kind, pid) == ("wait", 777)
        peer.channel.send(["status", number, pid, 0])
        thread.join(PATIENCE)
        assert results == [0]
        assert orphan.wait(PATIENCE) == -signal.SIGKILL
        thread = threading.Thread(target=lambda: results.append(zygote.wait(778)))
        thread.start()
        kind, number, pid = peer.next_request()  # first, the orphan is reaped
        assert (kind, pid) == ("wait", orphan.pid)
        peer.channel.send(["status", number, pid, 9])
        kind, number, pid = peer.next_request()
        assert (kind, pid) == ("wait", 778)
        peer.channel.send(["status", number, pid, 0])
        thread.join(PATIENCE)
        assert results == [0, 0]
    finally:
        orphan.kill()
        orphan.wait()


def test_the_zygote_protocol_works_end_to_end_with_request_numbers(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """Workers are forked, killed and reaped through numbered requests (a real zygote)."""
    host = make_host()
    install(host, "healthy", HEALTHY)
    fire(host, services)
    zygote = host.sandbox._zygote
    assert zygote is not None
    first = zygote._requests
    workers = len(host.plugins()["healthy"].pids())  # type: ignore[attr-defined]
    host.sandbox._plugins["healthy"].stop()  # a "wait" per worker
    fire(host, services)  # a "fork"
    assert zygote._requests == first + workers + 1
    assert services.stored("acme", "healthy")["seen"] == 2
    assert json.dumps(zygote._orphans) == "[]"
