"""The framework-neutral admin, driven through its WSGI app (werkzeug's test Client) and its
ASGI app (httpx's ASGITransport, under a Starlette Mount), mounted under a prefix, over a real
host and a SQLite registry. Every step is checked in the registry and its audit trail."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path

import pytest
from admin_pages_kit import (
    FAILING_CODE,
    PREFIX,
    TOUR_MANIFEST,
    Driver,
    actors,
    admin,
    approved,
    browser,
    host,
    installed,
    plugin_zip,
)

from services_ai_plugins import PluginHost, PluginStatus
from services_ai_plugins.events import Context, Lead
from services_ai_plugins.tooling import example

__all__ = ["admin", "approved", "browser", "host", "installed"]  # fixtures, used by name

REVIEW = "/plugins/lead-tour/"
TENANTS = "/plugins/lead-tour/tenants"
FAILURES = "/plugins/lead-tour/failures"
PAGES = ["/", REVIEW, f"{TENANTS}?tenant=acme", FAILURES, "/plugins/lead-tour/audit"]
SECRET_VALUE = "s3cr3t-value-never-shown"


def _under_the_mount(html: str) -> bool:
    """Every link and form action of the page is below the admin's mount."""
    for attribute in ('href="/', 'action="/'):
        if attribute in html.replace(f"{attribute}{PREFIX[1:]}/", "").replace(
            f'{attribute}{PREFIX[1:]}"', ""
        ):
            return False
    return True


# -- who may reach the pages ---------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_every_page_answers_the_admin_under_the_mount(
    installed: str, browser: Driver, page: str
) -> None:
    answer = browser.get(page)
    assert answer.status == 200, answer.text
    assert "lead-tour" in answer.text
    assert "ada" in answer.text  # who is signed in
    assert _under_the_mount(answer.text)
    assert answer.headers.get(
        "content-security-policy", answer.headers.get("Content-Security-Policy")
    )


@pytest.mark.parametrize("page", PAGES)
def test_a_refused_admin_gets_403_and_nothing_is_done(
    host: PluginHost, installed: str, browser: Driver, page: str
) -> None:
    """``authenticate`` answering None refuses every page and every POST."""
    answer = browser.get(page, who=None)
    assert answer.status == 403
    assert "Lead Tour" not in answer.text
    refused = browser.post(REVIEW, {"action": "approve"}, who=None)
    assert refused.status == 403
    assert host.registry.plugin("lead-tour").status is PluginStatus.PENDING


def test_a_post_without_a_csrf_token_is_refused(
    host: PluginHost, installed: str, browser: Driver
) -> None:
    browser.get(REVIEW)
    answer = browser.post(REVIEW, {"action": "approve"}, token="")
    assert answer.status == 403
    assert "security token" in answer.text
    assert host.registry.plugin("lead-tour").status is PluginStatus.PENDING
    assert actors(host, "lead-tour", "approve") == []


def test_a_post_with_a_wrong_token_is_refused(
    host: PluginHost, installed: str, browser: Driver
) -> None:
    browser.get(REVIEW)
    forged = ("0" if browser.token[0] != "0" else "1") + browser.token[1:]
    assert browser.post(REVIEW, {"action": "approve"}, token=forged).status == 403
    assert host.registry.plugin("lead-tour").status is PluginStatus.PENDING


def test_a_token_is_bound_to_the_admin(host: PluginHost, installed: str, browser: Driver) -> None:
    """Another admin's token (same browser session) does not do: the token signs the name."""
    browser.get(REVIEW, who="mallory")
    mallorys_token = browser.token
    assert (
        browser.post(REVIEW, {"action": "approve"}, who="ada", token=mallorys_token).status == 403
    )
    assert host.registry.plugin("lead-tour").status is PluginStatus.PENDING
    browser.get(REVIEW, who="ada")
    assert browser.token != mallorys_token


def test_a_token_without_its_session_cookie_is_refused(
    host: PluginHost, installed: str, admin: object, browser: Driver
) -> None:
    """A token lifted from a page does not work from a browser without the session cookie."""
    browser.get(REVIEW)
    stranger = Driver(browser.kind, admin)  # type: ignore[arg-type]
    try:
        answer = stranger.post(REVIEW, {"action": "approve"}, token=browser.token)
    finally:
        stranger.close()
    assert answer.status == 403
    assert host.registry.plugin("lead-tour").status is PluginStatus.PENDING


