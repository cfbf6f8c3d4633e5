"""The two example adapters of docs/adapters.md (about 100 lines each) work, end to end.

``examples/adapters/wsgi_adapter.py`` around a WSGI app driven by Werkzeug's test
client, and ``examples/adapters/asgi_adapter.py`` around a Starlette app driven by
Starlette's: plugins installed as archives through a real host (in process and
sandboxed), a route answering 200 for its tenant and 404 for another, the
``api_request`` and ``api_response`` filters around it, the head fragment in a
rendered page, a plugin disabled meanwhile no longer answering, and a deferred
hook call running once the request is over.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route as StarletteRoute
from werkzeug.test import Client

from conftest import Hosts, Installer
from services_ai_plugins import PluginHost, SandboxPolicy
from services_ai_plugins.events import Lead
from services_ai_plugins.storage import SourceKind
from services_ai_plugins.tooling import example
from services_ai_plugins.types import Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 and warns about httpx (see tests/test_web.py).
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "adapters"

HEADER = (
    "import json\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import ApiResponse, Route\n\n\n"
    "class Plugin:\n"
)

#: A route, the two API filters, a head fragment, and a notify hook that stores what it saw.
SHOP = """
@hookimpl
def register_routes(self, plugin_id):
    def hello(request, api, context):
        return ApiResponse.json(request.tenant, {
            "tenant": context.tenant,
            "stamp": request.headers.get("x-stamp"),
            "full_path": request.full_path,
            "route_path": request.route_path,
        })

    return [Route(path="/hello", handler=hello, name="hello")]

@hookimpl
def api_request(self, request):
    return request.__class__(**{**{f: getattr(request, f) for f in (
        "tenant", "method", "path", "query", "path_params", "body", "user",
        "route_path", "full_path")}, "headers": {**request.headers, "x-stamp": "stamped"}})

@hookimpl
def api_response(self, response):
    return response.__class__(tenant=response.tenant, status=response.status,
                              headers={**response.headers, "x-plugin": "shop"}, body=response.body)

@hookimpl
def inject_head(self, context):
    return '<meta name="shop" content="' + context.tenant + '">'

@hookimpl
def lead_created(self, lead, api):
    api.store_set("deferred", lead.id)
"""

PERMISSIONS = ["register_routes", "api_hooks", "inject_html", "read_leads"]


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def make_host(hosts: Hosts) -> Callable[[str], PluginHost]:
    def make(isolation: str) -> PluginHost:
        sandbox = SandboxPolicy(
            timeout=30.0, isolation=dict.fromkeys(SourceKind, Isolation(isolation))
        )
        return cast("PluginHost", hosts(sandbox=sandbox))

    return make


def tenant_from_header(headers: dict[str, str]) -> tuple[str, None] | None:
    tenant = headers.get("x-tenant")
    return (tenant, None) if tenant else None


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
def test_the_wsgi_example_adapter(
    isolation: str,
    make_host: Callable[[str], PluginHost],
    install: Installer,
    services: FakeHostServices,
) -> None:
    adapter = load("wsgi_adapter")
    host = make_host(isolation)
    install(host, "shop", SHOP, permissions=PERMISSIONS)
    lead = example(Lead)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        host.defer.lead_created(lead=lead)  # the request's context; runs after the request
        page = f"<html><head>{middleware.head_html()}</head><body>page</body></html>"
        start_response("200 OK", [("content-type", "text/html")])
        return [page.encode()]

    def tenant_of(environ: dict[str, Any]) -> tuple[str, None] | None:
        return tenant_from_header({"x-tenant": environ.get("HTTP_X_TENANT", "")})

    middleware = adapter.PluginsMiddleware(app, host, tenant_of=tenant_of)
    client = Client(middleware)
    answer = client.get("/plugins/shop/hello", headers={"x-tenant": "acme"})
    assert answer.status_code == 200
    assert answer.headers["x-plugin"] == "shop"  # api_response ran
    assert json.loads(answer.data) == {
        "tenant": "acme",
        "stamp": "stamped",  # api_request ran before the route
        "full_path": "/plugins/shop/hello",
        "route_path": "/hello",
    }
    assert client.get("/plugins/shop/hello", headers={"x-tenant": "globex"}).status_code == 404
    assert client.head("/plugins/shop/hello", headers={"x-tenant": "acme"}).data == b""
    page = client.get("/", headers={"x-tenant": "acme"})
    assert '<meta name="shop" content="acme">' in page.text
    host.close()  # drains the deferred calls
    assert services.stored("acme", "shop") == {"deferred": lead.id}
    assert middleware.url_for("shop", "hello") == "/plugins/shop/hello"


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
def test_the_asgi_example_adapter(
    isolation: str,
    make_host: Callable[[str], PluginHost],
    install: Installer,
    services: FakeHostServices,
) -> None:
    adapter = load("asgi_adapter")
    host = make_host(isolation)
    install(host, "shop", SHOP, permissions=PERMISSIONS)
    lead = example(Lead)

    async def page(request: Request) -> HTMLResponse:
        host.defer.lead_created(lead=lead)
        head = await middleware.head_html()
        return HTMLResponse(f"<html><head>{head}</head><body>page</body></html>")

    def tenant_of(scope: Any) -> tuple[str, None] | None:
        headers = {k.decode(): v.decode() for k, v in scope.get("headers", [])}
        return tenant_from_header(headers)

    middleware = adapter.PluginsMiddleware(
        Starlette(routes=[StarletteRoute("/", page)]), host, tenant_of=tenant_of
    )
    with TestClient(middleware) as client:
        answer = client.get("/plugins/shop/hello", headers={"x-tenant": "acme"})
        assert answer.status_code == 200
        assert answer.headers["x-plugin"] == "shop"
        assert answer.json() == {
            "tenant": "acme",
            "stamp": "stamped",
            "full_path": "/plugins/shop/hello",
            "route_path": "/hello",
        }
        assert client.get("/plugins/shop/hello", headers={"x-tenant": "globex"}).status_code == 404
        assert (
            '<meta name="shop" content="acme">'
            in client.get("/", headers={"x-tenant": "acme"}).text
        )
        # The page's deferred call is handed over when the request's block exits, after the
        # client has its answer, and runs in the background: wait for it before disabling.
        deadline = time.monotonic() + 30
        while services.stored("acme", "shop") != {"deferred": lead.id}:
            assert time.monotonic() < deadline, "the deferred call did not run"
            time.sleep(0.01)
        host.registry.disable("shop", "acme", actor="admin")  # meanwhile, elsewhere
        assert client.get("/plugins/shop/hello", headers={"x-tenant": "acme"}).status_code == 404
        assert client.get("/plugins/nobody", headers={"x-tenant": "acme"}).status_code == 404
    host.close()
    assert services.stored("acme", "shop") == {"deferred": lead.id}
