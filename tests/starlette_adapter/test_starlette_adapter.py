"""``services_ai_plugins.starlette`` driven by Starlette's and FastAPI's test clients.

A real host built by the adapter's lifespan from its settings, plugins installed as
ZIP archives (in the web process and sandboxed), approved and enabled through the
registry: the route answers its tenant and nobody else, the filters run around it, the
head fragment reaches a rendered page (by the trust rules), a plugin disabled meanwhile
stops answering, the FastAPI dependency gives the request's Context, and a hostile
sandboxed plugin's answers are refused rather than sent.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import jinja2
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute
from starlette.templating import Jinja2Templates

from conftest import Installer
from services_ai_plugins.errors import ConfigError, StorageError
from services_ai_plugins.events import Context, Lead
from services_ai_plugins.starlette import Plugins, plugin_context
from services_ai_plugins.storage import SQLiteStorage
from services_ai_plugins.tooling import example
from services_ai_plugins_testing.fakes import FakeHostServices

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 and warns about httpx (see tests/test_web.py).
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

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
            "body": request.body.decode(),
        })

    return [Route(path="/hello", handler=hello, name="hello", methods=("GET", "POST"))]

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

#: A hostile uploaded plugin: answers that would split the response or lie about its length.
FORGER = """
@hookimpl
def register_routes(self, plugin_id):
    def split(request):
        return ApiResponse(tenant=request.tenant, headers={"x-a": "1\\r\\nset-cookie: s=1"})

    def smuggle(request):
        return ApiResponse(tenant=request.tenant, headers={"transfer-encoding": "chunked"},
                           body=b"0\\r\\n\\r\\nGET /admin HTTP/1.1")

    def other(request):
        return ApiResponse(tenant="globex", body=b"globex's")

    return [Route(path="/split", handler=split, name="split"),
            Route(path="/smuggle", handler=smuggle, name="smuggle"),
            Route(path="/other", handler=other, name="other")]
