"""PluginHost and its call loop: tenants, isolation, injection, hook kinds, metrics, breaker."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Installer
from services_ai_plugins import (
    BreakerPolicy,
    MemoryStorage,
    PluginHost,
    PluginStatus,
    SandboxPolicy,
    SQLiteStorage,
    hookimpl,
)
from services_ai_plugins._dispatch import RouteGuard
from services_ai_plugins._storage._protocol import MetricsDelta
from services_ai_plugins.events import Context, Email, Lead, User
from services_ai_plugins.storage import SourceKind, Storage
from services_ai_plugins.tooling import example
from services_ai_plugins.types import Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

HEADER = (
    "import attrs\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins._examples import example\n"
    "from services_ai_plugins.events import User\n\n\n"
    "class Plugin:\n"
)


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def services() -> FakeHostServices:
    return FakeHostServices()


HostFactory = Callable[..., PluginHost]

#: Every source in this process.
IN_PROCESS = SandboxPolicy(isolation=dict.fromkeys(SourceKind, Isolation.INPROCESS))


@pytest.fixture
def make_host(tmp_path: Path, services: FakeHostServices) -> Iterator[HostFactory]:
    hosts: list[PluginHost] = []

    def make(storage: Storage | None = None, **options: Any) -> PluginHost:
        # These tests look at plugin objects: every plugin runs in this process here
        # (test_sandbox.py runs them in workers).
        options.setdefault("sandbox", IN_PROCESS)
        host = PluginHost(
            services,
            storage=storage if storage is not None else MemoryStorage(),
            plugins_dir=tmp_path / "plugins",
            entry_points=False,
            **options,
        )
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.close()


def lead(tenant: str = "acme") -> Lead:
    return attrs.evolve(example(Lead), tenant=tenant)


RECORDING = """
def __init__(self):
    self.seen = []

@hookimpl
def lead_created(self, lead, context, api):
    self.seen.append((lead.id, context.tenant, api.plugin_id, api.tenant))
"""


# -- tenants and isolation -----------------------------------------------------------------------


def test_one_plugin_raising_does_not_stop_the_others(
    make_host: HostFactory, install: Installer
) -> None:
    """The failing plugin is recorded; the plugins before and after it still run."""
    host = make_host()
    install(host, "alpha", RECORDING)
    install(host, "bravo", "@hookimpl\ndef lead_created(self, lead):\n    raise KeyError('nope')\n")
    install(host, "charlie", RECORDING)
    trace = host.trace_hook("lead_created", lead=lead(), context=Context(tenant="acme"))
    outcome = {o.plugin_id: o for o in trace.outcomes}
    assert set(outcome) == {"alpha", "bravo", "charlie"}
    assert outcome["bravo"].failure is not None
    assert outcome["bravo"].failure.exc_type == "KeyError"
    assert outcome["alpha"].failure is None
    assert outcome["charlie"].failure is None
    plugins = host.plugins()
    assert len(plugins["alpha"].seen) == len(plugins["charlie"].seen) == 1  # type: ignore[attr-defined]
    [failure] = host.failures("bravo")
    assert (failure.tenant, failure.hook, failure.exc_type) == ("acme", "lead_created", "KeyError")
    assert "raise KeyError('nope')" in failure.traceback
    assert "_dispatch.py" not in failure.traceback.splitlines()[1]


def test_a_tenants_events_never_reach_plugins_enabled_only_elsewhere(
    make_host: HostFactory, install: Installer
) -> None:
    """acme's calls run acme's plugins only, with APIs bound to acme; globex's likewise."""
    host = make_host()
    install(host, "only-acme", RECORDING, tenants=["acme"])
    install(host, "only-globex", RECORDING, tenants=["globex"])
    install(host, "both", RECORDING, tenants=["acme", "globex"])
    host.hook.lead_created(lead=lead("acme"), context=Context(tenant="acme"))
    host.hook.lead_created(lead=lead("globex"), context=Context(tenant="globex"))
    host.hook.lead_created(lead=lead("initech"), context=Context(tenant="initech"))
    seen = {pid: p.seen for pid, p in host.plugins().items()}  # type: ignore[attr-defined]
    assert [s[1:] for s in seen["only-acme"]] == [("acme", "only-acme", "acme")]
    assert [s[1:] for s in seen["only-globex"]] == [("globex", "only-globex", "globex")]
    assert [s[1] for s in seen["both"]] == ["acme", "globex"]


def test_each_implementation_gets_its_own_api_grants_and_settings(
    make_host: HostFactory, install: Installer, services: FakeHostServices
) -> None:
    """Two plugins in one call: each api is its own, with its own grants and settings."""
    host = make_host()
    body = """
    @hookimpl
    def lead_created(self, lead, api, settings):
        self.got = (api.plugin_id, api.has_permission("send_notifications"), dict(settings))
        self.asked = api.get_settings()
        if api.has_permission("send_notifications"):
            api.send_notification(settings["greeting"] + " " + lead.name)
    """
    greeting = [{"name": "greeting", "type": "string", "default": "Hello"}]
    install(host, "notifier", body, permissions=["read_leads", "send_notifications"],
            settings=greeting)  # fmt: skip
    install(host, "reader", body, settings=greeting)
    host.registry.set_settings("notifier", "acme", {"greeting": "Welcome"}, actor="admin")
    host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
    plugins = host.plugins()
    assert plugins["notifier"].got == ("notifier", True, {"greeting": "Welcome"})  # type: ignore[attr-defined]
    assert plugins["reader"].got == ("reader", False, {"greeting": "Hello"})  # type: ignore[attr-defined]
    assert plugins["notifier"].asked == {"greeting": "Welcome"}  # type: ignore[attr-defined]
    assert plugins["reader"].asked == {"greeting": "Hello"}  # type: ignore[attr-defined]
    assert [n.message for n in services.sent_notifications] == ["Welcome " + lead().name]


