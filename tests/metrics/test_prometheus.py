"""services_ai_plugins.prometheus: a scrape of a real host, parsed back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import cast

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import PluginHost, SandboxPolicy
from services_ai_plugins._dispatch import LATENCY_BUCKETS
from services_ai_plugins.events import Context
from services_ai_plugins.storage import SourceKind
from services_ai_plugins.types import Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from services_ai_plugins.prometheus import PluginCollector  # noqa: E402

HEADER = (
    "import time\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import Widget\n\n\n"
    "class Plugin:\n"
)

ACME = Context(tenant="acme")

#: Works, fast.
QUIET = """
@hookimpl
def lead_created(self, lead, api):
    return None
"""

#: Fails every other call, and takes 0.3 s when it works: it lies about nothing the
#: scrape believes, since the host times and counts it.
FLAKY = """
count = 0

@hookimpl
def lead_created(self, lead, api):
    type(self).count += 1
    if type(self).count % 2:
        raise RuntimeError("boom")
    time.sleep(0.3)
"""


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


def scrape(host: PluginHost) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """generate_latest on a registry of the collector alone, parsed: name -> labels -> value."""
    registry = prometheus_client.CollectorRegistry()
    registry.register(PluginCollector(host))
    text = prometheus_client.generate_latest(registry).decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def hook_labels(plugin: str, hook: str = "lead_created") -> tuple[tuple[str, str], ...]:
    return (("hook", hook), ("plugin", plugin))


def bucket(plugin: str, bound: str) -> tuple[tuple[str, str], ...]:
    return (("hook", "lead_created"), ("le", bound), ("plugin", plugin))


def check_calls(host: PluginHost, services: FakeHostServices) -> None:
    for _ in range(4):
        host.hook.lead_created(lead=services.make_lead("acme", name="Ada"), context=ACME)
    samples = scrape(host)
    calls = samples["services_ai_plugins_hook_calls_total"]
    errors = samples["services_ai_plugins_hook_errors_total"]
    assert calls[hook_labels("quiet")] == 4
    assert errors[hook_labels("quiet")] == 0
    assert calls[hook_labels("flaky")] == 4
    assert errors[hook_labels("flaky")] == 2
    counts = samples["services_ai_plugins_hook_duration_seconds_count"]
    assert counts[hook_labels("flaky")] == 4
    assert counts[hook_labels("quiet")] == 4
    buckets = samples["services_ai_plugins_hook_duration_seconds_bucket"]
    # The two slow calls took 0.3 s or more: over the 0.25 bucket, within the 0.5 one
    # (with room: a noisy machine may take longer, never shorter).
    assert buckets[bucket("flaky", "0.25")] <= 2
    assert buckets[bucket("flaky", "+Inf")] == 4
    assert buckets[bucket("quiet", "+Inf")] == 4
    # Cumulative and complete: one bucket line per bound, never decreasing.
    flaky = [buckets[bucket("flaky", repr(bound))] for bound in LATENCY_BUCKETS]
    assert flaky == sorted(flaky)
    assert flaky[LATENCY_BUCKETS.index(0.25)] == 2  # the failures were quick
    total = samples["services_ai_plugins_hook_duration_seconds_sum"][hook_labels("flaky")]
    assert total >= 0.6


def test_calls_errors_and_latency_buckets_in_process(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """Each plugin's calls, errors and histogram are its own, per hook."""
    host = cast(
        "PluginHost",
        hosts(sandbox=SandboxPolicy(isolation=dict.fromkeys(SourceKind, Isolation.INPROCESS))),
    )
    install(host, "quiet", QUIET)
    install(host, "flaky", FLAKY)
    check_calls(host, services)


