"""The data-access log (issue 22): granted API calls on tenant data, recorded through a real host.

Every plugin here is a real folder packed into a real archive, installed,
approved and enabled; sandboxed ones run in real worker processes, and their
API calls are run (and recorded) host-side.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import AccessPolicy, MemoryStorage, PluginHost, SandboxPolicy
from services_ai_plugins._api import DeniedCall
from services_ai_plugins.events import Context, Lead
from services_ai_plugins.storage import AccessRecord, SQLiteStorage
from services_ai_plugins_testing.fakes import FakeHostServices

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

HEADER = "from services_ai_plugins import hookimpl\n\n\nclass Plugin:\n"

ACME = Context(tenant="acme")
GLOBEX = Context(tenant="globex")

#: Reads the lead it is told of, and the tenant's leads.
READER = """
@hookimpl
def lead_created(self, lead, api):
    api.get_lead(lead.id)
    api.list_leads(limit=5)
"""


class CountingStorage(MemoryStorage):
    """A memory storage that counts its access-log writes."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def record_access(self, records: Sequence[AccessRecord]) -> None:
        self.batches.append(len(records))
        super().record_access(records)


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def denied() -> list[DeniedCall]:
    return []


@pytest.fixture(params=["inprocess", "sandboxed"])
def make_host(
    request: pytest.FixtureRequest, hosts: Hosts, denied: list[DeniedCall]
) -> Callable[..., PluginHost]:
    """Hosts whose plugin ``reader``/``flooder``/``snoop`` run in process, or in workers."""
    trusted = {"reader", "flooder", "snoop"} if request.param == "inprocess" else set()

    def make(**options: Any) -> PluginHost:
        sandbox = SandboxPolicy(timeout=30.0, start_timeout=60.0, trusted=trusted)
        host = hosts(sandbox=sandbox, on_denied=denied.append, flush_interval=3600, **options)
        return cast("PluginHost", host)

    return make


def is_sandboxed(host: PluginHost, plugin_id: str) -> bool:
    return hasattr(host.plugins()[plugin_id], "pid")


def fire(host: PluginHost, services: FakeHostServices, context: Context = ACME) -> Lead:
    lead = services.make_lead(context.tenant, name="Ada")
    host.hook.lead_created(lead=lead, context=context)
    return lead


def test_an_admin_learns_what_a_plugin_touched_for_a_tenant(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    request: pytest.FixtureRequest,
) -> None:
    """The plugin read lead X for acme: the log says so, with its list call's ids; for globex,
    where it is enabled too but was never called, there is nothing."""
    host = make_host()
    install(host, "reader", READER, tenants=("acme", "globex"))
    assert is_sandboxed(host, "reader") == (
        request.node.callspec.params["make_host"] == "sandboxed"
    )
    older = services.make_lead("acme", name="Bob")
    before = datetime.now(timezone.utc)
    lead = fire(host, services)
    after = datetime.now(timezone.utc)

    week = datetime.now(timezone.utc) - timedelta(days=7)
    touched = host.registry.access_log(plugin_id="reader", tenant="acme", since=week)
    assert touched == []  # nothing is written before a flush
    host.flush()
    touched = host.registry.access_log(plugin_id="reader", tenant="acme", since=week)
    assert [(r.method, r.permission, r.record_type) for r in touched] == [
        ("list_leads", "read_leads", "lead"),
        ("get_lead", "read_leads", "lead"),
    ]
    listed, got = touched
    assert got.record_ids == (lead.id,)
    assert got.count == 1
    assert set(listed.record_ids) == {lead.id, older.id}
    assert listed.count == 2
    assert all(before <= r.at <= after for r in touched)
    assert all(r.plugin_id == "reader" and r.tenant == "acme" for r in touched)
    # "Did anything read lead X?"
    assert {r.method for r in host.registry.access_log(record_id=lead.id)} == {
        "get_lead",
        "list_leads",
    }
    assert host.registry.access_log(record_id=older.id, method="get_lead") == []
    assert host.registry.access_log(plugin_id="reader", tenant="globex", since=week) == []
    assert host.registry.access_log(plugin_id="reader", until=before) == []


