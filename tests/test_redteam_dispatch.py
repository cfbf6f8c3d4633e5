"""Hostile plugins against the call loop: failure records, results, routes, the breaker, time.

Every plugin here is a real folder packed into a real archive, installed,
approved and enabled, then driven through the real host: in a sandbox worker,
and (where the promise is the host's alone and it is cheap) in the host's
process too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import attrs
import pytest

from conftest import Hosts, Installer
from services_ai_plugins import (
    BreakerPolicy,
    PluginHost,
    SandboxError,
    SandboxPolicy,
    SandboxTimeout,
    SQLiteStorage,
    _dispatch,
)
from services_ai_plugins._storage._protocol import (
    MAX_EXC_TYPE,
    MAX_MESSAGE,
    MAX_TRACEBACK,
    FailureRecord,
)
from services_ai_plugins.errors import ResultRefused, WorkerCrashed
from services_ai_plugins.events import ApiRequest, ApiResponse, Context, Route
from services_ai_plugins.storage import SourceKind, Storage
from services_ai_plugins.types import Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

HEADER = (
    "import json, os, sys, time\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import ApiResponse, HtmlFragment, Lead, Route, Widget\n\n\n"
    "class Plugin:\n"
)

ACME = Context(tenant="acme")
IN_PROCESS = SandboxPolicy(isolation=dict.fromkeys(SourceKind, Isolation.INPROCESS))
#: The breaker switched off: a test that counts failures must not lose its plugin.
NO_BREAKER = BreakerPolicy(consecutive_failures=0, failure_rate=0, call_budget=None)

both_modes = pytest.mark.parametrize("mode", ["sandboxed", "in-process"])
sandbox_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

HostMaker = Callable[..., PluginHost]


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def make_host(hosts: Hosts, tmp_path: Path) -> HostMaker:
    def make(
        mode: str = "sandboxed",
        *,
        breaker: BreakerPolicy = NO_BREAKER,
        storage: Storage | None = None,
        **policy: Any,
    ) -> PluginHost:
        if mode == "sandboxed" and not hasattr(os, "fork"):
            pytest.skip("the process sandbox needs fork")
        options: dict[str, Any] = {"timeout": 10.0} | policy
        sandbox = IN_PROCESS if mode == "in-process" else SandboxPolicy(**options)
        return cast(
            "PluginHost",
            hosts(
                storage=storage,
                plugins_dir=tmp_path / f"plugins-{len(hosts.made)}",
                sandbox=sandbox,
                breaker=breaker,
            ),
        )

    return make


def lead_created(host: PluginHost, services: FakeHostServices, tenant: str = "acme") -> None:
    lead = services.make_lead(tenant, name="Ada")
    host.hook.lead_created(lead=lead, context=Context(tenant=tenant))


def request(tenant: str = "acme", path: str = "/hello") -> ApiRequest:
    return ApiRequest(tenant=tenant, method="GET", path=path)


# -- 11: failure texts are bounded; a plugin failing one call in three is suspended -------------


HUGE = """
class {name}(Exception):
    pass

@hookimpl
def lead_created(self, lead):
    raise self.{name}("x" * 5_000_000)
"""


@both_modes
def test_a_huge_failure_is_recorded_and_logged_bounded(
    make_host: HostMaker,
    install: Installer,
    services: FakeHostServices,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    """A 5 MB message and a 5,000-character class name: the record and the log line are cut."""
    host = make_host(mode)
    install(host, "huge", HUGE.format(name="E" * 5000))
    with caplog.at_level(logging.ERROR, logger="services_ai_plugins.plugins.huge"):
        lead_created(host, services)
    [failure] = host.failures("huge")
    assert len(failure.exc_type) <= MAX_EXC_TYPE
    assert failure.exc_type.startswith("EEEE")
    assert len(failure.message) <= MAX_MESSAGE
    assert failure.message.startswith("xxxx")
    assert failure.message.endswith("characters]")
    assert "… [cut " in failure.message
    assert len(failure.traceback) <= MAX_TRACEBACK
    assert failure.traceback.startswith("… [cut ")
    [logged] = [r for r in caplog.records if r.name == "services_ai_plugins.plugins.huge"]
    text = logging.Formatter().format(logged)
    assert len(text) < MAX_MESSAGE + MAX_TRACEBACK + 2 * MAX_EXC_TYPE + 200
    assert "lead_created failed for tenant 'acme'" in text


EVERY_THIRD = """
def __init__(self):
    self.calls = 0

@hookimpl
def lead_created(self, lead):
    self.calls += 1
    if self.calls % 3 == 0:
        raise RuntimeError("every third call fails")
