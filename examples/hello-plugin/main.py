"""Hello Plugin: greets every new lead and tells the team about it."""

from __future__ import annotations

from typing import Any

from services_ai_plugins import hookimpl


class HelloPlugin:
    """Announces new leads worth at least ``min_value``."""

    @hookimpl
    def lead_created(self, lead: Any, context: Any, api: Any) -> None:
        """Send one notification per new lead that is worth announcing."""
        value = lead.value if lead.value is not None else 0  # a lead of unknown worth: 0
        if value < api.get_setting("min_value"):
            return
        greeting = api.get_setting("greeting")
        api.send_notification(f"{greeting}, {lead.name}!", channel=api.get_setting("channel"))
