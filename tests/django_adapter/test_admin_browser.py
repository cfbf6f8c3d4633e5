"""The plugin admin in a real browser: headless Chromium, driven by Playwright, against the
example project served by pytest-django's live server.

A staff user logs in, uploads a plugin ZIP, runs the check, approves it, enables it for a
tenant and edits a setting; a failing plugin fills the failures page. Each admin page is
photographed: into ``docs/images/django-admin-<page>.png`` when ``SAP_WRITE_SCREENSHOTS=1``
(the pictures of docs/django-admin.md), else into the test's own folder.

Chromium is ``$SAP_CHROMIUM``, else ``chromium`` on the PATH (Debian's package). Without it,
or without Playwright, the test is skipped, except under CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import json
import re
import secrets
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from browser_kit import CODE, MANIFEST, chromium, expect, screenshot_folder
from django_adapter.conftest import REGISTRY_STORAGE
from services_ai_plugins import PluginHost, PluginStatus, pack_plugin
from services_ai_plugins.django import conf
from services_ai_plugins.events import Context, Lead
from services_ai_plugins.tooling import example

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

#: Generous: the machine is shared, and a sandboxed plugin's worker starts on a first call.
TIMEOUT_MS = 120_000
#: The steps a host takes itself (the switch to a new version), not the admin.
HOST_STEPS = ("upgrade started", "upgrade")


FAILING = """
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead, api):
        raise ConnectionError("the CRM sync server refused the connection")
"""


def _zip(tmp_path: Path, manifest: dict[str, Any], code: str) -> Path:
    folder = tmp_path / "src" / str(manifest["id"])
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (folder / "main.py").write_text(textwrap.dedent(code))
    return pack_plugin(folder, tmp_path / f"{manifest['id']}-{manifest['version']}.zip").path


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return screenshot_folder(tmp_path)


@pytest.fixture
def host(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PluginHost]:
    """The host of the live server's process, over the Django tests' registry."""
    # Playwright's sync API keeps an event loop in this thread; what the test itself does with
    # the ORM (here, a plugin's API calls answered by the host) is synchronous all the same.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from cryptography.fernet import Fernet

    settings.SERVICES_AI_PLUGINS = {
        **settings.SERVICES_AI_PLUGINS,
        "STORAGE": REGISTRY_STORAGE(tmp_path),
        "PLUGINS_DIR": str(tmp_path / "plugins"),
        "HOST": {
            **settings.SERVICES_AI_PLUGINS.get("HOST", {}),
            "secret_keys": [Fernet.generate_key().decode()],
        },
        "SANDBOX": {"timeout": 60.0, "start_timeout": 120.0},
        "BREAKER": {"consecutive_failures": 2},
    }
    yield conf.get_host()
    conf.close_host()


def test_the_admin_in_a_browser(
    live_server: Any, host: PluginHost, tmp_path: Path, shots: Path
) -> None:
    """Log in, upload, check, approve, enable for a tenant, edit a setting: each step shows
    in the page and lands in the registry, by the signed-in user."""
    executable = chromium()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    password = secrets.token_urlsafe(12)
    User.objects.create_superuser("ada", "ada@example.com", password)
    base = f"{live_server.url}/admin/services_ai_plugins/plugin/"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            _log_in(page, live_server.url, password)
            _upload_check_approve(page, host, base, _zip(tmp_path, MANIFEST, CODE), shots)
            _enable_and_configure(page, host, shots)
            _upgrade_and_roll_back(page, host, base, tmp_path, shots)
            failing = {**MANIFEST, "id": "crm-sync", "name": "CRM Sync", "settings": []}
            _failures(page, host, base, _zip(tmp_path, failing, FAILING), shots)
            _audit(page, base, shots)
        finally:
            browser.close()

    events = host.registry.audit_log(plugin_id="lead-greeter")
    # The switch is the host's own step (at its refresh); every other one is the admin's.
    assert {e.actor for e in events if e.action not in HOST_STEPS} == {"ada"}
    assert len([e for e in events if e.action == "upgrade"]) == 1
    for name in ("plugins", "review", "tenants", "upgrade", "failures", "audit"):
        assert (shots / f"django-admin-{name}.png").stat().st_size > 10_000


def _log_in(page: Any, server: str, password: str) -> None:
    """Through the admin's own login form; the admin index then lists the plugins."""
    page.goto(f"{server}/admin/login/?next=/admin/")
    page.fill("#id_username", "ada")
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    expect(page.locator("#services_ai_plugins-plugin")).to_contain_text("Plugins")


def _upload_check_approve(
    page: Any, host: PluginHost, base: str, archive: Path, shots: Path
) -> None:
    """Upload the ZIP on the list page: it lands on the review page, pending; run the
    check; approve."""
    page.goto(base)
    page.set_input_files("#id_archive", str(archive))
    page.click("#upload-form input[type=submit]")
    expect(page).to_have_url(re.compile(r"/lead-greeter/change/$"))
    expect(page.locator("ul.messagelist")).to_contain_text("Installed lead-greeter 1.0.0")
    assert host.registry.plugin("lead-greeter").status is PluginStatus.PENDING

    page.click("#check input[type=submit]")
    expect(page.locator("#check-verdict")).to_contain_text("ok")
    expect(page.locator("#permissions")).to_contain_text("send_email")
    page.screenshot(path=str(shots / "django-admin-review.png"), full_page=True)

    page.click("#approve-form input[type=submit]")
    expect(page.locator("ul.messagelist")).to_contain_text("Approved lead-greeter")
    assert host.registry.plugin("lead-greeter").status is PluginStatus.APPROVED