"""


@both_modes
def test_a_plugin_failing_one_call_in_three_is_suspended_by_the_default_breaker(
    make_host: HostMaker, install: Installer, services: FakeHostServices, mode: str
) -> None:
    """Never two failures in a row, but a third of its calls: the default failure rate trips."""
    host = make_host(mode, breaker=BreakerPolicy())
    install(host, "third", EVERY_THIRD, tenants=["acme", "globex"])
    for _ in range(45):
        lead_created(host, services)
    [suspension] = host.suspensions("third")
    assert suspension.tenant == "acme"
    assert "calls failed within 60 s" in suspension.reason
    lead_created(host, services, "globex")  # elsewhere it still runs
    assert host.metrics("third")[0].calls > 20


EVERY_TENTH = EVERY_THIRD.replace("% 3", "% 10")


def test_a_plugin_failing_one_call_in_ten_is_not_suspended(
    make_host: HostMaker, install: Installer, services: FakeHostServices
) -> None:
    """The default rate is not a hair trigger: 10% failures stay recorded, not suspended."""
    host = make_host("in-process", breaker=BreakerPolicy())
    install(host, "tenth", EVERY_TENTH)
    for _ in range(100):
        lead_created(host, services)
    assert host.suspensions() == []
    assert len(host.failures("tenth")) == 10


# -- 12: one unstorable failure stops no other ---------------------------------------------------


SURROGATE = """
@hookimpl
def lead_created(self, lead):
    raise ValueError("bad \\udc80 text \\x00 here")
"""

PLAIN_FAILURE = """
@hookimpl
def lead_created(self, lead):
    raise RuntimeError("an ordinary failure")
"""


@both_modes
def test_a_surrogate_in_a_failure_does_not_stop_other_failures_being_stored(
    make_host: HostMaker,
    install: Installer,
    services: FakeHostServices,
    tmp_path: Path,
    mode: str,
) -> None:
    """SQLite refuses lone surrogates: the record is made storable and every failure is kept."""
    storage = SQLiteStorage(tmp_path / "registry.db")
    try:
        host = make_host(mode, storage=storage)
        install(host, "surrogate", SURROGATE)
        install(host, "plain", PLAIN_FAILURE)
        lead_created(host, services)
        host.flush()
        plain = host.failures("plain")
        assert [f.message for f in plain] == ["an ordinary failure"]
        [bad] = host.failures("surrogate")
        assert "\udc80" not in bad.message
        assert "\x00" not in bad.message
        if mode == "in-process":
            assert bad.message == "bad ? text \ufffd here"
        lead_created(host, services)
        assert len(host.failures("plain")) == 2
    finally:
        host.close()
        storage.close()


def test_a_record_the_storage_refuses_is_stored_alone_or_dropped_never_retried_for_ever(
    *,
    make_host: HostMaker,
    install: Installer,
    services: FakeHostServices,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The flush's own defence: a batch SQLite refuses is stored record by record, repaired.

    Failure records are built storable; here one is built raw (as a future code
    path might), so the real encoding error of SQLite is hit at the flush.
    """
    built = _dispatch.failure_of

    def raw(plugin_id: str, error: BaseException, **kwargs: Any) -> FailureRecord:
        record = built(plugin_id, error, **kwargs)
        if plugin_id == "surrogate":
            return attrs.evolve(record, message=str(error))
        return record

    monkeypatch.setattr(_dispatch, "failure_of", raw)
    # The raw record's text would reach the plugin's log line too: keep it out of the
    # captured logs, which a parallel test run sends between processes as UTF-8.
    caplog.set_level(logging.CRITICAL, logger="services_ai_plugins.plugins.surrogate")
    storage = SQLiteStorage(tmp_path / "registry.db")
    try:
        host = make_host("in-process", storage=storage)
        install(host, "surrogate", SURROGATE)
        install(host, "plain", PLAIN_FAILURE)
        lead_created(host, services)
        with pytest.raises(Exception, match="surrogates not allowed"):
            storage.record_failures(host._dispatcher._pending)  # the batch is refused whole
        host.flush()
        assert [f.message for f in host.failures("plain")] == ["an ordinary failure"]
        [bad] = host.failures("surrogate")
        assert bad.message == "bad ? text \ufffd here"
        assert host._dispatcher.take_failures() == ([], 0)  # nothing left to retry
    finally:
        host.close()
        storage.close()


# -- 13: a plugin cannot claim another plugin's output -------------------------------------------


