"""OpenTelemetry around plugin calls: spans and metrics read back through the SDK's in-memory
exporter and reader, from real hosts (in process, sandboxed, awaited)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import BreakerPolicy, MetricsPolicy, PluginHost, SandboxPolicy
from services_ai_plugins._telemetry import OTHER
from services_ai_plugins.events import Context
from services_ai_plugins.storage import SourceKind
from services_ai_plugins.types import Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

pytest.importorskip("opentelemetry.sdk")
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

HEADER = (
    "import asyncio\nimport time\nfrom services_ai_plugins import hookimpl\n\n\nclass Plugin:\n"
)

ACME = Context(tenant="acme")
INPROCESS = SandboxPolicy(isolation=dict.fromkeys(SourceKind, Isolation.INPROCESS))

QUIET = """
@hookimpl
def lead_created(self, lead, api):
    return None
"""

#: Raises on every call; sandboxed, it also tries to reach the host's tracer and fails.
HOSTILE = """
@hookimpl
def lead_created(self, lead, api):
    try:
        from opentelemetry import trace
        trace.get_tracer("forger").start_span("forged").end()
    except Exception:
        pass
    raise PermissionError("plugin says no")
"""


class Otel:
    """An SDK tracer and meter provider with in-memory exporters, given to a host's policy."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def policy(self, **options: Any) -> MetricsPolicy:
        return MetricsPolicy(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **options
        )

    def finished(self) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.name != "app request"]

    def points(self, name: str) -> list[Any]:
        """The data points of the metric ``name`` read now."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def close(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def otel() -> Any:
    made = Otel()
    yield made
    made.close()


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


def lead(services: FakeHostServices, tenant: str = "acme") -> Any:
    return services.make_lead(tenant, name="Ada")


def test_a_span_per_plugin_call_in_the_app_s_trace(
    hosts: Hosts, install: Installer, services: FakeHostServices, otel: Otel
) -> None:
    """Each plugin call is a span named after hook and plugin, a child of the app's span."""
    host = cast("PluginHost", hosts(sandbox=INPROCESS, metrics=otel.policy()))
    install(host, "quiet", QUIET)
    install(host, "hostile", HOSTILE)
    app = otel.tracer_provider.get_tracer("app")
    with app.start_as_current_span("app request") as request:
        host.hook.lead_created(lead=lead(services), context=ACME)
    spans = {span.name: span for span in otel.finished()}
    assert set(spans) == {"lead_created quiet", "lead_created hostile"}
    quiet, hostile = spans["lead_created quiet"], spans["lead_created hostile"]
    for span in (quiet, hostile):
        assert span.parent is not None
        assert span.parent.span_id == request.get_span_context().span_id
        assert span.kind is trace.SpanKind.INTERNAL
        assert span.attributes is not None
        assert span.attributes["services_ai_plugins.hook"] == "lead_created"
        assert span.attributes["services_ai_plugins.tenant"] == "acme"
        assert span.attributes["services_ai_plugins.sandboxed"] is False
    assert quiet.status.status_code is trace.StatusCode.UNSET
    assert hostile.status.status_code is trace.StatusCode.ERROR
    (event,) = hostile.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "PermissionError"
    # The in-process plugin could reach the global tracer: the API's no-op, nothing recorded.
    assert "forged" not in spans


def test_sandboxed_calls_are_spans_of_the_host(
    hosts: Hosts, install: Installer, services: FakeHostServices, otel: Otel
) -> None:
    """A sandboxed plugin's call is timed and traced by the host; its own spans go nowhere."""
    host = cast("PluginHost", hosts(sandbox=SandboxPolicy(timeout=10.0), metrics=otel.policy()))
    install(host, "hostile", HOSTILE)
    host.hook.lead_created(lead=lead(services), context=ACME)
    (span,) = otel.finished()
    assert span.name == "lead_created hostile"
    assert span.attributes is not None
    assert span.attributes["services_ai_plugins.sandboxed"] is True
    assert span.status.status_code is trace.StatusCode.ERROR
    (event,) = span.events
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "PermissionError"  # the plugin's, not the host's
    assert event.attributes["exception.message"] == "plugin says no"
    stack = str(event.attributes["exception.stacktrace"])
    assert 'raise PermissionError("plugin says no")' in stack
    assert span.status.description == "PermissionError: plugin says no"
    (point,) = otel.points("services_ai_plugins.hook.duration")
    assert point.count == 1
    assert dict(point.attributes) == {
        "services_ai_plugins.plugin": "hostile",
        "services_ai_plugins.hook": "lead_created",
        "error.type": "PermissionError",
    }


def test_awaited_calls_are_spans_too(
    hosts: Hosts, install: Installer, services: FakeHostServices, otel: Otel
) -> None:
    """host.ahook: an async in-process plugin and a sandboxed one, each its own span."""
    host = cast(
        "PluginHost",
        hosts(sandbox=SandboxPolicy(timeout=10.0, trusted={"waiter"}), metrics=otel.policy()),
    )
    install(
        host,
        "waiter",
        """
        @hookimpl
        async def lead_created(self, lead, api):
            await asyncio.sleep(0.01)
        """,
    )
    install(host, "quiet", QUIET)

    async def run() -> None:
        await host.ahook.lead_created(lead=lead(services), context=ACME)

    asyncio.run(run())
    spans = {span.name: span for span in otel.finished()}
    assert set(spans) == {"lead_created waiter", "lead_created quiet"}
    waiter = spans["lead_created waiter"]
    assert waiter.end_time is not None
    assert waiter.start_time is not None
    assert waiter.end_time - waiter.start_time >= 10_000_000  # the span covers the await


