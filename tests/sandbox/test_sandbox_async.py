"""The sandbox's async path: a sandboxed call awaited in an event loop never blocks it.

What the host's async call loop awaits for a sandboxed plugin: ``function.aio(...)``
of the stand-in's proxies, and ``handler.aio(request, ...)`` of its routes. Every
plugin is uploaded and installed through the real host and runs in real workers;
each test runs its own loop with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import (
    BreakerPolicy,
    MemoryStorage,
    PermissionDenied,
    PluginHost,
    SandboxError,
    SandboxPolicy,
    SandboxTimeout,
)
from services_ai_plugins._api import PluginAPI
from services_ai_plugins.errors import RemoteError, WorkerBusy, WorkerCrashed
from services_ai_plugins.events import ApiRequest, Context, Lead
from services_ai_plugins_testing.fakes import FakeHostServices

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

HEADER = (
    "import json, os, time\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import ApiResponse, Route, Widget\n\n\n"
    "class Plugin:\n"
)

ACME = Context(tenant="acme")

SLEEPER = """
@hookimpl
def dashboard_widget(self, context):
    start = time.time()
    time.sleep({delay})
    return Widget(
        tenant=context.tenant, title="w", html=json.dumps([os.getpid(), start, time.time()])
    )
"""


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def make_host(hosts: Hosts) -> Callable[..., PluginHost]:
    def make(**policy: Any) -> PluginHost:
        sandbox = SandboxPolicy(**{"timeout": 20.0, "wait_timeout": 30.0} | policy)
        return cast("PluginHost", hosts(sandbox=sandbox))

    return make


def proxy(host: PluginHost, plugin_id: str, hook: str) -> Any:
    """The function pluggy holds for the sandboxed plugin's ``hook`` (with its ``aio``)."""
    return getattr(host.plugins()[plugin_id], hook)


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


def alive(pid: int) -> bool:
    """Whether the process still exists (a little patience: it may be dying)."""
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.02)
    return True


def api_for(services: FakeHostServices, plugin_id: str, tenant: str, *grants: str) -> PluginAPI:
    return PluginAPI(plugin_id, services, tenant=tenant, grants=frozenset(grants))


async def with_lag(calls: list[Coroutine[Any, Any, Any]]) -> tuple[list[Any], float]:
    """The calls' results (or exceptions), and the event loop's worst lag while they ran.

    A task ticks every 5 ms and measures how late each tick wakes: a call that blocked
    the loop for its whole length would show as a lag of about that length.
    """
    loop = asyncio.get_running_loop()
    worst = 0.0
    done = False

    async def tick() -> None:
        nonlocal worst
        while not done:
            before = loop.time()
            await asyncio.sleep(0.005)
            worst = max(worst, loop.time() - before - 0.005)

    ticker = asyncio.ensure_future(tick())
    await asyncio.sleep(0)  # the ticker runs before the calls start
    try:
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        done = True
        await ticker
    return results, worst


# -- the same answers as the sync path -------------------------------------------------------------