def test_settings_given_to_a_plugin_are_read_only(
    make_host: HostFactory, install: Installer
) -> None:
    """A plugin cannot change the settings snapshot other calls receive."""
    host = make_host()
    install(
        host, "mutator", "@hookimpl\ndef lead_created(self, settings):\n    settings['x'] = 1\n"
    )
    trace = host.trace_hook("lead_created", lead=lead(), context=Context(tenant="acme"))
    [outcome] = trace.outcomes
    assert outcome.failure is not None
    assert outcome.failure.exc_type == "TypeError"


def test_a_plugin_without_the_hooks_permission_is_not_called(
    make_host: HostFactory, install: Installer
) -> None:
    """lead_created carries a lead: a plugin without read_leads never receives it."""
    host = make_host()
    install(host, "reader", RECORDING)
    install(host, "blind", RECORDING, permissions=["send_notifications"])
    host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
    plugins = host.plugins()
    assert len(plugins["reader"].seen) == 1  # type: ignore[attr-defined]
    assert plugins["blind"].seen == []  # type: ignore[attr-defined]


def test_api_context_is_the_running_calls_context(
    make_host: HostFactory, install: Installer
) -> None:
    """api.context is the call's context during the call, and None once it is over."""
    host = make_host()
    install(
        host,
        "keeper",
        "@hookimpl\ndef lead_created(self, api):\n"
        "    self.api = api\n"
        "    self.during = api.context\n",
    )
    context = Context(tenant="acme", request_id="req-1")
    host.hook.lead_created(lead=lead(), context=context)
    keeper = host.plugins()["keeper"]
    assert keeper.during is context  # type: ignore[attr-defined]
    assert keeper.api.context is None  # type: ignore[attr-defined]


def test_hooks_without_a_tenant_run_for_every_approved_plugin(
    make_host: HostFactory, install: Installer
) -> None:
    """register_routes: every approved plugin with the permission, its own id injected.

    What each returned is handed on as Route records (tuples normalised), each
    handler guarded by the host.
    """
    host = make_host()
    body = """
    @hookimpl
    def register_routes(self, plugin_id, api):
        return [("stats/", print, plugin_id + ":" + str(api.tenant))]
    """
    install(host, "web", body, permissions=["register_routes"], tenants=[])
    install(host, "web2", body, permissions=["register_routes"], tenants=["acme"])
    install(host, "noperm", body, permissions=[], tenants=["acme"])
    install(host, "pending", body, permissions=["register_routes"], approve=False)
    routes = host.hook.register_routes()
    assert sorted(r[0].name for r in routes) == ["web2:None", "web:None"]
    assert all(isinstance(r[0].handler, RouteGuard) and r[0].handler.view is print for r in routes)


# -- hook kinds ----------------------------------------------------------------------------------


OWNER = """
def __init__(self):
    self.asked = 0

@hookimpl{options}
def resolve_lead_owner(self, lead, context):
    self.asked += 1
    return {answer}
"""


def test_first_result_stops_at_the_first_answer_in_pluggys_order(
    make_host: HostFactory, install: Installer
) -> None:
    """tryfirst runs first; None passes; the first answer wins and the rest are not asked."""
    host = make_host()
    perms = ["read_leads", "read_users"]
    user = "attrs.evolve(example(User), tenant=context.tenant, id='{}')"
    install(
        host, "abstains", OWNER.format(options="(tryfirst=True)", answer="None"), permissions=perms
    )
    install(host, "answers", OWNER.format(options="", answer=user.format("ada")), permissions=perms)
    install(
        host,
        "late",
        OWNER.format(options="(trylast=True)", answer=user.format("bob")),
        permissions=perms,
    )
    owner = host.hook.resolve_lead_owner(lead=lead(), context=Context(tenant="acme"))
    assert isinstance(owner, User)
    assert owner.id == "ada"
    asked = {pid: p.asked for pid, p in host.plugins().items()}  # type: ignore[attr-defined]
    assert asked == {"abstains": 1, "answers": 1, "late": 0}


def test_a_first_result_of_another_tenant_is_refused_and_the_next_plugin_asked(
    make_host: HostFactory, install: Installer
) -> None:
    """A user of globex offered in acme's call is dropped and recorded as a failure."""
    host = make_host()
    perms = ["read_leads", "read_users"]
    bad = "attrs.evolve(example(User), tenant='globex')"
    good = bad.replace("tenant='globex'", "tenant=context.tenant")
    install(host, "leaky", OWNER.format(options="(tryfirst=True)", answer=bad), permissions=perms)
    install(host, "honest", OWNER.format(options="", answer=good), permissions=perms)
    owner = host.hook.resolve_lead_owner(lead=lead(), context=Context(tenant="acme"))
    assert owner.tenant == "acme"
    [failure] = host.failures("leaky")
    assert failure.exc_type == "ResultRefused"
    assert "globex" in failure.message


FILTER = """
@hookimpl{options}
def filter_email(self, email):
    return {result}
"""


