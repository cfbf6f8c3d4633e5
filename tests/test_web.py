"""The framework-neutral converters of ``services_ai_plugins.web``, against Werkzeug and Starlette.

WSGI environs come from Werkzeug's ``EnvironBuilder`` and round trips go through
its test ``Client``; the ASGI app is mounted in a real Starlette application and
driven through Starlette's ``TestClient``. The last tests send requests made by
the converters to a hostile sandboxed plugin through a real host, and write
what it answers back.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import urllib.parse
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Mount
from werkzeug.test import Client, EnvironBuilder

from conftest import Hosts, Installer
from services_ai_plugins import PluginError, PluginHost, SandboxPolicy
from services_ai_plugins.errors import RequestTooLarge
from services_ai_plugins.events import HTTP_METHODS, ApiRequest, ApiResponse, Route
from services_ai_plugins.web import (
    DEFAULT_MAX_BODY,
    read_asgi_body,
    request_from_asgi,
    request_from_wsgi,
    write_asgi,
    write_wsgi,
)

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 and warns about httpx, the dev group's client (the
    # warning is about its future transport, not about what these tests use).
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

#: The body limit of the tests' apps.
LIMIT = 1000


class CountingInput:
    """A ``wsgi.input`` that counts the bytes read from it."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self.read_bytes += len(chunk)
        return chunk


def _echo(request: ApiRequest) -> ApiResponse:
    """What the tests' apps answer: the request as they received it, as JSON."""
    return ApiResponse.json(
        request.tenant,
        {
            "method": request.method,
            "path": request.path,
            "route_path": request.route_path,
            "full_path": request.full_path,
            "headers": dict(request.headers),
            "query": [[name, list(values)] for name, values in request.query.items()],
            "body": request.body.decode("utf-8"),
        },
        201,
        headers={"X-Echo": "yes", "Cache-Control": "no-store"},
    )


# -- WSGI: environ -> ApiRequest ---------------------------------------------------------------


def test_a_werkzeug_environ_becomes_the_request_it_describes() -> None:
    """Mount point, non-ASCII path, repeated query values, mixed-case and repeated headers, JSON."""
    environ = EnvironBuilder(
        path="/crm/l%C3%A4den/%E2%82%AC",
        base_url="http://shop.example/plugins",
        method="POST",
        query_string="tag=new&page=&tag=hot&q=caf%C3%A9+au+lait&tag=new",
        headers=[("X-Tag", "a"), ("x-tag", "b"), ("Accept", "application/json")],
        json={"name": "Zoë"},
    ).get_environ()
    request = request_from_wsgi(environ, tenant="acme")
    assert request.method == "POST"
    assert request.path == "/crm/läden/€"
    assert request.full_path == "/plugins/crm/läden/€"
    assert request.route_path == request.path  # the host sets it when it dispatches
    assert list(request.query.items()) == [
        ("tag", ("new", "hot", "new")),
        ("page", ("",)),
        ("q", ("café au lait",)),
    ]
    assert request.query_value("tag") == "new"
    body = json.dumps({"name": "Zoë"}).encode()
    assert request.body == body
    assert request.headers["x-tag"] == "a, b"
    assert request.headers["accept"] == "application/json"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["content-length"] == str(len(body))
    assert request.headers["host"] == "shop.example"
    assert all(name == name.lower() and "_" not in name for name in request.headers)
    assert (request.tenant, request.user) == ("acme", None)


def test_an_empty_body_and_an_unmounted_app() -> None:
    """A GET without a body reads nothing; without SCRIPT_NAME the full path is the path."""
    environ = EnvironBuilder(path="/crm/leads", method="GET").get_environ()
    request = request_from_wsgi(environ, tenant="acme")
    assert request.body == b""
    assert (request.path, request.full_path) == ("/crm/leads", "/crm/leads")
    assert "content-type" not in request.headers
    root = EnvironBuilder(path="", base_url="http://localhost/plugins").get_environ()
    root["PATH_INFO"] = ""
    mounted = request_from_wsgi(root, tenant="acme")
    assert (mounted.path, mounted.full_path) == ("/", "/plugins")


def _environ(data: bytes, **overrides: Any) -> tuple[dict[str, Any], CountingInput]:
    stream = CountingInput(data)
    environ = EnvironBuilder(path="/crm/upload", method="POST").get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": stream, **overrides})
    return environ, stream


