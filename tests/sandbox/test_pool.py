"""Sandbox pools: several workers per (plugin, tenant), and a busy pool is the host's problem.

Every plugin here is uploaded, installed and enabled through the real host; the
calls run in real worker processes. ``WorkerBusy`` (no free worker within
``wait_timeout``) must never count against a plugin: no failure, no breaker
count, no suspension; it is a host event instead.
"""

from __future__ import annotations

import contextvars
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import (
    BreakerPolicy,
    MemoryStorage,
    PluginHost,
    SandboxError,
    SandboxPolicy,
)
from services_ai_plugins.errors import PluginError, WorkerBusy
from services_ai_plugins.events import ApiRequest, Context, Lead, Widget
from services_ai_plugins_testing.fakes import FakeHostServices

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

HEADER = (
    "import json, os, time\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import Widget\n\n\n"
    "class Plugin:\n"
)

ACME = Context(tenant="acme")

#: A widget hook that takes ``delay`` seconds and says which worker ran it, and when.
TIMED = """
@hookimpl
def dashboard_widget(self, context):
    start = time.time()
    time.sleep({delay})
    return Widget(
        tenant=context.tenant, title="w", html=json.dumps([os.getpid(), start, time.time()])
    )
"""

#: A breaker that trips at the first failure: any busy call counted as one would suspend.
TOUCHY = BreakerPolicy(consecutive_failures=1, failure_rate=0)


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def make_host(hosts: Hosts) -> Callable[..., PluginHost]:
    def make(breaker: BreakerPolicy | None = None, **policy: Any) -> PluginHost:
        sandbox = SandboxPolicy(**{"timeout": 20.0} | policy)
        return cast("PluginHost", hosts(sandbox=sandbox, breaker=breaker))

    return make


def in_parallel(count: int, call: Callable[[int], Any]) -> list[Any]:
    """``call(i)`` for ``i`` in ``range(count)``, each in its own thread, started together."""
    results: list[Any] = [None] * count
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = call(index)
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "a call never returned"
    if errors:
        raise errors[0]
    return results


def widget_calls(host: PluginHost, count: int, tenant: str = "acme") -> list[list[Widget]]:
    context = Context(tenant=tenant)
    host.plugins()  # loaded before the calls come (the first refresh loads them)
    return in_parallel(count, lambda _: host.hook.dashboard_widget(context=context))


def alive(pid: int) -> bool:
    """Whether the process still exists (a little patience: it may be dying)."""
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.02)
    return True


def warm(host: PluginHost, plugin_id: str, tenant: str | None) -> bool:
    """Load the plugins, then start the plugin's workers for ``tenant`` (its pool filled)."""
    host.plugins()
    return host.sandbox.start(plugin_id, tenant)


def stand_in(host: PluginHost, plugin_id: str) -> Any:
    return host.plugins()[plugin_id]


# -- the error -------------------------------------------------------------------------------------


def test_worker_busy_is_a_plugin_error_but_not_a_sandbox_error() -> None:
    """Handlers catching SandboxError (the plugin's failures) do not catch the host's capacity."""
    error = WorkerBusy("crm", "acme", "lead_created", 0.25, workers=2, wait_timeout=0.25)
    assert isinstance(error, PluginError)
    assert not isinstance(error, SandboxError)
    assert (error.plugin_id, error.tenant, error.hook, error.waited) == (
        "crm",
        "acme",
        "lead_created",
        0.25,
    )
    assert "capacity" in str(error)
    assert "workers_per_plugin=2" in str(error)
    assert "wait_timeout=0.25" in str(error)


# -- 24 concurrent requests -----------------------------------------------------------------------


