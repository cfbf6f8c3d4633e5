"""One plugin package, unchanged, on Django, Flask and Starlette.

``examples/django_app/plugins/hello_widget`` (a framework-neutral route and a
``dashboard_widget`` hook) is packed once into one ZIP, and that archive is uploaded to a
host of each framework's adapter: each serves its route to the business that enabled it
(404 to another), with that business's leads through the api, and shows its widget in a
page rendered by the framework's own templates, sandboxed (an uploaded plugin).

It lives with the Django tests because Django is set up here (once per test process).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from business.models import Business, Lead
from django.test import Client

from services_ai_plugins import PluginHost, pack_plugin
from services_ai_plugins_testing.fakes import FakeHostServices

from .conftest import EXAMPLE_PLUGINS

WIDGET_FRAME = '<iframe sandbox="" class="plugin-widget-frame" title="Hello"'


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """The neutral plugin, packed once: the same bytes go to every framework."""
    return pack_plugin(EXAMPLE_PLUGINS / "hello_widget", tmp_path / "hello-widget.zip").path


def _run(host: PluginHost, archive: Path) -> None:
    record = host.install(archive, actor="staff")
    host.registry.approve(record.id, actor="staff")
    host.registry.enable(record.id, "acme", actor="staff")
    assert not host.runs_in_process(record.id)  # uploaded: sandboxed everywhere


def _settings(tmp_path: Path, name: str, services: FakeHostServices) -> dict[str, Any]:
    return {
        "SERVICES": lambda: services,
        "TENANT_RESOLVER": _tenant_header,
        "STORAGE": str(tmp_path / f"{name}.db"),
        "PLUGINS_DIR": str(tmp_path / f"{name}-plugins"),
        "HOST": {"entry_points": False, "refresh_interval": 0.0},
    }


def _tenant_header(request: Any) -> str | None:
    tenant: str | None = request.headers.get("x-tenant")
    return tenant


def test_on_django(crm: PluginHost, client: Client, archive: Path) -> None:
    _run(crm, archive)
    for name in ("Ada", "Bo"):
        Lead.objects.create(business=Business.objects.get(slug="acme"), name=name)
    answer = client.get("/plugins/hello-widget/hello", HTTP_HOST="acme.testserver")
    assert answer.json() == {"greeting": "Hello", "tenant": "acme", "leads": 2}
    assert (
        client.get("/plugins/hello-widget/hello", HTTP_HOST="globex.testserver").status_code == 404
    )
    assert WIDGET_FRAME in client.get("/", HTTP_HOST="acme.testserver").content.decode()


@pytest.fixture
def flask_app(tmp_path: Path) -> Iterator[tuple[Any, PluginHost, FakeHostServices]]:
    flask = pytest.importorskip("flask")
    from services_ai_plugins.flask import PluginsExtension

    services = FakeHostServices()
    app = flask.Flask("crm")
    app.config["SERVICES_AI_PLUGINS"] = _settings(tmp_path, "flask", services)
    plugins = PluginsExtension(app)

    @app.get("/")
    def dashboard() -> str:
        return flask.render_template_string("<main>{{ plugins_widgets() }}</main>")

    try:
        yield app, plugins.host, services
    finally:
        plugins.close()


def test_on_flask(flask_app: tuple[Any, PluginHost, FakeHostServices], archive: Path) -> None:
    app, host, services = flask_app
    _run(host, archive)
    services.make_lead("acme", name="Ada")
    services.make_lead("acme", name="Bo")
    client = app.test_client()
    answer = client.get("/plugins/hello-widget/hello", headers={"x-tenant": "acme"})
    assert answer.get_json() == {"greeting": "Hello", "tenant": "acme", "leads": 2}
    assert (
        client.get("/plugins/hello-widget/hello", headers={"x-tenant": "globex"}).status_code == 404
    )
    assert WIDGET_FRAME in client.get("/", headers={"x-tenant": "acme"}).get_data(as_text=True)


def test_on_starlette(tmp_path: Path, archive: Path) -> None:
    pytest.importorskip("starlette")
    import warnings

    from jinja2 import Environment
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    from services_ai_plugins.starlette import Plugins

    with warnings.catch_warnings():  # Starlette 1.x asks for httpx2 and warns about httpx
        warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
        from starlette.testclient import TestClient

    services = FakeHostServices()
    plugins = Plugins(_settings(tmp_path, "starlette", services))
    page = Environment(autoescape=True).from_string("<main>{{ plugins_widgets(request) }}</main>")
    page.globals.update(plugins.template_globals())

    def dashboard(request: Request) -> HTMLResponse:  # a def endpoint: rendered in a thread
        return HTMLResponse(page.render(request=request))

    app = Starlette(
        routes=[*plugins.routes(), Route("/", dashboard)],
        middleware=[plugins.middleware],
        lifespan=plugins.lifespan,
    )
    with TestClient(app) as client:
        _run(plugins.host, archive)
        services.make_lead("acme", name="Ada")
        services.make_lead("acme", name="Bo")
        answer = client.get("/plugins/hello-widget/hello", headers={"x-tenant": "acme"})
        assert answer.json() == {"greeting": "Hello", "tenant": "acme", "leads": 2}
        other = client.get("/plugins/hello-widget/hello", headers={"x-tenant": "globex"})
        assert other.status_code == 404
        assert WIDGET_FRAME in client.get("/", headers={"x-tenant": "acme"}).text
