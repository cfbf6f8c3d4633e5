"""The call loop's latency buckets, as a scrape reads them (Dispatcher.live)."""

from __future__ import annotations

from services_ai_plugins import BreakerPolicy
from services_ai_plugins._dispatch import LATENCY_BUCKETS, LATENCY_BUCKETS_NS, Dispatcher


def dispatcher() -> Dispatcher:
    return Dispatcher(
        policy=BreakerPolicy(consecutive_failures=0, failure_rate=0),
        strict=False,
        on_trip=lambda: None,
    )


def test_the_buckets_are_fixed_sorted_and_in_nanoseconds() -> None:
    """The documented bounds, ascending, in both units."""
    assert LATENCY_BUCKETS[0] == 0.0001
    assert LATENCY_BUCKETS[-1] == 10.0
    assert list(LATENCY_BUCKETS) == sorted(set(LATENCY_BUCKETS))
    assert LATENCY_BUCKETS_NS[0] == 100_000
    assert LATENCY_BUCKETS_NS[LATENCY_BUCKETS.index(1.0)] == 1_000_000_000


def test_a_scrape_between_a_bucket_and_its_count_never_shows_a_bucket_going_down() -> None:
    """A slow call's bucket is written before its count: the first bucket is held, not lowered."""
    found = dispatcher()
    stats = found.stats("plugin", "lead_created")
    stats.calls = 3  # three quick calls
    assert found.live()[0].buckets[0] == 3
    stats.buckets[5] += 1  # a slow call's bucket, its count not yet written
    middle = found.live()[0]
    assert middle.buckets[0] == 3
    assert middle.buckets[5] == 1
    stats.calls += 1
    after = found.live()[0]
    assert after.calls == 4
    assert after.buckets[0] == 3
    assert sum(after.buckets) == 4
