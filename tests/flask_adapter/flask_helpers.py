"""What the Flask extension's tests share: the app, the plugins they upload, a real server.

Every plugin is a folder written in ``tmp_path``, packed into a ZIP with ``pack_plugin``
and installed through ``ext.host.install``, as an admin's upload would be. ``notes`` is
named trusted (it runs in the web process, so its HTML is inserted as it is);
everything else runs sandboxed, under the default policy.
"""

from __future__ import annotations

import json
import textwrap
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import flask
from werkzeug.serving import make_server

from services_ai_plugins import pack_plugin
from services_ai_plugins.events import User
from services_ai_plugins.flask import PluginsExtension

#: The in-process plugin: a route, a route with a parameter, a head and a footer
#: fragment, an api_request filter that marks the request, and a lead_created hook that
#: writes the lead's name, tenant and user to the file its ``journal`` setting names.
NOTES = """
import json
import attrs
from services_ai_plugins import hookimpl
from services_ai_plugins.events import ApiResponse, Route


def hello(request):
    return ApiResponse.json(request.tenant, {
        "tenant": request.tenant,
        "user": request.user.id if request.user is not None else None,
        "seen_by": request.headers.get("x-seen-by"),
        "path": request.path,
        "full_path": request.full_path,
        "query": {name: list(values) for name, values in request.query.items()},
        "body": request.body.decode(),
    })


def lead(request):
    return ApiResponse.json(request.tenant, {"lead": request.path_params["lead_id"]})


def plain(request):
    return ApiResponse(tenant=request.tenant, status=200, body=b"no type")


def native(request, lead_id):
    return f"native {lead_id} for {request.plugin_context.tenant} via {request.method}"


@hookimpl
def register_routes(plugin_id, api):
    return [
        Route(path="/hello", handler=hello, name="hello", methods=("GET", "POST")),
        Route(path="/leads/{lead_id}", handler=lead, name="lead"),
        Route(path="/plain", handler=plain, name="plain"),
        ("/native/{lead_id}", native, "native"),
    ]


@hookimpl
def inject_head(context):
    return '<meta name="notes" content="on">'


@hookimpl
def inject_footer(context):
    return '<p class="notes-footer">Notes for ' + context.tenant + '</p>'


@hookimpl
def api_request(request, context):
    return attrs.evolve(request, headers={**request.headers, "x-seen-by": "notes"})


@hookimpl
def lead_created(lead, context, settings):
    with open(settings["journal"], "a") as journal:
        user = context.user.id if context.user is not None else None
        journal.write(json.dumps([lead.name, context.tenant, user]) + "\\n")
"""

NOTES_PERMISSIONS = ["register_routes", "inject_html", "api_hooks", "read_leads"]

#: An uploaded plugin, sandboxed: a route, and a footer with a script that must stay text.
HOSTILE = """
from services_ai_plugins import hookimpl
from services_ai_plugins.events import ApiResponse, Route


def hello(request):
    return ApiResponse.json(request.tenant, {"sandboxed": request.tenant})


def split(request):
    # A header that would let the plugin frame the connection: refused before it is sent.
    return ApiResponse(
        tenant=request.tenant, status=200, headers={"transfer-encoding": "chunked"}, body=b"0"
    )


@hookimpl
def register_routes(plugin_id, api):
    return [
        Route(path="/hello", handler=hello, name="hello"),
        Route(path="/split", handler=split, name="split"),
    ]


@hookimpl
def inject_head(context):
    return '<script>document.title = "head owned"</script>'


@hookimpl
def inject_footer(context):
    return '<script>document.title = "owned"</script>'
"""

HOSTILE_MANIFEST: dict[str, Any] = {"permissions": ["register_routes", "inject_html"]}

#: A page of the app with every template global.
PAGE = """<html><head>{{ plugins_head() }}</head>
<body><main>{{ plugins_widgets() }}</main>{{ plugins_footer() }}</body></html>"""


def tenant_of(request: flask.Request) -> tuple[str, User | None] | None:
    """The tests' rule: the tenant in ``X-Tenant``, the signed-in user in ``X-User``."""
    tenant = request.headers.get("X-Tenant")
    if not tenant:
        return None
    user = request.headers.get("X-User")
    if not user:
        return tenant, None
    return tenant, User(id=user, tenant=tenant, email=f"{user}@{tenant}.example", name=user)


def settings(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """The tests' settings: a SQLite registry and the plugins folder in ``tmp_path``."""
    return {
        "TENANT_RESOLVER": tenant_of,
        "STORAGE": str(tmp_path / "registry.db"),
        "PLUGINS_DIR": str(tmp_path / "plugins"),
        "SANDBOX": {"timeout": 10.0, "trusted": ["notes"]},
        "HOST": {"entry_points": False},
        **changes,
    }


def make_app(
    tmp_path: Path, *, prefix: str | None = None, **changes: Any
) -> tuple[flask.Flask, PluginsExtension]:
    """A Flask app with its own pages (``/`` renders :data:`PAGE`) and the extension."""
    app = flask.Flask("crm")
    app.config["SERVICES_AI_PLUGINS"] = settings(tmp_path, **changes)
    if prefix is not None:
        app.config["SERVICES_AI_PLUGINS_PREFIX"] = prefix

    @app.get("/")
    def home() -> str:
        return flask.render_template_string(PAGE)

    return app, PluginsExtension(app)


def upload(
    ext: PluginsExtension,
    tmp_path: Path,
    plugin_id: str,
    source: str,
    manifest: dict[str, Any],
    *,
    tenants: Sequence[str] = ("acme",),
) -> None:
    """Write the plugin's folder, pack it, install the ZIP, approve it, enable it for tenants."""
    folder = tmp_path / "src" / plugin_id
    folder.mkdir(parents=True)
    document = {"id": plugin_id, "name": plugin_id.title(), "version": "1.0.0", **manifest}
    (folder / "manifest.json").write_text(json.dumps(document))
    (folder / "main.py").write_text(textwrap.dedent(source))
    archive = pack_plugin(folder, tmp_path / f"{plugin_id}.zip").path
    host = ext.host
    host.install(archive, actor="ops")
    host.registry.approve(plugin_id, actor="admin")
    for tenant in tenants:
        host.registry.enable(plugin_id, tenant, actor="admin")


def notes(ext: PluginsExtension, tmp_path: Path, *, tenants: Sequence[str] = ("acme",)) -> None:
    """The trusted plugin, its journal at ``tmp_path/journal.txt``."""
    journal = {"name": "journal", "type": "string", "default": str(tmp_path / "journal.txt")}
    manifest = {"permissions": NOTES_PERMISSIONS, "settings": [journal]}
    upload(ext, tmp_path, "notes", NOTES, manifest, tenants=tenants)


def hostile(ext: PluginsExtension, tmp_path: Path, *, tenants: Sequence[str] = ("acme",)) -> None:
    upload(ext, tmp_path, "hostile", HOSTILE, HOSTILE_MANIFEST, tenants=tenants)


@contextmanager
def serving(app: flask.Flask) -> Iterator[str]:
    """The app on a real threaded werkzeug server on 127.0.0.1 (a free port): its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="flask-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


def as_tenant(tenant: str, user: str | None = None) -> dict[str, str]:
    """The headers of a request for ``tenant`` (signed in as ``user``)."""
    return {"X-Tenant": tenant, **({"X-User": user} if user else {})}