def test_the_session_cookie_is_samesite_strict(host: PluginHost, browser: Driver) -> None:
    fresh = browser.get("/", follow=False)
    cookie = fresh.headers.get("set-cookie") or fresh.headers.get("Set-Cookie") or ""
    assert cookie.startswith("sap_admin_session=")
    assert "SameSite=Strict" in cookie
    assert "HttpOnly" in cookie
    assert f"Path={PREFIX}" in cookie


def test_an_unknown_plugin_is_404(host: PluginHost, browser: Driver) -> None:
    assert browser.get("/plugins/nope/").status == 404
    assert browser.get("/nowhere").status == 404
    assert browser.post("/plugins/nope/tenants", {"action": "enable", "tenant": "x"}).status == 404


# -- upload --------------------------------------------------------------------------------------


def test_upload_installs_pending_audited_with_the_admin(
    host: PluginHost, tmp_path: Path, browser: Driver
) -> None:
    answer = browser.post("/", files={"archive": ("tour.zip", plugin_zip(tmp_path))})
    assert answer.status == 200
    assert answer.url == PREFIX + REVIEW  # redirected to the review, under the mount
    assert ("success", "Installed lead-tour 1.2.0 from tour.zip: pending. Review it, then "
            "approve or reject it.") in answer.notes  # fmt: skip
    assert host.registry.plugin("lead-tour").status is PluginStatus.PENDING
    assert actors(host, "lead-tour", "install") == ["ada"]
    listed = browser.get("/")
    assert 'data-plugin="lead-tour"' in listed.text
    assert listed.notes == []  # the note was shown once


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
              "main.py": "x = 1"}),
        "version",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_a_bad_archive_shows_its_error_and_leaves_nothing(
    host: PluginHost, tmp_path: Path, browser: Driver, case: str
) -> None:
    data, problem = BAD_ARCHIVES[case]
    answer = browser.post("/", files={"archive": ("evil-upload.zip", data)})
    assert answer.status == 400
    [error] = answer.errors()
    assert error.startswith("evil-upload.zip")
    assert problem in error
    assert "&lt;upload&gt;" not in error
    assert host.registry.plugins() == []
    assert host.registry.audit_log() == []
    plugins = tmp_path / "plugins"
    assert not plugins.exists() or not any(p.is_file() for p in plugins.rglob("*"))


def test_an_upload_without_a_file(host: PluginHost, browser: Driver) -> None:
    answer = browser.post("/", {"downgrade": ""})
    assert answer.status == 400
    assert answer.errors() == ["Choose a plugin ZIP to upload."]


def test_an_archive_over_the_upload_limit_is_refused(
    host: PluginHost, browser: Driver, tmp_path: Path
) -> None:
    """Over the limit (200 000 bytes here): refused with 413, naming the file; far over it,
    the body is not even read. Nothing is installed either way."""
    just_over = browser.post("/", files={"archive": ("big.zip", b"x" * 200_001)})
    assert just_over.status == 413
    [error] = just_over.errors()
    assert error.startswith("big.zip: the archive is 200001 bytes, over the upload limit")
    far_over = browser.post("/", files={"archive": ("huge.zip", b"x" * 2_000_000)})
    assert far_over.status == 413
    assert "over the limit of 200000 bytes" in far_over.errors()[0]
    assert host.registry.plugins() == []
    assert not (tmp_path / "plugins").exists() or not any((tmp_path / "plugins").rglob("*.py"))


# -- review, approve, reject ---------------------------------------------------------------------


def test_the_review_shows_what_it_asks_for(installed: str, browser: Driver) -> None:
    text = browser.get(REVIEW).text
    assert "Greets new leads." in text
    assert "read_leads" in text
    assert "send_email" in text
    assert "optional: granted per tenant" in text
    assert 'class="risk-' in text  # the catalogue's risk
    assert "<code>lead_created</code>" in text  # its hooks
    assert "api_key" in text
    assert "secret" in text
    assert "&gt;=3.10" in text  # requirements
    assert "In a sandboxed worker process" in text  # where an upload runs
    assert 'id="approve-form"' in text
    assert 'id="reject-form"' in text


