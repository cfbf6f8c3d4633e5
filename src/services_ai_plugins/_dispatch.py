"""The call loop: every hook call of every host walks through :meth:`Dispatcher.run`.

pluggy registers the implementations and orders them (``tryfirst``,
``trylast``, registration order); the host turns that order into a *plan* per
(hook, tenant): one entry per implementation that may run there, with
everything that can be computed ahead of the call (the plugin's own ``api``
and ``settings``, an argument getter, its metrics cell). This module runs a
plan: one loop, no wrapper per implementation. Each implementation is
isolated (an exception is recorded as the plugin's failure and the others
still run), its result checked (another tenant's records, another plugin's
name, at any depth), timed into per-(plugin, hook) counters that are flushed
to storage in batches, and watched by a circuit breaker that also counts slow
calls; a hook call has a time budget across its plugins. The handlers of the
routes plugins return are handed out guarded (:class:`RouteGuard`) and watched
the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import threading
import types
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from operator import attrgetter, itemgetter
from time import perf_counter_ns
from typing import Any, Final, NamedTuple, Protocol, TypeVar, final

import attrs

from ._context import CURRENT_CONTEXT, current_request_context
from ._host_events import HostEvents
from ._storage._protocol import FailureRecord, MetricsDelta, bounded, failure_of, make_failure
from .errors import ResultRefused, WorkerBusy
from .events import (
    ApiRequest,
    ApiResponse,
    Context,
    HtmlFragment,
    Placement,
    Route,
    normalise_routes,
)
from .hookspecs import HookInfo, HookKind

__all__ = [
    "AsyncHostHook",
    "BreakerPolicy",
    "Dispatcher",
    "HookTrace",
    "HostHook",
    "PluginOutcome",
    "RouteGuard",
    "Trip",
]

T = TypeVar("T")

_NOTIFY: Final = HookKind.NOTIFY
_COLLECT: Final = HookKind.COLLECT
_FIRST_RESULT: Final = HookKind.FIRST_RESULT
_FILTER: Final = HookKind.FILTER

#: The names the host fills with the receiving plugin's own value.
INJECTED: Final = ("api", "settings", "plugin_id")
INJECTABLE: Final = frozenset(INJECTED)
#: The most plans a hook keeps per snapshot, least recently used dropped first: a host
#: serving this many tenants in turn builds each tenant's plan once per snapshot.
MAX_PLANS: Final = 16_384

#: Set and reset the running call's context (bound once: the loop calls them every call).
_set_context: Final = CURRENT_CONTEXT.set
_reset_context: Final = CURRENT_CONTEXT.reset

#: The most failures kept in memory between two flushes; more are counted, not kept.
MAX_PENDING_FAILURES: Final = 1000


def _time_limits(value: Mapping[str, float]) -> Mapping[str, float]:
    return types.MappingProxyType(dict(value))


def _check_time_limits(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    for hook, limit in value.items():
        number = isinstance(limit, (int, float)) and not isinstance(limit, bool)
        if not isinstance(hook, str) or not number or not limit > 0:
            raise ValueError(
                f"time_limits[{hook!r}] must map a hook name to seconds > 0 (got {limit!r})"
            )


def _seconds_or_none(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be None or seconds > 0 (got {value!r})")


@attrs.frozen(kw_only=True)
class BreakerPolicy:
    """When the circuit breaker suspends a plugin that keeps failing, and how long calls may take.

    A plugin is suspended for a tenant when one of its hooks fails
    ``consecutive_failures`` times in a row there, or when a failure opens a
    window of ``window`` seconds in which at least ``min_calls`` calls of that
    hook for that tenant fail at ``failure_rate`` or more. It is suspended
    everywhere when that happens in a hook without a tenant, or once it has
    been suspended for ``tenants_for_global`` tenants by this process.

    A *slow* call counts as a failure too: one that returned after more than
    ``slow_share`` of its time limit. The limit of a sandboxed plugin's call is
    its sandbox's ``timeout``; the limit of an in-process call is
    ``time_limits[hook]``, else ``time_limit`` (None: in-process calls have no
    limit and are never slow). A hook call stops calling plugins once it has
    run ``call_budget`` seconds, all plugins together; the plugins left out are
    recorded.

    Counting happens in each process (no storage round trip per call); the
    suspension is written to storage, with an audit event, so every process
    honours it. ``consecutive_failures=0``, ``failure_rate=0`` and
    ``slow_share=0`` switch their rules off, ``call_budget=None`` the budget.

    >>> BreakerPolicy(consecutive_failures=3).consecutive_failures
    3
    """

    consecutive_failures: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    #: The default catches a plugin failing one call in four or more (see docs/host.md).
    failure_rate: float = attrs.field(
        default=0.25, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    window: float = attrs.field(default=60.0, validator=attrs.validators.gt(0.0))
    min_calls: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    tenants_for_global: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    #: The share of its time limit after which a call that returned counts as a failure.
    slow_share: float = attrs.field(
        default=0.8, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    #: Seconds an in-process call may take before it is slow (None: no limit).
    time_limit: float | None = attrs.field(default=None, validator=_seconds_or_none)
    #: Per hook, the seconds an in-process call may take (instead of ``time_limit``).
    time_limits: Mapping[str, float] = attrs.field(
        factory=dict, converter=_time_limits, validator=_check_time_limits, hash=False
    )
    #: Seconds one hook call may spend in plugins, all together (None: no budget).
    call_budget: float | None = attrs.field(default=10.0, validator=_seconds_or_none)

    def limit(self, hook: str, timeout: float | None) -> float | None:
        """The time limit of a call of ``hook``: ``timeout`` is the sandbox's, None in-process."""
        own = self.time_limits.get(hook, self.time_limit)
        if timeout is None:
            return own
        return timeout if own is None else min(own, timeout)


@attrs.frozen
class PluginOutcome:
    """What one plugin's implementation did in one traced hook call."""

    plugin_id: str
    #: What it returned (None for a failure; a slow call keeps what it returned).
    result: Any
    #: Its failure (exception, refused value, slow call), or None when it worked.
    failure: FailureRecord | None
    #: Seconds it took.
    duration: float


@attrs.frozen(kw_only=True)
class HookTrace:
    """A hook call with each plugin's part in it (:meth:`PluginHost.trace_hook`)."""

    hook: str
    tenant: str | None
    #: What the caller of the hook would have received.
    result: Any
    #: One per implementation that ran, in call order.
    outcomes: tuple[PluginOutcome, ...]

    @property
    def ran(self) -> tuple[str, ...]:
        """The ids of the plugins that ran, in call order."""
        return tuple(outcome.plugin_id for outcome in self.outcomes)

    @property
    def failed(self) -> tuple[PluginOutcome, ...]:
        """The outcomes that are failures (an exception, a refused result, a slow call)."""
        return tuple(outcome for outcome in self.outcomes if outcome.failure is not None)

    def outcome(self, plugin_id: str) -> PluginOutcome:
        """The outcome of one plugin's implementation.

        :raises KeyError: when it did not run (the message says which did).
        """
        for outcome in self.outcomes:
            if outcome.plugin_id == plugin_id:
                return outcome
        ran = ", ".join(self.ran) or "none"
        raise KeyError(f"{plugin_id!r} did not run in {self.hook} (plugins that ran: {ran})")

    def assert_ok(self) -> HookTrace:
        """Return self when every implementation worked.

        :raises AssertionError: naming each failure with the plugin's traceback.
        """
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        if not self.failed:
            return self
        parts = [f"{len(self.failed)} of {len(self.outcomes)} plugins failed in {self.hook}:"]
        for outcome in self.failed:
            failure = outcome.failure
            assert failure is not None
            parts.append(
                f"- {outcome.plugin_id}: {failure.exc_type}: {failure.message}\n"
                + failure.traceback.rstrip()
            )
        raise AssertionError("\n".join(parts))


class _Health:
    """A (plugin, hook, tenant) that failed lately: what the breaker counts."""

    __slots__ = ("consecutive", "errors", "opened", "successes")

    def __init__(self, now: int) -> None:
        self.consecutive = 0
        self.errors = 0
        self.successes = 0
        #: When the window opened (perf_counter_ns).
        self.opened = now


