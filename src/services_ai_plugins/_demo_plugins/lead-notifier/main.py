"""Lead Notifier: a notification for the team on each new lead and each confirmed booking.

It shows a plugin's two inputs: the event's payload, and the plugin's own
``settings`` for the tenant (``greeting`` and ``min_value``, which each tenant
sets on its own). It also keeps a count in its own key-value store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services_ai_plugins import PluginAPI, hookimpl
from services_ai_plugins.events import Booking, Lead


class LeadNotifier:
    """Notifies the tenant's staff through ``api.send_notification``."""

    @hookimpl
    def lead_created(self, lead: Lead, api: PluginAPI, settings: Mapping[str, Any]) -> None:
        """Announce a lead worth at least ``min_value``, and count the leads seen."""
        seen = api.store_get("leads_seen", 0)
        api.store_set("leads_seen", (seen if isinstance(seen, int) else 0) + 1)
        if lead.value is not None and lead.value < settings["min_value"]:
            return
        company = f" ({lead.company})" if lead.company else ""
        worth = f", worth {lead.value}" if lead.value is not None else ""
        api.send_notification(
            f"{settings['greeting']}: {lead.name}{company}{worth}", level="success"
        )

    @hookimpl
    def booking_confirmed(self, booking: Booking, api: PluginAPI) -> None:
        """Tell the team who comes, for what, and when."""
        when = booking.starts_at.strftime("%d %b %H:%M")
        api.send_notification(
            f"Booking confirmed: {booking.customer_name}, {booking.service}, {when}"
        )
