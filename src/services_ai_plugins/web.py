"""Framework-neutral converters between WSGI or ASGI and the SDK's requests and responses.

The web-framework adapters (Django, Flask, Starlette, ...) reuse these instead
of each writing its own: they import nothing but the standard library and the
SDK's records. An adapter resolves the tenant (from the host name, the session,
a header: the app's choice) and the signed-in user itself, then:

- in a WSGI app, builds the request with :func:`request_from_wsgi` from the
  ``environ`` (the mount point is ``SCRIPT_NAME``), hands it to the host, and
  answers with :func:`write_wsgi`;
- in an ASGI app, reads the body with :func:`read_asgi_body`, builds the request
  with :func:`request_from_asgi` from the ``scope`` and that body, and answers
  with :func:`write_asgi`.

A WSGI app in a few lines (``host.serve`` answers a request routed below the
mount point; see the host's documentation)::

    def plugins_app(environ, start_response):
        tenant = tenant_of(environ)  # the app's own rule
        try:
            request = request_from_wsgi(environ, tenant=tenant)
        except RequestTooLarge as exc:
            response = ApiResponse(tenant=tenant, status=exc.status)
        except ValueError as exc:  # not UTF-8, a bad Content-Length, ...
            response = ApiResponse(tenant=tenant, status=400, body=str(exc).encode())
        else:
            response = host.serve(request)
        head = environ["REQUEST_METHOD"] == "HEAD"
        try:
            return write_wsgi(response, start_response, head=head)
        except ValueError:  # the plugin's answer cannot be sent as it is
            return write_wsgi(ApiResponse(tenant=tenant, status=502), start_response)

What the converters promise:

- ``ApiRequest.path`` is the path below the mount point and ``full_path`` the
  whole URL path, both decoded from UTF-8 (``PATH_INFO`` and ``SCRIPT_NAME``
  per PEP 3333; ``scope["path"]`` and ``scope["root_path"]`` in ASGI);
  ``route_path`` is left to the host, which sets it when it dispatches.
- Header names are lower-case and a repeated header's values joined with
  ``", "``; values are the bytes sent, read as Latin-1 (as WSGI and ASGI give
  them).
- Every query value is kept, in order (``parse_qsl`` with blank values kept),
  percent-escapes decoded as UTF-8.
- A body is never read past ``max_body`` bytes (:data:`DEFAULT_MAX_BODY`, 1 MiB,
  by default): a body declared or found bigger raises
  :class:`~services_ai_plugins.errors.RequestTooLarge` (``status`` 413) before it
  is read whole.
- A path or query that is not UTF-8, a bad ``Content-Length`` or a body shorter
  than declared raises :class:`ValueError` naming what is wrong (answer 400);
  ``RequestTooLarge`` is a ``ValueError`` too, so catch it first.
- Responses come from plugin code, so they are checked before anything is
  sent, and refused with a :class:`ValueError` naming the header or status
  (answer 502): a header name that is not an HTTP token or is given twice
  (in any case); a value with a line break, another control character or a
  character Latin-1 cannot encode; a hop-by-hop header (``connection``,
  ``transfer-encoding``, ``upgrade``, ...: the server's to set, PEP 3333); a
  ``content-length`` other than the body's length; an informational (1xx)
  status; a body on a 204 or 304. So a plugin can neither split the response
  nor make a proxy that reuses the connection misread what follows.
  ``content-length`` is added when absent (but to 204 and 304 answers). For a
  HEAD request pass ``head=True``: no body is sent, and a ``content-length``
  (the GET answer's) is passed on as given, none added.
"""

from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from .errors import RequestTooLarge
from .events import ApiRequest, ApiResponse, Context, HtmlFragment, User, Widget

if TYPE_CHECKING:
    from ._host import PluginHost

__all__ = [
    "DEFAULT_MAX_BODY",
    "footer_html",
    "head_html",
    "read_asgi_body",
    "request_from_asgi",
    "request_from_wsgi",
    "widgets_html",
    "write_asgi",
    "write_wsgi",
]

