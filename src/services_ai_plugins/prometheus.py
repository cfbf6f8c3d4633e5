"""Prometheus metrics for a :class:`~services_ai_plugins.PluginHost` (the ``prometheus`` extra).

Register a :class:`PluginCollector` on the app's registry; on each scrape it reads
the host's counters of this process (no global state, nothing kept between scrapes)::

    from prometheus_client import REGISTRY
    from services_ai_plugins.prometheus import PluginCollector

    REGISTRY.register(PluginCollector(host))

The names and labels are listed in docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ._dispatch import LATENCY_BUCKETS

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
    count in the histogram too), the plugins the breaker suspended, the live
    sandbox workers per plugin, and the host's events by kind (``worker-busy``:
    a call that waited ``wait_timeout`` for a worker in vain).

    Example::

        registry = CollectorRegistry()
        registry.register(PluginCollector(host))
    """

    def __init__(self, host: PluginHost) -> None:
        self._host: Final = host

    def collect(self) -> Iterator[Metric]:
        host = self._host
        dispatcher = host._dispatcher
        calls = CounterMetricFamily(
            PREFIX + "hook_calls", "Plugin hook calls, failed ones too.", labels=_LABELS
        )
        errors = CounterMetricFamily(
            PREFIX + "hook_errors",
            "Plugin hook calls that failed (raised, refused or were slow).",
            labels=_LABELS,
        )
        latency = HistogramMetricFamily(
            PREFIX + "hook_duration_seconds",
            "Seconds each plugin hook call took.",
            labels=_LABELS,
        )
        for live in sorted(dispatcher.live()):
            labels = [live.plugin_id, live.hook]
            calls.add_metric(labels, live.calls)
            errors.add_metric(labels, live.errors)
            running = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*_BOUNDS, "+Inf"), live.buckets, strict=True):
                running += count
                buckets.append((bound, running))
            latency.add_metric(labels, buckets, live.total_duration)
        yield calls
        yield errors
        yield latency
        suspended = GaugeMetricFamily(
            PREFIX + "suspended_tenants",
            "Tenants where this process's breaker suspended the plugin (everywhere: 1).",
            labels=["plugin"],
        )
        for plugin_id, tenants in sorted(dispatcher.tripped().items()):
            suspended.add_metric([plugin_id], len(tenants))
        yield suspended
        workers = GaugeMetricFamily(
            PREFIX + "sandbox_workers", "Live sandbox workers per plugin.", labels=["plugin"]
        )
        per_plugin: dict[str, int] = {}
        for worker in host.sandbox.workers():
            per_plugin[worker.plugin_id] = per_plugin.get(worker.plugin_id, 0) + 1
        for plugin_id, count in sorted(per_plugin.items()):
            workers.add_metric([plugin_id], count)
        yield workers
        events = CounterMetricFamily(
            PREFIX + "host_events",
            "The host's own events by kind (worker-busy: no free worker within wait_timeout).",
            labels=["kind"],
        )
        for kind, count in sorted(dispatcher.events.counts().items()):
            events.add_metric([kind], count)
        yield events
