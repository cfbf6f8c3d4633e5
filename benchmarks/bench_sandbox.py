"""Question "sandbox": what a hook call into a sandboxed plugin costs over a bare pipe echo.

SDK: ``host.hook.lead_created(lead=..., context=...)`` on a host whose only
plugin for the tenant is an uploaded archive running in its worker process:
the call loop, the arguments written by the events' converter into a frame,
the worker reading them back into records and calling the plugin, the answer
framed back. Twice: a hook that returns at once (``round_trip``), and one that
makes one API call (``api.store_get``), which travels back to the host, is
checked by the permission layer and answered (``api_callback``).

Baseline: a ``multiprocessing.Pipe`` to a child process that sends back what it
receives, with the same (lead, context) payload (pickled both ways). Both
sides are timed call by call, in alternating batches in the same run, and
reported as p50 and p99. Targets: p50 <= 2x the echo (<= 4x with the API
callback), p99 <= 3x.

Cold start: starting a worker (fork from the zygote, confinement, importing the
plugin, the ready message) against spawning ``python -I -c pass``; target <= 3x.
The zygote's own start (once per host) and each worker's resident memory
(RSS, and PSS, which counts pages shared with the zygote by share) are reported.

Tenants: every (plugin, tenant) has a worker of its own, so 100 tenants calling
one sandboxed plugin in turn, with the default pool (``max_workers`` 16), start a
worker on most calls (the least recently used one makes room). Reported as p50
and p99 per call, beside the same round with a pool that holds every tenant's
worker: the price of per-tenant workers, not a target.

Run it with ``.venv/bin/python benchmarks/bench_sandbox.py`` (``--quick`` for
fewer rounds).
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from pathlib import Path
from time import perf_counter, perf_counter_ns
from typing import Final

import services_ai_plugins
from _harness import QuietServices, _record, _results_path, install_plugin
from services_ai_plugins import MemoryStorage, PluginHost, SandboxPolicy
from services_ai_plugins.events import Context

PLUGINS = {
    "round-trip": """
        from services_ai_plugins import hookimpl

        class Plugin:
            @hookimpl
            def lead_created(self, lead, context):
                return None
    """,
    "api-callback": """
        from services_ai_plugins import hookimpl

        class Plugin:
            @hookimpl
            def lead_created(self, lead, api):
                api.store_get("last")
    """,
}


def echo(conn: Connection) -> None:
    # A session of its own, as a sandbox worker has: the scheduler then treats both peers
    # alike (with autogroup, each session is a scheduling group of its own).
    os.setsid()
    while True:
        try:
            conn.send(conn.recv())
        except EOFError:
            return


def install(host: PluginHost, root: Path, plugin_id: str, tenant: str) -> None:
    install_plugin(host, root, plugin_id, textwrap.dedent(PLUGINS[plugin_id]), tenants=(tenant,))


def timings(call: Callable[[], object], count: int) -> list[int]:
    out = []
    for _ in range(count):
        start = perf_counter_ns()
        call()
        out.append(perf_counter_ns() - start)
    return out


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3


def pss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class WorkerMemory:
    """One worker's memory: resident, and proportional (shared pages counted by share)."""

    plugin: str
    rss: int
    pss: int | None


#: Where the peers (the echo child, the workers) run, relative to the caller on CPU 0.
PLACEMENTS: Final = {"same_cpu": 0, "other_cpu": 1}


def pin(host: PluginHost, echo_pid: int, placement: str) -> bool:
    """Caller on CPU 0; the echo child and the workers on CPU 0 too, or on CPU 1.

    Both peers then run under the same conditions: left to the scheduler, a round trip
    swings by tens of microseconds run to run with its choice of CPU. ``same_cpu`` times
    the work of both sides (each message a context switch); ``other_cpu`` the wake-up
    across CPUs. False where the machine cannot pin (or has one CPU).
    """
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return False
    os.sched_setaffinity(0, {0})
    for pid in [w.pid for w in host.sandbox.workers()] + [echo_pid]:
        os.sched_setaffinity(pid, {PLACEMENTS[placement]})
    return True


