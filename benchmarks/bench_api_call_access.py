"""Question "api_call_access": one API call with the data-access log on.

SDK: ``PluginAPI.get_lead(lead_id)`` as in ``bench_api_call.py`` (the permission
check against the grant snapshot, the tenant passed by the API, the returned
record's tenant checked), with the host's data-access log on: each granted call
adds an entry (plugin, tenant, method, permission, the record's kind and id, the
time) to the in-memory buffer a :class:`~services_ai_plugins.PluginHost` flushes
to storage in batches. The buffer has the default capacity (10,000): past it,
each call also drops the oldest entry and counts it, which is what a call pays
between two flushes in the worst case; the flush itself (one storage batch every
``flush_interval``) is off the call path and not timed. Baseline: calling the
same ``HostServices.get_lead(tenant, lead_id)`` directly, as in ``api_call``.
Target: at most 1.5x.
"""

from __future__ import annotations

from typing import Any

from _harness import Contender, compare
from services_ai_plugins import AccessPolicy, PluginAPI
from services_ai_plugins.types import AccessLog, ApiMeter
from services_ai_plugins_testing.fakes import FakeHostServices


class QuietServices(FakeHostServices):
    """The fake without its call log, which would grow for every timed call."""

    def _record(self, method: str, tenant: str, *args: Any) -> None:
        return None


def main() -> None:
    services = QuietServices()
    lead = services.add_lead("acme", name="Ada Lovelace")
    log = AccessLog(AccessPolicy().buffer)
    api = PluginAPI(
        "crm-sync",
        services,
        tenant="acme",
        grants=frozenset({"read_leads", "send_email"}),
        meter=ApiMeter(access=log),
    )
    assert api.get_lead(lead.id) == services.get_lead("acme", lead.id) == lead
    records, _ = log.take()
    assert [(r.method, r.record_ids) for r in records] == [("get_lead", (lead.id,))]
    lead_id = lead.id
    compare(
        "api_call_access",
        sdk=Contender(
            "PluginAPI.get_lead+access_log",
            "permission check, own tenant, returned tenant checked, access entry buffered",
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