def test_filters_chain_in_order_and_none_or_a_refused_value_passes_the_value_on(
    make_host: HostFactory, install: Installer
) -> None:
    """Each filter gets the previous one's value; None and a wrong type leave it unchanged."""
    host = make_host()
    perms = ["send_email"]
    install(
        host,
        "first",
        FILTER.format(
            options="(tryfirst=True)", result="attrs.evolve(email, body=email.body + ' [1]')"
        ),
        permissions=perms,
    )
    install(host, "passes", FILTER.format(options="", result="None"), permissions=perms)
    install(host, "wrong", FILTER.format(options="", result="'not an email'"), permissions=perms)
    install(
        host,
        "last",
        FILTER.format(
            options="(trylast=True)", result="attrs.evolve(email, body=email.body + ' [2]')"
        ),
        permissions=perms,
    )
    email = attrs.evolve(example(Email), tenant="acme", body="Hi")
    result = host.hook.filter_email(email=email, context=Context(tenant="acme"))
    assert isinstance(result, Email)
    assert result.body == "Hi [1] [2]"
    assert email.body == "Hi"
    [failure] = host.failures("wrong")
    assert failure.exc_type == "ResultRefused"
    assert "Email" in failure.message


def test_collect_gathers_the_results_that_are_not_none(
    make_host: HostFactory, install: Installer
) -> None:
    """dashboard_widget: one result per plugin that answered, in call order."""
    host = make_host()
    perms = ["dashboard_widgets"]
    install(
        host, "aaa", "@hookimpl\ndef dashboard_widget(self):\n    return 'A'\n", permissions=perms
    )
    install(
        host, "bbb", "@hookimpl\ndef dashboard_widget(self):\n    return None\n", permissions=perms
    )
    install(
        host,
        "ccc",
        "@hookimpl(tryfirst=True)\ndef dashboard_widget(self):\n    return 'C'\n",
        permissions=perms,
    )
    assert host.call_hook("dashboard_widget", context=Context(tenant="acme")) == ["C", "A"]
    assert host.hook.lead_created(lead=lead(), context=Context(tenant="acme")) is None


def test_wrong_arguments_are_the_callers_error_not_a_plugins(
    make_host: HostFactory, install: Installer
) -> None:
    """Missing or unknown arguments and a bad context raise TypeError; unknown hooks KeyError."""
    host = make_host()
    install(host, "alpha", RECORDING)
    with pytest.raises(TypeError, match="missing lead"):
        host.hook.lead_created(context=Context(tenant="acme"))
    with pytest.raises(TypeError, match="unknown colour"):
        host.hook.lead_created(lead=lead(), context=Context(tenant="acme"), colour="red")
    with pytest.raises(TypeError, match="needs context=Context"):
        host.hook.lead_created(lead=lead(), context="acme")
    with pytest.raises(KeyError, match="lead_created"):
        host.call_hook("lead_create", lead=lead(), context=Context(tenant="acme"))
    with pytest.raises(AttributeError, match="lead_created"):
        host.hook.lead_create  # noqa: B018
    assert host.failures() == []


def test_strict_mode_raises_the_plugins_exception_once_recorded(
    make_host: HostFactory, install: Installer
) -> None:
    """strict=True: the host caller sees the exception; the failure is still recorded."""
    host = make_host(strict=True)
    install(host, "bad", "@hookimpl\ndef lead_created(self):\n    raise ValueError('strict')\n")
    with pytest.raises(ValueError, match="strict"):
        host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
    assert [f.message for f in host.failures("bad")] == ["strict"]


# -- loading -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("@hookimpl(hookwrapper=True)\ndef lead_created(self):\n    yield\n", "may not wrap"),
        ("@hookimpl\ndef lead_exploded(self):\n    pass\n", "no such hook"),
        ("@hookimpl\ndef plugin_suspended(self, plugin_id):\n    pass\n", "only the host"),
        ("@hookimpl\ndef lead_created(self, lead, colour):\n    pass\n", "colour"),
    ],
)
def test_plugins_whose_hooks_are_refused_do_not_load(
    make_host: HostFactory, install: Installer, body: str, problem: str
) -> None:
    """Wrappers, unknown hooks, host-only hooks and unknown arguments: refused and recorded."""
    host = make_host()
    install(host, "odd", body)
    install(host, "fine", RECORDING)
    host.refresh()
    assert set(host.plugins()) == {"fine"}
    [failure] = host.failures("odd")
    assert failure.hook == "load"
    assert problem in failure.message
    assert "services_ai_plugins.loaded.odd" not in sys.modules


def test_a_changed_file_is_detected_before_import(
    make_host: HostFactory, install: Installer, tmp_path: Path
) -> None:
    """One byte changed in an installed plugin: not loaded, suspended, recorded."""
    host = make_host()
    install(host, "alpha", RECORDING)
    host.close()
    main = next((tmp_path / "plugins" / "alpha").rglob("main.py"))
    main.write_text(main.read_text() + "#")
    second = make_host(storage=host.registry.storage)
    assert second.plugins() == {}
    assert second.registry.plugin("alpha").status is PluginStatus.SUSPENDED
    assert [f.exc_type for f in second.failures("alpha")] == ["IntegrityError"]


