"""Red-team cases: no tenant's data reaches another tenant; no worker's report is trusted.

Each hostile plugin is packed into a real archive, installed, approved and
enabled, and runs in real worker processes under every sandbox layer.
"""

from __future__ import annotations

import json
import logging
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import CliRunner, Hosts, Installer
from services_ai_plugins import (
    MemoryStorage,
    PluginHost,
    SandboxPolicy,
    SQLiteStorage,
    pack_plugin,
)
from services_ai_plugins.errors import WorkerCrashed
from services_ai_plugins.events import ApiRequest, Context
from services_ai_plugins_testing.fakes import FakeHostServices

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

HEADER = (
    "import json, os, struct\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import ApiResponse, Route, Widget\n\n"
    "KEPT = []\n\n\n"
    "class Plugin:\n"
)

HEALTHY = """
@hookimpl
def lead_created(self, lead, api):
    api.store_set("seen", (api.store_get("seen") or 0) + 1)
"""

#: A plugin enabled by a victim (acme) and by its publisher (evil): it keeps what it sees of
#: one tenant in module globals and its scratch folder, and shows what it finds on the other's
#: dashboard, in the other's store and on a route.
SNOOPER = """
@hookimpl
def lead_created(self, lead, api):
    KEPT.append(lead.name)
    with open(os.path.join(os.environ["TMPDIR"], "leads.txt"), "a") as stream:
        stream.write(lead.name + "\\n")
    api.store_set("pid", os.getpid())

def _found(self):
    folder = os.environ["TMPDIR"]
    path = os.path.join(folder, "leads.txt")
    on_disk = open(path).read().split() if os.path.exists(path) else []
    return {"globals": list(KEPT), "scratch": on_disk, "tmpdir": folder, "pid": os.getpid()}

@hookimpl
def dashboard_widget(self, context, api):
    found = self._found()
    api.store_set("found", found)
    return Widget(tenant=context.tenant, title="loot", html=json.dumps(found))

@hookimpl
def register_routes(self, plugin_id):
    def loot(request):
        found = dict(self._found(), tenant=request.tenant)
        return ApiResponse(tenant=request.tenant, status=200, body=json.dumps(found).encode())
    KEPT.append("routes asked in %d" % os.getpid())
    return [Route(path="/loot/", handler=loot, name="loot")]
"""


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def make_host(hosts: Hosts) -> Callable[..., PluginHost]:
    def make(storage: Any = None, **policy: Any) -> PluginHost:
        sandbox = SandboxPolicy(**{"timeout": 5.0} | policy)
        return cast("PluginHost", hosts(storage=storage, sandbox=sandbox))

    return make


def lead_for(host: PluginHost, services: FakeHostServices, tenant: str, name: str) -> None:
    lead = services.make_lead(tenant, name=name)
    host.hook.lead_created(lead=lead, context=Context(tenant=tenant))


# -- 3. a worker serves one tenant --------------------------------------------------------------


@pytest.fixture
def snooping(make_host: Callable[..., PluginHost], install: Installer) -> PluginHost:
    """A host running the snooper for its victim (acme) and its publisher (evil)."""
    host = make_host()
    install(
        host,
        "snooper",
        SNOOPER,
        permissions=("read_leads", "dashboard_widgets", "register_routes"),
        tenants=("acme", "evil"),
    )
    return host


def test_a_plugin_enabled_by_two_tenants_cannot_carry_one_tenants_data_to_the_other(
    snooping: PluginHost, services: FakeHostServices
) -> None:
    """Module globals and the scratch folder of acme's worker are not there in evil's."""
    host = snooping
    lead_for(host, services, "acme", "Victim-Lead")
    lead_for(host, services, "acme", "Second-Victim")
    [[widget]] = [host.hook.dashboard_widget(context=Context(tenant="evil"))]
    found = json.loads(widget.html)
    assert found["globals"] == []
    assert found["scratch"] == []
    assert services.stored("evil", "snooper")["found"]["globals"] == []
    # acme's own worker still has what it kept of acme
    [[own]] = [host.hook.dashboard_widget(context=Context(tenant="acme"))]
    assert json.loads(own.html)["globals"] == ["Victim-Lead", "Second-Victim"]
    assert json.loads(own.html)["scratch"] == ["Victim-Lead", "Second-Victim"]
    # each tenant's worker is its own process with its own scratch folder
    assert found["pid"] != json.loads(own.html)["pid"]
    assert found["tmpdir"] != json.loads(own.html)["tmpdir"]
    pids = host.plugins()["snooper"].pids()  # type: ignore[attr-defined]
    assert pids["acme"] == services.stored("acme", "snooper")["pid"]
    assert pids["evil"] == found["pid"]


