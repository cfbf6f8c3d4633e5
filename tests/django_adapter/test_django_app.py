"""The example CRM end to end through Django's test client: routes, reverse, fragments,
widgets, hooks after commit, the breaker, the original system's plugins and sandboxed ones.

Every test runs on the database the run gives ``default`` (SQLite, and PostgreSQL in the
second Django run of ``nox -s tests``), with the registry in that database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from business.models import Business, Lead, Notification
from django.db import transaction
from django.test import Client
from django.urls import NoReverseMatch, reverse

from django_adapter.conftest import packed
from services_ai_plugins import PluginHost
from services_ai_plugins.django import conf

ACME = {"HTTP_HOST": "acme.testserver"}
GLOBEX = {"HTTP_HOST": "globex.testserver"}


def _running(host: PluginHost, archive: Path, *tenants: str) -> str:
    record = host.install(archive, actor="staff")
    host.registry.approve(record.id, actor="staff")
    for tenant in tenants:
        host.registry.enable(record.id, tenant, actor="staff")
    return record.id


def _lead(slug: str, name: str) -> Lead:
    return Lead.objects.create(business=Business.objects.get(slug=slug), name=name)


# -- the original system's plugin, unchanged ---------------------------------------------------


def test_original_plugin_view_reads_its_business_leads(
    crm: PluginHost, client: Client, tmp_path: Path
) -> None:
    """Its manifest has no id, its view is a Django view returning an HttpResponse, it reads
    leads through the api its register_routes got, with the original name get_leads: it
    answers for the business that enabled it, with that business's leads only."""
    plugin_id = _running(crm, packed(tmp_path, "lead_notes"), "acme")
    assert plugin_id == "lead-notes"
    _lead("acme", "Ada of Acme")
    _lead("globex", "Gus of Globex")

    answer = client.get("/plugins/lead-notes/my-route/", **ACME)
    assert answer.status_code == 200, answer.content
    page = answer.content.decode()
    assert "Leads of acme" in page
    assert "Ada of Acme" in page
    assert "Gus of Globex" not in page

    assert client.get("/plugins/lead-notes/my-route/", **GLOBEX).status_code == 404


def test_original_plugin_route_reverses_under_the_namespace(
    crm: PluginHost, client: Client, tmp_path: Path
) -> None:
    """reverse("plugins:<plugin_id>:<name>") names the route once the plugin is approved
    (the next request refreshes Django's URL caches), and no longer after it is rejected."""
    client.get("/", **ACME)
    with pytest.raises(NoReverseMatch):
        reverse("plugins:lead-notes:my_route_name")
    _running(crm, packed(tmp_path, "lead_notes"), "acme")
    client.get("/", **ACME)
    assert reverse("plugins:lead-notes:my_route_name") == "/plugins/lead-notes/my-route/"

    crm.registry.suspend("lead-notes", actor="staff", reason="review")
    client.get("/", **ACME)
    with pytest.raises(NoReverseMatch):
        reverse("plugins:lead-notes:my_route_name")


def test_head_fragment_renders_in_the_page_of_the_enabling_business(
    crm: PluginHost, client: Client, tmp_path: Path
) -> None:
    """inject_head returning a plain string (the original system's way) lands in <head>,
    as HTML (the plugin runs in process: the operator named it trusted)."""
    _running(crm, packed(tmp_path, "lead_notes"), "acme")
    acme = client.get("/", **ACME).content.decode()
    head = acme.split("</head>", 1)[0]
    assert '<meta name="lead-notes" content="on">' in head
    assert "lead-notes" not in client.get("/", **GLOBEX).content.decode()


def test_lead_saved_by_the_orm_fires_after_commit_for_its_business_only(
    crm: PluginHost, tmp_path: Path
) -> None:
    """lead_created runs once the transaction commits, never before and never for a rolled
    back lead, and only for the business the lead belongs to."""
    _running(crm, packed(tmp_path, "lead_notes"), "acme", "globex")
    with transaction.atomic():
        _lead("acme", "Committed Carla")
        assert not Notification.objects.exists()  # not yet: still in the transaction
    assert [(n.business.slug, n.message) for n in Notification.objects.all()] == [
        ("acme", "New lead: Committed Carla")
    ]

    def abandoned() -> None:
        with transaction.atomic():
            _lead("globex", "Rolled-back Rita")
            raise RuntimeError("the save is abandoned")

    with pytest.raises(RuntimeError):
        abandoned()
    assert Notification.objects.count() == 1