FORGER = """
@hookimpl
def dashboard_widget(self, context):
    return [
        Widget(tenant=context.tenant, title="mine", html="<p>mine</p>"),
        Widget(tenant=context.tenant, title="forged", html="<p>x</p>", plugin_id="victim"),
    ][self.which]

@hookimpl
def inject_head(self, context):
    return HtmlFragment(
        tenant=context.tenant, html="<script>x</script>", placement="head", plugin_id="victim"
    )

which = 1
"""

VICTIM = """
@hookimpl
def dashboard_widget(self, context):
    return Widget(tenant=context.tenant, title="real", html="<p>real</p>")
"""


@both_modes
def test_a_record_naming_another_plugin_as_its_maker_is_refused(
    make_host: HostMaker, install: Installer, mode: str
) -> None:
    """A forged plugin_id on a Widget or HtmlFragment: refused and recorded; the others stand."""
    host = make_host(mode)
    install(host, "forger", FORGER, permissions=["dashboard_widgets", "inject_html"])
    install(host, "victim", VICTIM, permissions=["dashboard_widgets"])
    widgets = host.hook.dashboard_widget(context=ACME)
    assert [(w.title, w.plugin_id) for w in widgets] == [("real", "victim")]
    assert host.hook.inject_head(context=ACME) == []
    failures = host.failures("forger")
    assert {f.hook for f in failures} == {"dashboard_widget", "inject_head"}
    assert all(f.exc_type == "ResultRefused" for f in failures)
    assert all("made by plugin 'victim'" in f.message for f in failures)
    assert host.failures("victim") == []


HONEST = """
@hookimpl
def dashboard_widget(self, context):
    return Widget(tenant=context.tenant, title="own", html="<p/>", plugin_id="honest")
"""


def test_a_record_naming_its_own_plugin_is_kept(make_host: HostMaker, install: Installer) -> None:
    host = make_host("in-process")
    install(host, "honest", HONEST, permissions=["dashboard_widgets"])
    [widget] = host.hook.dashboard_widget(context=ACME)
    assert widget.plugin_id == "honest"
    assert host.failures("honest") == []


# -- 19: records of another tenant are found at any depth ----------------------------------------


NESTED = """
@hookimpl
def filter_lead_data(self, data, context):
    other = Lead(id="l-9", tenant="globex", name="Their lead")
    return {**data, "notes": [{"deep": ("x", [other])}]}
"""

PASSER = """
@hookimpl
def filter_lead_data(self, data, context):
    return {**data, "seen": True}
"""


@both_modes
def test_a_record_of_another_tenant_nested_in_a_result_is_refused(
    make_host: HostMaker, install: Installer, mode: str
) -> None:
    """A Lead of globex deep down in a mapping, in a call for acme: refused, with its path."""
    host = make_host(mode)
    install(host, "nester", NESTED, permissions=["write_leads"])
    install(host, "passer", PASSER, permissions=["write_leads"])
    data = host.hook.filter_lead_data(data={"name": "Ada"}, context=ACME)
    assert data == {"name": "Ada", "seen": True}
    [failure] = host.failures("nester")
    assert failure.exc_type == "ResultRefused"
    assert "a record of tenant 'globex'" in failure.message
    assert "['notes'][0]['deep'][1][0]" in failure.message


def test_a_result_too_deep_to_check_is_refused(make_host: HostMaker, install: Installer) -> None:
    """Hiding a record below the walk's depth does not work: too deep is refused as such."""
    host = make_host("in-process")
    body = """
    @hookimpl
    def filter_lead_data(self, data, context):
        value = [Lead(id="l-9", tenant="globex", name="Their lead")]
        for _ in range(100):
            value = [value]
        return {**data, "deep": value}
    """
    install(host, "digger", body, permissions=["write_leads"])
    assert host.hook.filter_lead_data(data={"name": "Ada"}, context=ACME) == {"name": "Ada"}
    [failure] = host.failures("digger")
    assert "too deep for the host to check" in failure.message


# -- 14, 18: route handlers are guarded and their failures recorded ------------------------------


ROUTER = """
@hookimpl
def register_routes(self, plugin_id):
    def hello(request):
        return ApiResponse.json(request.tenant, {{"hello": request.tenant}})

    def boom(request):
        {boom}

    return [Route(path="/hello", handler=hello, name="hello"),
            Route(path="/boom", handler=boom, name="boom")]
"""


def routes(host: PluginHost, plugin_id: str = "router") -> dict[str, Route]:
    [mine] = [r for r in host.hook.register_routes() if r and r[0].handler.plugin_id == plugin_id]
    return {route.name: route for route in mine}