"""

#: What a FastAPI handler declares to get the request's Context.
RequestContext = Annotated[Context, Depends(plugin_context)]

PAGE = "<html><head>{{ plugins_head(request) }}</head><body>{{ plugins_footer(request) }}</body>"


def tenant_from_header(request: Request) -> str | None:
    return request.headers.get("x-tenant") or None


def settings(root: Path, services: FakeHostServices, isolation: str, **more: Any) -> dict[str, Any]:
    return {
        "SERVICES": lambda: services,
        "TENANT_RESOLVER": tenant_from_header,
        "STORAGE": str(root / "registry.db"),
        "PLUGINS_DIR": root / "plugins",
        "SANDBOX": {"timeout": 30.0, "isolation": {"archive": isolation}},
        "HOST": {"entry_points": False},
        **more,
    }


def page_templates(plugins: Plugins) -> Jinja2Templates:
    """The app's templates (escaping on), with the plugins' globals."""
    loader = jinja2.DictLoader({"p": PAGE})
    templates = Jinja2Templates(env=jinja2.Environment(loader=loader, autoescape=True))
    templates.env.globals.update(plugins.template_globals())
    return templates


def starlette_app(plugins: Plugins, lead: Lead) -> Starlette:
    templates = page_templates(plugins)

    def page(request: Request) -> Response:  # a def endpoint: rendered in a thread
        plugins.host.defer.lead_created(lead=lead)  # the request's context, run afterwards
        return templates.TemplateResponse(request, "p")

    return Starlette(
        routes=[*plugins.routes(), StarletteRoute("/", page)],
        middleware=[plugins.middleware],
        lifespan=plugins.lifespan,
    )


def fastapi_app(plugins: Plugins, lead: Lead) -> FastAPI:
    templates = page_templates(plugins)
    app = FastAPI(lifespan=plugins.lifespan, middleware=[plugins.middleware])
    app.router.routes.extend(plugins.routes())

    @app.get("/")
    def page(request: Request) -> Response:
        plugins.host.defer.lead_created(lead=lead)
        return templates.TemplateResponse(request, "p")

    @app.get("/whoami")
    async def whoami(context: RequestContext) -> dict[str, str]:
        return {"tenant": context.tenant, "current": str(plugins.host.current_context())}

    return app


APPS: dict[str, Callable[[Plugins, Lead], Any]] = {
    "starlette": starlette_app,
    "fastapi": fastapi_app,
}


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path / "archives", HEADER)


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
def test_plugin_routes_filters_and_head_fragment(
    framework: str,
    isolation: str,
    tmp_path: Path,
    install: Installer,
    services: FakeHostServices,
) -> None:
    plugins = Plugins(settings(tmp_path, services, isolation))
    lead = example(Lead)
    acme, globex = {"x-tenant": "acme"}, {"x-tenant": "globex"}
    with TestClient(APPS[framework](plugins, lead)) as client:
        install(plugins.host, "shop", SHOP, permissions=PERMISSIONS)
        answer = client.post("/plugins/shop/hello", headers=acme, content=b"hi")
        assert answer.status_code == 200
        assert answer.headers["x-plugin"] == "shop"  # api_response ran
        assert answer.json() == {
            "tenant": "acme",
            "stamp": "stamped",  # api_request ran before the route
            "full_path": "/plugins/shop/hello",
            "route_path": "/hello",
            "body": "hi",
        }
        assert plugins.url_for("shop", "hello") == "/plugins/shop/hello"
        assert client.get("/plugins/shop/hello", headers=globex).status_code == 404
        assert client.get("/plugins/shop/hello").status_code == 404  # no tenant at all
        assert client.head("/plugins/shop/hello", headers=acme).content == b""
        page = client.get("/", headers=acme).text
        # In the web process its head fragment is inserted; sandboxed, it is left out.
        assert ('<meta name="shop" content="acme">' in page) is (isolation == "inprocess")
        deadline = time.monotonic() + 30
        while services.stored("acme", "shop") != {"deferred": lead.id}:
            assert time.monotonic() < deadline, "the page's deferred call did not run"
            time.sleep(0.01)
        if framework == "fastapi":
            who = client.get("/whoami", headers=acme)
            assert who.status_code == 200
            assert who.json()["tenant"] == "acme"
            assert "tenant='acme'" in who.json()["current"]  # the request context is set
            assert client.get("/whoami").status_code == 404  # no tenant: no Context
        big = client.post("/plugins/shop/hello", headers=acme, content=b"x" * (2**20 + 1))
        assert big.status_code == 413
        plugins.host.registry.disable("shop", "acme", actor="admin")  # meanwhile, elsewhere
        assert client.get("/plugins/shop/hello", headers=acme).status_code == 404


def test_the_lifespan_builds_and_closes_the_host_and_its_storage(
    tmp_path: Path, install: Installer, services: FakeHostServices
) -> None:
    opened: list[SQLiteStorage] = []

    def open_storage() -> SQLiteStorage:
        opened.append(SQLiteStorage(tmp_path / "registry.db"))
        return opened[-1]

    plugins = Plugins(settings(tmp_path, services, "process", STORAGE=open_storage))
    app = starlette_app(plugins, example(Lead))
    assert opened == []  # nothing is built before start-up
    with TestClient(app) as client:
        assert len(opened) == 1
        install(plugins.host, "shop", SHOP, permissions=PERMISSIONS)
        assert client.get("/plugins/shop/hello", headers={"x-tenant": "acme"}).status_code == 200
        assert len(opened) == 1  # one host for the app's life
        assert opened[0].get_plugin("shop") is not None
    with pytest.raises(StorageError, match="is closed"):
        opened[0].get_plugin("shop")


def test_without_the_middleware_the_mount_resolves_the_tenant_itself(
    tmp_path: Path, install: Installer, services: FakeHostServices
) -> None:
    async def tenant_of(request: Request) -> tuple[str, None] | None:  # an async resolver
        tenant = request.headers.get("x-tenant")
        return (tenant, None) if tenant else None

    plugins = Plugins(settings(tmp_path, services, "inprocess", TENANT_RESOLVER=tenant_of))
    app = Starlette(routes=plugins.routes(), lifespan=plugins.lifespan)
    with TestClient(app) as client:
        install(plugins.host, "shop", SHOP, permissions=PERMISSIONS)
        assert client.get("/plugins/shop/hello", headers={"x-tenant": "acme"}).json()["stamp"] == (
            "stamped"
        )
        assert client.get("/plugins/shop/hello", headers={"x-tenant": "globex"}).status_code == 404


def test_a_hostile_sandboxed_plugin_cannot_split_or_cross_tenants(
    tmp_path: Path, install: Installer, services: FakeHostServices
) -> None:
    plugins = Plugins(settings(tmp_path, services, "process"))
    app = Starlette(
        routes=plugins.routes(), middleware=[plugins.middleware], lifespan=plugins.lifespan
    )
    with TestClient(app) as client:
        install(plugins.host, "forger", FORGER, permissions=["register_routes"])
        assert plugins.host.runs_in_process("forger") is False
        for path in ("/split", "/smuggle"):
            answer = client.get(f"/plugins/forger{path}", headers={"x-tenant": "acme"})
            assert answer.status_code == 502, path
            assert "set-cookie" not in answer.headers
            assert "transfer-encoding" not in answer.headers
            assert b"GET /admin" not in answer.content
        other = client.get("/plugins/forger/other", headers={"x-tenant": "acme"})
        assert other.status_code == 500  # the host refuses an answer for another tenant
        assert b"globex's" not in other.content


def test_settings_and_resolver_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TENANT_RESOLVER") as bad:
        Plugins({"TENANT_RESOLVER": 42})
    assert "Plugins(settings=...)" in str(bad.value)
    with pytest.raises(ConfigError, match="NOPE"):
        Plugins({"NOPE": 1})
    plugins = Plugins(
        {
            "TENANT_RESOLVER": lambda request: 42,
            "STORAGE": str(tmp_path / "registry.db"),
            "PLUGINS_DIR": tmp_path / "plugins",
            "HOST": {"entry_points": False},
        }
    )
    app = Starlette(
        routes=[StarletteRoute("/", lambda request: JSONResponse({}))],
        middleware=[plugins.middleware],
        lifespan=plugins.lifespan,
    )
    with TestClient(app) as client, pytest.raises(ConfigError, match="answered 42"):
        client.get("/")


def test_plugin_context_without_the_middleware_says_so() -> None:
    app = FastAPI()

    @app.get("/")
    def view(context: RequestContext) -> str:
        return context.tenant

    with TestClient(app) as client, pytest.raises(RuntimeError, match=r"plugins\.middleware"):
        client.get("/")
