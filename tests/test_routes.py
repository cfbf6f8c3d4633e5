"""The host's route table and ``serve``: plugins' routes answered end to end, in and out of process.

Every plugin is a real archive installed through the host; requests are
``ApiRequest`` records as an adapter builds them, answered by ``host.serve``
(and ``host.aserve``) with the tenant gate, the path syntax, methods, the
handler's injected values, and failures answered with a status and recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import DEFAULT_BREAKER, Hosts, Installer
from services_ai_plugins import BreakerPolicy, PluginHost, SandboxPolicy
from services_ai_plugins.events import ApiRequest, ApiResponse, User
from services_ai_plugins.storage import SourceKind
from services_ai_plugins.types import Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

HEADER = (
    "import json, os, time\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import ApiResponse, Route\n\n\n"
    "class Plugin:\n"
)

ISOLATIONS = ["inprocess", "process"]

#: A plugin with literal, one-segment and path routes, reading its tenant's data.
SHOP = """
@hookimpl
def register_routes(self, plugin_id):
    def hello(request):
        return ApiResponse.json(
            request.tenant, {"hello": request.tenant, "path": [request.path, request.route_path]}
        )

    def lead(request, api, settings, context):
        found = api.get_lead(request.path_params["lead_id"])
        return ApiResponse.json(request.tenant, {
            "lead": found.name if found else None,
            "greeting": settings.get("greeting"),
            "context": [context.tenant, context.user.id if context.user else None],
            "pid": os.getpid(),
        })

    def new_lead(request):
        return ApiResponse.json(request.tenant, {"new": True})

    def create(request):
        return ApiResponse.json(request.tenant, {"created": json.loads(request.body)}, 201)

    def files(request):
        return ApiResponse.json(request.tenant, {"rest": request.path_params["rest"]})

    return [
        Route(path="/hello", handler=hello, name="hello"),
        Route(path="/leads/{lead_id}", handler=lead, name="lead"),
        Route(path="/leads/new", handler=new_lead, name="new-lead"),
        Route(path="/leads", handler=create, name="create", methods=("POST",)),
        Route(path="/files/{rest:path}", handler=files, name="files"),
    ]
