"""Hello Plugin: greets every new lead and tells the team about it."""

from __future__ import annotations

from typing import Any

from services_ai_plugins import hookimpl


class HelloPlugin:
    """Announces new leads worth at least ``min_value``."""

    @hookimpl
    def lead_created(self, lead: Any, context: Any, api: Any) -> None:
        """Send one notification per new lead that is worth announcing."""
        if getattr(lead, "value", 0) < api.get_setting("min_value"):
            return
        greeting = api.get_setting("greeting")
        api.send_notification(f"{greeting}, {lead.name}!", channel=api.get_setting("channel"))