def test_24_concurrent_requests_skip_busy_calls_and_never_suspend_a_healthy_plugin(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    """Calls that find both workers busy past wait_timeout are skipped, recorded as host
    events, and counted nowhere against the plugin: with a breaker that trips at the first
    failure, the plugin stays enabled."""
    host = make_host(breaker=TOUCHY, workers_per_plugin=2, wait_timeout=0.2)
    install(host, "pool", TIMED.format(delay=0.3), permissions=("dashboard_widgets",))
    assert warm(host, "pool", "acme")
    results = widget_calls(host, 24)
    served = [widgets for widgets in results if widgets]
    skipped = [widgets for widgets in results if not widgets]
    assert served, "some calls got a worker"
    assert skipped, "24 calls of 0.3 s on 2 workers with a 0.2 s wait: some find none free"
    assert len({json.loads(w.html)[0] for [w] in served}) <= 2
    # Nothing against the plugin.
    assert host.suspensions() == []
    assert host.registry.enabled_plugins("acme") == ["pool"]
    assert host.failures("pool") == []
    assert host._dispatcher.tripped() == {}
    assert host._dispatcher.stats("pool", "dashboard_widget").failing is None
    [metrics] = host.metrics("pool")
    assert (metrics.calls, metrics.errors) == (len(served), 0)
    # The host's own record of it.
    events = host.host_events("worker-busy")
    assert len(events) == len(skipped)
    for event in events:
        assert (event.plugin_id, event.tenant, event.hook) == ("pool", "acme", "dashboard_widget")
        assert "workers_per_plugin=2" in event.message
        assert "wait_timeout=0.2" in event.message
    # Still served afterwards.
    [[widget]] = widget_calls(host, 1)
    assert widget.plugin_id == "pool"


def test_24_concurrent_requests_all_get_results_with_a_long_enough_wait(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    """With wait_timeout to spare, every call is served, by at most the pool's two workers."""
    host = make_host(breaker=TOUCHY, workers_per_plugin=2, wait_timeout=60.0)
    install(host, "pool", TIMED.format(delay=0.3), permissions=("dashboard_widgets",))
    results = widget_calls(host, 24)
    assert all(len(widgets) == 1 for widgets in results)
    pids = {json.loads(widgets[0].html)[0] for widgets in results}
    assert 1 <= len(pids) <= 2
    assert os.getpid() not in pids
    assert set(stand_in(host, "pool").all_pids()["acme"]) == pids
    assert host.host_events("worker-busy") == []
    assert host.failures("pool") == []
    assert host.suspensions() == []


def test_with_strict_a_busy_call_raises_worker_busy_and_still_is_no_failure(
    hosts: Hosts, install: Installer
) -> None:
    host = cast(
        "PluginHost",
        hosts(
            sandbox=SandboxPolicy(timeout=20.0, wait_timeout=0.1),
            breaker=TOUCHY,
            strict=True,
        ),
    )
    install(host, "pool", TIMED.format(delay=1.0), permissions=("dashboard_widgets",))
    assert warm(host, "pool", "acme")
    outcomes = in_parallel(3, lambda _: _outcome(lambda: host.hook.dashboard_widget(context=ACME)))
    busy = [o for o in outcomes if isinstance(o, WorkerBusy)]
    assert busy, outcomes
    assert all(isinstance(o, list) for o in outcomes if not isinstance(o, WorkerBusy))
    assert host.failures("pool") == []
    assert host.suspensions() == []
    assert len(host.host_events("worker-busy")) == len(busy)


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except WorkerBusy as exc:
        return exc


# -- parallel workers ------------------------------------------------------------------------------


def test_two_calls_in_parallel_run_in_two_workers_at_once(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    """Each call is served by its own worker, and their runs overlap in time."""
    host = make_host(workers_per_plugin=2, wait_timeout=30.0)
    install(host, "pool", TIMED.format(delay=1.5), permissions=("dashboard_widgets",))
    assert warm(host, "pool", "acme")
    assert len(stand_in(host, "pool").all_pids()["acme"]) == 2  # start() fills the pool
    [[first], [second]] = widget_calls(host, 2)
    pid_a, start_a, end_a = json.loads(first.html)
    pid_b, start_b, end_b = json.loads(second.html)
    assert pid_a != pid_b
    assert start_a < end_b, "the two calls ran at the same time"
    assert start_b < end_a, "the two calls ran at the same time"
    assert host.failures("pool") == []


def test_one_worker_per_plugin_by_default_takes_turns(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    """The default pool of one: calls run one after the other in the same worker."""
    host = make_host(wait_timeout=30.0)
    install(host, "pool", TIMED.format(delay=0.3), permissions=("dashboard_widgets",))
    [[first], [second]] = widget_calls(host, 2)
    pid_a, start_a, end_a = json.loads(first.html)
    pid_b, start_b, end_b = json.loads(second.html)
    assert pid_a == pid_b
    assert end_a <= start_b or end_b <= start_a
    assert stand_in(host, "pool").pids()["acme"] == pid_a


# -- nested calls ----------------------------------------------------------------------------------


class Firing(FakeHostServices):
    """Services whose ``update_lead`` fires ``lead_updated`` (inline, or in a thread that
    carries the caller's context: where an app's services may run it)."""

    host: PluginHost
    threaded = False

    def update_lead(self, tenant: str, lead_id: str, changes: Any) -> Lead:
        lead = super().update_lead(tenant, lead_id, changes)

        def fire() -> None:
            self.host.hook.lead_updated(lead=lead, changes={}, context=Context(tenant=tenant))

        if self.threaded:
            thread = threading.Thread(target=contextvars.copy_context().run, args=(fire,))
            thread.start()
            thread.join()
        else:
            fire()
        return lead


NESTING = """
@hookimpl
def lead_created(self, lead, api):
    api.store_set("outer-" + lead.id, os.getpid())
    time.sleep(0.3)  # both workers busy at once when two calls come together
    api.update_lead(lead.id, {"status": "contacted"})

@hookimpl
def lead_updated(self, lead, api):
    api.store_set("inner-" + lead.id, [os.getpid(), lead.status])
"""


@pytest.mark.parametrize("threaded", [False, True], ids=["inline", "thread-with-context"])
@pytest.mark.parametrize("workers", [1, 2])
def test_a_nested_call_runs_in_the_worker_of_the_call_it_is_nested_in(
    tmp_path: Path, install: Installer, workers: int, threaded: bool
) -> None:
    """A hook fired by the host while it serves a worker's API request goes to that worker,
    never waits for another: no deadlock even with every worker of the pool busy."""
    services = Firing()
    services.threaded = threaded
    with PluginHost(
        services,
        storage=MemoryStorage(),
        plugins_dir=tmp_path / "plugins",
        entry_points=False,
        sandbox=SandboxPolicy(timeout=20.0, workers_per_plugin=workers, wait_timeout=60.0),
        breaker=TOUCHY,
    ) as host:
        services.host = host
        install(host, "echo", NESTING, permissions=("read_leads", "write_leads"))
        leads = [services.make_lead("acme", name=f"L{i}") for i in range(2)]
        host.plugins()
        in_parallel(2, lambda i: host.hook.lead_created(lead=leads[i], context=ACME))
        stored = services.stored("acme", "echo")
        for lead in leads:
            assert stored["inner-" + lead.id] == [stored["outer-" + lead.id], "contacted"]
        if workers == 2:  # both outer calls ran at once, in the two workers
            assert stored["outer-" + leads[0].id] != stored["outer-" + leads[1].id]
        assert host.failures("echo") == []
        assert host.host_events("worker-busy") == []


# -- a hostile plugin ------------------------------------------------------------------------------


STUCK = """
@hookimpl
def lead_created(self, lead, api):
    if lead.name == "stuck":
        api.store_set("stuck", os.getpid())
        while True:
            time.sleep(1)
    api.store_set("served-" + lead.id, os.getpid())
"""


def test_a_worker_stuck_forever_leaves_the_other_to_serve_and_is_killed_at_its_timeout(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host(timeout=8.0, workers_per_plugin=2, wait_timeout=30.0)
    install(host, "stuck", STUCK)
    stuck = services.make_lead("acme", name="stuck")
    thread = threading.Thread(
        target=lambda: host.hook.lead_created(lead=stuck, context=ACME), daemon=True
    )
    thread.start()
    for _ in range(1000):  # until the stuck call runs in its worker
        if "stuck" in services.stored("acme", "stuck"):
            break
        time.sleep(0.02)
    stuck_pid = services.stored("acme", "stuck")["stuck"]
    healthy = [services.make_lead("acme", name=f"ok{i}") for i in range(3)]
    for lead in healthy:
        host.hook.lead_created(lead=lead, context=ACME)
    assert thread.is_alive(), "the healthy calls did not wait for the stuck one"
    stored = services.stored("acme", "stuck")
    served = {stored["served-" + lead.id] for lead in healthy}
    assert len(served) == 1  # the pool's other worker
    assert stuck_pid not in served
    thread.join(60)
    assert not thread.is_alive()
    [failure] = host.failures("stuck")
    assert failure.exc_type == "SandboxTimeout"
    assert not alive(cast("int", stuck_pid))
    assert stuck_pid not in stand_in(host, "stuck").all_pids().get("acme", ())


# -- tenants ---------------------------------------------------------------------------------------


def test_a_pool_serves_one_tenant_only(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    """With two workers per tenant and calls of two tenants at once, no worker serves both."""
    host = make_host(workers_per_plugin=2, wait_timeout=60.0)
    install(
        host,
        "pool",
        TIMED.format(delay=0.2),
        permissions=("dashboard_widgets",),
        tenants=("acme", "globex"),
    )
    tenants = ["acme", "globex"] * 4
    host.plugins()
    results = in_parallel(
        len(tenants),
        lambda i: host.hook.dashboard_widget(context=Context(tenant=tenants[i])),
    )
    seen: dict[str, set[int]] = {"acme": set(), "globex": set()}
    for tenant, [widget] in zip(tenants, results, strict=True):
        assert widget.tenant == tenant
        seen[tenant].add(json.loads(widget.html)[0])
    assert seen["acme"].isdisjoint(seen["globex"])
    pools = stand_in(host, "pool").all_pids()
    assert set(pools["acme"]) >= seen["acme"]
    assert set(pools["globex"]) >= seen["globex"]
    assert set(pools["acme"]).isdisjoint(pools["globex"])
    assert all(len(pids) <= 2 for pids in pools.values())


# -- routes ----------------------------------------------------------------------------------------


ROUTED = """
@hookimpl
def register_routes(self, plugin_id):
    from services_ai_plugins.events import ApiResponse, Route

    def slow(request):
        time.sleep(1.0)
        return ApiResponse(tenant=request.tenant, status=200, body=b"ok")

    return [Route(path="/slow/", handler=slow, name="slow")]
"""


def test_a_busy_route_raises_worker_busy_recorded_as_a_host_event_not_a_failure(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    host = make_host(breaker=TOUCHY, wait_timeout=0.1)
    install(host, "router", ROUTED, permissions=("register_routes",))
    [[route]] = host.hook.register_routes()
    request = ApiRequest(tenant="acme", method="GET", path="/slow/")
    assert route.handler(request).body == b"ok"  # the tenant's worker started, handlers built
    outcomes = in_parallel(3, lambda _: _outcome(lambda: route.handler(request)))
    busy = [o for o in outcomes if isinstance(o, WorkerBusy)]
    assert busy
    assert all(o.hook == "route:slow" for o in busy)
    events = host.host_events("worker-busy")
    assert len(events) == len(busy)
    assert all(event.hook == "route:slow" for event in events)
    assert host.failures("router") == []
    assert host.suspensions() == []