def test_call_order_does_not_depend_on_when_plugins_were_approved(
    make_host: HostFactory, install: Installer
) -> None:
    """A plugin approved later takes its place in load order, as in a freshly started host."""
    host = make_host()
    body = "@hookimpl\ndef dashboard_widget(self, api):\n    return api.plugin_id\n"
    perms = ["dashboard_widgets"]
    install(host, "mike", body, permissions=perms)
    install(host, "alpha", body, permissions=perms, approve=False)
    context = Context(tenant="acme")
    assert host.call_hook("dashboard_widget", context=context) == ["mike"]
    host.registry.approve("alpha", actor="admin")
    host.registry.enable("alpha", "acme", actor="admin")
    late = host.call_hook("dashboard_widget", context=context)
    fresh = make_host(storage=host.registry.storage).call_hook("dashboard_widget", context=context)
    assert late == fresh
    assert sorted(late) == ["alpha", "mike"]


# -- snapshot refresh across processes -------------------------------------------------------------

SECOND_PROCESS = """
import sys
from services_ai_plugins import Registry, SQLiteStorage
storage = SQLiteStorage(sys.argv[1])
registry = Registry(storage)
registry.approve("alpha", actor="other-process")
registry.enable("alpha", "acme", actor="other-process")
storage.close()
"""


def test_an_approval_written_by_another_process_is_picked_up_without_restart(
    make_host: HostFactory, install: Installer, tmp_path: Path
) -> None:
    """Another process approves and enables; the running host sees it at its next refresh."""
    host = make_host(storage=SQLiteStorage(tmp_path / "registry.db"), refresh_interval=0)
    install(host, "alpha", RECORDING, approve=False)
    host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
    assert host.plugins() == {}
    subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS, str(tmp_path / "registry.db")], check=True
    )
    host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
    assert len(host.plugins()["alpha"].seen) == 1  # type: ignore[attr-defined]


def test_changes_through_the_hosts_registry_apply_at_once(
    make_host: HostFactory, install: Installer
) -> None:
    """Even with a long refresh interval, the host's own registry changes apply to the next call."""
    host = make_host(refresh_interval=3600)
    install(host, "alpha", RECORDING)
    host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
    host.registry.disable("alpha", "acme", actor="admin")
    host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
    assert len(host.plugins()["alpha"].seen) == 1  # type: ignore[attr-defined]


# -- metrics -------------------------------------------------------------------------------------


class CountingStorage:
    """Memory storage that counts the metric and failure batches it is handed."""

    def __init__(self) -> None:
        self.inner = MemoryStorage()
        self.metric_batches: list[list[MetricsDelta]] = []
        self.failure_batches = 0
        self.generation_reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def record_metrics(self, deltas: Sequence[MetricsDelta]) -> None:
        self.metric_batches.append(list(deltas))
        self.inner.record_metrics(deltas)

    def record_failures(self, failures: Sequence[Any]) -> None:
        self.failure_batches += 1
        self.inner.record_failures(failures)

    def generation(self) -> int:
        self.generation_reads += 1
        return self.inner.generation()


def test_metrics_are_counted_per_plugin_and_hook_and_flushed_in_batches(
    make_host: HostFactory, install: Installer
) -> None:
    """100 calls write nothing until a flush; then one batch with the totals."""
    storage = CountingStorage()
    host = make_host(storage=cast("Storage", storage), flush_interval=3600)
    install(host, "alpha", RECORDING)
    install(host, "bad", "@hookimpl\ndef lead_created(self):\n    raise OSError('down')\n",
            permissions=["read_leads"])  # fmt: skip
    for _ in range(4):  # "bad" fails 4 times: one short of the breaker's default
        host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
    for _ in range(96):
        host.hook.lead_created(lead=lead("globex"), context=Context(tenant="globex"))
    assert storage.metric_batches == []
    assert storage.failure_batches == 0
    host.flush()
    [batch] = storage.metric_batches
    totals = {(d.plugin_id, d.hook): (d.calls, d.errors) for d in batch}
    assert totals == {("alpha", "lead_created"): (4, 0), ("bad", "lead_created"): (4, 4)}
    assert storage.failure_batches == 1
    host.flush()
    assert len(storage.metric_batches) == 1  # nothing new: nothing written
    [alpha] = host.metrics("alpha")
    assert alpha.calls == 4
    assert alpha.total_duration >= alpha.max_duration > 0


# -- the circuit breaker --------------------------------------------------------------------------


class Listener:
    def __init__(self) -> None:
        self.heard: list[tuple[str, str | None, str]] = []

    @hookimpl
    def plugin_suspended(self, plugin_id: str, reason: str, tenant: str | None) -> None:
        self.heard.append((plugin_id, tenant, reason))


FLAKY = """
def __init__(self):
    self.fail = True

@hookimpl
def lead_created(self, lead):
    if self.fail:
        raise RuntimeError("flaky")
"""


def test_the_breaker_suspends_after_n_consecutive_failures_and_an_admin_resumes(
    make_host: HostFactory, install: Installer
) -> None:
    """5 failures in a row suspend the plugin for the tenant, with audit and notice."""
    host = make_host()
    listener = Listener()
    host.add_listener(listener)
    install(host, "flaky", FLAKY, tenants=["acme", "globex"])
    install(host, "steady", RECORDING)
    acme = Context(tenant="acme")
    for _ in range(4):
        host.hook.lead_created(lead=lead(), context=acme)
    assert host.suspensions() == []
    host.hook.lead_created(lead=lead(), context=acme)
    [suspension] = host.suspensions()
    assert (suspension.plugin_id, suspension.tenant, suspension.by) == (
        "flaky",
        "acme",
        "circuit-breaker",
    )
    assert "5 consecutive failures" in suspension.reason
    assert listener.heard == [("flaky", "acme", suspension.reason)]
    assert host.registry.audit_log(plugin_id="flaky", action="suspend")[0].tenant == "acme"
    trace = host.trace_hook("lead_created", lead=lead(), context=acme)
    assert [o.plugin_id for o in trace.outcomes] == ["steady"]
    globex = host.trace_hook("lead_created", lead=lead("globex"), context=Context(tenant="globex"))
    assert [o.plugin_id for o in globex.outcomes] == ["flaky"]  # still runs elsewhere
    host.plugins()["flaky"].fail = False  # type: ignore[attr-defined]
    host.resume("flaky", actor="admin", tenant="acme")
    assert host.suspensions() == []
    trace = host.trace_hook("lead_created", lead=lead(), context=acme)
    assert sorted(o.plugin_id for o in trace.outcomes) == ["flaky", "steady"]


