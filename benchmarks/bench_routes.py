"""Question "routes_100": serving a request through the host's route table of 100 routes
against Starlette's ``Router`` resolving the same paths.

20 in-process archive plugins, each returning five routes from ``register_routes``
(two literal, two with a ``{name}`` parameter, one ``{name:path}``): a table of 100
routes. SDK: ``host.serve(request)`` for 100 requests spread over every route: the
plugin found by its prefix, the route matched, the tenant's grant and activation
checked in the snapshot, the handler called guarded (its ``api`` injected, timed into
metrics, its response checked). Baseline: a Starlette ``Router`` holding the same 100
paths (``/<plugin>/<path>``, same parameters) resolving each path the way
``Router.app`` does (every route's ``matches(scope)`` in order until a full match),
then calling the same kind of handler with the path parameters. Target: at most 1.0x.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from starlette.routing import Match, Route, Router

from _harness import Contender, compare, install_plugin
from services_ai_plugins import PluginHost, SandboxPolicy, SQLiteStorage
from services_ai_plugins.events import ApiRequest, ApiResponse
from services_ai_plugins.storage import SourceKind
from services_ai_plugins.types import Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

PLUGINS = 20

PLUGIN = """\
from services_ai_plugins import hookimpl
from services_ai_plugins.events import ApiResponse, Route


def answer(request, api):
    return ApiResponse(tenant=request.tenant, status=200, body=b"ok")


class Plugin:
    @hookimpl
    def register_routes(self, plugin_id):
        return [
            Route(path="/stats", handler=answer, name="stats"),
            Route(path="/leads", handler=answer, name="leads", methods=("GET", "POST")),
            Route(path="/leads/{lead_id}", handler=answer, name="lead"),
            Route(path="/leads/{lead_id}/notes", handler=answer, name="notes"),
            Route(path="/files/{rest:path}", handler=answer, name="files"),
        ]
"""

#: The path of each route, and a request path for it.
PATHS = [
    ("/stats", "/stats"),
    ("/leads", "/leads"),
    ("/leads/{lead_id}", "/leads/L-1"),
    ("/leads/{lead_id}/notes", "/leads/L-2/notes"),
    ("/files/{rest:path}", "/files/a/b.txt"),
]


def make_host(root: Path) -> PluginHost:
    host = PluginHost(
        FakeHostServices(),
        storage=SQLiteStorage(root / "registry.db"),
        plugins_dir=root / "plugins",
        entry_points=False,
        sandbox=SandboxPolicy(isolation=dict.fromkeys(SourceKind, Isolation.INPROCESS)),
    )
    for number in range(PLUGINS):
        install_plugin(host, root, f"web-{number:02d}", PLUGIN, permissions=("register_routes",))
    host.refresh()
    return host


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="services-ai-plugins-bench-routes-"))
    host = make_host(root)
    assert len(host.routes()) == 5 * PLUGINS
    requests = [
        ApiRequest(tenant="acme", method="GET", path=f"/web-{number:02d}{path}")
        for number in range(PLUGINS)
        for _, path in PATHS
    ]
    serve = host.serve
    for request in requests:
        assert serve(request).status == 200, request.path

    def endpoint(tenant: str, params: dict[str, Any]) -> ApiResponse:
        return ApiResponse(tenant=tenant, status=200, body=b"ok")

    router = Router(
        routes=[
            Route(f"/web-{number:02d}{pattern}", endpoint, methods=["GET", "POST"])
            for number in range(PLUGINS)
            for pattern, _ in PATHS
        ]
    )
    scopes = [
        {"type": "http", "method": "GET", "path": request.path, "root_path": "", "headers": []}
        for request in requests
    ]
    routes = router.routes

    def starlette() -> None:
        for scope in scopes:
            for route in routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    endpoint("acme", child["path_params"])
                    break

    def sdk() -> None:
        for request in requests:
            serve(request)

    starlette()
    compare(
        "routes_100",
        sdk=Contender(
            "host.serve x100",
            "100 routes of 20 plugins: match, tenant gate, guarded handler with its api",
            sdk,
        ),
        baseline=Contender(
            "starlette Router matching x100",
            "the same 100 paths: Route.matches in order, then the endpoint",
            starlette,
        ),
    )


if __name__ == "__main__":
    main()