@sandbox_only
@pytest.mark.parametrize(
    ("boom", "error", "exc_type"),
    [
        ("raise KeyError('no such thing')", SandboxError, "KeyError"),
        ("os._exit(3)", WorkerCrashed, "WorkerCrashed"),
        ("time.sleep(60)", SandboxTimeout, "SandboxTimeout"),
    ],
)
def test_a_failing_route_handler_is_recorded_and_trips_the_breaker(
    make_host: HostMaker,
    install: Installer,
    boom: str,
    error: type[Exception],
    exc_type: str,
) -> None:
    """An exception, a crash, a time-out: each recorded as route:<name>; three suspend it."""
    host = make_host(breaker=BreakerPolicy(consecutive_failures=3), timeout=2.0)
    install(
        host,
        "router",
        ROUTER.format(boom=boom),
        permissions=["register_routes"],
        tenants=["acme", "globex"],
    )
    for attempt in range(3):
        handler = routes(host)["boom"].handler  # after a crash or a time-out: new handlers
        with pytest.raises(error):
            handler(request(path="/boom"))
        assert len(host.failures("router")) == attempt + 1
    failures = host.failures("router")
    assert {(f.hook, f.tenant, f.exc_type) for f in failures} == {("route:boom", "acme", exc_type)}
    [suspension] = host.suspensions("router")
    assert suspension.tenant == "acme"
    assert suspension.reason.startswith("route:boom: 3 consecutive failures")
    hello = routes(host)["hello"].handler
    assert hello(request()).status == 404  # suspended for acme: the handler does not run
    assert hello(request("globex")).status == 200  # still served where it is not


@sandbox_only
def test_a_route_answers_only_tenants_where_its_plugin_runs(
    make_host: HostMaker, install: Installer
) -> None:
    """Not enabled, disabled since, suspended: 404 and the handler never runs."""
    host = make_host()
    install(host, "router", ROUTER.format(boom="pass"), permissions=["register_routes"])
    hello = routes(host)["hello"].handler
    assert hello(request()).body == b'{"hello":"acme"}'
    refused = hello(request("globex"))
    assert (refused.status, refused.tenant) == (404, "globex")
    assert refused.body == b'{"error":"not found"}'
    host.suspend("router", actor="admin", reason="audit", tenant="acme")
    assert hello(request()).status == 404
    host.resume("router", actor="admin", tenant="acme")
    assert hello(request()).status == 200
    host.registry.disable("router", "acme", actor="admin")
    assert hello(request()).status == 404
    [metrics] = [m for m in host.metrics("router") if m.hook == "route:hello"]
    assert (metrics.calls, metrics.errors) == (2, 0)  # the refused requests never reached it


def test_an_in_process_route_handler_failure_is_recorded_and_raised(
    make_host: HostMaker, install: Installer
) -> None:
    """In the host's process too: the adapter gets the plugin's own exception, once recorded."""
    host = make_host("in-process", breaker=BreakerPolicy(consecutive_failures=2))
    body = ROUTER.format(boom="raise KeyError('no such thing')")
    install(host, "router", body, permissions=["register_routes"])
    boom = routes(host)["boom"].handler
    for _ in range(2):
        with pytest.raises(KeyError, match="no such thing"):
            boom(request(path="/boom"))
    failures = host.failures("router")
    assert [(f.hook, f.tenant, f.exc_type) for f in failures] == [
        ("route:boom", "acme", "KeyError")
    ] * 2
    assert "raise KeyError" in failures[0].traceback  # the plugin's frame, not the guard's
    assert "_dispatch.py" not in failures[0].traceback
    assert [s.tenant for s in host.suspensions("router")] == ["acme"]
    assert boom(request(path="/boom")).status == 404


@both_modes
def test_a_route_handler_answering_for_another_tenant_is_refused(
    make_host: HostMaker, install: Installer, mode: str
) -> None:
    host = make_host(mode)
    install(
        host,
        "router",
        ROUTER.format(boom="return ApiResponse(tenant='globex', status=200)"),
        permissions=["register_routes"],
    )
    with pytest.raises(ResultRefused, match="a response for tenant 'globex'"):
        routes(host)["boom"].handler(request(path="/boom"))
    [failure] = host.failures("router")
    assert (failure.hook, failure.tenant) == ("route:boom", "acme")
    assert failure.exc_type == "ResultRefused"


