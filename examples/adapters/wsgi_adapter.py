"""A WSGI adapter for services-ai-plugins, whole: every piece but the tenant rule is the SDK's.

Wrap any WSGI app (Flask, Django's WSGI handler, a bare function):

    app.wsgi_app = PluginsMiddleware(app.wsgi_app, host, tenant_of=tenant_from_host_name)

It sets the request context for the whole request (so code deep in the app fires
hooks for the request's tenant and user, and ``host.defer`` calls run once the
request is over), serves every plugin route under ``mount`` through ``host.serve``
with the ``api_request`` and ``api_response`` filters around it, and offers the
head and footer fragments and the dashboard widgets for the app's templates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from services_ai_plugins import PluginHost
from services_ai_plugins.errors import RequestTooLarge
from services_ai_plugins.events import ApiRequest, ApiResponse, Context, User, Widget
from services_ai_plugins.web import request_from_wsgi, write_wsgi

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
#: The app's rule: the request's tenant and signed-in user, or None (no tenant: not ours).
TenantOf = Callable[[Environ], "tuple[str, User | None] | None"]


class PluginsMiddleware:
    """Plugin routes under ``mount``, and the request context around the app's own pages."""

    def __init__(
        self, app: WSGIApp, host: PluginHost, *, tenant_of: TenantOf, mount: str = "/plugins"
    ) -> None:
        self.app, self.host, self.tenant_of, self.mount = app, host, tenant_of, mount.rstrip("/")

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        found = self.tenant_of(environ)
        if found is None:
            return self.app(environ, start_response)
        tenant, user = found
        context = Context(
            tenant=tenant,
            user=user,
            request_id=environ.get("HTTP_X_REQUEST_ID"),
            ip=environ.get("REMOTE_ADDR"),
        )
        with self.host.request_context(context):
            path = environ.get("PATH_INFO", "")
            if path == self.mount or path.startswith(self.mount + "/"):
                return self._plugins(environ, start_response, context)
            return self.app(environ, start_response)

    def _plugins(
        self, environ: Environ, start_response: StartResponse, context: Context
    ) -> Iterable[bytes]:
        # The mount point moves from PATH_INFO into SCRIPT_NAME, as a WSGI mount does.
        mounted = dict(environ)
        mounted["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + self.mount
        mounted["PATH_INFO"] = environ["PATH_INFO"][len(self.mount) :]
        tenant = context.tenant
        try:
            request = request_from_wsgi(mounted, tenant=tenant, user=context.user)
        except RequestTooLarge as exc:
            response = ApiResponse.json(tenant, {"error": "request too large"}, exc.status)
        except ValueError as exc:  # not UTF-8, a bad Content-Length, ...
            response = ApiResponse.json(tenant, {"error": str(exc)}, 400)
        else:
            response = self._serve(request, context)
        head = environ["REQUEST_METHOD"] == "HEAD"
        try:
            return write_wsgi(response, start_response, head=head)
        except ValueError:  # the plugin's answer cannot be sent as it is
            return write_wsgi(
                ApiResponse.json(tenant, {"error": "bad gateway"}, 502), start_response
            )

    def _serve(self, request: ApiRequest, context: Context) -> ApiResponse:
        hook = self.host.hook
        request = hook.api_request(request=request, context=context)
        response = self.host.serve(request)
        if not isinstance(response, ApiResponse):  # pragma: no cover - no native views here
            return ApiResponse.json(context.tenant, {"error": "not served here"}, 501)
        filtered: ApiResponse = hook.api_response(
            request=request, response=response, context=context
        )
        return filtered

    # -- for the app's templates -------------------------------------------------------------

    def head_html(self) -> str:
        """The plugins' ``<head>`` fragments for the current request (trusted HTML, as given)."""
        return "".join(f.html for f in self.host.hook.inject_head())

    def footer_html(self) -> str:
        """The plugins' fragments for the end of ``<body>`` (trusted HTML, as given)."""
        return "".join(f.html for f in self.host.hook.inject_footer())

    def widgets(self) -> list[Widget]:
        """The plugins' dashboard widgets for the current request's tenant."""
        return list(self.host.hook.dashboard_widget())

    def url_for(self, plugin_id: str, name: str, **params: object) -> str:
        """A plugin route's URL path, mount point included."""
        return self.mount + self.host.url_for(plugin_id, name, **params)
