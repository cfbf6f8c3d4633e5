"""The tests' Starlette app, as ``uvicorn --factory sap_starlette_app:create_app`` serves it.

Its settings come from environment variables (each uvicorn worker process builds its own
app): ``SAP_ST_STORAGE`` (a SQLite file or a ``postgresql://`` URL; with ``SAP_ST_PG_SCHEMA``,
the registry in that schema), ``SAP_ST_PLUGINS_DIR``,
``SAP_ST_SANDBOX`` and ``SAP_ST_HOST`` (JSON keyword arguments). The tenant is the
``x-tenant`` header. Every answer carries the worker's pid (``x-worker-pid``). Besides
the plugin routes under ``/plugins`` it has:

- ``GET /lag``: the p99 and worst of the event loop's lateness, in ms, measured by a task
  that sleeps 1 ms over and over since the last ``POST /lag`` (see :class:`LagMonitor`);
- ``GET /suspensions``: the host's suspensions, as ``[[plugin_id, tenant], ...]``;
- ``GET /ping``: the worker's pid, from no plugin (the baseline of the load test);
- ``GET /page``: a page with the plugins' head fragment (``plugins_head``).
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
from starlette.responses import HTMLResponse, JSONResponse, Response
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
    """Sleeps 1 ms over and over and records how late each wake-up was.

    Two figures per wake-up: the wall-clock lateness (whatever made it late: the loop's
    own work, or the process waiting for a CPU on a busy machine), and the lateness
    the loop's thread spent running (its CPU time beyond the 1 ms: work done on the
    loop while the timer was due, which a process left waiting for a CPU does not add).
    """

    def __init__(self) -> None:
        self.late: list[float] = []
        self.busy: list[float] = []

    async def run(self) -> None:
        while True:
            start, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(0.001)
            self.late.append(max(0.0, time.perf_counter() - start - 0.001))
            self.busy.append(max(0.0, time.thread_time() - cpu - 0.001))

    def clear(self) -> None:
        self.late.clear()
        self.busy.clear()

    def summary(self) -> dict[str, Any]:
        found: dict[str, Any] = {"count": len(self.late)}
        for name, values in (("", self.late), ("cpu_", self.busy)):
            ordered = sorted(values) or [0.0]
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            found[f"{name}p99_ms"] = p99 * 1000
            found[f"{name}worst_ms"] = ordered[-1] * 1000
        return found


def _options(name: str) -> dict[str, Any]:
    given = os.environ.get(name)
    return dict(json.loads(given)) if given else {}


def _storage() -> object:
    url, schema = os.environ["SAP_ST_STORAGE"], os.environ.get("SAP_ST_PG_SCHEMA")
    if not schema:
        return url

    def open_storage() -> object:
        from services_ai_plugins.storage import PostgresStorage

        return PostgresStorage(url, schema=schema, max_size=4)

    return open_storage


def create_app() -> Starlette:
    plugins = Plugins(
        {
            "TENANT_RESOLVER": tenant_of,
            "STORAGE": _storage(),
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
            monitor.clear()
        return JSONResponse(monitor.summary())

    async def ping(request: Request) -> Response:
        return JSONResponse({"pid": os.getpid()})

    head = plugins.template_globals()["plugins_head"]

    def page(request: Request) -> Response:  # a def endpoint: the hooks run in a thread
        return HTMLResponse(f"<html><head>{head(request)}</head><body>page</body></html>")

    async def suspensions(request: Request) -> Response:
        found = plugins.host.suspensions()
        return JSONResponse([[s.plugin_id, s.tenant] for s in found])

    return Starlette(
        routes=[
            *plugins.routes(),
            Route("/lag", lag, methods=["GET", "POST"]),
            Route("/suspensions", suspensions),
            Route("/ping", ping),
            Route("/page", page),
        ],
        middleware=[Middleware(WorkerPid), plugins.middleware],
        lifespan=lifespan,
    )