def test_a_route_handler_takes_an_api_request_only(
    make_host: HostMaker, install: Installer
) -> None:
    """The guard needs the tenant the request carries; the plugin's own view stays reachable."""
    host = make_host("in-process")
    install(host, "router", ROUTER.format(boom="pass"), permissions=["register_routes"])
    route = routes(host)["hello"]
    with pytest.raises(TypeError, match="takes an ApiRequest, not a dict"):
        route.handler({"tenant": "acme"})  # type: ignore[arg-type]
    assert isinstance(route.handler.view(request()), ApiResponse)  # type: ignore[attr-defined]


def test_routes_a_plugin_cannot_describe_are_refused(
    make_host: HostMaker, install: Installer
) -> None:
    body = """
    @hookimpl
    def register_routes(self, plugin_id):
        return "not routes"
    """
    host = make_host("in-process")
    install(host, "router", body, permissions=["register_routes"])
    assert host.hook.register_routes() == []
    [failure] = host.failures("router")
    assert failure.exc_type == "ResultRefused"
    assert "register_routes returned str" in failure.message


# -- 20: slow calls count as failures; a hook call has a time budget -----------------------------


SLOW = """
@hookimpl
def lead_created(self, lead):
    time.sleep(0.9)
"""


@both_modes
def test_a_plugin_always_just_inside_its_time_limit_is_suspended(
    make_host: HostMaker, install: Installer, services: FakeHostServices, mode: str
) -> None:
    """Every call over 80% of a 1 s limit (sandbox: its 10 s time-out is not the nearest)."""
    breaker = BreakerPolicy(consecutive_failures=3, time_limits={"lead_created": 1.0})
    host = make_host(mode, breaker=breaker)
    install(host, "slow", SLOW)
    install(host, "quick", PLAIN_FAILURE.replace("raise RuntimeError", "return None #"))
    for _ in range(3):
        lead_created(host, services)
    failures = host.failures("slow")
    assert [f.exc_type for f in failures] == ["SlowCall"] * 3
    assert "over 80% of its 1 s time limit" in failures[0].message
    [suspension] = host.suspensions()
    assert (suspension.plugin_id, suspension.tenant) == ("slow", "acme")
    assert host.failures("quick") == []


@sandbox_only
def test_the_time_limit_of_a_sandboxed_call_is_its_time_out(
    make_host: HostMaker, install: Installer, services: FakeHostServices
) -> None:
    """Without a configured limit, a sandboxed call is slow past 80% of the sandbox's time-out."""
    host = make_host(breaker=BreakerPolicy(), timeout=4.0)
    install(host, "any", PLAIN_FAILURE.replace("raise RuntimeError", "return None #"))
    lead_created(host, services)
    assert host._dispatcher._stats["any", "lead_created"].slow_ns == int(0.8 * 4.0 * 1e9)
    local = make_host("in-process", breaker=BreakerPolicy())
    install(local, "local", PLAIN_FAILURE.replace("raise RuntimeError", "return None #"))
    lead_created(local, services)
    assert local._dispatcher._stats["local", "lead_created"].slow_ns == _dispatch.NEVER


HOG = """
@hookimpl(tryfirst=True)
def lead_created(self, lead):
    time.sleep(1.2)
"""

COUNTER = """
@hookimpl
def lead_created(self, lead, api):
    api.store_set("ran", True)
"""


@both_modes
def test_a_hook_call_over_its_budget_skips_the_rest_and_records_it(
    make_host: HostMaker, install: Installer, services: FakeHostServices, mode: str
) -> None:
    """A 1.2 s plugin first against a 1 s budget: the two after it are not called; it is said."""
    host = make_host(mode, breaker=BreakerPolicy(call_budget=1.0))
    install(host, "hog", HOG)
    install(host, "after-1", COUNTER)
    install(host, "after-2", COUNTER)
    trace = host.trace_hook("lead_created", lead=services.make_lead("acme"), context=ACME)
    assert trace.ran == ("hog",)
    assert services.stored("acme", "after-1") == services.stored("acme", "after-2") == {}
    [failure] = host.failures("hog")
    assert failure.exc_type == "CallBudgetExceeded"
    assert "over its budget of 1 s" in failure.message
    skipped = failure.message.rsplit("not called: ", 1)[1]
    assert sorted(skipped.split(", ")) == ["after-1", "after-2"]
    assert host.suspensions() == []  # the budget is no failure of theirs


def test_without_a_budget_every_plugin_runs(
    make_host: HostMaker, install: Installer, services: FakeHostServices
) -> None:
    host = make_host("in-process", breaker=BreakerPolicy(call_budget=None))
    install(host, "hog", HOG)
    install(host, "after-1", COUNTER)
    trace = host.trace_hook("lead_created", lead=services.make_lead("acme"), context=ACME)
    assert trace.ran == ("hog", "after-1")
    assert host.failures() == []
