"""``services_ai_plugins.starlette`` under a real uvicorn on 127.0.0.1.

The tests' app (``sap_starlette_app.create_app``) is started with ``uvicorn --factory`` in
a subprocess: with two worker processes on one PostgreSQL registry, an approval made
through the registry after both started is served by both; with one worker, 200
concurrent requests to a sandboxed plugin's route never stall the event loop.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Installer
from services_ai_plugins import PluginHost, SandboxPolicy
from services_ai_plugins_testing.fakes import FakeHostServices

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"

HEADER = (
    "import os, time\n"
    "import attrs\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import ApiResponse, Route\n\n\n"
    "class Plugin:\n"
)

#: A route answering from its sandbox worker (its pid: not the web process's), and one
#: that takes 100 ms there: were the web process to wait for it on its event loop, the
#: loop would stall that long, once per request.
HELLO = """
@hookimpl
def register_routes(self, plugin_id):
    def hello(request):
        return ApiResponse.json(request.tenant, {
            "tenant": request.tenant, "pid": os.getpid(), "stamp": request.headers.get("x-stamp")
        })

    def slow(request):
        time.sleep(0.1)
        return hello(request)

    return [Route(path="/hello", handler=hello, name="hello"),
            Route(path="/slow", handler=slow, name="slow")]

@hookimpl
def api_request(self, request):
    return attrs.evolve(request, headers={**request.headers, "x-stamp": "stamped"})

@hookimpl
def inject_head(self, context):
    return '<meta name="hello" content="' + context.tenant + '">'
"""

#: What HELLO needs: its routes, the api_request filter and its head fragment.
PERMISSIONS = ["register_routes", "api_hooks", "inject_html"]


#: The p99 of the event loop's lateness that its own work causes (``LagMonitor``'s CPU
#: figure), per route, in ms. /slow (100 ms in its worker, the 200 requests spread over
#: about 5 s): 5 ms, the issue's figure. /hello (an instant answer, the 200 requests in
#: one burst of about half a second): 10 ms. On the 2-core test machine, with the load
#: generator on the same cores, the burst's p99 measured 3-6 ms, a route of no plugin
#: 0-3 ms: the loop is busy with the burst itself (about 1 ms of its work per request,
#: HTTP included), not blocked on a plugin. See the report of issue 20.
CPU_P99_BOUND_MS = {"slow": 5.0, "hello": 10.0}
#: The wall-clock p99, in ms: it adds the time the server waits for a CPU on a busy machine
#: (a route of no plugin measured 4-10 ms under the same load), bounded well under the
#: 100 ms a /slow request takes in its worker, which a loop waiting for its worker shows.
WALL_P99_BOUND_MS = 50.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def get(port: int, path: str, tenant: str | None = None, method: str = "GET") -> Any:
    """One request on a new connection (so the kernel may hand it to either worker); its
    body read, as ``.body``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, headers={"x-tenant": tenant} if tenant else {})
        response = connection.getresponse()
        response.body = response.read()
        return response
    finally:
        connection.close()


def _body(port: int, path: str, method: str = "GET") -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


@pytest.fixture
def uvicorn_server(tmp_path: Path) -> Iterator[Any]:
    """Start the tests' app under uvicorn: ``start(workers, **env)`` answers its port."""
    started: list[subprocess.Popen[bytes]] = []
    logs: list[Any] = []

    def start(workers: int, **env: str) -> int:
        port = _free_port()
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
            "SAP_ST_PLUGINS_DIR": str(tmp_path / "plugins"),
            **env,
        }
        log = (tmp_path / f"uvicorn-{port}.log").open("wb")
        logs.append(log)
        command = [
            sys.executable, "-m", "uvicorn", "--factory", "sap_starlette_app:create_app",
            "--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--log-level", "warning",
        ]  # fmt: skip
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=log)
        started.append(process)
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / f"uvicorn-{port}.log").read_text()
            try:
                if get(port, "/lag").status == 200:
                    return port
            except OSError:
                pass
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.2)

    try:
        yield start
    finally:
        for process in started:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=60)
        for log in logs:
            log.close()


def pids_answering(port: int, path: str, tenant: str, status: int, *, want: int = 2) -> set[str]:
    """Request on new connections until ``want`` worker pids answered ``status`` (60 s at most)."""
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while len(seen) < want:
        assert time.monotonic() < deadline, f"only workers {seen} answered {status}"
        response = get(port, path, tenant)
        if response.status == status:
            seen.add(response.getheader("x-worker-pid"))
    return seen