def test_a_declared_body_over_the_limit_is_refused_before_any_of_it_is_read() -> None:
    """CONTENT_LENGTH over max_body raises RequestTooLarge (413) and reads no byte."""
    environ, stream = _environ(b"x" * 10_000, CONTENT_LENGTH="10000")
    with pytest.raises(RequestTooLarge) as caught:
        request_from_wsgi(environ, tenant="acme", max_body=LIMIT)
    assert (caught.value.limit, caught.value.size, caught.value.status) == (LIMIT, 10_000, 413)
    assert str(caught.value) == "the request body of 10000 bytes is over the limit of 1000 bytes"
    assert isinstance(caught.value, PluginError)
    assert isinstance(caught.value, ValueError)
    assert stream.read_bytes == 0


def test_a_chunked_body_is_read_up_to_the_limit_and_no_further() -> None:
    """Without a length, a body the server ends is read to max_body + 1 bytes at most."""
    environ, stream = _environ(b"x" * 100_000, **{"wsgi.input_terminated": True})
    with pytest.raises(RequestTooLarge, match="limit of 1000 bytes: more arrived") as caught:
        request_from_wsgi(environ, tenant="acme", max_body=LIMIT)
    assert caught.value.size is None
    assert stream.read_bytes == LIMIT + 1
    chunked, _ = _environ(b"y" * LIMIT, HTTP_TRANSFER_ENCODING="chunked")
    assert request_from_wsgi(chunked, tenant="acme", max_body=LIMIT).body == b"y" * LIMIT


def test_a_body_exactly_at_the_limit_is_read_and_the_stream_not_beyond_its_length() -> None:
    """max_body bytes are accepted; the converter stops at CONTENT_LENGTH."""
    environ, stream = _environ(b"z" * LIMIT + b"next request", CONTENT_LENGTH=str(LIMIT))
    assert request_from_wsgi(environ, tenant="acme", max_body=LIMIT).body == b"z" * LIMIT
    assert stream.read_bytes == LIMIT


def test_an_unterminated_stream_without_a_length_is_not_read() -> None:
    """PEP 3333: without CONTENT_LENGTH or an ended stream, reading could block: none is read."""
    environ, stream = _environ(b"never read")
    assert request_from_wsgi(environ, tenant="acme").body == b""
    assert stream.read_bytes == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"PATH_INFO": "/caf\xe9"}, r"the request path \(PATH_INFO\) is not UTF-8: byte 0xe9"),
        ({"SCRIPT_NAME": "/\xff"}, r"the mount point \(SCRIPT_NAME\) is not UTF-8"),
        ({"PATH_INFO": "/€"}, "PATH_INFO holds characters beyond Latin-1"),
        ({"QUERY_STRING": "q=%FF"}, "the query string is not UTF-8 once unescaped"),
        ({"QUERY_STRING": "q=\xff"}, "the query string is not UTF-8"),
        ({"CONTENT_LENGTH": "12abc"}, r"CONTENT_LENGTH must be a number of bytes \(got '12abc'\)"),
        ({"CONTENT_LENGTH": "-1"}, "CONTENT_LENGTH must be a number of bytes"),
        ({"CONTENT_LENGTH": "50"}, "the request body ended after 4 of the 50 bytes"),
        ({"REQUEST_METHOD": "get"}, "upper-case method"),
    ],
)
def test_a_malformed_environ_is_refused_naming_what_is_wrong(
    overrides: dict[str, str], message: str
) -> None:
    """Bad bytes, lengths or methods raise ValueError (answer 400) naming the environ key."""
    environ, _ = _environ(b"four", CONTENT_LENGTH="4")
    environ.update(overrides)
    with pytest.raises(ValueError, match=message) as caught:
        request_from_wsgi(environ, tenant="acme")
    assert not isinstance(caught.value, RequestTooLarge)


# -- WSGI: a round trip through Werkzeug's test client --------------------------------------------


