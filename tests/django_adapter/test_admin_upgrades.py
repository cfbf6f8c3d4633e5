"""Upgrades in Django's admin: a new version uploaded is staged beside the running one,
reviewed with its diff, approved or rejected; the app's host switches at its refresh; a kept
version comes back with the rollback button. Every step is checked in the registry and its
audit trail, with the staff user as the actor."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from django_adapter.test_admin import (
    BASE,
    TOUR_MANIFEST,
    PluginZip,
    actors,
    approved,
    host,
    installed,
    messages_of,
    page_text,
    plugin_zip,
    post,
    registry_settings,
    upload,
)
from services_ai_plugins import PluginHost, PluginStatus
from services_ai_plugins.django import conf

__all__ = ["approved", "host", "installed", "plugin_zip", "registry_settings"]  # fixtures

pytestmark = pytest.mark.django_db(transaction=True)

REVIEW = f"{BASE}lead-tour/change/"
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


def _staged(host: PluginHost, client: Client, plugin_zip: PluginZip) -> None:
    """lead-tour 1.2.0 approved through the admin, 1.3.0 uploaded through it (staged)."""
    post(client, "change", {"action": "approve"})
    assert host.registry.plugin("lead-tour").status is PluginStatus.APPROVED
    sent = upload(client, plugin_zip(**V2_CHANGES))
    assert any("Staged lead-tour 1.3.0" in m for m in messages_of(sent)), messages_of(sent)


def test_an_upgrade_from_upload_to_rollback(
    host: PluginHost, installed: str, admin_client: Client, plugin_zip: PluginZip
) -> None:
    """Upload v2 of an approved plugin: staged (the list says it waits), its review shows the
    diff (the added permission with its risk and description, the new setting, the
    changelog); approved through the page it waits for a refresh; the app's host refresh
    makes the switch; the kept 1.2.0 comes back with its button, audited with the staff
    user's name."""
    _staged(host, admin_client, plugin_zip)
    record = host.registry.plugin("lead-tour")
    assert record.version == "1.2.0"
    assert record.staged is not None
    assert record.staged.version == "1.3.0"
    listing = page_text(admin_client.get(BASE))
    assert "1.3.0 waiting for approval" in _row(listing, 'data-plugin="lead-tour"')

    review = page_text(admin_client.get(REVIEW))
    assert "New version 1.3.0: waiting for approval" in review
    added = _row(review[review.index('id="diff-permissions"') :], 'data-permission="write_leads"')
    assert 'data-change="added"' in added
    assert '<span class="sap-risk-high">high</span>' in added
    assert "Change the tenant&#x27;s leads." in added
    assert "It asks for something new:" in review
    assert 'data-change="added"><td><code>note</code>' in review
    assert "Writes a note on each new lead." in review[review.index('id="diff-changelog"') :]
    assert 'id="kept"' not in review

    # Not followed: the app's host switches at its next call (any request through the
    # plugins' middleware), as every host does at its next refresh.
    done = admin_client.post(REVIEW, {"action": "approve"})
    assert done.status_code == 302
    staged = host.registry.plugin("lead-tour").staged
    assert staged is not None
    assert staged.approved_by == "admin"
    assert actors(host, "lead-tour", "approve upgrade") == ["admin"]

    assert conf.get_host() is host
    host.refresh()
    record = host.registry.plugin("lead-tour")
    assert (record.version, record.staged) == ("1.3.0", None)

    shown = admin_client.get(REVIEW)
    assert "Approved lead-tour 1.3.0: the hosts switch to it at their next refresh." in messages_of(
        shown
    )
    review = page_text(shown)
    kept = _row(review[review.index('id="kept"') :], 'data-version="1.2.0"')
    assert "Roll back to this version" in kept
    back = post(admin_client, "change", {"action": "rollback", "version": "1.2.0"})
    assert any("back from 1.3.0 to 1.2.0" in m for m in messages_of(back)), messages_of(back)
    record = host.registry.plugin("lead-tour")
    assert record.version == "1.2.0"
    assert "write_leads" not in record.granted_permissions
    assert actors(host, "lead-tour", "rollback") == ["admin"]

    audit = page_text(admin_client.get(f"{BASE}lead-tour/audit/"))
    for line in (
        "Staged version 1.3.0 beside the running 1.2.0.",
        "Approved the upgrade from 1.2.0 to 1.3.0; a host switches at its next refresh.",
        "Switched from 1.2.0 to 1.3.0",
        "Rolled back from 1.3.0 to 1.2.0.",
    ):
        assert line in audit