class Stats:
    """One (plugin, hook)'s counters in this process, shared by every tenant's plan."""

    __slots__ = (
        "buckets",
        "calls",
        "errors",
        "failing",
        "flushed_calls",
        "flushed_errors",
        "flushed_ns",
        "hook",
        "last_ns",
        "mark",
        "max_ns",
        "plugin_id",
        "shown_first",
        "slow_ns",
        "total_ns",
    )

    def __init__(self, plugin_id: str, hook: str) -> None:
        self.plugin_id = plugin_id
        self.hook = hook
        self.calls = 0
        self.errors = 0
        self.total_ns = 0
        #: Calls (failed ones too) by duration: ``buckets[i]`` counts those of at most
        #: ``LATENCY_BUCKETS_NS[i]`` and more than the bound before; the last, the rest.
        #: ``buckets[0]`` stays 0: the calls not in another bucket are in it (the usual
        #: call costs the loop one comparison). Cumulative for the process, never flushed.
        self.buckets = [0] * (len(LATENCY_BUCKETS_NS) + 1)
        #: The first bucket's count the last scrape saw (:meth:`Dispatcher.live`).
        self.shown_first = 0
        #: The slowest call since the last flush.
        self.max_ns = 0
        self.last_ns = 0
        self.flushed_calls = 0
        self.flushed_errors = 0
        self.flushed_ns = 0
        #: Tenants where this hook failed lately (None: nothing failing, the usual case).
        self.failing: dict[str | None, _Health] | None = None
        #: A call longer than this is slow: a failure for the breaker (:data:`NEVER`: no limit).
        self.slow_ns = NEVER
        #: A call longer than this takes the loop's rare path (:meth:`Dispatcher._long`):
        #: ``min(max_ns, slow_ns, LONG_NS)``, so the usual call costs one comparison.
        self.mark = 0


#: The latency histogram's upper bounds, in seconds (docs/metrics.md): fixed, so every
#: process's histograms add up. A call of exactly a bound counts in that bound's bucket.
LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: :data:`LATENCY_BUCKETS` in nanoseconds, for the call loop's ``bisect_left``.
LATENCY_BUCKETS_NS: Final = tuple(round(bound * 1e9) for bound in LATENCY_BUCKETS)
FIRST_BUCKET_NS: Final = LATENCY_BUCKETS_NS[0]


class LiveStats(NamedTuple):
    """One (plugin, hook)'s counters since the process started (:meth:`Dispatcher.live`)."""

    plugin_id: str
    hook: str
    calls: int
    errors: int
    #: Seconds spent in the calls, failed ones too.
    total_duration: float
    #: Calls per bucket of :data:`LATENCY_BUCKETS`, the last one past the largest bound
    #: (not cumulative: a Prometheus exporter adds them up).
    buckets: tuple[int, ...]


#: No time limit, in nanoseconds.
NEVER: Final = 1 << 62
#: Calls longer than this always take the loop's rare path, where the call budget is watched.
LONG_NS: Final = 1_000_000

Getter = Callable[[dict[str, Any]], Sequence[Any]]

#: One implementation in a plan, with all it needs prepared:
#: ``(plugin_id, function, getter, key, value, stats)``. ``getter`` picks the
#: implementation's arguments out of the call's keywords; ``key`` is the first
#: injected name it asks for (``api``, ``settings``, ``plugin_id``) and ``value``
#: the plugin's own value for it (:data:`UNUSED` and None when it asks for
#: none); the getter of an implementation that asks for more than one puts the
#: others in first (most ask for ``api`` alone). A plain tuple, not a
#: NamedTuple: the loop unpacks it, and CPython unpacks an exact tuple faster.
Entry = tuple[str, Callable[..., Any], Getter, str, Any, "Stats"]


class Plan(NamedTuple):
    """The implementations that run for one hook and one tenant, in call order."""

    info: HookInfo
    tenant: str | None
    entries: tuple[Entry, ...]


def entry(
    plugin_id: str,
    function: Callable[..., Any],
    argnames: Sequence[str],
    own: Mapping[str, Any],
    stats: Stats,
) -> Entry:
    """Prepare one implementation: ``own`` holds the injected values it asks for."""
    names = list(own)
    key = names[0] if names else UNUSED
    getter = getter_for(argnames)
    if len(names) > 1:  # rare: the other injected names go in before the arguments are picked
        more = {name: own[name] for name in names[1:]}
        pick = getter

        def getter(kwargs: dict[str, Any]) -> Sequence[Any]:
            kwargs.update(more)
            return pick(kwargs)

    return (plugin_id, function, getter, key, own.get(key), stats)


def getter_for(argnames: Sequence[str]) -> Getter:
    """A C-speed argument picker: ``getter(kwargs)`` is the tuple of ``argnames``' values."""
    if len(argnames) >= 2:
        return itemgetter(*argnames)
    if len(argnames) == 1:
        name = argnames[0]
        return lambda kwargs: (kwargs[name],)
    return lambda kwargs: ()


class Trip(NamedTuple):
    """The breaker tripped in a call: what the host applies at its next tick."""

    plugin_id: str
    #: The tenant the plugin is to be suspended for (None: everywhere).
    tenant: str | None
    reason: str
    #: The context of the failing call (None for a hook without a tenant).
    context: Context | None


#: Called, with no arguments, when the breaker trips: the host's next tick has a trip to apply.
TripHandler = Callable[[], None]