def _wsgi_app(handler: Callable[[ApiRequest], ApiResponse]) -> Callable[..., Iterable[bytes]]:
    """A tiny adapter: converters around ``handler``; refusals answered as an adapter would."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        try:
            request = request_from_wsgi(environ, tenant="acme", max_body=LIMIT)
        except RequestTooLarge as exc:
            return write_wsgi(ApiResponse(tenant="acme", status=exc.status), start_response)
        except ValueError as exc:
            response = ApiResponse(tenant="acme", status=400, body=str(exc).encode())
            return write_wsgi(response, start_response)
        response = handler(request)
        try:
            return write_wsgi(response, start_response)
        except ValueError as exc:
            refused = ApiResponse(tenant="acme", status=502, body=str(exc).encode())
            return write_wsgi(refused, start_response)

    return app


def test_a_wsgi_round_trip_keeps_status_headers_and_body() -> None:
    """Through werkzeug.test.Client: the request arrives whole, the response comes back as is."""
    client = Client(_wsgi_app(_echo))
    response = client.post(
        "/crm/l%C3%A4den?tag=new&tag=hot&page=2",
        base_url="http://localhost/plugins",
        data=b'{"a": 1}',
        headers=[("Content-Type", "application/json"), ("X-Trace", "1"), ("x-trace", "2")],
    )
    assert response.status == "201 Created"
    assert response.headers["X-Echo"] == "yes"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Content-Length"] == str(len(response.data))
    echoed = json.loads(response.data)
    assert echoed == {
        "method": "POST",
        "path": "/crm/läden",
        "route_path": "/crm/läden",
        "full_path": "/plugins/crm/läden",
        "headers": echoed["headers"] | {"content-type": "application/json", "x-trace": "1, 2"},
        "query": [["tag", ["new", "hot"]], ["page", ["2"]]],
        "body": '{"a": 1}',
    }
    too_large = client.post("/crm/upload", data=b"x" * (LIMIT + 1))
    assert too_large.status == "413 Request Entity Too Large"
    assert too_large.data == b""
    bad = client.get("/crm/leads?q=%FF")
    assert bad.status_code == 400
    assert b"the query string is not UTF-8" in bad.data


def test_write_wsgi_names_unknown_statuses_and_adds_no_length_where_no_body_goes() -> None:
    """An unnamed status reads 'Unknown'; a 204 and a 304 get no content-length."""
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        started.append((status, headers))

    body = write_wsgi(ApiResponse(tenant="acme", status=599, body=b"odd"), start_response)
    assert body == [b"odd"]
    assert started.pop() == ("599 Unknown", [("content-length", "3")])
    for status in (204, 304):
        assert write_wsgi(ApiResponse(tenant="acme", status=status), start_response) == [b""]
        assert started.pop()[1] == []
    given_length = ApiResponse(tenant="acme", headers={"Content-Length": "2"}, body=b"ok")
    write_wsgi(given_length, start_response)
    assert started.pop() == ("200 OK", [("Content-Length", "2")])


def test_a_head_answer_keeps_the_length_of_the_get_answer_and_sends_no_body() -> None:
    """head=True: a given content-length is passed on, none is added, no body is sent."""
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        started.append((status, headers))

    stripped = ApiResponse(tenant="acme", headers={"content-length": "1234"})
    assert write_wsgi(stripped, start_response, head=True) == [b""]
    assert started.pop() == ("200 OK", [("content-length", "1234")])
    whole = ApiResponse(tenant="acme", body=b"the GET body")
    assert write_wsgi(whole, start_response, head=True) == [b""]
    assert started.pop() == ("200 OK", [])
    with pytest.raises(ValueError, match="says '1234' but the body has 0 bytes"):
        write_wsgi(stripped, start_response)  # not a HEAD answer: the length must be true
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(write_asgi(whole, send, head=True))
    assert sent[0]["headers"] == []
    assert sent[1]["body"] == b""


# -- responses a plugin must not be able to send --------------------------------------------------

#: (headers, status, body, what the ValueError says): each would let a plugin's answer
#: split the response, add headers, or make a proxy reusing the connection misread it.
FORGED = [
    pytest.param(
        {"x-a": "1\r\nSet-Cookie: session=stolen"}, 200, b"", "control character '\\r'", id="crlf"
    ),
    pytest.param({"x-a": "1\nSet-Cookie: s=1"}, 200, b"", "control character '\\n'", id="lf"),
    pytest.param({"x-a": "nul\x00"}, 200, b"", "control character", id="nul"),
    pytest.param({"Bad Name": "1"}, 200, b"", "'Bad Name' is not an HTTP token", id="name"),
    pytest.param({"x-a: b": "1"}, 200, b"", "is not an HTTP token", id="colon"),
    pytest.param({"X-Name": "Zoë ☃"}, 200, b"", "'X-Name' holds '☃', which Latin-1", id="latin-1"),
    pytest.param({"X-A": "1", "x-a": "2"}, 200, b"", "'x-a' is given twice", id="twice"),
    pytest.param(
        {"content-length": "0"},
        200,
        b"HTTP/1.1 200 OK\r\n\r\nsmuggled",
        "says '0' but the body has",
        id="short-length",
    ),
    pytest.param(
        {"Content-Length": "99"}, 200, b"ok", "says '99' but the body has 2", id="long-length"
    ),
    pytest.param(
        {"Content-Length": "2, 2"},
        200,
        b"ok",
        "'Content-Length' must be a number",
        id="length-list",
    ),
    pytest.param({"Transfer-Encoding": "chunked"}, 200, b"0\r\n\r\n", "hop-by-hop", id="chunked"),
    pytest.param({"connection": "keep-alive"}, 200, b"", "hop-by-hop", id="connection"),
    pytest.param({"upgrade": "websocket"}, 200, b"", "hop-by-hop", id="upgrade"),
    pytest.param({}, 101, b"", "status 101 is informational", id="switching-protocols"),
    pytest.param({}, 204, b"body", "a 204 response has no body", id="body-on-204"),
]


@pytest.mark.parametrize(("headers", "status", "body", "message"), FORGED)
def test_write_wsgi_refuses_a_forged_response_before_starting_it(
    headers: dict[str, str], status: int, body: bytes, message: str
) -> None:
    """A response that could split or desynchronise the connection: ValueError, nothing started."""
    started: list[object] = []
    response = ApiResponse(tenant="acme", status=status, headers=headers, body=body)
    with pytest.raises(ValueError, match=re.escape(message)):
        write_wsgi(response, lambda status, headers: started.append(status))
    assert started == []


@pytest.mark.parametrize(("headers", "status", "body", "message"), FORGED)
def test_write_asgi_refuses_a_forged_response_before_sending_anything(
    headers: dict[str, str], status: int, body: bytes, message: str
) -> None:
    """The same refusals in ASGI: no message is sent."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    response = ApiResponse(tenant="acme", status=status, headers=headers, body=body)
    with pytest.raises(ValueError, match=re.escape(message)):
        asyncio.run(write_asgi(response, send))
    assert sent == []


