"""How the CRM meets the plugin SDK: its tenant rule and its data, through the ORM."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import HttpRequest

from services_ai_plugins.django.services import ModelServices
from services_ai_plugins.events import Booking as BookingRecord
from services_ai_plugins.events import Invoice as InvoiceRecord
from services_ai_plugins.events import InvoiceLine, User
from services_ai_plugins.events import Lead as LeadRecord
from services_ai_plugins.events import Notification as NotificationRecord

from .models import Booking, Business, Invoice, Lead, Member, Notification


def tenant_of(request: HttpRequest) -> tuple[str, User | None] | None:
    """The business whose sub-domain the request is for (``acme.localhost``), and its member."""
    label = request.get_host().split(":", 1)[0].split(".", 1)[0]
    if not Business.objects.filter(slug=label).exists():
        return None  # the bare domain: the staff admin, not a business
    user = None
    if request.user.is_authenticated:
        member = Member.objects.filter(user=request.user, business__slug=label).first()
        if member is not None:
            account = member.user
            user = User(
                id=str(account.pk),
                tenant=label,
                email=account.email or f"{account.get_username()}@{label}.example",
                name=account.get_full_name() or account.get_username(),
                roles=(member.role,),
            )
    return label, user


class CrmServices(ModelServices):
    """The CRM's data as plugins see it: each queryset is one business's rows."""

    lead_fields = ("name", "email", "company", "status", "value")
    booking_fields = ("status", "notes", "starts_at", "ends_at")

    def leads(self, tenant: str) -> QuerySet[Lead]:
        return Lead.objects.filter(business__slug=tenant)

    def to_lead(self, lead: Lead) -> LeadRecord:
        return LeadRecord(
            id=str(lead.pk),
            tenant=lead.business.slug,
            name=lead.name,
            email=lead.email or None,
            company=lead.company or None,
            status=lead.status,
            value=lead.value,
            created_at=lead.created_at,
        )

    def bookings(self, tenant: str) -> QuerySet[Booking]:
        return Booking.objects.filter(business__slug=tenant)

    def to_booking(self, booking: Booking) -> BookingRecord:
        return BookingRecord(
            id=str(booking.pk),
            tenant=booking.business.slug,
            customer_name=booking.customer_name,
            customer_email=booking.customer_email,
            service=booking.service,
            starts_at=booking.starts_at,
            ends_at=booking.ends_at,
            status=booking.status,
            notes=booking.notes,
        )

    def invoices(self, tenant: str) -> QuerySet[Invoice]:
        return Invoice.objects.filter(business__slug=tenant)

    def to_invoice(self, invoice: Invoice) -> InvoiceRecord:
        return InvoiceRecord(
            id=str(invoice.pk),
            tenant=invoice.business.slug,
            number=invoice.number,
            customer_name=invoice.customer_name,
            lines=(InvoiceLine(description="Total", quantity=1, unit_price=invoice.total),),
            currency=invoice.currency,
            status=invoice.status,
            issued_on=invoice.issued_on,
        )

    def users(self, tenant: str) -> QuerySet[Member]:
        return Member.objects.filter(business__slug=tenant).select_related("user")

    def to_user(self, member: Member) -> User:
        account = member.user
        return User(
            id=str(account.pk),
            tenant=member.business.slug,
            email=account.email or f"{account.get_username()}@{member.business.slug}.example",
            name=account.get_full_name() or account.get_username(),
            roles=(member.role,),
        )

    def send_notification(self, tenant: str, notification: NotificationRecord) -> None:
        """Keep it for the business's staff (shown on the dashboard)."""
        Notification.objects.create(
            business=Business.objects.get(slug=tenant),
            message=notification.message,
            level=notification.level,
        )
