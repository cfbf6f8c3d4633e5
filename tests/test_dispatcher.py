"""The call loop on its own: a HostHook over a fake Planner, no host, no storage, no pluggy.

The Planner is the seam between the loop and the host's loaded plugins
(``_loading.PluginSet``); here it is a few lines handing out plans made of
plain functions, which shows the seam is public and narrow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from services_ai_plugins._context import CURRENT_CONTEXT
from services_ai_plugins._dispatch import (
    NEVER,
    BreakerPolicy,
    Dispatcher,
    Entry,
    HostHook,
    Plan,
    PluginOutcome,
    entry,
)
from services_ai_plugins.errors import ResultRefused
from services_ai_plugins.events import Context, Widget
from services_ai_plugins.hookspecs import HookInfo, HookKind

ACME = Context(tenant="acme")

#: Per implementation: (plugin id, function, its argument names).
Impl = tuple[str, Callable[..., Any], Sequence[str]]


class FakePlanner:
    """A Planner handing out one plan of ``impls``, each plugin injected its own ``api``."""

    def __init__(self, dispatcher: Dispatcher, impls: Sequence[Impl]) -> None:
        self.dispatcher = dispatcher
        self.impls = impls
        self.due = NEVER
        self.snapshot: object = object()
        self.ticks = 0
        self.plans: list[tuple[str | None, frozenset[str]]] = []

    def tick(self) -> None:
        self.ticks += 1
        self.due = NEVER

    def plan(
        self, snapshot: Any, info: HookInfo, tenant: str | None, provided: frozenset[str]
    ) -> Plan:
        self.plans.append((tenant, provided))
        entries: list[Entry] = []
        for plugin_id, function, argnames in self.impls:
            own = {"api": f"api of {plugin_id}"} if "api" in argnames else {}
            stats = self.dispatcher.timed(plugin_id, info.name, None)
            entries.append(entry(plugin_id, function, argnames, own, stats))
        return Plan(info, tenant, tuple(entries))

    def serves(self, plugin_id: str, tenant: str, permission: str) -> bool:
        return True

    def timeout(self, plugin_id: str) -> float | None:
        return None


def make(
    kind: HookKind,
    impls: Sequence[Impl],
    *,
    strict: bool = False,
    filtered: str | None = None,
    argnames: Sequence[str] = ("value", "context", "api"),
) -> tuple[HostHook, FakePlanner, Dispatcher]:
    dispatcher = Dispatcher(
        policy=BreakerPolicy(consecutive_failures=0, failure_rate=0),
        strict=strict,
        on_trip=lambda: None,
    )
    planner = FakePlanner(dispatcher, impls)
    info = HookInfo(name="thing_happened", kind=kind, filtered=filtered)
    hook = HostHook(planner, dispatcher, info, argnames, ("api", "settings", "plugin_id"))
    return hook, planner, dispatcher


def recorder(seen: list[Any], plugin_id: str, result: Any = None) -> Impl:
    def impl(value: Any, api: Any) -> Any:
        seen.append((plugin_id, value, api))
        return result

    return plugin_id, impl, ("value", "api")


# -- kinds and order ------------------------------------------------------------------------------


def test_notify_calls_every_implementation_in_plan_order_with_its_own_api() -> None:
    seen: list[Any] = []
    impls = [recorder(seen, "b", "ignored"), recorder(seen, "a"), recorder(seen, "c")]
    hook, _, _ = make(HookKind.NOTIFY, impls)
    assert hook(value=1, context=ACME) is None
    assert seen == [("b", 1, "api of b"), ("a", 1, "api of a"), ("c", 1, "api of c")]


def test_collect_returns_the_results_that_are_not_none_in_order() -> None:
    seen: list[Any] = []
    impls = [recorder(seen, "a", 1), recorder(seen, "b"), recorder(seen, "c", [3])]
    hook, _, _ = make(HookKind.COLLECT, impls)
    assert hook(value=0, context=ACME) == [1, [3]]


def test_first_result_stops_at_the_first_result_that_is_not_none() -> None:
    seen: list[Any] = []
    impls = [recorder(seen, "a"), recorder(seen, "b", "owner"), recorder(seen, "c", "other")]
    hook, _, _ = make(HookKind.FIRST_RESULT, impls)
    assert hook(value=0, context=ACME) == "owner"
    assert [plugin for plugin, _, _ in seen] == ["a", "b"]


def test_filter_passes_each_result_to_the_next_and_none_passes_the_value_on() -> None:
    def add(suffix: str | None) -> Callable[..., Any]:
        return lambda value: None if suffix is None else value + suffix

    impls = [
        ("a", add("-a"), ("value",)),
        ("b", add(None), ("value",)),
        ("c", add("-c"), ("value",)),
    ]
    hook, _, _ = make(HookKind.FILTER, impls, filtered="value")
    assert hook(value="x", context=ACME) == "x-a-c"


# -- isolation ------------------------------------------------------------------------------------


def failing(plugin_id: str) -> Impl:
    def impl(value: Any) -> Any:
        raise KeyError("nope")

    return plugin_id, impl, ("value",)


def test_a_raising_implementation_is_recorded_and_the_others_still_run() -> None:
    seen: list[Any] = []
    impls = [recorder(seen, "a", 1), failing("bad"), recorder(seen, "c", 3)]
    hook, _, dispatcher = make(HookKind.COLLECT, impls)
    assert hook(value=0, context=ACME) == [1, 3]
    failures, dropped = dispatcher.take_failures()
    assert dropped == 0
    [failure] = failures
    assert (failure.plugin_id, failure.hook, failure.tenant, failure.exc_type) == (
        "bad",
        "thing_happened",
        "acme",
        "KeyError",
    )
    assert "raise KeyError" in failure.traceback


def test_strict_raises_the_failure_once_recorded() -> None:
    hook, _, dispatcher = make(HookKind.NOTIFY, [failing("bad")], strict=True)
    with pytest.raises(KeyError):
        hook(value=0, context=ACME)
    assert len(dispatcher.take_failures()[0]) == 1


def test_a_record_of_another_tenant_is_refused_and_recorded() -> None:
    """A collected Widget of globex in acme's call is dropped, recorded as ResultRefused."""
    leak = Widget(tenant="globex", title="t", html="h")
    impls: list[Impl] = [("leaky", lambda: [leak], ()), ("fine", lambda: "ok", ())]
    hook, _, dispatcher = make(HookKind.COLLECT, impls)
    assert hook(value=0, context=ACME) == ["ok"]
    [failure] = dispatcher.take_failures()[0]
    assert (failure.plugin_id, failure.exc_type) == ("leaky", ResultRefused.__name__)
    assert "tenant 'globex'" in failure.message


