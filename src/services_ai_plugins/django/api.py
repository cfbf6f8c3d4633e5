"""The plugin API under Django: the SDK's methods, and the original system's names for them.

The in-house system this SDK replaces called some methods differently. Its plugins keep
working unchanged, since :class:`DjangoPluginAPI` (the Django host's ``api_class``) answers
to both names; each alias needs the same permission as the method it stands for.

=====================  ==========================================
Original name          SDK method
=====================  ==========================================
``get_leads()``        :meth:`~services_ai_plugins.PluginAPI.list_leads`
``get_bookings()``     :meth:`~services_ai_plugins.PluginAPI.list_bookings`
``get_invoices()``     :meth:`~services_ai_plugins.PluginAPI.list_invoices`
=====================  ==========================================
"""

from __future__ import annotations

from .._api import PluginAPI, requires
from ..events import Booking, Invoice, Lead

__all__ = ["DjangoPluginAPI"]


class DjangoPluginAPI(PluginAPI):
    """:class:`~services_ai_plugins.PluginAPI` with the original system's method names."""

    @requires("read_leads")
    def get_leads(self, *, limit: int = 100) -> list[Lead]:
        """The original system's name of :meth:`list_leads`."""
        return PluginAPI.list_leads.__wrapped__(self, limit=limit)  # type: ignore[attr-defined,no-any-return]

    @requires("read_bookings")
    def get_bookings(self, *, limit: int = 100) -> list[Booking]:
        """The original system's name of :meth:`list_bookings`."""
        return PluginAPI.list_bookings.__wrapped__(self, limit=limit)  # type: ignore[attr-defined,no-any-return]

    @requires("read_invoices")
    def get_invoices(self, *, limit: int = 100) -> list[Invoice]:
        """The original system's name of :meth:`list_invoices`."""
        return PluginAPI.list_invoices.__wrapped__(self, limit=limit)  # type: ignore[attr-defined,no-any-return]
