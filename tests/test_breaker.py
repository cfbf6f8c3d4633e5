"""The circuit breaker: its rules on their own, and when a trip lands (at the host's next tick)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Hosts, Installer
from services_ai_plugins import BreakerPolicy, MemoryStorage, PluginHost, SandboxPolicy, hookimpl
from services_ai_plugins._dispatch import BUDGET_USED, LONG_NS, NEVER, SLOW_CALL, Dispatcher, Trip
from services_ai_plugins.events import Context
from services_ai_plugins.storage import SourceKind
from services_ai_plugins.types import Isolation

HEADER = "from services_ai_plugins import hookimpl\n\n\nclass Plugin:\n"

#: The write methods of the Storage protocol.
WRITES = frozenset(
    {"commit", "record_failures", "resolve_failures", "record_metrics", "charge_store"}
)


class CountingStorage:
    """A MemoryStorage that counts the calls of its write methods."""

    def __init__(self) -> None:
        self.inner = MemoryStorage()
        self.writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.inner, name)
        if name in WRITES:

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.writes.append(name)
                return found(*args, **kwargs)

            return counted
        return found


class Listener:
    def __init__(self) -> None:
        self.heard: list[tuple[str, str | None]] = []

    @hookimpl
    def plugin_suspended(self, plugin_id: str, tenant: str | None) -> None:
        self.heard.append((plugin_id, tenant))


FAILING = """
@hookimpl
def lead_created(self, lead):
    raise RuntimeError("always")
