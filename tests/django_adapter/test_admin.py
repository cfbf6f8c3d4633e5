"""The plugin admin in Django's admin: every page and action, through Django's test client.

The host's registry is where the Django tests keep it (``REGISTRY_STORAGE``: the admin
reads the host, never the models); plugins are real folders packed into real ZIPs and
uploaded through the admin's form, and every step is checked in the registry and its audit
trail afterwards.
"""

from __future__ import annotations

import io
import json
import os
import re
import textwrap
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils.html import escape

from django_adapter.conftest import REGISTRY_STORAGE
from services_ai_plugins import PluginHost, PluginStatus, pack_plugin
from services_ai_plugins.django import conf
from services_ai_plugins.events import Context, Lead
from services_ai_plugins.tooling import example

# Transactional: the host may keep the registry in the project's database ("STORAGE":
# "django"), and writes failures and metrics from threads of its own.
pytestmark = pytest.mark.django_db(transaction=True)

BASE = "/admin/services_ai_plugins/plugin/"
SECRET = "s3cr3t-value-never-shown"

#: A plugin that asks for a bit of everything an admin has to look at.
TOUR_MANIFEST: dict[str, Any] = {
    "id": "lead-tour",
    "name": "Lead Tour",
    "version": "1.2.0",
    "description": "Greets new leads.",
    "author": "Ada",
    "entry_point": "main.py",
    "plugin_class": "Plugin",
    "permissions": ["read_leads"],
    "optional_permissions": ["send_email"],
    "hooks": ["lead_created"],
    "requires_python": ">=3.10",
    "settings": [
        {"name": "greeting", "type": "string", "default": "Hello", "label": "Greeting"},
        {"name": "limit", "type": "integer", "default": 5, "min": 1, "max": 10},
        {"name": "ratio", "type": "number", "default": 0.5},
        {"name": "loud", "type": "boolean", "default": False},
        {"name": "channel", "type": "choice", "choices": ["mail", "sms", 3], "default": "mail"},
        {"name": "extra", "type": "json"},
        {"name": "api_key", "type": "secret", "description": "The mail service's key."},
    ],
}

TOUR_CODE = """
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead, api):
        api.list_leads(limit=1)
"""

FAILING_CODE = """
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead, api):
        raise RuntimeError("the mail server is down")
"""


def _secret_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@pytest.fixture
def registry_settings(settings: Any, tmp_path: Path) -> Iterator[Path]:
    """The host's registry where the Django tests keep it, its plugins in the test's folder."""
    plugins = tmp_path / "plugins"
    settings.SERVICES_AI_PLUGINS = {
        **settings.SERVICES_AI_PLUGINS,
        "STORAGE": REGISTRY_STORAGE(tmp_path),
        "PLUGINS_DIR": str(plugins),
        "HOST": {
            **settings.SERVICES_AI_PLUGINS.get("HOST", {}),
            "secret_keys": [_secret_key()],
        },
        "SANDBOX": {"timeout": 30.0, "start_timeout": 60.0},
        "BREAKER": {"consecutive_failures": 2},
    }
    yield plugins
    conf.close_host()


@pytest.fixture
def host(registry_settings: Path) -> PluginHost:
    return conf.get_host()


PluginZip = Callable[..., Path]


@pytest.fixture
def plugin_zip(tmp_path: Path) -> PluginZip:
    """Write a plugin folder from a manifest and code, and pack it into a ZIP."""

    def make(
        manifest: Mapping[str, Any] = TOUR_MANIFEST, code: str = TOUR_CODE, **changes: Any
    ) -> Path:
        document = {**manifest, **changes}
        folder = tmp_path / "src" / f"{document['id']}-{document['version']}"
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps(document))
        (folder / "main.py").write_text(textwrap.dedent(code))
        return pack_plugin(folder, tmp_path / f"{folder.name}.zip").path

    return make


def upload(client: Client, archive: Path, *, name: str | None = None, **fields: Any) -> Any:
    data = SimpleUploadedFile(name or archive.name, archive.read_bytes())
    return client.post(BASE, {"archive": data, **fields}, follow=True)


def page_text(response: Any) -> str:
    return str(response.content.decode())


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def actors(host: PluginHost, plugin_id: str, action: str) -> list[str]:
    return [e.actor for e in host.registry.audit_log(plugin_id=plugin_id, action=action)]


