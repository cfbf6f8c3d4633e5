"""Upgrades through the framework-neutral admin (WSGI and ASGI): a new version uploaded is
staged beside the running one, reviewed with its diff, approved or rejected; the app's host
switches at its refresh; a kept version comes back with the rollback button. Every step is
checked in the registry and its audit trail, with the admin as the actor."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pytest
from admin_pages_kit import (
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

__all__ = ["admin", "approved", "browser", "host", "installed"]  # fixtures, used by name

REVIEW = "/plugins/lead-tour/"
#: Version 1.3.0 asks for one permission more (write_leads, of high risk) and one setting more.
V2_CHANGES: dict[str, Any] = {
    "version": "1.3.0",
    "permissions": ["read_leads", "write_leads"],
    "changelog": "Writes a note on each new lead.",
    "settings": [
        *TOUR_MANIFEST["settings"],
        {"name": "note", "type": "string", "default": "Welcome", "description": "The note."},
    ],
}


def _row(text: str, marker: str) -> str:
    """The table row of the page that carries ``marker`` (an attribute)."""
    start = text.index(marker)
    return text[text.rindex("<tr", 0, start) : text.index("</tr>", start)]


def _staged(host: PluginHost, browser: Driver, tmp_path: Path) -> None:
    """lead-tour 1.2.0 approved through the admin, 1.3.0 uploaded through it (staged)."""
    done = browser.post(REVIEW, {"action": "approve"})
    assert done.status == 200, done.errors()
    assert host.registry.plugin("lead-tour").status is PluginStatus.APPROVED
    sent = browser.post(
        "/", files={"archive": ("v2.zip", plugin_zip(tmp_path / "v2", **V2_CHANGES))}
    )
    assert sent.status == 200, sent.errors()
    assert any("Staged lead-tour 1.3.0" in text for _, text in sent.notes)


def test_an_upgrade_from_upload_to_rollback(
    host: PluginHost, installed: str, browser: Driver, tmp_path: Path
) -> None:
    """Upload v2 of an approved plugin: staged (the list says it waits), its review shows the
    diff (the added permission with its risk and description, the new setting, the
    changelog); approved through the page it waits for a refresh; the host's refresh makes
    the switch; the kept 1.2.0 comes back with its button, audited with the admin's name."""
    _staged(host, browser, tmp_path)
    record = host.registry.plugin("lead-tour")
    assert (record.version, record.staged and record.staged.version) == ("1.2.0", "1.3.0")
    listing = browser.get("/").text
    assert "1.3.0 waiting for approval" in _row(listing, 'data-plugin="lead-tour"')

    review = browser.get(REVIEW).text
    assert "New version 1.3.0: waiting for approval" in review
    added = _row(review[review.index('id="diff-permissions"') :], 'data-permission="write_leads"')
    assert 'data-change="added"' in added
    assert '<span class="risk-high">high</span>' in added
    assert "Change the tenant&#39;s leads." in added
    assert "It asks for something new:" in review
    assert 'data-change="added"><td><code>note</code>' in review
    assert "Writes a note on each new lead." in review[review.index('id="diff-changelog"') :]
    assert 'id="approve-upgrade-form"' in review
    assert 'id="kept"' not in review  # nothing kept yet

    approved_page = browser.post(REVIEW, {"action": "approve"})
    assert approved_page.status == 200, approved_page.errors()
    assert any("switch to it at their next refresh" in t for _, t in approved_page.notes)
    staged = host.registry.plugin("lead-tour").staged
    assert staged is not None
    assert staged.approved_by == "ada"
    assert actors(host, "lead-tour", "approve upgrade") == ["ada"]
    listing = browser.get("/").text
    assert "1.3.0 approved, switching at the next refresh" in listing
    assert 'id="approve-upgrade-form"' not in approved_page.text

    host.refresh()
    record = host.registry.plugin("lead-tour")
    assert (record.version, record.staged) == ("1.3.0", None)
    assert "write_leads" in record.granted_permissions

    review = browser.get(REVIEW).text
    kept = _row(review[review.index('id="kept"') :], 'data-version="1.2.0"')
    assert "Roll back to this version" in kept
    back = browser.post(REVIEW, {"action": "rollback", "version": "1.2.0"})
    assert back.status == 200, back.errors()
    assert any("back from 1.3.0 to 1.2.0" in t for _, t in back.notes)
    record = host.registry.plugin("lead-tour")
    assert record.version == "1.2.0"
    assert "write_leads" not in record.granted_permissions
    assert actors(host, "lead-tour", "rollback") == ["ada"]

    audit = browser.get("/plugins/lead-tour/audit").text
    for line in (
        "Staged version 1.3.0 beside the running 1.2.0.",
        "Approved the upgrade from 1.2.0 to 1.3.0; a host switches at its next refresh.",
        "Switched from 1.2.0 to 1.3.0",
        "Rolled back from 1.3.0 to 1.2.0.",
    ):
        assert line in audit


