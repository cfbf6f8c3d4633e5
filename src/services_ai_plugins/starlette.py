"""Plugins in a Starlette or FastAPI app: lifespan, middleware, routes, a dependency, templates.

::

    plugins = Plugins({"TENANT_RESOLVER": tenant_of, "STORAGE": "postgresql://..."})
    app = Starlette(  # or FastAPI(...)
        routes=[*plugins.routes(), Route("/", home)],
        middleware=[plugins.middleware],
        lifespan=plugins.lifespan,
    )

The settings are every adapter's (``docs/starlette.md``). ``lifespan`` builds the host at
start-up and closes it (and its storage) at shut-down; the middleware resolves the tenant,
keeps the request's :class:`~services_ai_plugins.events.Context` as
``request.state.plugins_context`` and sets the request context around the whole request;
the plugin routes are served below ``prefix`` with ``await host.aserve(...)``, the
``api_request`` and ``api_response`` filters awaited around them, so a sandboxed plugin
never blocks the event loop.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from . import web
from ._adapters import AdapterSettings, HostHolder, tenant_answer
from .errors import RequestTooLarge
from .events import ApiResponse, Context, User

if TYPE_CHECKING:
    from ._host import PluginHost

__all__ = ["Plugins", "PluginsMiddleware", "TenantResolver", "plugin_context"]

_WHERE: Final = "Plugins(settings=...)"
#: Where the middleware keeps the request's context (``request.state.plugins_context``).
_KEY: Final = "plugins_context"
_Answer: TypeAlias = "str | tuple[str, User | None] | None"
#: A function of the request (sync or async): its tenant, ``(tenant, User)``, or None.
TenantResolver: TypeAlias = Callable[[Request], "_Answer | Awaitable[_Answer]"]


def _state(request: Request) -> dict[str, Any]:
    """``request.state`` as the dict it is (``scope["state"]``): unset keys tell from None."""
    state: dict[str, Any] = request.scope.setdefault("state", {})
    return state


def _state_tenant(request: Request) -> object:
    return _state(request).get("tenant")


class Plugins:
    """One app's plugins: its host (built by :attr:`lifespan`), middleware and routes.

    :raises ConfigError: naming the settings key whose value is wrong.
    """

    def __init__(
        self,
        settings: Mapping[str, Any] | None = None,
        *,
        prefix: str = "/plugins",
        max_body: int = web.DEFAULT_MAX_BODY,
    ) -> None:
        read = AdapterSettings.from_mapping(settings, where=_WHERE, default_actor="starlette")
        #: The settings, read and checked.
        self.settings: Final = read
        self.prefix: Final = "/" + prefix.strip("/")
        self.max_body: Final = max_body
        self._holder = HostHolder(lambda: read)

    @property
    def host(self) -> PluginHost:
        """The app's host (built on first use when no lifespan built it)."""
        return self._holder.get()

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Build the host at start-up, close it and its storage at shut-down.

        ``Starlette(lifespan=plugins.lifespan)``, or ``async with plugins.lifespan(app):``
        inside the app's own lifespan.
        """
        self._holder.get()
        try:
            yield
        finally:
            self._holder.close()

    @property
    def middleware(self) -> Middleware:
        """``Starlette(middleware=[plugins.middleware])``: :class:`PluginsMiddleware`."""
        return Middleware(PluginsMiddleware, plugins=self)

    def routes(self) -> list[BaseRoute]:
        """The plugin routes: one ``Mount(prefix, ...)`` serving every plugin's routes."""
        return [Mount(self.prefix, app=self.serve)]

    def url_for(self, plugin_id: str, name: str, /, **params: object) -> str:
        """A plugin route's URL path, prefix included."""
        return self.prefix + self.host.url_for(plugin_id, name, **params)

    async def resolve(self, request: Request) -> Context | None:
        """The request's context by ``TENANT_RESOLVER`` (default: ``request.state.tenant``)."""
        found = (self.settings.tenant_resolver or _state_tenant)(request)
        if inspect.isawaitable(found):
            found = await found
        answer = tenant_answer(found, where=_WHERE)
        if answer is None:
            return None
        client = request.client
        return Context(
            tenant=answer[0],
            user=answer[1],
            request_id=request.headers.get("x-request-id"),
            ip=client.host if client else None,
        )

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app of the plugin routes (mounted at ``prefix`` by :meth:`routes`)."""
        async with AsyncExitStack() as stack:
            state = scope.setdefault("state", {})
            if _KEY not in state:  # no middleware: this app resolves and sets the context
                state[_KEY] = context = await self.resolve(Request(scope))
                if context is not None:
                    await stack.enter_async_context(self.host.request_context(context))
            context = state[_KEY]
            if context is None:
                await JSONResponse({"error": "not found"}, 404)(scope, receive, send)
                return
            await self._answer(scope, receive, send, context)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, context: Context) -> None:
        tenant, host = context.tenant, self.host
        try:
            body = await web.read_asgi_body(receive, max_body=self.max_body, scope=scope)
            request = web.request_from_asgi(
                scope, body, tenant=tenant, user=context.user, max_body=self.max_body
            )
        except RequestTooLarge as exc:
            response = ApiResponse.json(tenant, {"error": "request too large"}, exc.status)
        except ConnectionError:  # the client left: nobody to answer
            return
        except ValueError as exc:  # not UTF-8, a bad content-length, ...
            response = ApiResponse.json(tenant, {"error": str(exc)}, 400)
        else:
            request = await host.ahook.api_request(request=request, context=context)
            response = await host.aserve(request)
            response = await host.ahook.api_response(
                request=request, response=response, context=context
            )
        try:
            await web.write_asgi(response, send, head=scope["method"] == "HEAD")
        except ValueError:  # the plugin's answer cannot be sent as it is (nothing was sent)
            await web.write_asgi(ApiResponse.json(tenant, {"error": "bad gateway"}, 502), send)

    def template_globals(self) -> dict[str, Callable[..., Any]]:
        """For ``Jinja2Templates(...).env.globals.update(...)``: ``plugins_head(request)``,
        ``plugins_footer(request)``, ``plugins_widgets(request)`` (Markup, the escaping rules
        of :mod:`services_ai_plugins.web`) and ``plugin_url(plugin_id, name, **params)``.

        They call the hooks as the template renders: render in a ``def`` endpoint (run in
        a thread) when sandboxed plugins are enabled.
        """
        from markupsafe import Markup  # noqa: PLC0415 - Jinja2's, needed only with templates

        def fragment(html: Callable[..., str]) -> Callable[[Request], Markup]:
            def render(request: Request) -> Markup:
                context = _state(request).get(_KEY)
                if context is None:
                    return Markup("")
                trust = self.settings.trust_sandboxed_html
                return Markup(html(self.host, context, trust_sandboxed=trust))  # noqa: S704 - the trust rules of web

            return render

        return {
            "plugins_head": fragment(web.head_html),
            "plugins_footer": fragment(web.footer_html),
            "plugins_widgets": fragment(web.widgets_html),
            "plugin_url": self.url_for,
        }


class PluginsMiddleware:
    """Resolves the tenant and sets the request context around the rest of the app."""

    def __init__(self, app: ASGIApp, *, plugins: Plugins) -> None:
        self.app, self.plugins = app, plugins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = await self.plugins.resolve(Request(scope))
        scope.setdefault("state", {})[_KEY] = context
        if context is None:
            await self.app(scope, receive, send)
            return
        async with self.plugins.host.request_context(context):
            await self.app(scope, receive, send)


def plugin_context(request: Request) -> Context:
    """A FastAPI dependency: the request's Context (``Depends(plugin_context)``).

    :raises HTTPException: 404 when the request has no tenant.
    :raises RuntimeError: when the app has no :class:`PluginsMiddleware`.
    """
    state = _state(request)
    if _KEY not in state:
        raise RuntimeError("plugin_context needs the middleware: middleware=[plugins.middleware]")
    context: Context | None = state[_KEY]
    if context is None:
        raise HTTPException(404, "no tenant")
    return context