class Dispatcher:
    """Runs plans, records failures and metrics, and trips the breaker.

    One per host. Counters are plain attributes updated without a lock: under
    the GIL a count can be lost when two threads update the same counter at
    the same instant, which metrics for a dashboard can afford.
    """

    def __init__(
        self,
        *,
        policy: BreakerPolicy,
        strict: bool,
        on_trip: TripHandler,
    ) -> None:
        self.policy: Final = policy
        self.strict: Final = strict
        #: The most a hook call may spend in plugins, in nanoseconds.
        self.budget_ns: Final = (
            NEVER if policy.call_budget is None else int(policy.call_budget * 1e9)
        )
        self._on_trip: Final = on_trip
        self._stats: dict[tuple[str, str], Stats] = {}
        self._pending: list[FailureRecord] = []
        self._dropped = 0
        self._tripped: dict[str, set[str | None]] = {}
        self._trips: list[Trip] = []
        #: The breaker's trips per plugin since the process started (for metrics).
        self.trip_counts: Final[dict[str, int]] = {}
        self._lock = threading.Lock()
        self._trace = threading.local()
        #: What happened to the host itself (busy workers, a full queue): never a plugin's failure.
        self.events: Final = HostEvents()

    def traced(self, plan: Plan, outcomes: list[PluginOutcome]) -> Plan:
        """``plan`` with each implementation wrapped to report its part into ``outcomes``.

        For :meth:`PluginHost.trace_hook` only: the wrappers cost a call each, and
        the failures the loop records for this thread are written into the
        outcome of their plugin.
        """
        entries = []
        for plugin_id, function, getter, key, own, stats in plan.entries:
            traced = _Traced(plugin_id, function, outcomes)
            entries.append((plugin_id, traced, getter, key, own, stats))
        self._trace.outcomes = outcomes
        return plan._replace(entries=tuple(entries))

    def end_trace(self) -> None:
        """Stop writing this thread's failures into outcomes."""
        self._trace.outcomes = None

    def stats(self, plugin_id: str, hook: str) -> Stats:
        """The counters of (plugin, hook) in this process, created on first use.

        Host listeners (ids starting with ``host:``) get counters that are never
        flushed: metrics are about plugins.
        """
        if plugin_id.startswith("host:"):
            return Stats(plugin_id, hook)
        key = (plugin_id, hook)
        found = self._stats.get(key)
        if found is None:
            found = self._stats.setdefault(key, Stats(plugin_id, hook))
        return found

    def timed(self, plugin_id: str, hook: str, timeout: float | None) -> Stats:
        """:meth:`stats`, told when a call is slow (``timeout``: the sandbox's; None in-process)."""
        found = self.stats(plugin_id, hook)
        limit = self.policy.limit(hook, timeout)
        share = self.policy.slow_share
        slow = NEVER if limit is None or not share else int(limit * share * 1e9)
        if found.slow_ns != slow:
            found.slow_ns = slow
            found.mark = 0
        return found

    def reset(self, plugin_id: str, tenant: str | None = None) -> None:
        """Forget the breaker's counts for the plugin (for one tenant, or all): it was resumed."""
        tripped = self._tripped.get(plugin_id)
        if tripped is not None:
            if tenant is None:
                tripped.clear()
            else:
                tripped.discard(tenant)
        self._forget(plugin_id, tenant)

    def tripped(self) -> dict[str, set[str | None]]:
        """Where this process's breaker suspended each plugin (None: everywhere), for the host."""
        return {plugin_id: set(tenants) for plugin_id, tenants in self._tripped.items() if tenants}

    def forget_trip(self, plugin_id: str, tenant: str | None) -> None:
        """The suspension was lifted elsewhere (an admin, another process): stop counting it."""
        tripped = self._tripped.get(plugin_id)
        if tripped is not None:
            tripped.discard(tenant)

    def _forget(self, plugin_id: str, tenant: str | None) -> None:
        """Drop the failure counts of the plugin's hooks (for one tenant, or every tenant)."""
        for stats in list(self._stats.values()):
            if stats.plugin_id == plugin_id and stats.failing:
                if tenant is None:
                    stats.failing = None
                else:
                    stats.failing.pop(tenant, None)

    # -- failures and the breaker ------------------------------------------------------------------

    def succeeded(self, stats: Stats, tenant: str | None) -> None:
        """A call of a hook that failed lately worked: the breaker counts it."""
        failing = stats.failing
        health = failing.get(tenant) if failing else None
        if health is not None:
            health.consecutive = 0
            health.successes += 1

    def _failed(
        self,
        plugin_id: str,
        stats: Stats,
        hook: str,
        tenant: str | None,
        exc: BaseException,
        *,
        context: Context | None,
        started: int,
        counted: bool = False,
    ) -> FailureRecord:
        now = perf_counter_ns()
        if counted:  # a refused result: the call itself was already counted
            stats.errors += 1
        else:
            elapsed = now - started
            # The bucket before the count: a scrape reads the count first (Dispatcher.live).
            if elapsed > FIRST_BUCKET_NS:  # the first bucket is the rest: one comparison
                stats.buckets[bisect_left(LATENCY_BUCKETS_NS, elapsed)] += 1
            stats.calls += 1
            stats.errors += 1
            stats.total_ns += elapsed
            stats.max_ns = max(stats.max_ns, elapsed)
            stats.last_ns = now
        # The plugin's frames only: the loop's own frames say nothing to its author.
        frames = exc.__traceback__
        while frames is not None and frames.tb_frame.f_code in _LOOP_CODES:
            frames = frames.tb_next
        failure = failure_of(plugin_id, exc, hook=hook, tenant=tenant, frames=frames)
        _log(plugin_id, logging.ERROR, failure, "hook %s failed for tenant %r: %s: %s")
        self._record(plugin_id, stats, tenant, failure, context=context, now=now, keep=False)
        return failure

    def busy(self, plugin_id: str, hook: str, tenant: str | None, exc: WorkerBusy) -> None:
        """A call found every worker of the plugin busy: a host event, never its failure.

        Not a failure record, not counted by the breaker, not in the plugin's metrics.
        """
        self.events.record("worker-busy", str(exc), plugin_id=plugin_id, tenant=tenant, hook=hook)

    def call_one(
        self,
        plugin_id: str,
        stats: Stats,
        function: Callable[..., Any],
        args: Sequence[Any],
        *,
        tenant: str | None,
        context: Context | None,
    ) -> bool:
        """Run one plugin's implementation alone, as the loop runs each (a lifecycle hook).

        Timed, and a failure (or a slow call) is recorded as the plugin's and
        counted by the breaker, as in the loop; unlike the loop it is never
        raised, not even with ``strict``: the caller reports a change already
        made. Returns whether the call worked.
        """
        hook = stats.hook
        token = CURRENT_CONTEXT.set(context) if context is not None else None
        before = perf_counter_ns()
        try:
            function(*args)
        except WorkerBusy as exc:  # the host's capacity, not the plugin's failure
            self.busy(plugin_id, hook, tenant, exc)
            return False
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the plugin's failure, not the host's
            self._failed(plugin_id, stats, hook, tenant, exc, context=context, started=before)
            return False
        finally:
            if token is not None:
                CURRENT_CONTEXT.reset(token)
        after = perf_counter_ns()
        elapsed = after - before
        # The bucket before the count: a scrape reads the count first (Dispatcher.live).
        if elapsed > FIRST_BUCKET_NS:  # the first bucket is the rest: one comparison
            stats.buckets[bisect_left(LATENCY_BUCKETS_NS, elapsed)] += 1
        stats.calls += 1
        stats.total_ns += elapsed
        stats.last_ns = after
        slow = elapsed > stats.mark and self._long(plugin_id, stats, hook, tenant, elapsed, context)
        if stats.failing and not slow:
            self.succeeded(stats, tenant)
        return not slow

    def _long(  # noqa: PLR0917 - the loop's rare path: positional is cheaper
        self,
        plugin_id: str,
        stats: Stats,
        hook: str,
        tenant: str | None,
        elapsed: int,
        context: Context | None,
    ) -> bool:
        """The rare path of a call that worked: a new slowest, a slow call, or one over LONG_NS.

        Returns True when the call was slow: recorded, and counted by the breaker
        as a failure (its result is still used: it came within the limit).
        """
        stats.max_ns = max(stats.max_ns, elapsed)
        stats.mark = min(stats.max_ns, stats.slow_ns, LONG_NS)
        if elapsed <= stats.slow_ns:
            return False
        stats.errors += 1
        limit = stats.slow_ns / self.policy.slow_share / 1e9
        failure = make_failure(
            plugin_id,
            hook=hook,
            tenant=tenant,
            exc_type=SLOW_CALL,
            message=(
                f"{hook} took {elapsed / 1e9:.2f} s, over {self.policy.slow_share:.0%} of "
                f"its {limit:g} s time limit: a slow call counts as a failure"
            ),
            traceback="",
        )
        _log(plugin_id, logging.WARNING, failure, "hook %s was slow for tenant %r: %s: %s")
        self._record(
            plugin_id, stats, tenant, failure, context=context, now=perf_counter_ns(), keep=True
        )
        return True

    def _over_budget(
        self,
        info: HookInfo,
        tenant: str | None,
        used: int,
        slowest: str,
        skipped: Sequence[str],
    ) -> None:
        """A hook call used up its budget: the plugins left out are recorded (under the slowest).

        Not counted by the breaker: the plugins that took the time are judged by
        the slow-call rule, and the ones left out did nothing.
        """
        budget = self.policy.call_budget
        names = ", ".join(skipped)
        failure = make_failure(
            slowest,
            hook=info.name,
            tenant=tenant,
            exc_type=BUDGET_USED,
            message=(
                f"{info.name} ran {used / 1e9:.2f} s in plugins, over its budget of "
                f"{budget:g} s; {slowest} was the slowest; not called: {names}"
            ),
            traceback="",
        )
        _log(slowest, logging.WARNING, failure, "hook %s for tenant %r: %s: %s")
        self._keep(failure)

    def _record(
        self,
        plugin_id: str,
        stats: Stats,
        tenant: str | None,
        failure: FailureRecord,
        *,
        context: Context | None,
        now: int,
        keep: bool,
    ) -> None:
        """Keep a failure for storage, show it in a trace, and let the breaker count it."""
        traced: list[PluginOutcome] | None = getattr(self._trace, "outcomes", None)
        if traced and traced[-1].plugin_id == plugin_id:
            result = traced[-1].result if keep else None
            traced[-1] = attrs.evolve(traced[-1], result=result, failure=failure)
        self._keep(failure)
        reason = self._count(stats, tenant, now)
        if reason is not None:
            self._trip(plugin_id, tenant, f"{failure.hook}: {reason}", context)

    def _keep(self, failure: FailureRecord) -> None:
        with self._lock:
            if len(self._pending) < MAX_PENDING_FAILURES:
                self._pending.append(failure)
            else:
                self._dropped += 1

    def _count(self, stats: Stats, tenant: str | None, now: int) -> str | None:
        """Count a failure for the breaker; return why it trips, or None."""
        policy = self.policy
        failing = stats.failing
        if failing is None:
            failing = stats.failing = {}
        health = failing.get(tenant)
        if health is None or now - health.opened > policy.window * 1e9:
            health = failing[tenant] = _Health(now)
        health.consecutive += 1
        health.errors += 1
        if policy.consecutive_failures and health.consecutive >= policy.consecutive_failures:
            return f"{health.consecutive} consecutive failures"
        calls = health.errors + health.successes
        if policy.failure_rate and calls >= policy.min_calls:
            rate = health.errors / calls
            if rate >= policy.failure_rate:
                return (
                    f"{health.errors} of {calls} calls failed within "
                    f"{policy.window:g} s ({rate:.0%})"
                )
        return None

    def _trip(
        self, plugin_id: str, tenant: str | None, reason: str, context: Context | None
    ) -> None:
        tripped = self._tripped.setdefault(plugin_id, set())
        tripped.add(tenant)
        self.trip_counts[plugin_id] = self.trip_counts.get(plugin_id, 0) + 1
        everywhere = tenant is None or len(tripped) >= self.policy.tenants_for_global
        if everywhere and tenant is not None:
            reason = f"{reason}; suspended for {len(tripped)} tenants, so everywhere"
        self._forget(plugin_id, None if everywhere else tenant)
        # Recorded only: the failing call writes nothing and calls no hook; the host applies
        # the suspension at its next tick (take_trips).
        with self._lock:
            self._trips.append(Trip(plugin_id, None if everywhere else tenant, reason, context))
        self._on_trip()

    def take_trips(self) -> list[Trip]:
        """The breaker's trips since the last call, in order, for the host to apply."""
        with self._lock:
            taken, self._trips = self._trips, []
        return taken

    # -- batches for storage -----------------------------------------------------------------------

    def take_failures(self) -> tuple[list[FailureRecord], int]:
        """The failures recorded since the last call, and how many were dropped (over the cap)."""
        with self._lock:
            taken, self._pending = self._pending, []
            dropped, self._dropped = self._dropped, 0
        return taken, dropped

    def put_back_failures(self, failures: list[FailureRecord]) -> None:
        """Return failures a flush could not store, to try again (within the cap)."""
        with self._lock:
            room = MAX_PENDING_FAILURES - len(self._pending)
            self._pending[:0] = failures[:room]
            self._dropped += max(0, len(failures) - room)

    def take_metrics(self) -> list[MetricsDelta]:
        """What each (plugin, hook) counted since the last call, as storage deltas."""
        now_ns = perf_counter_ns()
        wall = datetime.now(timezone.utc)
        deltas: list[MetricsDelta] = []
        for stats in list(self._stats.values()):
            calls, errors, total = stats.calls, stats.errors, stats.total_ns
            if calls == stats.flushed_calls and errors == stats.flushed_errors:
                continue
            slowest, stats.max_ns, stats.mark = stats.max_ns, 0, 0
            deltas.append(
                MetricsDelta(
                    plugin_id=stats.plugin_id,
                    hook=stats.hook,
                    calls=calls - stats.flushed_calls,
                    errors=errors - stats.flushed_errors,
                    total_duration=(total - stats.flushed_ns) / 1e9,
                    max_duration=slowest / 1e9,
                    last_call=wall - timedelta(microseconds=(now_ns - stats.last_ns) / 1e3),
                )
            )
            stats.flushed_calls, stats.flushed_errors, stats.flushed_ns = calls, errors, total
        return deltas

    def live(self) -> list[LiveStats]:
        """Every (plugin, hook)'s counters in this process since it started, for a scrape.

        Read without the lock, as the loop writes them: a call finishing meanwhile
        may show in one count and not yet in another (the next scrape has it). The
        buckets never go down from one scrape to the next.
        """
        found = []
        for stats in list(self._stats.values()):
            # The count first: the loop counts a call's bucket before the call, so the
            # buckets read next hold every call counted (a first bucket too small at
            # worst, never too large; and never below what a scrape showed before).
            calls = stats.calls
            later = stats.buckets[1:]
            first = max(calls - sum(later), stats.shown_first)
            stats.shown_first = first
            found.append(
                LiveStats(
                    stats.plugin_id,
                    stats.hook,
                    calls,
                    stats.errors,
                    stats.total_ns / 1e9,
                    (first, *later),
                )
            )
        return found

    def put_back_metrics(self, deltas: list[MetricsDelta]) -> None:
        """Count deltas a flush could not store again, so the next flush carries them."""
        for delta in deltas:
            stats = self.stats(delta.plugin_id, delta.hook)
            stats.flushed_calls -= delta.calls
            stats.flushed_errors -= delta.errors
            stats.flushed_ns -= round(delta.total_duration * 1e9)
            stats.max_ns = max(stats.max_ns, round(delta.max_duration * 1e9))


