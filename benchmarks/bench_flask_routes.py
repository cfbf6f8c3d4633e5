"""Question "flask_route": a plugin route served by the Flask extension, against a plain
Flask view answering the same bytes, each through Flask's whole request cycle.

SDK: ``GET /plugins/web/stats`` through Flask's test client: the extension's
``before_request`` (tenant resolved, request context set) and ``teardown_request``, its one
dispatching rule (the request converted with ``web.request_from_wsgi``, the
``api_request`` filter, ``host.serve`` with its tenant gate and guarded in-process handler,
the ``api_response`` filter, the answer checked by ``web.write_wsgi``). Baseline:
``GET /plain`` to a Flask view returning ``b"ok"`` through the same client and the same
``before_request``/``teardown_request``. Target: at most 1.5x.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import flask

from _harness import Contender, compare, install_plugin
from services_ai_plugins.flask import PluginsExtension

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


def tenant_of(request: flask.Request) -> str | None:
    tenant: str | None = request.headers.get("x-tenant")
    return tenant


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="services-ai-plugins-bench-flask-"))
    app = flask.Flask("bench")
    app.config["SERVICES_AI_PLUGINS"] = {
        "TENANT_RESOLVER": tenant_of,
        "STORAGE": str(root / "registry.db"),
        "PLUGINS_DIR": str(root / "plugins"),
        "SANDBOX": {"isolation": {"archive": "inprocess"}},
        "HOST": {"entry_points": False},
    }
    plugins = PluginsExtension(app)

    @app.get("/plain")
    def plain() -> bytes:
        return b"ok"

    install_plugin(plugins.host, root, "web", PLUGIN, permissions=("register_routes",))
    client = app.test_client()
    headers = {"x-tenant": "acme"}
    answer = client.get("/plugins/web/stats", headers=headers)
    assert (answer.status_code, answer.data) == (200, b"ok"), answer.data
    assert client.get("/plain", headers=headers).data == b"ok"

    def sdk() -> None:
        client.get("/plugins/web/stats", headers=headers)

    def baseline() -> None:
        client.get("/plain", headers=headers)

    compare(
        "flask_route",
        sdk=Contender(
            "plugin route via Flask",
            "request context, one rule, request converted, filters, host.serve, answer checked",
            sdk,
        ),
        baseline=Contender(
            "plain Flask view",
            "the same client and request hooks, a view returning the same bytes",
            baseline,
        ),
    )


if __name__ == "__main__":
    main()
