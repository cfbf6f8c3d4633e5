"""In-memory host services, for plugin tests and for the SDK's own.

:class:`FakeHostServices` implements :class:`services_ai_plugins.HostServices`
the way an adapter over an ORM would: rows are kept per tenant and records are
built on every call. It remembers every call and every message sent, so a test
can assert on what a plugin did::

    services = FakeHostServices()
    lead = services.add_lead("acme", name="Ada Lovelace", email="ada@example.com")
    api = PluginAPI("my-plugin", services, tenant="acme", grants=frozenset({"read_leads"}))
    assert api.get_lead(lead.id) == lead
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from services_ai_plugins._types import JSONValue
from services_ai_plugins.events import (
    Booking,
    Email,
    Invoice,
    Lead,
    Notification,
    Sms,
    User,
    example,
)

__all__ = ["FakeHostServices"]


class FakeHostServices:
    """Host services kept in dictionaries; every call is recorded in :attr:`calls`."""

    def __init__(self) -> None:
        self._rows: dict[tuple[type, str, str], dict[str, Any]] = {}
        self._ids = itertools.count(1)
        #: Every call: (method name, tenant, the other arguments).
        self.calls: list[tuple[str, str, tuple[Any, ...]]] = []
        #: What plugins sent, in order.
        self.sent_notifications: list[Notification] = []
        self.sent_emails: list[Email] = []
        self.sent_sms: list[Sms] = []
        #: Settings per (tenant, plugin id); tests set them directly.
        self.settings: dict[tuple[str, str], dict[str, JSONValue]] = {}
        #: Each plugin's key-value store per (tenant, plugin id, key).
        self.store: dict[tuple[str, str, str], JSONValue] = {}

    # -- factories -------------------------------------------------------------------------------

    def _add(self, kind: type, tenant: str, fields: Mapping[str, Any]) -> Any:
        base = attrs.asdict(example(kind), recurse=False)
        base.update(fields)
        base["tenant"] = tenant
        base.setdefault("id", None)
        if base["id"] is None or "id" not in fields:
            base["id"] = f"{kind.__name__.lower()}-{next(self._ids)}"
        self._rows[(kind, tenant, base["id"])] = base
        return kind(**base)

    def add_lead(self, tenant: str, **fields: Any) -> Lead:
        """Store a lead for ``tenant`` (fields default to ``example(Lead)``) and return it."""
        lead: Lead = self._add(Lead, tenant, fields)
        return lead

    def add_booking(self, tenant: str, **fields: Any) -> Booking:
        """Store a booking for ``tenant`` and return it."""
        booking: Booking = self._add(Booking, tenant, fields)
        return booking

    def add_invoice(self, tenant: str, **fields: Any) -> Invoice:
        """Store an invoice for ``tenant`` and return it."""
        invoice: Invoice = self._add(Invoice, tenant, fields)
        return invoice

    def add_user(self, tenant: str, **fields: Any) -> User:
        """Store a user account for ``tenant`` and return it."""
        user: User = self._add(User, tenant, fields)
        return user

    # -- HostServices ----------------------------------------------------------------------------

    def _record(self, method: str, tenant: str, *args: Any) -> None:
        self.calls.append((method, tenant, args))

    def _get(self, kind: type, tenant: str, record_id: str) -> Any:
        row = self._rows.get((kind, tenant, record_id))
        return None if row is None else kind(**row)

    def _list(self, kind: type, tenant: str, limit: int) -> list[Any]:
        rows = [row for (k, t, _), row in self._rows.items() if k is kind and t == tenant]
        return [kind(**row) for row in rows[-limit:][::-1]]

    def _update(self, kind: type, tenant: str, record_id: str, changes: Mapping[str, Any]) -> Any:
        row = self._rows.get((kind, tenant, record_id))
        if row is None:
            raise LookupError(f"tenant {tenant!r} has no {kind.__name__} {record_id!r}")
        names = {field.name for field in attrs.fields(kind)} - {"id", "tenant"}
        refused = sorted(set(changes) - names)
        if refused:
            raise ValueError(f"cannot change {refused} of a {kind.__name__}")
        updated = {**row, **copy.deepcopy(dict(changes))}
        record = kind(**updated)
        self._rows[(kind, tenant, record_id)] = updated
        return record

    def get_lead(self, tenant: str, lead_id: str) -> Lead | None:
        self._record("get_lead", tenant, lead_id)
        lead: Lead | None = self._get(Lead, tenant, lead_id)
        return lead

    def list_leads(self, tenant: str, *, limit: int) -> Sequence[Lead]:
        self._record("list_leads", tenant, limit)
        return self._list(Lead, tenant, limit)

    def update_lead(self, tenant: str, lead_id: str, changes: Mapping[str, JSONValue]) -> Lead:
        self._record("update_lead", tenant, lead_id, changes)
        lead: Lead = self._update(Lead, tenant, lead_id, changes)
        return lead

    def get_booking(self, tenant: str, booking_id: str) -> Booking | None:
        self._record("get_booking", tenant, booking_id)
        booking: Booking | None = self._get(Booking, tenant, booking_id)
        return booking

    def list_bookings(self, tenant: str, *, limit: int) -> Sequence[Booking]:
        self._record("list_bookings", tenant, limit)
        return self._list(Booking, tenant, limit)

    def update_booking(
        self, tenant: str, booking_id: str, changes: Mapping[str, JSONValue]
    ) -> Booking:
        self._record("update_booking", tenant, booking_id, changes)
        booking: Booking = self._update(Booking, tenant, booking_id, changes)
        return booking

    def get_invoice(self, tenant: str, invoice_id: str) -> Invoice | None:
        self._record("get_invoice", tenant, invoice_id)
        invoice: Invoice | None = self._get(Invoice, tenant, invoice_id)
        return invoice

    def list_invoices(self, tenant: str, *, limit: int) -> Sequence[Invoice]:
        self._record("list_invoices", tenant, limit)
        return self._list(Invoice, tenant, limit)

    def get_user(self, tenant: str, user_id: str) -> User | None:
        self._record("get_user", tenant, user_id)
        user: User | None = self._get(User, tenant, user_id)
        return user

    def send_notification(self, tenant: str, notification: Notification) -> None:
        self._record("send_notification", tenant, notification)
        self.sent_notifications.append(notification)

    def send_email(self, tenant: str, email: Email) -> None:
        self._record("send_email", tenant, email)
        self.sent_emails.append(email)

    def send_sms(self, tenant: str, sms: Sms) -> None:
        self._record("send_sms", tenant, sms)
        self.sent_sms.append(sms)

    def get_settings(self, tenant: str, plugin_id: str) -> Mapping[str, JSONValue]:
        self._record("get_settings", tenant, plugin_id)
        return copy.deepcopy(self.settings.get((tenant, plugin_id), {}))

    def store_get(self, tenant: str, plugin_id: str, key: str) -> JSONValue:
        self._record("store_get", tenant, plugin_id, key)
        return copy.deepcopy(self.store.get((tenant, plugin_id, key)))

    def store_set(self, tenant: str, plugin_id: str, key: str, value: JSONValue) -> None:
        self._record("store_set", tenant, plugin_id, key, value)
        self.store[(tenant, plugin_id, key)] = copy.deepcopy(value)

    def store_delete(self, tenant: str, plugin_id: str, key: str) -> None:
        self._record("store_delete", tenant, plugin_id, key)
        self.store.pop((tenant, plugin_id, key), None)