# -- ASGI: a tiny app mounted in Starlette ---------------------------------------------------------


async def plugins_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A tiny ASGI adapter: read the body, convert, answer with the echo; 413 when too large."""
    try:
        body = await read_asgi_body(receive, max_body=LIMIT, scope=scope)
        request = request_from_asgi(scope, body, tenant="acme", max_body=LIMIT)
    except RequestTooLarge as exc:
        await write_asgi(ApiResponse(tenant="acme", status=exc.status), send)
        return
    await write_asgi(_echo(request), send)


@pytest.fixture
def starlette_client() -> Iterator[TestClient]:
    app = Starlette(routes=[Mount("/plugins", app=plugins_app)])
    with TestClient(app) as client:
        yield client


def test_an_asgi_app_mounted_in_starlette_gets_the_path_below_the_mount(
    starlette_client: TestClient,
) -> None:
    """Starlette keeps the full path in scope['path'] and the mount in root_path: both are kept."""
    response = starlette_client.post(
        "/plugins/crm/l%C3%A4den?tag=new&tag=hot&tag=new&empty=",
        content=b"hello",
        headers=[("X-Trace", "1"), ("x-trace", "2"), ("Content-Type", "text/plain")],
    )
    assert response.status_code == 201
    assert response.headers["x-echo"] == "yes"
    assert response.headers["content-length"] == str(len(response.content))
    echoed = response.json()
    assert (echoed["path"], echoed["full_path"]) == ("/crm/läden", "/plugins/crm/läden")
    assert echoed["query"] == [["tag", ["new", "hot", "new"]], ["empty", [""]]]
    assert echoed["headers"]["x-trace"] == "1, 2"
    assert echoed["headers"]["content-type"] == "text/plain"
    assert all(name == name.lower() for name in echoed["headers"])
    assert echoed["body"] == "hello"


def test_an_asgi_body_over_the_limit_is_answered_413(starlette_client: TestClient) -> None:
    """A body over max_body (declared by content-length) is refused with 413."""
    response = starlette_client.post("/plugins/crm/upload", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    ok = starlette_client.post("/plugins/crm/upload", content=b"x" * LIMIT)
    assert ok.status_code == 201


def _scope(path: str, root_path: str | None, **extra: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": b"",
        "headers": [],
        **extra,
    }
    if root_path is not None:
        scope["root_path"] = root_path
    return scope


@pytest.mark.parametrize(
    ("path", "root_path", "below", "full"),
    [
        pytest.param(
            "/plugins/crm/x", "/plugins", "/crm/x", "/plugins/crm/x", id="starlette>=0.33"
        ),
        pytest.param("/crm/x", "/plugins", "/crm/x", "/plugins/crm/x", id="older-stripped"),
        pytest.param("/plugins", "/plugins", "/", "/plugins", id="the-mount-itself"),
        pytest.param("/crm/x", "", "/crm/x", "/crm/x", id="no-mount"),
        pytest.param("/crm/x", None, "/crm/x", "/crm/x", id="no-root-path-key"),
        pytest.param(
            "/pluginsx/y", "/plugins", "/pluginsx/y", "/plugins/pluginsx/y", id="not-a-segment"
        ),
        pytest.param("/api/v1/crm", "/api/v1/", "/crm", "/api/v1/crm", id="root-with-slash"),
    ],
)
def test_root_path_in_both_styles(path: str, root_path: str | None, below: str, full: str) -> None:
    """Path below the mount and full path, whether the server left the mount in scope['path']."""
    request = request_from_asgi(_scope(path, root_path), b"", tenant="acme")
    assert (request.path, request.full_path, request.route_path) == (below, full, below)


def test_request_from_asgi_reads_headers_and_query_and_checks_the_scope() -> None:
    """Raw header pairs become lower-case names with repeats joined; only 'http' scopes."""
    scope = _scope(
        "/crm/x",
        None,
        method="PUT",
        query_string=b"a=1&b=%C3%A9&a=2",
        headers=[(b"X-Trace", b"1"), (b"x-trace", b"2"), (b"x-latin", b"caf\xe9")],
    )
    request = request_from_asgi(scope, b"data", tenant="acme")
    assert request.method == "PUT"
    assert list(request.query.items()) == [("a", ("1", "2")), ("b", ("é",))]
    assert request.headers == {"x-trace": "1, 2", "x-latin": "café"}
    assert request.body == b"data"
    with pytest.raises(ValueError, match="from an 'http' ASGI scope, not 'websocket'"):
        request_from_asgi({**scope, "type": "websocket"}, b"", tenant="acme")
    with pytest.raises(RequestTooLarge, match="of 5 bytes is over the limit of 4"):
        request_from_asgi(scope, b"12345", tenant="acme", max_body=4)


class Receiver:
    """An ASGI ``receive`` that hands out ``messages`` in turn and counts the calls."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return self.messages.pop(0)


