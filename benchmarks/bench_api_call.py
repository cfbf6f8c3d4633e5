"""Question "api_call": what the permission layer costs on one API call.

SDK: ``PluginAPI.get_lead(lead_id)`` — the permission check against the grant
snapshot (a frozenset), the tenant passed by the API, the returned record's
tenant checked. Baseline: calling the same ``HostServices.get_lead(tenant,
lead_id)`` directly. The services are the testing package's in-memory fake
(records built per call, as an adapter over an ORM does), with call recording
off. Target: at most 1.3x. (The original system ran a database query per
check instead: a primary-key SELECT in SQLite WAL alone costs about 200 Python
calls.)
"""

from __future__ import annotations

from typing import Any

from _harness import Contender, compare
from services_ai_plugins import PluginAPI
from services_ai_plugins_testing.fakes import FakeHostServices


class QuietServices(FakeHostServices):
    """The fake without its call log, which would grow for every timed call."""

    def _record(self, method: str, tenant: str, *args: Any) -> None:
        return None


def main() -> None:
    services = QuietServices()
    lead = services.add_lead("acme", name="Ada Lovelace")
    api = PluginAPI(
        "crm-sync", services, tenant="acme", grants=frozenset({"read_leads", "send_email"})
    )
    assert api.get_lead(lead.id) == services.get_lead("acme", lead.id) == lead
    lead_id = lead.id
    compare(
        "api_call",
        sdk=Contender(
            "PluginAPI.get_lead",
            "permission check, own tenant, returned tenant checked",
            lambda: api.get_lead(lead_id),
        ),
        baseline=Contender(
            "HostServices.get_lead",
            "the same host service called directly",
            lambda: services.get_lead("acme", lead_id),
        ),
    )


if __name__ == "__main__":
    main()