def test_a_success_resets_the_consecutive_count(make_host: HostFactory, install: Installer) -> None:
    """Failures separated by successes never trip the consecutive rule."""
    host = make_host(breaker=BreakerPolicy(consecutive_failures=3, failure_rate=0))
    install(host, "flaky", FLAKY)
    flaky = host.plugins()["flaky"]
    for _ in range(10):
        for fail in (True, True, False):
            flaky.fail = fail  # type: ignore[attr-defined]
            host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
    assert host.suspensions() == []
    assert len(host.failures("flaky")) == 20


def test_a_failure_rate_in_a_window_trips_the_breaker(
    make_host: HostFactory, install: Installer
) -> None:
    """Every other call failing: never 3 in a row, but over 50% of 10+ calls in the window.

    The window opens with the first failure, so the successes before it do not count.
    """
    policy = BreakerPolicy(consecutive_failures=3, failure_rate=0.5, min_calls=10, window=60)
    host = make_host(breaker=policy)
    install(host, "flaky", FLAKY)
    flaky = host.plugins()["flaky"]
    for number in range(11):
        flaky.fail = number % 2 == 1  # type: ignore[attr-defined]
        host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
    assert host.suspensions() == []  # 5 of 9 calls since the window opened: too few calls
    flaky.fail = True  # type: ignore[attr-defined]
    host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
    [suspension] = host.suspensions()
    assert "6 of 11 calls failed" in suspension.reason


def test_failing_for_several_tenants_suspends_everywhere(
    make_host: HostFactory, install: Installer
) -> None:
    """Tripped for 3 tenants (the default): the plugin is suspended as a whole."""
    host = make_host()
    tenants = ["t1", "t2", "t3", "t4"]
    install(host, "flaky", FLAKY, tenants=tenants)
    for tenant in tenants[:3]:
        for _ in range(5):
            host.hook.lead_created(lead=lead(tenant), context=Context(tenant=tenant))
    host.flush()  # the next tick applies the breaker's last trip
    assert host.registry.plugin("flaky").status is PluginStatus.SUSPENDED
    assert "flaky" not in host.plugins()
    trace = host.trace_hook("lead_created", lead=lead("t4"), context=Context(tenant="t4"))
    assert trace.outcomes == ()


@settings(max_examples=60, deadline=None)
@given(outcomes=st.lists(st.booleans(), min_size=1, max_size=30), limit=st.integers(1, 6))
def test_the_breaker_trips_exactly_at_the_first_run_of_n_failures(
    tmp_path_factory: pytest.TempPathFactory, outcomes: list[bool], limit: int
) -> None:
    """Property: with only the consecutive rule, suspended iff some run of failures reaches N."""
    root = tmp_path_factory.mktemp("breaker")
    host = PluginHost(
        FakeHostServices(),
        storage=MemoryStorage(),
        plugins_dir=root / "plugins",
        entry_points=False,
        breaker=BreakerPolicy(consecutive_failures=limit, failure_rate=0),
        sandbox=IN_PROCESS,
    )
    try:
        Installer(root, HEADER)(host, "flaky", FLAKY)
        flaky = host.plugins()["flaky"]
        tripped_at = None
        run = 0
        for number, fails in enumerate(outcomes):
            run = run + 1 if fails else 0
            if run >= limit and tripped_at is None:
                tripped_at = number
            flaky.fail = fails  # type: ignore[attr-defined]
            host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
        suspended = bool(host.suspensions())
        assert suspended == (tripped_at is not None)
        calls = sum(m.calls for m in host.metrics("flaky"))
        assert calls == (len(outcomes) if tripped_at is None else tripped_at + 1)
    finally:
        host.close()


# -- the dashboard -------------------------------------------------------------------------------


def test_the_dashboard_has_one_row_per_plugin_with_failures_metrics_and_suspensions(
    make_host: HostFactory, install: Installer
) -> None:
    """Everything an admin page needs, in one call; resolving failures clears them."""
    host = make_host()
    install(host, "flaky", FLAKY)
    install(host, "steady", RECORDING)
    for _ in range(5):
        host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
    rows = {row.plugin.id: row for row in host.dashboard(failures_per_plugin=2)}
    assert rows["flaky"].unresolved == 5
    assert len(rows["flaky"].failures) == 2
    assert rows["flaky"].errors == 5
    assert rows["flaky"].error_rate == 1.0
    assert [s.tenant for s in rows["flaky"].suspensions] == ["acme"]
    assert rows["steady"].calls == 5
    assert rows["steady"].error_rate == 0.0
    assert rows["steady"].suspensions == ()
    first = host.failures("flaky")[-1]
    assert host.resolve_failures("flaky", ids=[first.id]) == 1  # type: ignore[list-item]
    assert len(host.failures("flaky", resolved=False)) == 4
    assert host.resolve_failures("flaky") == 4
    assert host.dashboard()[0].unresolved == 0