def test_approve_is_audited_with_the_admin(
    host: PluginHost, installed: str, browser: Driver
) -> None:
    answer = browser.post(REVIEW, {"action": "approve"})
    assert answer.url == PREFIX + REVIEW
    assert answer.notes[0][0] == "success"
    assert host.registry.plugin("lead-tour").status is PluginStatus.APPROVED
    assert actors(host, "lead-tour", "approve") == ["ada"]
    assert 'id="approve-form"' not in answer.text


def test_reject_needs_a_reason(host: PluginHost, installed: str, browser: Driver) -> None:
    blank = browser.post(REVIEW, {"action": "reject", "reason": "   "})
    assert blank.status == 400
    assert blank.errors() == ["A rejection needs a reason."]
    assert host.registry.plugin("lead-tour").status is PluginStatus.PENDING
    done = browser.post(REVIEW, {"action": "reject", "reason": "Mails too often."})
    assert ("success", "Rejected lead-tour.") in done.notes
    record = host.registry.plugin("lead-tour")
    assert (record.status, record.status_reason) == (PluginStatus.REJECTED, "Mails too often.")
    assert actors(host, "lead-tour", "reject") == ["ada"]


def test_a_refused_step_is_a_message_not_a_500(
    host: PluginHost, approved: str, browser: Driver
) -> None:
    """Approving an approved plugin: the registry's refusal shows on the page."""
    answer = browser.post(REVIEW, {"action": "approve"})
    assert answer.status == 200
    [error] = answer.errors()
    assert "lead-tour" in error


def test_the_check_report_on_demand(host: PluginHost, installed: str, browser: Driver) -> None:
    answer = browser.post(REVIEW, {"action": "check"})
    assert answer.status == 200, answer.errors()
    assert 'id="check-verdict"' in answer.text
    assert "lead_created" in answer.text


def test_a_hostile_manifest_is_shown_escaped(
    host: PluginHost, tmp_path: Path, browser: Driver
) -> None:
    """Text from an uploaded manifest never becomes markup in any page."""
    attack = "<script>alert('owned')</script>"
    hostile = plugin_zip(
        tmp_path,
        name=attack,
        description=attack,
        author=attack,
        settings=[{"name": "x", "type": "string", "description": attack, "label": attack,
                   "default": attack}],
    )  # fmt: skip
    browser.post("/", files={"archive": (attack + ".zip", hostile)})
    host.registry.approve("lead-tour", actor="x")
    host.registry.enable("lead-tour", "acme", actor="x")
    for page in PAGES:
        text = browser.get(page).text
        assert "<script>" not in text, page
        assert "&lt;script&gt;" in text, page


# -- per tenant ----------------------------------------------------------------------------------


def test_enable_and_disable_for_a_tenant(host: PluginHost, approved: str, browser: Driver) -> None:
    answer = browser.post(TENANTS, {"action": "enable", "tenant": "acme"})
    assert answer.url == PREFIX + TENANTS
    assert ("success", "Enabled lead-tour for acme.") in answer.notes
    assert "<strong>Running</strong> for acme" in answer.text
    assert "lead-tour" in host.registry.enabled_plugins("acme")
    assert "lead-tour" not in host.registry.enabled_plugins("globex")
    browser.post(TENANTS, {"action": "disable", "tenant": "acme"})
    assert "lead-tour" not in host.registry.enabled_plugins("acme")
    assert actors(host, "lead-tour", "enable") == ["ada"]
    assert actors(host, "lead-tour", "disable") == ["ada"]


def test_enabling_a_pending_plugin_is_an_error_message(
    host: PluginHost, installed: str, browser: Driver
) -> None:
    answer = browser.post(TENANTS, {"action": "enable", "tenant": "acme"})
    assert answer.status == 200
    assert answer.errors()
    assert host.registry.enabled_plugins("acme") == []


def test_a_tenant_step_needs_a_tenant(host: PluginHost, approved: str, browser: Driver) -> None:
    answer = browser.post(TENANTS, {"action": "enable", "tenant": " "})
    assert answer.status == 400
    assert answer.errors() == ["Name the tenant."]


