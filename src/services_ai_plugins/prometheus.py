"""Prometheus metrics for a :class:`~services_ai_plugins.PluginHost` (the ``prometheus`` extra).

Register a :class:`PluginCollector` on the app's registry; on each scrape it reads
the host's counters of this process (no global state, nothing kept between scrapes)::

    from prometheus_client import REGISTRY
    from services_ai_plugins.prometheus import PluginCollector

    REGISTRY.register(PluginCollector(host))

The names and labels are listed in docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Final, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ._dispatch import LATENCY_BUCKETS
from ._telemetry import LiveHookMetrics

if TYPE_CHECKING:
    from ._host import PluginHost

__all__ = ["PREFIX", "PluginCollector"]

#: Every metric's name starts with this.
PREFIX: Final = "services_ai_plugins_"

_LABELS: Final = ("plugin", "hook")
_BOUNDS: Final = tuple(repr(bound) for bound in LATENCY_BUCKETS)


class PluginCollector(Collector):
    """A collector of one host's plugin metrics in this process.

    Calls, errors and the latency histogram per plugin and hook (failed calls
    count in the histogram too), and per plugin, hook and tenant when the
    host's :class:`~services_ai_plugins.MetricsPolicy` breaks tenants out; the
    breaker's trips and the plugins it suspended; the live sandbox workers and
    the calls that waited for one per plugin; and the host's events by kind
    (``worker-busy``: a call that waited ``wait_timeout`` for a worker in vain).
    It reads :meth:`PluginHost.live_metrics` at each scrape.

    Example::

        registry = CollectorRegistry()
        registry.register(PluginCollector(host))
    """

    def __init__(self, host: PluginHost) -> None:
        self._host: Final = host

    def collect(self) -> Iterator[Metric]:
        live = self._host.live_metrics()
        yield from _hooks("hook", "", _LABELS, live.hooks, lambda row: [row.plugin_id, row.hook])
        if live.tenants:
            yield from _hooks(
                "tenant_hook",
                ", by tenant (past the policy's cardinality: '(other)')",
                (*_LABELS, "tenant"),
                live.tenants,
                lambda row: [row.plugin_id, row.hook, row.tenant or ""],
            )
        yield _per_plugin(
            GaugeMetricFamily(
                PREFIX + "suspended_tenants",
                "Tenants where this process's breaker suspended the plugin (everywhere: 1).",
                labels=["plugin"],
            ),
            live.suspended,
        )
        yield _per_plugin(
            CounterMetricFamily(
                PREFIX + "breaker_trips",
                "Circuit-breaker trips in this process since it started.",
                labels=["plugin"],
            ),
            live.trips,
        )
        yield _per_plugin(
            GaugeMetricFamily(
                PREFIX + "sandbox_workers", "Live sandbox workers per plugin.", labels=["plugin"]
            ),
            live.workers,
        )
        yield _per_plugin(
            CounterMetricFamily(
                PREFIX + "sandbox_queue_waits",
                "Sandboxed calls that waited for a free worker (got one or not).",
                labels=["plugin"],
            ),
            live.queue_waits,
        )
        yield _per_plugin(
            CounterMetricFamily(
                PREFIX + "sandbox_queue_wait_seconds",
                "Seconds sandboxed calls waited for a free worker.",
                labels=["plugin"],
            ),
            live.queue_wait_seconds,
        )
        events = CounterMetricFamily(
            PREFIX + "host_events",
            "The host's own events by kind (worker-busy: no free worker within wait_timeout).",
            labels=["kind"],
        )
        for kind, count in live.events.items():
            events.add_metric([kind], count)
        yield events


def _hooks(
    name: str,
    by: str,
    labels: Sequence[str],
    rows: Iterable[LiveHookMetrics],
    values: Callable[[LiveHookMetrics], list[str]],
) -> Iterator[Metric]:
    """The calls, errors and latency families of ``rows`` (every tenant, or by tenant)."""
    calls = CounterMetricFamily(
        PREFIX + name + "_calls", f"Plugin hook calls, failed ones too{by}.", labels=labels
    )
    errors = CounterMetricFamily(
        PREFIX + name + "_errors",
        "Plugin hook calls that failed (raised, refused or were slow)"
        if not by
        else f"Plugin hook calls that raised{by}.",
        labels=labels,
    )
    latency = HistogramMetricFamily(
        PREFIX + name + "_duration_seconds",
        f"Seconds each plugin hook call took{by}.",
        labels=labels,
    )
    for row in rows:
        label_values = values(row)
        calls.add_metric(label_values, row.calls)
        errors.add_metric(label_values, row.errors)
        running = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*_BOUNDS, "+Inf"), row.buckets, strict=True):
            running += count
            buckets.append((bound, running))
        latency.add_metric(label_values, buckets, row.total_duration)
    yield calls
    yield errors
    yield latency


_Family = TypeVar("_Family", CounterMetricFamily, GaugeMetricFamily)


def _per_plugin(family: _Family, values: Mapping[str, float]) -> _Family:
    for plugin_id, value in values.items():
        family.add_metric([plugin_id], value)
    return family