"""

GREETING = [{"name": "greeting", "type": "string", "default": "hi"}]


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def make_host(hosts: Hosts) -> Callable[..., PluginHost]:
    def make(isolation: str = "inprocess", **options: Any) -> PluginHost:
        sandbox = SandboxPolicy(
            timeout=options.pop("timeout", 30.0),
            isolation=dict.fromkeys(SourceKind, Isolation(isolation)),
        )
        return cast("PluginHost", hosts(sandbox=sandbox, **options))

    return make


def get(path: str, tenant: str = "acme", method: str = "GET", **fields: Any) -> ApiRequest:
    return ApiRequest(tenant=tenant, method=method, path=path, **fields)


def body(response: ApiResponse) -> Any:
    return json.loads(response.body)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_routes_are_served_under_the_plugin_prefix_with_their_tenant_data(
    isolation: str,
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
) -> None:
    host = make_host(isolation)
    install(host, "shop", SHOP, permissions=["register_routes", "read_leads"], settings=GREETING)
    lead = services.add_lead("acme", name="Ada")
    services.add_lead("globex", id=lead.id, name="Not Ada")
    table = {(r.name, r.path, r.methods, r.native) for r in host.routes()}
    assert table == {
        ("hello", "/shop/hello", ("GET",), False),
        ("lead", "/shop/leads/{lead_id}", ("GET",), False),
        ("new-lead", "/shop/leads/new", ("GET",), False),
        ("create", "/shop/leads", ("POST",), False),
        ("files", "/shop/files/{rest:path}", ("GET",), False),
    }
    hello = body(host.serve(get("/shop/hello")))
    assert hello == {"hello": "acme", "path": ["/shop/hello", "/hello"]}
    user = User(id="u1", tenant="acme", email="u1@acme.test", name="U")
    answer = body(host.serve(get(f"/shop/leads/{lead.id}", user=user)))
    assert answer["lead"] == "Ada"  # the acme lead, never globex's with the same id
    assert answer["greeting"] == "hi"
    assert answer["context"] == ["acme", "u1"]
    assert body(host.serve(get("/shop/leads/new"))) == {"new": True}  # literal before {lead_id}
    created = host.serve(get("/shop/leads", method="POST", body=b'{"name": "Bo"}'))
    assert (created.status, body(created)) == (201, {"created": {"name": "Bo"}})
    assert body(host.serve(get("/shop/files/a/b/c.txt"))) == {"rest": "a/b/c.txt"}
    assert host.url_for("shop", "lead", lead_id="L 1") == "/shop/leads/L%201"
    assert host.url_for("shop", "files", rest="a b/c") == "/shop/files/a%20b/c"
    if isolation == "process":
        assert answer["pid"] != os.getpid()


def test_the_tenant_gate_method_and_unknown_paths(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    host = make_host()
    install(host, "shop", SHOP, permissions=["register_routes", "read_leads"])
    install(host, "noperm", SHOP, permissions=["read_leads"])
    assert host.serve(get("/shop/hello")).status == 200
    assert host.serve(get("/shop/hello", tenant="globex")).status == 404  # not enabled there
    assert host.serve(get("/noperm/hello")).status == 404  # no register_routes permission
    assert host.serve(get("/nobody/hello")).status == 404
    assert host.serve(get("/shop/nothing")).status == 404
    assert host.serve(get("/shop/leads/x/y")).status == 404  # {lead_id} is one segment
    refused = host.serve(get("/shop/hello", method="POST"))
    assert (refused.status, refused.headers["allow"]) == (405, "GET, HEAD")
    head = host.serve(get("/shop/hello", method="HEAD"))  # the GET's answer; no body is sent
    assert (head.status, body(head)["hello"]) == (200, "acme")
    host.registry.enable("shop", "globex", actor="admin")
    assert host.serve(get("/shop/hello", tenant="globex")).status == 200  # at the next request
    host.registry.disable("shop", "acme", actor="admin")
    assert host.serve(get("/shop/hello")).status == 404


def test_routes_follow_the_plugins_approved_and_uninstalled(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    host = make_host()
    assert host.routes() == ()
    install(host, "shop", SHOP, permissions=["register_routes", "read_leads"], approve=False)
    assert host.routes() == ()
    host.registry.approve("shop", actor="admin")
    host.registry.enable("shop", "acme", actor="admin")
    assert len(host.routes()) == 5
    assert host.serve(get("/shop/hello")).status == 200
    host.registry.uninstall("shop", actor="admin")
    assert host.routes() == ()
    assert host.serve(get("/shop/hello")).status == 404
    with pytest.raises(LookupError, match="'shop' has no route named 'hello'"):
        host.url_for("shop", "hello")


def test_url_for_refuses_what_it_cannot_build(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    host = make_host()
    install(host, "shop", SHOP, permissions=["register_routes"])
    with pytest.raises(LookupError, match="its routes: create, files, hello, lead, new-lead"):
        host.url_for("shop", "nope")
    with pytest.raises(TypeError, match="missing lead_id"):
        host.url_for("shop", "lead")
    with pytest.raises(TypeError, match="unknown extra"):
        host.url_for("shop", "lead", lead_id="1", extra="2")
    with pytest.raises(ValueError, match="segment without '/'"):
        host.url_for("shop", "lead", lead_id="a/b")


CLASH = """
@hookimpl
def register_routes(self, plugin_id):
    def one(request):
        return ApiResponse.json(request.tenant, {"one": 1})

    return [
        Route(path="/items/{item_id}", handler=one, name="one", methods=("GET", "PUT")),
        Route(path="/items/{key}", handler=one, name="two", methods=("PUT", "DELETE")),
    ]
"""

MALFORMED = """
@hookimpl
def register_routes(self, plugin_id):
    return [Route(path="/items/{item_id:int}", handler=lambda request: None, name="int")]
"""


@pytest.mark.parametrize(
    ("body_", "message"),
    [
        (
            CLASH,
            "routes 'one' (/items/{item_id}) and 'two' (/items/{key}) clash: the same path for PUT",
        ),
        (MALFORMED, "unknown converter 'int'"),
    ],
    ids=["clash", "malformed"],
)
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_clashing_or_malformed_routes_are_refused_at_load(
    isolation: str,
    body_: str,
    message: str,
    make_host: Callable[..., PluginHost],
    install: Installer,
) -> None:
    """None of the plugin's routes is served; its load failure says why; others are unharmed."""
    host = make_host(isolation)
    install(host, "bad", body_, permissions=["register_routes"])
    install(host, "shop", SHOP, permissions=["register_routes", "read_leads"])
    assert {r.plugin_id for r in host.routes()} == {"shop"}
    assert host.serve(get("/bad/items/1")).status == 404
    assert host.serve(get("/shop/hello")).status == 200
    host.flush()
    [failure] = host.failures("bad")
    assert failure.hook == "load"
    assert message in failure.message
    host.refresh(force=True)
    host.routes()
    host.flush()
    assert len(host.failures("bad")) == 1  # not recorded again while nothing changed