def test_grant_and_revoke_optional_permissions(
    host: PluginHost, approved: str, browser: Driver
) -> None:
    browser.post(TENANTS, {"action": "enable", "tenant": "acme"})
    granted = browser.post(
        TENANTS, {"action": "grant", "tenant": "acme", "permission": "send_email"}
    )
    assert ("success", "Granted send_email to lead-tour for acme.") in granted.notes
    assert host.registry.tenant("lead-tour", "acme").optional_grants == ("send_email",) or set(
        host.registry.tenant("lead-tour", "acme").optional_grants
    ) == {"send_email"}
    assert actors(host, "lead-tour", "grant") == ["ada"]
    browser.post(TENANTS, {"action": "revoke", "tenant": "acme", "permission": "send_email"})
    assert not host.registry.tenant("lead-tour", "acme").optional_grants
    assert actors(host, "lead-tour", "revoke") == ["ada"]
    refused = browser.post(TENANTS, {"action": "grant", "tenant": "acme", "permission": "x"})
    assert refused.errors()


def _settings(**values: str) -> dict[str, str]:
    return {
        "action": "settings",
        "tenant": "acme",
        **{f"setting-{k}": v for k, v in values.items()},
    }


def test_saving_settings_with_a_write_only_secret(
    host: PluginHost, approved: str, browser: Driver
) -> None:
    answer = browser.post(
        TENANTS,
        _settings(greeting="Hi", limit="7", loud="on", channel='"sms"', api_key=SECRET_VALUE),
    )
    assert answer.url == PREFIX + TENANTS, answer.errors()
    assert ("success", "Saved api_key, channel, greeting, limit, loud of lead-tour for acme.") in (
        answer.notes
    )
    settings = host.registry.tenant_view("acme", [host.registry.plugin("lead-tour")],
                                         running_only=False).settings["lead-tour"]  # fmt: skip
    assert (settings["greeting"], settings["limit"], settings["loud"], settings["channel"]) == (
        "Hi", 7, True, "sms",
    )  # fmt: skip
    assert settings["api_key"] == SECRET_VALUE
    [event] = host.registry.audit_log(plugin_id="lead-tour", action="set settings")
    assert event.actor == "ada"
    for page in PAGES:  # the secret never comes back
        assert SECRET_VALUE not in browser.get(page).text
    assert "a value is stored; leave blank to keep it" in browser.get(f"{TENANTS}?tenant=acme").text
    # Left blank, the secret stays.
    kept = browser.post(TENANTS, _settings(greeting="Hey", limit="7", loud="on", channel='"sms"'))
    assert ("success", "Saved greeting of lead-tour for acme.") in kept.notes
    again = host.registry.tenant_view("acme", [host.registry.plugin("lead-tour")],
                                      running_only=False).settings["lead-tour"]  # fmt: skip
    assert again["api_key"] == SECRET_VALUE


def test_a_wrong_setting_shows_on_its_field_and_saves_nothing(
    host: PluginHost, approved: str, browser: Driver
) -> None:
    answer = browser.post(TENANTS, _settings(greeting="Hi", limit="99", channel='"fax"'))
    assert answer.status == 400
    assert answer.errors() == ["The settings were not saved: see the errors below."]
    assert "At most 10." in answer.text
    assert "Select one of the choices." in answer.text
    assert 'value="Hi"' in answer.text  # what was sent is kept
    assert host.registry.audit_log(plugin_id="lead-tour", action="set settings") == []


# -- failures, metrics, suspensions --------------------------------------------------------------


@pytest.fixture
def failing(host: PluginHost, tmp_path: Path, browser: Driver) -> str:
    """lead-tour whose hook raises, uploaded, approved and enabled for acme, called twice in
    its sandbox: the breaker (2 consecutive failures) suspends it for acme."""
    browser.post("/", files={"archive": ("tour.zip", plugin_zip(tmp_path, code=FAILING_CODE))})
    host.registry.approve("lead-tour", actor="x")
    host.registry.enable("lead-tour", "acme", actor="x")
    for _ in range(2):
        host.hook.lead_created(lead=example(Lead), context=Context(tenant="acme"))
    host.flush()
    return "lead-tour"