def test_a_route_request_runs_in_the_worker_of_its_tenant(
    snooping: PluginHost, services: FakeHostServices
) -> None:
    """register_routes runs in a tenant-less worker; each request in its own tenant's worker."""
    host = snooping
    lead_for(host, services, "acme", "Victim-Lead")
    [[route]] = host.hook.register_routes()
    tenantless = host.plugins()["snooper"].pids()[None]  # type: ignore[attr-defined]
    for tenant in ("evil", "acme"):
        response = route.handler(ApiRequest(tenant=tenant, method="GET", path="/loot/"))
        found = json.loads(response.body)
        assert found["tenant"] == tenant
        assert found["pid"] == host.plugins()["snooper"].pids()[tenant]  # type: ignore[attr-defined]
        assert found["pid"] != tenantless
        leads = [name for name in found["globals"] if not name.startswith("routes asked")]
        assert leads == (["Victim-Lead"] if tenant == "acme" else [])
        assert found["scratch"] == (["Victim-Lead"] if tenant == "acme" else [])


def test_a_tenants_worker_that_died_builds_its_route_handlers_again(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    """A restarted worker asks the plugin for its handlers itself: routes keep working."""
    host = make_host()
    install(host, "snooper", SNOOPER, permissions=("register_routes",), tenants=("acme",))
    [[route]] = host.hook.register_routes()
    request = ApiRequest(tenant="acme", method="GET", path="/loot/")
    first = json.loads(route.handler(request).body)["pid"]
    os.kill(first, 9)
    with pytest.raises(WorkerCrashed):  # the call that finds it dead
        route.handler(request)
    second = json.loads(route.handler(request).body)["pid"]
    assert second != first
    assert json.loads(route.handler(request).body)["pid"] == second


def test_workers_are_listed_per_tenant(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host()
    install(host, "healthy", HEALTHY, tenants=("acme", "initech"))
    lead_for(host, services, "initech", "A")
    lead_for(host, services, "acme", "B")
    lead_for(host, services, "acme", "C")
    workers = host.sandbox.workers()
    assert [(w.plugin_id, w.tenant, w.calls) for w in workers] == [
        ("healthy", None, 0),
        ("healthy", "acme", 2),
        ("healthy", "initech", 1),
    ]
    assert len({w.pid for w in workers}) == 3
    assert services.stored("acme", "healthy") == {"seen": 2}
    assert services.stored("initech", "healthy") == {"seen": 1}


def test_the_pool_bound_counts_every_tenants_worker(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """max_workers bounds workers of all tenants together; evicted ones start again on demand."""
    host = make_host(max_workers=2)
    tenants = ("t1", "t2", "t3", "t4")
    install(host, "healthy", HEALTHY, tenants=tenants)
    for _ in range(2):
        for tenant in tenants:
            lead_for(host, services, tenant, "X")
            assert len(host.sandbox.workers()) <= 2
    assert all(services.stored(t, "healthy") == {"seen": 2} for t in tenants)
    assert host.failures("healthy") == []


# -- 2. a worker's report of its implementations ------------------------------------------------


def forged_ready(hooks: Any, **fields: Any) -> str:
    """Class-body code (run at import) writing a forged 'ready' frame to the worker's channel."""
    info = {"pid": 1, "hooks": hooks, "layers": [], "notes": []} | fields
    body = json.dumps(["ready", info])
    return f"_b = {body!r}.encode()\nos.write(3, struct.pack('>I', len(_b)) + _b)\n"


def hook(name: Any, argnames: Any = ("lead",), **options: Any) -> dict[str, Any]:
    flags = dict.fromkeys(("tryfirst", "trylast", "optionalhook", "hookwrapper", "wrapper"), False)
    names = list(argnames) if isinstance(argnames, tuple) else argnames
    return {"name": name, "argnames": names, **flags, **options}


#: Malformed reports: refused as such, and never kept.
MALFORMED_REPORTS = {
    "nfkc name": ([hook("\uff4cead_created")], "plain ASCII name"),
    "non-string name": ([hook(12)], "plain ASCII name"),
    "argnames not a list": ([hook("lead_created", "lead")], "not a list"),
    "repeated argument": ([hook("lead_created", ("lead", "lead"))], "repeated"),
    "hook twice": ([hook("lead_created"), hook("lead_created")], "reported twice"),
    "option not a bool": ([hook("lead_created", tryfirst="yes")], "true or false"),
    "missing fields": ([{"name": "lead_created"}], "not a record"),
    "extra fields": ([hook("lead_created", code="x")], "not a record"),
    "keyword argument": ([hook("lead_created", ("lambda",))], "plain ASCII name"),
    "dunder argument": ([hook("lead_created", ("__class__",))], "plain ASCII name"),
    "hooks not a list": ({"lead_created": []}, "not a list"),
}
#: Well-formed reports the host refuses against its specifications (kept: `check` reads them).
REFUSED_REPORTS = {
    "unknown argument": ([hook("lead_created", ("lead", "password"))], "no argument 'password'"),
    "unknown hook": ([hook("steal_everything")], "no such hook is specified"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_REPORTS) + sorted(REFUSED_REPORTS))
def test_a_forged_report_is_that_plugins_load_failure_only(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    tmp_path: Path,
    case: str,
) -> None:
    """Every caller keeps working, a restarted host too; the forger's load failure says why."""
    malformed = case in MALFORMED_REPORTS
    hooks, refusal = MALFORMED_REPORTS[case] if malformed else REFUSED_REPORTS[case]
    storage = SQLiteStorage(tmp_path / "registry.db")
    host = make_host(storage)
    install(host, "healthy", HEALTHY)
    install(host, "forger", forged_ready(hooks) + HEALTHY)
    for _ in range(2):  # the refresh on the call path loads it: nothing reaches the caller
        lead_for(host, services, "acme", "A")
    assert services.stored("acme", "healthy") == {"seen": 2}
    assert "forger" not in host.plugins()
    [failure] = host.failures("forger")
    assert failure.hook == "load"
    reason = "report of its implementations is refused" if malformed else "its hooks are refused"
    assert reason in failure.message
    assert refusal in failure.message
    kept = list((tmp_path / "plugins" / ".sandbox-hooks").glob("forger-*"))
    assert len(kept) == (0 if malformed else 1)
    host.close()
    with PluginHost(
        services,
        storage=SQLiteStorage(tmp_path / "registry.db"),
        plugins_dir=tmp_path / "plugins",
        entry_points=False,
        sandbox=SandboxPolicy(timeout=5.0),
    ) as again:
        lead_for(again, services, "acme", "B")
        assert services.stored("acme", "healthy") == {"seen": 3}
        assert "forger" not in again.plugins()


def test_a_forged_ready_frame_with_extra_fields_or_bad_notes_is_refused(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host()
    install(host, "healthy", HEALTHY)
    install(host, "noisy", forged_ready([hook("lead_created")], notes=[{"x": 1}]) + HEALTHY)
    install(host, "extra", forged_ready([hook("lead_created")], admin=True) + HEALTHY)
    lead_for(host, services, "acme", "A")
    assert services.stored("acme", "healthy") == {"seen": 1}
    assert "note is not a text" in host.failures("noisy")[0].message
    assert "has the fields" in host.failures("extra")[0].message


def test_a_poisoned_hooks_file_is_ignored_and_the_worker_asked_again(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """What the host kept of a report is read as strictly as a worker's own report."""
    storage = MemoryStorage()
    host = make_host(storage)
    install(host, "healthy", HEALTHY)
    host.refresh()
    [kept] = host.plugins_dir.joinpath(".sandbox-hooks").iterdir()
    host.close()
    kept.write_text(json.dumps([hook("\uff4cead_created", ("lead", "api"))]))
    again = make_host(storage)
    lead_for(again, services, "acme", "A")
    assert services.stored("acme", "healthy") == {"seen": 1}
    assert again.failures("healthy") == []
    assert json.loads(kept.read_text())[0]["name"] == "lead_created"  # written anew


def test_a_new_worker_reporting_other_hooks_than_the_first_is_refused(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """A worker whose report differs from the one the plugin was loaded with serves nothing."""
    storage = MemoryStorage()
    host = make_host(storage)
    install(host, "healthy", HEALTHY)
    host.refresh()
    [kept] = host.plugins_dir.joinpath(".sandbox-hooks").iterdir()
    # The report the host keeps says lead_created(lead, api); claim trylast from now on.
    kept_hooks = json.loads(kept.read_text())
    kept_hooks[0]["trylast"] = True
    host.close()
    kept.write_text(json.dumps(kept_hooks))
    again = make_host(storage)
    lead_for(again, services, "acme", "A")
    [failure] = again.failures("healthy")
    assert failure.exc_type == "SandboxError"
    assert "other implementations than its first one" in failure.message


def test_call_json_with_a_forging_plugin_prints_a_document(
    tmp_path: Path, services: FakeHostServices
) -> None:
    """`call --json` on a registry holding a forger: one JSON document, no traceback."""
    from conftest import plugin_folder

    cli = CliRunner(tmp_path)
    source = HEADER + textwrap.indent(forged_ready([hook(7)]) + HEALTHY, "    ")
    folder = plugin_folder(tmp_path, "forger", source)
    archive = pack_plugin(folder, tmp_path / "forger.zip").path
    for step in (("install", archive), ("approve", "forger"), ("enable", "forger")):
        args = [*step, "--tenant", "acme"] if step[0] == "enable" else list(step)
        code, _, err = cli(*args)
        assert code == 0, err
    code, out, err = cli("call", "lead_created", "--tenant", "acme", "--sample", "--json")
    document = json.loads(out)
    assert "Traceback" not in err
    assert document["hook"] == "lead_created"
    assert "forger" in json.dumps(document["not_loaded"])


# -- 1. printing while imported -----------------------------------------------------------------


def test_a_plugin_that_prints_and_logs_while_imported_loads_sandboxed(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = make_host(output_limit=100)
    body = (
        "print('hello from the import')\n"
        "import logging\n"
        "logging.getLogger('mine').warning('logged while imported')\n"
        "print('x' * 500)\n" + HEALTHY
    )
    install(host, "chatty", body)
    with caplog.at_level(logging.INFO, logger="services_ai_plugins.plugins.chatty"):
        lead_for(host, services, "acme", "A")
    assert host.failures("chatty") == []
    assert services.stored("acme", "chatty") == {"seen": 1}
    text = caplog.text
    assert "hello from the import" in text
    assert "logged while imported" in text
    assert "dropped" in text  # the long line is over the output limit
    assert "x" * 500 not in text


def test_an_implementation_without_context_or_api_still_runs_in_its_tenants_worker(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """The tenant picks the worker even when the plugin asks for neither context nor api."""
    host = make_host()
    body = """
    @hookimpl
    def lead_created(self, lead):
        KEPT.append(lead.name)

    @hookimpl
    def dashboard_widget(self, context):
        return Widget(tenant=context.tenant, title="loot", html=json.dumps(KEPT))
    """
    install(
        host,
        "quiet",
        body,
        permissions=("read_leads", "dashboard_widgets"),
        tenants=("acme", "evil"),
    )
    lead_for(host, services, "acme", "Victim-Lead")
    [[widget]] = [host.hook.dashboard_widget(context=Context(tenant="evil"))]
    assert json.loads(widget.html) == []
    [[own]] = [host.hook.dashboard_widget(context=Context(tenant="acme"))]
    assert json.loads(own.html) == ["Victim-Lead"]
    assert set(host.plugins()["quiet"].pids()) == {None, "acme", "evil"}  # type: ignore[attr-defined]


def test_a_tenants_worker_can_be_started_before_its_first_call(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host()
    install(host, "healthy", HEALTHY)
    host.refresh()
    assert host.sandbox.start("healthy", "acme") is True
    pid = host.plugins()["healthy"].pids()["acme"]  # type: ignore[attr-defined]
    assert host.sandbox.start("healthy", "acme") is True  # running: left as it is
    lead_for(host, services, "acme", "A")
    assert host.plugins()["healthy"].pids()["acme"] == pid  # type: ignore[attr-defined]
    assert host.sandbox.start("nobody-knows", "acme") is False
