"""A host's own extras for the reference tests: a hook, an API method and a permission.

``HOST_EXTRAS`` is the source of a module a host would write; :func:`write_extras` puts
it in a folder under a fresh module name (so that each test imports its own copy).
"""

from __future__ import annotations

import itertools
from pathlib import Path

HOST_EXTRAS = '''
"""A host's own hooks, API and permissions."""

from __future__ import annotations

from collections.abc import Mapping

from services_ai_plugins import PluginAPI, requires
from services_ai_plugins.events import Context, Lead
from services_ai_plugins.hookspecs import HookKind, spec
from services_ai_plugins.types import Permission, Risk

TICKETS = Permission("read_tickets", "Read the tenant's support tickets.", Risk.MEDIUM)
MORE = [Permission("close_tickets", "Close the tenant's support tickets.", Risk.HIGH)]


class HostHooks:
    @spec(HookKind.COLLECT, permissions=("read_tickets",))
    def crm_ticket_opened(
        self, lead: Lead, context: Context, api: PluginAPI, settings: Mapping) -> str:
        """A support ticket was opened for a lead.

        Returns: a label for the ticket, or None.
        """


class TicketAPI(PluginAPI):
    @requires("read_tickets")
    def list_tickets(self, *, limit: int = 10) -> list[str]:
        """The tenant's open tickets, at most ``limit``."""
        return []

    @requires("close_tickets")
    async def close_ticket(self, ticket_id: str) -> None:
        """Close a ticket."""


class NoTicketsAPI(PluginAPI):
    @requires("read_tickets")
    def list_tickets(self) -> list[str]:
        """The tenant's open tickets."""
        return []


NOT_SPECS = 42
'''

_counter = itertools.count()


def write_extras(folder: Path) -> str:
    """Write :data:`HOST_EXTRAS` into ``folder`` as a module of a new name; its name."""
    name = f"host_extras_{next(_counter)}_{abs(hash(str(folder)))}"
    (folder / f"{name}.py").write_text(HOST_EXTRAS, encoding="utf-8")
    return name