def test_wrong_arguments_and_a_missing_context_are_the_callers_error() -> None:
    hook, _, _ = make(HookKind.NOTIFY, [])
    with pytest.raises(TypeError, match="missing value"):
        hook(context=ACME)
    with pytest.raises(TypeError, match="unknown other"):
        hook(value=1, context=ACME, other=2)
    with pytest.raises(TypeError, match="needs context=Context"):
        hook(value=1, context="acme")


# -- the context, plans and housekeeping ----------------------------------------------------------


def test_the_calls_context_is_set_for_the_call_only() -> None:
    seen: list[Any] = []
    impls: list[Impl] = [("a", lambda: seen.append(CURRENT_CONTEXT.get()), ())]
    hook, _, _ = make(HookKind.NOTIFY, impls)
    hook(value=0, context=ACME)
    assert seen == [ACME]
    assert CURRENT_CONTEXT.get() is None


def test_plans_are_built_once_per_snapshot_and_tenant_and_ticks_happen_when_due() -> None:
    hook, planner, _ = make(HookKind.NOTIFY, [])
    hook(value=0, context=ACME)
    hook(value=0, context=ACME)
    hook(value=0, context=Context(tenant="globex"))
    assert planner.plans == [("acme", frozenset()), ("globex", frozenset())]
    hook(value=0, context=ACME, api="given")  # an injected name given: its own plan
    assert planner.plans[-1] == ("acme", frozenset({"api"}))
    planner.snapshot = object()
    hook(value=0, context=ACME)
    assert planner.plans[-1] == ("acme", frozenset())
    assert planner.ticks == 0
    planner.due = 0
    hook(value=0, context=ACME)
    assert planner.ticks == 1


# -- metrics and traces ---------------------------------------------------------------------------


def test_calls_and_errors_are_counted_per_plugin_and_hook_and_taken_once() -> None:
    seen: list[Any] = []
    hook, _, dispatcher = make(HookKind.NOTIFY, [recorder(seen, "a"), failing("bad")])
    for _ in range(3):
        hook(value=0, context=ACME)
    deltas = {d.plugin_id: d for d in dispatcher.take_metrics()}
    assert (deltas["a"].calls, deltas["a"].errors) == (3, 0)
    assert (deltas["bad"].calls, deltas["bad"].errors) == (3, 3)
    assert all(d.hook == "thing_happened" for d in deltas.values())
    assert dispatcher.take_metrics() == []
    dispatcher.put_back_metrics(list(deltas.values()))  # a flush that could not store them
    again = {d.plugin_id: (d.calls, d.errors) for d in dispatcher.take_metrics()}
    assert again == {"a": (3, 0), "bad": (3, 3)}


def test_a_traced_call_reports_each_plugins_part() -> None:
    seen: list[Any] = []
    hook, _, dispatcher = make(HookKind.COLLECT, [recorder(seen, "a", 1), failing("bad")])
    outcomes: list[PluginOutcome] = []
    try:
        assert hook(_trace=outcomes, value=0, context=ACME) == [1]
    finally:
        dispatcher.end_trace()
    assert [(o.plugin_id, o.result) for o in outcomes] == [("a", 1), ("bad", None)]
    failure = outcomes[1].failure
    assert failure is not None
    assert failure.exc_type == "KeyError"
    assert outcomes[0].failure is None