# -- construction and sources --------------------------------------------------------------------


def test_a_host_needs_nothing_but_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, install: Installer
) -> None:
    """Defaults: the SQLite file and the plugins folder of the per-user data folder, never
    the working folder (see test_config.py for the rule)."""
    monkeypatch.delenv("SERVICES_AI_PLUGINS_DB", raising=False)
    monkeypatch.delenv("SERVICES_AI_PLUGINS_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    with PluginHost(FakeHostServices(), entry_points=False, sandbox=IN_PROCESS) as host:
        install(host, "alpha", RECORDING)
        host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
        assert len(host.plugins()["alpha"].seen) == 1  # type: ignore[attr-defined]
    folder = tmp_path / "data" / "services-ai-plugins"
    assert (folder / "services-ai-plugins.db").is_file()
    assert (folder / "plugins" / "alpha" / "1.0.0" / "main.py").is_file()
    assert list((tmp_path / "work").iterdir()) == []
    storage = SQLiteStorage(folder / "services-ai-plugins.db")
    try:
        [metrics] = storage.metrics("alpha")
    finally:
        storage.close()
    assert metrics.calls == 1


def test_pip_installed_plugins_are_discovered_and_run_once_approved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, services: FakeHostServices
) -> None:
    """An entry point in services_ai.plugins: pending at first, running when approved at once."""
    site = tmp_path / "site"
    info = site / "sai_host_test-2.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sai-host-test\nVersion: 2.0\n")
    (info / "entry_points.txt").write_text(
        "[services_ai.plugins]\nhost-test = sai_host_test:Plugin\n"
    )
    (site / "sai_host_test.py").write_text(
        HEADER
        + textwrap.indent(
            "manifest = {'name': 'Host Test', 'permissions': ['read_leads']}\n" + RECORDING,
            "    ",
        )
    )
    monkeypatch.syspath_prepend(str(site))
    storage = MemoryStorage()
    try:
        pending = PluginHost(services, storage=storage, plugins_dir=tmp_path / "plugins")
        assert pending.registry.plugin("host-test").status is PluginStatus.PENDING
        assert pending.plugins() == {}
        host = PluginHost(
            services, storage=storage, plugins_dir=tmp_path / "plugins", approve_entry_points=True
        )
        record = host.registry.plugin("host-test")
        assert record.status is PluginStatus.APPROVED
        assert record.version == "2.0"
        host.registry.enable("host-test", "acme", actor="admin")
        host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
        assert len(host.plugins()["host-test"].seen) == 1  # type: ignore[attr-defined]
    finally:
        sys.modules.pop("sai_host_test", None)


def test_listeners_receive_host_only_hooks_and_nothing_else(make_host: HostFactory) -> None:
    """add_listener refuses an object implementing a hook plugins receive."""
    host = make_host()

    class Nosy:
        @hookimpl
        def lead_created(self, lead: Lead) -> None:
            pass

    with pytest.raises(ValueError, match="lead_created"):
        host.add_listener(Nosy())
    name = host.add_listener(Listener(), name="alerts")
    assert name == "host:alerts"
    assert host.pm.get_plugin("host:alerts") is not None


def test_a_failing_listener_is_logged_not_suspended(
    make_host: HostFactory, install: Installer, caplog: pytest.LogCaptureFixture
) -> None:
    """The host's own listener raising never stops the suspension or the call."""
    host = make_host()

    class Broken:
        @hookimpl
        def plugin_suspended(self, plugin_id: str) -> None:
            raise RuntimeError("pager down")

    host.add_listener(Broken())
    install(host, "flaky", FLAKY)
    for _ in range(5):
        host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
    assert [s.plugin_id for s in host.suspensions()] == ["flaky"]
    assert "pager down" in caplog.text


def test_a_raising_filter_passes_the_value_on_unchanged(
    make_host: HostFactory, install: Installer
) -> None:
    """A filter that raises is skipped: the next one gets the value the raising one got."""
    host = make_host()
    perms = ["send_email"]
    install(
        host,
        "boom",
        "@hookimpl(tryfirst=True)\ndef filter_email(self, email):\n    raise RuntimeError('x')\n",
        permissions=perms,
    )
    install(
        host,
        "tags",
        FILTER.format(options="", result="attrs.evolve(email, body=email.body + '!')"),
        permissions=perms,
    )
    email = attrs.evolve(example(Email), tenant="acme", body="Hi")
    assert host.hook.filter_email(email=email, context=Context(tenant="acme")).body == "Hi!"


def test_a_caller_may_pass_an_injected_name_itself(
    make_host: HostFactory, install: Installer
) -> None:
    """Given by the caller, `api` is the caller's for every plugin (the host injects nothing)."""
    host = make_host()
    install(host, "keeper", "@hookimpl\ndef lead_created(self, api):\n    self.api = api\n")
    mine = object()
    host.hook.lead_created(lead=lead(), context=Context(tenant="acme"), api=mine)
    assert host.plugins()["keeper"].api is mine  # type: ignore[attr-defined]
    host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
    assert host.plugins()["keeper"].api.plugin_id == "keeper"  # type: ignore[attr-defined]


