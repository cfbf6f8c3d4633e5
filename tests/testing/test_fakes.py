"""FakeHostServices: its factories, what it remembers, and how tests read it back.

The behaviour every HostServices must have is checked by the contract suite
(tests/test_services_contract.py); these tests cover what only the fake offers.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs
import pytest

from services_ai_plugins import PluginAPI
from services_ai_plugins._examples import example
from services_ai_plugins.errors import PayloadError
from services_ai_plugins.events import Booking, Invoice, Lead, User
from services_ai_plugins_testing.fakes import FakeHostServices

GRANTS = frozenset({"send_notifications", "send_email", "send_sms", "read_leads"})


def _api(services: FakeHostServices, tenant: str, plugin_id: str = "crm-sync") -> PluginAPI:
    return PluginAPI(plugin_id, services, tenant=tenant, grants=GRANTS)


def _without_id(record: Any) -> dict[str, Any]:
    fields = attrs.asdict(record, recurse=False)
    del fields["id"]
    return fields


# -- factories -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        ("make_lead", Lead),
        ("make_booking", Booking),
        ("make_invoice", Invoice),
        ("make_user", User),
    ],
)
def test_make_defaults_to_acme_and_the_example(make: str, kind: type[Any]) -> None:
    """make_<kind>() without arguments stores example(<kind>) for tenant 'acme', with a new id."""
    services = FakeHostServices()
    made = getattr(services, make)()
    assert type(made) is kind
    assert _without_id(made) == _without_id(example(kind))
    assert made.tenant == "acme"
    assert made.id != example(kind).id
    getter = getattr(services, f"get_{kind.__name__.lower()}")
    assert getter("acme", made.id) == made


def test_make_takes_a_tenant_and_any_field() -> None:
    """The tenant and every field can be given; the others stay the example's."""
    services = FakeHostServices()
    start = datetime(2030, 1, 7, 9, 0, tzinfo=timezone.utc)
    booking = services.make_booking(
        "globex", service="Site visit", starts_at=start, ends_at=start + timedelta(hours=2)
    )
    assert (booking.tenant, booking.service, booking.starts_at) == ("globex", "Site visit", start)
    assert booking.customer_name == example(Booking).customer_name
    assert services.get_booking("acme", booking.id) is None
    assert services.get_booking("globex", booking.id) == booking


def test_ids_are_new_unless_given() -> None:
    """Each record gets a new id (lead-1, lead-2, ...); an id that is given is kept."""
    services = FakeHostServices()
    first, second = services.make_lead(), services.make_lead()
    chosen = services.make_lead(id="L-42")
    assert (first.id, second.id, chosen.id) == ("lead-1", "lead-2", "L-42")
    assert services.get_lead("acme", "L-42") == chosen


