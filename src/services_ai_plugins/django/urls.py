"""Plugin routes: ``path("plugins/", include("services_ai_plugins.django.urls"))``.

Every request below the mount goes to one view (:func:`~services_ai_plugins.django.views.
serve`), which asks the host: the routes follow the registry (a plugin approved,
enabled or disabled takes effect at the next request, without a restart), and a tenant
reaches only the routes of the plugins it runs. The URL names are reversible under the
``plugins`` namespace, one nested namespace per plugin::

    reverse("plugins:lead-notes:my_route_name")
    reverse("plugins:crm-sync:lead", kwargs={"lead_id": "42"})

A route path ``/leads/{lead_id}`` is the Django pattern ``leads/<str:lead_id>``, and
``{rest:path}`` is ``<path:rest>``. The patterns are made from the host's route table
each time Django builds its URL resolvers; the middleware clears Django's URL caches when
the table changes, so a new plugin's names reverse at the next request.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Final

from django.urls import (
    URLPattern,
    URLResolver,
    clear_url_caches,
    get_resolver,
    include,
    path,
    re_path,
)

from . import conf
from .views import serve

__all__ = ["app_name", "plugin_patterns", "refresh_resolvers"]

app_name: Final = "plugins"

_PARAMETER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")


def _django_path(route_path: str) -> str:
    """``/leads/{lead_id}`` -> ``leads/<str:lead_id>``; ``{rest:path}`` -> ``<path:rest>``."""

    def converted(match: re.Match[str]) -> str:
        return f"<{'path' if match.group(2) else 'str'}:{match.group(1)}>"

    return _PARAMETER.sub(converted, route_path.lstrip("/"))


def plugin_patterns() -> list[URLPattern | URLResolver]:
    """The catch-all view, then the named patterns of the host's current route table.

    The catch-all matches every path, so the host alone decides what answers; the
    named patterns after it are there for ``reverse``. Without a host yet (Django
    checking its URLs at start-up), only the catch-all: the names appear once the
    host is built.
    """
    patterns: list[URLPattern | URLResolver] = [re_path(r"^(?P<rest>.*)$", serve, name="serve")]
    host = conf.built_host()
    if host is not None:
        by_plugin: dict[str, list[URLPattern]] = {}
        for route in host.routes():
            by_plugin.setdefault(route.plugin_id, []).append(
                path(_django_path(route.route_path), serve, name=route.name)
            )
        for plugin_id, own in sorted(by_plugin.items()):
            patterns.append(path(f"{plugin_id}/", include((own, plugin_id), namespace=plugin_id)))
    return patterns


def refresh_resolvers() -> None:
    """Make Django build the plugin patterns again: after the host's route table changed.

    ``clear_url_caches`` drops the root resolver, but the resolver of the
    ``plugins/`` include lives on in the project's own ``urlpatterns`` with its
    patterns and names cached: those caches are dropped here too.
    """
    clear_url_caches()
    module = sys.modules[__name__]
    pending = list(get_resolver().url_patterns)
    while pending:
        found = pending.pop()
        if not isinstance(found, URLResolver):
            continue
        if getattr(found, "urlconf_name", None) in (module, __name__):
            found.__dict__.pop("url_patterns", None)
            found._reverse_dict.clear()
            found._namespace_dict.clear()
            found._app_dict.clear()
            found._callback_strs = set()
            found._populated = False
        else:
            pending.extend(found.url_patterns)


def __getattr__(name: str) -> Any:
    if name == "urlpatterns":
        return plugin_patterns()
    raise AttributeError(name)
