"""The async call path: ``await host.ahook.<name>(...)`` keeps every rule of the sync loop.

Same kinds, order, isolation, result checks, metrics and breaker as
``host.hook``; ``async def`` implementations are awaited (and run to completion
on the sync path); plain in-process implementations run inline, or in the
host's bounded thread pool when it has one, so a blocking plugin need not block
the event loop. Plugins are real archives installed through the host.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Hosts, Installer
from services_ai_plugins import BreakerPolicy, PluginHost, SandboxPolicy
from services_ai_plugins.events import ApiRequest, Context, Lead
from services_ai_plugins.storage import SourceKind
from services_ai_plugins.tooling import example
from services_ai_plugins.types import Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

HEADER = (
    "import asyncio, time\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import ApiResponse, User, Widget\n\n\n"
    "class Plugin:\n"
)

ACME = Context(tenant="acme")
ALL = ["dashboard_widgets", "read_leads", "read_users", "write_leads"]


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def make_host(hosts: Hosts) -> Callable[..., PluginHost]:
    def make(isolation: str = "inprocess", **options: Any) -> PluginHost:
        sandbox = SandboxPolicy(
            timeout=30.0, isolation=dict.fromkeys(SourceKind, Isolation(isolation))
        )
        return cast("PluginHost", hosts(sandbox=sandbox, **options))

    return make


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


#: Plugins of every kind of hook; ``{tag}`` tells them apart, ``{mode}`` is "" or "async ".
KINDS = """
@hookimpl
{mode}def dashboard_widget(self, context):
    return Widget(tenant=context.tenant, title="{tag}", html="<b>{tag}</b>")

@hookimpl
{mode}def filter_lead_data(self, data, context):
    return {{**data, "score": data["score"] + {bonus}}}

@hookimpl
{mode}def resolve_lead_owner(self, lead, context):
    owner = {owner}
    if owner is None:
        return None
    return User(id=owner, tenant=context.tenant, email=owner + "@acme.test", name=owner)

@hookimpl
{mode}def lead_created(self, lead, context, api):
    api.store_set("seen", lead.id)
"""


def _kinds(tag: str, mode: str, bonus: int, owner: str | None) -> str:
    return KINDS.format(tag=tag, mode=mode, bonus=bonus, owner=repr(owner))


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
def test_ahook_gives_what_hook_gives_for_every_kind(
    isolation: str,
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
) -> None:
    host = make_host(isolation)
    permissions = ALL
    install(host, "alpha", _kinds("a", "", 1, None), permissions=permissions)
    install(host, "bravo", _kinds("b", "", 10, "u-7"), permissions=permissions)
    lead = services.add_lead("acme", name="Ada")
    calls: dict[str, dict[str, Any]] = {
        "dashboard_widget": {"context": ACME},
        "filter_lead_data": {"data": {"score": 5}, "context": ACME},
        "resolve_lead_owner": {"lead": lead, "context": ACME},
        "lead_created": {"lead": lead, "context": ACME},
    }
    for name, kwargs in calls.items():
        synced = host.call_hook(name, **kwargs)
        awaited = run(host.acall_hook(name, **kwargs))
        assert awaited == synced, name
        assert awaited == run(getattr(host.ahook, name)(**kwargs))
    assert services.stored("acme", "alpha") == {"seen": lead.id}
    host.flush()
    metrics = {(m.plugin_id, m.hook): m.calls for m in host.metrics()}
    assert metrics[("alpha", "filter_lead_data")] == 3  # every path counted the same way


def test_async_def_implementations_are_awaited_and_the_loop_stays_free(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host()
    slow = _kinds("s", "async ", 2, None).replace(
        "    return Widget(", "    await asyncio.sleep(0.3)\n    return Widget("
    )
    install(host, "slow", slow, permissions=ALL)
    install(host, "plain", _kinds("p", "", 3, "u-1"), permissions=ALL)
    lead = services.add_lead("acme", name="Ada")

    async def main() -> tuple[list[Any], int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        widgets = await host.ahook.dashboard_widget(context=ACME)
        ticker.cancel()
        return widgets, ticks

    widgets, ticks = run(main())
    assert [w.title for w in widgets] == ["p", "s"] or [w.title for w in widgets] == ["s", "p"]
    assert ticks >= 5  # the loop ran other tasks while the plugin awaited
    assert run(host.ahook.filter_lead_data(data={"score": 1}, context=ACME)) == {"score": 6}
    owner = run(host.ahook.resolve_lead_owner(lead=lead, context=ACME))
    assert owner.id == "u-1"
    # The sync path runs the coroutine to completion, from plain code and from a running loop.
    assert {w.title for w in host.hook.dashboard_widget(context=ACME)} == {"p", "s"}

    async def sync_inside_async() -> list[Any]:
        return cast("list[Any]", host.hook.dashboard_widget(context=ACME))

    assert {w.title for w in run(sync_inside_async())} == {"p", "s"}


BLOCKING = """
@hookimpl
def dashboard_widget(self, context):
    time.sleep(0.4)
    return Widget(tenant=context.tenant, title="blocking", html="x")