class _Traced:
    """An implementation that reports what it returned (or that it raised) into outcomes."""

    __slots__ = ("function", "outcomes", "plugin_id")

    def __init__(
        self, plugin_id: str, function: Callable[..., Any], outcomes: list[PluginOutcome]
    ) -> None:
        self.plugin_id = plugin_id
        self.function = function
        self.outcomes = outcomes

    def __call__(self, *args: Any) -> Any:
        start = perf_counter_ns()
        try:
            result = self.function(*args)
        except BaseException:
            self.outcomes.append(
                PluginOutcome(self.plugin_id, None, None, (perf_counter_ns() - start) / 1e9)
            )
            raise
        duration = (perf_counter_ns() - start) / 1e9
        self.outcomes.append(PluginOutcome(self.plugin_id, result, None, duration))
        return result


class Planner(Protocol):
    """What a :class:`HostHook` needs from its host's plugins (:class:`~._loading.PluginSet`).

    Housekeeping (:attr:`due`, :meth:`tick`), the snapshot and the plans built
    from it, and what a :class:`RouteGuard` asks before a plugin's handler runs.
    """

    #: When the next call must call :meth:`tick` (``perf_counter_ns``); a plain attribute.
    due: int
    #: The current snapshot; a new object whenever plans must be rebuilt.
    snapshot: Any

    def tick(self) -> None:
        """Do the host's housekeeping (refresh, breaker trips, flush) once :attr:`due` passed."""

    def plan(
        self, snapshot: Any, info: HookInfo, tenant: str | None, provided: frozenset[str]
    ) -> Plan:
        """The implementations that run for (hook, tenant) in ``snapshot``, prepared."""

    def injected(self, plugin_id: str, tenant: str, permission: str) -> Mapping[str, Any] | None:
        """The plugin's injected values for the tenant (``api``, ``settings``, ...), if it runs
        there now holding ``permission``; else None."""

    def timeout(self, plugin_id: str) -> float | None:
        """The sandbox's time limit of the plugin's calls (None: it runs in the host's process)."""


#: A call that gives every argument but ``context``: the request's context may stand in.
_CONTEXT_ONLY: Final = frozenset({"context"})

#: The key an :class:`Entry` stores into when its implementation asks for no
#: injected name (no implementation argument can have this name).
UNUSED: Final = "<unused>"

#: No injected name given by the caller (the usual case).
NO_NAMES: Final[frozenset[str]] = frozenset()
#: The results of a hook that collects none (never appended to).
NO_RESULTS: Final[list[Any]] = []

#: The hook whose results are routes: the host hands out their handlers guarded.
ROUTES_HOOK: Final = "register_routes"
#: The ``exc_type`` of a failure record of a slow call.
SLOW_CALL: Final = "SlowCall"
#: The ``exc_type`` of the failure record of a hook call that used up its budget.
BUDGET_USED: Final = "CallBudgetExceeded"


