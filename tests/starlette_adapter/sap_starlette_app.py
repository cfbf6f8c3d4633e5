"""The tests' Starlette app, as ``uvicorn --factory sap_starlette_app:create_app`` serves it.

Its settings come from environment variables (each uvicorn worker process builds its own
app): ``SAP_ST_STORAGE`` (a SQLite file or a ``postgresql://`` URL), ``SAP_ST_PLUGINS_DIR``,
``SAP_ST_SANDBOX`` and ``SAP_ST_HOST`` (JSON keyword arguments). The tenant is the
``x-tenant`` header. Every answer carries the worker's pid (``x-worker-pid``). Besides
the plugin routes under ``/plugins`` it has:

- ``GET /lag``: the p99 (and worst, and count) of the event loop's lateness, in ms, measured
  by a task that sleeps 1 ms over and over since the last ``POST /lag``;
- ``GET /suspensions``: the host's suspensions, as ``[[plugin_id, tenant], ...]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services_ai_plugins.starlette import Plugins


def tenant_of(request: Request) -> str | None:
    return request.headers.get("x-tenant") or None


class WorkerPid:
    """Adds ``x-worker-pid`` to every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.pid = str(os.getpid()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-worker-pid", self.pid)]
            await send(message)

        await self.app(scope, receive, stamped)


class LagMonitor:
    """Sleeps 1 ms over and over and records how late each wake-up was."""

    def __init__(self) -> None:
        self.late: list[float] = []

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            self.late.append(max(0.0, time.perf_counter() - start - 0.001))

    def summary(self) -> dict[str, Any]:
        late = sorted(self.late)
        if not late:
            return {"count": 0, "p99_ms": 0.0, "worst_ms": 0.0}
        p99 = late[min(len(late) - 1, int(len(late) * 0.99))]
        return {"count": len(late), "p99_ms": p99 * 1000, "worst_ms": late[-1] * 1000}


def _options(name: str) -> dict[str, Any]:
    given = os.environ.get(name)
    return dict(json.loads(given)) if given else {}


def create_app() -> Starlette:
    plugins = Plugins(
        {
            "TENANT_RESOLVER": tenant_of,
            "STORAGE": os.environ["SAP_ST_STORAGE"],
            "PLUGINS_DIR": os.environ["SAP_ST_PLUGINS_DIR"],
            "SANDBOX": _options("SAP_ST_SANDBOX"),
            "HOST": {"entry_points": False, **_options("SAP_ST_HOST")},
        }
    )
    monitor = LagMonitor()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with plugins.lifespan(app):
            task = asyncio.create_task(monitor.run())
            try:
                yield
            finally:
                task.cancel()

    async def lag(request: Request) -> Response:
        if request.method == "POST":
            monitor.late.clear()
        return JSONResponse(monitor.summary())

    async def suspensions(request: Request) -> Response:
        found = plugins.host.suspensions()
        return JSONResponse([[s.plugin_id, s.tenant] for s in found])

    return Starlette(
        routes=[
            *plugins.routes(),
            Route("/lag", lag, methods=["GET", "POST"]),
            Route("/suspensions", suspensions),
        ],
        middleware=[Middleware(WorkerPid), plugins.middleware],
        lifespan=lifespan,
    )
