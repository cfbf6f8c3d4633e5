"""host.request_context / host.current_context: the request's context for code deep in an app.

Every plugin here is a real archive installed through the real host (the tests'
``Installer``); the hostile one runs in a sandbox worker, as uploads do.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from pathlib import Path

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import PluginHost, SandboxPolicy
from services_ai_plugins._context import current_request_context
from services_ai_plugins.events import Context
from services_ai_plugins.storage import SourceKind
from services_ai_plugins.types import Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

HEADER = (
    "import contextvars\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import Context\n\n\n"
    "class Plugin:\n"
)

IN_PROCESS = SandboxPolicy(isolation=dict.fromkeys(SourceKind, Isolation.INPROCESS), timeout=30.0)

ACME = Context(tenant="acme", request_id="req-acme")
GLOBEX = Context(tenant="globex", request_id="req-globex")

RECORDING = """
@hookimpl
def lead_created(self, lead, context, api):
    api.store_set("seen-" + lead.id, [context.tenant, context.request_id, api.tenant])
"""


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def host(hosts: Hosts) -> PluginHost:
    made: PluginHost = hosts(sandbox=IN_PROCESS)
    return made


def test_inside_the_block_the_context_is_the_requests_and_outside_none(host: PluginHost) -> None:
    """current_context() is the block's context inside, None before and after; the module
    function the call loop uses agrees."""
    assert host.current_context() is None
    with host.request_context(ACME) as scope:
        assert host.current_context() is ACME
        assert current_request_context() is ACME
        assert scope.context is ACME
    assert host.current_context() is None
    assert current_request_context() is None


def test_blocks_nest_and_each_exit_restores_the_one_around_it(host: PluginHost) -> None:
    with host.request_context(ACME):
        with host.request_context(GLOBEX):
            assert host.current_context() is GLOBEX
        assert host.current_context() is ACME
        with pytest.raises(ZeroDivisionError), host.request_context(GLOBEX):
            1 / 0  # noqa: B018 - an exception leaving the inner block restores the outer one too
        assert host.current_context() is ACME
    assert host.current_context() is None


def test_threads_started_with_a_copied_context_see_it(host: PluginHost) -> None:
    """A helper thread started with copy_context().run sees the request's context."""
    seen: list[Context | None] = []
    with host.request_context(ACME):
        thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(lambda: seen.append(host.current_context()),),
        )
        thread.start()
        thread.join(timeout=60)
    assert seen == [ACME]


def test_async_with_gives_each_task_its_own_request(host: PluginHost) -> None:
    """Two requests served at once by two asyncio tasks never see each other's context;
    tasks a request starts see its own."""

    async def serve(
        context: Context, other_started: asyncio.Event, started: asyncio.Event
    ) -> list[Context | None]:
        async with host.request_context(context):
            started.set()
            await other_started.wait()  # both requests are inside their blocks now
            child = await asyncio.create_task(_current(host))
            return [host.current_context(), child]

    async def main() -> tuple[list[Context | None], list[Context | None]]:
        acme_in, globex_in = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(
            serve(ACME, globex_in, acme_in), serve(GLOBEX, acme_in, globex_in)
        )

    acme, globex = asyncio.run(main())
    assert acme == [ACME, ACME]
    assert globex == [GLOBEX, GLOBEX]
    assert host.current_context() is None


async def _current(host: PluginHost) -> Context | None:
    await asyncio.sleep(0)
    return host.current_context()


def test_a_hook_fired_deep_in_the_app_reaches_the_requests_tenant(
    host: PluginHost, install: Installer, services: FakeHostServices
) -> None:
    """A model signal with no context of its own fires for the request's tenant only."""
    install(host, "for-acme", RECORDING, tenants=["acme"])
    install(host, "for-globex", RECORDING, tenants=["globex"])

    def on_lead_saved(lead_id: str) -> None:  # deep in the app: knows no tenant
        context = host.current_context()
        assert context is not None
        host.hook.lead_created(lead=services.make_lead(context.tenant, id=lead_id), context=context)

    with host.request_context(ACME):
        on_lead_saved("lead-1")
    with host.request_context(GLOBEX):
        on_lead_saved("lead-2")
    assert services.stored("acme", "for-acme") == {"seen-lead-1": ["acme", "req-acme", "acme"]}
    assert services.stored("globex", "for-globex") == {
        "seen-lead-2": ["globex", "req-globex", "globex"]
    }


def test_a_non_context_is_refused_naming_its_type(host: PluginHost) -> None:
    for wrong in ("acme", {"tenant": "acme"}, None):
        with pytest.raises(TypeError, match=type(wrong).__qualname__):
            host.request_context(wrong)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'exit' or 'manual'"):
        host.request_context(ACME, defer="later")  # type: ignore[arg-type]


def test_a_scope_is_entered_once(host: PluginHost) -> None:
    scope = host.request_context(ACME)
    with scope:
        pass
    with pytest.raises(RuntimeError, match="entered once"), scope:
        pass


HOSTILE = """
@hookimpl
def lead_created(self, lead, context, api):
    from services_ai_plugins import _context
    _context.REQUEST_SCOPE.set(_context.RequestScope(Context(tenant="globex")))
    _context.CURRENT_CONTEXT.set(Context(tenant="globex"))
    api.store_set("tried", True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")
def test_a_sandboxed_plugin_cannot_change_the_requests_context(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """An uploaded plugin setting the request variables in its worker changes nothing in the
    host: the rest of the request still fires for its own tenant."""
    host: PluginHost = hosts(sandbox=SandboxPolicy(timeout=30.0))
    install(host, "hostile", HOSTILE, tenants=["acme"])
    with host.request_context(ACME):
        host.hook.lead_created(lead=services.make_lead("acme"), context=ACME)
        assert host.current_context() is ACME
    assert services.stored("acme", "hostile") == {"tried": True}
    assert host.current_context() is None