#: The most bytes a request body may have unless the adapter says otherwise (1 MiB).
DEFAULT_MAX_BODY: Final = 1 * 2**20

#: A WSGI ``environ``.
_Environ: TypeAlias = Mapping[str, Any]
#: An ASGI connection ``scope``.
_Scope: TypeAlias = Mapping[str, Any]

#: The most bytes read from a WSGI input at once.
_CHUNK: Final = 1 << 16
#: An HTTP header name (RFC 9110 token).
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: What a header value may not hold: control characters but the tab (CR and LF split a response).
_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: Answers that have no body, and so no content-length of their own (RFC 9110, 8.6).
_NO_BODY: Final = frozenset({204, 304})
#: Headers about the connection, not the response: the server's (PEP 3333, RFC 9110 7.6.1).
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


# -- requests ----------------------------------------------------------------------------------


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{what} is not UTF-8: byte {raw[exc.start]:#04x} at position {exc.start}"
        ) from None


def _wsgi_text(environ: _Environ, key: str, what: str) -> str:
    """A PEP 3333 native string (bytes as Latin-1) read as the UTF-8 text it carries."""
    value = environ.get(key) or ""
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string in the WSGI environ (got {value!r})")
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(
            f"{key} holds characters beyond Latin-1: the server broke PEP 3333"
        ) from None
    return _utf8(raw, f"{what} ({key})")


def _query(raw: bytes) -> list[tuple[str, str]]:
    text = _utf8(raw, "the query string")
    try:
        return urllib.parse.parse_qsl(text, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the query string is not UTF-8 once unescaped: {exc.reason}") from None


def _declared_length(value: object, what: str) -> int | None:
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else str(value)
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"{what} must be a number of bytes (got {text[:40]!r})")
    return int(text)


