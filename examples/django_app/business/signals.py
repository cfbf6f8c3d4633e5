"""The CRM's events, fired to plugins once the row they tell of is committed."""

from __future__ import annotations

from services_ai_plugins.django.services import connect_hook

from .models import Booking, Invoice, Lead
from .plugins import CrmServices

_records = CrmServices()

# A lead saved for the first time fires lead_created for its business, after the commit.
connect_hook(
    Lead,
    "lead_created",
    created=True,
    payload=lambda lead: {"lead": _records.to_lead(lead)},
    tenant=lambda lead: lead.business.slug,
)
connect_hook(
    Booking,
    "booking_created",
    created=True,
    payload=lambda booking: {"booking": _records.to_booking(booking)},
    tenant=lambda booking: booking.business.slug,
)
connect_hook(
    Invoice,
    "invoice_created",
    created=True,
    payload=lambda invoice: {"invoice": _records.to_invoice(invoice)},
    tenant=lambda invoice: invoice.business.slug,
)