def test_calls_from_many_threads_lose_no_call_and_no_failure(
    make_host: HostFactory, install: Installer
) -> None:
    """4 threads x 200 calls: every implementation ran 800 times, 800 failures recorded."""
    import threading

    host = make_host(breaker=BreakerPolicy(consecutive_failures=0, failure_rate=0))
    counting = """
    def __init__(self):
        import threading
        self.lock = threading.Lock()
        self.count = 0

    @hookimpl
    def lead_created(self, lead):
        with self.lock:
            self.count += 1
    """
    install(host, "counter", counting)
    install(host, "bad", "@hookimpl\ndef lead_created(self):\n    raise ValueError('x')\n")
    # Loaded before the threads start: a thread calling while another one loads
    # newly approved plugins goes on with the snapshot it has (without them).
    host.refresh()

    def work() -> None:
        for _ in range(200):
            host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert host.plugins()["counter"].count == 800  # type: ignore[attr-defined]
    assert len(host.failures("bad", limit=1000)) == 800


def test_collected_results_name_their_plugin_and_html_text_becomes_a_fragment(
    make_host: HostFactory, install: Installer
) -> None:
    """inject_head: a str is wrapped in an HtmlFragment; records get their plugin_id filled."""
    from services_ai_plugins.events import HtmlFragment

    host = make_host()
    perms = ["inject_html"]
    install(
        host,
        "text",
        "@hookimpl\ndef inject_head(self):\n    return '<meta a>'\n",
        permissions=perms,
    )
    record = "HtmlFragment(tenant=context.tenant, html='<meta b>', placement='head')"
    install(
        host,
        "record",
        "@hookimpl\ndef inject_head(self, context):\n"
        "    from services_ai_plugins.events import HtmlFragment\n\n"
        f"    return {record}\n",
        permissions=perms,
    )
    fragments = host.hook.inject_head(context=Context(tenant="acme"))
    assert sorted((f.plugin_id, f.html) for f in fragments) == [
        ("record", "<meta b>"),
        ("text", "<meta a>"),
    ]
    assert all(isinstance(f, HtmlFragment) for f in fragments)
    assert all((f.tenant, f.placement) == ("acme", "head") for f in fragments)


def test_a_suspension_lifted_elsewhere_no_longer_counts_towards_everywhere(
    make_host: HostFactory, install: Installer
) -> None:
    """Tripped for t1, resumed through the registry; tripping for t2 stays a tenant suspension."""
    host = make_host(breaker=BreakerPolicy(consecutive_failures=1, tenants_for_global=2))
    install(host, "flaky", FLAKY, tenants=["t1", "t2"])
    host.hook.lead_created(lead=lead("t1"), context=Context(tenant="t1"))
    host.flush()  # the next tick applies the breaker's trip
    host.registry.resume("flaky", actor="admin", tenant="t1")
    host.hook.lead_created(lead=lead("t2"), context=Context(tenant="t2"))
    host.flush()  # the next tick applies the breaker's trip
    assert host.registry.plugin("flaky").status is PluginStatus.APPROVED
    assert [s.tenant for s in host.suspensions()] == ["t2"]


def test_a_hook_the_plugin_can_never_receive_is_reported_at_load(
    make_host: HostFactory, install: Installer, caplog: pytest.LogCaptureFixture
) -> None:
    """dashboard_widget without dashboard_widgets in the manifest: a warning names both."""
    host = make_host()
    install(
        host, "nowidget", "@hookimpl\ndef dashboard_widget(self):\n    return 'w'\n", permissions=[]
    )
    host.refresh()
    assert "nowidget" in host.plugins()
    assert "dashboard_widget" in caplog.text
    assert "dashboard_widgets" in caplog.text
    assert host.breaker == BreakerPolicy()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"time_limit": 0}, "time_limit must be None or seconds > 0"),
        ({"call_budget": -1.0}, "call_budget must be None or seconds > 0"),
        ({"time_limits": {"lead_created": 0}}, r"time_limits\['lead_created'\] must map"),
        ({"time_limits": {"lead_created": True}}, r"time_limits\['lead_created'\] must map"),
        ({"slow_share": 1.5}, "slow_share"),
    ],
)
def test_a_breaker_policy_refuses_bad_time_settings(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BreakerPolicy(**options)


def test_the_time_limit_of_a_call_is_the_nearest_one() -> None:
    """A hook's own limit, else the default one; a sandboxed call's never over its time-out."""
    policy = BreakerPolicy(time_limit=2.0, time_limits={"lead_created": 0.5})
    assert policy.limit("lead_created", None) == 0.5
    assert policy.limit("dashboard_widget", None) == 2.0
    assert policy.limit("dashboard_widget", 1.0) == 1.0
    assert BreakerPolicy().limit("dashboard_widget", None) is None
    assert BreakerPolicy().limit("dashboard_widget", 5.0) == 5.0
    assert policy.time_limits == {"lead_created": 0.5}
    assert policy == BreakerPolicy(time_limit=2.0, time_limits={"lead_created": 0.5})


def test_a_plugin_installed_with_a_relative_folder_loads_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, install: Installer
) -> None:
    """install with plugins_dir='plugins' records an absolute folder: another cwd still loads it."""
    monkeypatch.chdir(tmp_path)
    storage = MemoryStorage()
    options: dict[str, Any] = {"storage": storage, "entry_points": False, "plugins_dir": "plugins"}
    with PluginHost(FakeHostServices(), **options) as host:
        install(host, "alpha", RECORDING)
    assert Path(host.registry.plugin("alpha").package_path or "").is_absolute()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with PluginHost(FakeHostServices(), **options) as moved:
        assert set(moved.plugins()) == {"alpha"}