def test_failures_metrics_suspensions_resolve_and_resume(
    host: PluginHost, failing: str, browser: Driver
) -> None:
    page = browser.get(FAILURES).text
    assert "the mail server is down" in page
    assert page.count("data-failure=") == 2
    assert '<section id="suspensions">' in page
    assert 'data-tenant="acme"' in page
    assert "<code>lead_created</code></td><td>2</td><td>2</td>" in page
    listed = browser.get("/").text
    assert '<td class="field-suspended">acme</td>' in listed

    newest = host.failures("lead-tour", resolved=False)[0]
    one = browser.post(FAILURES, {"action": "resolve", "failure": str(newest.id)})
    assert ("success", "Resolved 1 failure of lead-tour.") in one.notes
    assert [f.id for f in host.failures("lead-tour", resolved=True)] == [newest.id]
    browser.post(FAILURES, {"action": "resolve-all"})
    assert host.failures("lead-tour", resolved=False) == []
    assert actors(host, "lead-tour", "resolve") == ["ada", "ada"]
    bad = browser.post(FAILURES, {"action": "resolve", "failure": "x"})
    assert bad.errors() == ["Name the failure to resolve."]

    resumed = browser.post(FAILURES, {"action": "resume", "tenant": "acme"})
    assert ("success", "Resumed lead-tour for acme.") in resumed.notes
    assert host.suspensions("lead-tour") == []
    assert "lead-tour" in host.registry.enabled_plugins("acme")
    assert actors(host, "lead-tour", "resume") == ["ada"]


def test_resume_a_plugin_suspended_everywhere(
    host: PluginHost, approved: str, browser: Driver
) -> None:
    host.registry.suspend("lead-tour", actor="ops", reason="too loud")
    assert "too loud" in browser.get(FAILURES).text
    answer = browser.post(FAILURES, {"action": "resume"})
    assert ("success", "Resumed lead-tour everywhere.") in answer.notes
    assert host.registry.plugin("lead-tour").status is PluginStatus.APPROVED
    assert actors(host, "lead-tour", "resume") == ["ada"]


# -- the audit trail -----------------------------------------------------------------------------


def test_the_audit_trail_names_the_admin(host: PluginHost, installed: str, browser: Driver) -> None:
    browser.post(REVIEW, {"action": "approve"})
    browser.post(TENANTS, {"action": "enable", "tenant": "acme"})
    text = browser.get("/plugins/lead-tour/audit").text
    rows = text.split("<tr data-action=")[1:]
    assert [row.split('"')[1] for row in rows] == ["enable", "approve", "install"]
    assert all('<td class="field-actor">ada</td>' in row for row in rows)


def test_a_hostile_plugins_own_words_are_shown_escaped(
    host: PluginHost, tmp_path: Path, browser: Driver
) -> None:
    """What an uploaded plugin's code says from its sandbox (its exception, in the failure
    list and its traceback) never becomes markup either."""
    attack = "<img src=x onerror=alert(document.cookie)>"
    code = FAILING_CODE.replace('"the mail server is down"', repr(attack))
    browser.post("/", files={"archive": ("tour.zip", plugin_zip(tmp_path, code=code))})
    host.registry.approve("lead-tour", actor="x")
    host.registry.enable("lead-tour", "acme", actor="x")
    host.hook.lead_created(lead=example(Lead), context=Context(tenant="acme"))
    host.flush()
    text = browser.get(FAILURES).text
    assert "onerror" in text  # the message is there...
    assert attack not in text  # ...as text
    assert "&lt;img src=x onerror=alert(document.cookie)&gt;" in text


# -- the page logic without a framework, and the app's own checks ---------------------------------


def test_the_pages_are_plain_functions_over_the_host(host: PluginHost, tmp_path: Path) -> None:
    from services_ai_plugins.admin._pages import Notes, Page, Pages, Redirect
    from services_ai_plugins.admin._request import Form, Upload

    notes = Notes()
    pages = Pages(host, "ada", notes)
    archive = Upload(filename="tour.zip", data=plugin_zip(tmp_path))
    outcome = pages.upload(Form(files={"archive": archive}), limit=10**6)
    assert outcome == Redirect("/plugins/lead-tour/")
    assert pages.decide("lead-tour", Form(fields={"action": "approve"})) == Redirect(
        "/plugins/lead-tour/"
    )
    listing = pages.plugins()
    assert isinstance(listing, Page)
    assert [row["record"].id for row in listing.context["rows"]] == ["lead-tour"]
    assert [level for level, _ in notes.items] == ["success", "success"]
    assert actors(host, "lead-tour", "approve") == ["ada"]


