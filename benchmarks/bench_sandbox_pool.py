"""Question "sandbox_pool": what two workers per plugin buy concurrent callers.

SDK: 4 threads call ``host.hook.lead_created`` for one tenant at once, into one
sandboxed plugin whose hook takes about 20 ms (it sleeps: the worker waits, as
one waiting on a web service would). With ``workers_per_plugin=1`` the calls
take turns on the tenant's only worker; with ``workers_per_plugin=2`` two run at
once. Both pools are started before the timing (``host.sandbox.start``), and
rounds of the two alternate in the same run.

Reported: calls per second of each, and their ratio (target: two workers give
>= 1.7x the throughput of one). Every call must be served: a call that found no
worker (``WorkerBusy``) would be skipped, so the wait is long enough for none to.

Run it with ``.venv/bin/python benchmarks/bench_sandbox_pool.py`` (``--quick`` for
fewer rounds).
"""

from __future__ import annotations

import platform
import statistics
import sys
import tempfile
import textwrap
import threading
from datetime import datetime, timezone
from pathlib import Path
from time import perf_counter
from typing import Any, Final

import services_ai_plugins
from _harness import QuietServices, _record, _results_path, install_plugin
from services_ai_plugins import MemoryStorage, PluginHost, SandboxPolicy
from services_ai_plugins.events import Context

#: The plugin: a hook of about 20 ms.
PLUGIN: Final = """
    import time

    from services_ai_plugins import hookimpl

    class Plugin:
        @hookimpl
        def lead_created(self, lead, context):
            time.sleep(0.02)
"""

CALLERS: Final = 4
TENANT: Final = "acme"


def make_host(root: Path, services: QuietServices, workers: int) -> PluginHost:
    """A host with the plugin installed and enabled, its pool for the tenant started."""
    folder = root / f"pool-{workers}"
    host = PluginHost(
        services,
        storage=MemoryStorage(),
        plugins_dir=folder / "plugins",
        entry_points=False,
        sandbox=SandboxPolicy(timeout=10.0, workers_per_plugin=workers, wait_timeout=60.0),
        flush_interval=3600,
    )
    install_plugin(host, folder, "pooled", textwrap.dedent(PLUGIN), tenants=(TENANT,))
    host.plugins()
    assert host.sandbox.start("pooled", TENANT)
    return host


def throughput(host: PluginHost, lead: Any, per_caller: int) -> float:
    """Calls per second of ``CALLERS`` threads making ``per_caller`` calls each, together."""
    context = Context(tenant=TENANT)
    hook = host.hook.lead_created
    barrier = threading.Barrier(CALLERS + 1)

    def caller() -> None:
        barrier.wait()
        for _ in range(per_caller):
            hook(lead=lead, context=context)

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = perf_counter()
    for thread in threads:
        thread.join()
    return CALLERS * per_caller / (perf_counter() - began)


def main() -> None:
    quick = "--quick" in sys.argv or "--fast" in sys.argv  # nox -s bench passes --fast
    rounds, per_caller = (3, 15) if quick else (7, 30)
    root = Path(tempfile.mkdtemp(prefix="bench-sandbox-pool-"))
    services = QuietServices()
    lead = services.add_lead(TENANT, name="Ada Lovelace", email="ada@example.com")
    hosts = {workers: make_host(root, services, workers) for workers in (1, 2)}
    for host in hosts.values():  # warm up: plans built, every worker used once
        throughput(host, lead, 2)
    samples: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(rounds):  # alternating rounds: drifts of a noisy machine hit both alike
        for workers, host in hosts.items():
            samples[workers].append(throughput(host, lead, per_caller))
    for host in hosts.values():
        assert host.host_events("worker-busy") == [], "a call found no worker"
        assert host.failures() == [], host.failures()
        host.close()
    one, two = statistics.median(samples[1]), statistics.median(samples[2])
    ratio = two / one
    results = _results_path(None)
    _record(
        results,
        "sandbox_pool",
        {
            "callers": CALLERS,
            "hook_ms": 20,
            "calls_per_s": {"workers_1": one, "workers_2": two},
            "ratio": ratio,
            "target": ">= 1.7",
            "rounds": rounds,
            "calls_per_round": CALLERS * per_caller,
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "sdk_version": services_ai_plugins.__version__,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
    print("[sandbox_pool]")
    print(f"  {CALLERS} callers into one sandboxed plugin (a hook of 20 ms), one tenant:")
    print(f"    workers_per_plugin=1  {one:7.1f} calls/s")
    print(f"    workers_per_plugin=2  {two:7.1f} calls/s")
    print(f"  ratio 2 workers / 1 = {ratio:.2f}x (target >= 1.7x)  -> recorded in {results}")


if __name__ == "__main__":
    main()
