"""The CRM's data: every row belongs to one business (the SDK's tenant)."""

from __future__ import annotations

from datetime import date

from django.conf import settings
from django.db import models
from django.utils import timezone


class Business(models.Model):
    """A tenant: ``slug`` is its tenant name and its sub-domain."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)

    def __str__(self) -> str:
        return self.name


class Member(models.Model):
    """A person of a business: a Django user with a role there."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="members")
    role = models.CharField(max_length=50, default="sales")


class Lead(models.Model):
    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="leads")
    name = models.CharField(max_length=200)
    email = models.EmailField(blank=True)
    company = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=30, default="new")
    value = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]


class Booking(models.Model):
    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="bookings")
    customer_name = models.CharField(max_length=200)
    customer_email = models.EmailField()
    service = models.CharField(max_length=200, default="Consultation")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    status = models.CharField(max_length=30, default="pending")
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["starts_at", "id"]


class Invoice(models.Model):
    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="invoices")
    number = models.CharField(max_length=50)
    customer_name = models.CharField(max_length=200)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3, default="EUR")
    status = models.CharField(max_length=30, default="draft")
    issued_on = models.DateField(default=date.today)

    class Meta:
        ordering = ["-issued_on", "-id"]


class Notification(models.Model):
    """What a plugin told a business's staff (``api.send_notification``)."""

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="notifications")
    message = models.TextField()
    level = models.CharField(max_length=20, default="info")
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-sent_at", "-id"]