def _read_wsgi_body(environ: _Environ, max_body: int) -> bytes:
    length = _declared_length(environ.get("CONTENT_LENGTH"), "CONTENT_LENGTH")
    stream = environ.get("wsgi.input")
    if length is not None:
        if length > max_body:
            raise RequestTooLarge(max_body, length)
        wanted, limit = length, length
    else:
        # Without a length, only a stream the server ends (a chunked body) may be read to
        # its end; PEP 3333 forbids reading an unterminated one, which can block forever.
        chunked = "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()
        if not (environ.get("wsgi.input_terminated") or chunked):
            return b""
        wanted, limit = max_body + 1, max_body
    if stream is None or wanted == 0:
        return b""
    chunks: list[bytes] = []
    got = 0
    while got < wanted:
        chunk = stream.read(min(_CHUNK, wanted - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    if got > limit:
        raise RequestTooLarge(max_body)
    if length is not None and got < length:
        raise ValueError(
            f"the request body ended after {got} of the {length} bytes CONTENT_LENGTH declares"
        )
    return b"".join(chunks)


def _wsgi_headers(environ: _Environ) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for key, value in environ.items():
        if not isinstance(value, str):
            continue
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if value:  # servers set them empty when the request has none
                headers.append((key.lower().replace("_", "-"), value))
        elif key.startswith("HTTP_") and key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
            headers.append((key[5:].lower().replace("_", "-"), value))
    return headers


def request_from_wsgi(
    environ: Mapping[str, Any],
    *,
    tenant: str,
    user: User | None = None,
    max_body: int = DEFAULT_MAX_BODY,
) -> ApiRequest:
    """The :class:`~services_ai_plugins.events.ApiRequest` of a WSGI ``environ``, body read.

    ``path`` is ``PATH_INFO`` (below the mount point, which is ``SCRIPT_NAME``) and
    ``full_path`` is ``SCRIPT_NAME`` + ``PATH_INFO``, both decoded from UTF-8 (an
    empty one is ``/``). Headers come from the ``HTTP_*`` keys and ``CONTENT_TYPE``
    and ``CONTENT_LENGTH`` (``HTTP_X_REQUEST_ID`` becomes ``x-request-id``). The body
    is read from ``wsgi.input``: ``CONTENT_LENGTH`` bytes; without a length, to its
    end when the server ends it (``wsgi.input_terminated``, or a chunked body) and
    not at all otherwise. Never more than ``max_body`` + 1 bytes are read.

    :raises RequestTooLarge: when ``CONTENT_LENGTH`` is over ``max_body`` (nothing is
        read), or a body without a length goes over it.
    :raises ValueError: when the path or query is not UTF-8, ``CONTENT_LENGTH`` is not
        a number, the body is shorter than declared, or the method is not upper-case.
    """
    script = _wsgi_text(environ, "SCRIPT_NAME", "the mount point")
    below = _wsgi_text(environ, "PATH_INFO", "the request path")
    query_string = environ.get("QUERY_STRING") or ""
    try:
        raw_query = query_string.encode("latin-1")
    except (AttributeError, UnicodeEncodeError):
        raise ValueError(
            f"QUERY_STRING must be a Latin-1 string in the WSGI environ (got {query_string!r})"
        ) from None
    return ApiRequest(
        tenant=tenant,
        method=str(environ.get("REQUEST_METHOD", "GET")),
        path=below or "/",
        full_path=(script + below) or "/",
        headers=_wsgi_headers(environ),
        query=_query(raw_query),
        body=_read_wsgi_body(environ, max_body),
        user=user,
    )


def _asgi_headers(scope: _Scope) -> list[tuple[str, str]]:
    pairs: Iterable[tuple[bytes, bytes]] = scope.get("headers") or ()
    return [
        (bytes(name).decode("latin-1"), bytes(value).decode("latin-1")) for name, value in pairs
    ]


def _asgi_length(scope: _Scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if bytes(name).lower() == b"content-length":
            return _declared_length(bytes(value).decode("latin-1"), "the content-length header")
    return None


async def read_asgi_body(
    receive: Callable[[], Awaitable[Mapping[str, Any]]],
    *,
    max_body: int = DEFAULT_MAX_BODY,
    scope: Mapping[str, Any] | None = None,
) -> bytes:
    """The body of an ASGI HTTP request: its ``http.request`` messages until ``more_body`` is false.

    Pass the connection's ``scope`` to have a ``content-length`` header over
    ``max_body`` refused before a single message is received. Without it (or
    without the header) the body is refused as soon as the bytes received go
    over ``max_body``; what was received is dropped.

    :raises RequestTooLarge: when the body is declared or found over ``max_body``.
    :raises ConnectionError: when the client disconnects (``http.disconnect``) first.
    :raises ValueError: for a message of another type, or a bad ``content-length``.
    """
    declared = _asgi_length(scope) if scope is not None else None
    if declared is not None and declared > max_body:
        raise RequestTooLarge(max_body, declared)
    chunks: list[bytes] = []
    got = 0
    while True:
        message = await receive()
        kind = message.get("type")
        if kind == "http.disconnect":
            raise ConnectionError("the client disconnected before it sent the whole request body")
        if kind != "http.request":
            raise ValueError(f"expected an 'http.request' message, got {kind!r}")
        chunk = message.get("body", b"")
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise ValueError(f"an 'http.request' message's body must be bytes (got {chunk!r:.40})")
        got += len(chunk)
        if got > max_body:
            raise RequestTooLarge(max_body)
        chunks.append(bytes(chunk))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _below(path: str, root: str) -> tuple[str, str]:
    """(path below the mount, full path) from an ASGI ``path`` and ``root_path``.

    Starlette 0.33 and later (and uvicorn's ``--root-path``) leave the full path
    in ``path`` with the mount in ``root_path``; older servers and routers strip
    the mount from ``path``. A ``path`` that starts with ``root_path`` at a
    segment boundary is taken for a full one.
    """
    root = root.rstrip("/")
    if not root:
        return path, path
    if path == root or path.startswith(root + "/"):
        return path[len(root) :] or "/", path
    return path, root + path


def request_from_asgi(
    scope: Mapping[str, Any],
    body: bytes,
    *,
    tenant: str,
    user: User | None = None,
    max_body: int = DEFAULT_MAX_BODY,
) -> ApiRequest:
    """The :class:`~services_ai_plugins.events.ApiRequest` of an ASGI HTTP ``scope`` and its body.

    ``body`` is what :func:`read_asgi_body` returned. ``path`` is the path below
    the mount point (``scope["root_path"]``) and ``full_path`` the whole path,
    whether ``scope["path"]`` holds the mount (Starlette 0.33 and later) or not
    (older ones). Headers come from the scope's raw pairs, read as Latin-1; the
    query from ``scope["query_string"]``.

    :raises ValueError: when the scope is not an ``"http"`` one, the query is not
        UTF-8, or the method is not upper-case.
    :raises RequestTooLarge: when ``body`` is over ``max_body`` (a body read elsewhere).
    """
    kind = scope.get("type")
    if kind != "http":
        raise ValueError(f"an ApiRequest is made from an 'http' ASGI scope, not {kind!r}")
    if len(body) > max_body:
        raise RequestTooLarge(max_body, len(body))
    path = str(scope.get("path") or "/")
    below, full = _below(path, str(scope.get("root_path") or ""))
    return ApiRequest(
        tenant=tenant,
        method=str(scope.get("method", "GET")),
        path=below,
        full_path=full,
        headers=_asgi_headers(scope),
        query=_query(bytes(scope.get("query_string") or b"")),
        body=body,
        user=user,
    )


# -- responses ---------------------------------------------------------------------------------


def _checked_headers(response: ApiResponse, head: bool) -> list[tuple[str, str]]:
    """The response's headers, refused unless each can be sent as it is; a length added.

    A response's headers come from plugin code: what it could use to split the
    response, or to make a proxy that reuses the connection read the next
    answer wrongly (a false length, a hop-by-hop header, a protocol switch), is
    refused here rather than left to the server. A HEAD answer's length is the
    one a GET would have: it is passed on (a number), never checked or added.
    """
    status, body = response.status, response.body
    if status < 200:
        raise ValueError(
            f"status {status} is informational: a response must have a final status (200-599)"
        )
    no_body = status in _NO_BODY
    if no_body and body and not head:
        raise ValueError(f"a {status} response has no body (got {len(body)} bytes)")
    headers: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for name, value in response.headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"response header name {name!r} is not an HTTP token")
        lower = name.lower()
        if lower in seen:
            raise ValueError(f"response header {name!r} is given twice (also as {seen[lower]!r})")
        seen[lower] = name
        bad = _CONTROL.search(value)
        if bad:
            raise ValueError(
                f"response header {name!r} holds the control character {bad.group()!r}: refused"
            )
        try:
            value.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"response header {name!r} holds {value[exc.start]!r}, which Latin-1 cannot "
                "encode; percent-encode it or use RFC 8187 encoding"
            ) from None
        if lower in _HOP_BY_HOP:
            raise ValueError(
                f"response header {name!r} is hop-by-hop: the server sets it, not the app"
            )
        if lower == "content-length":
            length = value.strip(" \t")
            if not (length.isascii() and length.isdigit()):
                raise ValueError(f"response header {name!r} must be a number (got {value!r})")
            if not (head or no_body) and length != str(len(body)):
                raise ValueError(
                    f"response header {name!r} says {value!r} but the body has {len(body)} bytes"
                )
        headers.append((name, value))
    if not (head or no_body) and "content-length" not in seen:
        headers.append(("content-length", str(len(body))))
    return headers


def _status_line(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"{status} {phrase}"


def write_wsgi(
    response: ApiResponse,
    start_response: Callable[[str, list[tuple[str, str]]], object],
    *,
    head: bool = False,
) -> list[bytes]:
    """Start a WSGI response for ``response``; return its body, to be returned by the app.

    The status line has the reason phrase (``"404 Not Found"``; ``"Unknown"``
    for a code :class:`http.HTTPStatus` does not name); ``content-length`` is
    added when absent. ``head``: the answer to a HEAD request, sent without a
    body, its ``content-length`` (that of the GET answer) passed on as given.

    :raises ValueError: when the status or a header cannot be sent as it is
        (see the module docstring), naming it; ``start_response`` is not called then.
    """
    headers = _checked_headers(response, head)
    start_response(_status_line(response.status), headers)
    return [b"" if head else response.body]


async def write_asgi(
    response: ApiResponse,
    send: Callable[[dict[str, Any]], Awaitable[object]],
    *,
    head: bool = False,
) -> None:
    """Send ``response`` as ASGI ``http.response.start`` and ``http.response.body`` messages.

    Header names are sent lower-case and, with their values, encoded as Latin-1;
    ``content-length`` is added when absent. ``head`` as for :func:`write_wsgi`.

    :raises ValueError: when the status or a header cannot be sent as it is (a
        value Latin-1 cannot encode, a line break, ...), naming it; nothing is
        sent then.
    """
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in _checked_headers(response, head)
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    body = b"" if head else response.body
    await send({"type": "http.response.body", "body": body, "more_body": False})


# -- the plugins' HTML in the app's pages ------------------------------------------------------
#
# What is trusted HTML and what is not, for every adapter alike:
#
# - a plugin running in the app's process (an entry point, a folder the operator placed, a
#   plugin in SandboxPolicy.trusted): its HTML is inserted as it is; that code can already do
#   anything the app can;
# - a sandboxed (uploaded) plugin: its HTML never reaches the page as markup. Its widget is
#   shown in an ``<iframe sandbox srcdoc=...>`` (the HTML renders, with no script and no
#   access to the page, its cookies or its origin); its footer fragment is escaped (shown as
#   text); its head fragment is left out (text has no place in ``<head>``);
# - widget titles are always escaped.


def _trusted(host: PluginHost, plugin_id: str | None, trust_sandboxed: bool) -> bool:
    return plugin_id is not None and (trust_sandboxed or host.runs_in_process(plugin_id))


def _fragments(host: PluginHost, context: Context, hook: str, trust_sandboxed: bool) -> str:
    found: list[HtmlFragment] = host.call_hook(hook, context=context)
    parts: list[str] = []
    for fragment in found:
        if _trusted(host, fragment.plugin_id, trust_sandboxed):
            parts.append(fragment.html)
        elif hook != "inject_head":
            parts.append(html.escape(fragment.html))
    return "".join(parts)


def head_html(host: PluginHost, context: Context, *, trust_sandboxed: bool = False) -> str:
    """The plugins' ``<head>`` fragments for ``context``'s tenant, as HTML to insert.

    A sandboxed plugin's fragment is left out unless ``trust_sandboxed`` (see the
    escaping rules in ``docs/adapters.md``).
    """
    return _fragments(host, context, "inject_head", trust_sandboxed)


def footer_html(host: PluginHost, context: Context, *, trust_sandboxed: bool = False) -> str:
    """The plugins' fragments for the end of ``<body>``, as HTML to insert.

    A sandboxed plugin's fragment is escaped (shown as text) unless ``trust_sandboxed``.
    """
    return _fragments(host, context, "inject_footer", trust_sandboxed)


def widgets_html(host: PluginHost, context: Context, *, trust_sandboxed: bool = False) -> str:
    """The plugins' dashboard widgets for ``context``'s tenant, lowest ``order`` first.

    Each is a ``<section class="plugin-widget plugin-widget-<size>" data-plugin="<id>">``
    with its title (escaped) in an ``<h2>``; a sandboxed plugin's HTML is shown in an
    ``<iframe sandbox="" srcdoc="...">`` unless ``trust_sandboxed``.
    """
    widgets: list[Widget] = host.call_hook("dashboard_widget", context=context)
    parts: list[str] = []
    for widget in sorted(widgets, key=lambda w: w.order):
        if _trusted(host, widget.plugin_id, trust_sandboxed):
            body = widget.html
        else:
            title, source = html.escape(widget.title), html.escape(widget.html)
            body = (
                f'<iframe sandbox="" class="plugin-widget-frame" title="{title}" '
                f'srcdoc="{source}"></iframe>'
            )
        parts.append(
            f'<section class="plugin-widget plugin-widget-{html.escape(widget.size)}" '
            f'data-plugin="{html.escape(widget.plugin_id or "")}">'
            f"<h2>{html.escape(widget.title)}</h2>{body}</section>"
        )
    return "\n".join(parts)