@final
class HostHook:
    """One hook, called through the host: ``host.hook.lead_created(lead=..., context=...)``.

    Calling it runs the call loop: the plan of (hook, tenant) from the host's
    snapshot, then each implementation in pluggy's call order with its own
    injected values, isolated, timed and watched by the breaker. It returns
    what the hook's kind says: NOTIFY None; COLLECT the list of results that
    are not None; FIRST_RESULT the first such result (or None); FILTER the last
    value of the chain.

    :raises TypeError: when arguments of the specification are missing or
        unknown, or a tenant-scoped hook gets no :class:`Context`.
    """

    __slots__ = (
        "_cache",
        "_count",
        "_dispatcher",
        "_filtered",
        "_info",
        "_kind",
        "_name",
        "_pick",
        "_planner",
        "_required",
        "_routes",
        "scoped",
    )

    def __init__(
        self,
        planner: Planner,
        dispatcher: Dispatcher,
        info: HookInfo,
        argnames: Sequence[str],
        injected: Iterable[str],
    ) -> None:
        self._planner = planner
        self._dispatcher = dispatcher
        self._info = info
        self._name = info.name
        self._kind = info.kind
        self._filtered = info.filtered
        #: True: the hook runs for ``context.tenant``'s plugins only.
        self.scoped = info.tenant_scoped
        self._required = frozenset(argnames) - frozenset(injected)
        self._count = len(self._required)
        #: Reads every argument of the hook from the call's keywords (KeyError: one is missing).
        self._pick: Callable[[dict[str, Any]], object] = (
            itemgetter(*sorted(self._required)) if self._required else len
        )
        #: True: the results are routes, whose handlers are handed out guarded.
        self._routes = info.name == ROUTES_HOOK and info.kind is _COLLECT
        # The snapshot last seen and its plans, by tenant (or (tenant, provided)).
        self._cache: tuple[object, OrderedDict[Any, Plan]] = (None, OrderedDict())

    def __call__(  # noqa: PLR0915 - the hot path is one loop on purpose
        self, *, _trace: list[PluginOutcome] | None = None, **kwargs: Any
    ) -> Any:
        planner = self._planner
        now = perf_counter_ns()
        if now >= planner.due:
            planner.tick()
            now = perf_counter_ns()
        # As many keywords as the hook's arguments, each of them there (the picker raises
        # KeyError otherwise): exactly its arguments. Cheaper than comparing key sets.
        if len(kwargs) == self._count:
            try:
                self._pick(kwargs)
                provided = NO_NAMES
            except KeyError:
                provided = self._check(kwargs)
        else:
            provided = self._check(kwargs)
        if self.scoped:
            context = kwargs["context"]
            if type(context) is not Context and not isinstance(context, Context):
                raise TypeError(
                    f"{self._name}() needs context=Context(tenant=...), got {context!r}"
                )
            tenant: str | None = context.tenant
        else:
            context = tenant = None
        snapshot = planner.snapshot
        # (snapshot, its plans) as one object: a thread still on an older snapshot
        # never leaves its plans where a newer snapshot's are looked up.
        cache = self._cache
        if cache[0] is not snapshot:
            cache = self._cache = (snapshot, OrderedDict())
        plans = cache[1]
        key = tenant if provided is NO_NAMES else (tenant, provided)
        plan = plans.get(key)
        if plan is None:
            plan = planner.plan(snapshot, self._info, tenant, provided)
            plans[key] = plan
            if len(plans) > MAX_PLANS:
                _evict(plans)
            now = perf_counter_ns()  # building it may have read storage: not the plugins' time
        else:
            try:  # noqa: SIM105 - the hot path: a try costs nothing here, suppress() a call
                plans.move_to_end(key)  # least recently used first out
            except KeyError:  # another thread evicted it meanwhile
                pass
        dispatcher = self._dispatcher
        if _trace is not None:
            plan = dispatcher.traced(plan, _trace)
        # The call's context, for api.context (and the threads and tasks a plugin starts);
        # a plan without implementations (the usual call for most hooks) has nobody to tell.
        entries = plan.entries
        token = _set_context(context) if context is not None and entries else None
        try:
            name = self._name
            kind = self._kind
            filtered = self._filtered
            value = kwargs[filtered] if filtered is not None else None
            results: list[Any] = [] if kind is _COLLECT else NO_RESULTS
            # The call's first reading of the clock (after a tick or a plan built, a new one):
            # the first plugin's time includes the plan's lookup, a reading fewer per call.
            before = started = now
            deadline = started + dispatcher.budget_ns
            # The budget is looked at on the rare path only (a call over LONG_NS, or a
            # new slowest): ``over`` says it ran out, ``slowest`` who took the most.
            over = False
            slowest, slowest_ns = "", -1
            for plugin_id, function, getter, key, own, stats in entries:
                if over:
                    dispatcher._over_budget(
                        self._info, tenant, before - started, slowest, _left(plan, plugin_id)
                    )
                    break
                kwargs[key] = own  # one store: cheaper than a test and an update
                if filtered is not None:
                    kwargs[filtered] = value
                try:
                    result = function(*getter(kwargs))
                except WorkerBusy as exc:  # the host's capacity: its part is skipped
                    dispatcher.busy(plugin_id, name, tenant, exc)
                    if dispatcher.strict:
                        raise
                    before = perf_counter_ns()
                    continue
                except (Exception, SystemExit) as exc:  # the plugin's failure, never the host's
                    after = perf_counter_ns()
                    dispatcher._failed(
                        plugin_id, stats, name, tenant, exc, context=context, started=before
                    )
                    if dispatcher.strict:
                        raise
                    if after - before > slowest_ns:
                        slowest, slowest_ns = plugin_id, after - before
                    over = after > deadline
                    before = perf_counter_ns()
                    continue
                after = perf_counter_ns()
                elapsed = after - before
                # The bucket before the count: a scrape reads the count first (Dispatcher.live).
                if elapsed > FIRST_BUCKET_NS:  # the first bucket is the rest: one comparison
                    stats.buckets[bisect_left(LATENCY_BUCKETS_NS, elapsed)] += 1
                stats.calls += 1
                stats.total_ns += elapsed
                stats.last_ns = after
                # Rare: a new slowest call, a slow one, or one over LONG_NS.
                if elapsed > stats.mark:
                    if elapsed > slowest_ns:
                        slowest, slowest_ns = plugin_id, elapsed
                    over = after > deadline
                    slow = dispatcher._long(plugin_id, stats, name, tenant, elapsed, context)
                    if stats.failing and not slow:
                        dispatcher.succeeded(stats, tenant)
                elif stats.failing:
                    dispatcher.succeeded(stats, tenant)
                before = after
                if result is None or kind is _NOTIFY:
                    continue
                refusal = _refusal(kind, result, value, tenant, plugin_id)
                if refusal is None and self._routes:
                    result, refusal = self._guarded(plugin_id, result)
                if refusal is not None:
                    error = ResultRefused(plugin_id, name, refusal)
                    dispatcher._failed(
                        plugin_id,
                        stats,
                        name,
                        tenant,
                        error,
                        context=context,
                        started=before,
                        counted=True,
                    )
                    if dispatcher.strict:
                        raise error
                    before = perf_counter_ns()
                    continue
                if kind is _COLLECT:
                    completed = _completed(result, plugin_id, name, tenant)
                    if _trace and _trace[-1].plugin_id == plugin_id:
                        _trace[-1] = attrs.evolve(_trace[-1], result=completed)
                    results.append(completed)
                elif kind is _FILTER:
                    value = result
                else:  # FIRST_RESULT
                    return result
            if kind is _COLLECT:
                return results
            if kind is _FILTER:
                return value
            return None
        finally:
            if token is not None:
                _reset_context(token)

    def prepare(self, kwargs: dict[str, Any]) -> tuple[Plan, Context | None, int]:
        """The prelude of a call, for the async loop: tick, arguments, tenant, plan; and the clock.

        The same steps, in the same order, as the start of :meth:`__call__`, which
        keeps its own inline copy because it is the hot path (a method call there
        costs 5 % of a one-plugin call); ``tests/test_async.py`` holds the two to
        the same results for every hook kind.
        """
        planner = self._planner
        if perf_counter_ns() >= planner.due:
            planner.tick()
        provided = self._check(kwargs) if len(kwargs) != self._count else self._exact(kwargs)
        if self.scoped:
            context = kwargs["context"]
            if not isinstance(context, Context):
                raise TypeError(
                    f"{self._name}() needs context=Context(tenant=...), got {context!r}"
                )
            tenant: str | None = context.tenant
        else:
            context = tenant = None
        snapshot = planner.snapshot
        cache = self._cache
        if cache[0] is not snapshot:
            cache = self._cache = (snapshot, OrderedDict())
        plans = cache[1]
        key = tenant if provided is NO_NAMES else (tenant, provided)
        plan = plans.get(key)
        if plan is None:
            plan = planner.plan(snapshot, self._info, tenant, provided)
            plans[key] = plan
            if len(plans) > MAX_PLANS:
                _evict(plans)
        else:
            with contextlib.suppress(KeyError):
                plans.move_to_end(key)
        return plan, context, perf_counter_ns()

    def _exact(self, kwargs: dict[str, Any]) -> frozenset[str]:
        try:
            self._pick(kwargs)
        except KeyError:
            return self._check(kwargs)
        return NO_NAMES

    def _guarded(self, plugin_id: str, returned: object) -> tuple[Any, str | None]:
        """The plugin's routes with each handler guarded (:class:`RouteGuard`), or why not."""
        try:
            routes = normalise_routes(plugin_id, returned)
        except (TypeError, ValueError) as exc:
            return None, str(exc)
        planner, dispatcher = self._planner, self._dispatcher
        timeout = planner.timeout(plugin_id)
        return [
            attrs.evolve(route, handler=RouteGuard(planner, dispatcher, plugin_id, route, timeout))
            for route in routes
        ], None

    def _check(self, kwargs: dict[str, Any]) -> frozenset[str]:
        given = frozenset(kwargs)
        missing = self._required - given
        if missing == _CONTEXT_ONLY and self.scoped:  # the request's, if the app set one
            current = current_request_context()
            if current is not None:
                kwargs["context"] = current
                given, missing = given | _CONTEXT_ONLY, frozenset()
        unknown = given - self._required - INJECTABLE
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(sorted(missing))}")
            if unknown:
                parts.append(f"unknown {', '.join(sorted(unknown))}")
            raise TypeError(f"{self._name}(): {'; '.join(parts)} argument(s)")
        return (given & INJECTABLE) or NO_NAMES

    def __repr__(self) -> str:
        return f"<HostHook {self._name}>"


