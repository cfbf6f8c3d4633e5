"""ModelServices passes the host services contract, over the example CRM's models.

The example's ``CrmServices`` declares its querysets and converters and nothing else of the
data methods: the contract then checks the ORM base's lookups, tenant isolation, order,
limits and updates (wire-form values, refused fields, another tenant's record) on the
database of the run.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from business.models import Booking, Business, Invoice, Lead, Member
from business.plugins import CrmServices
from django.contrib.auth import get_user_model

from services_ai_plugins import events
from services_ai_plugins.django.services import ModelServices
from services_ai_plugins.errors import NotSupported
from services_ai_plugins_testing.services_contract import HostServicesContract


def _business(tenant: str) -> Business:
    found, _ = Business.objects.get_or_create(slug=tenant, defaults={"name": tenant.title()})
    return found


class Seed:
    """Rows of the example's models, returned as CrmServices reads them."""

    def __init__(self) -> None:
        self.services = CrmServices()
        self.accounts = 0

    def lead(self, tenant: str, **fields: Any) -> events.Lead:
        lead = Lead.objects.create(business=_business(tenant), **fields)
        return self.services.to_lead(lead)

    def booking(self, tenant: str, **fields: Any) -> events.Booking:
        fields.setdefault("customer_email", "customer@example.com")
        booking = Booking.objects.create(business=_business(tenant), **fields)
        return self.services.to_booking(booking)

    def invoice(self, tenant: str, **fields: Any) -> events.Invoice:
        fields.setdefault("customer_name", "Customer")
        fields.setdefault("total", Decimal("120.00"))
        invoice = Invoice.objects.create(business=_business(tenant), **fields)
        invoice.refresh_from_db()
        return self.services.to_invoice(invoice)

    def user(self, tenant: str, **fields: Any) -> events.User:
        self.accounts += 1
        first, _, last = fields.get("name", "Some One").partition(" ")
        account = get_user_model().objects.create_user(
            f"{tenant}-{self.accounts}",
            fields.get("email", ""),
            "pw",
            first_name=first,
            last_name=last,
        )
        member = Member.objects.create(user=account, business=_business(tenant))
        return self.services.to_user(member)


@pytest.mark.django_db
class TestModelServicesContract(HostServicesContract):
    """The example CRM's services, built on ModelServices, keep the SDK's promises."""

    @pytest.fixture
    def services(self) -> CrmServices:
        for tenant in (self.tenant, self.other_tenant):  # an app's tenants exist
            _business(tenant)
        return CrmServices()

    @pytest.fixture
    def seed(self) -> Seed:
        return Seed()


@pytest.mark.django_db
def test_an_undeclared_kind_stays_unsupported() -> None:
    """ModelServices without declarations reads nothing: each method says it is not provided."""
    bare = ModelServices()
    with pytest.raises(NotSupported):
        bare.list_leads("acme", limit=10)
    with pytest.raises(NotSupported):
        bare.get_invoice("acme", "1")


@pytest.mark.django_db
def test_an_update_validated_by_the_model_changes_nothing_when_refused() -> None:
    """A value the model's validation refuses is refused whole, naming the field."""
    lead = Seed().lead("acme", name="Ada", email="ada@example.com")
    services = CrmServices()
    with pytest.raises(ValueError, match="email"):
        services.update_lead("acme", lead.id, {"email": "not an address", "status": "won"})
    assert services.get_lead("acme", lead.id) == lead
