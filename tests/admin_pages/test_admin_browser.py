"""The neutral admin in a real browser: headless Chromium, driven by Playwright, against the
WSGI app served by a real werkzeug server on 127.0.0.1, mounted under a prefix.

The app's own authentication is a header here (Chromium sends it on every request): the
admin uploads a plugin ZIP, runs the check, approves it, enables it for a tenant, grants its
optional permission, edits a setting, and resumes a plugin the breaker suspended. Each page
is photographed: into ``docs/images/admin-<page>.png`` when ``SAP_WRITE_SCREENSHOTS=1`` (the
pictures of docs/admin.md), else into the test's own folder.

Chromium is ``$SAP_CHROMIUM``, else ``chromium`` on the PATH (Debian's package). Without it,
or without Playwright, the test is skipped, except under CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from admin_pages_kit import FAILING_CODE, PREFIX, WHO, authenticate, host, plugin_zip

from browser_kit import CODE, MANIFEST, chromium, expect, screenshot_folder
from services_ai_plugins import PluginHost, PluginStatus
from services_ai_plugins.admin import AdminApp
from services_ai_plugins.events import Context, Lead
from services_ai_plugins.tooling import example

__all__ = ["host"]  # the fixture, used by name

pytestmark = pytest.mark.slow

#: Generous: the machine is shared, and a sandboxed plugin's worker starts on a first call.
TIMEOUT_MS = 120_000
#: The steps a host takes itself (the switch to a new version), not the admin.
HOST_STEPS = ("upgrade started", "upgrade")


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return screenshot_folder(tmp_path)


@pytest.fixture
def server(host: PluginHost) -> Iterator[str]:
    """The admin's WSGI app under PREFIX on a real werkzeug server, 127.0.0.1, a free port."""
    from werkzeug.exceptions import NotFound
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.serving import make_server

    admin = AdminApp(
        lambda: host, authenticate=authenticate, secret="browser-test-secret-0123456789"
    )
    app = DispatcherMiddleware(NotFound(), {PREFIX: admin.wsgi})
    running = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{running.server_port}{PREFIX}"
    finally:
        running.shutdown()
        thread.join(timeout=60)
        running.server_close()


def test_the_admin_in_a_browser(server: str, host: PluginHost, tmp_path: Path, shots: Path) -> None:
    """Upload, check, approve, enable for a tenant, edit a setting, resume: each step shows
    in the page and lands in the registry, by the admin the app's authentication named."""
    executable = chromium()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    archive = tmp_path / "lead-greeter.zip"
    archive.write_bytes(plugin_zip(tmp_path, MANIFEST, CODE))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            context = browser.new_context(
                viewport={"width": 1280, "height": 900}, extra_http_headers={WHO: "ada"}
            )
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            _upload_check_approve(page, host, server, archive, shots)
            _enable_and_configure(page, host, shots)
            _upgrade_and_roll_back(page, host, server, tmp_path, shots)
            _resume(page, host, server, tmp_path, shots)
            page.goto(f"{server}/plugins/lead-greeter/audit")
            expect(page.locator("#audit-trail tbody tr").first).to_have_attribute(
                "data-action", "rollback"
            )
            assert "mail-key-not-shown" not in page.content()
            page.screenshot(path=str(shots / "admin-audit.png"), full_page=True)
        finally:
            browser.close()

    events = host.registry.audit_log(plugin_id="lead-greeter")
    # The switch is the host's own step (at its refresh); every other one is the admin's.
    assert {e.actor for e in events if e.action not in HOST_STEPS} == {"ada"}
    assert [e.actor for e in events if e.action == "upgrade"] == ["host"]
    assert host.registry.audit_log(plugin_id="crm-sync", action="resume")[0].actor == "ada"
    for name in ("plugins", "review", "tenants", "upgrade", "failures", "audit"):
        assert (shots / f"admin-{name}.png").stat().st_size > 10_000


def _upload_check_approve(
    page: Any, host: PluginHost, server: str, archive: Path, shots: Path
) -> None:
    page.goto(f"{server}/")
    page.set_input_files("#archive", str(archive))
    page.click("#upload-form input[type=submit]")
    expect(page).to_have_url(re.compile(re.escape(PREFIX) + r"/plugins/lead-greeter/$"))
    expect(page.locator("#notes")).to_contain_text("Installed lead-greeter 1.0.0")
    assert host.registry.plugin("lead-greeter").status is PluginStatus.PENDING

    page.click("#check-form input[type=submit]")
    expect(page.locator("#check-verdict")).to_contain_text("ok")
    expect(page.locator("#permissions")).to_contain_text("send_email")
    page.screenshot(path=str(shots / "admin-review.png"), full_page=True)

    page.click("#approve-form input[type=submit]")
    expect(page.locator("#notes")).to_contain_text("Approved lead-greeter")
    assert host.registry.plugin("lead-greeter").status is PluginStatus.APPROVED


