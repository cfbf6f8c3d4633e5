"""host.defer: NOTIFY hooks held by the request, then run in the background with back-pressure.

Every plugin is a real archive installed through the real host (the tests'
``Installer``). The in-process ones reach the test through a gate module put in
``sys.modules`` (so a call can be held inside the plugin while the test looks);
the hostile ones run in sandbox workers, as uploads do.
"""

from __future__ import annotations

import contextvars
import os
import signal
import sys
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import PluginHost, SandboxPolicy
from services_ai_plugins.events import Context
from services_ai_plugins.storage import SourceKind
from services_ai_plugins.types import BoundedExecutor, DeferredExecutor, Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

HEADER = (
    "import os\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins._context import current_request_context\n\n\n"
    "class Plugin:\n"
)

IN_PROCESS = SandboxPolicy(isolation=dict.fromkeys(SourceKind, Isolation.INPROCESS), timeout=30.0)

ACME = Context(tenant="acme", request_id="req-1")

#: Generous: the machine is shared and noisy; only a hang ever waits this long.
PATIENCE = 60.0

#: Counts its calls in the gate module, after waiting for the gate to open.
GATED = """
@hookimpl
def lead_created(self, lead, context, api):
    import defer_gate
    defer_gate.entered.release()
    assert defer_gate.gate.wait(60), "the test never opened the gate"
    defer_gate.seen.append(
        (lead.id, context.tenant, context.request_id, current_request_context(),
         defer_gate.app_var.get())
    )
"""


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    """What the GATED plugin reports to: opened by default (``gate.gate.clear()`` holds calls)."""
    module = types.ModuleType("defer_gate")
    module.gate = threading.Event()  # type: ignore[attr-defined]
    module.gate.set()
    module.entered = threading.Semaphore(0)  # type: ignore[attr-defined]
    module.seen = []  # type: ignore[attr-defined]
    module.app_var = contextvars.ContextVar("app_var", default=None)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "defer_gate", module)
    yield module  # type: ignore[misc]
    module.gate.set()  # never leave a worker thread waiting


