"""The admin as a WSGI app and an ASGI app: thin shells over :mod:`._pages`."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import jinja2

from .._host import PluginHost
from ..errors import PluginNotFound, RequestTooLarge
from ..events import ApiResponse
from ..web import read_asgi_body, request_from_asgi, request_from_wsgi, write_asgi, write_wsgi
from ._pages import Notes, Page, Pages, Redirect, not_found
from ._request import AdminRequest, Form, parse_form
from ._tokens import FLASH_COOKIE, SESSION_COOKIE, Signer

if TYPE_CHECKING:
    from ._pages import Outcome

__all__ = ["DEFAULT_UPLOAD_LIMIT", "AdminApp", "Authenticate", "HostOrGetter"]

_log = logging.getLogger("services_ai_plugins.admin")

#: The largest plugin ZIP the upload form takes by default (20 MiB).
DEFAULT_UPLOAD_LIMIT: Final = 20 * 2**20
#: What a multipart form may add to the archive it carries (boundaries, headers, fields).
_FORM_MARGIN: Final = 64 * 2**10
#: The tenant of the ApiRequest the web converters build (the admin serves no tenant).
_NO_TENANT: Final = "-"

#: Says who the admin is (their name, the audit events' actor) or refuses (None: 403).
Authenticate: TypeAlias = Callable[[AdminRequest], "str | None"]
#: A host, or a zero-argument callable answering one (an adapter's lazy host).
HostOrGetter: TypeAlias = "PluginHost | Callable[[], PluginHost]"

_CSP: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_PLUGIN_PAGE: Final = re.compile(r"/plugins/([^/]+)/(tenants|failures|audit)?")


def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("services_ai_plugins.admin", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = lambda moment: (
        "" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"
    )
    return environment


class AdminApp:
    """The plugin admin's pages, as a WSGI app (:attr:`wsgi`) and an ASGI app (:attr:`asgi`).

    Mount either under a prefix behind the app's own authentication: ``authenticate``
    gets an :class:`AdminRequest` and answers the admin's name (the actor of every audit
    event) or None, which refuses the request with a 403 page. Every link and form action
    is below the mount point (``SCRIPT_NAME``, or ASGI's ``root_path``).

    Every POST carries a CSRF token: the HMAC, keyed with ``secret``, of the admin's name
    and a random per-browser cookie (``SameSite=Strict``, ``HttpOnly``); a POST without it
    or with a wrong one is refused (403) before anything is done. Uploads over
    ``upload_limit`` bytes are refused (413) unread.

    Example::

        admin = AdminApp(host, authenticate=lambda request: "ada", secret=SECRET_KEY)
        # Flask: DispatcherMiddleware(app.wsgi_app, {"/plugins-admin": admin.wsgi})
        # Starlette: Mount("/plugins-admin", app=admin.asgi)

    :raises ValueError: when ``secret`` is shorter than 16 bytes, or ``upload_limit`` is not
        a positive number of bytes.
    """

    def __init__(
        self,
        host_or_getter: HostOrGetter,
        *,
        authenticate: Authenticate,
        secret: str | bytes,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        title: str = "Plugins",
    ) -> None:
        if isinstance(upload_limit, bool) or upload_limit <= 0:
            raise ValueError(
                f"AdminApp: upload_limit must be a positive number of bytes (got {upload_limit!r})"
            )
        self._host: Final = host_or_getter
        self._authenticate: Final = authenticate
        self._signer: Final = Signer(secret)
        self.upload_limit: Final = upload_limit
        self.title: Final = title
        self._templates: Final = _templates()

    @property
    def host(self) -> PluginHost:
        if isinstance(self._host, PluginHost):
            return self._host
        return self._host()

    # -- the shells ------------------------------------------------------------------------------

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The WSGI app."""
        head = environ.get("REQUEST_METHOD") == "HEAD"
        try:
            api = request_from_wsgi(
                environ, tenant=_NO_TENANT, max_body=self.upload_limit + _FORM_MARGIN
            )
        except RequestTooLarge:
            response = self._too_large(
                environ, request_from_wsgi(_bodiless(environ), tenant=_NO_TENANT)
            )
        except ValueError as exc:
            response = _plain(400, f"Bad request: {exc}")
        else:
            response = self.respond(AdminRequest.of(api, native=environ))
        return write_wsgi(response, start_response, head=head)

    async def asgi(
        self,
        scope: Mapping[str, Any],
        receive: Callable[[], Awaitable[Mapping[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[object]],
    ) -> None:
        """The ASGI app (HTTP; a lifespan scope is acknowledged). The pages run in a worker
        thread: the registry's calls and the check block."""
        if scope.get("type") == "lifespan":
            while True:
                message = await receive()
                if message.get("type") == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message.get("type") == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope.get("type") != "http":  # a websocket: the admin has none
            await send({"type": "websocket.close", "code": 1003})
            return
        limit = self.upload_limit + _FORM_MARGIN
        loop = asyncio.get_running_loop()
        try:
            body = await read_asgi_body(receive, max_body=limit, scope=scope)
            api = request_from_asgi(scope, body, tenant=_NO_TENANT, max_body=limit)
        except RequestTooLarge:
            bare = request_from_asgi(scope, b"", tenant=_NO_TENANT)
            response = await loop.run_in_executor(None, self._too_large, scope, bare)
        except ConnectionError:
            return
        except ValueError as exc:
            response = _plain(400, f"Bad request: {exc}")
        else:
            request = AdminRequest.of(api, native=scope)
            response = await loop.run_in_executor(None, functools.partial(self.respond, request))
        await write_asgi(response, send, head=scope.get("method") == "HEAD")

    # -- one request -----------------------------------------------------------------------------

    def respond(self, request: AdminRequest) -> ApiResponse:
        """The answer to one request (the shells' common part)."""
        admin = self._authenticate(request)
        if not admin:
            return self._render(
                request,
                Page(
                    "error.html",
                    {"title": "Forbidden", "message": "You may not manage plugins."},
                    403,
                ),
                Notes(),
            )
        session = request.cookies.get(SESSION_COOKIE, "")
        new_session = None
        if not session:
            session = new_session = self._signer.new_session()
        notes = Notes()
        if request.method == "POST":
            try:
                form = parse_form(request)
            except ValueError as exc:
                return self._render(
                    request,
                    Page("error.html", {"title": "Bad request", "message": str(exc)}, 400),
                    notes,
                )
            if new_session or not self._signer.csrf_ok(session, admin, form.get("csrf_token")):
                _log.warning(
                    "admin %r: a POST to %s without a valid CSRF token was refused",
                    admin,
                    request.path,
                )
                message = (
                    "The form's security token is missing or wrong: reload the page and try again."
                )
                return self._render(
                    request,
                    Page("error.html", {"title": "Forbidden", "message": message}, 403),
                    notes,
                    admin=admin,
                    session=session,
                    new_session=bool(new_session),
                )
        elif request.method in ("GET", "HEAD"):
            form = Form()
        else:
            return _plain(405, "Method not allowed", {"allow": "GET, HEAD, POST"})
        flashed = request.cookies.get(FLASH_COOKIE)
        if flashed:
            for level, text in self._signer.unflash(session, flashed):
                notes.add(level, text)
        try:
            outcome = self._route(request, form, Pages(self.host, admin, notes))
        except PluginNotFound as exc:
            outcome = not_found(exc)
        if isinstance(outcome, Redirect):
            # Only a POST redirects, and a POST has a session: one cookie, the notes.
            headers = {"location": request.root + outcome.path, "cache-control": "no-store"}
            if notes.items:
                flash = self._signer.flash(session, notes.items)
                headers["set-cookie"] = _cookie(request, FLASH_COOKIE, flash)
            return ApiResponse(tenant=_NO_TENANT, status=303, headers=headers)
        return self._render(
            request,
            outcome,
            notes,
            admin=admin,
            session=session,
            new_session=bool(new_session),
            clear_flash=bool(flashed),
        )

    def _route(self, request: AdminRequest, form: Form, pages: Pages) -> Outcome:
        path = request.path
        post = request.method == "POST"
        if path == "/":
            return (
                pages.upload(form, limit=self.upload_limit)
                if post
                else pages.plugins(request.query_value("status"))
            )
        found = _PLUGIN_PAGE.fullmatch(path)
        if found is None:
            return Page(
                "error.html", {"title": "Not found", "message": f"No admin page at {path}."}, 404
            )
        plugin_id = urllib.parse.unquote(found.group(1))
        page = found.group(2) or ""
        if page == "":
            return pages.decide(plugin_id, form) if post else pages.review(plugin_id)
        if page == "tenants":
            return (
                pages.tenant_step(plugin_id, form)
                if post
                else pages.tenants(plugin_id, request.query_value("tenant"))
            )
        if page == "failures":
            return pages.failure_step(plugin_id, form) if post else pages.failures(plugin_id)
        if post:
            return _method_not_allowed()
        return pages.audit(plugin_id)

    def _too_large(self, native: object, api: Any) -> ApiResponse:
        request = AdminRequest.of(api, native=native)
        admin = self._authenticate(request)
        if not admin:
            return _plain(403, "Forbidden")
        notes = Notes()
        notes.error(
            f"The upload is over the limit of {self.upload_limit} bytes: "
            "nothing was read or installed."
        )
        pages = Pages(self.host, admin, notes)
        session = request.cookies.get(SESSION_COOKIE, "")
        return self._render(request, pages.plugins(status=413), notes, admin=admin, session=session)

    def _render(
        self,
        request: AdminRequest,
        page: Page,
        notes: Notes,
        *,
        admin: str = "",
        session: str = "",
        new_session: bool = False,
        clear_flash: bool = False,
    ) -> ApiResponse:
        root = request.root

        def url(path: str) -> str:
            return root + path

        token = self._signer.csrf_token(session, admin) if admin and session else ""
        html = self._templates.get_template(page.template).render(
            **page.context,
            site_title=self.title,
            admin=admin,
            url=url,
            csrf_token=token,
            notes=notes.items,
            upload_limit=self.upload_limit,
        )
        headers = {
            "content-type": "text/html; charset=utf-8",
            "cache-control": "no-store",
            "x-frame-options": "DENY",
            "content-security-policy": _CSP,
            "referrer-policy": "same-origin",
            "x-content-type-options": "nosniff",
        }
        # One Set-Cookie at most (ApiResponse holds one value per name): a new session, or
        # the flash cleared. A flash left beside a new session is bound to the old one: void.
        if new_session:
            headers["set-cookie"] = _cookie(request, SESSION_COOKIE, session)
        elif clear_flash:
            headers["set-cookie"] = _cookie(request, FLASH_COOKIE, "", expire=True)
        return ApiResponse(
            tenant=_NO_TENANT,
            status=page.status,
            headers=headers,
            body=html.encode("utf-8"),
        )


def _method_not_allowed() -> Page:
    return Page(
        "error.html", {"title": "Method not allowed", "message": "This page takes no form."}, 405
    )


def _cookie(request: AdminRequest, name: str, value: str, *, expire: bool = False) -> str:
    parts = [f"{name}={value}", f"Path={request.root or '/'}", "SameSite=Strict", "HttpOnly"]
    if request.headers.get("x-forwarded-proto") == "https" or _native_https(request.native):
        parts.append("Secure")
    if expire:
        parts.append("Max-Age=0")
    return "; ".join(parts)


def _native_https(native: object) -> bool:
    if isinstance(native, Mapping):
        return native.get("wsgi.url_scheme") == "https" or native.get("scheme") == "https"
    return False


def _plain(status: int, text: str, headers: Mapping[str, str] | None = None) -> ApiResponse:
    return ApiResponse(
        tenant=_NO_TENANT,
        status=status,
        headers={"content-type": "text/plain; charset=utf-8", **(headers or {})},
        body=text.encode("utf-8"),
    )


def _bodiless(environ: Mapping[str, Any]) -> dict[str, Any]:
    bare = dict(environ)
    bare["CONTENT_LENGTH"] = "0"
    return bare