def test_a_staged_version_rejected_with_a_reason(
    host: PluginHost, installed: str, admin_client: Client, plugin_zip: PluginZip
) -> None:
    _staged(host, admin_client, plugin_zip)
    refused = post(admin_client, "change", {"action": "reject", "reason": ""})
    assert "A rejection needs a reason." in messages_of(refused)
    assert host.registry.plugin("lead-tour").staged is not None
    post(admin_client, "change", {"action": "reject", "reason": "asks for too much"})
    record = host.registry.plugin("lead-tour")
    assert (record.version, record.status, record.staged) == ("1.2.0", PluginStatus.APPROVED, None)
    assert actors(host, "lead-tour", "reject") == ["admin"]
    assert "Rejected the staged version 1.3.0; 1.2.0 runs on: asks for too much" in page_text(
        admin_client.get(f"{BASE}lead-tour/audit/")
    )


def test_an_older_version_needs_the_downgrade_box(
    host: PluginHost, approved: str, admin_client: Client, plugin_zip: PluginZip
) -> None:
    older = plugin_zip(version="1.1.0")
    refused = upload(admin_client, older)
    (error,) = messages_of(refused)
    assert error.startswith(older.name)
    assert "older than the installed version 1.2.0" in error
    assert host.registry.plugin("lead-tour").staged is None
    upload(admin_client, older, downgrade="on")
    staged = host.registry.plugin("lead-tour").staged
    assert staged is not None
    assert staged.version == "1.1.0"


def test_hostile_text_of_a_staged_version_is_escaped(
    host: PluginHost, installed: str, admin_client: Client, plugin_zip: PluginZip
) -> None:
    """A v2 whose manifest, setting and changelog carry markup: the pages show it as text."""
    post(admin_client, "change", {"action": "approve"})
    evil = "<script>alert('owned')</script>"
    hostile = plugin_zip(
        version="2.0.0",
        name=f"Tour {evil}",
        description=f"Nice {evil}",
        author='"><img src=x onerror=alert(1)>',
        changelog=f"Fixed {evil}\n<iframe src=//evil>",
        settings=[{"name": "hello", "type": "string", "description": evil}],
    )
    sent = upload(admin_client, hostile)
    assert any("Staged" in m for m in messages_of(sent)), messages_of(sent)
    for page in (REVIEW, BASE, f"{BASE}lead-tour/audit/"):
        text = page_text(admin_client.get(page))
        assert "<script>alert" not in text
        assert "<img src=x" not in text
        assert "<iframe" not in text
    review = page_text(admin_client.get(REVIEW))
    assert "&lt;script&gt;alert(" in review
    assert "&lt;iframe src=//evil&gt;" in review


@pytest.mark.parametrize(
    "data", [{"action": "approve"}, {"action": "rollback", "version": "1.2.0"}]
)
def test_the_new_steps_refuse_strangers_and_forged_forms(  # noqa: PLR0917 - pytest's fixtures
    host: PluginHost,
    installed: str,
    admin_client: Client,
    client: Client,
    plugin_zip: PluginZip,
    data: dict[str, str],
) -> None:
    """Staff without the permission get 403; a POST without Django's CSRF token gets 403;
    nothing changes either way."""
    _staged(host, admin_client, plugin_zip)
    if data["action"] == "rollback":
        post(admin_client, "change", {"action": "approve"})
        host.refresh()
    before = host.registry.plugin("lead-tour")
    client.force_login(User.objects.create_user("clerk", is_staff=True))
    assert client.post(REVIEW, data).status_code == 403
    boss = Client(enforce_csrf_checks=True)
    boss.force_login(User.objects.create_superuser("boss"))
    assert boss.post(REVIEW, data).status_code == 403
    assert host.registry.plugin("lead-tour") == before