#: The attribute of an implementation's callable that holds its awaitable form: the sandbox's
#: proxies have one (their calls then never block the event loop), and so do the host's
#: wrappers of ``async def`` implementations (:func:`run_to_completion`).
AIO: Final = "aio"


@final
class AsyncHostHook:
    """One hook, awaited through the host: ``await host.ahook.lead_created(lead=..., context=...)``.

    The same call as :class:`HostHook` (whose prelude it uses: arguments,
    tenant, plan), with the same kinds, order, isolation, result checks,
    metrics, breaker and budget: each outcome goes through the same
    :class:`Dispatcher` methods. What differs is how an implementation is
    run: one with an awaitable form (``async def`` implementations, and every
    sandboxed plugin, whose calls use non-blocking I/O on the running loop) is
    awaited; a plain in-process one runs inline on the loop (a blocking plugin
    blocks the loop, as any blocking code would), or in the host's bounded
    thread pool when it has one (``PluginHost(async_threads=n)``).
    """

    __slots__ = ("_forms", "_hook", "_implementations", "_inline", "_threads")

    def __init__(
        self,
        hook: HostHook,
        threads: Executor | None,
        implementations: Callable[[], Iterable[Callable[..., Any]]],
    ) -> None:
        self._hook = hook
        self._threads = threads
        #: The functions registered for the hook now (pluggy's implementations).
        self._implementations = implementations
        # (snapshot, whether every implementation runs inline): when none awaits and there
        # is no thread pool, the async call is the sync loop itself, run on the loop.
        self._inline: tuple[object, bool] = (None, False)
        # Per plan (by identity, the plan kept with it): each entry's awaitable form or None.
        self._forms: dict[int, tuple[Plan, tuple[Callable[..., Any] | None, ...]]] = {}

    def _awaitables(self, plan: Plan) -> tuple[Callable[..., Any] | None, ...]:
        held = self._forms.get(id(plan))
        if held is not None and held[0] is plan:
            return held[1]
        forms = tuple(getattr(entry[1], AIO, None) for entry in plan.entries)
        if len(self._forms) >= MAX_PLANS:
            self._forms.clear()
        self._forms[id(plan)] = (plan, forms)
        return forms

    def _runs_inline(self) -> bool:
        planner = self._hook._planner
        if perf_counter_ns() >= planner.due:  # the snapshot the call will use
            planner.tick()
        snapshot = planner.snapshot
        held = self._inline
        if held[0] is not snapshot:
            inline = self._threads is None and not any(
                getattr(function, AIO, None) is not None or inspect.iscoroutinefunction(function)
                for function in self._implementations()
            )
            held = self._inline = (snapshot, inline)
        return held[1]

    async def __call__(self, **kwargs: Any) -> Any:  # noqa: PLR0915 - the loop, as HostHook's
        hook = self._hook
        held = self._inline
        # Nothing to await: the sync loop, as it is. (Known for the current snapshot, the check
        # costs one comparison; a snapshot the call's own tick brings is looked at next time.)
        if (held[1] and held[0] is hook._planner.snapshot) or self._runs_inline():
            return hook(**kwargs)
        plan, context, now = hook.prepare(kwargs)
        entries = plan.entries
        dispatcher = hook._dispatcher
        threads = self._threads
        tenant = plan.tenant
        name, kind, filtered = hook._name, hook._kind, hook._filtered
        value = kwargs[filtered] if filtered is not None else None
        results: list[Any] = []
        token = _set_context(context) if context is not None and entries else None
        try:
            before = started = now
            deadline = started + dispatcher.budget_ns
            over = False
            slowest, slowest_ns = "", -1
            for (plugin_id, function, getter, key, own, stats), awaitable in zip(
                entries, self._awaitables(plan), strict=True
            ):
                if over:
                    dispatcher._over_budget(
                        hook._info, tenant, before - started, slowest, _left(plan, plugin_id)
                    )
                    break
                kwargs[key] = own
                if filtered is not None:
                    kwargs[filtered] = value
                args = getter(kwargs)
                try:
                    if awaitable is not None:
                        result = await awaitable(*args)
                    elif threads is not None:
                        loop = asyncio.get_running_loop()
                        call = contextvars.copy_context().run
                        result = await loop.run_in_executor(threads, call, function, *args)
                    else:
                        result = function(*args)
                except WorkerBusy as exc:  # the host's capacity: its part is skipped
                    dispatcher.busy(plugin_id, name, tenant, exc)
                    if dispatcher.strict:
                        raise
                    before = perf_counter_ns()
                    continue
                except (Exception, SystemExit) as exc:  # the plugin's failure, never the host's
                    after = perf_counter_ns()
                    dispatcher._failed(
                        plugin_id, stats, name, tenant, exc, context=context, started=before
                    )
                    if dispatcher.strict:
                        raise
                    if after - before > slowest_ns:
                        slowest, slowest_ns = plugin_id, after - before
                    over = after > deadline
                    before = perf_counter_ns()
                    continue
                after = perf_counter_ns()
                elapsed = after - before
                # The bucket before the count: a scrape reads the count first (Dispatcher.live).
                if elapsed > FIRST_BUCKET_NS:  # the first bucket is the rest: one comparison
                    stats.buckets[bisect_left(LATENCY_BUCKETS_NS, elapsed)] += 1
                stats.calls += 1
                stats.total_ns += elapsed
                stats.last_ns = after
                if elapsed > stats.mark:
                    if elapsed > slowest_ns:
                        slowest, slowest_ns = plugin_id, elapsed
                    over = after > deadline
                    slow = dispatcher._long(plugin_id, stats, name, tenant, elapsed, context)
                    if stats.failing and not slow:
                        dispatcher.succeeded(stats, tenant)
                elif stats.failing:
                    dispatcher.succeeded(stats, tenant)
                before = after
                if result is None or kind is _NOTIFY:
                    continue
                refusal = _refusal(kind, result, value, tenant, plugin_id)
                if refusal is None and hook._routes:
                    result, refusal = hook._guarded(plugin_id, result)
                if refusal is not None:
                    error = ResultRefused(plugin_id, name, refusal)
                    dispatcher._failed(
                        plugin_id,
                        stats,
                        name,
                        tenant,
                        error,
                        context=context,
                        started=before,
                        counted=True,
                    )
                    if dispatcher.strict:
                        raise error
                    before = perf_counter_ns()
                    continue
                if kind is _COLLECT:
                    results.append(_completed(result, plugin_id, name, tenant))
                elif kind is _FILTER:
                    value = result
                else:  # FIRST_RESULT
                    return result
            if kind is _COLLECT:
                return results
            if kind is _FILTER:
                return value
            return None
        finally:
            if token is not None:
                _reset_context(token)

    def __repr__(self) -> str:
        return f"<AsyncHostHook {self._hook._name}>"


def run_to_completion(function: Callable[..., Any]) -> Callable[..., Any]:
    """The sync form of an ``async def`` implementation: each call runs it to completion.

    On the sync path the coroutine runs on an event loop of its own
    (``asyncio.run``); called from a thread whose event loop is running (a
    sync hook call made from async code), on a thread of its own, since that
    loop cannot be re-entered. The async path awaits ``function`` itself: it
    is the wrapper's :data:`AIO` attribute.
    """

    def run(*args: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(function(*args))
        call = contextvars.copy_context().run
        with ThreadPoolExecutor(1, thread_name_prefix="services-ai-plugins-async") as pool:
            return pool.submit(call, asyncio.run, function(*args)).result()

    run.__name__ = getattr(function, "__name__", "run")
    run.__qualname__ = getattr(function, "__qualname__", "run")
    setattr(run, AIO, function)
    return run


def _evict(cache: OrderedDict[Any, Any]) -> None:
    """Drop a full cache's least recently used entry (other threads may drop some meanwhile)."""
    with contextlib.suppress(KeyError):
        cache.popitem(last=False)


def _left(plan: Plan, plugin_id: str) -> list[str]:
    """The ids of the plan's plugins from ``plugin_id`` on (the ones a used-up budget left out)."""
    ids = [entry[0] for entry in plan.entries]
    return ids[ids.index(plugin_id) :]


#: The most characters of a route's name in its hook name (``route:<name>``).
_ROUTE_NAME: Final = 100


#: What a route handler may ask for by name, besides the request.
ROUTE_INJECTED: Final = ("api", "settings", "context")

#: What a framework-native view being served may ask for: its plugin's injected values
#: for the request's tenant (``api``, ``settings``) and the call's ``context``.
_NATIVE: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "services_ai_plugins_native_view", default=None
)


