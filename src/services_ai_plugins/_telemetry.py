"""Metrics by tenant and OpenTelemetry around plugin calls (issue 22).

The call loop counts each (plugin, hook) for every tenant together (:class:`~._dispatch.Stats`):
that costs a few additions per call and is always on. What costs more is only
built when asked for, and then only into the plans it concerns:

- a breakdown by tenant, within the cardinality :class:`MetricsPolicy` allows
  (some tenants, or the first ``max_tenants`` seen; the rest count as
  :data:`OTHER`);
- OpenTelemetry: a span around each plugin call and a duration histogram, once
  the app has configured an OpenTelemetry SDK (or given the policy providers).
  Nothing imports ``opentelemetry`` here: without it, or with only its API's
  default no-op providers, plans are exactly those of a host without telemetry.

:class:`Telemetry` wraps a plan's implementations (:meth:`Telemetry.wrap`) when
either is on; the host asks it at every housekeeping tick whether the app's
OpenTelemetry providers changed (:meth:`Telemetry.poll`) and then builds its plans
again.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Final, final

import attrs

from ._dispatch import AIO, FIRST_BUCKET_NS, LATENCY_BUCKETS, LATENCY_BUCKETS_NS
from ._version import __version__

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Histogram, Observation
    from opentelemetry.trace import Tracer

__all__ = ["OTHER", "LiveHookMetrics", "LiveMetrics", "MetricsPolicy", "Telemetry"]

#: The tenant label of the calls of every tenant past the policy's cardinality.
OTHER: Final = "(other)"

#: The instrumentation scope of the spans and metrics (the package's name).
SCOPE: Final = "services_ai_plugins"
#: The attributes of a span and a measurement.
PLUGIN_ATTRIBUTE: Final = "services_ai_plugins.plugin"
HOOK_ATTRIBUTE: Final = "services_ai_plugins.hook"
TENANT_ATTRIBUTE: Final = "services_ai_plugins.tenant"
SANDBOXED_ATTRIBUTE: Final = "services_ai_plugins.sandboxed"
#: OpenTelemetry's semantic-convention attribute of a failed operation's error class.
ERROR_ATTRIBUTE: Final = "error.type"


def _tenants(value: object) -> bool | frozenset[str]:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(
            f"MetricsPolicy.tenants must be a bool or a collection of tenant ids (got {value!r})"
        )
    tenants = frozenset(value)
    odd = [tenant for tenant in tenants if not isinstance(tenant, str) or not tenant]
    if odd:
        raise TypeError(f"MetricsPolicy.tenants: tenant ids are non-empty strings (got {odd[0]!r})")
    return tenants


def _cap(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"MetricsPolicy.{attribute.name} must be an int >= 0 (got {value!r})")


@attrs.frozen(kw_only=True)
class MetricsPolicy:
    """What a host measures beyond its per-(plugin, hook) counters (docs/metrics.md).

    :param tenants: the breakdown by tenant: ``False`` (none, the default),
        ``True`` (every tenant, the first ``max_tenants`` seen by this process
        by name and the rest as :data:`OTHER`), or the tenant ids to break out
        (the rest as :data:`OTHER`). Each tenant's calls, errors and latency
        histogram per plugin and hook cost a wrapper around each of its calls.
    :param max_tenants: with ``tenants=True``, how many tenants get a label of
        their own in this process (the cardinality cap).
    :param opentelemetry: spans around plugin calls and OpenTelemetry metrics,
        once the app has configured an OpenTelemetry SDK (its global tracer or
        meter provider) or given one here. ``False``: never.
    :param tracer_provider: the OpenTelemetry tracer provider to use instead of
        the global one.
    :param meter_provider: the OpenTelemetry meter provider to use instead of
        the global one.
    """

    tenants: bool | frozenset[str] = attrs.field(default=False, converter=_tenants)
    max_tenants: int = attrs.field(default=100, validator=_cap)
    opentelemetry: bool = True
    tracer_provider: Any = attrs.field(default=None, eq=False)
    meter_provider: Any = attrs.field(default=None, eq=False)


@attrs.frozen
class LiveHookMetrics:
    """One (plugin, hook)'s counters in this process since it started, for one tenant or all.

    ``tenant`` is None for the calls of every tenant together; a tenant id, or
    :data:`OTHER`, in :attr:`LiveMetrics.tenants`.
    """

    plugin_id: str
    hook: str
    tenant: str | None
    calls: int
    #: Calls that failed. For every tenant together: raised, refused or slow (the breaker's
    #: failures); by tenant: raised.
    errors: int
    #: Seconds spent in the calls, failed ones too.
    total_duration: float
    #: Calls per bucket of :data:`LATENCY_BUCKETS`, the last one past the largest bound
    #: (not cumulative).
    buckets: tuple[int, ...]


@attrs.frozen
class LiveMetrics:
    """A host's metrics in this process, read at once (:meth:`PluginHost.live_metrics`).

    What a Prometheus collector or an OpenTelemetry meter exports: never stored,
    never flushed; each process has its own (add them up across processes).
    """

    #: Per plugin and hook, every tenant together.
    hooks: tuple[LiveHookMetrics, ...]
    #: Per plugin, hook and tenant, as :class:`MetricsPolicy` breaks them out (else empty).
    tenants: tuple[LiveHookMetrics, ...]
    #: Per plugin: the tenants where this process's breaker suspended it now (everywhere: 1).
    suspended: Mapping[str, int]
    #: Per plugin: the breaker's trips in this process since it started.
    trips: Mapping[str, int]
    #: Per plugin: its live sandbox workers.
    workers: Mapping[str, int]
    #: Per plugin: the sandboxed calls that had to wait for a free worker.
    queue_waits: Mapping[str, int]
    #: Per plugin: the seconds those calls waited.
    queue_wait_seconds: Mapping[str, float]
    #: The host's own events by kind (``worker-busy``: no free worker within ``wait_timeout``).
    events: Mapping[str, int]


# -- counting by tenant ----------------------------------------------------------------------------


@final
class _Counts:
    """One (plugin, hook, tenant label)'s counters: written by the calls, read by a scrape."""

    __slots__ = ("buckets", "calls", "errors", "hook", "plugin_id", "tenant", "total_ns")

    def __init__(self, plugin_id: str, hook: str, tenant: str) -> None:
        self.plugin_id = plugin_id
        self.hook = hook
        self.tenant = tenant
        self.calls = 0
        self.errors = 0
        self.total_ns = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS_NS) + 1)

    def add(self, elapsed: int, failed: bool) -> None:
        # The bucket before the count, as the loop does: a scrape reads the count first.
        bucket = 0 if elapsed <= FIRST_BUCKET_NS else bisect_left(LATENCY_BUCKETS_NS, elapsed)
        self.buckets[bucket] += 1
        self.calls += 1
        self.total_ns += elapsed
        if failed:
            self.errors += 1

    def read(self) -> LiveHookMetrics:
        calls = self.calls
        buckets = tuple(self.buckets)
        # A call counted in its bucket but not yet in calls: the total of the buckets wins.
        return LiveHookMetrics(
            self.plugin_id,
            self.hook,
            self.tenant,
            max(calls, sum(buckets)),
            self.errors,
            self.total_ns / 1e9,
            buckets,
        )


