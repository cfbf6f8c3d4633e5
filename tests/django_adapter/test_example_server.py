"""The example CRM as its README runs it: ``manage.py crm_demo``, then a real server.

A fresh data folder, the documented commands in subprocesses, and HTTP requests to
``manage.py runserver`` on 127.0.0.1: the original system's plugin and the sandboxed one
answer their business, and nobody else.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django_app"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("SAP_DJANGO_DB") == "postgres",
        reason="the example project runs on its own SQLite file: the first run tests it",
    ),
]


def _environment(data: Path) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "SAP_", "SERVICES_AI_PLUGINS_DB"))
    }
    environment.update(CRM_DATA=str(data), DJANGO_SETTINGS_MODULE="crm.settings", CRM_DEBUG="0")
    return environment


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    """The example set up by ``crm_demo`` and served by ``runserver`` on 127.0.0.1."""
    environment = _environment(tmp_path / "data")
    demo = subprocess.run(
        [sys.executable, "manage.py", "crm_demo"],
        cwd=EXAMPLE,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr
    assert "installed lead-notes, enabled for acme" in demo.stdout
    assert "installed hello-widget, enabled for acme, globex" in demo.stdout
    again = subprocess.run(
        [sys.executable, "manage.py", "crm_demo"],
        cwd=EXAMPLE,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert "installed" not in again.stdout  # a second run changes nothing

    port = _free_port()
    log = tmp_path / "runserver.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=EXAMPLE,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def _get(port: int, path: str, host: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path, headers={"Host": host})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def test_the_readme_commands_serve_both_plugins_to_their_businesses(server: int) -> None:
    status, body = _get(server, "/plugins/lead-notes/my-route/", "acme.localhost")
    assert status == 200, body
    assert b"Ada Lovelace" in body
    assert b"Grace Hopper" not in body
    assert _get(server, "/plugins/lead-notes/my-route/", "globex.localhost")[0] == 404

    status, body = _get(server, "/plugins/hello-widget/hello", "globex.localhost")
    assert status == 200, body
    assert json.loads(body) == {"greeting": "Hello", "tenant": "globex", "leads": 1}

    status, page = _get(server, "/", "acme.localhost")
    assert status == 200
    assert b'<meta name="lead-notes" content="on">' in page
    assert b'class="plugin-widget-frame" title="Hello"' in page
    assert _get(server, "/plugins/hello-widget/hello", "localhost")[0] == 404
