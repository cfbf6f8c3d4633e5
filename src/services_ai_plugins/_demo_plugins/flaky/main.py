"""Flaky CRM Sync: raises on every new lead, on purpose.

The host records each failure as this plugin's own (the other plugins still
run), and its circuit breaker suspends the plugin for the tenant after five
failures in a row.
"""

from __future__ import annotations

from services_ai_plugins import hookimpl
from services_ai_plugins.events import Lead


class FlakyCrmSync:
    """A CRM sync whose CRM never answers."""

    @hookimpl
    def lead_created(self, lead: Lead) -> None:
        """Try to push the lead, and fail."""
        raise ConnectionError(f"crm.example did not answer for {lead.id}")
