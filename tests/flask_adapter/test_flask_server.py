"""The Flask extension on a real server: werkzeug's threaded server on 127.0.0.1 answering HTTP.

The plugins are uploaded ZIPs installed while the server runs (after its first request),
over a SQLite registry in ``tmp_path``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import flask
import httpx
import pytest
from flask_helpers import as_tenant, hostile, make_app, notes, serving

from services_ai_plugins.flask import PluginsExtension

TIMEOUT = 60.0  # generous: the machine is shared and noisy


@pytest.fixture
def crm(tmp_path: Path) -> Iterator[tuple[flask.Flask, PluginsExtension, httpx.Client]]:
    """The app served on 127.0.0.1, a client for it; the server stopped and the host closed."""
    app, ext = make_app(tmp_path)
    try:
        with serving(app) as base, httpx.Client(base_url=base, timeout=TIMEOUT) as client:
            yield app, ext, client
    finally:
        ext.close()


def test_plugin_routes_follow_the_registry_on_a_running_server(
    crm: tuple[flask.Flask, PluginsExtension, httpx.Client], tmp_path: Path
) -> None:
    """Installed, approved and enabled while the server runs: its route answers 200 for acme
    (the api_request filter ran, a chunked body arrives whole), 404 for globex; its head
    fragment is in acme's page; the URL url_for builds is served; disabled, it stops
    answering at the next request."""
    app, ext, client = crm
    assert client.get("/plugins/notes/hello", headers=as_tenant("acme")).status_code == 404
    notes(ext, tmp_path)

    answer = client.get("/plugins/notes/hello?tag=x", headers=as_tenant("acme", "ada"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["seen_by"] == "notes"
    assert answer.json()["user"] == "ada"
    assert answer.json()["query"] == {"tag": ["x"]}
    assert client.get("/plugins/notes/hello", headers=as_tenant("globex")).status_code == 404

    def chunks() -> Iterator[bytes]:
        yield b"first "
        yield b"second"

    posted = client.post("/plugins/notes/hello", content=chunks(), headers=as_tenant("acme"))
    assert posted.status_code == 200, posted.text
    assert posted.json()["body"] == "first second"

    page = client.get("/", headers=as_tenant("acme")).text
    assert '<meta name="notes" content="on">' in page.split("</head>", 1)[0]
    assert "notes" not in client.get("/", headers=as_tenant("globex")).text

    with app.test_request_context("/"):
        url = flask.url_for("plugins.notes.lead", lead_id="L-1")
    assert client.get(url, headers=as_tenant("acme")).json() == {"lead": "L-1"}

    ext.host.registry.disable("notes", "acme", actor="admin")
    assert client.get("/plugins/notes/hello", headers=as_tenant("acme")).status_code == 404


def test_a_query_that_is_not_utf8_is_answered_400(
    crm: tuple[flask.Flask, PluginsExtension, httpx.Client], tmp_path: Path
) -> None:
    """The adapter refuses it before the plugin runs, and says why."""
    _, ext, client = crm
    notes(ext, tmp_path)
    answer = client.get("/plugins/notes/hello?name=%FF", headers=as_tenant("acme"))
    assert answer.status_code == 400
    assert "not UTF-8" in answer.json()["error"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")
def test_a_sandboxed_plugin_on_a_running_server(
    crm: tuple[flask.Flask, PluginsExtension, httpx.Client], tmp_path: Path
) -> None:
    """An uploaded plugin under the default policy: its route answers from its worker, its
    footer script is text in the page, and a header that would frame the connection is
    answered 502 with the connection still readable."""
    _, ext, client = crm
    hostile(ext, tmp_path)
    assert not ext.host.runs_in_process("hostile")
    answer = client.get("/plugins/hostile/hello", headers=as_tenant("acme"))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"sandboxed": "acme"}
    assert client.get("/plugins/hostile/hello", headers=as_tenant("globex")).status_code == 404

    page = client.get("/", headers=as_tenant("acme")).text
    assert "<script" not in page
    assert "&lt;script&gt;" in page

    split = client.get("/plugins/hostile/split", headers=as_tenant("acme"))
    assert split.status_code == 502
    assert split.json() == {"error": "bad gateway"}
    assert client.get("/plugins/hostile/hello", headers=as_tenant("acme")).status_code == 200
