"""The Flask extension through Flask's test client: settings, plugin routes, the request
context, url_for, template globals, and uploaded plugins, sandboxed or trusted.

Every plugin is an uploaded ZIP installed with ``ext.host.install`` over a SQLite registry
in ``tmp_path`` (see ``flask_helpers``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flask
import pytest
from flask_helpers import as_tenant, hostile, make_app, notes, settings
from werkzeug.routing import BuildError

from services_ai_plugins.errors import ConfigError
from services_ai_plugins.events import Lead
from services_ai_plugins.flask import PluginsExtension

App = tuple[flask.Flask, PluginsExtension]


@pytest.fixture
def crm(tmp_path: Path) -> Iterator[App]:
    """The app and its extension; the host closed afterwards."""
    app, ext = make_app(tmp_path)
    try:
        yield app, ext
    finally:
        ext.close()


# -- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"SANDBOX": 5}, "SANDBOX"),
        ({"SANDBOX": {"timeout": "soon"}}, "SANDBOX"),
        ({"BREAKER": {"nonsense": 1}}, "BREAKER"),
        ({"TENANT_RESOLVER": "crm_nowhere.tenant_of"}, "TENANT_RESOLVER"),
        ({"TENANT_RESOLVER": 42}, "TENANT_RESOLVER"),
        ({"STORAGE": 42}, "STORAGE"),
        ({"ADMIN_UPLOAD_LIMIT": 0}, "ADMIN_UPLOAD_LIMIT"),
        ({"TRUST_SANDBOXED_HTML": "yes"}, "TRUST_SANDBOXED_HTML"),
        ({"ACTOR": ""}, "ACTOR"),
        ({"COLOUR": "red"}, ""),
    ],
)
def test_a_wrong_setting_fails_at_init_app_naming_its_key(
    tmp_path: Path, change: dict[str, Any], key: str
) -> None:
    """Before any request and before any host or registry is made."""
    with pytest.raises(ConfigError) as caught:
        make_app(tmp_path, **change)
    assert caught.value.key == key
    assert str(caught.value).startswith(
        f"app.config['SERVICES_AI_PLUGINS'][{key!r}]" if key else "app.config"
    )
    assert not (tmp_path / "registry.db").exists()


def test_settings_that_are_not_a_dict_and_a_root_prefix_are_refused(tmp_path: Path) -> None:
    app = flask.Flask("crm")
    app.config["SERVICES_AI_PLUGINS"] = ["STORAGE"]
    with pytest.raises(ConfigError, match=r"app.config\['SERVICES_AI_PLUGINS'\] must be a dict"):
        PluginsExtension(app)
    app = flask.Flask("crm")
    app.config.update(SERVICES_AI_PLUGINS=settings(tmp_path), SERVICES_AI_PLUGINS_PREFIX="/")
    with pytest.raises(ConfigError, match=r"SERVICES_AI_PLUGINS_PREFIX'\] must be a path"):
        PluginsExtension(app)


def test_settings_given_to_the_extension_win_over_app_config(tmp_path: Path) -> None:
    """``settings=`` is read instead of app.config; init_app comes later (the factory pattern)."""
    ext = PluginsExtension(settings=settings(tmp_path, STORAGE=str(tmp_path / "given.db")))
    app = flask.Flask("crm")
    app.config["SERVICES_AI_PLUGINS"] = {"SANDBOX": "not even read"}
    ext.init_app(app)
    try:
        assert app.extensions["services_ai_plugins"] is ext
        host = ext.host
        assert ext.host is host  # one host, built once
        assert (tmp_path / "given.db").exists()
        ext.close()
        assert ext.host is not host  # closed: the next use builds a new one
    finally:
        ext.close()


def test_without_a_resolver_the_tenant_is_flask_g_tenant(tmp_path: Path) -> None:
    """Set by the app's own before_request, registered before the extension."""
    app = flask.Flask("crm")
    app.config["SERVICES_AI_PLUGINS"] = settings(tmp_path, TENANT_RESOLVER=None)

    @app.before_request
    def tenant() -> None:
        flask.g.tenant = flask.request.args.get("business")

    ext = PluginsExtension(app)
    try:
        notes(ext, tmp_path)
        client = app.test_client()
        answer = client.get("/plugins/notes/hello?business=acme")
        assert answer.status_code == 200
        assert answer.get_json()["tenant"] == "acme"
        assert client.get("/plugins/notes/hello?business=globex").status_code == 404
        assert client.get("/plugins/notes/hello").status_code == 404
    finally:
        ext.close()


