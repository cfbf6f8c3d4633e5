"""The data-access log (issue 22): granted API calls on tenant data, recorded through a real host.

Every plugin here is a real folder packed into a real archive, installed,
approved and enabled; sandboxed ones run in real worker processes, and their
API calls are run (and recorded) host-side.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import AccessPolicy, MemoryStorage, PluginHost, SandboxPolicy
from services_ai_plugins._api import DeniedCall
from services_ai_plugins._storage._protocol import MAX_ACCESS_IDS
from services_ai_plugins.errors import StorageError
from services_ai_plugins.events import Context, Lead
from services_ai_plugins.storage import AccessQuery, AccessRecord, SQLiteStorage
from services_ai_plugins.types import AccessLog
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
    records = host.access_log(plugin_id="snoop")
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
    assert host.access_buffer is not None
    assert len(host.access_buffer) == 10
    assert host.access_buffer.dropped == 91
    with caplog.at_level(logging.WARNING, logger="services_ai_plugins.host"):
        host.flush()
    assert any("91 data-access records were dropped" in m for m in caplog.messages)
    records = host.registry.access_log(plugin_id="flooder")
    assert len(records) == 10
    assert {r.method for r in records} == {"list_leads"}
    assert host.registry.access_log(record_id=lead.id, method="get_lead") == []
    assert host.access_buffer.dropped == 91  # still visible after the flush


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
    assert host.access_buffer is None
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


def test_a_list_call_keeps_its_first_ids_and_how_many_it_returned(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host()
    install(
        host,
        "reader",
        """
        @hookimpl
        def lead_created(self, lead, api):
            api.list_leads(limit=500)
        """,
    )
    made = [services.make_lead("acme", name=f"L{n}") for n in range(29)]
    lead = fire(host, services)
    [record] = host.access_log(plugin_id="reader")
    listed = [lead.id, *(m.id for m in reversed(made))]  # the fake lists the newest first
    assert record.count == 30
    assert record.record_ids == tuple(listed[:MAX_ACCESS_IDS])
    assert host.registry.access_log(record_id=listed[MAX_ACCESS_IDS]) == []


class FlakyStorage(MemoryStorage):
    """Refuses the first access batch, as a database that is briefly away."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    def record_access(self, records: Sequence[AccessRecord]) -> None:
        if not self.refused:
            self.refused = len(records)
            raise StorageError("the database is away")
        super().record_access(records)


def test_a_refused_batch_waits_for_the_next_flush(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    storage = FlakyStorage()
    host = cast(
        "PluginHost",
        hosts(storage=storage, sandbox=SandboxPolicy(trusted={"reader"}), flush_interval=3600),
    )
    install(host, "reader", READER)
    fire(host, services)
    host.flush()
    assert storage.refused == 2
    assert host.registry.access_log() == []
    fire(host, services)
    host.flush()
    assert [r.method for r in host.registry.access_log()] == ["list_leads", "get_lead"] * 2


class NoAccessStorage:
    """A storage written before the access log: every Storage method, none of AccessStorage's."""

    def __init__(self) -> None:
        self._inner = MemoryStorage()

    def __getattr__(self, name: str) -> Any:
        if name in {"record_access", "access_log", "prune_access"}:
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_a_storage_without_an_access_log_runs_without_one(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    host = cast(
        "PluginHost",
        hosts(storage=NoAccessStorage(), sandbox=SandboxPolicy(trusted={"reader"})),
    )
    install(host, "reader", READER)
    fire(host, services)
    host.flush()
    assert host.access_buffer is None
    with pytest.raises(StorageError, match="NoAccessStorage keeps no data-access log"):
        host.registry.access_log()


@pytest.mark.parametrize(
    ("field", "value"),
    [("buffer", 0), ("buffer", True), ("retention", timedelta(0)), ("prune_interval", 5)],
)
def test_a_bad_policy_names_its_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"AccessPolicy.{field} must be"):
        AccessPolicy(**{field: value})


def test_a_sqlite_database_of_the_previous_schema_gets_the_access_log(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    SQLiteStorage(path).close()
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DROP TABLE access_log")
        conn.execute("DELETE FROM schema_migrations WHERE version = 6")
    storage = SQLiteStorage(path)
    try:
        record = AccessRecord(
            plugin_id="p",
            tenant="acme",
            method="get_lead",
            permission="read_leads",
            at=datetime.now(timezone.utc),
        )
        storage.record_access([record])
        assert [r.method for r in storage.access_log(AccessQuery())] == ["get_lead"]
    finally:
        storage.close()


def test_the_buffer_counts_every_drop_under_concurrent_calls(services: FakeHostServices) -> None:
    """Threads adding at once: the buffer keeps its bound and every entry is either kept or
    counted as dropped."""
    log = AccessLog(500)
    lead = services.make_lead("acme")

    def add() -> None:
        for _ in range(1000):
            log.add("p", "acme", "get_lead", "read_leads", lead)

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    records, dropped = log.take()
    assert len(records) == 500
    assert dropped == log.dropped == 7500
    assert {r.record_ids for r in records} == {(lead.id,)}
    assert log.take() == ([], 0)


class Odd:
    """A host's own record whose id cannot be read."""

    @property
    def id(self) -> str:
        raise RuntimeError("no id today")


def test_a_record_whose_id_cannot_be_read_still_leaves_its_call_in_the_log() -> None:
    log = AccessLog(10)
    log.add("p", "acme", "get_odd", "read_odd", Odd())
    log.add("p", "acme", "get_lead", "read_leads", None)
    records, _ = log.take()
    assert [(r.method, r.record_type, r.record_ids, r.count) for r in records] == [
        ("get_odd", "odd", (), 1),
        ("get_lead", None, (), 0),
    ]
