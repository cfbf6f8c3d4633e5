"""An ASGI adapter for services-ai-plugins, whole: every piece but the tenant rule is the SDK's.

Wrap any ASGI app (Starlette, FastAPI, a bare callable):

    app = PluginsMiddleware(app, host, tenant_of=tenant_from_header)

It never blocks the event loop on a plugin's worker: routes are answered with
``await host.aserve(...)`` and the filters with ``await host.ahook...``. It sets the
request context for the whole request (code deep in the app fires hooks for the
request's tenant and user; ``host.defer`` calls run once the request is over) and
serves every plugin route under ``mount`` with ``api_request`` and ``api_response``
around it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from services_ai_plugins import PluginHost
from services_ai_plugins.errors import RequestTooLarge
from services_ai_plugins.events import ApiRequest, ApiResponse, Context, User
from services_ai_plugins.web import read_asgi_body, request_from_asgi, write_asgi

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: The app's rule: the request's tenant and signed-in user, or None (no tenant: not ours).
TenantOf = Callable[[Scope], "tuple[str, User | None] | None"]


class PluginsMiddleware:
    """Plugin routes under ``mount``, and the request context around the app's own pages."""

    def __init__(
        self, app: ASGIApp, host: PluginHost, *, tenant_of: TenantOf, mount: str = "/plugins"
    ) -> None:
        self.app, self.host, self.tenant_of, self.mount = app, host, tenant_of, mount.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.tenant_of(scope) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        tenant, user = found
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1") or None
        client = scope.get("client")
        context = Context(
            tenant=tenant, user=user, request_id=request_id, ip=client[0] if client else None
        )
        async with self.host.request_context(context):
            root = scope.get("root_path", "")
            below = scope["path"][len(root) :] if scope["path"].startswith(root) else scope["path"]
            if below == self.mount or below.startswith(self.mount + "/"):
                await self._plugins(scope, receive, send, context)
            else:
                await self.app(scope, receive, send)

    async def _plugins(self, scope: Scope, receive: Receive, send: Send, context: Context) -> None:
        # The mount point joins root_path, as an ASGI mount does (the full path stays in path).
        mounted = dict(scope, root_path=scope.get("root_path", "") + self.mount)
        tenant = context.tenant
        try:
            body = await read_asgi_body(receive, scope=scope)
            request = request_from_asgi(mounted, body, tenant=tenant, user=context.user)
        except RequestTooLarge as exc:
            response = ApiResponse.json(tenant, {"error": "request too large"}, exc.status)
        except ValueError as exc:  # not UTF-8, a bad Content-Length, ...
            response = ApiResponse.json(tenant, {"error": str(exc)}, 400)
        else:
            response = await self._serve(request, context)
        head = scope["method"] == "HEAD"
        try:
            await write_asgi(response, send, head=head)
        except ValueError:  # the plugin's answer cannot be sent as it is (nothing was sent)
            await write_asgi(ApiResponse.json(tenant, {"error": "bad gateway"}, 502), send)

    async def _serve(self, request: ApiRequest, context: Context) -> ApiResponse:
        ahook = self.host.ahook
        request = await ahook.api_request(request=request, context=context)
        response = await self.host.aserve(request)
        filtered: ApiResponse = await ahook.api_response(
            request=request, response=response, context=context
        )
        return filtered

    # -- for the app's templates -------------------------------------------------------------

    async def head_html(self) -> str:
        """The plugins' ``<head>`` fragments for the current request (trusted HTML, as given)."""
        return "".join(f.html for f in await self.host.ahook.inject_head())

    async def footer_html(self) -> str:
        """The plugins' fragments for the end of ``<body>`` (trusted HTML, as given)."""
        return "".join(f.html for f in await self.host.ahook.inject_footer())

    def url_for(self, plugin_id: str, name: str, **params: object) -> str:
        """A plugin route's URL path, mount point included."""
        return self.mount + self.host.url_for(plugin_id, name, **params)
