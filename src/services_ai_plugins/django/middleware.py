"""The request context around every request of a tenant.

``"services_ai_plugins.django.middleware.PluginsMiddleware"`` goes in ``MIDDLEWARE``
after ``AuthenticationMiddleware`` (the tenant resolver may read ``request.user``). For a
request the resolver gives a tenant, it:

- sets the request context (:meth:`PluginHost.request_context`), so that hooks fired
  anywhere in the request (a model signal, :func:`~services_ai_plugins.django.services.
  fire_on_commit`) run for that tenant and user, and calls deferred with ``host.defer`` run
  once the response is ready;
- keeps the context on the request (``request.plugins_context``) for the plugin URLs and
  the template tags;
- notices a changed route table, so ``reverse("plugins:<plugin_id>:<name>")`` sees the
  routes of a plugin approved in another process at the next request.

The plugin URLs (``services_ai_plugins.django.urls``) run the ``api_request`` and
``api_response`` filters around every plugin route. A request with no tenant (the
staff admin, a health check) passes through untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse

from ..events import Context
from .conf import get_host, resolve_tenant

__all__ = ["PluginsMiddleware", "request_scope"]

_UNSET: Any = object()
_seen_routes: object = None


class PluginsMiddleware:
    """Sets the request's plugin context (see the module docstring)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        context = request_scope(request)
        host = get_host()
        _notice_routes(host.routes())
        if context is None:
            return self.get_response(request)
        with host.request_context(context):
            return self.get_response(request)


def request_scope(request: HttpRequest) -> Context | None:
    """The request's plugin context: its tenant and user, or None (no tenant).

    Resolved once per request by ``TENANT_RESOLVER`` and kept as
    ``request.plugins_context``.
    """
    found = getattr(request, "plugins_context", _UNSET)
    if found is not _UNSET:
        return found  # type: ignore[no-any-return]
    resolved = resolve_tenant(request)
    context = None
    if resolved is not None:
        tenant, user = resolved
        context = Context(
            tenant=tenant,
            user=user,
            request_id=request.headers.get("x-request-id"),
            ip=request.META.get("REMOTE_ADDR"),
            locale=getattr(request, "LANGUAGE_CODE", None),
        )
    request.plugins_context = context  # type: ignore[attr-defined]
    return context


def _notice_routes(routes: object) -> None:
    global _seen_routes  # noqa: PLW0603 - one URL cache per process, as Django's
    if routes is not _seen_routes:
        _seen_routes = routes
        from .urls import refresh_resolvers  # noqa: PLC0415 - the URL module imports this one

        refresh_resolvers()