def test_lead_created_reaches_only_businesses_that_enabled_the_plugin(
    crm: PluginHost, tmp_path: Path
) -> None:
    _running(crm, packed(tmp_path, "lead_notes"), "acme")
    _lead("globex", "Gus")
    _lead("acme", "Ada")
    assert [n.business.slug for n in Notification.objects.all()] == ["acme"]


def test_a_lead_posted_through_the_form_fires_for_the_request_business(
    crm: PluginHost, client: Client, tmp_path: Path
) -> None:
    """The request's context (its user included) reaches the hook fired by the save."""
    _running(crm, packed(tmp_path, "lead_notes"), "acme")
    client.login(username="acme-sales", password="pw")
    answer = client.post("/leads/new/", {"name": "Form Fiona"}, **ACME)
    assert answer.status_code == 302
    assert Notification.objects.get().message == "New lead: Form Fiona"


# -- a sandboxed, framework-neutral plugin ------------------------------------------------------


def test_sandboxed_plugin_route_and_widget(crm: PluginHost, client: Client, tmp_path: Path) -> None:
    """An uploaded plugin runs in a worker: its neutral route answers JSON for the business
    that enabled it (404 elsewhere), and its widget is shown in a sandboxed iframe."""
    _running(crm, packed(tmp_path, "hello_widget"), "acme")
    assert not crm.runs_in_process("hello-widget")
    _lead("acme", "Ada")
    _lead("acme", "Bo")
    _lead("globex", "Gus")

    answer = client.get("/plugins/hello-widget/hello", **ACME)
    assert answer.status_code == 200, answer.content
    assert answer.json() == {"greeting": "Hello", "tenant": "acme", "leads": 2}
    assert answer["content-type"].startswith("application/json")
    assert client.get("/plugins/hello-widget/hello", **GLOBEX).status_code == 404
    client.get("/", **ACME)
    assert reverse("plugins:hello-widget:hello") == "/plugins/hello-widget/hello"

    page = client.get("/", **ACME).content.decode()
    assert '<iframe sandbox="" class="plugin-widget-frame" title="Hello"' in page
    assert 'srcdoc="&lt;p&gt;Hello: 2 leads&lt;/p&gt;"' in page
    assert "<p>Hello: 2 leads</p>" not in page  # never as markup in the app's page


def test_plugin_disabled_meanwhile_stops_answering_at_the_next_request(
    crm: PluginHost, client: Client, tmp_path: Path
) -> None:
    _running(crm, packed(tmp_path, "hello_widget"), "acme")
    assert client.get("/plugins/hello-widget/hello", **ACME).status_code == 200
    crm.registry.disable("hello-widget", "acme", actor="staff")
    assert client.get("/plugins/hello-widget/hello", **ACME).status_code == 404


def test_no_business_no_plugin_routes(crm: PluginHost, client: Client, tmp_path: Path) -> None:
    """The bare domain (the staff's) has no tenant: plugin URLs are not found there."""
    _running(crm, packed(tmp_path, "hello_widget"), "acme")
    assert client.get("/plugins/hello-widget/hello").status_code == 404


# -- hostile and failing plugins ---------------------------------------------------------------

HOSTILE = """
from services_ai_plugins import hookimpl
from services_ai_plugins.events import HtmlFragment, Route

def boom(request):
    raise RuntimeError("the route fails")

@hookimpl
def register_routes(plugin_id, api):
    return [Route(path="/boom", handler=boom, name="boom")]

@hookimpl
def inject_footer(context):
    return '<script>document.title = "owned"</script>'

@hookimpl
def api_request(request, context):
    return request
"""