def test_calls_errors_and_latency_buckets_sandboxed_with_workers(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """The same through sandbox workers, counted by the host (not reported by the plugin)."""
    host = cast("PluginHost", hosts(sandbox=SandboxPolicy(timeout=10.0)))
    install(host, "quiet", QUIET)
    install(host, "flaky", FLAKY)
    check_calls(host, services)
    workers = scrape(host)["services_ai_plugins_sandbox_workers"]
    assert workers[(("plugin", "flaky"),)] >= 1
    assert workers[(("plugin", "quiet"),)] >= 1


def test_a_plugin_cannot_forge_its_own_counts(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """A sandboxed plugin that writes to the host's modules changes only its own process."""
    host = cast("PluginHost", hosts(sandbox=SandboxPolicy(timeout=10.0)))
    install(
        host,
        "forger",
        """
        @hookimpl
        def lead_created(self, lead, api):
            import services_ai_plugins._dispatch as d
            d.LATENCY_BUCKETS_NS = ()
            raise RuntimeError("nothing happened here")
        """,
    )
    host.hook.lead_created(lead=services.make_lead("acme", name="Ada"), context=ACME)
    samples = scrape(host)
    assert samples["services_ai_plugins_hook_calls_total"][hook_labels("forger")] == 1
    assert samples["services_ai_plugins_hook_errors_total"][hook_labels("forger")] == 1


def test_suspensions_and_host_events_are_scraped(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """A breaker trip shows as a suspended tenant of the plugin."""
    from services_ai_plugins import BreakerPolicy

    host = cast(
        "PluginHost",
        hosts(
            sandbox=SandboxPolicy(isolation=dict.fromkeys(SourceKind, Isolation.INPROCESS)),
            breaker=BreakerPolicy(consecutive_failures=2, failure_rate=0),
        ),
    )
    install(
        host,
        "broken",
        """
        @hookimpl
        def lead_created(self, lead, api):
            raise RuntimeError("always")
        """,
    )
    assert "services_ai_plugins_suspended_tenants" not in scrape(host)
    for _ in range(3):
        host.hook.lead_created(lead=services.make_lead("acme", name="Ada"), context=ACME)
    samples = scrape(host)
    assert samples["services_ai_plugins_suspended_tenants"][(("plugin", "broken"),)] == 1
    assert samples["services_ai_plugins_breaker_trips_total"] == {(("plugin", "broken"),): 1}
    # Resumed, then tripped again: the suspension is back to one tenant, the trips add up.
    host.resume("broken", actor="ops", tenant="acme")
    for _ in range(3):
        host.hook.lead_created(lead=services.make_lead("acme", name="Ada"), context=ACME)
    samples = scrape(host)
    assert samples["services_ai_plugins_suspended_tenants"][(("plugin", "broken"),)] == 1
    assert samples["services_ai_plugins_breaker_trips_total"] == {(("plugin", "broken"),): 2}


def test_calls_by_tenant_within_the_cardinality_cap(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """MetricsPolicy(tenants=True, max_tenants=2): two tenants by name, the third as (other).

    Sandboxed, so the plugin cannot touch the counters; the totals per plugin and
    hook stay as they are, and a host without the policy has no tenant families.
    """
    from services_ai_plugins import MetricsPolicy

    host = cast(
        "PluginHost",
        hosts(
            sandbox=SandboxPolicy(timeout=10.0),
            metrics=MetricsPolicy(tenants=True, max_tenants=2),
        ),
    )
    install(host, "flaky", FLAKY, tenants=("acme", "globex", "initech"))
    for tenant, calls in (("acme", 2), ("globex", 1), ("initech", 2)):
        for _ in range(calls):
            host.hook.lead_created(
                lead=services.make_lead(tenant, name="Ada"), context=Context(tenant=tenant)
            )
    # Awaited, the call goes through the worker's awaitable form: counted alike.
    asyncio.run(host.ahook.lead_created(lead=services.make_lead("acme", name="Ada"), context=ACME))
    samples = scrape(host)
    by_tenant = samples["services_ai_plugins_tenant_hook_calls_total"]

    def labels(tenant: str) -> tuple[tuple[str, str], ...]:
        return (("hook", "lead_created"), ("plugin", "flaky"), ("tenant", tenant))

    assert by_tenant == {labels("acme"): 3, labels("globex"): 1, labels("(other)"): 2}
    errors = samples["services_ai_plugins_tenant_hook_errors_total"]
    # Each tenant's worker counts its own calls: the first and third of each raise.
    assert errors == {labels("acme"): 2, labels("globex"): 1, labels("(other)"): 1}
    counts = samples["services_ai_plugins_tenant_hook_duration_seconds_count"]
    assert counts[labels("(other)")] == 2
    assert samples["services_ai_plugins_hook_calls_total"][hook_labels("flaky")] == 6
    plain = cast("PluginHost", hosts(sandbox=SandboxPolicy(timeout=10.0)))
    install(plain, "quiet", QUIET)
    plain.hook.lead_created(lead=services.make_lead("acme", name="Ada"), context=ACME)
    assert not [name for name in scrape(plain) if "tenant_hook" in name]


def test_only_the_tenants_named_are_broken_out(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """MetricsPolicy(tenants={"globex"}): globex by name, every other tenant as (other)."""
    from services_ai_plugins import MetricsPolicy

    host = cast(
        "PluginHost",
        hosts(
            sandbox=SandboxPolicy(isolation=dict.fromkeys(SourceKind, Isolation.INPROCESS)),
            metrics=MetricsPolicy(tenants={"globex"}),
        ),
    )
    install(host, "quiet", QUIET, tenants=("acme", "globex", "initech"))
    for tenant in ("acme", "globex", "initech", "globex"):
        host.hook.lead_created(
            lead=services.make_lead(tenant, name="Ada"), context=Context(tenant=tenant)
        )
    calls = scrape(host)["services_ai_plugins_tenant_hook_calls_total"]
    assert {dict(labels)["tenant"]: value for labels, value in calls.items()} == {
        "globex": 2,
        "(other)": 2,
    }


def test_calls_waiting_for_a_sandbox_worker_are_counted(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """Two calls at once on one worker: the second waits, and the wait is scraped."""
    import threading

    host = cast("PluginHost", hosts(sandbox=SandboxPolicy(timeout=10.0, wait_timeout=10.0)))
    install(
        host,
        "slow",
        """
        @hookimpl
        def lead_created(self, lead, api):
            time.sleep(0.5)
        """,
    )
    host.hook.lead_created(lead=services.make_lead("acme", name="Ada"), context=ACME)  # started
    assert "services_ai_plugins_sandbox_queue_waits_total" not in scrape(host)
    callers = [
        threading.Thread(
            target=host.hook.lead_created,
            kwargs={"lead": services.make_lead("acme", name="Ada"), "context": ACME},
        )
        for _ in range(2)
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(30)
    samples = scrape(host)
    assert samples["services_ai_plugins_sandbox_queue_waits_total"] == {(("plugin", "slow"),): 1}
    waited = samples["services_ai_plugins_sandbox_queue_wait_seconds_total"][(("plugin", "slow"),)]
    assert 0 < waited <= 10.0
    assert samples["services_ai_plugins_hook_calls_total"][hook_labels("slow")] == 3


def test_nothing_imports_prometheus_client_unless_asked(tmp_path: Path) -> None:
    """The package, its host and a hook call never import prometheus_client by themselves."""
    script = textwrap.dedent(
        """
        import sys
        import services_ai_plugins, services_ai_plugins.storage, services_ai_plugins.sandbox
        from services_ai_plugins import MemoryStorage, PluginHost
        from services_ai_plugins_testing.fakes import FakeHostServices
        host = PluginHost(FakeHostServices(), storage=MemoryStorage(), plugins_dir=sys.argv[1],
                          entry_points=False)
        host.refresh()
        host.close()
        assert "prometheus_client" not in sys.modules, "imported"
        import services_ai_plugins.prometheus
        assert "prometheus_client" in sys.modules
        """
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
