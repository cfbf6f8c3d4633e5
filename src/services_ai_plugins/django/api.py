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

A view of the original system closes over the ``api`` its ``register_routes`` got, which
is bound to no tenant. While the Django adapter serves that plugin's native view, that api
acts as the plugin's api for the request's tenant (the request's grants and settings; the
request also carries it as ``request.plugin_api``). Anywhere else it stays bound to no
tenant, and a call that needs one is refused.
"""

from __future__ import annotations

from typing import Any

from .._api import PluginAPI, requires
from .._dispatch import native_values
from ..events import Booking, Invoice, Lead

__all__ = ["DjangoPluginAPI"]


class DjangoPluginAPI(PluginAPI):
    """:class:`~services_ai_plugins.PluginAPI` with the original system's method names."""

    __slots__ = ()

    def __getattribute__(self, name: str) -> Any:
        get = object.__getattribute__
        if name[:1] != "_" and _unbound(self):  # register_routes' api
            here = native_values()
            if here is not None and here["plugin_id"] == get(self, "_plugin_id"):
                api = here["api"]
                if api is not None and api is not self:
                    return getattr(api, name)
        return get(self, name)

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


def _unbound(api: PluginAPI) -> bool:
    try:
        return object.__getattribute__(api, "_tenant") is None
    except AttributeError:  # still being built
        return False
