"""The call loop: every hook call of every host walks through :meth:`Dispatcher.run`.

pluggy registers the implementations and orders them (``tryfirst``,
``trylast``, registration order); the host turns that order into a *plan* per
(hook, tenant): one entry per implementation that may run there, with
everything that can be computed ahead of the call (the plugin's own ``api``
and ``settings``, an argument getter, its metrics cell). This module runs a
plan: one loop, no wrapper per implementation. Each implementation is
isolated (an exception is recorded as the plugin's failure and the others
still run), timed into per-(plugin, hook) counters that are flushed to storage
in batches, and watched by a circuit breaker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from time import perf_counter_ns
from typing import Any, Final, NamedTuple, Protocol, final

import attrs

from ._api import CALL_LOOPS
from ._errors import ResultRefused
from ._storage import FailureRecord, MetricsDelta, failure_of
from .events import Context, HtmlFragment, Placement
from .hookspecs import HookInfo, HookKind

__all__ = ["BreakerPolicy", "Dispatcher", "HookTrace", "HostHook", "PluginOutcome"]

_NOTIFY: Final = HookKind.NOTIFY
_COLLECT: Final = HookKind.COLLECT
_FIRST_RESULT: Final = HookKind.FIRST_RESULT
_FILTER: Final = HookKind.FILTER

#: The names the host fills with the receiving plugin's own value.
INJECTED: Final = ("api", "settings", "plugin_id")
INJECTABLE: Final = frozenset(INJECTED)
#: The most plans a hook keeps per snapshot (hosts with very many tenants).
MAX_PLANS: Final = 8192

#: The most failures kept in memory between two flushes; more are counted, not kept.
MAX_PENDING_FAILURES: Final = 1000


@attrs.frozen(kw_only=True)
class BreakerPolicy:
    """When the circuit breaker suspends a plugin that keeps failing.

    A plugin is suspended for a tenant when one of its hooks fails
    ``consecutive_failures`` times in a row there, or when a failure opens a
    window of ``window`` seconds in which at least ``min_calls`` calls of that
    hook for that tenant fail at ``failure_rate`` or more. It is suspended
    everywhere when that happens in a hook without a tenant, or once it has
    been suspended for ``tenants_for_global`` tenants by this process.

    Counting happens in each process (no storage round trip per call); the
    suspension is written to storage, with an audit event, so every process
    honours it. ``consecutive_failures=0`` and ``failure_rate=0`` switch the
    two rules off.

    >>> BreakerPolicy(consecutive_failures=3).consecutive_failures
    3
    """

    consecutive_failures: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    failure_rate: float = attrs.field(
        default=0.5, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    window: float = attrs.field(default=60.0, validator=attrs.validators.gt(0.0))
    min_calls: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    tenants_for_global: int = attrs.field(default=3, validator=attrs.validators.ge(1))


@attrs.frozen
class PluginOutcome:
    """What one plugin's implementation did in one traced hook call."""

    plugin_id: str
    #: What it returned (None for a failure).
    result: Any
    #: Its failure (exception or refused value), or None when it worked.
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
        """The outcomes that are failures (an exception, or a refused result)."""
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
        "calls",
        "errors",
        "failing",
        "flushed_calls",
        "flushed_errors",
        "flushed_ns",
        "hook",
        "last_ns",
        "max_ns",
        "plugin_id",
        "total_ns",
    )

    def __init__(self, plugin_id: str, hook: str) -> None:
        self.plugin_id = plugin_id
        self.hook = hook
        self.calls = 0
        self.errors = 0
        self.total_ns = 0
        #: The slowest call since the last flush.
        self.max_ns = 0
        self.last_ns = 0
        self.flushed_calls = 0
        self.flushed_errors = 0
        self.flushed_ns = 0
        #: Tenants where this hook failed lately (None: nothing failing, the usual case).
        self.failing: dict[str | None, _Health] | None = None


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


#: Called when the breaker trips: (plugin_id, tenant or None for everywhere, reason, context).
TripHandler = Callable[[str, "str | None", str, "Context | None"], None]


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
        self._on_trip: Final = on_trip
        self._stats: dict[tuple[str, str], Stats] = {}
        self._pending: list[FailureRecord] = []
        self._dropped = 0
        self._tripped: dict[str, set[str | None]] = {}
        self._lock = threading.Lock()
        self._trace = threading.local()

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
        info: HookInfo,
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
            stats.calls += 1
            stats.errors += 1
            stats.total_ns += elapsed
            stats.max_ns = max(stats.max_ns, elapsed)
            stats.last_ns = now
        # The plugin's frames only: the loop's own frames say nothing to its author.
        frames = exc.__traceback__
        while frames is not None and frames.tb_frame.f_code in _LOOP_CODES:
            frames = frames.tb_next
        failure = failure_of(plugin_id, exc, hook=info.name, tenant=tenant, frames=frames)
        logging.getLogger(f"services_ai_plugins.plugins.{plugin_id}").error(
            "hook %s failed for tenant %r: %s: %s",
            info.name,
            tenant,
            failure.exc_type,
            failure.message,
            exc_info=(type(exc), exc, frames),
        )
        traced: list[PluginOutcome] | None = getattr(self._trace, "outcomes", None)
        if traced and traced[-1].plugin_id == plugin_id:
            traced[-1] = attrs.evolve(traced[-1], result=None, failure=failure)
        with self._lock:
            if len(self._pending) < MAX_PENDING_FAILURES:
                self._pending.append(failure)
            else:
                self._dropped += 1
        reason = self._count(stats, tenant, now)
        if reason is not None:
            self._trip(plugin_id, tenant, f"{info.name}: {reason}", context)
        return failure

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
        everywhere = tenant is None or len(tripped) >= self.policy.tenants_for_global
        if everywhere and tenant is not None:
            reason = f"{reason}; suspended for {len(tripped)} tenants, so everywhere"
        self._forget(plugin_id, None if everywhere else tenant)
        self._on_trip(plugin_id, None if everywhere else tenant, reason, context)

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
            slowest, stats.max_ns = stats.max_ns, 0
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
    """What a :class:`HostHook` needs from its host: housekeeping, the snapshot, plans."""

    @property
    def _due(self) -> int:
        """When the next call must call :meth:`_tick` (``perf_counter_ns``)."""

    @property
    def _snapshot(self) -> object:
        """The current snapshot; a new object whenever plans must be rebuilt."""

    def _tick(self) -> None: ...

    def _plan(
        self, snapshot: Any, info: HookInfo, tenant: str | None, provided: frozenset[str]
    ) -> Plan: ...