"""


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


def lead(services: Any) -> Any:
    return services.make_lead("acme")


@pytest.mark.parametrize("tick", ["flush", "next call"])
def test_a_trip_writes_nothing_in_the_failing_call_and_lands_at_the_next_tick(
    hosts: Hosts, install: Installer, services: Any, tick: str
) -> None:
    """The tripping call returns with no storage write and no plugin_suspended; the tick applies.

    The host's next tick (its flush, or the housekeeping of its next hook call)
    writes the suspension (one commit), fires plugin_suspended once, and the
    plugin runs no more for the tenant.
    """
    storage = CountingStorage()
    host: PluginHost = hosts(
        storage=storage,
        breaker=BreakerPolicy(consecutive_failures=2, failure_rate=0),
        refresh_interval=3600,
        flush_interval=3600,
    )
    listener = Listener()
    host.add_listener(listener)
    install(host, "failing", FAILING)
    acme = Context(tenant="acme")
    host.hook.lead_created(lead=lead(services), context=acme)  # the first failure; ticks first
    storage.writes.clear()
    host.hook.lead_created(lead=lead(services), context=acme)  # the second: the breaker trips
    assert storage.writes == []
    assert listener.heard == []
    stored = storage.inner.get_tenant("failing", "acme")
    assert stored is not None
    assert stored.suspended_reason is None
    if tick == "flush":
        host.flush()
    else:
        trace = host.trace_hook("lead_created", lead=lead(services), context=acme)
        assert trace.ran == ()
    assert storage.writes.count("commit") == 1
    assert listener.heard == [("failing", "acme")]
    stored = storage.inner.get_tenant("failing", "acme")
    assert stored is not None
    assert stored.suspended_reason is not None
    assert "2 consecutive failures" in stored.suspended_reason
    after = host.trace_hook("lead_created", lead=lead(services), context=acme)
    assert after.ran == ()  # suspended for acme: it runs no more there
    host.flush()
    assert listener.heard == [("failing", "acme")]  # applied once


def test_a_trip_not_applied_before_the_host_closes_lands_at_close(
    hosts: Hosts, install: Installer, services: Any
) -> None:
    """Closing the host is its last tick: the suspension recorded is written then."""
    storage = CountingStorage()
    host: PluginHost = hosts(
        storage=storage, breaker=BreakerPolicy(consecutive_failures=1, failure_rate=0)
    )
    install(host, "failing", FAILING)
    host.hook.lead_created(lead=lead(services), context=Context(tenant="acme"))
    host.close()
    stored = storage.inner.get_tenant("failing", "acme")
    assert stored is not None
    assert stored.suspended_reason is not None


# -- the rules on their own: a Dispatcher, no host -------------------------------------------------


def ok() -> None:
    return None


def fail() -> None:
    raise RuntimeError("boom")


class Breaker:
    """A Dispatcher under ``policy``, calling one (plugin, hook) and keeping its trips."""

    def __init__(self, policy: BreakerPolicy) -> None:
        self.woken = 0
        self.dispatcher = Dispatcher(policy=policy, strict=False, on_trip=self.wake)
        self.stats = self.dispatcher.timed("p", "lead_created", None)
        self.trips: list[Trip] = []

    def wake(self) -> None:
        self.woken += 1

    def call(self, function: Callable[[], None], tenant: str | None = "acme") -> list[Trip]:
        self.dispatcher.call_one("p", self.stats, function, (), tenant=tenant, context=None)
        trips = self.dispatcher.take_trips()
        self.trips += trips
        return trips


@settings(max_examples=200, deadline=None)
@given(outcomes=st.lists(st.booleans(), max_size=40), limit=st.integers(1, 8))
def test_the_consecutive_rule_trips_exactly_at_the_first_run_of_n(
    outcomes: list[bool], limit: int
) -> None:
    """Only the consecutive rule: the first trip comes at the first run of ``limit`` failures."""
    breaker = Breaker(BreakerPolicy(consecutive_failures=limit, failure_rate=0))
    run, expected = 0, None
    for number, fails in enumerate(outcomes):
        run = run + 1 if fails else 0
        if run == limit and expected is None:
            expected = number
    tripped_at = None
    for number, fails in enumerate(outcomes):
        if breaker.call(fail if fails else ok) and tripped_at is None:
            tripped_at = number
            break
    assert tripped_at == expected
    if expected is not None:
        [trip] = breaker.trips
        assert (trip.plugin_id, trip.tenant) == ("p", "acme")
        assert trip.reason == f"lead_created: {limit} consecutive failures"
        assert breaker.woken == 1


@settings(max_examples=200, deadline=None)
@given(
    outcomes=st.lists(st.booleans(), max_size=60),
    rate=st.sampled_from([0.1, 0.25, 0.5, 0.75, 1.0]),
    min_calls=st.integers(1, 20),
)
def test_the_failure_rate_rule_counts_from_the_first_failure(
    outcomes: list[bool], rate: float, min_calls: int
) -> None:
    """Only the rate rule: trips at the first failure where, counted since the window opened
    (at the first failure), at least ``min_calls`` calls were made and the failed share
    reaches ``rate``."""
    policy = BreakerPolicy(
        consecutive_failures=0, failure_rate=rate, min_calls=min_calls, window=3600
    )
    breaker = Breaker(policy)
    errors = successes = 0
    expected = None
    for number, fails in enumerate(outcomes):
        if fails:
            errors += 1
            calls = errors + successes
            if calls >= min_calls and errors / calls >= rate:
                expected = number
                break
        elif errors:
            successes += 1
    tripped_at = None
    for number, fails in enumerate(outcomes):
        if breaker.call(fail if fails else ok):
            tripped_at = number
            break
    assert tripped_at == expected


def test_rules_switched_off_never_trip() -> None:
    """consecutive_failures=0 and failure_rate=0: a hundred failures trip nothing."""
    breaker = Breaker(BreakerPolicy(consecutive_failures=0, failure_rate=0))
    for _ in range(100):
        breaker.call(fail)
    assert breaker.trips == []
    assert breaker.stats.errors == 100


def test_a_trip_for_enough_tenants_is_a_trip_everywhere() -> None:
    """Tripped for ``tenants_for_global`` tenants: the last trip suspends it everywhere."""
    breaker = Breaker(BreakerPolicy(consecutive_failures=1, failure_rate=0, tenants_for_global=3))
    for tenant in ("t1", "t2", "t3"):
        breaker.call(fail, tenant)
    assert [trip.tenant for trip in breaker.trips] == ["t1", "t2", None]
    assert "suspended for 3 tenants, so everywhere" in breaker.trips[-1].reason
    assert breaker.call(fail, None)[0].tenant is None  # a hook without a tenant: everywhere


def test_a_suspension_lifted_elsewhere_no_longer_counts() -> None:
    """forget_trip: a tenant resumed elsewhere does not count towards everywhere."""
    breaker = Breaker(BreakerPolicy(consecutive_failures=1, failure_rate=0, tenants_for_global=2))
    breaker.call(fail, "t1")
    breaker.dispatcher.forget_trip("p", "t1")
    [trip] = breaker.call(fail, "t2")
    assert trip.tenant == "t2"
    breaker.dispatcher.reset("p")
    assert breaker.dispatcher.tripped() == {}


@settings(max_examples=200, deadline=None)
@given(
    own=st.none() | st.floats(0.001, 100),
    per_hook=st.none() | st.floats(0.001, 100),
    timeout=st.none() | st.floats(0.001, 100),
    share=st.floats(0, 1),
)
def test_the_time_limit_is_the_smallest_that_applies(
    own: float | None, per_hook: float | None, timeout: float | None, share: float
) -> None:
    """limit(): time_limits[hook], else time_limit, capped by the sandbox's timeout; a call is
    slow past ``slow_share`` of it (never when there is no limit or the share is 0)."""
    policy = BreakerPolicy(
        time_limit=own,
        time_limits={} if per_hook is None else {"lead_created": per_hook},
        slow_share=share,
    )
    configured = per_hook if per_hook is not None else own
    candidates = [x for x in (configured, timeout) if x is not None]
    expected = min(candidates) if candidates else None
    assert policy.limit("lead_created", timeout) == expected
    assert policy.limit("other_hook", None) == own
    stats = Dispatcher(policy=policy, strict=False, on_trip=lambda: None).timed(
        "p", "lead_created", timeout
    )
    if expected is None or not share:
        assert stats.slow_ns == NEVER
    else:
        assert stats.slow_ns == int(expected * share * 1e9)


@settings(max_examples=100, deadline=None)
@given(limit_ms=st.integers(1, 10_000), share=st.floats(0.05, 1), factor=st.floats(0, 3))
def test_a_call_over_the_slow_share_counts_as_a_failure(
    limit_ms: int, share: float, factor: float
) -> None:
    """The loop's rare path, given an elapsed time: slow iff over share x limit."""
    policy = BreakerPolicy(
        consecutive_failures=1, failure_rate=0, time_limit=limit_ms / 1000, slow_share=share
    )
    breaker = Breaker(policy)
    elapsed = int(breaker.stats.slow_ns * factor)
    slow = breaker.dispatcher._long("p", breaker.stats, "lead_created", "acme", elapsed, None)
    assert slow == (elapsed > breaker.stats.slow_ns)
    failures, _ = breaker.dispatcher.take_failures()
    assert [f.exc_type for f in failures] == ([SLOW_CALL] if slow else [])
    assert len(breaker.dispatcher.take_trips()) == (1 if slow else 0)
    assert breaker.stats.mark == min(breaker.stats.max_ns, breaker.stats.slow_ns, LONG_NS)


SLEEPER = """
@hookimpl
def lead_created(self, lead, api):
    import time
    time.sleep(0.3)
    api.store_set("ran", True)
"""


def test_a_hook_call_stops_calling_plugins_once_its_budget_is_used(
    hosts: Hosts, install: Installer, services: Any
) -> None:
    """call_budget 0.1 s and plugins that take 0.3 s each: the first runs, the rest are left out
    and recorded (under the slowest), not counted by the breaker."""
    host: PluginHost = hosts(
        sandbox=SandboxPolicy(isolation=dict.fromkeys(SourceKind, Isolation.INPROCESS)),
        breaker=BreakerPolicy(consecutive_failures=1, failure_rate=0, call_budget=0.1),
    )
    for plugin_id in ("sleep-1", "sleep-2", "sleep-3"):
        install(host, plugin_id, SLEEPER)
    trace = host.trace_hook("lead_created", lead=lead(services), context=Context(tenant="acme"))
    assert trace.ran == ("sleep-1",)
    [failure] = host.failures()
    assert (failure.plugin_id, failure.exc_type) == ("sleep-1", BUDGET_USED)
    assert "not called: sleep-2, sleep-3" in failure.message
    assert host.suspensions() == []
    assert services.stored("acme", "sleep-2") == {}