"""


def _max_lag(host: PluginHost) -> float:
    async def main() -> float:
        lag = 0.0

        async def tick() -> None:
            nonlocal lag
            while True:
                before = time.perf_counter()
                await asyncio.sleep(0.005)
                lag = max(lag, time.perf_counter() - before - 0.005)

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0.02)
        await asyncio.gather(*(host.ahook.dashboard_widget(context=ACME) for _ in range(2)))
        await asyncio.sleep(0.02)  # the ticker measures its last wait before it stops
        ticker.cancel()
        return lag

    return cast("float", run(main()))


def test_a_blocking_plugin_blocks_the_loop_unless_the_host_asks_for_threads(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    inline = make_host()
    install(inline, "blocking", BLOCKING, permissions=["dashboard_widgets"])
    assert _max_lag(inline) > 0.3  # documented: inline, a blocking plugin blocks the loop
    pooled = make_host(async_threads=2)
    install(pooled, "blocking-pooled", BLOCKING, permissions=["dashboard_widgets"])
    assert _max_lag(pooled) < 0.2  # in the pool, the loop keeps ticking
    with pytest.raises(ValueError, match="async_threads must be None or at least 1"):
        make_host(async_threads=0)


FAILING = """
@hookimpl
{mode}def dashboard_widget(self, context):
    raise RuntimeError("boom")
"""


@pytest.mark.parametrize("mode", ["", "async "])
def test_failures_are_isolated_recorded_and_trip_the_breaker_as_on_the_sync_path(
    mode: str, make_host: Callable[..., PluginHost], install: Installer
) -> None:
    host = make_host(breaker=BreakerPolicy(consecutive_failures=2, failure_rate=0))
    install(host, "failing", FAILING.format(mode=mode), permissions=["dashboard_widgets"])
    install(host, "fine", _kinds("f", "", 0, None), permissions=ALL)
    for _ in range(2):
        widgets = run(host.ahook.dashboard_widget(context=ACME))
        assert [w.title for w in widgets] == ["f"]
    host.flush()
    assert [(f.hook, f.exc_type) for f in host.failures("failing")] == [
        ("dashboard_widget", "RuntimeError")
    ] * 2
    assert [s.tenant for s in host.suspensions("failing")] == ["acme"]
    strict = make_host(strict=True)
    install(strict, "failing-too", FAILING.format(mode=mode), permissions=["dashboard_widgets"])
    with pytest.raises(RuntimeError, match="boom"):
        run(strict.ahook.dashboard_widget(context=ACME))


def test_unknown_hooks_and_arguments_are_refused_as_on_the_sync_path(
    make_host: Callable[..., PluginHost],
) -> None:
    host = make_host()
    with pytest.raises(KeyError):
        run(host.acall_hook("lead_creatd", lead=example(Lead), context=ACME))
    with pytest.raises(AttributeError):
        host.ahook.lead_creatd  # noqa: B018
    with pytest.raises(TypeError, match=r"missing lead"):
        run(host.ahook.lead_created(context=ACME))
    with pytest.raises(TypeError, match="needs context=Context"):
        run(host.ahook.lead_created(lead=example(Lead), context="acme"))
    assert "lead_created" in dir(host.ahook)


@settings(max_examples=10, deadline=None)
@given(
    plugins=st.lists(
        st.tuples(st.integers(-5, 5), st.sampled_from(["", "async "])), min_size=1, max_size=4
    ),
    score=st.integers(-100, 100),
)
def test_the_filter_chain_is_the_same_on_both_paths(
    tmp_path_factory: pytest.TempPathFactory,
    plugins: list[tuple[int, str]],
    score: int,
) -> None:
    """Any mix of plain and async filters: both paths give the same value, in the same order."""
    root = tmp_path_factory.mktemp("chain")
    services = FakeHostServices()
    hosts = Hosts(root, services)
    try:
        sandbox = SandboxPolicy(isolation=dict.fromkeys(SourceKind, Isolation.INPROCESS))
        host = hosts(sandbox=sandbox)
        install = Installer(root, HEADER)
        body = """
        @hookimpl
        {mode}def filter_lead_data(self, data, context):
            return {{"score": data["score"] * 2 + {bonus}}}
        """
        for number, (bonus, mode) in enumerate(plugins):
            install(host, f"plug-{number}", body.format(mode=mode, bonus=bonus), permissions=ALL)
        data = {"score": score}
        synced = host.hook.filter_lead_data(data=data, context=ACME)
        awaited = asyncio.run(host.ahook.filter_lead_data(data=data, context=ACME))
        assert awaited == synced
    finally:
        hosts.close()


def test_route_handlers_may_be_async_in_process(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    host = make_host()
    install(
        host,
        "web",
        """
        @hookimpl
        def register_routes(self, plugin_id):
            from services_ai_plugins.events import Route

            async def hello(request, settings):
                await asyncio.sleep(0)
                return ApiResponse.json(request.tenant, {"async": True})

            return [Route(path="/hello", handler=hello, name="hello")]
        """,
        permissions=["register_routes"],
    )
    answer = run(host.aserve(ApiRequest(tenant="acme", method="GET", path="/web/hello")))
    assert (answer.status, answer.body) == (200, b'{"async":true}')


SLEEPY = """
@hookimpl
def dashboard_widget(self, context):
    time.sleep(0.3)
    return Widget(tenant=context.tenant, title="sleepy", html="z")
"""


def test_a_sandboxed_plugin_never_blocks_the_loop_on_the_async_path(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    """The worker sleeps; the loop keeps ticking, on ahook as on aserve."""
    host = make_host("process")
    install(host, "sleepy", SLEEPY, permissions=["dashboard_widgets"])
    assert [w.title for w in host.hook.dashboard_widget(context=ACME)] == ["sleepy"]  # warm
    assert _max_lag(host) < 0.2  # two calls of 0.3 s each in flight, the loop free
