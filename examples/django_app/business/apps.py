"""The CRM's own app: businesses (the tenants), their people, leads, bookings and invoices."""

from __future__ import annotations

from django.apps import AppConfig


class BusinessConfig(AppConfig):
    name = "business"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import signals  # noqa: F401, PLC0415 - connects the model signals
