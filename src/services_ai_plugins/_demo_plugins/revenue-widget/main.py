"""Revenue Widget: keeps a running total of paid invoices and shows it on the dashboard.

It shows the plugin's own key-value store (one per tenant: a tenant's total
never mixes with another's) and a ``COLLECT`` hook that returns a record.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from services_ai_plugins import PluginAPI, hookimpl
from services_ai_plugins.events import Context, Invoice, Widget


class RevenueWidget:
    """Totals per currency in the store under ``revenue``; a widget that shows them."""

    @hookimpl
    def invoice_paid(self, invoice: Invoice, api: PluginAPI) -> None:
        """Add the invoice's total to the tenant's running total in its currency."""
        totals = _totals(api)
        totals[invoice.currency] = str(Decimal(totals.get(invoice.currency, "0")) + invoice.total)
        api.store_set("revenue", dict(totals))

    @hookimpl
    def dashboard_widget(
        self, context: Context, api: PluginAPI, settings: Mapping[str, Any]
    ) -> Widget:
        """A small box with the totals so far."""
        totals = _totals(api)
        shown = ", ".join(f"{amount} {currency}" for currency, amount in sorted(totals.items()))
        return Widget(
            tenant=context.tenant,
            title=settings["title"],
            html=f"<p><strong>{shown or 'nothing yet'}</strong></p>",
            size="small",
            plugin_id=api.plugin_id,
        )


def _totals(api: PluginAPI) -> dict[str, str]:
    """The tenant's totals so far: currency code to amount, as text."""
    kept = api.store_get("revenue", {})
    return {str(k): str(v) for k, v in kept.items()} if isinstance(kept, dict) else {}