#: The key an :class:`Entry` stores into when its implementation asks for no
#: injected name (no implementation argument can have this name).
UNUSED: Final = "<unused>"

#: No injected name given by the caller (the usual case).
NO_NAMES: Final[frozenset[str]] = frozenset()


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
        "_dispatcher",
        "_filtered",
        "_info",
        "_kind",
        "_name",
        "_planner",
        "_required",
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
        # The snapshot last seen and its plans, by tenant (or (tenant, provided)).
        self._cache: tuple[object, dict[Any, Plan]] = (None, {})

    def __call__(  # noqa: PLR0915 - the hot path is one loop on purpose
        self, *, _trace: list[PluginOutcome] | None = None, **kwargs: Any
    ) -> Any:
        planner = self._planner
        if perf_counter_ns() >= planner._due:
            planner._tick()
        provided = NO_NAMES if kwargs.keys() == self._required else self._check(kwargs)
        if self.scoped:
            context = kwargs["context"]
            if type(context) is not Context and not isinstance(context, Context):
                raise TypeError(
                    f"{self._name}() needs context=Context(tenant=...), got {context!r}"
                )
            tenant: str | None = context.tenant
        else:
            context = tenant = None
        snapshot = planner._snapshot
        # (snapshot, its plans) as one object: a thread still on an older snapshot
        # never leaves its plans where a newer snapshot's are looked up.
        cache = self._cache
        if cache[0] is not snapshot:
            cache = self._cache = (snapshot, {})
        plans = cache[1]
        plan = plans.get(tenant if provided is NO_NAMES else (tenant, provided))
        if plan is None:
            plan = planner._plan(snapshot, self._info, tenant, provided)
            if len(plans) >= MAX_PLANS:
                plans.clear()
            plans[tenant if provided is NO_NAMES else (tenant, provided)] = plan
        dispatcher = self._dispatcher
        if _trace is not None:
            plan = dispatcher.traced(plan, _trace)
        info = self._info
        kind = self._kind
        filtered = self._filtered
        value = kwargs[filtered] if filtered is not None else None
        results: list[Any] = []
        before = perf_counter_ns()
        for plugin_id, function, getter, key, own, stats in plan.entries:
            kwargs[key] = own  # one store: cheaper than a test and an update
            if filtered is not None:
                kwargs[filtered] = value
            try:
                result = function(*getter(kwargs))
            except (Exception, SystemExit) as exc:  # the plugin's failure, never the host's
                dispatcher._failed(
                    plugin_id, stats, info, tenant, exc, context=context, started=before
                )
                if dispatcher.strict:
                    raise
                before = perf_counter_ns()
                continue
            after = perf_counter_ns()
            elapsed = after - before
            stats.calls += 1
            stats.total_ns += elapsed
            if elapsed > stats.max_ns:  # noqa: PLR1730 - cheaper than calling max() here
                stats.max_ns = elapsed
            stats.last_ns = after
            if stats.failing:
                dispatcher.succeeded(stats, tenant)
            before = after
            if result is None or kind is _NOTIFY:
                continue
            refusal = _refusal(kind, result, value, tenant)
            if refusal is not None:
                error = ResultRefused(plugin_id, info.name, refusal)
                dispatcher._failed(
                    plugin_id,
                    stats,
                    info,
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
                results.append(_completed(result, plugin_id, info.name, tenant))
            elif kind is _FILTER:
                value = result
            else:  # FIRST_RESULT
                return result
        if kind is _COLLECT:
            return results
        if kind is _FILTER:
            return value
        return None

    def _check(self, kwargs: dict[str, Any]) -> frozenset[str]:
        given = frozenset(kwargs)
        missing = self._required - given
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


def _refusal(kind: HookKind, result: Any, value: Any, tenant: str | None) -> str | None:
    """Why the host refuses a result, or None: another tenant's record, a filter changing type."""
    owner = getattr(result, "tenant", tenant)
    if owner != tenant and tenant is not None:
        return f"a record of tenant {owner!r} in a call for tenant {tenant!r}"
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


CALL_LOOPS.add(HostHook.__call__.__code__)
_LOOP_CODES: Final = frozenset({HostHook.__call__.__code__, _Traced.__call__.__code__})