def test_aio_returns_what_the_sync_proxy_returns(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    host = make_host()
    install(
        host,
        "widgets",
        """
        @hookimpl
        def dashboard_widget(self, context):
            return Widget(tenant=context.tenant, title="Pid", html=str(os.getpid()))

        @hookimpl
        def filter_email(self, email):
            return email
        """,
        permissions=("dashboard_widgets", "send_email"),
    )
    function = proxy(host, "widgets", "dashboard_widget")
    assert asyncio.iscoroutinefunction(function.aio)
    assert function.aio.__name__ == "dashboard_widget"
    sync = function(context=ACME)
    awaited = run(function.aio(context=ACME))
    assert awaited == sync
    assert int(awaited.html) != os.getpid()
    assert awaited.tenant == "acme"


def test_an_api_callback_is_served_from_the_async_path(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """The worker's API requests are run by the host on the api passed in, for its tenant;
    a refusal travels back as the same class."""
    host = make_host()
    install(
        host,
        "reader",
        """
        @hookimpl
        def lead_created(self, lead, api):
            found = api.get_lead(lead.id)
            api.store_set("seen", [found.name, api.tenant, os.getpid()])
            try:
                api.send_email("x@example.com", "s", "b")
            except PermissionError as exc:
                api.store_set("refused", type(exc).__name__)
        """,
    )
    lead = services.make_lead("acme", name="Ada")
    api = api_for(services, "reader", "acme", "read_leads")
    run(proxy(host, "reader", "lead_created").aio(lead=lead, api=api, context=ACME))
    stored = services.stored("acme", "reader")
    assert stored["seen"][:2] == ["Ada", "acme"]
    assert stored["seen"][2] != os.getpid()
    assert stored["refused"] == PermissionDenied.__name__


# -- the loop is never blocked ---------------------------------------------------------------------


def test_eight_concurrent_calls_never_block_the_loop(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    """8 calls of 0.2 s in 8 workers: the loop keeps ticking (a blocking call would stall it
    for 0.2 s each), and the calls overlap."""
    host = make_host(workers_per_plugin=8)
    install(host, "sleeper", SLEEPER.format(delay=0.2), permissions=("dashboard_widgets",))
    function = proxy(host, "sleeper", "dashboard_widget")
    assert host.sandbox.start("sleeper", "acme")
    results, worst = run(with_lag([function.aio(context=ACME) for _ in range(8)]))
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert worst < 0.1, f"the event loop stalled {worst:.3f} s"
    spans = [json.loads(widget.html) for widget in results]
    assert len({pid for pid, _, _ in spans}) == 8
    assert max(start for _, start, _ in spans) < min(end for _, _, end in spans)


def test_a_call_waiting_for_a_busy_worker_waits_in_the_loop_then_raises_worker_busy(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    host = make_host(wait_timeout=0.3)
    install(host, "sleeper", SLEEPER.format(delay=1.5), permissions=("dashboard_widgets",))
    function = proxy(host, "sleeper", "dashboard_widget")
    assert host.sandbox.start("sleeper", "acme")
    results, worst = run(with_lag([function.aio(context=ACME) for _ in range(2)]))
    busy = [r for r in results if isinstance(r, WorkerBusy)]
    assert len(busy) == 1, results
    assert (busy[0].plugin_id, busy[0].tenant, busy[0].hook) == (
        "sleeper",
        "acme",
        "dashboard_widget",
    )
    assert worst < 0.1, f"the event loop stalled {worst:.3f} s"


def test_a_waiting_call_gets_the_worker_once_it_is_free(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    """Released by another call (sync or async), the slot wakes the task waiting for it."""
    host = make_host()
    install(host, "sleeper", SLEEPER.format(delay=0.3), permissions=("dashboard_widgets",))
    function = proxy(host, "sleeper", "dashboard_widget")

    async def both() -> list[Any]:
        in_thread = asyncio.to_thread(function, context=ACME)  # a sync call, in a thread
        return list(await asyncio.gather(in_thread, function.aio(context=ACME)))

    first, second = run(both())
    pid_a, start_a, end_a = json.loads(first.html)
    pid_b, start_b, end_b = json.loads(second.html)
    assert pid_a == pid_b
    assert end_a <= start_b or end_b <= start_a


# -- failures, as on the sync path -----------------------------------------------------------------


def test_a_call_past_its_timeout_kills_the_worker_and_the_loop_keeps_running(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    host = make_host(timeout=1.5)
    install(
        host,
        "stuck",
        """
        @hookimpl
        def dashboard_widget(self, context):
            while True:
                time.sleep(1)
        """,
        permissions=("dashboard_widgets",),
    )
    function = proxy(host, "stuck", "dashboard_widget")
    assert host.sandbox.start("stuck", "acme")
    [pid] = host.plugins()["stuck"].all_pids()["acme"]  # type: ignore[attr-defined]
    [result], worst = run(with_lag([function.aio(context=ACME)]))
    assert isinstance(result, SandboxTimeout), result
    assert result.hook == "dashboard_widget"
    assert worst < 0.1, f"the event loop stalled {worst:.3f} s"
    assert not alive(pid)
    assert "acme" not in host.plugins()["stuck"].all_pids()  # type: ignore[attr-defined]


def test_a_crash_is_worker_crashed_and_an_exception_remote_error(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    host = make_host()
    install(
        host,
        "crashing",
        """
        @hookimpl
        def dashboard_widget(self, context):
            os._exit(3)

        @hookimpl
        def filter_email(self, email):
            raise ValueError("no")
        """,
        permissions=("dashboard_widgets", "send_email"),
    )
    crash = proxy(host, "crashing", "dashboard_widget")
    with pytest.raises(WorkerCrashed, match="exited with code 3"):
        run(crash.aio(context=ACME))
    raising = proxy(host, "crashing", "filter_email")
    with pytest.raises(RemoteError, match="ValueError: no") as caught:
        run(raising.aio(email=None, context=ACME))
    assert "main.py" in caught.value.remote_traceback


def test_a_cancelled_call_kills_its_worker_and_the_next_call_works(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    """A cancelled call leaves its worker's channel out of step: the worker goes, the pool
    starts another for the next call."""
    host = make_host()
    install(host, "sleeper", SLEEPER.format(delay=2.0), permissions=("dashboard_widgets",))
    function = proxy(host, "sleeper", "dashboard_widget")
    assert host.sandbox.start("sleeper", "acme")
    [pid] = host.plugins()["sleeper"].all_pids()["acme"]  # type: ignore[attr-defined]

    async def cancel() -> None:
        task = asyncio.ensure_future(function.aio(context=ACME))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(cancel())
    assert not alive(pid)
    widget = run(function.aio(context=ACME))
    assert json.loads(widget.html)[0] not in (pid, os.getpid())


# -- nested calls ----------------------------------------------------------------------------------


class Firing(FakeHostServices):
    """Services whose ``update_lead`` fires ``lead_updated`` through the host."""

    host: PluginHost

    def update_lead(self, tenant: str, lead_id: str, changes: Any) -> Lead:
        lead = super().update_lead(tenant, lead_id, changes)
        self.host.hook.lead_updated(lead=lead, changes={}, context=Context(tenant=tenant))
        return lead


def test_a_hook_fired_during_an_async_calls_api_request_runs_in_that_calls_worker(
    tmp_path: Path, install: Installer
) -> None:
    """The API request runs in a thread with a copy of the call's context: the nested call
    finds the worker, even with both workers of the pool busy."""
    services = Firing()
    with PluginHost(
        services,
        storage=MemoryStorage(),
        plugins_dir=tmp_path / "plugins",
        entry_points=False,
        sandbox=SandboxPolicy(timeout=20.0, workers_per_plugin=2, wait_timeout=60.0),
        breaker=BreakerPolicy(consecutive_failures=1, failure_rate=0),
    ) as host:
        services.host = host
        install(
            host,
            "echo",
            """
            @hookimpl
            def lead_created(self, lead, api):
                api.store_set("outer-" + lead.id, os.getpid())
                time.sleep(0.3)
                api.update_lead(lead.id, {"status": "contacted"})

            @hookimpl
            def lead_updated(self, lead, api):
                api.store_set("inner-" + lead.id, [os.getpid(), lead.status])
            """,
            permissions=("read_leads", "write_leads"),
        )
        function = proxy(host, "echo", "lead_created")
        leads = [services.make_lead("acme", name=f"L{i}") for i in range(2)]
        api = api_for(services, "echo", "acme", "read_leads", "write_leads")

        async def both() -> None:
            await asyncio.gather(
                *(function.aio(lead=lead, api=api, context=ACME) for lead in leads)
            )

        run(both())
        stored = services.stored("acme", "echo")
        for lead in leads:
            assert stored["inner-" + lead.id] == [stored["outer-" + lead.id], "contacted"]
        assert stored["outer-" + leads[0].id] != stored["outer-" + leads[1].id]
        assert host.failures("echo") == []
        assert host.host_events("worker-busy") == []


# -- routes ----------------------------------------------------------------------------------------


ROUTER = """
@hookimpl
def register_routes(self, plugin_id):
    def lead(request, api, settings, context):
        found = api.get_lead(request.headers["x-lead"])
        body = json.dumps(
            {
                "name": found.name if found is not None else None,
                "greeting": settings["greeting"],
                "context": context.tenant,
                "api": api.tenant,
                "pid": os.getpid(),
                "read_only": type(settings).__name__,
            }
        )
        return ApiResponse(tenant=request.tenant, status=200, body=body.encode())

    def plain(req):
        return ApiResponse(tenant=req.tenant, status=200, body=req.path.encode())

    return [
        Route(path="/lead/", handler=lead, name="lead"),
        Route(path="/plain/", handler=plain, name="plain"),
    ]
"""


def test_a_sandboxed_route_handler_gets_its_tenants_api_settings_and_context(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """Handlers take what they name, sync and awaited; a handler naming none gets the request."""
    host = make_host()
    install(
        host,
        "router",
        ROUTER,
        permissions=("register_routes", "read_leads"),
        tenants=("acme", "globex"),
    )
    [found] = host.hook.register_routes()
    routes = {route.name: route for route in found}
    handler = routes["lead"].handler.view  # the plugin's handler, as the host holds it
    assert (handler.plugin_id, handler.name, handler.path) == ("router", "lead", "/lead/")
    mine = services.make_lead("acme", name="Ada")
    theirs = services.make_lead("globex", name="Grace")
    api = api_for(services, "router", "acme", "read_leads")
    request = ApiRequest(tenant="acme", method="GET", path="/lead/", headers={"x-lead": mine.id})
    settings = {"greeting": "hello acme"}
    for answer in (
        handler(request, api=api, settings=settings, context=ACME),
        run(handler.aio(request, api=api, settings=settings, context=ACME)),
    ):
        body = json.loads(answer.body)
        assert body["name"] == "Ada"
        assert (body["greeting"], body["context"], body["api"]) == ("hello acme", "acme", "acme")
        assert body["read_only"] == "mappingproxy"
        assert body["pid"] != os.getpid()
    # Its tenant's data only: another tenant's lead is not found through acme's api.
    request = ApiRequest(tenant="acme", method="GET", path="/lead/", headers={"x-lead": theirs.id})
    answer = run(handler.aio(request, api=api, settings=settings, context=ACME))
    assert json.loads(answer.body)["name"] is None
    plain = routes["plain"].handler.view
    assert run(plain.aio(ApiRequest(tenant="acme", method="GET", path="/plain/"))).body == (
        b"/plain/"
    )


def test_a_route_given_another_tenants_api_or_context_is_refused(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """A host mistake never hands a worker of one tenant the api of another."""
    host = make_host()
    install(host, "router", ROUTER, permissions=("register_routes", "read_leads"))
    [found] = host.hook.register_routes()
    handler = {route.name: route for route in found}["lead"].handler.view
    request = ApiRequest(tenant="acme", method="GET", path="/lead/", headers={"x-lead": "x"})
    globex = api_for(services, "router", "globex", "read_leads")
    with pytest.raises(SandboxError, match="its api is for tenant 'globex'"):
        run(handler.aio(request, api=globex, settings={"greeting": ""}, context=ACME))
    with pytest.raises(SandboxError, match="its context is for tenant 'globex'"):
        handler(request, settings={}, context=Context(tenant="globex"))


# -- closing the host ------------------------------------------------------------------------------


def test_closing_the_host_from_another_thread_cuts_an_awaited_call_short(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    """close() never waits for a plugin: the awaited call fails at once as the sync one does."""
    host = make_host()
    install(host, "sleeper", SLEEPER.format(delay=15.0), permissions=("dashboard_widgets",))
    function = proxy(host, "sleeper", "dashboard_widget")
    assert host.sandbox.start("sleeper", "acme")

    async def main() -> list[Any]:
        call = asyncio.ensure_future(function.aio(context=ACME))
        await asyncio.sleep(0.5)  # the call is in its worker
        closing = asyncio.to_thread(host.close)
        return list(await asyncio.gather(call, closing, return_exceptions=True))

    answered, closed = run(main())
    assert isinstance(answered, SandboxError), answered  # not the widget, 15 s later
    assert "the host closed" in str(answered)
    assert closed is None


def test_closing_the_host_on_the_loops_own_thread_does_not_deadlock(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    """A close() made by sync code inside the loop cannot wait for the loop's own calls: they
    are cut short, and end with SandboxError once the loop runs again."""
    host = make_host()
    install(host, "sleeper", SLEEPER.format(delay=15.0), permissions=("dashboard_widgets",))
    function = proxy(host, "sleeper", "dashboard_widget")
    assert host.sandbox.start("sleeper", "acme")
    outcome: list[Any] = []

    async def main() -> None:
        call = asyncio.ensure_future(function.aio(context=ACME))
        await asyncio.sleep(0.5)
        host.close()  # blocking, on the loop's thread
        outcome.extend(await asyncio.gather(call, return_exceptions=True))

    thread = threading.Thread(target=run, args=(main(),), daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "close() waited for a call only the blocked loop could end"
    [answered] = outcome
    assert isinstance(answered, SandboxError), answered
    assert not isinstance(answered, SandboxTimeout)  # ended by the close, not by its timeout
    assert "the host closed" in str(answered)