def test_a_plugin_that_exits_while_importing_is_a_load_failure(
    make_host: HostFactory, install: Installer
) -> None:
    """sys.exit() at import is recorded and refused; the host and the other plugins carry on."""
    host = make_host()
    install(host, "quitter", "import sys\nsys.exit(3)\n")
    install(host, "alpha", RECORDING)
    assert set(host.plugins()) == {"alpha"}
    [failure] = host.failures("quitter")
    assert (failure.hook, failure.exc_type) == ("load", "SystemExit")


class FeedStorage:
    """Memory storage with a change feed that the test fires by hand."""

    def __init__(self) -> None:
        self.inner = MemoryStorage()
        self.watchers: list[Callable[[], None]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        self.watchers.append(callback)
        return lambda: self.watchers.remove(callback)


def test_a_change_feed_makes_other_processes_changes_apply_at_the_next_call(
    make_host: HostFactory, install: Installer
) -> None:
    """With a feed, a change written elsewhere applies at once despite a long refresh interval."""
    from services_ai_plugins import Registry
    from services_ai_plugins.storage import ChangeFeed

    feed = FeedStorage()
    assert isinstance(feed, ChangeFeed)
    host = make_host(storage=cast("Storage", feed), refresh_interval=3600)
    install(host, "alpha", RECORDING, approve=False)
    host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
    elsewhere = Registry(feed.inner)  # another process's registry: this host's is not told
    elsewhere.approve("alpha", actor="other")
    elsewhere.enable("alpha", "acme", actor="other")
    host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
    assert host.plugins() == {}  # not told yet, and no polling for an hour
    for watcher in list(feed.watchers):
        watcher()
    host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
    assert len(host.plugins()["alpha"].seen) == 1  # type: ignore[attr-defined]
    host.close()
    assert feed.watchers == []


def test_hook_calls_do_not_query_the_storage_when_nothing_changed(
    make_host: HostFactory, install: Installer
) -> None:
    """1,000 calls within the refresh interval: the change counter is read at most once."""
    storage = CountingStorage()
    host = make_host(storage=cast("Storage", storage), refresh_interval=60, flush_interval=60)
    install(host, "alpha", RECORDING)
    host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))  # loads it
    before = storage.generation_reads
    for _ in range(1000):
        host.hook.lead_created(lead=lead(), context=Context(tenant="acme"))
    assert storage.generation_reads - before == 0
    assert len(host.plugins()["alpha"].seen) == 1001  # type: ignore[attr-defined]


# -- bounded caches of views and plans -----------------------------------------------------------

#: The Storage protocol's reads of activations, grants and settings.
TENANT_READS = frozenset({"enabled_plugins", "get_tenant"})


class ReadCounting:
    """A MemoryStorage that counts the calls of its reads of tenants' activations."""

    def __init__(self) -> None:
        self.inner = MemoryStorage()
        self.reads: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.inner, name)
        if name in TENANT_READS:

            def counted(*args: Any) -> Any:
                self.reads.append((name, args))
                return found(*args)

            return counted
        return found


def test_a_host_serving_10000_tenants_in_turn_reads_each_tenant_once(
    make_host: HostFactory, install: Installer
) -> None:
    """10,000 tenants called in turn, then again: the second round reads no activations.

    The bound: views and plans keep up to MAX_VIEWS / MAX_PLANS (16,384) tenants each,
    least recently used first out, so the first round reads each tenant once
    (``enabled_plugins`` plus one ``get_tenant`` per plugin enabled there) and the
    second round reads nothing while the snapshot stands.
    """
    storage = ReadCounting()
    host = make_host(storage, refresh_interval=3600, flush_interval=3600)
    tenants = [f"t{number}" for number in range(10_000)]
    install(host, "alpha", RECORDING, tenants=tenants[:20])
    install(host, "bravo", RECORDING, tenants=tenants[10:30])
    host.plugins()  # the tick after the installs: the snapshot stands from here on
    storage.reads.clear()
    for tenant in tenants:
        host.hook.lead_created(lead=lead(tenant), context=Context(tenant=tenant))
    first = len(storage.reads)
    assert first == len(tenants) + 20 + 20  # one per tenant, one per (plugin, tenant) enabled
    storage.reads.clear()
    for tenant in tenants:
        host.hook.lead_created(lead=lead(tenant), context=Context(tenant=tenant))
    assert storage.reads == []
    assert len(host.plugins()["alpha"].seen) == 40  # type: ignore[attr-defined]


def test_views_and_plans_drop_the_least_recently_used_tenant(
    make_host: HostFactory, install: Installer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bound of 100 plans: a tenant used again lately is kept; the one unused longest goes.

    (Views are bounded to 2 here, so every plan built reads the tenant again.)
    """
    from services_ai_plugins import _dispatch, _loading

    monkeypatch.setattr(_dispatch, "MAX_PLANS", 100)
    monkeypatch.setattr(_loading, "MAX_VIEWS", 2)
    storage = ReadCounting()
    host = make_host(storage, refresh_interval=3600, flush_interval=3600)
    install(host, "alpha", RECORDING, tenants=["t0", "t1"])
    host.plugins()

    def call(tenant: str) -> list[str]:
        storage.reads.clear()
        host.hook.lead_created(lead=lead(tenant), context=Context(tenant=tenant))
        return [name for name, args in storage.reads if args[-1] == tenant]

    for number in range(100):
        call(f"t{number}")
    assert call("t0") == []  # used again: the most recent now
    assert call("t100") == ["enabled_plugins"]  # the 101st: t1, unused longest, goes
    assert call("t0") == []
    assert call("t1") == ["enabled_plugins", "get_tenant"]  # read again