def native_values() -> Mapping[str, Any] | None:
    """Inside a framework-native view called by :meth:`RouteGuard.call_native`: its
    plugin's ``api`` and ``settings`` for the request's tenant, the ``context`` and the
    ``plugin_id``; None elsewhere."""
    return _NATIVE.get()


@final
class RouteGuard:
    """A route handler as the host hands it out (``register_routes`` results).

    Before the plugin's handler runs, the request's tenant must have the plugin
    enabled, not suspended there, and holding ``register_routes``; otherwise
    the answer is a 404 :class:`ApiResponse` and the handler does not run. The
    handler gets the request, and by name, as hooks do, the plugin's ``api``
    and ``settings`` for the request's tenant and the call's ``context``
    (``def stats(request, api, settings)``); a sandboxed plugin's handler gets
    them in its worker. A failure of the handler (an exception, and for a
    sandboxed plugin a :class:`SandboxTimeout`, :class:`WorkerCrashed` or
    :class:`RemoteError`) is recorded like a hook's, under the hook name
    ``route:<name>``, counted by the breaker for (plugin, tenant), and raised
    to the caller. So is a response that is not an :class:`ApiResponse` of the
    request's tenant (:class:`ResultRefused`). A slow answer counts as a
    failure, as in hooks. Await :meth:`aio` on the async path.

    ``view`` is the plugin's own handler, unguarded; ``native`` says it is a
    framework-native view (:attr:`Route.native`), which only the adapter can
    call (:meth:`call_native` guards that call the same way).
    """

    __slots__ = (
        "_asks",
        "_dispatcher",
        "_planner",
        "_sandboxed",
        "_stats",
        "hook",
        "native",
        "plugin_id",
        "view",
    )

    def __init__(
        self,
        planner: Planner,
        dispatcher: Dispatcher,
        plugin_id: str,
        route: Route,
        timeout: float | None,
    ) -> None:
        self._planner = planner
        self._dispatcher = dispatcher
        #: The plugin whose handler this is.
        self.plugin_id = plugin_id
        #: The hook name its failures and metrics are recorded under.
        self.hook = "route:" + bounded(route.name, _ROUTE_NAME)
        #: The plugin's own handler (unguarded).
        self.view = route.handler
        #: Whether the handler is a framework-native view (the adapter calls it).
        self.native = route.native
        #: A sandboxed plugin's handler takes every injected value (its worker picks).
        self._sandboxed = getattr(route.handler, AIO, None) is not None
        self._asks = ROUTE_INJECTED if self._sandboxed else _asks(route.handler)
        self._stats = dispatcher.timed(plugin_id, self.hook, timeout)

    def _admit(self, request: object) -> tuple[str, Mapping[str, Any] | None]:
        """The request's tenant, and the plugin's injected values there (None: not served)."""
        planner = self._planner
        if perf_counter_ns() >= planner.due:
            planner.tick()
        if not isinstance(request, ApiRequest):
            raise TypeError(
                f"the handler of {self.hook} of plugin {self.plugin_id!r} takes an ApiRequest, "
                f"not a {type(request).__name__} (a framework-native view is its .view)"
            )
        tenant = request.tenant
        return tenant, planner.injected(self.plugin_id, tenant, ROUTES_HOOK)

    def _named(
        self, request: ApiRequest, values: Mapping[str, Any], context: Context
    ) -> dict[str, Any]:
        named: dict[str, Any] = {}
        for name in self._asks:
            named[name] = context if name == "context" else values[name]
        return named

    def __call__(self, request: ApiRequest) -> ApiResponse:
        """Serve ``request`` with the plugin's handler, if its tenant may be served.

        :raises TypeError: when ``request`` is not an :class:`ApiRequest`.
        :raises Exception: the handler's failure, once recorded.
        :raises ResultRefused: when the handler returned something else than an
            ``ApiResponse`` for the request's tenant (recorded).
        """
        tenant, values = self._admit(request)
        if values is None:
            return ApiResponse.json(tenant, {"error": "not found"}, 404)
        context = _request_context(request)
        named = self._named(request, values, context)
        token = _set_context(context)
        before = perf_counter_ns()
        try:
            response = self.view(request, **named)
        except WorkerBusy as exc:  # the host's capacity (it answers 503), not a failure
            self._dispatcher.busy(self.plugin_id, self.hook, tenant, exc)
            raise
        except (Exception, SystemExit) as exc:  # recorded, then the adapter's to answer
            self._failed(tenant, exc, context, before)
            raise
        finally:
            _reset_context(token)
        return self._answered(tenant, response, context, before)

    async def aio(self, request: ApiRequest) -> ApiResponse:
        """:meth:`__call__` for the async path: a sandboxed or ``async def`` handler is awaited."""
        tenant, values = self._admit(request)
        if values is None:
            return ApiResponse.json(tenant, {"error": "not found"}, 404)
        context = _request_context(request)
        named = self._named(request, values, context)
        token = _set_context(context)
        before = perf_counter_ns()
        try:
            awaitable = getattr(self.view, AIO, None)
            if awaitable is not None:
                response = await awaitable(request, **named)
            else:
                response = self.view(request, **named)
                if inspect.isawaitable(response):
                    response = await response
        except WorkerBusy as exc:  # the host's capacity (it answers 503), not a failure
            self._dispatcher.busy(self.plugin_id, self.hook, tenant, exc)
            raise
        except (Exception, SystemExit) as exc:  # recorded, then the adapter's to answer
            self._failed(tenant, exc, context, before)
            raise
        finally:
            _reset_context(token)
        return self._answered(tenant, response, context, before)

    def call_native(
        self, request: ApiRequest, call: Callable[[Callable[..., Any]], T]
    ) -> T | ApiResponse:
        """Run ``call(view)`` (the adapter calling its framework's view), guarded like a handler.

        The tenant is admitted first (a 404 :class:`ApiResponse` otherwise); the
        call is timed, and its failure recorded and counted, then raised. What
        ``call`` returns (the framework's response) is the adapter's.
        """
        tenant, values = self._admit(request)
        if values is None:
            return ApiResponse.json(tenant, {"error": "not found"}, 404)
        context = _request_context(request)
        token = _set_context(context)
        native = _NATIVE.set(
            {
                "api": values.get("api"),
                "settings": values.get("settings"),
                "context": context,
                "plugin_id": self.plugin_id,
            }
        )
        before = perf_counter_ns()
        try:
            answer = call(self.view)
        except WorkerBusy as exc:  # pragma: no cover - native views run in process only
            self._dispatcher.busy(self.plugin_id, self.hook, tenant, exc)
            raise
        except (Exception, SystemExit) as exc:
            self._failed(tenant, exc, context, before)
            raise
        finally:
            _NATIVE.reset(native)
            _reset_context(token)
        self._took(tenant, context, before)
        return answer

    def _failed(self, tenant: str, exc: BaseException, context: Context, before: int) -> None:
        self._dispatcher._failed(
            self.plugin_id, self._stats, self.hook, tenant, exc, context=context, started=before
        )

    def _took(self, tenant: str, context: Context, before: int) -> None:
        stats = self._stats
        after = perf_counter_ns()
        elapsed = after - before
        # The bucket before the count: a scrape reads the count first (Dispatcher.live).
        if elapsed > FIRST_BUCKET_NS:  # the first bucket is the rest: one comparison
            stats.buckets[bisect_left(LATENCY_BUCKETS_NS, elapsed)] += 1
        stats.calls += 1
        stats.total_ns += elapsed
        stats.last_ns = after
        slow = elapsed > stats.mark and self._dispatcher._long(
            self.plugin_id, stats, self.hook, tenant, elapsed, context
        )
        if stats.failing and not slow:
            self._dispatcher.succeeded(stats, tenant)

    def _answered(
        self, tenant: str, response: object, context: Context, before: int
    ) -> ApiResponse:
        if type(response) is not ApiResponse or response.tenant != tenant:
            what = (
                f"a response for tenant {response.tenant!r}"
                if isinstance(response, ApiResponse)
                else f"a {type(response).__name__}"
            )
            error = ResultRefused(
                self.plugin_id,
                self.hook,
                f"{what} to a request of tenant {tenant!r}, not its ApiResponse",
            )
            self._failed(tenant, error, context, before)  # counted as a failed call
            raise error
        self._took(tenant, context, before)
        return response

    def __repr__(self) -> str:
        return f"<route handler {self.hook} of plugin {self.plugin_id!r}>"


