"""api.context: the running call's context, from a ContextVar set once per tenant-scoped call.

Every plugin here is a real archive installed through the real host; each test
runs in the host's process and in a sandbox worker, where the same promises hold.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import PluginHost, SandboxPolicy
from services_ai_plugins._context import CURRENT_CONTEXT, context_for
from services_ai_plugins.events import Context, User
from services_ai_plugins.storage import SourceKind
from services_ai_plugins.types import Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

HEADER = (
    "import asyncio, contextvars, threading\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import Context, User\n\n\n"
    "class Plugin:\n"
)

WHERE = {
    "inprocess": SandboxPolicy(
        isolation=dict.fromkeys(SourceKind, Isolation.INPROCESS), timeout=30.0
    ),
    "process": SandboxPolicy(timeout=30.0),
}


@pytest.fixture(params=sorted(WHERE))
def where(request: pytest.FixtureRequest) -> str:
    if request.param == "process" and not hasattr(os, "fork"):
        pytest.skip("the process sandbox needs fork")
    return str(request.param)


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


def host_for(hosts: Hosts, where: str) -> PluginHost:
    host: PluginHost = hosts(sandbox=WHERE[where])
    return host


ACME = Context(
    tenant="acme",
    user=User(id="u-1", tenant="acme", name="Ada", email="ada@acme.test"),
    request_id="req-1",
)

#: Reads api.context in the call, in a thread started with copy_context().run, and in an
#: asyncio task the plugin starts; stores what it saw (from the hook's own thread).
WATCHER = """
@hookimpl
def lead_created(self, lead, api):
    def describe():
        found = api.context
        return None if found is None else [found.tenant, found.request_id, found.user.id]

    seen = {"call": describe()}
    box = {}
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(lambda: box.update(thread=describe()),)
    )
    thread.start()
    thread.join()
    seen["thread"] = box["thread"]

    async def task():
        await asyncio.sleep(0)
        return describe()

    async def main():
        return await asyncio.create_task(task())

    try:
        seen["task"] = asyncio.run(main())
    except PermissionError:  # a sandbox worker may not open the loop's socket pair: a bare loop
        class Idle:
            def select(self, timeout=None):
                return []

        class Loop(asyncio.BaseEventLoop):
            def __init__(self):
                super().__init__()
                self._selector = Idle()

            def _process_events(self, event_list):
                pass

            def _write_to_self(self):
                pass

        loop = Loop()
        try:
            seen["task"] = loop.run_until_complete(main())
        finally:
            loop.close()
    self.api = api
    api.store_set("seen", seen)
"""


def test_api_context_reaches_threads_and_asyncio_tasks_the_plugin_starts(
    hosts: Hosts, install: Installer, services: FakeHostServices, where: str
) -> None:
    """The call's context is api.context in the call, in a copied-context thread and in a task."""
    host = host_for(hosts, where)
    install(host, "watcher", WATCHER)
    host.hook.lead_created(lead=services.make_lead("acme"), context=ACME)
    expected = ["acme", "req-1", "u-1"]
    assert host.failures("watcher") == []
    seen = services.stored("acme", "watcher")["seen"]
    assert seen == {"call": expected, "thread": expected, "task": expected}


def test_api_context_is_none_after_the_call_and_each_call_sees_its_own(
    hosts: Hosts, install: Installer, services: FakeHostServices, where: str
) -> None:
    """Two calls of two contexts: each sees its own; nothing of a call is left once it returned."""
    host = host_for(hosts, where)
    install(host, "watcher", WATCHER, tenants=["acme", "globex"])
    host.hook.lead_created(lead=services.make_lead("acme"), context=ACME)
    globex = Context(
        tenant="globex",
        user=User(id="u-9", tenant="globex", name="Bo", email="bo@globex.test"),
        request_id="r9",
    )
    host.hook.lead_created(lead=services.make_lead("globex"), context=globex)
    assert services.stored("acme", "watcher")["seen"]["call"] == ["acme", "req-1", "u-1"]
    assert services.stored("globex", "watcher")["seen"]["thread"] == ["globex", "r9", "u-9"]
    assert CURRENT_CONTEXT.get() is None
    if where == "inprocess":
        assert host.plugins()["watcher"].api.context is None  # type: ignore[attr-defined]


#: Finds the private variable and sets it to another tenant's context (never resetting it),
#: then uses its api as if it acted for that tenant.
FORGER = """
@hookimpl
def lead_created(self, lead, api):
    from services_ai_plugins._context import CURRENT_CONTEXT

    root = User(id="root", tenant="globex", name="Root", email="r@globex.test")
    CURRENT_CONTEXT.set(Context(tenant="globex", user=root))
    found = api.context
    api.store_set("loot", [item.tenant for item in api.list_leads()])
    api.store_set("forged", [api.tenant, None if found is None else found.tenant])
"""

#: Called after the forger in the same hook call: what does it see?
WITNESS = """
@hookimpl
def lead_created(self, lead, api, context):
    found = api.context
    api.store_set("saw", [api.tenant, context.tenant, None if found is None else found.tenant])
"""


def test_a_plugin_forging_the_context_variable_gains_nothing(
    hosts: Hosts, install: Installer, services: FakeHostServices, where: str
) -> None:
    """Setting the ContextVar to globex's context: the api still acts for acme only.

    Its store writes and reads stay acme's, globex's data is never listed, its
    api.context is never globex's, and the plugin called after it in the same
    call (and the next call) never sees globex's context either.
    """
    host = host_for(hosts, where)
    services.make_lead("acme", name="Ada")
    services.make_lead("globex", name="Secret")
    install(host, "aaa-forger", FORGER)
    install(host, "zzz-witness", WITNESS)
    trace = host.trace_hook("lead_created", lead=services.make_lead("acme"), context=ACME)
    assert trace.ran == ("aaa-forger", "zzz-witness")
    trace.assert_ok()
    acme = services.stored("acme", "aaa-forger")
    assert acme["forged"] == ["acme", None]
    assert set(acme["loot"]) == {"acme"}  # type: ignore[arg-type]
    assert services.stored("globex", "aaa-forger") == {}
    saw = services.stored("acme", "zzz-witness")["saw"]
    assert saw[:2] == ["acme", "acme"]  # type: ignore[index]
    # In a worker the forged value never leaves the forger's process; in the host's
    # process (no boundary, see docs/sandbox.md) it can at most hide acme's context.
    assert saw[2] == "acme" if where == "process" else saw[2] in ("acme", None)  # type: ignore[index]
    assert CURRENT_CONTEXT.get() is None  # the call restored the variable when it returned
    again = host.trace_hook("lead_created", lead=services.make_lead("acme"), context=ACME)
    again.assert_ok()
    assert services.stored("globex", "zzz-witness") == {}


def test_context_for_refuses_another_tenant_and_a_forged_object() -> None:
    """context_for hands out the variable's value only as a Context of the asking tenant."""
    token = CURRENT_CONTEXT.set(ACME)
    try:
        assert context_for("acme") is ACME
        assert context_for("globex") is None
        assert context_for(None) is None
    finally:
        CURRENT_CONTEXT.reset(token)

    class Sly:
        tenant = "acme"

    token = CURRENT_CONTEXT.set(Sly())  # type: ignore[arg-type]
    try:
        assert context_for("acme") is None
    finally:
        CURRENT_CONTEXT.reset(token)