def measure_calls(
    host: PluginHost, services: QuietServices, batches: int, per_batch: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Per placement: p50 and p99 of the echo, the sandboxed round trip, and with an API call."""
    lead = services.add_lead("acme", name="Ada Lovelace", email="ada@example.com")
    other = services.add_lead("globex", name="Grace Hopper", email="grace@example.com")
    acme, globex = Context(tenant="acme"), Context(tenant="globex")
    hook = host.hook.lead_created
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("fork").Process(target=echo, args=(child,), daemon=True)
    process.start()
    assert process.pid is not None
    payload = (lead, acme)

    def bare() -> object:
        parent.send(payload)
        return parent.recv()

    contenders: dict[str, Callable[[], object]] = {
        "echo": bare,
        "round_trip": lambda: hook(lead=lead, context=acme),
        "api_callback": lambda: hook(lead=other, context=globex),
    }
    for call in contenders.values():  # warm up: workers started, caches built
        timings(call, 200)
    reports: dict[str, dict[str, dict[str, float]]] = {}
    for placement in PLACEMENTS:
        if not pin(host, process.pid, placement):
            placement = "unpinned"  # noqa: PLW2901 - one run, named for what it was
        samples: dict[str, list[int]] = {name: [] for name in contenders}
        for _ in range(batches):  # alternating batches: drifts of a noisy machine hit all alike
            for name, call in contenders.items():
                samples[name] += timings(call, per_batch)
        report = {
            name: {"p50_us": percentile(values, 0.5), "p99_us": percentile(values, 0.99)}
            for name, values in samples.items()
        }
        for name in ("round_trip", "api_callback"):
            report[name]["p50_ratio"] = report[name]["p50_us"] / report["echo"]["p50_us"]
            report[name]["p99_ratio"] = report[name]["p99_us"] / report["echo"]["p99_us"]
        reports[placement] = report
        if placement == "unpinned":
            break
    process.kill()
    failures = host.failures()
    assert failures == [], failures
    return reports


def measure_cold_start(host: PluginHost, rounds: int) -> dict[str, float]:
    """Median time to start a worker, against spawning ``python -I -c pass``."""
    sandboxed = host.sandbox._plugins["round-trip"]
    starts, spawns = [], []
    for _ in range(rounds):
        sandboxed.stop()
        began = perf_counter()
        sandboxed.fill("acme")
        starts.append(perf_counter() - began)
        began = perf_counter()
        subprocess.run([sys.executable, "-I", "-c", "pass"], check=True)
        spawns.append(perf_counter() - began)
    cold, spawn = statistics.median(starts), statistics.median(spawns)
    return {"worker_ms": cold * 1e3, "python_I_pass_ms": spawn * 1e3, "ratio": cold / spawn}


def measure_tenants(
    root: Path, services: QuietServices, rounds: int, tenants: int = 100
) -> dict[str, dict[str, float]]:
    """p50 and p99 per call of ``tenants`` tenants calling one plugin in turn, per pool size."""
    names = [f"tenant-{number:03}" for number in range(tenants)]
    leads = {name: services.add_lead(name, name="Ada", email="ada@example.com") for name in names}
    report = {}
    for label, pool in (("default_pool", SandboxPolicy().max_workers), ("pool_holds_all", None)):
        folder = root / label
        host = PluginHost(
            services,
            storage=MemoryStorage(),
            plugins_dir=folder / "plugins",
            entry_points=False,
            sandbox=SandboxPolicy(timeout=10.0, max_workers=pool or tenants + 1),
            flush_interval=3600,
        )
        install(host, folder, "round-trip", names[0])
        for name in names[1:]:
            host.registry.enable("round-trip", name, actor="bench")
        hook = host.hook.lead_created
        contexts = {name: Context(tenant=name) for name in names}
        samples: list[int] = []
        for round_number in range(rounds + 1):
            for name in names:
                began = perf_counter_ns()
                hook(lead=leads[name], context=contexts[name])
                if round_number:  # the first round starts every worker: not counted
                    samples.append(perf_counter_ns() - began)
        assert host.failures() == [], host.failures()
        report[label] = {
            "max_workers": float(pool or tenants + 1),
            "p50_us": percentile(samples, 0.5),
            "p99_us": percentile(samples, 0.99),
            "calls": float(len(samples)),
        }
        host.close()
    return report


def main() -> None:
    quick = "--quick" in sys.argv or "--fast" in sys.argv  # nox -s bench passes --fast
    batches, per_batch = (10, 200) if quick else (30, 500)
    root = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    services = QuietServices()
    host = PluginHost(
        services,
        storage=MemoryStorage(),
        plugins_dir=root / "plugins",
        entry_points=False,
        sandbox=SandboxPolicy(timeout=10.0),
        flush_interval=3600,
    )
    began = perf_counter()
    host.sandbox.capabilities  # noqa: B018 - starts the zygote
    zygote_ms = (perf_counter() - began) * 1e3
    install(host, root, "round-trip", "acme")
    install(host, root, "api-callback", "globex")
    calls = measure_calls(host, services, batches, per_batch)
    cold = measure_cold_start(host, 10 if quick else 30) | {"zygote_ms": zygote_ms}
    memory = [WorkerMemory(w.plugin_id, w.rss or 0, pss(w.pid)) for w in host.sandbox.workers()]
    host.close()
    tenants = measure_tenants(root, services, 3 if quick else 10)
    results = _results_path(None)
    _record(
        results,
        "sandbox",
        {
            "calls": calls,
            "cold_start": cold,
            "tenants": tenants,
            "workers": [vars(row) for row in memory],
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "sdk_version": services_ai_plugins.__version__,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "calls_per_contender": batches * per_batch,
        },
    )
    print("[sandbox]")
    for placement, report in calls.items():
        print(f"  peers on {placement.replace('_', ' ')}:")
        for name, timing in report.items():
            ratios = (
                f"  p50 {timing['p50_ratio']:.2f}x  p99 {timing['p99_ratio']:.2f}x"
                if name != "echo"
                else ""
            )
            print(
                f"    {name:13} p50 {timing['p50_us']:8.1f} us  "
                f"p99 {timing['p99_us']:8.1f} us{ratios}"
            )
    print(
        f"  cold start    worker {cold['worker_ms']:.1f} ms vs python -I -c pass "
        f"{cold['python_I_pass_ms']:.1f} ms = {cold['ratio']:.2f}x "
        f"(zygote, once per host: {cold['zygote_ms']:.0f} ms)"
    )
    for label, timing in tenants.items():
        print(
            f"  100 tenants in turn, {label.replace('_', ' ')} "
            f"(max_workers {timing['max_workers']:.0f}): "
            f"p50 {timing['p50_us'] / 1e3:.2f} ms  p99 {timing['p99_us'] / 1e3:.2f} ms per call"
        )
    for row in memory:
        shared = f"{row.pss / 2**20:.1f} MiB" if row.pss is not None else "unknown"
        print(f"  worker {row.plugin}: RSS {row.rss / 2**20:.1f} MiB, PSS {shared}")
    print(f"  -> recorded in {results}")


if __name__ == "__main__":
    main()