def _chunks(*parts: bytes) -> list[dict[str, Any]]:
    return [
        {"type": "http.request", "body": part, "more_body": index < len(parts) - 1}
        for index, part in enumerate(parts)
    ]


def test_a_streamed_body_arrives_whole_through_the_mounted_app() -> None:
    """The app reads every chunk until more_body is false; the plugin sees one body."""
    receive = Receiver(_chunks(b"he", b"", b"llo ", b"world"))
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = _scope("/plugins/crm/x", "/plugins", method="POST")
    asyncio.run(plugins_app(scope, receive, send))
    assert receive.calls == 4
    start, body = sent
    assert start["type"] == "http.response.start"
    assert start["status"] == 201
    assert (b"x-echo", b"yes") in start["headers"]
    assert (b"content-length", str(len(body["body"])).encode()) in start["headers"]
    assert json.loads(body["body"])["body"] == "hello world"
    assert body["more_body"] is False


def test_a_streamed_body_over_the_limit_is_refused_as_soon_as_it_is_known() -> None:
    """No more chunks are received once the limit is passed; a declared length: none at all."""
    receive = Receiver(_chunks(b"x" * 600, b"x" * 600, b"x" * 600, b"x"))
    with pytest.raises(RequestTooLarge, match="limit of 1000 bytes: more arrived"):
        asyncio.run(read_asgi_body(receive, max_body=LIMIT))
    assert receive.calls == 2
    declared = Receiver(_chunks(b"x" * 2000))
    scope = _scope("/x", None, headers=[(b"content-length", b"2000")])
    with pytest.raises(RequestTooLarge) as caught:
        asyncio.run(read_asgi_body(declared, max_body=LIMIT, scope=scope))
    assert (caught.value.size, declared.calls) == (2000, 0)
    lying = Receiver(_chunks(b"x" * 600, b"x" * 600, b"x"))
    scope = _scope("/x", None, headers=[(b"content-length", b"10")])
    with pytest.raises(RequestTooLarge) as caught:
        asyncio.run(read_asgi_body(lying, max_body=LIMIT, scope=scope))
    assert (caught.value.size, lying.calls) == (None, 2)  # past its own declared length too
    assert asyncio.run(read_asgi_body(Receiver(_chunks(b"x" * LIMIT)), max_body=LIMIT)) == (
        b"x" * LIMIT
    )
    assert DEFAULT_MAX_BODY == 2**20


