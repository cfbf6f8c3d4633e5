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
from typing import Any, Final

from django.urls import URLPattern, URLResolver, include, path, re_path

from . import conf
from .views import serve

__all__ = ["app_name", "plugin_patterns"]

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


def __getattr__(name: str) -> Any:
    if name == "urlpatterns":
        return plugin_patterns()
    raise AttributeError(name)
