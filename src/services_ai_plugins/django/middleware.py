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

import sys
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import URLResolver, clear_url_caches, get_resolver

from ..events import Context
from .conf import get_host, resolve_tenant

__all__ = ["PluginsMiddleware", "refresh_resolvers", "request_scope"]

_UNSET: Any = object()
#: The module the project includes for the plugin URLs.
_URLS = "services_ai_plugins.django.urls"
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
    request.plugins_context = context
    return context


def _notice_routes(routes: object) -> None:
    global _seen_routes  # noqa: PLW0603 - one URL cache per process, as Django's
    if routes is not _seen_routes:
        _seen_routes = routes
        refresh_resolvers()


def refresh_resolvers() -> None:
    """Make Django build the plugin patterns again: after the host's route table changed.

    ``clear_url_caches`` drops the root resolver, but the resolver of the
    ``plugins/`` include lives on in the project's own ``urlpatterns`` with its
    patterns and names cached: those caches are dropped here too.
    """
    clear_url_caches()
    module = sys.modules.get(_URLS)
    if module is None:  # the plugin URLs are not in the project's URLconf (yet)
        return
    pending = list(get_resolver().url_patterns)
    while pending:
        found = pending.pop()
        if not isinstance(found, URLResolver):
            continue
        if getattr(found, "urlconf_name", None) in (module, _URLS):
            found.__dict__.pop("url_patterns", None)
            found._reverse_dict.clear()
            found._namespace_dict.clear()
            found._app_dict.clear()
            found._callback_strs = set()
            found._populated = False
        else:
            pending.extend(found.url_patterns)