def _hostile(tmp_path: Path, name: str, body: str, **manifest: Any) -> Path:
    import json

    from services_ai_plugins import pack_plugin

    folder = tmp_path / "src" / name
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(body)
    (folder / "manifest.json").write_text(
        json.dumps({"id": name, "name": name, "version": "1.0.0", **manifest})
    )
    return Path(pack_plugin(folder, tmp_path / f"{name}.zip").path)


def test_sandboxed_footer_html_is_escaped_and_a_failing_route_is_suspended(
    crm: PluginHost, client: Client, tmp_path: Path, settings: Any
) -> None:
    """A sandboxed plugin's script never runs in the app's page (escaped), and a route that
    keeps failing answers 500 until the breaker suspends the plugin for the business; the
    failures are listed for the admin."""
    archive = _hostile(tmp_path, "hostile", HOSTILE, permissions=["register_routes", "inject_html"])
    _running(crm, archive, "acme")
    page = client.get("/", **ACME).content.decode()
    assert "<script>document.title" not in page
    assert "&lt;script&gt;document.title = &quot;owned&quot;&lt;/script&gt;" in page

    statuses = [client.get("/plugins/hostile/boom", **ACME).status_code for _ in range(8)]
    assert statuses[0] == 500
    assert statuses[-1] == 404  # suspended for acme by the breaker
    crm.flush()
    failures = crm.failures("hostile")
    assert failures
    assert {f.tenant for f in failures} == {"acme"}
    assert any(s.tenant == "acme" for s in crm.suspensions("hostile"))


# -- the api a native view closes over ----------------------------------------------------------

KEEPER = """
import pluggy
from django.http import HttpResponse

hookimpl = pluggy.HookimplMarker("services_ai")
KEPT = {}


class Keeper:
    @hookimpl
    def register_routes(self, plugin_id, api):
        KEPT[plugin_id] = api

        def mine(request):
            return HttpResponse(str(len(api.get_leads())))

        def borrowed(request):
            import builtins

            other = builtins.__dict__["_sap_lent"]["lender"]
            try:
                other.get_leads()
            except Exception as exc:
                return HttpResponse(type(exc).__name__)
            return HttpResponse("read through another plugin's api")

        return [("mine/", mine, "mine"), ("borrowed/", borrowed, "borrowed")]

    @hookimpl
    def lead_created(self, lead, api):
        try:
            KEPT["keeper"].get_leads()
        except Exception as exc:
            api.send_notification("kept api refused: " + type(exc).__name__)
        else:
            api.send_notification("kept api answered outside its view")
"""

LENDER = """
import pluggy

hookimpl = pluggy.HookimplMarker("services_ai")


class Lender:
    @hookimpl
    def register_routes(self, plugin_id, api):
        import builtins

        builtins.__dict__.setdefault("_sap_lent", {})[plugin_id] = api
        return []
"""


def test_a_kept_register_routes_api_acts_only_inside_its_own_plugins_view(
    crm: PluginHost, client: Client, tmp_path: Path, settings: Any
) -> None:
    """The tenant-less api of register_routes reads the request's business only while its
    own plugin's native view runs: kept and called from a hook, or lent to another
    plugin's view, it is refused (no tenant there)."""
    settings.SERVICES_AI_PLUGINS = {
        **settings.SERVICES_AI_PLUGINS,
        "SANDBOX": {"trusted": ["keeper", "lender"]},
    }
    host = conf.get_host()
    permissions = ["read_leads", "register_routes", "send_notifications"]
    _running(
        host,
        _hostile(tmp_path, "keeper", KEEPER, permissions=permissions, plugin_class="Keeper"),
        "acme",
    )
    _running(
        host,
        _hostile(tmp_path, "lender", LENDER, permissions=permissions, plugin_class="Lender"),
        "acme",
    )
    import builtins

    try:
        borrowed = client.get("/plugins/keeper/borrowed/", **ACME)  # builds the route table
        assert borrowed.content == b"TenantScopeError"
    finally:
        builtins.__dict__.pop("_sap_lent", None)
    _lead("globex", "Gus")
    _lead("acme", "Ada")
    assert host.native_values() is None

    mine = client.get("/plugins/keeper/mine/", **ACME)
    assert (mine.status_code, mine.content) == (200, b"1")  # acme's one lead, not globex's
    assert [n.message for n in Notification.objects.filter(business__slug="acme")] == [
        "kept api refused: TenantScopeError"
    ]