@pytest.fixture
def schema(postgres_url: str) -> Iterator[str]:
    """A schema of its own for this test, dropped afterwards."""
    import psycopg

    name = f"starlette_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_an_approval_is_served_by_both_uvicorn_workers(
    postgres_url: str, schema: str, uvicorn_server: Any, tmp_path: Path
) -> None:
    from services_ai_plugins.storage import PostgresStorage

    port = uvicorn_server(
        2,
        SAP_ST_STORAGE=postgres_url,
        SAP_ST_PG_SCHEMA=schema,
        SAP_ST_HOST=json.dumps({"refresh_interval": 0.2}),
        # In the web process (its head fragment is trusted HTML only there: see web.head_html).
        SAP_ST_SANDBOX=json.dumps({"timeout": 30.0, "trusted": ["hello"]}),
    )
    # Both workers are up and serve no plugin yet.
    before = pids_answering(port, "/plugins/hello/hello", "acme", 404)
    storage = PostgresStorage(postgres_url, schema=schema, max_size=2)
    admin = PluginHost(
        FakeHostServices(),
        storage=storage,
        plugins_dir=tmp_path / "plugins",
        entry_points=False,
        sandbox=SandboxPolicy(timeout=30.0),
    )
    try:
        # Installed, approved and enabled in another process, after both workers started.
        Installer(tmp_path / "archives", HEADER)(admin, "hello", HELLO, permissions=PERMISSIONS)
        after = pids_answering(port, "/plugins/hello/hello", "acme", 200)
        assert after == before  # the same two workers, each now serving the plugin
        assert get(port, "/plugins/hello/hello", "globex").status == 404
        # In each worker: the api_request filter ran, and the head fragment is in the page.
        stamped, headed = set(), set()
        deadline = time.monotonic() + 60
        while stamped != before or headed != before:
            assert time.monotonic() < deadline, (stamped, headed)
            answer = get(port, "/plugins/hello/hello", "acme")
            if json.loads(answer.body)["stamp"] == "stamped":
                stamped.add(answer.getheader("x-worker-pid"))
            page = get(port, "/page", "acme")
            if '<meta name="hello" content="acme">' in page.body.decode():
                headed.add(page.getheader("x-worker-pid"))
        assert "hello" not in get(port, "/page", "globex").body.decode()
        admin.registry.disable("hello", "acme", actor="admin")
        assert pids_answering(port, "/plugins/hello/hello", "acme", 404) == before
    finally:
        admin.close()
        storage.close()


@pytest.mark.slow
def test_200_concurrent_requests_never_stall_the_event_loop(
    uvicorn_server: Any, tmp_path: Path
) -> None:
    import httpx

    from services_ai_plugins.storage import SQLiteStorage

    db = tmp_path / "registry.db"
    # Four workers at 100 ms a call: the 200 calls take about 5 s, none waits 120 s.
    policy = {"timeout": 30.0, "workers_per_plugin": 4, "wait_timeout": 120.0}
    admin = PluginHost(
        FakeHostServices(),
        storage=SQLiteStorage(db),
        plugins_dir=tmp_path / "plugins",
        entry_points=False,
        sandbox=SandboxPolicy(**policy),
    )
    try:
        # Its routes only: the filter and the head fragment are not granted (not called).
        Installer(tmp_path / "archives", HEADER)(
            admin, "hello", HELLO, permissions=["register_routes"]
        )
    finally:
        admin.close()
        admin.registry.storage.close()
    port = uvicorn_server(1, SAP_ST_STORAGE=str(db), SAP_ST_SANDBOX=json.dumps(policy))
    base = f"http://127.0.0.1:{port}"

    async def load(path: str, count: int) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
            headers = {"x-tenant": "acme"}
            return await asyncio.gather(*(client.get(path, headers=headers) for _ in range(count)))

    def measured(path: str) -> tuple[list[httpx.Response], dict[str, float]]:
        _body(port, "/lag", "POST")  # the lag measured from here
        answers = asyncio.run(load(path, 200))
        return answers, _body(port, "/lag")

    # Warm-up: the plugin's four workers started (each start is a fork, in a thread).
    assert {a.status_code for a in asyncio.run(load("/plugins/hello/slow", 8))} == {200}
    _, baseline = measured("/ping")  # the same load on a route of no plugin
    server_pid = int(get(port, "/lag").getheader("x-worker-pid"))
    for route, busy_bound in CPU_P99_BOUND_MS.items():
        answers, lag = measured(f"/plugins/hello/{route}")
        print(f"200 concurrent to /{route}: loop lag {lag}; no plugin: {baseline}")  # noqa: T201
        assert [a.status_code for a in answers] == [200] * 200
        assert all(a.json()["pid"] != server_pid for a in answers)  # sandboxed: not in-process
        assert _body(port, "/suspensions") == []  # nobody suspended for queueing
        assert lag["count"] > 50
        assert lag["cpu_p99_ms"] <= busy_bound, (route, lag, baseline)
        assert lag["p99_ms"] <= WALL_P99_BOUND_MS, (route, lag, baseline)
