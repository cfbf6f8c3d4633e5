"""The data-access log keeps what a call asked for when it returned no record (issue 22).

``get_lead`` of an unknown id (or of another tenant's id, which the host services
do not return) used to leave a record without ids: a plugin probing ids was
invisible in the log. Now such a call is kept with the ids it asked for (its
``<kind>_id`` argument, ``count`` 0), and the messages it sent with whom they
addressed. Plugins are real archives installed in a real host, run in process
and in sandbox workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import PluginAPI, PluginHost, SandboxPolicy, requires
from services_ai_plugins._access import MAX_ASKED_ID
from services_ai_plugins._storage._protocol import MAX_ACCESS_IDS
from services_ai_plugins.events import Context, Lead
from services_ai_plugins.types import AccessLog, ApiMeter
from services_ai_plugins_testing.fakes import FakeHostServices

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

HEADER = "from services_ai_plugins import hookimpl\n\n\nclass Plugin:\n"
ACME = Context(tenant="acme")


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture(params=["inprocess", "sandboxed"])
def make_host(request: pytest.FixtureRequest, hosts: Hosts) -> Callable[..., PluginHost]:
    """Hosts whose plugins ``prober``/``mailer`` run in process, or in sandbox workers."""
    trusted = {"prober", "mailer"} if request.param == "inprocess" else set()

    def make(**options: Any) -> PluginHost:
        sandbox = SandboxPolicy(timeout=30.0, start_timeout=60.0, trusted=trusted)
        return cast("PluginHost", hosts(sandbox=sandbox, flush_interval=3600, **options))

    return make


def fire(host: PluginHost, services: FakeHostServices) -> Lead:
    lead = services.make_lead("acme", name="Ada")
    host.hook.lead_created(lead=lead, context=ACME)
    return lead


def asked(host: PluginHost, **query: Any) -> list[tuple[str, str, str | None, tuple[str, ...]]]:
    """(tenant, method, record_type, record_ids) of the plugin's records, oldest first."""
    records = host.access_log(**query)
    return [(r.tenant, r.method, r.record_type, r.record_ids) for r in reversed(records)]


def test_a_plugin_probing_another_tenants_ids_is_seen_with_each_id(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    request: pytest.FixtureRequest,
) -> None:
    """A hostile plugin of acme asks for globex's lead, booking, invoice and user by id: the host
    services return nothing (not its tenant), and the log names every id it asked for, under
    acme, with ``count`` 0; "who asked for globex's lead" finds the probe."""
    theirs = services.make_lead("globex", name="Secret")
    booking = services.make_booking("globex")
    host = make_host()
    install(
        host,
        "prober",
        f"""
        @hookimpl
        def lead_created(self, lead, api):
            found = [
                api.get_lead({theirs.id!r}),
                api.get_lead("lead-guess-1"),
                api.get_booking(booking_id={booking.id!r}),
                api.get_invoice("invoice-7"),
                api.get_user("admin"),
                api.get_lead(lead.id),
            ]
            assert found[:5] == [None] * 5, found
        """,
        permissions=("read_leads", "read_bookings", "read_invoices", "read_users"),
    )
    sandboxed = request.node.callspec.params["make_host"] == "sandboxed"
    assert hasattr(host.plugins()["prober"], "pid") == sandboxed
    mine = fire(host, services)
    assert asked(host, plugin_id="prober") == [
        ("acme", "get_lead", "lead", (theirs.id,)),
        ("acme", "get_lead", "lead", ("lead-guess-1",)),
        ("acme", "get_booking", "booking", (booking.id,)),
        ("acme", "get_invoice", "invoice", ("invoice-7",)),
        ("acme", "get_user", "user", ("admin",)),
        ("acme", "get_lead", "lead", (mine.id,)),
    ]
    counts = [r.count for r in reversed(host.access_log(plugin_id="prober"))]
    assert counts == [0, 0, 0, 0, 0, 1]  # asked for and got nothing, apart from its own lead
    probes = host.access_log(record_id=theirs.id)
    assert [(r.plugin_id, r.tenant, r.method, r.count) for r in probes] == [
        ("prober", "acme", "get_lead", 0)
    ]
    assert host.access_log(tenant="globex") == []