# -- OpenTelemetry ---------------------------------------------------------------------------------


def _configured_tracer_provider() -> Any:
    """The app's global tracer provider, if it set one (None: the API's default, or no API)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return provider


def _configured_meter_provider() -> Any:
    """The app's global meter provider, if it set one (None: the API's default, or no API)."""
    metrics = sys.modules.get("opentelemetry.metrics")
    if metrics is None:
        return None
    provider = metrics.get_meter_provider()
    # Until an SDK is set, the API hands out its proxy (a private class) or a no-op provider.
    if isinstance(provider, metrics.NoOpMeterProvider) or type(provider).__name__.startswith(
        "_Proxy"
    ):
        return None
    return provider


@final
class _Otel:
    """The tracer and instruments of one pair of providers."""

    def __init__(
        self, tracer_provider: Any, meter_provider: Any, source: Callable[[], LiveMetrics | None]
    ) -> None:
        self.tracer: Tracer | None = (
            tracer_provider.get_tracer(SCOPE, __version__) if tracer_provider is not None else None
        )
        self.histogram: Histogram | None = None
        if meter_provider is not None:
            meter = meter_provider.get_meter(SCOPE, __version__)
            self.histogram = meter.create_histogram(
                "services_ai_plugins.hook.duration",
                unit="s",
                description="Seconds each plugin hook call took (error.type: it raised).",
                explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS),
            )
            _observe(meter, source)


def _observe(meter: Any, source: Callable[[], LiveMetrics | None]) -> None:
    """The host-wide metrics as observable instruments, read at each collection."""
    from opentelemetry.metrics import Observation  # noqa: PLC0415 - only with an SDK configured

    def per_plugin(pick: Callable[[LiveMetrics], Mapping[str, float]]) -> Any:
        def callback(options: CallbackOptions) -> Iterator[Observation]:
            live = source()
            if live is None:
                return
            for plugin_id, value in sorted(pick(live).items()):
                yield Observation(value, {PLUGIN_ATTRIBUTE: plugin_id})

        return callback

    for name, kind, unit, pick, description in _OBSERVED:
        create = (
            meter.create_observable_counter if kind == "counter" else meter.create_observable_gauge
        )
        create(name, unit=unit, callbacks=[per_plugin(pick)], description=description)


#: The host-wide instruments: (name, counter or gauge, unit, what of LiveMetrics, description).
_OBSERVED: Final[
    tuple[tuple[str, str, str, Callable[[LiveMetrics], Mapping[str, float]], str], ...]
] = (
    (
        "services_ai_plugins.breaker.trips",
        "counter",
        "",
        lambda live: live.trips,
        "Circuit-breaker trips in this process.",
    ),
    (
        "services_ai_plugins.breaker.suspended_tenants",
        "gauge",
        "",
        lambda live: live.suspended,
        "Tenants where this process's breaker suspended the plugin (everywhere: 1).",
    ),
    (
        "services_ai_plugins.sandbox.workers",
        "gauge",
        "",
        lambda live: live.workers,
        "Live sandbox workers.",
    ),
    (
        "services_ai_plugins.sandbox.queue_waits",
        "counter",
        "",
        lambda live: live.queue_waits,
        "Sandboxed calls that waited for a free worker.",
    ),
    (
        "services_ai_plugins.sandbox.queue_wait.time",
        "counter",
        "s",
        lambda live: live.queue_wait_seconds,
        "Seconds sandboxed calls waited for a free worker.",
    ),
)


def error_type(error: BaseException) -> str:
    """The failure's class: a sandboxed plugin's own (what it raised in its worker), else the
    exception's."""
    remote = getattr(error, "remote_type", None)
    return remote if isinstance(remote, str) and remote else type(error).__qualname__