def test_a_resolver_answering_nonsense_is_a_config_error_naming_it(tmp_path: Path) -> None:
    app, ext = make_app(tmp_path, TENANT_RESOLVER=lambda request: 42)
    app.testing = True  # the error reaches the test instead of becoming a 500
    try:
        with pytest.raises(ConfigError) as caught:
            app.test_client().get("/")
        assert caught.value.key == "TENANT_RESOLVER"
    finally:
        ext.close()


# -- plugin routes -------------------------------------------------------------------------------


def test_a_route_answers_the_enabling_tenant_only(crm: App, tmp_path: Path) -> None:
    """200 for acme with the request as the plugin saw it (its path below the prefix, the
    signed-in user, every query value, the body, the api_request filter's header); 404 for
    globex and for a request with no tenant."""
    app, ext = crm
    notes(ext, tmp_path)
    client = app.test_client()

    answer = client.post(
        "/plugins/notes/hello?tag=new&tag=hot", data=b"hello", headers=as_tenant("acme", "ada")
    )
    assert answer.status_code == 200, answer.data
    assert answer.get_json() == {
        "tenant": "acme",
        "user": "ada",
        "seen_by": "notes",  # the plugin's api_request filter ran before the route
        "path": "/notes/hello",
        "full_path": "/plugins/notes/hello",
        "query": {"tag": ["new", "hot"]},
        "body": "hello",
    }
    assert answer.headers["content-type"] == "application/json"
    assert client.get("/plugins/notes/hello", headers=as_tenant("globex")).status_code == 404
    assert client.get("/plugins/notes/hello").status_code == 404


def test_the_prefix_is_the_apps_to_choose(tmp_path: Path) -> None:
    """Any path, non-ASCII too: the plugin sees the path below it and the whole path."""
    app, ext = make_app(tmp_path, prefix="/ext/plügins/")
    try:
        notes(ext, tmp_path)
        client = app.test_client()
        answer = client.get("/ext/pl%C3%BCgins/notes/hello", headers=as_tenant("acme"))
        assert answer.status_code == 200, answer.data
        assert answer.get_json()["path"] == "/notes/hello"
        assert answer.get_json()["full_path"] == "/ext/plügins/notes/hello"
        assert client.get("/plugins/notes/hello", headers=as_tenant("acme")).status_code == 404
        with app.test_request_context("/"):
            assert flask.url_for("plugins.notes.hello") == "/ext/pl%C3%BCgins/notes/hello"
    finally:
        ext.close()


def test_a_plugin_disabled_meanwhile_stops_answering_at_the_next_request(
    crm: App, tmp_path: Path
) -> None:
    app, ext = crm
    notes(ext, tmp_path)
    client = app.test_client()
    assert client.get("/plugins/notes/hello", headers=as_tenant("acme")).status_code == 200
    ext.host.registry.disable("notes", "acme", actor="admin")
    assert client.get("/plugins/notes/hello", headers=as_tenant("acme")).status_code == 404


def test_a_plugin_approved_after_the_first_request_is_served_without_restart(
    crm: App, tmp_path: Path
) -> None:
    """Flask refuses new URL rules after its first request: the one rule serves the newcomer."""
    app, ext = crm
    client = app.test_client()
    assert client.get("/plugins/notes/hello", headers=as_tenant("acme")).status_code == 404
    with pytest.raises(AssertionError, match="already handled its first request"):
        app.add_url_rule("/late", "late", lambda: "late")
    notes(ext, tmp_path)
    assert client.get("/plugins/notes/hello", headers=as_tenant("acme")).status_code == 200


def test_methods_and_options_are_the_hosts_to_answer(crm: App, tmp_path: Path) -> None:
    """HEAD gets the GET answer's length and no body; OPTIONS and DELETE reach the host,
    which answers 405 with the route's methods (Flask answers neither itself)."""
    app, ext = crm
    notes(ext, tmp_path)
    client = app.test_client()
    got = client.get("/plugins/notes/hello", headers=as_tenant("acme"))
    head = client.head("/plugins/notes/hello", headers=as_tenant("acme"))
    assert head.status_code == 200
    assert head.data == b""
    assert head.headers["content-length"] == str(len(got.data))
    for method in ("OPTIONS", "DELETE"):
        answer = client.open("/plugins/notes/hello", method=method, headers=as_tenant("acme"))
        assert answer.status_code == 405
        assert answer.headers["allow"] == "GET, HEAD, POST"


def test_the_plugins_headers_are_sent_as_they_are(crm: App, tmp_path: Path) -> None:
    """An answer without a content type gets none from Flask."""
    app, ext = crm
    notes(ext, tmp_path)
    answer = app.test_client().get("/plugins/notes/plain", headers=as_tenant("acme"))
    assert answer.status_code == 200
    assert answer.data == b"no type"
    assert "content-type" not in answer.headers