def test_refused_calls_are_denied_reports_not_access_records(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    denied: list[DeniedCall],
) -> None:
    """A call the plugin holds no permission for reaches ``on_denied`` only: the two together
    answer "what did it touch, and what did it try"."""
    host = make_host()
    install(
        host,
        "snoop",
        """
        @hookimpl
        def lead_created(self, lead, api):
            api.get_lead(lead.id)
            try:
                api.get_invoice("invoice-1")
            except Exception:
                pass
        """,
    )
    lead = fire(host, services)
    records = host.access(plugin_id="snoop")
    assert [(r.method, r.record_ids) for r in records] == [("get_lead", (lead.id,))]
    assert [(d.plugin_id, d.method, d.permission) for d in denied] == [
        ("snoop", "get_invoice", "read_invoices")
    ]


def test_calls_are_batched_one_storage_write_per_flush(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    storage = CountingStorage()
    host = make_host(storage=storage)
    install(
        host,
        "reader",
        """
        @hookimpl
        def lead_created(self, lead, api):
            for _ in range(50):
                api.get_lead(lead.id)
        """,
    )
    fire(host, services)
    fire(host, services)
    assert storage.batches == []
    host.flush()
    assert storage.batches == [100]
    host.flush()  # nothing waiting: no write
    assert storage.batches == [100]
    assert len(host.registry.access_log(plugin_id="reader")) == 100


def test_a_flood_cannot_evict_earlier_records_unseen(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hostile plugin floods calls to push its first read out of the bounded buffer: the
    buffer holds, the drop is counted and logged at the flush."""
    host = make_host(access=AccessPolicy(buffer=10))
    install(
        host,
        "flooder",
        """
        @hookimpl
        def lead_created(self, lead, api):
            api.get_lead(lead.id)
            for _ in range(100):
                api.list_leads(limit=1)
        """,
    )
    lead = fire(host, services)
    assert host.access_log is not None
    assert len(host.access_log) == 10
    assert host.access_log.dropped == 91
    with caplog.at_level(logging.WARNING, logger="services_ai_plugins.host"):
        host.flush()
    assert any("91 data-access records were dropped" in m for m in caplog.messages)
    records = host.registry.access_log(plugin_id="flooder")
    assert len(records) == 10
    assert {r.method for r in records} == {"list_leads"}
    assert host.registry.access_log(record_id=lead.id, method="get_lead") == []
    assert host.access_log.dropped == 91  # still visible after the flush


def test_no_access_log_when_the_policy_says_so(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    storage = CountingStorage()
    host = cast(
        "PluginHost",
        hosts(
            storage=storage,
            access=AccessPolicy(enabled=False),
            sandbox=SandboxPolicy(trusted={"reader"}),
        ),
    )
    install(host, "reader", READER)
    fire(host, services)
    host.flush()
    assert host.access_log is None
    assert storage.batches == []
    assert host.registry.access_log() == []


def test_records_past_retention_are_pruned_at_a_flush_at_most_once_per_interval(
    hosts: Hosts, install: Installer, services: FakeHostServices, tmp_path: Path
) -> None:
    storage = SQLiteStorage(tmp_path / "registry.db")
    now = datetime.now(timezone.utc)

    def record(days_ago: int, method: str) -> AccessRecord:
        return AccessRecord(
            plugin_id="reader",
            tenant="acme",
            method=method,
            permission="read_leads",
            record_type="lead",
            record_ids=["lead-1"],
            count=1,
            at=now - timedelta(days=days_ago),
        )

    storage.record_access([record(100, "old"), record(5, "recent")])
    host = cast(
        "PluginHost",
        hosts(
            storage=storage,
            access=AccessPolicy(retention=timedelta(days=30)),
            sandbox=SandboxPolicy(trusted={"reader"}),
            flush_interval=3600,
        ),
    )
    install(host, "reader", READER)
    fire(host, services)
    host.flush()
    methods = [r.method for r in host.registry.access_log(plugin_id="reader")]
    assert sorted(methods) == ["get_lead", "list_leads", "recent"]
    # Another old record: the next flush within the interval leaves it.
    storage.record_access([record(60, "old-again")])
    host.flush()
    assert "old-again" in {r.method for r in host.registry.access_log()}
    assert host.prune_access() == 1
    assert "old-again" not in {r.method for r in host.registry.access_log()}