def test_read_asgi_body_refuses_what_is_not_a_body() -> None:
    """A disconnect is a ConnectionError, another message or a bad length a ValueError."""
    with pytest.raises(ConnectionError, match="disconnected"):
        asyncio.run(
            read_asgi_body(Receiver([*_chunks(b"a", b"b")[:1], {"type": "http.disconnect"}]))
        )
    with pytest.raises(
        ValueError, match=r"expected an 'http\.request' message, got 'websocket\.receive'"
    ):
        asyncio.run(read_asgi_body(Receiver([{"type": "websocket.receive"}])))
    scope = _scope("/x", None, headers=[(b"content-length", b"lots")])
    with pytest.raises(ValueError, match="content-length header must be a number"):
        asyncio.run(read_asgi_body(Receiver(_chunks(b"")), scope=scope))
    with pytest.raises(ValueError, match="body must be bytes"):
        asyncio.run(read_asgi_body(Receiver([{"type": "http.request", "body": 5}])))


def test_write_asgi_sends_lower_case_latin_1_headers() -> None:
    """Names lower-case, names and values Latin-1 bytes, status as is."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    response = ApiResponse(tenant="acme", status=404, headers={"X-Name": "Zoë"}, body=b"gone")
    asyncio.run(write_asgi(response, send))
    assert sent == [
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"x-name", "Zoë".encode("latin-1")), (b"content-length", b"4")],
        },
        {"type": "http.response.body", "body": b"gone", "more_body": False},
    ]


# -- generated requests ----------------------------------------------------------------------------

_SEGMENT_TEXT = st.characters(blacklist_categories=("Cs",))
_HEADER_NAME = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-",
    min_size=1,
    max_size=8,
)
_HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12)


@given(
    method=st.sampled_from(sorted(HTTP_METHODS)),
    segments=st.lists(st.text(_SEGMENT_TEXT, min_size=1, max_size=6), max_size=4),
    mount=st.sampled_from(["", "/plugins", "/app/ünï"]),
    pairs=st.lists(
        st.tuples(
            st.text(_SEGMENT_TEXT, min_size=1, max_size=5), st.text(_SEGMENT_TEXT, max_size=8)
        ),
        max_size=6,
    ),
    headers=st.lists(st.tuples(_HEADER_NAME, _HEADER_VALUE), max_size=5),
)
def test_generated_environs_keep_the_path_and_every_query_value_in_order(
    method: str,
    segments: list[str],
    mount: str,
    pairs: list[tuple[str, str]],
    headers: list[tuple[str, str]],
) -> None:
    """For any method, unicode path, repeated query names and headers in any case, the
    request has the decoded path under the mount, each name's values in order, the headers."""
    quoted = "/" + "/".join(urllib.parse.quote(segment, safe="") for segment in segments)
    environ = EnvironBuilder(
        path=quoted,
        base_url=f"http://localhost{urllib.parse.quote(mount)}",
        method=method,
        query_string=urllib.parse.urlencode(pairs),
        headers=[(f"X-{name}", value) for name, value in headers],
    ).get_environ()
    request = request_from_wsgi(environ, tenant="acme")
    path = "/" + "/".join(segments)
    assert (request.method, request.path, request.full_path) == (method, path, mount + path)
    expected: dict[str, tuple[str, ...]] = {}
    for name, value in pairs:
        expected[name] = (*expected.get(name, ()), value)
    assert list(request.query.items()) == list(expected.items())
    sent: dict[str, list[str]] = {}
    for name, value in headers:
        sent.setdefault(f"x-{name.lower()}", []).append(value)
    for name, values in sent.items():
        assert request.headers[name] == ", ".join(values)


# -- a hostile sandboxed plugin behind the converters ----------------------------------------------

HEADER = (
    "import json\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import ApiResponse, Route\n\n\n"
    "class Plugin:\n"
)