@pytest.mark.parametrize("kind", ["lead", "booking", "invoice", "user"])
def test_add_calls_make_with_the_tenant(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """add_<kind>(tenant, **fields) is make_<kind>() with the tenant required: it calls it."""
    services = FakeHostServices()
    seen: list[tuple[str, dict[str, Any]]] = []
    original = getattr(services, f"make_{kind}")

    def spy(tenant: str = "acme", **fields: Any) -> Any:
        seen.append((tenant, fields))
        return original(tenant, **fields)

    monkeypatch.setattr(services, f"make_{kind}", spy)
    made = getattr(services, f"add_{kind}")("globex", id="x-1")
    assert seen == [("globex", {"id": "x-1"})]
    assert (made.tenant, made.id) == ("globex", "x-1")


def test_an_invalid_record_is_not_stored() -> None:
    """A factory that refuses its fields (a booking ending before it starts) stores nothing."""
    services = FakeHostServices()
    start = datetime(2030, 1, 7, 9, 0, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="must not be before starts_at"):
        services.make_booking(id="bk-1", starts_at=start, ends_at=start - timedelta(hours=1))
    assert services.list_bookings("acme", limit=10) == []
    assert services.get_booking("acme", "bk-1") is None


def test_stored_records_share_nothing_with_the_caller() -> None:
    """Changing a dict after giving it to a factory does not change the stored record."""
    services = FakeHostServices()
    data: dict[str, Any] = {"tags": ["vip"]}
    lead = services.make_lead(data=data)
    data["tags"].append("changed")
    data["new"] = 1
    stored = services.get_lead("acme", lead.id)
    assert stored is not None
    assert stored.data == {"tags": ["vip"]}


# -- lists and updates -----------------------------------------------------------------------------


def test_list_leads_and_invoices_are_newest_made_first() -> None:
    """list_leads and list_invoices return the records made last first, at most limit."""
    services = FakeHostServices()
    leads = [services.make_lead(name=f"Lead {n}") for n in range(3)]
    invoices = [services.make_invoice(number=f"2024-{n}") for n in range(3)]
    assert [lead.id for lead in services.list_leads("acme", limit=2)] == [leads[2].id, leads[1].id]
    assert list(services.list_invoices("acme", limit=5)) == invoices[::-1]


def test_list_bookings_is_soonest_first() -> None:
    """list_bookings returns the soonest bookings first, whatever the order they were made in."""
    services = FakeHostServices()
    start = datetime(2030, 1, 7, 9, 0, tzinfo=timezone.utc)
    made = [
        services.make_booking(
            starts_at=start + timedelta(days=d), ends_at=start + timedelta(days=d)
        )
        for d in (3, 1, 2)
    ]
    assert [b.id for b in services.list_bookings("acme", limit=2)] == [made[1].id, made[2].id]


def test_update_reads_typed_values_in_wire_form() -> None:
    """update_* reads a Decimal from '5200.00' and a datetime from ISO 8601 text (wire form)."""
    services = FakeHostServices()
    lead = services.make_lead()
    booking = services.make_booking()
    updated = services.update_lead("acme", lead.id, {"value": "5200.00", "status": "won"})
    assert (updated.value, updated.status) == (Decimal("5200.00"), "won")
    later = booking.starts_at + timedelta(days=1)
    moved = services.update_booking(
        "acme", booking.id, {"starts_at": later.isoformat(), "ends_at": later.isoformat()}
    )
    assert (moved.starts_at, moved.ends_at) == (later, later)
    assert services.get_booking("acme", booking.id) == moved


def test_update_refuses_an_invalid_value_and_stores_nothing() -> None:
    """A value not in wire form (a number for a Decimal) is a ValueError naming the field."""
    services = FakeHostServices()
    lead = services.make_lead()
    with pytest.raises(PayloadError, match="value: must be a decimal number as a string"):
        services.update_lead("acme", lead.id, {"value": 5200, "status": "won"})
    assert services.get_lead("acme", lead.id) == lead


# -- what plugins did ----------------------------------------------------------------------------


def test_messages_are_read_per_tenant_in_order() -> None:
    """notifications(), emails() and sms() list what was sent, in order, for one tenant or all."""
    services = FakeHostServices()
    acme, globex = _api(services, "acme"), _api(services, "globex")
    acme.send_notification("first")
    globex.send_notification("second")
    acme.send_notification("third")
    acme.send_email("ada@example.com", "Hi", "Hello")
    globex.send_sms("+15550100", "Hi")
    assert [n.message for n in services.notifications("acme")] == ["first", "third"]
    assert [n.message for n in services.notifications()] == ["first", "second", "third"]
    assert [e.to for e in services.emails("acme")] == [("ada@example.com",)]
    assert services.emails("globex") == []
    assert [(m.tenant, m.to) for m in services.sms()] == [("globex", "+15550100")]
    assert services.sms("acme") == []


def test_message_lists_are_copies() -> None:
    """Emptying a list that notifications(), emails() or sms() returned changes nothing kept."""
    services = FakeHostServices()
    api = _api(services, "acme")
    api.send_notification("Hi")
    api.send_email("ada@example.com", "Hi", "Hello")
    api.send_sms("+15550100", "Hi")
    for read in (services.notifications, services.emails, services.sms):
        read().clear()
        read("acme").clear()
    kept = (services.sent_notifications, services.sent_emails, services.sent_sms)
    assert [len(sent) for sent in kept] == [1, 1, 1]


def test_calls_to_lists_one_methods_arguments_tenant_first() -> None:
    """calls_to(method) gives the arguments of each call of that method, in order."""
    services = FakeHostServices()
    lead = services.make_lead()
    api = _api(services, "acme")
    api.get_lead(lead.id)
    api.list_leads(limit=5)
    api.get_lead("missing")
    assert services.calls_to("get_lead") == [("acme", lead.id), ("acme", "missing")]
    assert services.calls_to("list_leads") == [("acme", 5)]
    assert services.calls_to("send_email") == []


def test_calls_to_refuses_a_method_the_protocol_lacks() -> None:
    """A misspelt method is a ValueError listing the real ones, not an empty list that passes."""
    services = FakeHostServices()
    with pytest.raises(ValueError, match=r"'get_leads' is not a HostServices method .*get_lead,"):
        services.calls_to("get_leads")


def test_stored_is_one_plugins_store_for_one_tenant() -> None:
    """stored(tenant, plugin_id) holds that plugin's keys for that tenant only, as a copy."""
    services = FakeHostServices()
    _api(services, "acme").store_set("cursor", {"page": 3})
    _api(services, "acme").store_set("seen", ["lead-1"])
    _api(services, "globex").store_set("cursor", {"page": 9})
    _api(services, "acme", "lead-stats").store_set("cursor", 1)
    stored = services.stored("acme", "crm-sync")
    assert stored == {"cursor": {"page": 3}, "seen": ["lead-1"]}
    assert services.stored("acme", "unknown-plugin") == {}
    cursor = stored["cursor"]
    assert isinstance(cursor, dict)
    cursor["page"] = 4
    assert services.stored("acme", "crm-sync")["cursor"] == {"page": 3}


def test_reset_forgets_calls_and_messages_and_keeps_data() -> None:
    """reset() empties calls and sent messages; records, settings and stores stay."""
    services = FakeHostServices()
    lead = services.make_lead()
    services.settings[("acme", "crm-sync")] = {"threshold": 5}
    api = _api(services, "acme")
    api.store_set("cursor", 7)
    api.send_notification("Hi")
    api.send_email("ada@example.com", "Hi", "Hello")
    api.send_sms("+15550100", "Hi")
    services.reset()
    assert services.calls == []
    assert (services.notifications(), services.emails(), services.sms()) == ([], [], [])
    assert services.get_lead("acme", lead.id) == lead
    assert services.get_settings("acme", "crm-sync") == {"threshold": 5}
    assert services.stored("acme", "crm-sync") == {"cursor": 7}
    assert services.calls_to("get_lead") == [("acme", lead.id)]  # recording goes on