def test_the_app_checks_its_arguments(host: PluginHost) -> None:
    from services_ai_plugins.admin import AdminApp

    with pytest.raises(ValueError, match="secret must be at least 16 bytes"):
        AdminApp(host, authenticate=lambda r: "ada", secret="short")
    with pytest.raises(ValueError, match="upload_limit must be a positive number of bytes"):
        AdminApp(host, authenticate=lambda r: "ada", secret="x" * 32, upload_limit=0)


# -- the rest of the HTTP surface ----------------------------------------------------------------


def test_a_new_version_of_a_pending_plugin_replaces_it(
    host: PluginHost, tmp_path: Path, browser: Driver
) -> None:
    """An upload of a plugin installed already goes through as a reinstall: a pending one is
    replaced (pending again), audited with the admin's name."""
    browser.post("/", files={"archive": ("a.zip", plugin_zip(tmp_path / "a"))})
    newer = plugin_zip(tmp_path / "b", version="1.3.0")
    done = browser.post("/", files={"archive": ("b.zip", newer)})
    assert done.status == 200, done.errors()
    record = host.registry.plugin("lead-tour")
    assert (record.version, record.status) == ("1.3.0", PluginStatus.PENDING)
    assert actors(host, "lead-tour", "reinstall") == ["ada"]


def test_the_status_filter(host: PluginHost, installed: str, browser: Driver) -> None:
    assert 'data-plugin="lead-tour"' in browser.get("/?status=pending").text
    assert 'data-plugin="lead-tour"' not in browser.get("/?status=approved").text
    assert 'data-plugin="lead-tour"' in browser.get("/?status=nonsense").text


def test_a_forged_flash_cookie_is_ignored(
    host: PluginHost, installed: str, browser: Driver
) -> None:
    """The messages carried across a redirect are signed: a forged cookie shows nothing."""
    import base64

    forged = base64.urlsafe_b64encode(json.dumps([["success", "FORGED"]]).encode()).decode()
    if browser.kind == "wsgi":
        browser._wsgi.set_cookie("sap_admin_flash", f"{forged}.00", path=PREFIX)
    else:
        browser._asgi.cookies.set("sap_admin_flash", f"{forged}.00", path=PREFIX)
    answer = browser.get(REVIEW)
    assert "FORGED" not in answer.text
    assert answer.notes == []


def test_other_methods_are_refused(host: PluginHost, installed: str, admin: object) -> None:
    from werkzeug.test import Client

    client = Client(admin.wsgi)  # type: ignore[attr-defined]
    answer = client.put("/plugins/lead-tour/", headers={"x-test-admin": "ada"})
    assert answer.status_code == 405
    head = client.head("/", headers={"x-test-admin": "ada"})
    assert (head.status_code, head.get_data()) == (200, b"")
    assert host.registry.plugin("lead-tour").status is PluginStatus.PENDING


def test_at_the_servers_root(host: PluginHost, installed: str, admin: object) -> None:
    """Mounted at no prefix, links start at ``/``."""
    from werkzeug.test import Client

    client = Client(admin.wsgi)  # type: ignore[attr-defined]
    text = client.get("/", headers={"x-test-admin": "ada"}).get_data(as_text=True)
    assert 'href="/plugins/lead-tour/"' in text
    assert 'action="/"' in text


def test_the_asgi_app_answers_the_lifespan(host: PluginHost, admin: object) -> None:
    import asyncio

    sent: list[dict[str, object]] = []
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, object]:
        return next(messages)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(admin.asgi({"type": "lifespan"}, receive, send))  # type: ignore[attr-defined]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_the_asgi_app_closes_a_websocket(host: PluginHost, admin: object) -> None:
    import asyncio

    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/", "headers": [(b"x-test-admin", b"ada")]}
    asyncio.run(admin.asgi(scope, receive, send))  # type: ignore[attr-defined]
    assert sent == [{"type": "websocket.close", "code": 1003}]
