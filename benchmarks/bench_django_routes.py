"""Question "django_route": a plugin route served by the Django app, against a plain Django
view answering the same bytes, each through Django's whole request cycle.

SDK: ``GET /plugins/web/stats`` through Django's test client: the middleware (tenant
resolved, request context set), the URL resolver (the plugins include's catch-all), the
SDK's view (the Django request converted to an ``ApiRequest``, the ``api_request``
filter, ``host.serve`` with its tenant gate and guarded handler, the ``api_response``
filter, the ``ApiResponse`` converted back). The registry is in the project's database
(``DjangoStorage`` on SQLite). Baseline: ``GET /plain`` to a Django view returning
``HttpResponse(b"ok")`` through the same client, middleware and resolver. Target: at most
1.5x (a plugin route costs at most half again a hand-written view).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import include, path

from _harness import Contender, compare, install_plugin

PLUGIN = """\
from services_ai_plugins import hookimpl
from services_ai_plugins.events import ApiResponse, Route


def stats(request):
    return ApiResponse(tenant=request.tenant, status=200, body=b"ok")


class Plugin:
    @hookimpl
    def register_routes(self, plugin_id):
        return [Route(path="/stats", handler=stats, name="stats")]
"""


def tenant_of(request: HttpRequest) -> str | None:
    tenant: str | None = request.headers.get("x-tenant")
    return tenant


def plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok")


urlpatterns = [
    path("plain", plain),
    path("plugins/", include("services_ai_plugins.django.urls")),
]


def configure(root: Path) -> None:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark",  # noqa: S106 - a benchmark's own
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["django.contrib.contenttypes", "services_ai_plugins.django"],
        MIDDLEWARE=["services_ai_plugins.django.middleware.PluginsMiddleware"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(root / "project.sqlite3"),
                "OPTIONS": {"timeout": 30},
            }
        },
        SERVICES_AI_PLUGINS={
            "TENANT_RESOLVER": f"{__name__}.tenant_of",
            "PLUGINS_DIR": str(root / "plugins"),
            "SANDBOX": {"isolation": {"archive": "inprocess"}},
            "HOST": {"entry_points": False},
        },
    )
    django.setup()


def main() -> None:
    # Each pyperf process (the runner and its workers) sets up a project of its own.
    root = Path(tempfile.mkdtemp(prefix="services-ai-plugins-bench-django-"))
    configure(root)
    # Only once the settings are configured: these read them at import.
    from django.core.management import call_command  # noqa: PLC0415
    from django.test import Client  # noqa: PLC0415

    from services_ai_plugins.django.conf import get_host  # noqa: PLC0415

    call_command("migrate", verbosity=0)
    install_plugin(get_host(), root, "web", PLUGIN, permissions=("register_routes",))
    client = Client(HTTP_X_TENANT="acme")
    answer: Any = client.get("/plugins/web/stats")
    assert (answer.status_code, answer.content) == (200, b"ok"), answer.content
    assert client.get("/plain").content == b"ok"

    def sdk() -> None:
        client.get("/plugins/web/stats")

    def baseline() -> None:
        client.get("/plain")

    compare(
        "django_route",
        sdk=Contender(
            "plugin route via Django",
            "middleware, URL include, request converted, filters, host.serve, response back",
            sdk,
        ),
        baseline=Contender(
            "plain Django view",
            "the same client, middleware and resolver, a view returning the same bytes",
            baseline,
        ),
    )


if __name__ == "__main__":
    main()