def wait_for(predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate()`` holds; fail (never hang) if it does not within PATIENCE."""
    deadline = time.monotonic() + PATIENCE
    while not predicate():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.005)


def settled(host: PluginHost) -> None:
    wait_for(lambda: host.defer.outstanding == 0)


def make(hosts: Hosts, install: Installer, **options: Any) -> PluginHost:
    options.setdefault("sandbox", IN_PROCESS)
    host: PluginHost = hosts(**options)
    install(host, "gated", GATED)
    return host


def test_a_deferred_call_runs_after_the_request_not_before(
    hosts: Hosts, install: Installer, services: FakeHostServices, gate: Any
) -> None:
    """Held while the request runs, with the request's context; run once the block exits,
    in the caller's context variables but outside the request."""
    host = make(hosts, install)
    gate.app_var.set("trace-7")
    with host.request_context(ACME) as scope:
        assert host.defer.lead_created(lead=services.make_lead("acme", id="L1")) is None
        assert scope.held == 1
        assert host.defer.outstanding == 0  # nothing submitted yet
    settled(host)
    assert gate.seen == [("L1", "acme", "req-1", None, "trace-7")]


def test_an_exception_leaving_the_request_drops_its_calls(
    hosts: Hosts, install: Installer, services: FakeHostServices, gate: Any
) -> None:
    """Like a rolled-back transaction: dropped, each a "defer-dropped" host event, never run."""
    host = make(hosts, install)

    def view() -> None:
        with host.request_context(ACME):
            host.defer.lead_created(lead=services.make_lead("acme"))
            host.defer["lead_created"](lead=services.make_lead("acme"))
            raise LookupError("the view failed")

    with pytest.raises(LookupError):
        view()
    host.close()  # drains whatever was submitted
    assert gate.seen == []
    dropped = host.host_events("defer-dropped")
    assert [(e.hook, e.tenant) for e in dropped] == [("lead_created", "acme")] * 2
    assert "LookupError" in dropped[0].message


def test_nested_blocks_hand_their_calls_to_the_request_around_them(
    hosts: Hosts, install: Installer, services: FakeHostServices, gate: Any
) -> None:
    """An inner block that succeeds does not run its calls yet: the outer request failing
    drops them too."""
    host = make(hosts, install)

    def view() -> None:
        with host.request_context(ACME) as outer:
            with host.request_context(ACME):
                host.defer.lead_created(lead=services.make_lead("acme"))
            assert outer.held == 1
            raise LookupError

    with pytest.raises(LookupError):
        view()
    host.close()
    assert gate.seen == []
    assert len(host.host_events("defer-dropped")) == 1


def test_manual_scopes_run_their_calls_when_the_adapter_submits(
    hosts: Hosts, install: Installer, services: FakeHostServices, gate: Any
) -> None:
    """defer="manual": held past the block until submit() (after the commit); discard()
    drops them (the transaction rolled back)."""
    host = make(hosts, install)
    with host.request_context(ACME, defer="manual") as scope:
        host.defer.lead_created(lead=services.make_lead("acme", id="committed"))
    assert scope.held == 1
    assert host.defer.outstanding == 0
    assert scope.submit() == 1  # transaction.on_commit(scope.submit)
    settled(host)
    assert [s[0] for s in gate.seen] == ["committed"]
    with host.request_context(ACME, defer="manual") as scope:
        host.defer.lead_created(lead=services.make_lead("acme", id="rolled-back"))
    assert scope.discard("rolled back") == 1
    host.close()
    assert [s[0] for s in gate.seen] == ["committed"]
    [event] = host.host_events("defer-dropped")
    assert "rolled back" in event.message


def test_outside_a_request_the_call_is_submitted_at_once(
    hosts: Hosts, install: Installer, services: FakeHostServices, gate: Any
) -> None:
    host = make(hosts, install)
    host.defer.lead_created(lead=services.make_lead("acme", id="now"), context=ACME)
    settled(host)
    assert [s[:2] for s in gate.seen] == [("now", "acme")]


def test_a_full_queue_drops_calls_visibly_and_never_blocks_the_request(
    hosts: Hosts, install: Installer, services: FakeHostServices, gate: Any
) -> None:
    """One worker held inside a slow plugin, a queue of 2: the next 2 calls wait, the 8
    after them are dropped as "defer-queue-full" host events, and no defer call waits."""
    executor = BoundedExecutor(workers=1, max_queue=2)
    host = make(hosts, install, deferred=executor)
    gate.gate.clear()
    host.defer.lead_created(lead=services.make_lead("acme", id="first"), context=ACME)
    assert gate.entered.acquire(timeout=PATIENCE)  # the only worker is inside the plugin now

    def request() -> None:
        with host.request_context(ACME):
            for number in range(10):
                host.defer.lead_created(lead=services.make_lead("acme", id=f"n{number}"))

    caller = threading.Thread(target=request)
    caller.start()
    caller.join(PATIENCE)
    assert not caller.is_alive(), "a defer call waited for the busy executor"
    assert executor.pending == 2  # memory bounded: only max_queue calls are kept
    full = host.host_events("defer-queue-full")
    assert len(full) == 8
    assert {(e.hook, e.tenant) for e in full} == {("lead_created", "acme")}
    gate.gate.set()
    settled(host)
    assert [s[0] for s in gate.seen] == ["first", "n0", "n1"]


def test_non_notify_hooks_and_unknown_hooks_are_refused(hosts: Hosts) -> None:
    host: PluginHost = hosts(sandbox=IN_PROCESS)
    with pytest.raises(TypeError, match=r"defer is for NOTIFY hooks.*host\.hook\.dashboard_widget"):
        host.defer.dashboard_widget(context=ACME)
    with pytest.raises(TypeError, match="NOTIFY"):
        host.defer["filter_lead_data"]
    with pytest.raises(TypeError, match="only the host"):
        host.defer.plugin_suspended  # noqa: B018 - the lookup is the test
    with pytest.raises(AttributeError, match="lead_creatd"):
        host.defer.lead_creatd  # noqa: B018 - the lookup is the test
    with pytest.raises(KeyError):
        host.defer["no_such_hook"]


def test_bad_arguments_are_refused_at_once_and_nothing_is_queued(
    hosts: Hosts, install: Installer, services: FakeHostServices, gate: Any
) -> None:
    host = make(hosts, install)
    lead = services.make_lead("acme")
    with pytest.raises(TypeError, match="missing lead"):
        host.defer.lead_created(context=ACME)
    with pytest.raises(TypeError, match="unknown colour"):
        host.defer.lead_created(lead=lead, context=ACME, colour="red")
    with pytest.raises(TypeError, match="needs context=Context"):
        host.defer.lead_created(lead=lead)  # no context, and no request around it
    with pytest.raises(TypeError, match=r"needs context=Context.*str"):
        host.defer.lead_created(lead=lead, context="acme")
    with host.request_context(ACME) as scope:
        with pytest.raises(TypeError, match="missing lead"):
            host.defer.lead_created()
        assert scope.held == 0
    host.close()
    assert gate.seen == []
    assert host.host_events() == []


def test_close_runs_the_queued_calls_first_then_refuses_new_ones(
    hosts: Hosts, install: Installer, services: FakeHostServices, gate: Any
) -> None:
    """close() waits for the calls queued (here: held in a slow plugin until close began)."""
    shutting = threading.Event()

    class Watching:
        def __init__(self) -> None:
            self.inner = BoundedExecutor(workers=1, max_queue=10)

        def submit(self, call: Callable[[], None]) -> bool:
            return self.inner.submit(call)

        def shutdown(self, timeout: float) -> None:
            shutting.set()
            self.inner.shutdown(timeout)

    host = make(hosts, install, deferred=Watching())
    gate.gate.clear()
    for number in range(5):
        host.defer.lead_created(lead=services.make_lead("acme", id=f"q{number}"), context=ACME)
    closing = threading.Thread(target=host.close)
    closing.start()
    assert shutting.wait(PATIENCE)  # close() is draining: now let the plugin go on
    gate.gate.set()
    closing.join(PATIENCE)
    assert not closing.is_alive()
    assert [s[0] for s in gate.seen] == [f"q{n}" for n in range(5)]
    assert host.host_events("defer-dropped") == []
    with pytest.raises(RuntimeError, match="closed"):
        host.defer.lead_created(lead=services.make_lead("acme"), context=ACME)


def test_calls_left_when_the_drain_time_is_up_are_reported(
    hosts: Hosts, install: Installer, services: FakeHostServices, gate: Any
) -> None:
    """A plugin that never finishes cannot hold close() beyond its drain time: the calls
    left are one "defer-dropped" event."""

    class Impatient:
        def __init__(self) -> None:
            self.inner = BoundedExecutor(workers=1, max_queue=10)

        def submit(self, call: Callable[[], None]) -> bool:
            return self.inner.submit(call)

        def shutdown(self, timeout: float) -> None:
            self.inner.shutdown(0.0)

    host = make(hosts, install, deferred=Impatient())
    gate.gate.clear()
    for _ in range(3):
        host.defer.lead_created(lead=services.make_lead("acme"), context=ACME)
    assert gate.entered.acquire(timeout=PATIENCE)
    host.close()
    [event] = host.host_events("defer-dropped")
    assert event.message.startswith("3 deferred calls had not finished")


def test_a_custom_executor_takes_the_calls(
    hosts: Hosts, install: Installer, services: FakeHostServices, gate: Any
) -> None:
    """Any object with submit and shutdown: it gets the calls and runs them where it likes;
    one refusing is a full queue, one raising drops the call; close() shuts it down."""

    class Recording:
        def __init__(self) -> None:
            self.calls: list[Callable[[], None]] = []
            self.answer: bool | None = True
            self.shut: list[float] = []

        def submit(self, call: Callable[[], None]) -> bool:
            if self.answer is None:
                raise OSError("the broker is down")
            self.calls.append(call)
            return self.answer

        def shutdown(self, timeout: float) -> None:
            self.shut.append(timeout)

    executor = Recording()
    assert isinstance(executor, DeferredExecutor)
    host = make(hosts, install, deferred=executor)
    with host.request_context(ACME):
        host.defer.lead_created(lead=services.make_lead("acme", id="mine"))
    [call] = executor.calls
    assert gate.seen == []
    call()  # the app's queue runs it, in its own time
    assert [s[0] for s in gate.seen] == ["mine"]
    executor.answer = False
    host.defer.lead_created(lead=services.make_lead("acme"), context=ACME)
    assert len(host.host_events("defer-queue-full")) == 1
    executor.answer = None
    host.defer.lead_created(lead=services.make_lead("acme"), context=ACME)
    [dropped] = host.host_events("defer-dropped")
    assert "the broker is down" in dropped.message
    host.close()
    assert executor.shut == [5.0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_its_deferred_calls_on_threads_of_its_own(
    hosts: Hosts, install: Installer, services: FakeHostServices, gate: Any
) -> None:
    """A host used before a fork (gunicorn --preload): the child has none of the parent's
    threads, and starts its own on its first deferred call."""
    host = make(hosts, install)
    host.defer.lead_created(lead=services.make_lead("acme", id="parent"), context=ACME)
    settled(host)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: forking with threads
        pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 2
        try:
            signal.alarm(int(PATIENCE))  # never hang the test: SIGALRM ends the child
            host.defer.lead_created(lead=services.make_lead("acme", id="child"), context=ACME)
            settled(host)
            code = 0 if [s[0] for s in gate.seen] == ["parent", "child"] else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [s[0] for s in gate.seen] == ["parent"]  # the child's call ran in the child


def test_the_bounded_executor_refuses_nonsense_sizes() -> None:
    for options in ({"workers": 0}, {"max_queue": 0}, {"workers": 1.5}, {"max_queue": True}):
        with pytest.raises(ValueError, match="whole number >= 1"):
            BoundedExecutor(**options)


HOSTILE = """
@hookimpl
def lead_created(self, lead, context, api):
    if lead.id == "exit":
        os._exit(3)
    if lead.id == "raise":
        raise SystemExit("no more deferred calls for anyone")
"""

WITNESS = """
@hookimpl
def lead_created(self, lead, context, api):
    api.store_set(lead.id, context.tenant)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")
def test_a_hostile_plugin_cannot_stop_the_executor(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """A sandboxed plugin killing its worker or raising SystemExit in a deferred call, on a
    strict host (the failure is raised into the executor's thread): its failures are
    recorded, and the single executor thread goes on to run the next calls."""
    host: PluginHost = hosts(
        sandbox=SandboxPolicy(timeout=30.0),
        strict=True,
        deferred=BoundedExecutor(workers=1, max_queue=10),
    )
    install(host, "hostile", HOSTILE)
    install(host, "witness", WITNESS)
    with host.request_context(ACME):
        for lead_id in ("exit", "raise", "after"):
            host.defer.lead_created(lead=services.make_lead("acme", id=lead_id))
    settled(host)
    assert services.stored("acme", "witness") == {"after": "acme"}
    failures = host.failures("hostile")
    assert len(failures) == 2
    assert {f.hook for f in failures} == {"lead_created"}