FILTERS = """
import attrs
import pluggy

hookimpl = pluggy.HookimplMarker("services_ai")


class Filters:
    @hookimpl
    def api_request(self, request, context):
        headers = dict(request.headers, **{"x-seen-by": "filters:" + context.tenant})
        return attrs.evolve(request, headers=headers)

    @hookimpl
    def api_response(self, request, response, context):
        headers = dict(response.headers, **{"x-request-saw": request.headers.get("x-seen-by", "")})
        return attrs.evolve(response, headers=headers)

    @hookimpl
    def dashboard_widget(self, context):
        from services_ai_plugins.events import Widget

        return Widget(tenant=context.tenant, title="<Trusted>", html="<b>bold</b>", order=-1)
"""


def test_filters_run_around_plugin_routes_and_trusted_widgets_are_markup(
    crm: PluginHost, client: Client, tmp_path: Path, settings: Any
) -> None:
    """api_request and api_response filter every neutral plugin route for the business
    (here: one plugin's filters around another's route); an in-process plugin's widget HTML
    is inserted as it is, its title escaped; {% plugin_url %} reverses a route."""
    settings.SERVICES_AI_PLUGINS = {
        **settings.SERVICES_AI_PLUGINS,
        "SANDBOX": {"trusted": ["filters"]},
    }
    host = conf.get_host()
    _running(
        host,
        _hostile(
            tmp_path,
            "filters",
            FILTERS,
            permissions=["api_hooks", "dashboard_widgets"],
            plugin_class="Filters",
        ),
        "acme",
    )
    _running(host, packed(tmp_path, "hello_widget"), "acme", "globex")
    answer = client.get("/plugins/hello-widget/hello", **ACME)
    assert answer.status_code == 200
    assert answer["x-request-saw"] == "filters:acme"
    assert "x-request-saw" not in client.get("/plugins/hello-widget/hello", **GLOBEX)

    page = client.get("/", **ACME).content.decode()
    assert "<h2>&lt;Trusted&gt;</h2><b>bold</b>" in page
    assert page.index("&lt;Trusted&gt;") < page.index('title="Hello"')  # order -1 first

    from django.template import Context, Template

    rendered = Template(
        "{% load services_ai_plugins %}{% plugin_url 'hello-widget' 'hello' %}"
    ).render(Context({}))
    assert rendered == "/plugins/hello-widget/hello"


def test_the_original_plugin_through_the_admin_serves_the_business_that_enabled_it(
    crm: PluginHost, client: Client, admin_client: Client, admin_user: Any, tmp_path: Path
) -> None:
    """The issue's path, in the admin: a staff user uploads the original system's plugin as
    it was written, approves it and enables it for Acme; Acme's page and route then carry
    it, Globex's do not, and the audit trail names the staff user for each step."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    base = "/admin/services_ai_plugins/plugin/"
    archive = packed(tmp_path, "lead_notes")
    uploaded = admin_client.post(
        base,
        {"archive": SimpleUploadedFile("lead_notes.zip", archive.read_bytes())},
        follow=True,
    )
    assert uploaded.status_code == 200
    assert crm.registry.plugin("lead-notes").status.value == "pending"
    admin_client.post(f"{base}lead-notes/change/", {"action": "approve"}, follow=True)
    admin_client.post(
        f"{base}lead-notes/tenants/", {"action": "enable", "tenant": "acme"}, follow=True
    )
    _lead("acme", "Ada of Acme")

    assert "Ada of Acme" in client.get("/plugins/lead-notes/my-route/", **ACME).content.decode()
    assert client.get("/plugins/lead-notes/my-route/", **GLOBEX).status_code == 404
    assert '<meta name="lead-notes" content="on">' in client.get("/", **ACME).content.decode()
    me = admin_user.get_username()
    for action in ("install", "approve", "enable"):
        assert [e.actor for e in crm.registry.audit_log(plugin_id="lead-notes", action=action)] == [
            me
        ]