def test_the_duration_histogram_by_plugin_and_tenant_within_the_policy(
    hosts: Hosts, install: Installer, services: FakeHostServices, otel: Otel
) -> None:
    """The histogram has a tenant attribute only as MetricsPolicy allows; spans always do."""
    host = cast(
        "PluginHost",
        hosts(sandbox=INPROCESS, metrics=otel.policy(tenants=True, max_tenants=1)),
    )
    install(host, "quiet", QUIET, tenants=("acme", "globex"))
    for tenant in ("acme", "globex", "globex"):
        host.hook.lead_created(lead=lead(services, tenant), context=Context(tenant=tenant))
    points = otel.points("services_ai_plugins.hook.duration")
    counts = {dict(p.attributes)["services_ai_plugins.tenant"]: p.count for p in points}
    assert counts == {"acme": 1, OTHER: 2}
    assert points[0].explicit_bounds[:3] == (0.0001, 0.00025, 0.0005)
    tenants = sorted(
        span.attributes["services_ai_plugins.tenant"]
        for span in otel.finished()
        if span.attributes is not None
    )
    assert tenants == ["acme", "globex", "globex"]


def test_breaker_trips_and_workers_as_observable_metrics(
    hosts: Hosts, install: Installer, services: FakeHostServices, otel: Otel
) -> None:
    """The host-wide metrics are read from the host at each collection."""
    host = cast(
        "PluginHost",
        hosts(
            sandbox=SandboxPolicy(timeout=10.0),
            breaker=BreakerPolicy(consecutive_failures=2, failure_rate=0),
            metrics=otel.policy(),
        ),
    )
    install(host, "hostile", HOSTILE)
    for _ in range(3):
        host.hook.lead_created(lead=lead(services), context=ACME)
    (trips,) = otel.points("services_ai_plugins.breaker.trips")
    assert trips.value == 1
    assert dict(trips.attributes) == {"services_ai_plugins.plugin": "hostile"}
    (workers,) = otel.points("services_ai_plugins.sandbox.workers")
    assert workers.value >= 1


def test_off_by_policy_no_spans(
    hosts: Hosts, install: Installer, services: FakeHostServices, otel: Otel
) -> None:
    """MetricsPolicy(opentelemetry=False): providers or not, the plans are left alone."""
    host = cast("PluginHost", hosts(sandbox=INPROCESS, metrics=otel.policy(opentelemetry=False)))
    install(host, "quiet", QUIET)
    host.hook.lead_created(lead=lead(services), context=ACME)
    assert otel.finished() == []
    assert otel.points("services_ai_plugins.hook.duration") == []


def test_the_policy_refuses_bad_values() -> None:
    """A tenant collection must hold tenant ids; the cap is a count."""
    with pytest.raises(TypeError, match=r"MetricsPolicy\.tenants must be a bool"):
        MetricsPolicy(tenants=cast("Any", "acme"))
    with pytest.raises(TypeError, match="non-empty strings"):
        MetricsPolicy(tenants=cast("Any", {"acme", ""}))
    with pytest.raises(ValueError, match=r"MetricsPolicy\.max_tenants must be an int >= 0"):
        MetricsPolicy(max_tenants=-1)
    assert MetricsPolicy(tenants=["acme"]).tenants == frozenset({"acme"})


SCRIPT = """
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[2])
from conftest import Installer

from services_ai_plugins import BreakerPolicy, MemoryStorage, PluginHost, SandboxPolicy
from services_ai_plugins.events import Context
from services_ai_plugins.storage import SourceKind
from services_ai_plugins.types import Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

services = FakeHostServices()
host = PluginHost(
    services, storage=MemoryStorage(), plugins_dir=Path(sys.argv[1]) / "plugins",
    entry_points=False, refresh_interval=0,
    sandbox=SandboxPolicy(isolation=dict.fromkeys(SourceKind, Isolation.INPROCESS)),
)
Installer(Path(sys.argv[1]), {header!r})(host, "quiet", {body!r})
acme = Context(tenant="acme")
host.hook.lead_created(lead=services.make_lead("acme", name="Ada"), context=acme)
plan = host.hook.lead_created._cache[1]["acme"]
assert plan.entries[0][1].__class__.__name__ == "method", plan.entries
assert "opentelemetry" not in sys.modules, "imported"
if sys.argv[3] == "configure":
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    # The API alone, no SDK configured: still the bare implementations.
    host.hook.lead_created(lead=services.make_lead("acme", name="Ada"), context=acme)
    plan = host.hook.lead_created._cache[1]["acme"]
    assert plan.entries[0][1].__class__.__name__ == "method", plan.entries
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    host.hook.lead_created(lead=services.make_lead("acme", name="Ada"), context=acme)
    names = [span.name for span in exporter.get_finished_spans()]
    assert names == ["lead_created quiet"], names
host.close()
print("ok")
"""


@pytest.mark.parametrize("step", ["bare", "configure"])
def test_spans_start_once_the_app_configures_opentelemetry(tmp_path: Path, step: str) -> None:
    """Nothing imports opentelemetry; with its API and no SDK the plans are bare; once the app
    sets a global tracer provider, the next housekeeping tick builds plans with spans."""
    script = SCRIPT.format(header=HEADER, body=textwrap.dedent(QUIET))
    tests = Path(__file__).resolve().parents[1]
    src = tests.parent / "src"
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), str(tests), step],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