def _failed(span: Any, error: BaseException) -> None:
    """Mark ``span`` failed with ``error``: for a sandboxed plugin, what it raised in its worker
    (its type, message and traceback), not the host's :class:`~.errors.RemoteError`."""
    from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 - only when tracing

    kind = error_type(error)
    message = getattr(error, "remote_message", None)
    message = message if isinstance(message, str) else str(error)
    attributes = {"exception.type": kind, "exception.message": message}
    stack = getattr(error, "remote_traceback", None)
    if isinstance(stack, str) and stack:
        attributes["exception.stacktrace"] = stack
    span.record_exception(error, attributes=attributes)
    span.set_status(Status(StatusCode.ERROR, f"{kind}: {message}"))


# -- the wrapper -----------------------------------------------------------------------------------


@final
class _Observed:
    """A plugin's implementation, counted by tenant and/or traced; its awaitable form too."""

    __slots__ = (
        "aio",
        "attributes",
        "counts",
        "function",
        "histogram",
        "measured",
        "name",
        "tracer",
    )

    def __init__(  # noqa: PLR0917 - private, built in one place
        self,
        function: Callable[..., Any],
        counts: _Counts | None,
        otel: _Otel | None,
        name: str,
        attributes: dict[str, Any],
        measured: dict[str, Any],
    ) -> None:
        self.function = function
        self.counts = counts
        self.tracer = otel.tracer if otel is not None else None
        self.histogram = otel.histogram if otel is not None else None
        self.name = name
        #: The span's attributes, and the measurement's (the tenant only as the policy allows).
        self.attributes = attributes
        self.measured = measured
        awaitable = getattr(function, AIO, None)
        if awaitable is not None:
            self.aio = self._awaitable(awaitable)

    def __call__(self, *args: Any) -> Any:
        tracer = self.tracer
        if tracer is None:
            return self._measured(args)
        with self._span(tracer):
            return self._measured(args)

    @contextlib.contextmanager
    def _span(self, tracer: Tracer) -> Iterator[None]:
        """The call's span, current while it runs, marked failed with what it raised."""
        with tracer.start_as_current_span(
            self.name,
            attributes=self.attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except BaseException as exc:
                _failed(span, exc)
                raise

    def _measured(self, args: tuple[Any, ...]) -> Any:
        start = perf_counter_ns()
        try:
            result = self.function(*args)
        except BaseException as exc:
            self._count(perf_counter_ns() - start, exc)
            raise
        self._count(perf_counter_ns() - start, None)
        return result

    def _count(self, elapsed: int, error: BaseException | None) -> None:
        counts = self.counts
        if counts is not None:
            counts.add(elapsed, error is not None)
        histogram = self.histogram
        if histogram is not None:
            attributes = self.measured
            if error is not None:
                attributes = {**attributes, ERROR_ATTRIBUTE: error_type(error)}
            histogram.record(elapsed / 1e9, attributes)

    def _awaitable(self, awaitable: Callable[..., Any]) -> Callable[..., Any]:
        async def run(*args: Any) -> Any:
            tracer = self.tracer
            if tracer is None:
                return await self._ameasured(awaitable, args)
            with self._span(tracer):
                return await self._ameasured(awaitable, args)

        return run

    async def _ameasured(self, awaitable: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        start = perf_counter_ns()
        try:
            result = await awaitable(*args)
        except BaseException as exc:
            self._count(perf_counter_ns() - start, exc)
            raise
        self._count(perf_counter_ns() - start, None)
        return result


@final
class _Counted:
    """An in-process implementation counted by tenant, without OpenTelemetry: the lean
    wrapper (the counting inline, a call and two clock readings more per plugin call). One
    with an awaitable form (a sandboxed plugin's) is an :class:`_Observed`, which has both."""

    __slots__ = ("counts", "function")

    def __init__(self, function: Callable[..., Any], counts: _Counts) -> None:
        self.function = function
        self.counts = counts

    def __call__(self, *args: Any) -> Any:
        start = perf_counter_ns()
        try:
            result = self.function(*args)
        except BaseException:
            self.counts.add(perf_counter_ns() - start, True)
            raise
        elapsed = perf_counter_ns() - start
        counts = self.counts
        # As _Counts.add, inline: the bucket before the count (a scrape reads the count first).
        if elapsed <= FIRST_BUCKET_NS:
            counts.buckets[0] += 1
        else:
            counts.buckets[bisect_left(LATENCY_BUCKETS_NS, elapsed)] += 1
        counts.calls += 1
        counts.total_ns += elapsed
        return result


# -- the host's part -------------------------------------------------------------------------------


@final
class Telemetry:
    """A host's breakdown by tenant and OpenTelemetry instruments, built into its plans."""

    def __init__(self, policy: MetricsPolicy, source: Callable[[], LiveMetrics]) -> None:
        self.policy: Final = policy
        # The host's live_metrics, held weakly: an OpenTelemetry meter outlives the host.
        self._source: Callable[[], LiveMetrics | None] = source
        if hasattr(source, "__self__"):
            method = weakref.WeakMethod(source)
            self._source = lambda: _called(method)
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], _Counts] = {}
        #: The tenants given a label of their own (``tenants=True``), in the order seen.
        self._labelled: set[str] = set()
        self._providers: tuple[Any, Any] = (None, None)
        self._otel: _Otel | None = None
        self.poll()

    @property
    def tracing(self) -> bool:
        """Whether plans get spans now."""
        return self._otel is not None and self._otel.tracer is not None

    def poll(self) -> bool:
        """Look at the app's OpenTelemetry providers again; True if they changed (rebuild plans)."""
        policy = self.policy
        if not policy.opentelemetry:
            return False
        providers = (
            policy.tracer_provider
            if policy.tracer_provider is not None
            else _configured_tracer_provider(),
            policy.meter_provider
            if policy.meter_provider is not None
            else _configured_meter_provider(),
        )
        held = self._providers
        if providers[0] is held[0] and providers[1] is held[1]:
            return False
        self._providers = providers
        self._otel = None if providers == (None, None) else _Otel(*providers, self._source)
        return True

    def label(self, tenant: str) -> str:
        """The tenant's label in the metrics: its id, or :data:`OTHER` past the policy's cap."""
        wanted = self.policy.tenants
        if wanted is True:
            if tenant in self._labelled:
                return tenant
            with self._lock:
                if tenant in self._labelled or len(self._labelled) < self.policy.max_tenants:
                    self._labelled.add(tenant)
                    return tenant
            return OTHER
        return tenant if isinstance(wanted, frozenset) and tenant in wanted else OTHER

    def wrap(
        self,
        plugin_id: str,
        hook: str,
        tenant: str | None,
        function: Callable[..., Any],
        *,
        sandboxed: bool,
    ) -> Callable[..., Any]:
        """``function`` as a plan calls it: unchanged unless a breakdown or OpenTelemetry is on."""
        otel = self._otel
        by_tenant = tenant is not None and self.policy.tenants is not False
        if otel is None and not by_tenant:
            return function
        label = self.label(tenant) if by_tenant and tenant is not None else None
        counts = None
        if label is not None:
            key = (plugin_id, hook, label)
            counts = self._counts.get(key)
            if counts is None:
                with self._lock:
                    counts = self._counts.setdefault(key, _Counts(plugin_id, hook, label))
        attributes: dict[str, Any] = {
            PLUGIN_ATTRIBUTE: plugin_id,
            HOOK_ATTRIBUTE: hook,
            SANDBOXED_ATTRIBUTE: sandboxed,
        }
        measured = {PLUGIN_ATTRIBUTE: plugin_id, HOOK_ATTRIBUTE: hook}
        if tenant is not None:
            attributes[TENANT_ATTRIBUTE] = tenant  # a span is one call: no cardinality to cap
        if label is not None:
            measured[TENANT_ATTRIBUTE] = label
        if otel is None and counts is not None and getattr(function, AIO, None) is None:
            return _Counted(function, counts)
        return _Observed(function, counts, otel, f"{hook} {plugin_id}", attributes, measured)

    def by_tenant(self) -> tuple[LiveHookMetrics, ...]:
        """Each (plugin, hook, tenant label)'s counters, sorted."""
        return tuple(sorted((c.read() for c in list(self._counts.values())), key=_order))


def _called(method: weakref.WeakMethod[Callable[[], LiveMetrics]]) -> LiveMetrics | None:
    bound = method()
    return None if bound is None else bound()


def _order(metrics: LiveHookMetrics) -> tuple[str, str, str]:
    return (metrics.plugin_id, metrics.hook, metrics.tenant or "")
