"""Question "loop_lag": how late an event loop runs while sandboxed calls are awaited.

SDK: 32 calls of a sandboxed plugin's hook, each taking about 50 ms in its worker
(it sleeps), are kept in flight through ``await host.ahook.lead_created(...)``, the
host's async call loop (which awaits the stand-in's non-blocking ``aio``). The 32
workers (2 tenants, 16 workers each: ``workers_per_plugin=16``) are started before
the timing. A task ticking every
millisecond measures how late each tick wakes: the event loop's lag. A call that
blocked the loop would show as a lag of its whole length.

Two shapes of load: ``callers`` (the target's), 32 callers each awaiting one call
after another, their first calls spread over one call's length as requests of
a web server arrive; and ``lockstep``, rounds of 32 calls started in the same
instant and awaited together, where the loop sends 32 frames (and reads 32
answers) in one turn: the worst case, reported beside it.

Baseline: the same ticking task on an idle loop, in the same run.

Reported: p50, p99 and the worst lag of each (target: p99 <= 5 ms with 32
callers' calls in flight).

Run it with ``.venv/bin/python benchmarks/bench_loop_lag.py`` (``--quick`` for
fewer rounds).
"""

from __future__ import annotations

import asyncio
import platform
import sys
import tempfile
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from time import perf_counter
from typing import Any, Final

import services_ai_plugins
from _harness import QuietServices, _record, _results_path, install_plugin
from services_ai_plugins import MemoryStorage, PluginHost, SandboxPolicy
from services_ai_plugins.events import Context

#: The plugin: a hook of about 50 ms.
PLUGIN: Final = """
    import time

    from services_ai_plugins import hookimpl

    class Plugin:
        @hookimpl
        def lead_created(self, lead, context):
            time.sleep(0.05)
"""

TENANTS: Final = ("acme", "globex")
PER_TENANT: Final = 16
TICK: Final = 0.001


def make_host(root: Path, services: QuietServices) -> PluginHost:
    """A host with the plugin installed and enabled for every tenant, all workers started."""
    host = PluginHost(
        services,
        storage=MemoryStorage(),
        plugins_dir=root / "plugins",
        entry_points=False,
        sandbox=SandboxPolicy(
            timeout=10.0,
            workers_per_plugin=PER_TENANT,
            wait_timeout=60.0,
            max_workers=len(TENANTS) * PER_TENANT + 1,
        ),
        flush_interval=3600,
    )
    install_plugin(host, root, "lagged", textwrap.dedent(PLUGIN), tenants=TENANTS)
    host.plugins()
    for tenant in TENANTS:
        assert host.sandbox.start("lagged", tenant)
    return host


async def lags_while(work: Any) -> list[float]:
    """The lag of each 1 ms tick (seconds) while ``work`` (a coroutine) runs."""
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    done = False

    async def tick() -> None:
        while not done:
            before = loop.time()
            await asyncio.sleep(TICK)
            lags.append(loop.time() - before - TICK)

    ticker = asyncio.ensure_future(tick())
    await asyncio.sleep(0)
    try:
        await work
    finally:
        done = True
        await ticker
    return lags


def call_arguments(leads: dict[str, Any]) -> list[tuple[Any, Context]]:
    """The (lead, context) of each of the 32 calls in flight: 16 per tenant."""
    contexts = {tenant: Context(tenant=tenant) for tenant in TENANTS}
    return [(leads[tenant], contexts[tenant]) for tenant in TENANTS for _ in range(PER_TENANT)]


async def rounds_of_calls(host: PluginHost, leads: dict[str, Any], rounds: int) -> int:
    """``rounds`` rounds of 32 calls started at once and awaited together; the calls made."""
    aio = host.ahook.lead_created
    calls = call_arguments(leads)
    for _ in range(rounds):
        await asyncio.gather(*(aio(lead=lead, context=context) for lead, context in calls))
    return rounds * len(calls)


async def callers(host: PluginHost, leads: dict[str, Any], rounds: int) -> int:
    """32 callers making ``rounds`` calls each, one after another; the calls made.

    The callers start one after another over one call's length (50 ms): then, as
    with a web server's requests, their calls do not all start and end in the
    same instant.
    """
    aio = host.ahook.lead_created
    calls = call_arguments(leads)

    async def caller(index: int, lead: Any, context: Context) -> None:
        await asyncio.sleep(index * 0.05 / len(calls))
        for _ in range(rounds):
            await aio(lead=lead, context=context)

    await asyncio.gather(*(caller(i, *arguments) for i, arguments in enumerate(calls)))
    return rounds * len(calls)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    quick = "--quick" in sys.argv or "--fast" in sys.argv  # nox -s bench passes --fast
    rounds = 10 if quick else 40
    root = Path(tempfile.mkdtemp(prefix="bench-loop-lag-"))
    services = QuietServices()
    leads = {t: services.add_lead(t, name="Ada", email="ada@example.com") for t in TENANTS}
    host = make_host(root, services)

    async def measure() -> dict[str, tuple[list[float], int, float]]:
        await rounds_of_calls(host, leads, 2)  # warm up: every worker used
        measured = {}
        for name, load in (("callers", callers), ("lockstep", rounds_of_calls)):
            began = perf_counter()
            calls = 0

            async def work(load: Any = load) -> None:
                nonlocal calls
                calls = await load(host, leads, rounds)

            lags = await lags_while(work())
            measured[name] = (lags, calls, perf_counter() - began)
        measured["idle"] = (await lags_while(asyncio.sleep(rounds * 0.06)), 0, rounds * 0.06)
        return measured

    measured = asyncio.run(measure())
    assert host.host_events("worker-busy") == [], "a call found no worker"
    assert host.failures() == [], host.failures()
    host.close()
    report = {
        name: {
            "p50_ms": percentile(lags, 0.5) * 1e3,
            "p99_ms": percentile(lags, 0.99) * 1e3,
            "max_ms": max(lags) * 1e3,
            "ticks": float(len(lags)),
            "calls": float(calls),
            "seconds": seconds,
        }
        for name, (lags, calls, seconds) in measured.items()
    }
    results = _results_path(None)
    _record(
        results,
        "loop_lag",
        {
            "lag": report,
            "calls_in_flight": len(TENANTS) * PER_TENANT,
            "hook_ms": 50,
            "rounds": rounds,
            "target": "callers p99 <= 5 ms",
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "sdk_version": services_ai_plugins.__version__,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
    print("[loop_lag]")
    print(
        f"  {len(TENANTS) * PER_TENANT} sandboxed calls of 50 ms in flight via host.ahook; "
        "a 1 ms tick's lag:"
    )
    for name, row in report.items():
        print(
            f"    {name:9} p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms  "
            f"max {row['max_ms']:6.2f} ms  ({row['calls']:.0f} calls in {row['seconds']:.1f} s)"
        )
    print(f"  target: callers p99 <= 5 ms  -> recorded in {results}")


if __name__ == "__main__":
    main()