HOSTILE = """
@hookimpl
def register_routes(self, plugin_id):
    def echo(request):
        seen = {
            "path": request.path,
            "route_path": request.route_path,
            "full_path": request.full_path,
            "query": [[name, list(values)] for name, values in request.query.items()],
            "first": request.query_value("tag"),
            "headers": dict(request.headers),
            "body": request.body.decode(),
        }
        return ApiResponse(tenant=request.tenant, body=json.dumps(seen).encode())

    def split(request):
        forged = {"x-a": "1\\r\\nSet-Cookie: session=stolen"}
        return ApiResponse(tenant=request.tenant, headers=forged)

    def smuggle(request):
        forged = b"HTTP/1.1 200 OK\\r\\nContent-Length: 5\\r\\n\\r\\nowned"
        return ApiResponse(tenant=request.tenant, headers={"Content-Length": "0"}, body=forged)

    def tunnel(request):
        return ApiResponse(tenant=request.tenant, status=101, headers={"Upgrade": "h2c"})

    def chunked(request):
        forged = {"Transfer-Encoding": "chunked"}
        return ApiResponse(tenant=request.tenant, headers=forged, body=b"0\\r\\n\\r\\n")

    return [
        Route(path="/echo", handler=echo, name="echo", methods=("GET", "POST")),
        Route(path="/split", handler=split, name="split"),
        Route(path="/smuggle", handler=smuggle, name="smuggle"),
        Route(path="/tunnel", handler=tunnel, name="tunnel"),
        Route(path="/chunked", handler=chunked, name="chunked"),
    ]
"""


@pytest.fixture
def sandboxed_routes(hosts: Hosts, tmp_path: Path) -> dict[str, Route]:
    """The hostile plugin's routes, each handler served in its sandbox worker by a real host."""
    host: PluginHost = hosts(sandbox=SandboxPolicy(timeout=30.0))
    Installer(tmp_path, HEADER)(host, "forger", HOSTILE, permissions=("register_routes",))
    [routes] = host.hook.register_routes()
    return {route.path: route for route in routes}


def _routing_app(routes: dict[str, Route]) -> Callable[..., Iterable[bytes]]:
    """A WSGI adapter serving the plugin's routes below /plugins/forger (as host.serve will)."""

    def handler(request: ApiRequest) -> ApiResponse:
        prefix = "/forger"
        route = routes.get(request.path.removeprefix(prefix))
        if not request.path.startswith(prefix) or route is None:
            return ApiResponse(tenant=request.tenant, status=404)
        return route.handler(attrs.evolve(request, route_path=route.path))

    return _wsgi_app(handler)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")
def test_a_sandboxed_route_gets_the_converted_request_and_cannot_forge_the_response(
    sandboxed_routes: dict[str, Route],
) -> None:
    """The request the converters made crosses into the worker whole (every query value in
    order, lower-case headers, three paths); every forged answer of the plugin is refused by
    write_wsgi (the adapter answers 502) and none of its headers or bytes reach the client."""
    client = Client(_routing_app(sandboxed_routes))
    response = client.post(
        "/forger/echo?tag=b&tag=a&tag=b&x=",
        base_url="http://localhost/plugins",
        data=b"payload",
        headers=[("X-Trace", "1"), ("X-TRACE", "2")],
    )
    assert response.status_code == 200
    seen = json.loads(response.data)
    assert seen["query"] == [["tag", ["b", "a", "b"]], ["x", [""]]]
    assert seen["first"] == "b"
    assert (seen["path"], seen["route_path"], seen["full_path"]) == (
        "/forger/echo",
        "/echo",
        "/plugins/forger/echo",
    )
    assert seen["headers"]["x-trace"] == "1, 2"
    assert all(name == name.lower() for name in seen["headers"])
    assert seen["body"] == "payload"
    for name, refusal in [
        ("split", b"control character"),
        ("smuggle", b"says '0' but the body has"),
        ("tunnel", b"status 101 is informational"),
        ("chunked", b"hop-by-hop"),
    ]:
        forged = client.get(f"/forger/{name}", base_url="http://localhost/plugins")
        assert forged.status_code == 502, name
        assert refusal in forged.data, name
        assert "Set-Cookie" not in forged.headers
        assert "Upgrade" not in forged.headers
        assert "Transfer-Encoding" not in forged.headers
        assert b"owned" not in forged.data
        assert forged.headers["Content-Length"] == str(len(forged.data))
