"""Question "starlette_route": a plugin route served by the Starlette adapter, against a
plain Starlette route answering the same bytes, each through the whole ASGI app.

SDK: 100 ``GET /plugins/web/stats`` calls of the ASGI app in one event-loop run: the
adapter's middleware (tenant resolved, request context set), its ``Mount`` (the body read,
the request converted, the ``api_request`` filter on ``host.ahook``, ``await
host.aserve(...)`` with its tenant gate and guarded in-process handler, the
``api_response`` filter, the answer checked by ``web.write_asgi``). Baseline: 100
``GET /plain`` calls to a Starlette route returning ``Response(b"ok")`` through the same
app and middleware. No target was set before the first measurement: the baseline is a
bare route called without a server or client, so the ratio shows the adapter's own work
per request (about 80 µs: the request converted, two filter calls, the guarded handler,
the answer checked) against almost nothing.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from _harness import Contender, compare, install_plugin
from services_ai_plugins.starlette import Plugins

PLUGIN = """\
from services_ai_plugins import hookimpl
from services_ai_plugins.events import ApiResponse, Route


def stats(request):
    return ApiResponse(tenant=request.tenant, status=200, body=b"ok")


class Plugin:
    @hookimpl
    def register_routes(self, plugin_id):
        return [Route(path="/stats", handler=stats, name="stats")]
"""

CALLS = 100


def tenant_of(request: Request) -> str | None:
    tenant: str | None = request.headers.get("x-tenant")
    return tenant


async def plain(request: Request) -> Response:
    return Response(b"ok")


def scope_of(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench"), (b"x-tenant", b"acme")],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }


async def call(app: Any, path: str) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope_of(path), receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="services-ai-plugins-bench-starlette-"))
    plugins = Plugins(
        {
            "TENANT_RESOLVER": tenant_of,
            "STORAGE": str(root / "registry.db"),
            "PLUGINS_DIR": str(root / "plugins"),
            "SANDBOX": {"isolation": {"archive": "inprocess"}},
            "HOST": {"entry_points": False},
        }
    )
    app = Starlette(
        routes=[*plugins.routes(), Route("/plain", plain)], middleware=[plugins.middleware]
    )
    install_plugin(plugins.host, root, "web", PLUGIN, permissions=("register_routes",))
    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(call(app, "/plugins/web/stats")) == (200, b"ok")
    assert loop.run_until_complete(call(app, "/plain")) == (200, b"ok")

    async def many(path: str) -> None:
        for _ in range(CALLS):
            await call(app, path)

    def sdk() -> None:
        loop.run_until_complete(many("/plugins/web/stats"))

    def baseline() -> None:
        loop.run_until_complete(many("/plain"))

    compare(
        "starlette_route",
        sdk=Contender(
            "plugin route via Starlette x100",
            "middleware, Mount, request converted, filters, host.aserve, answer checked",
            sdk,
        ),
        baseline=Contender(
            "plain Starlette route x100",
            "the same app and middleware, a route returning the same bytes",
            baseline,
        ),
    )


if __name__ == "__main__":
    main()