@pytest.fixture
def installed(host: PluginHost, admin_client: Client, plugin_zip: PluginZip) -> str:
    """lead-tour, uploaded through the admin (pending)."""
    response = upload(admin_client, plugin_zip())
    assert response.status_code == 200, messages_of(response)
    return "lead-tour"


@pytest.fixture
def approved(host: PluginHost, installed: str) -> str:
    host.registry.approve(installed, actor="someone-else")
    return installed


def post(client: Client, page: str, data: Mapping[str, Any], plugin_id: str = "lead-tour") -> Any:
    return client.post(f"{BASE}{plugin_id}/{page}/", data, follow=True)


# -- who may reach the pages -------------------------------------------------------------------


PAGES = ["", "lead-tour/change/", "lead-tour/tenants/", "lead-tour/failures/", "lead-tour/audit/"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_answers_a_superuser(installed: str, admin_client: Client, page: str) -> None:
    """Each page renders in the admin's frame: its breadcrumbs and the site header."""
    response = admin_client.get(BASE + page)
    assert response.status_code == 200
    text = page_text(response)
    assert 'class="breadcrumbs"' in text
    assert "Django administration" in text
    assert "lead-tour" in text


@pytest.mark.parametrize("page", PAGES)
def test_staff_without_the_permission_get_403(installed: str, client: Client, page: str) -> None:
    """Staff without services_ai_plugins.manage_plugins are refused every page, GET and POST."""
    staff = User.objects.create_user("clerk", is_staff=True)
    client.force_login(staff)
    assert client.get(BASE + page).status_code == 403
    assert client.post(BASE + page, {"action": "approve"}).status_code == 403


@pytest.mark.parametrize("page", PAGES)
def test_anonymous_users_are_sent_to_the_login(installed: str, client: Client, page: str) -> None:
    response = client.get(BASE + page)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_staff_with_the_permission_manage_plugins(
    host: PluginHost, installed: str, client: Client
) -> None:
    """The app's permission opens the pages, lists the app on the admin index, and the
    staff user's username is the actor of what they do."""
    staff = User.objects.create_user("operator", is_staff=True)
    staff.user_permissions.add(
        Permission.objects.get(
            content_type__app_label="services_ai_plugins", codename="manage_plugins"
        )
    )
    client.force_login(staff)
    assert BASE in page_text(client.get("/admin/"))
    assert client.get(BASE).status_code == 200
    post(client, "change", {"action": "approve"})
    assert host.registry.plugin("lead-tour").status is PluginStatus.APPROVED
    assert actors(host, "lead-tour", "approve") == ["operator"]


def test_without_the_permission_the_admin_index_hides_plugins(
    installed: str, client: Client
) -> None:
    staff = User.objects.create_user("clerk", is_staff=True)
    client.force_login(staff)
    assert BASE not in page_text(client.get("/admin/"))


def test_the_csrf_token_is_required(installed: str) -> None:
    """Django's CSRF protection guards every action."""
    admin = User.objects.create_superuser("boss")
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    assert client.post(f"{BASE}lead-tour/change/", {"action": "approve"}).status_code == 403


def test_an_unknown_plugin_is_404(host: PluginHost, admin_client: Client) -> None:
    assert admin_client.get(f"{BASE}no-such-plugin/change/").status_code == 404


# -- the list and the upload -------------------------------------------------------------------


def test_upload_installs_pending_and_the_list_shows_it(
    host: PluginHost, admin_client: Client, plugin_zip: PluginZip, admin_user: User
) -> None:
    """An upload is installed as the host installs uploads (pending, code under the plugins
    folder), by the staff user; the list shows its columns."""
    response = upload(admin_client, plugin_zip())
    assert response.redirect_chain[-1][0] == f"{BASE}lead-tour/change/"
    assert any("Installed lead-tour 1.2.0" in m for m in messages_of(response))
    record = host.registry.plugin("lead-tour")
    assert record.status is PluginStatus.PENDING
    assert record.installed_by == admin_user.get_username()
    assert record.source.value == "archive"
    assert actors(host, "lead-tour", "install") == [admin_user.get_username()]

    host.registry.approve("lead-tour", actor="x")
    host.registry.enable("lead-tour", "acme", actor="x")
    host.registry.suspend("lead-tour", actor="x", reason="too loud", tenant="globex")
    rows = admin_client.get(BASE).context["rows"]
    [row] = rows
    assert (row["record"].id, row["record"].version, row["record"].status.value) == (
        "lead-tour",
        "1.2.0",
        "approved",
    )
    assert row["enabled"] == ["acme"]
    assert [s.tenant for s in row["suspensions"]] == ["globex"]
    assert row["unresolved"] == 0
    text = page_text(admin_client.get(BASE))
    assert 'data-plugin="lead-tour"' in text
    assert "globex" in text


def test_the_status_filter(host: PluginHost, installed: str, admin_client: Client) -> None:
    assert [r["record"].id for r in admin_client.get(BASE + "?status=pending").context["rows"]] == [
        "lead-tour"
    ]
    assert admin_client.get(BASE + "?status=approved").context["rows"] == []


def test_a_new_version_of_a_pending_plugin_replaces_it(
    host: PluginHost, installed: str, admin_client: Client, plugin_zip: PluginZip
) -> None:
    """An upload of a plugin installed already goes through as a reinstall: a pending one is
    replaced (pending again), audited with the staff user."""
    upload(admin_client, plugin_zip(version="1.3.0"))
    record = host.registry.plugin("lead-tour")
    assert (record.version, record.status) == ("1.3.0", PluginStatus.PENDING)
    assert actors(host, "lead-tour", "reinstall") == ["admin"]


def _zip(members: Mapping[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


BAD_ARCHIVES = {
    "not-a-zip": (b"this is not a zip", "is not a readable ZIP archive"),
    "path-traversal": (
        _zip({"manifest.json": json.dumps(TOUR_MANIFEST), "../evil.py": "x = 1"}),
        "path-traversal",
    ),
    "bad-manifest": (
        _zip({"manifest.json": json.dumps({**TOUR_MANIFEST, "version": "not a version"}),
              "main.py": TOUR_CODE}),
        "version",
    ),
    "requirements": (
        _zip({"manifest.json": json.dumps({**TOUR_MANIFEST, "requires_python": "<3.0"}),
              "main.py": TOUR_CODE}),
        "requires_python",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_a_bad_archive_shows_its_error_and_leaves_nothing(
    host: PluginHost, registry_settings: Path, admin_client: Client, case: str
) -> None:
    """The typed error shows, naming the uploaded file and the problem; no plugin is recorded
    and nothing is written under the plugins folder."""
    data, problem = BAD_ARCHIVES[case]
    response = admin_client.post(
        BASE, {"archive": SimpleUploadedFile("evil-upload.zip", data)}, follow=True
    )
    assert response.status_code == 200
    errors = [str(m) for m in response.context["messages"] if m.level_tag == "error"]
    assert len(errors) == 1, errors
    assert errors[0].startswith("evil-upload.zip")
    assert problem in errors[0]
    assert "<upload>" not in errors[0]
    assert host.registry.plugins() == []
    assert host.registry.audit_log() == []
    assert not registry_settings.exists() or not any(
        p for p in registry_settings.rglob("*") if p.is_file()
    )


def test_an_archive_over_the_upload_limit_is_refused(
    settings: Any, registry_settings: Path, admin_client: Client, plugin_zip: PluginZip
) -> None:
    archive = plugin_zip()
    settings.SERVICES_AI_PLUGINS = {
        **settings.SERVICES_AI_PLUGINS,
        "ADMIN_UPLOAD_LIMIT": archive.stat().st_size - 1,
    }
    response = upload(admin_client, archive)
    [error] = messages_of(response)
    assert error.startswith(archive.name)
    assert "over the upload limit" in error
    assert conf.get_host().registry.plugins() == []


def test_an_upload_without_a_file(host: PluginHost, admin_client: Client) -> None:
    response = admin_client.post(BASE, {}, follow=True)
    assert response.status_code == 200
    assert messages_of(response) == ["Choose a plugin ZIP to upload."]
    empty = admin_client.post(BASE, {"archive": SimpleUploadedFile("empty.zip", b"")})
    assert messages_of(empty) == ["empty.zip: The submitted file is empty."]
    assert host.registry.plugins() == []


# -- the review -----------------------------------------------------------------------------------


def test_the_review_shows_what_it_asks_for(
    host: PluginHost, installed: str, admin_client: Client
) -> None:
    response = admin_client.get(f"{BASE}lead-tour/change/")
    context = response.context
    permissions = {p["name"]: p for p in context["permissions"]}
    assert permissions["read_leads"]["optional"] is False
    assert permissions["read_leads"]["risk"] == "medium"
    assert permissions["read_leads"]["description"]
    assert permissions["send_email"]["optional"] is True
    assert permissions["send_email"]["risk"] == "high"
    assert [row["spec"].name for row in context["settings_schema"]] == [
        s["name"] for s in TOUR_MANIFEST["settings"]
    ]
    assert context["requirements"] == [{"kind": "Python", "what": ">=3.10", "problem": None}]
    assert context["runs"].startswith("In a sandboxed worker process")
    text = page_text(response)
    for shown in (
        "Greets new leads.",
        escape(permissions["send_email"]["description"]),
        "lead_created",
        "one of &quot;mail&quot;, &quot;sms&quot;, 3",
        'id="approve-form"',
        'id="reject-form"',
    ):
        assert shown in text


def test_unmet_plugin_requirements_show(
    host: PluginHost, admin_client: Client, plugin_zip: PluginZip
) -> None:
    upload(admin_client, plugin_zip(requires_plugins={"crm-core": ">=2"}))
    [row] = [
        r
        for r in admin_client.get(f"{BASE}lead-tour/change/").context["requirements"]
        if r["kind"] == "Plugin"
    ]
    assert row["problem"] == "crm-core is not installed"


def test_a_hostile_manifest_is_shown_escaped(
    host: PluginHost, admin_client: Client, plugin_zip: PluginZip
) -> None:
    """Text from an uploaded manifest never becomes markup in the admin."""
    attack = "<script>alert('owned')</script>"
    upload(
        admin_client,
        plugin_zip(
            description=attack,
            settings=[{"name": "x", "type": "string", "description": attack, "label": attack}],
        ),
    )
    host.registry.approve("lead-tour", actor="x")
    for page in ("change/", "tenants/?tenant=acme"):
        text = page_text(admin_client.get(f"{BASE}lead-tour/{page}"))
        assert attack not in text
        assert "&lt;script&gt;" in text


def test_a_hostile_plugins_errors_are_shown_escaped(
    host: PluginHost, admin_client: Client, plugin_zip: PluginZip
) -> None:
    """What a plugin's code says (its exceptions, in the check's report, the failure list and
    the tracebacks) never becomes markup in the admin either."""
    attack = "<img src=x onerror=alert(document.cookie)>"
    code = f"""
    from services_ai_plugins import hookimpl


    class Plugin:
        @hookimpl
        def lead_created(self, lead, api):
            raise RuntimeError({attack!r})
    """
    upload(admin_client, plugin_zip(code=code))
    checked = page_text(post(admin_client, "change", {"action": "check"}))
    assert "onerror" in checked  # the message is there...
    assert attack not in checked  # ...as text
    host.registry.approve("lead-tour", actor="x")
    host.registry.enable("lead-tour", "acme", actor="x")
    host.hook.lead_created(lead=example(Lead), context=Context(tenant="acme"))
    host.flush()
    failures = page_text(admin_client.get(f"{BASE}lead-tour/failures/"))
    assert escape(attack) in failures
    assert attack not in failures


def test_approve_is_audited_with_the_staff_user(
    host: PluginHost, installed: str, admin_client: Client, admin_user: User
) -> None:
    response = post(admin_client, "change", {"action": "approve"})
    assert host.registry.plugin("lead-tour").status is PluginStatus.APPROVED
    assert actors(host, "lead-tour", "approve") == [admin_user.get_username()]
    assert any("Approved lead-tour" in m for m in messages_of(response))
    # Approving again is refused by the registry: an error message, not a 500.
    again = post(admin_client, "change", {"action": "approve"})
    assert again.status_code == 200
    [error] = messages_of(again)
    assert "cannot approve plugin 'lead-tour': it is approved" in error


def test_reject_needs_a_reason(
    host: PluginHost, installed: str, admin_client: Client, admin_user: User
) -> None:
    refused = post(admin_client, "change", {"action": "reject", "reason": "   "})
    assert refused.status_code == 200
    assert "A rejection needs a reason." in messages_of(refused)
    assert host.registry.plugin("lead-tour").status is PluginStatus.PENDING

    post(admin_client, "change", {"action": "reject", "reason": "mails every lead twice"})
    record = host.registry.plugin("lead-tour")
    assert record.status is PluginStatus.REJECTED
    assert record.status_reason == "mails every lead twice"
    assert actors(host, "lead-tour", "reject") == [admin_user.get_username()]
    assert "mails every lead twice" in page_text(admin_client.get(f"{BASE}lead-tour/change/"))


def test_the_check_report(host: PluginHost, installed: str, admin_client: Client) -> None:
    """The check runs the installed code in a throwaway host, as the CLI's check does."""
    response = post(admin_client, "change", {"action": "check"})
    report = response.context["report"]
    assert report["plugin_id"] == "lead-tour"
    assert report["loaded"] is True
    assert report["ok"] is True, report["problems"]
    assert [h["hook"] for h in report["hooks"]] == ["lead_created"]
    assert 'id="check-verdict"' in page_text(response)
    # The check changed nothing in the host's registry.
    assert host.registry.plugin("lead-tour").status is PluginStatus.PENDING
    assert [e.action for e in host.registry.audit_log(plugin_id="lead-tour")] == ["install"]


def test_the_check_reports_a_crash(
    host: PluginHost, admin_client: Client, plugin_zip: PluginZip
) -> None:
    upload(admin_client, plugin_zip(code=FAILING_CODE))
    report = post(admin_client, "change", {"action": "check"}).context["report"]
    assert report["ok"] is False
    crashes = [p for p in report["problems"] if p["kind"] == "crash"]
    assert crashes
    assert "the mail server is down" in crashes[0]["message"]


def test_the_check_never_runs_the_plugin_in_the_web_process(
    host: PluginHost, admin_client: Client, plugin_zip: PluginZip
) -> None:
    """A hostile upload's code runs in a sandbox worker when the admin checks it, not in the
    process that serves the admin: the process its hook reports is another one."""
    snoop = """
    import os

    from services_ai_plugins import hookimpl


    class Plugin:
        @hookimpl
        def lead_created(self, lead, api):
            raise RuntimeError(f"running as pid {os.getpid()}")
    """
    upload(admin_client, plugin_zip(code=snoop))
    report = post(admin_client, "change", {"action": "check"}).context["report"]
    messages = [p["message"] for p in report["problems"] if p["kind"] == "crash"]
    assert messages, report["problems"]
    pids = {int(pid) for m in messages for pid in re.findall(r"running as pid (\d+)", m)}
    assert pids
    assert os.getpid() not in pids


class Shipped:
    """A plugin the app ships in its own code (an entry point's kind: trusted, in process)."""

    manifest: ClassVar[dict[str, Any]] = {
        "id": "shipped-plugin",
        "name": "Shipped",
        "version": "2.0.0",
        "entry_point": "main.py",
        "plugin_class": "Shipped",
        "permissions": ["read_leads"],
    }


def test_an_entry_point_plugin_runs_in_process_and_has_no_code_to_check(
    host: PluginHost, admin_client: Client
) -> None:
    host.install_object(Shipped, actor="ops")
    response = admin_client.get(f"{BASE}shipped-plugin/change/")
    assert response.context["runs"].startswith("In the web server's process")
    checked = post(admin_client, "change", {"action": "check"}, plugin_id="shipped-plugin")
    assert checked.status_code == 200
    assert checked.context["report"] is None
    [error] = messages_of(checked)
    assert "there is no code to check here" in error


# -- per tenant -----------------------------------------------------------------------------------


def test_enable_and_disable_for_a_tenant(
    host: PluginHost, approved: str, admin_client: Client, admin_user: User
) -> None:
    response = post(admin_client, "tenants", {"action": "enable", "tenant": "acme"})
    assert response.redirect_chain[-1][0] == f"{BASE}lead-tour/tenants/?tenant=acme"
    assert host.registry.enabled_plugins("acme") == ["lead-tour"]
    assert host.registry.enabled_plugins("globex") == []
    assert response.context["panel"]["running"] is True
    assert [row["record"].tenant for row in response.context["known"]] == ["acme"]
    post(admin_client, "tenants", {"action": "disable", "tenant": "acme"})
    assert host.registry.enabled_plugins("acme") == []
    me = admin_user.get_username()
    assert actors(host, "lead-tour", "enable") == [me]
    assert actors(host, "lead-tour", "disable") == [me]


def test_enabling_a_pending_plugin_is_an_error_message(
    host: PluginHost, installed: str, admin_client: Client
) -> None:
    response = post(admin_client, "tenants", {"action": "enable", "tenant": "acme"})
    assert response.status_code == 200
    [error] = messages_of(response)
    assert "cannot enable plugin 'lead-tour'" in error
    assert host.registry.enabled_plugins("acme") == []


def test_a_tenant_step_needs_a_tenant(
    host: PluginHost, approved: str, admin_client: Client
) -> None:
    response = post(admin_client, "tenants", {"action": "enable", "tenant": "  "})
    assert messages_of(response) == ["Name the tenant."]
    assert host.registry.storage.list_tenants("lead-tour") == []


def test_grant_and_revoke_optional_permissions(
    host: PluginHost, approved: str, admin_client: Client, admin_user: User
) -> None:
    post(admin_client, "tenants", {"action": "grant", "tenant": "acme", "permission": "send_email"})
    assert "send_email" in host.registry.grants("lead-tour", "acme")
    assert "send_email" not in host.registry.grants("lead-tour", "globex")
    panel = admin_client.get(f"{BASE}lead-tour/tenants/?tenant=acme").context["panel"]
    assert [(p["name"], p["granted"], p["risk"]) for p in panel["optional"]] == [
        ("send_email", True, "high")
    ]
    post(
        admin_client, "tenants", {"action": "revoke", "tenant": "acme", "permission": "send_email"}
    )
    assert "send_email" not in host.registry.grants("lead-tour", "acme")
    me = admin_user.get_username()
    assert actors(host, "lead-tour", "grant") == [me]
    assert actors(host, "lead-tour", "revoke") == [me]
    # A permission the manifest does not offer as optional: the registry's refusal, shown.
    refused = post(
        admin_client, "tenants", {"action": "grant", "tenant": "acme", "permission": "delete_leads"}
    )
    assert refused.status_code == 200
    [error] = [m for m in messages_of(refused) if "delete_leads" in m]
    assert "optional" in error


def _settings_post(**values: Any) -> dict[str, Any]:
    return {
        "action": "settings",
        "tenant": "acme",
        **{f"setting-{k}": v for k, v in values.items()},
    }


def _current(host: PluginHost) -> dict[str, Any]:
    return {
        "greeting": "Hello",
        "limit": "5",
        "ratio": "0.5",
        "channel": '"mail"',
        "extra": "",
        "api_key": "",
    }


def test_the_settings_form_follows_the_schema(
    host: PluginHost, approved: str, admin_client: Client
) -> None:
    form = admin_client.get(f"{BASE}lead-tour/tenants/?tenant=acme").context["panel"]["settings"]
    kinds = {name: type(field).__name__ for name, field in form.fields.items()}
    assert kinds == {
        "greeting": "CharField",
        "limit": "IntegerField",
        "ratio": "FloatField",
        "loud": "BooleanField",
        "channel": "_ChoiceField",
        "extra": "_JSONField",
        "api_key": "CharField",
    }
    assert form.fields["limit"].min_value == 1
    assert form.fields["limit"].max_value == 10
    assert [key for key, _ in form.fields["channel"].choices] == ["", '"mail"', '"sms"', "3"]
    assert form["greeting"].initial == "Hello"
    text = page_text(admin_client.get(f"{BASE}lead-tour/tenants/?tenant=acme"))
    assert 'type="password"' in text
    assert 'type="number"' in text


def test_saving_settings(
    host: PluginHost, approved: str, admin_client: Client, admin_user: User
) -> None:
    """Only what changed is stored (a setting left alone keeps following its default), with
    the staff user as the actor; a blank field goes back to the default."""
    data = _settings_post(**{**_current(host), "limit": "7", "channel": "3", "loud": "on",
                             "extra": '{"a": [1, 2]}'})  # fmt: skip
    response = post(admin_client, "tenants", data)
    assert any("Saved" in m for m in messages_of(response))
    assert dict(host.registry.tenant("lead-tour", "acme").settings) == {
        "limit": 7,
        "channel": 3,
        "loud": True,
        "extra": {"a": [1, 2]},
    }
    assert actors(host, "lead-tour", "set settings") == [admin_user.get_username()]
    post(admin_client, "tenants", _settings_post(**{**_current(host), "limit": ""}))
    stored = host.registry.tenant("lead-tour", "acme").settings
    # limit: blank, back to its default; extra: blank, removed; loud: unticked, false;
    # channel: the form's value.
    assert dict(stored) == {"loud": False, "channel": "mail"}
    assert host.registry.get_settings("lead-tour", "acme")["limit"] == 5


def test_unchanged_settings_write_nothing(
    host: PluginHost, approved: str, admin_client: Client
) -> None:
    response = post(admin_client, "tenants", _settings_post(**_current(host)))
    assert messages_of(response) == ["No setting changed."]
    assert actors(host, "lead-tour", "set settings") == []


def test_refused_settings_show_on_their_fields(
    host: PluginHost, approved: str, admin_client: Client
) -> None:
    response = post(
        admin_client, "tenants", _settings_post(**{**_current(host), "limit": "11", "extra": "{"})
    )
    form = response.context["panel"]["settings"]
    assert set(form.errors) == {"limit", "extra"}
    assert host.registry.tenant("lead-tour", "acme") is None


def test_settings_of_a_plugin_the_registry_refuses(
    host: PluginHost, approved: str, admin_client: Client
) -> None:
    """A refusal of the registry (here: the plugin was uninstalled meanwhile) is a message."""
    host.registry.uninstall("lead-tour", actor="x")
    response = post(admin_client, "tenants", _settings_post(**{**_current(host), "limit": "7"}))
    assert response.status_code == 200
    assert any("cannot set settings" in m for m in messages_of(response))


def test_a_secret_is_write_only(host: PluginHost, approved: str, admin_client: Client) -> None:
    """A secret is stored, never shown back on any page (nor in the audit trail), kept when
    its field is left blank, and removed only by its "clear" box."""
    post(admin_client, "tenants", _settings_post(**{**_current(host), "api_key": SECRET}))
    assert host.registry.get_settings("lead-tour", "acme")["api_key"] == SECRET
    post(admin_client, "tenants", {"action": "enable", "tenant": "acme"})
    for page in ("", "lead-tour/change/", "lead-tour/tenants/", "lead-tour/tenants/?tenant=acme",
                 "lead-tour/failures/", "lead-tour/audit/"):  # fmt: skip
        assert SECRET not in page_text(admin_client.get(BASE + page)), page
    # Blank keeps it, while another setting changes.
    post(admin_client, "tenants", _settings_post(**{**_current(host), "limit": "8"}))
    assert host.registry.get_settings("lead-tour", "acme")["api_key"] == SECRET
    form = admin_client.get(f"{BASE}lead-tour/tenants/?tenant=acme").context["panel"]["settings"]
    assert "clear:api_key" in form.fields
    post(admin_client, "tenants", _settings_post(**{**_current(host), "limit": "8",
                                                   "clear:api_key": "on"}))  # fmt: skip
    assert host.registry.get_settings("lead-tour", "acme")["api_key"] is None


def test_a_secret_without_a_key_is_refused_with_a_message(
    settings: Any,
    registry_settings: Path,
    admin_client: Client,
    plugin_zip: PluginZip,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SERVICES_AI_PLUGINS_SECRET_KEYS", raising=False)
    host_options = dict(settings.SERVICES_AI_PLUGINS["HOST"])
    del host_options["secret_keys"]
    settings.SERVICES_AI_PLUGINS = {**settings.SERVICES_AI_PLUGINS, "HOST": host_options}
    host = conf.get_host()
    upload(admin_client, plugin_zip())
    host.registry.approve("lead-tour", actor="x")
    response = post(
        admin_client, "tenants", _settings_post(**{**_current(host), "api_key": SECRET})
    )
    assert response.status_code == 200
    [error] = [m for m in messages_of(response) if "api_key" in m]
    assert "no secret keys are configured" in error
    assert SECRET not in page_text(response)
    assert host.registry.tenant("lead-tour", "acme") is None


# -- failures, metrics, suspensions ---------------------------------------------------------------


@pytest.fixture
def failing(host: PluginHost, admin_client: Client, plugin_zip: PluginZip) -> str:
    """lead-tour whose hook raises, approved and enabled for acme, called twice: the breaker
    (2 consecutive failures) suspends it for acme."""
    upload(admin_client, plugin_zip(code=FAILING_CODE))
    host.registry.approve("lead-tour", actor="x")
    host.registry.enable("lead-tour", "acme", actor="x")
    for _ in range(2):
        host.hook.lead_created(lead=example(Lead), context=Context(tenant="acme"))
    host.flush()
    return "lead-tour"


def test_failures_metrics_and_the_breaker(
    host: PluginHost, failing: str, admin_client: Client
) -> None:
    response = admin_client.get(f"{BASE}lead-tour/failures/")
    context = response.context
    assert len(context["unresolved"]) == 2
    assert context["unresolved"][0].exc_type.endswith("RuntimeError")
    [metric] = context["metrics"]
    assert (metric["row"].hook, metric["row"].calls, metric["row"].errors) == ("lead_created", 2, 2)
    [suspension] = context["suspensions"]
    assert suspension.tenant == "acme"
    text = page_text(response)
    assert "the mail server is down" in text
    assert "Traceback" in text or "traceback" in text
    [row] = admin_client.get(BASE).context["rows"]
    assert row["unresolved"] == 2
    assert [s.tenant for s in row["suspensions"]] == ["acme"]


def test_resolve_one_then_all(
    host: PluginHost, failing: str, admin_client: Client, admin_user: User
) -> None:
    newest = host.failures("lead-tour", resolved=False)[0]
    post(admin_client, "failures", {"action": "resolve", "failure": str(newest.id)})
    assert [f.id for f in host.failures("lead-tour", resolved=True)] == [newest.id]
    response = post(admin_client, "failures", {"action": "resolve-all"})
    assert host.failures("lead-tour", resolved=False) == []
    assert len(response.context["resolved"]) == 2
    events = host.registry.audit_log(plugin_id="lead-tour", action="resolve")
    assert [(e.actor, dict(e.after or {})) for e in events] == [
        (admin_user.get_username(), {"resolved": 1}),
        (admin_user.get_username(), {"resolved": 1, "failures": [newest.id]}),
    ]
    bad = post(admin_client, "failures", {"action": "resolve", "failure": "x"})
    assert messages_of(bad) == ["Name the failure to resolve."]


def test_resume_for_a_tenant_and_everywhere(
    host: PluginHost, failing: str, admin_client: Client, admin_user: User
) -> None:
    post(admin_client, "failures", {"action": "resume", "tenant": "acme"})
    assert host.suspensions("lead-tour") == []
    assert host.registry.enabled_plugins("acme") == ["lead-tour"]
    host.registry.suspend("lead-tour", actor="x", reason="maintenance")
    response = admin_client.get(f"{BASE}lead-tour/failures/")
    assert [s.tenant for s in response.context["suspensions"]] == [None]
    post(admin_client, "failures", {"action": "resume"})
    assert host.registry.plugin("lead-tour").status is PluginStatus.APPROVED
    assert actors(host, "lead-tour", "resume") == [admin_user.get_username()] * 2
    # Resuming what is not suspended: the registry's refusal, as a message.
    again = post(admin_client, "failures", {"action": "resume"})
    assert again.status_code == 200
    assert any("cannot resume" in m for m in messages_of(again))


# -- the audit trail -------------------------------------------------------------------------------


def test_the_audit_trail_newest_first(
    host: PluginHost, installed: str, admin_client: Client, admin_user: User
) -> None:
    post(admin_client, "change", {"action": "approve"})
    post(admin_client, "tenants", {"action": "enable", "tenant": "acme"})
    response = admin_client.get(f"{BASE}lead-tour/audit/")
    rows = response.context["events"]
    assert [row["event"].action for row in rows] == ["enable", "approve", "install"]
    assert {row["event"].actor for row in rows} == {admin_user.get_username()}
    assert [row["event"].tenant for row in rows] == ["acme", None, None]
    assert 'data-action="enable"' in page_text(response)