def test_bad_requests_are_answered_before_the_plugin(crm: App, tmp_path: Path) -> None:
    """A path that is not UTF-8: 400; a body over MAX_CONTENT_LENGTH (else 1 MiB): 413."""
    app, ext = crm
    notes(ext, tmp_path)
    client = app.test_client()
    raw_path = b"/plugins/notes/\xff".decode("latin-1")  # a WSGI path: bytes as Latin-1
    answer = client.get(
        "/plugins/notes/x", headers=as_tenant("acme"), environ_overrides={"PATH_INFO": raw_path}
    )
    assert answer.status_code == 400
    assert "not UTF-8" in answer.get_json()["error"]
    big = b"x" * (2**20 + 1)
    answer = client.post("/plugins/notes/hello", data=big, headers=as_tenant("acme"))
    assert answer.status_code == 413
    app.config["MAX_CONTENT_LENGTH"] = 10
    answer = client.post("/plugins/notes/hello", data=b"x" * 11, headers=as_tenant("acme"))
    assert answer.status_code == 413
    answer = client.post("/plugins/notes/hello", data=b"x" * 10, headers=as_tenant("acme"))
    assert answer.status_code == 200
    assert answer.get_json()["body"] == "x" * 10


def test_a_native_view_gets_the_flask_request(crm: App, tmp_path: Path) -> None:
    """A (path, view, name) tuple of a trusted plugin: the view gets the Flask request with
    ``plugin_context`` (and ``plugin_api``, ``plugin_settings``) set, and its path parameter;
    what it returns is made a response by Flask."""
    app, ext = crm
    notes(ext, tmp_path)
    client = app.test_client()
    answer = client.get("/plugins/notes/native/L7", headers=as_tenant("acme"))
    assert answer.status_code == 200
    assert answer.data == b"native L7 for acme via GET"
    assert client.get("/plugins/notes/native/L7", headers=as_tenant("globex")).status_code == 404


# -- the request context -------------------------------------------------------------------------


class Recorder:
    """A deferred-call executor that keeps the calls for the test to run."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], None]] = []

    def submit(self, call: Callable[[], None]) -> bool:
        self.calls.append(call)
        return True

    def shutdown(self, timeout: float) -> None:
        self.calls.clear()


def test_hooks_in_a_view_run_for_the_tenant_after_the_request(tmp_path: Path) -> None:
    """The request context is set for the view (host.current_context() is the tenant's,
    with its user); a host.defer call is held until the request is over, then runs for
    that tenant and user; a view that fails drops it; no context is left behind."""
    recorder = Recorder()
    app, ext = make_app(tmp_path, HOST={"entry_points": False, "deferred": recorder})
    seen: list[Any] = []

    @app.post("/leads")
    def new_lead() -> str:
        context = ext.host.current_context()
        assert context is not None
        seen.append((context.tenant, context.user.id if context.user else None))
        lead = Lead(id="L1", tenant=context.tenant, name=flask.request.form["name"])
        ext.host.defer.lead_created(lead=lead)
        seen.append(len(recorder.calls))  # held by the request, not handed over yet
        if flask.request.form.get("fail"):
            raise RuntimeError("the view fails after deferring")
        return "saved"

    try:
        notes(ext, tmp_path)
        client = app.test_client()
        answer = client.post("/leads", data={"name": "Ada"}, headers=as_tenant("acme", "sam"))
        assert answer.status_code == 200
        assert seen == [("acme", "sam"), 0]
        assert ext.host.current_context() is None
        assert len(recorder.calls) == 1
        recorder.calls.pop()()
        journal = (tmp_path / "journal.txt").read_text().splitlines()
        assert [json.loads(line) for line in journal] == [["Ada", "acme", "sam"]]

        failed = client.post(
            "/leads", data={"name": "Bo", "fail": "1"}, headers=as_tenant("acme", "sam")
        )
        assert failed.status_code == 500
        assert recorder.calls == []  # dropped with the failed request
        assert ext.host.current_context() is None
    finally:
        ext.close()


def test_no_tenant_no_context_and_no_fragments(crm: App, tmp_path: Path) -> None:
    app, ext = crm
    notes(ext, tmp_path)
    contexts: list[object] = []

    @app.get("/health")
    def health() -> str:
        contexts.append(ext.host.current_context())
        return flask.render_template_string("[{{ plugins_head() }}{{ plugins_footer() }}]")

    client = app.test_client()
    assert client.get("/health").data == b"[]"
    assert contexts == [None]
    assert "notes" not in client.get("/").get_data(as_text=True)


# -- url_for and templates -----------------------------------------------------------------------


def test_url_for_builds_plugin_urls_under_the_script_root(crm: App, tmp_path: Path) -> None:
    """url_for("plugins.<id>.<name>") and plugin_url() build the path (script root, prefix,
    quoted parameters), honour _external and _anchor, and the URL built is served."""
    app, ext = crm
    base = "http://crm.example/app"
    with app.test_request_context("/", base_url=base), pytest.raises(BuildError):
        flask.url_for("plugins.notes.lead", lead_id="L 1")  # not installed yet
    notes(ext, tmp_path)
    with app.test_request_context("/", base_url=base):
        built = flask.url_for("plugins.notes.lead", lead_id="L 1")
        assert built == "/app/plugins/notes/leads/L%201"
        assert (
            flask.url_for("plugins.notes.hello", _external=True, _anchor="top")
            == "http://crm.example/app/plugins/notes/hello#top"
        )
        rendered = flask.render_template_string("{{ plugin_url('notes', 'lead', lead_id=7) }}")
        assert rendered == "/app/plugins/notes/leads/7"
        with pytest.raises(BuildError):
            flask.url_for("plugins.notes.nowhere")
        with pytest.raises(BuildError):
            flask.url_for("home_page")  # not a plugin's: Flask's own error, untouched
        with pytest.raises(TypeError, match="missing lead_id"):
            flask.url_for("plugins.notes.lead")
    with app.test_request_context("/"):
        url = flask.url_for("plugins.notes.lead", lead_id="L 1")
    answer = app.test_client().get(url, headers=as_tenant("acme"))
    assert answer.get_json() == {"lead": "L 1"}


def test_head_and_footer_fragments_render_for_the_tenant(crm: App, tmp_path: Path) -> None:
    """A trusted plugin's fragments are inserted as HTML in acme's page, not in globex's."""
    app, ext = crm
    notes(ext, tmp_path)
    client = app.test_client()
    page = client.get("/", headers=as_tenant("acme")).get_data(as_text=True)
    head, body = page.split("</head>", 1)
    assert '<meta name="notes" content="on">' in head
    assert '<p class="notes-footer">Notes for acme</p>' in body
    assert "notes" not in client.get("/", headers=as_tenant("globex")).get_data(as_text=True)


