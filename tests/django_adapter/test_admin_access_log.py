"""The data-access log in Django's admin (issue 22): read-only, filtered, through the test client.

The entries are written as a host writes them (``DjangoStorage.record_access``, the
host's flush), then read through ``/admin/services_ai_plugins/accessentry/`` as a
superuser: the list and its filters, the date hierarchy and the id search work; adding,
changing and deleting an entry is refused, as for an audit log.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from services_ai_plugins.django import conf
from services_ai_plugins.django.models import AccessEntry
from services_ai_plugins.django.storage import DjangoStorage
from services_ai_plugins.storage import AccessRecord

pytestmark = pytest.mark.django_db(transaction=True)

BASE = "/admin/services_ai_plugins/accessentry/"

RECORDS = (
    ("reader", "acme", "get_lead", "read_leads", "lead", ("lead-7",), 1, (2026, 3, 1)),
    ("reader", "acme", "list_leads", "read_leads", "lead", ("lead-7", "lead-8"), 2, (2026, 3, 2)),
    ("prober", "globex", "get_invoice", "read_invoices", "invoice", ("inv-1",), 0, (2025, 6, 9)),
    ("mailer", "acme", "send_email", "send_email", "email", ("ada@example.com",), 0, (2026, 3, 3)),
)


@pytest.fixture(autouse=True)
def host_closed(transactional_db: None, settings: Any, tmp_path: Path) -> Iterator[None]:
    """The host the project's middleware makes for the requests, over the test database and
    closed before it goes."""
    settings.SERVICES_AI_PLUGINS = {
        **settings.SERVICES_AI_PLUGINS,
        "STORAGE": "django",
        "PLUGINS_DIR": str(tmp_path / "plugins"),
    }
    try:
        yield
    finally:
        conf.close_host()


@pytest.fixture
def entries() -> list[AccessEntry]:
    DjangoStorage().record_access(
        [
            AccessRecord(
                plugin_id=plugin,
                tenant=tenant,
                method=method,
                permission=permission,
                record_type=kind,
                record_ids=ids,
                count=count,
                at=datetime(*day, 12, tzinfo=timezone.utc),
            )
            for plugin, tenant, method, permission, kind, ids, count, day in RECORDS
        ]
    )
    return list(AccessEntry.objects.order_by("at"))


def shown(response: Any) -> list[tuple[str, str, str]]:
    """(plugin, tenant, method) of the rows on a list page, as listed (newest first)."""
    assert response.status_code == 200
    return [(e.plugin_id, e.tenant, e.method) for e in response.context["cl"].result_list]


def test_a_superuser_reads_the_log_newest_first(
    entries: list[AccessEntry], admin_client: Client
) -> None:
    """The list page renders every entry with its ids, decoded, and the admin index lists it."""
    response = admin_client.get(BASE)
    assert shown(response) == [
        ("mailer", "acme", "send_email"),
        ("reader", "acme", "list_leads"),
        ("reader", "acme", "get_lead"),
        ("prober", "globex", "get_invoice"),
    ]
    text = response.content.decode()
    assert "lead-7, lead-8" in text
    assert "ada@example.com" in text
    assert BASE in admin_client.get("/admin/").content.decode()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            "plugin_id=reader",
            [("reader", "acme", "list_leads"), ("reader", "acme", "get_lead")],
        ),
        ("tenant=globex", [("prober", "globex", "get_invoice")]),
        ("method=send_email", [("mailer", "acme", "send_email")]),
        ("permission=read_invoices", [("prober", "globex", "get_invoice")]),
        ("at__year=2025", [("prober", "globex", "get_invoice")]),
        ("at__year=2026&at__month=3&at__day=1", [("reader", "acme", "get_lead")]),
        (
            "tenant=acme&permission=read_leads",
            [("reader", "acme", "list_leads"), ("reader", "acme", "get_lead")],
        ),
        ("q=lead-8", [("reader", "acme", "list_leads")]),
    ],
)
def test_the_filters_date_hierarchy_and_id_search(
    entries: list[AccessEntry], admin_client: Client, query: str, expected: list[Any]
) -> None:
    """Plugin, tenant, method and permission filters, the date drill-down and "who touched
    record X" each narrow the list to exactly the matching entries."""
    assert shown(admin_client.get(f"{BASE}?{query}")) == expected


def test_the_filters_offer_each_plugin_tenant_method_and_permission(
    entries: list[AccessEntry], admin_client: Client
) -> None:
    text = admin_client.get(BASE).content.decode()
    for choice in (
        "plugin_id=prober",
        "tenant=globex",
        "method=get_lead",
        "permission=send_email",
        "at__year=2025",  # the date hierarchy
    ):
        assert f'href="?{choice}"' in text


def test_adding_changing_and_deleting_entries_is_refused(
    entries: list[AccessEntry], admin_client: Client
) -> None:
    """An audit log: no add page, an entry's page is read-only (a POST is refused), no delete
    page and no bulk delete; every entry is left as the host wrote it."""
    before = list(AccessEntry.objects.order_by("id").values())
    entry = entries[0]
    assert admin_client.get(f"{BASE}add/").status_code == 403
    assert admin_client.post(f"{BASE}add/", {"plugin_id": "forged"}).status_code == 403
    page = admin_client.get(f"{BASE}{entry.pk}/change/")
    assert page.status_code == 200
    assert 'name="plugin_id"' not in page.content.decode()  # shown, not editable
    changed = admin_client.post(f"{BASE}{entry.pk}/change/", {"plugin_id": "forged"})
    assert changed.status_code == 403
    assert admin_client.get(f"{BASE}{entry.pk}/delete/").status_code == 403
    assert admin_client.post(f"{BASE}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    bulk = admin_client.post(
        BASE,
        {"action": "delete_selected", "_selected_action": [e.pk for e in entries], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    assert "delete_selected" not in admin_client.get(BASE).content.decode()
    assert list(AccessEntry.objects.order_by("id").values()) == before


def test_staff_without_manage_plugins_do_not_see_the_log(
    entries: list[AccessEntry], client: Client
) -> None:
    """Who may not manage plugins may not read what they touched either."""
    client.force_login(User.objects.create_user("clerk", is_staff=True))
    assert client.get(BASE).status_code == 403
    assert client.get(f"{BASE}{entries[0].pk}/change/").status_code == 403
    assert BASE not in client.get("/admin/").content.decode()