def _enable_and_configure(page: Any, host: PluginHost, shots: Path) -> None:
    page.click("ul.tabs >> text=Tenants")
    page.fill("#enable-tenant", "acme")
    page.click("#enable-tenant-form input[type=submit]")
    expect(page.locator("#tenant-panel")).to_contain_text("Running")
    assert host.registry.enabled_plugins("acme") == ["lead-greeter"]

    page.click('tr[data-permission="send_email"] input[type=submit]')
    expect(page.locator("#notes")).to_contain_text("Granted send_email")
    page.fill("#setting-greeting", "Welcome aboard")
    page.fill("#setting-api_key", "mail-key-not-shown")
    page.click("#settings-form input[type=submit]")
    expect(page.locator("#notes")).to_contain_text("Saved api_key, greeting")
    expect(page.locator("#setting-greeting")).to_have_value("Welcome aboard")
    expect(page.locator("#setting-api_key")).to_have_value("")
    assert "mail-key-not-shown" not in page.content()
    settings = host.registry.get_settings("lead-greeter", "acme")
    assert settings["greeting"] == "Welcome aboard"
    assert settings["api_key"] == "mail-key-not-shown"
    page.screenshot(path=str(shots / "admin-tenants.png"), full_page=True)


def _upgrade_and_roll_back(
    page: Any, host: PluginHost, server: str, tmp_path: Path, shots: Path
) -> None:
    """Version 1.1.0 asks for one permission more: uploaded, it is staged and its review shows
    the diff; approved, the host's refresh switches to it; the button rolls it back."""
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
    archive = tmp_path / "lead-greeter-1.1.0.zip"
    archive.write_bytes(plugin_zip(tmp_path / "v2", newer, CODE))
    page.goto(f"{server}/")
    page.set_input_files("#archive", str(archive))
    page.click("#upload-form input[type=submit]")
    expect(page.locator("#notes")).to_contain_text("Staged lead-greeter 1.1.0")
    added = page.locator('#diff-permissions tr[data-permission="write_leads"]')
    expect(added).to_contain_text("added")
    expect(added).to_contain_text("high")
    page.screenshot(path=str(shots / "admin-upgrade.png"), full_page=True)

    page.click("#approve-upgrade-form input[type=submit]")
    expect(page.locator("#notes")).to_contain_text("Approved lead-greeter 1.1.0")
    host.refresh()
    assert host.registry.plugin("lead-greeter").version == "1.1.0"

    page.goto(f"{server}/plugins/lead-greeter/")
    page.click('#kept tr[data-version="1.0.0"] input[type=submit]')
    expect(page.locator("#notes")).to_contain_text("back from 1.1.0 to 1.0.0")
    assert host.registry.plugin("lead-greeter").version == "1.0.0"
    assert host.registry.get_settings("lead-greeter", "acme")["greeting"] == "Welcome aboard"


def _resume(page: Any, host: PluginHost, server: str, tmp_path: Path, shots: Path) -> None:
    """A failing plugin beside it: two failures in its sandbox, and the breaker suspends it
    for acme; the admin resumes it."""
    failing = {**MANIFEST, "id": "crm-sync", "name": "CRM Sync", "settings": []}
    host.install(plugin_zip(tmp_path, failing, FAILING_CODE), actor="ops")
    host.registry.approve("crm-sync", actor="ops")
    host.registry.enable("crm-sync", "acme", actor="ops")
    for _ in range(2):
        host.hook.lead_created(lead=example(Lead), context=Context(tenant="acme"))
    host.flush()
    assert [s.tenant for s in host.suspensions("crm-sync")] == ["acme"]

    page.goto(f"{server}/")
    expect(page.locator('tr[data-plugin="crm-sync"] .field-suspended')).to_have_text("acme")
    page.screenshot(path=str(shots / "admin-plugins.png"), full_page=True)

    page.click('tr[data-plugin="crm-sync"] td a')
    expect(page.locator("#unresolved")).to_contain_text("the mail server is down")
    expect(page.locator("#suspensions")).to_contain_text("tenant acme")
    page.locator("#unresolved details").first.evaluate("d => d.open = true")
    page.screenshot(path=str(shots / "admin-failures.png"), full_page=True)
    page.click('#suspensions tr[data-tenant="acme"] input[type=submit]')
    expect(page.locator("#notes")).to_contain_text("Resumed crm-sync for acme")
    assert host.suspensions("crm-sync") == []