def _enable_and_configure(page: Any, host: PluginHost, shots: Path) -> None:
    """On the Tenants tab: enable for acme, grant the optional permission, edit settings."""
    page.click("ul.sap-tabs >> text=Tenants")
    page.fill("#enable-tenant", "acme")
    page.click("#enable-tenant-form input[type=submit]")
    expect(page.locator("#tenant-panel")).to_contain_text("Running")
    assert host.registry.enabled_plugins("acme") == ["lead-greeter"]

    page.click('tr[data-permission="send_email"] input[type=submit]')
    expect(page.locator("ul.messagelist")).to_contain_text("Granted send_email")
    page.fill("#id_setting-greeting", "Welcome aboard")
    page.fill("#id_setting-api_key", "mail-key-not-shown")
    page.click("#settings-form input[type=submit]")
    expect(page.locator("ul.messagelist")).to_contain_text("Saved api_key, greeting")
    expect(page.locator("#id_setting-greeting")).to_have_value("Welcome aboard")
    expect(page.locator("#id_setting-api_key")).to_have_value("")
    assert "mail-key-not-shown" not in page.content()
    settings = host.registry.get_settings("lead-greeter", "acme")
    assert settings["greeting"] == "Welcome aboard"
    assert settings["api_key"] == "mail-key-not-shown"
    page.screenshot(path=str(shots / "django-admin-tenants.png"), full_page=True)


def _upgrade_and_roll_back(
    page: Any, host: PluginHost, base: str, tmp_path: Path, shots: Path
) -> None:
    """Version 1.1.0 asks for one permission more: uploaded, it is staged and its review shows
    the diff; approved, the host switches to it at its refresh; the button rolls it back."""
    newer = {
        **MANIFEST,
        "version": "1.1.0",
        "permissions": ["read_leads", "write_leads"],
        "changelog": "Notes each greeting on the lead.",
        "settings": [
            *MANIFEST["settings"],
            {"name": "note", "type": "string", "default": "Greeted", "description": "The note."},
        ],
    }
    page.goto(base)
    page.set_input_files("#id_archive", str(_zip(tmp_path / "v2", newer, CODE)))
    page.click("#upload-form input[type=submit]")
    expect(page.locator("ul.messagelist")).to_contain_text("Staged lead-greeter 1.1.0")
    added = page.locator('#diff-permissions tr[data-permission="write_leads"]')
    expect(added).to_contain_text("added")
    expect(added).to_contain_text("high")
    page.screenshot(path=str(shots / "django-admin-upgrade.png"), full_page=True)

    page.click("#approve-upgrade-form input[type=submit]")
    expect(page.locator("ul.messagelist")).to_contain_text("Approved lead-greeter 1.1.0")
    host.refresh()
    assert host.registry.plugin("lead-greeter").version == "1.1.0"

    page.goto(f"{base}lead-greeter/change/")
    page.click('#kept tr[data-version="1.0.0"] input[type=submit]')
    expect(page.locator("ul.messagelist")).to_contain_text("back from 1.1.0 to 1.0.0")
    assert host.registry.plugin("lead-greeter").version == "1.0.0"
    assert host.registry.get_settings("lead-greeter", "acme")["greeting"] == "Welcome aboard"


def _failures(page: Any, host: PluginHost, base: str, archive: Path, shots: Path) -> None:
    """A failing plugin beside it: two failures, and the breaker suspends it for acme; the
    admin resumes it."""
    host.install(archive, actor="ada")
    host.registry.approve("crm-sync", actor="ada")
    host.registry.enable("crm-sync", "acme", actor="ada")
    for _ in range(2):
        host.hook.lead_created(lead=example(Lead), context=Context(tenant="acme"))
    host.flush()

    page.goto(base)
    expect(page.locator('tr[data-plugin="crm-sync"] .field-failures')).to_have_text("2")
    page.screenshot(path=str(shots / "django-admin-plugins.png"), full_page=True)

    page.goto(f"{base}crm-sync/failures/")
    expect(page.locator("#unresolved")).to_contain_text("the CRM sync server refused")
    expect(page.locator("#suspensions")).to_contain_text("tenant acme")
    page.locator("#unresolved details").first.evaluate("d => d.open = true")
    page.screenshot(path=str(shots / "django-admin-failures.png"), full_page=True)
    page.click('#suspensions tr[data-tenant="acme"] input[type=submit]')
    expect(page.locator("ul.messagelist")).to_contain_text("Resumed crm-sync for acme")
    assert host.suspensions("crm-sync") == []


def _audit(page: Any, base: str, shots: Path) -> None:
    page.goto(f"{base}lead-greeter/audit/")
    expect(page.locator("#audit-trail tbody tr").first).to_have_attribute("data-action", "rollback")
    assert "mail-key-not-shown" not in page.content()
    page.screenshot(path=str(shots / "django-admin-audit.png"), full_page=True)