HOSTILE = """
@hookimpl
def register_routes(self, plugin_id):
    def boom(request):
        raise RuntimeError("boom")

    def foreign(request):
        return ApiResponse.json("globex", {"stolen": True})

    def slow(request):
        time.sleep(60)

    def crash(request):
        os._exit(3)

    def hello(request):
        return ApiResponse.json(request.tenant, {"pid": os.getpid()})

    return [
        Route(path="/boom", handler=boom, name="boom"),
        Route(path="/foreign", handler=foreign, name="foreign"),
        Route(path="/slow", handler=slow, name="slow"),
        Route(path="/crash", handler=crash, name="crash"),
        Route(path="/hello", handler=hello, name="hello"),
    ]
"""


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_failing_handler_is_answered_recorded_and_counted_by_the_breaker(
    isolation: str, make_host: Callable[..., PluginHost], install: Installer
) -> None:
    """A hostile handler raising, or answering for another tenant: 500, recorded, counted."""
    breaker = BreakerPolicy(consecutive_failures=3, failure_rate=0)
    host = make_host(isolation, breaker=breaker)
    install(host, "hostile", HOSTILE, permissions=["register_routes"])
    answer = host.serve(get("/hostile/boom"))
    assert (answer.status, body(answer)) == (
        500,
        {"error": "the plugin failed", "plugin": "hostile"},
    )
    assert host.serve(get("/hostile/foreign")).status == 500  # another tenant's response refused
    host.flush()
    failures = {(f.hook, f.exc_type) for f in host.failures("hostile")}
    assert failures == {("route:boom", "RuntimeError"), ("route:foreign", "ResultRefused")}
    host.serve(get("/hostile/boom"))
    host.serve(get("/hostile/boom"))  # the third in a row on route:boom: suspended for acme
    host.flush()
    assert host.serve(get("/hostile/hello")).status == 404
    assert [s.tenant for s in host.suspensions("hostile")] == ["acme"]
    metrics = {m.hook: (m.calls, m.errors) for m in host.metrics("hostile")}
    assert metrics["route:boom"] == (3, 3)