def test_a_staged_version_rejected_with_a_reason(
    host: PluginHost, installed: str, browser: Driver, tmp_path: Path
) -> None:
    _staged(host, browser, tmp_path)
    refused = browser.post(REVIEW, {"action": "reject", "reason": " "})
    assert refused.status == 400
    assert host.registry.plugin("lead-tour").staged is not None
    done = browser.post(REVIEW, {"action": "reject", "reason": "asks for too much"})
    assert done.status == 200, done.errors()
    record = host.registry.plugin("lead-tour")
    assert (record.version, record.status, record.staged) == ("1.2.0", PluginStatus.APPROVED, None)
    assert actors(host, "lead-tour", "reject") == ["ada"]
    assert "Rejected the staged version 1.3.0; 1.2.0 runs on: asks for too much" in (
        browser.get("/plugins/lead-tour/audit").text
    )


def test_an_older_version_needs_the_downgrade_box(
    host: PluginHost, approved: str, browser: Driver, tmp_path: Path
) -> None:
    older = plugin_zip(tmp_path / "old", version="1.1.0")
    refused = browser.post("/", files={"archive": ("old.zip", older)})
    assert refused.status == 400
    (error,) = refused.errors()
    assert error.startswith("old.zip")
    assert "older than the installed version 1.2.0" in html.unescape(error)
    assert host.registry.plugin("lead-tour").staged is None
    done = browser.post("/", {"downgrade": "on"}, files={"archive": ("old.zip", older)})
    assert done.status == 200, done.errors()
    staged = host.registry.plugin("lead-tour").staged
    assert staged is not None
    assert staged.version == "1.1.0"


def test_hostile_text_of_a_staged_version_is_escaped(
    host: PluginHost, installed: str, browser: Driver, tmp_path: Path
) -> None:
    """A v2 whose manifest, setting and changelog carry markup: the review page shows it as
    text, never as markup."""
    browser.post(REVIEW, {"action": "approve"})
    evil = "<script>alert('owned')</script>"
    hostile = plugin_zip(
        tmp_path / "evil",
        version="2.0.0",
        name=f"Tour {evil}",
        description=f"Nice {evil}",
        author='"><img src=x onerror=alert(1)>',
        changelog=f"Fixed {evil}\n<iframe src=//evil>",
        settings=[{"name": "hello", "type": "string", "description": evil}],
    )
    sent = browser.post("/", files={"archive": ("evil.zip", hostile)})
    assert sent.status == 200, sent.errors()
    for page in (REVIEW, "/", "/plugins/lead-tour/audit"):
        text = browser.get(page).text
        assert "<script>alert" not in text
        assert "<img src=x" not in text
        assert "<iframe" not in text
    review = browser.get(REVIEW).text
    assert "&lt;script&gt;alert(" in review
    assert "&lt;iframe src=//evil&gt;" in review


@pytest.mark.parametrize(
    "data", [{"action": "approve"}, {"action": "rollback", "version": "1.2.0"}]
)
def test_the_new_steps_refuse_strangers_and_forged_forms(
    host: PluginHost, installed: str, browser: Driver, tmp_path: Path, data: dict[str, str]
) -> None:
    _staged(host, browser, tmp_path)
    if data["action"] == "rollback":
        browser.post(REVIEW, {"action": "approve"})
        host.refresh()
    before = host.registry.plugin("lead-tour")
    stranger = browser.post(REVIEW, data, who=None)
    assert stranger.status == 403
    forged = browser.post(REVIEW, data, token="forged-token")
    assert forged.status == 403
    assert "security token" in forged.text
    assert host.registry.plugin("lead-tour") == before


HOSTILE_MIGRATION = """
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead, api):
        return None

    @hookimpl
    def plugin_upgraded(self, plugin_id, from_version, to_version, context, api, settings):
        raise RuntimeError("<img src=x onerror=alert(1)> cannot migrate " + context.tenant)
"""


def test_a_failed_switch_shows_on_the_audit_page(
    host: PluginHost, installed: str, browser: Driver, tmp_path: Path
) -> None:
    """A v2 whose migration raises (in its sandbox) with markup in its message: the host's
    refresh rolls the switch back, 1.2.0 runs on, and the audit page says so, escaped."""
    browser.post(REVIEW, {"action": "approve"})
    host.registry.enable("lead-tour", "acme", actor="ops")
    archive = plugin_zip(tmp_path / "v2", code=HOSTILE_MIGRATION, version="1.3.0")
    assert browser.post("/", files={"archive": ("v2.zip", archive)}).status == 200
    assert browser.post(REVIEW, {"action": "approve"}).status == 200
    host.refresh()
    record = host.registry.plugin("lead-tour")
    assert (record.version, record.staged) == ("1.2.0", None)
    audit = browser.get("/plugins/lead-tour/audit").text
    assert "The switch to 1.3.0 failed at migration for tenant acme; 1.2.0 runs on:" in audit
    assert "&lt;img src=x onerror=alert(1)&gt; cannot migrate acme" in audit
    assert "<img src=x" not in audit
    assert 'id="staged"' not in browser.get(REVIEW).text