def test_messages_are_kept_with_whom_they_addressed(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """``send_email``, ``send_sms`` and ``send_notification`` return nothing: the log keeps their
    recipients (an e-mail's first 20), so "who e-mailed this address" has an answer; a
    notification to nobody in particular is kept without ids."""
    host = make_host()
    many = [f"person{i}@example.com" for i in range(MAX_ACCESS_IDS + 5)]
    install(
        host,
        "mailer",
        f"""
        @hookimpl
        def lead_created(self, lead, api):
            api.send_email("ada@example.com", "Hi", "Hello")
            api.send_email({many!r}, "All", "Hello")
            api.send_sms(to="+15550100", text="Hi")
            api.send_notification("New lead", recipient="user-9")
            api.send_notification("New lead")
        """,
        permissions=("read_leads", "send_email", "send_sms", "send_notifications"),
    )
    fire(host, services)
    assert len(services.sent_emails) == 2
    assert asked(host, plugin_id="mailer") == [
        ("acme", "send_email", "email", ("ada@example.com",)),
        ("acme", "send_email", "email", tuple(many[:MAX_ACCESS_IDS])),
        ("acme", "send_sms", "sms", ("+15550100",)),
        ("acme", "send_notification", "notification", ("user-9",)),
        ("acme", "send_notification", None, ()),
    ]
    assert [r.plugin_id for r in host.access_log(record_id="ada@example.com")] == ["mailer"]


def test_an_oversized_asked_id_is_cut(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """A plugin cannot park megabytes in the log (and its buffer) through an id argument: an
    asked id is kept to its first ``MAX_ASKED_ID`` characters."""
    host = make_host()
    install(
        host,
        "prober",
        """
        @hookimpl
        def lead_created(self, lead, api):
            assert api.get_lead("x" * 1_000_000) is None
        """,
    )
    fire(host, services)
    [record] = host.access_log(plugin_id="prober")
    assert record.record_ids == ("x" * MAX_ASKED_ID,)


class TicketAPI(PluginAPI):
    """A host's own API methods."""

    @requires("read_leads")
    def find_ticket(self, ticket_id: str) -> Mapping[str, str] | None:
        self._scope("find_ticket")
        return {"ticket": ticket_id} if ticket_id == "t-1" else None

    @requires("read_leads")
    def close_tickets(self, *, ticket_ids: list[str]) -> bool:
        self._scope("close_tickets")
        return True

    @requires("read_leads")
    def ping(self, text: str) -> None:
        self._scope("ping")


def test_a_hosts_own_methods_are_kept_with_their_id_arguments(
    services: FakeHostServices,
) -> None:
    """A host's ``@requires`` method that returns no record is kept with its ``<kind>_id`` or
    ``<kind>_ids`` argument, whether passed by position or by name; one without such an
    argument is kept as before, without ids."""
    log = AccessLog(100)
    api = TicketAPI(
        "helpdesk",
        services,
        tenant="acme",
        grants=frozenset({"read_leads"}),
        meter=ApiMeter(access=log),
    )
    api.find_ticket("t-1")
    api.find_ticket(ticket_id="t-404")
    api.close_tickets(ticket_ids=["t-2", "t-3"])
    api.ping("hello")
    records, dropped = log.take()
    assert dropped == 0
    assert [(r.method, r.record_type, r.record_ids, r.count) for r in records] == [
        ("find_ticket", "ticket", ("t-1",), 0),
        ("find_ticket", "ticket", ("t-404",), 0),
        ("close_tickets", "ticket", ("t-2", "t-3"), 0),
        ("ping", None, (), 0),
    ]
    # A batch the storage refused comes back as it was.
    log.put_back(records)
    assert log.take()[0] == records