# -- sandboxed and hostile plugins ---------------------------------------------------------------

sandboxed = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")


@sandboxed
def test_a_sandboxed_plugins_route_answers(crm: App, tmp_path: Path) -> None:
    """An uploaded plugin under the default policy runs in a worker; its route answers for
    the tenant that enabled it only."""
    app, ext = crm
    hostile(ext, tmp_path)
    assert not ext.host.runs_in_process("hostile")
    client = app.test_client()
    answer = client.get("/plugins/hostile/hello", headers=as_tenant("acme"))
    assert answer.status_code == 200, answer.data
    assert answer.get_json() == {"sandboxed": "acme"}
    assert client.get("/plugins/hostile/hello", headers=as_tenant("globex")).status_code == 404


@sandboxed
def test_a_hostile_plugins_script_never_reaches_the_page_as_markup(
    crm: App, tmp_path: Path
) -> None:
    """Its footer script is shown as text, its head script left out; the trusted plugin's
    fragments beside it are still inserted."""
    app, ext = crm
    hostile(ext, tmp_path)
    notes(ext, tmp_path)
    page = app.test_client().get("/", headers=as_tenant("acme")).get_data(as_text=True)
    assert "<script" not in page
    assert "head owned" not in page
    assert "&lt;script&gt;document.title = &quot;owned&quot;&lt;/script&gt;" in page
    assert '<meta name="notes" content="on">' in page


@sandboxed
def test_trusting_sandboxed_html_inserts_it(tmp_path: Path) -> None:
    """TRUST_SANDBOXED_HTML: the operator's choice, read from the settings."""
    app, ext = make_app(tmp_path, TRUST_SANDBOXED_HTML=True)
    try:
        hostile(ext, tmp_path)
        page = app.test_client().get("/", headers=as_tenant("acme")).get_data(as_text=True)
        assert '<script>document.title = "owned"</script>' in page
    finally:
        ext.close()


@sandboxed
def test_a_hostile_plugin_cannot_frame_the_connection(crm: App, tmp_path: Path) -> None:
    """A transfer-encoding header from the plugin is refused before anything is sent: 502,
    and none of the plugin's headers or body reach the client."""
    app, ext = crm
    hostile(ext, tmp_path)
    answer = app.test_client().get("/plugins/hostile/split", headers=as_tenant("acme"))
    assert answer.status_code == 502
    assert answer.get_json() == {"error": "bad gateway"}
    assert "transfer-encoding" not in answer.headers