def _asks(handler: Callable[..., Any]) -> tuple[str, ...]:
    """The injected names an in-process handler takes (by name, as hooks do)."""
    try:
        parameters = inspect.signature(handler).parameters
    except (TypeError, ValueError):  # a builtin, or no signature to read: the request only
        return ()
    return tuple(name for name in ROUTE_INJECTED if name in parameters)


def _request_context(request: ApiRequest) -> Context:
    """The context of a route call: the app's request context when it is of the request's
    tenant and user (it may carry a request id, an IP, a locale), else one made of the request."""
    current = current_request_context()
    if current is not None and current.tenant == request.tenant and current.user == request.user:
        return current
    return Context(tenant=request.tenant, user=request.user)


#: Hooks whose plugins may return plain HTML text, and where the host places it.
_PLACEMENTS: Final[Mapping[str, Placement]] = {"inject_head": "head", "inject_footer": "footer"}


def _completed(result: Any, plugin_id: str, hook: str, tenant: str | None) -> Any:
    """A collected result as the host hands it on: text of HTML hooks wrapped, the maker named."""
    if type(result) is str and hook in _PLACEMENTS and tenant is not None:
        return HtmlFragment(
            tenant=tenant, html=result, placement=_PLACEMENTS[hook], plugin_id=plugin_id
        )
    if getattr(result, "plugin_id", "") is None and attrs.has(type(result)):
        return attrs.evolve(result, plugin_id=plugin_id)
    return result


def _refusal(
    kind: HookKind, result: Any, value: Any, tenant: str | None, plugin_id: str
) -> str | None:
    """Why the host refuses a result, or None.

    Refused: a record of another tenant, or one naming another plugin as its
    maker (``plugin_id``), anywhere in the result (lists, tuples, sets,
    mappings and records' fields, at any depth); and a filter changing type.
    """
    if type(result) not in _SCALARS and not (kind is _FILTER and result is value):
        try:
            problem = _foreign(result, tenant, plugin_id)
        except Exception as exc:  # noqa: BLE001 - a plugin's object failed to be looked at
            problem = f"the host could not look inside it ({type(exc).__name__})"
        if problem is not None:
            return problem
    if kind is not _FILTER or type(result) is type(value):
        return None
    if isinstance(value, Mapping) and isinstance(result, Mapping):
        return None
    if isinstance(value, tuple) and isinstance(result, tuple):
        kinds = {type(item) for item in value}
        if all(type(item) in kinds for item in result) or not kinds:
            return None
        return "a filter returned items of another type than it received"
    return (
        f"a filter must return a {type(value).__name__} (or None to pass), "
        f"not a {type(result).__name__}"
    )


#: Values that hold no record: the walk of a result skips them at once.
_SCALARS: Final = frozenset({str, int, float, bool, bytes, type(None), datetime})
#: The most items the host looks at in one result, and how deep: a result beyond is refused.
MAX_CHECKED: Final = 100_000
MAX_DEPTH: Final = 64
_MISSING: Final = object()
#: Per attrs class, a getter of the tuple of its fields' values.
_FIELDS: dict[type, Callable[[Any], Any]] = {}


def _foreign(result: Any, tenant: str | None, plugin_id: str) -> str | None:
    """What in ``result`` the host refuses (see :func:`_refusal`), or None; bounded."""
    stack: list[tuple[Any, int]] = [(result, 0)]
    checked = 0
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if depth > MAX_DEPTH:
            return f"it nests values more than {MAX_DEPTH} deep, too deep for the host to check"
        if kind is list or kind is tuple or kind is set or kind is frozenset:
            children: Collection[Any] = item
        elif kind is dict:
            children = [*item, *item.values()]
        elif kind in _SCALARS:
            continue
        else:
            if _claims(item, kind, tenant, plugin_id):
                return _where(result, tenant, plugin_id)
            if isinstance(item, Mapping):
                children = [*item, *item.values()]
            elif isinstance(item, (list, tuple, set, frozenset)):
                children = item
            elif hasattr(kind, "__attrs_attrs__"):
                children = _values(item, kind)
            else:
                continue
        checked += len(children)
        if checked > MAX_CHECKED:
            return f"it holds more than {MAX_CHECKED} values, too many for the host to check"
        depth += 1
        stack.extend([(child, depth) for child in children if type(child) not in _SCALARS])
    return None


def _claims(item: Any, kind: type, tenant: str | None, plugin_id: str) -> bool:
    """Whether ``item`` is a record of another tenant, or one naming another plugin as its maker."""
    if tenant is not None:
        owner = getattr(item, "tenant", _MISSING)
        if owner is not _MISSING and owner != tenant:
            return True
    if hasattr(kind, "__attrs_attrs__"):
        claimed = getattr(item, "plugin_id", None)
        if claimed is not None and claimed != plugin_id:
            return True
    return False


def _values(item: Any, kind: type) -> tuple[Any, ...]:
    """The values of an attrs record's fields (a getter per class, built once)."""
    getter = _FIELDS.get(kind)
    if getter is None:
        names = tuple(field.name for field in kind.__attrs_attrs__)  # type: ignore[attr-defined]
        if len(names) > 1:
            getter = attrgetter(*names)
        else:

            def getter(record: Any, names: tuple[str, ...] = names) -> tuple[Any, ...]:
                return tuple(getattr(record, name) for name in names)

        _FIELDS[kind] = getter
    values: tuple[Any, ...] = getter(item)
    return values


def _where(result: Any, tenant: str | None, plugin_id: str, path: str = "") -> str:
    """The refusal of a found record, with its path in the result (a second, rarer walk)."""
    found = _find(result, tenant, plugin_id, path, 0)
    if found is None:  # it changed between the two walks: only a plugin's own objects can
        return "a record of another tenant or plugin (it changed while the host looked)"
    where, item = found
    place = f" at {where}" if where else ""
    claimed = getattr(item, "plugin_id", None) if hasattr(type(item), "__attrs_attrs__") else None
    owner = getattr(item, "tenant", _MISSING)
    if tenant is not None and owner is not _MISSING and owner != tenant:
        return f"a record of tenant {owner!r}{place} in a call for tenant {tenant!r}"
    return f"a record made by plugin {claimed!r}{place}, not by {plugin_id!r}"


def _find(item: Any, tenant: str | None, plugin_id: str, path: str, depth: int) -> Any:
    kind = type(item)
    if kind in _SCALARS or depth > MAX_DEPTH:
        return None
    if kind not in (list, tuple, set, frozenset, dict) and _claims(item, kind, tenant, plugin_id):
        return path, item
    pairs: Iterable[tuple[str, Any]]
    if isinstance(item, Mapping):
        pairs = [(f"{path}[{_brief(key)}]", value) for key, value in item.items()]
        pairs += [(f"{path}(key {_brief(key)})", key) for key in item]
    elif isinstance(item, (list, tuple)):
        pairs = [(f"{path}[{index}]", value) for index, value in enumerate(item)]
    elif isinstance(item, (set, frozenset)):
        pairs = [(f"{path}{{...}}", value) for value in item]
    elif hasattr(kind, "__attrs_attrs__"):
        names = [field.name for field in kind.__attrs_attrs__]
        pairs = [(f"{path}.{name}", getattr(item, name)) for name in names]
    else:
        return None
    for where, child in pairs:
        found = _find(child, tenant, plugin_id, where, depth + 1)
        if found is not None:
            return found
    return None


def _brief(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def _log(plugin_id: str, level: int, failure: FailureRecord, message: str) -> None:
    """Log a failure on the plugin's logger: one line, its (bounded) traceback as the record's text.

    Not ``exc_info``: a handler would format the whole exception again, however
    large the plugin made its message.
    """
    logger = logging.getLogger(f"services_ai_plugins.plugins.{plugin_id}")
    if not logger.isEnabledFor(level):
        return
    record = logger.makeRecord(
        logger.name,
        level,
        __file__,
        0,
        message,
        (failure.hook, failure.tenant, failure.exc_type, failure.message),
        None,
    )
    if failure.traceback:
        record.exc_text = failure.traceback.rstrip()
    logger.handle(record)


_LOOP_CODES: Final = frozenset(
    {
        HostHook.__call__.__code__,
        AsyncHostHook.__call__.__code__,
        _Traced.__call__.__code__,
        RouteGuard.__call__.__code__,
        RouteGuard.aio.__code__,
        RouteGuard.call_native.__code__,
        Dispatcher.call_one.__code__,
    }
)