def test_sandbox_time_outs_and_crashes_are_answered_504_and_502_and_a_killed_worker_comes_back(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    host = make_host("process", timeout=2.0, breaker=DEFAULT_BREAKER)
    install(host, "hostile", HOSTILE, permissions=["register_routes"])
    first = body(host.serve(get("/hostile/hello")))["pid"]
    assert host.serve(get("/hostile/slow")).status == 504
    assert host.serve(get("/hostile/crash")).status == 502
    second = body(host.serve(get("/hostile/hello")))["pid"]
    assert second != first  # the killed worker was replaced, its routes work again
    os.kill(second, signal.SIGKILL)  # killed between two requests, by someone else
    answers = [host.serve(get("/hostile/hello")) for _ in range(2)]
    assert answers[-1].status == 200
    assert body(answers[-1])["pid"] not in (first, second)
    host.flush()
    kinds = {(f.hook, f.exc_type) for f in host.failures("hostile")}
    assert {("route:slow", "SandboxTimeout"), ("route:crash", "WorkerCrashed")} <= kinds


NATIVE = """
@hookimpl
def register_routes(self, plugin_id):
    def my_view(request, **kwargs):
        if kwargs.get("fail"):
            raise ValueError("view failed")
        return ("django-response", request, kwargs)

    return [("my-route/<slug>/", my_view, "my_route_name"), ("items/{item_id}/", my_view, "item")]
"""


def test_the_original_systems_native_views_are_handed_to_the_adapter(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    """A ``(path, view, name)`` tuple keeps working in process: the adapter calls the view."""
    host = make_host()
    install(host, "legacy", NATIVE, permissions=["register_routes"])
    assert {(r.name, r.native) for r in host.routes()} == {("my_route_name", True), ("item", True)}
    request = get("/legacy/items/7/")
    assert host.serve(request).status == 501  # no native caller: the adapter's to serve

    def call(view: Callable[..., Any], params: Any) -> Any:
        return view("framework-request", **params)

    assert host.serve(request, native=call) == (
        "django-response",
        "framework-request",
        {"item_id": "7"},
    )
    assert host.serve(get("/legacy/items/7/", tenant="globex"), native=call).status == 404
    failed = host.serve(request, native=lambda view, params: view("r", fail=True))
    assert failed.status == 500  # answered, as a handler's failure is
    host.flush()
    [failure] = host.failures("legacy")
    assert (failure.hook, failure.exc_type) == ("route:item", "ValueError")


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_aserve_answers_like_serve(
    isolation: str, make_host: Callable[..., PluginHost], install: Installer
) -> None:
    host = make_host(isolation)
    install(host, "shop", SHOP, permissions=["register_routes", "read_leads"], settings=GREETING)

    async def main() -> list[int]:
        answers = await asyncio.gather(
            host.aserve(get("/shop/hello")),
            host.aserve(get("/shop/hello", tenant="globex")),
            host.aserve(get("/shop/hello", method="DELETE")),
            host.aserve(get("/shop/files/x/y")),
        )
        return [answer.status for answer in answers]

    assert asyncio.run(main()) == [200, 404, 405, 200]


SLOW = """
@hookimpl
def register_routes(self, plugin_id):
    def slow(request):
        time.sleep(float(request.query_value("for", "0")))
        return ApiResponse.json(request.tenant, {"pid": os.getpid()})

    return [Route(path="/slow", handler=slow, name="slow")]
"""


def test_a_busy_sandboxed_route_is_answered_503_and_is_not_the_plugins_failure(
    hosts: Hosts, install: Installer
) -> None:
    """Every worker busy past the wait budget: 503 with retry-after, a host event, no failure."""
    import threading

    policy = SandboxPolicy(
        timeout=30.0,
        wait_timeout=0.2,
        workers_per_plugin=1,
        isolation=dict.fromkeys(SourceKind, Isolation.PROCESS),
    )
    host = cast("PluginHost", hosts(sandbox=policy, breaker=DEFAULT_BREAKER))
    install(host, "slowpoke", SLOW, permissions=["register_routes"])
    assert host.serve(get("/slowpoke/slow")).status == 200  # its worker is up
    holder = threading.Thread(target=host.serve, args=(get("/slowpoke/slow", query={"for": "2"}),))
    holder.start()
    try:
        answers = []
        for _ in range(20):  # until the holder has the worker
            answer = host.serve(get("/slowpoke/slow"))
            answers.append(answer.status)
            if answer.status == 503:
                break
        assert answers[-1] == 503
        assert answer.headers["retry-after"] == "1"
    finally:
        holder.join()
    host.flush()
    assert host.failures("slowpoke") == []
    assert host.suspensions("slowpoke") == []
    [event, *_] = host.host_events("worker-busy")
    assert (event.plugin_id, event.tenant, event.hook) == ("slowpoke", "acme", "route:slow")


FLAKY_ROUTES = """
@hookimpl
def register_routes(self, plugin_id):
    if open({flag!r}).read() == "crash":
        os._exit(7)

    def hello(request):
        return ApiResponse.json(request.tenant, {{"hello": True}})

    return [Route(path="/hello", handler=hello, name="hello")]
"""


def test_routes_missing_for_a_passing_failure_are_asked_for_again(
    hosts: Hosts, install: Installer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that crashed in register_routes: the plugin's routes come back by themselves."""
    import services_ai_plugins._host as host_module

    monkeypatch.setattr(host_module, "ROUTES_RETRY", 0.2)
    shared = tmp_path / "shared"
    shared.mkdir()
    flag = shared / "flag"
    flag.write_text("ok")
    policy = SandboxPolicy(
        timeout=30.0,
        readable=(str(shared),),
        isolation=dict.fromkeys(SourceKind, Isolation.PROCESS),
    )
    host = cast("PluginHost", hosts(sandbox=policy))
    install(host, "flaky", FLAKY_ROUTES.format(flag=str(flag)), permissions=["register_routes"])
    flag.write_text("crash")  # the worker that tells the routes dies while telling them
    for pid in host.plugins()["flaky"].pids().values():  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)
    assert host.serve(get("/flaky/hello")).status == 404
    host.flush()
    assert [f.exc_type for f in host.failures("flaky")] == ["WorkerCrashed"]
    flag.write_text("ok")
    time.sleep(0.3)  # the retry is due
    assert host.serve(get("/flaky/hello")).status == 200  # asked again: back, nobody did a thing
