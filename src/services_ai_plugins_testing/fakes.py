"""In-memory host services, for plugin tests and for the SDK's own.

:class:`FakeHostServices` implements :class:`services_ai_plugins.HostServices`
the way an adapter over an ORM would: rows are kept per tenant and records are
built on every call. It remembers every call and every message sent, so a test
can assert on what a plugin did::

    services = FakeHostServices()
    lead = services.make_lead(name="Ada Lovelace", email="ada@example.com")
    api = PluginAPI("my-plugin", services, tenant="acme", grants=frozenset({"read_leads"}))
    assert api.get_lead(lead.id) == lead
    assert services.calls_to("get_lead") == [("acme", lead.id)]

It passes the host services contract
(:mod:`services_ai_plugins_testing.services_contract`), so what a plugin sees
here is what it sees with a host adapter that passes it too.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from services_ai_plugins._api import HostServices
from services_ai_plugins.events import (
    Booking,
    Email,
    Invoice,
    Lead,
    Notification,
    Sms,
    User,
)
from services_ai_plugins.tooling import example, from_wire, to_wire
from services_ai_plugins.types import JSONValue

__all__ = ["FakeHostServices"]

#: The methods of the HostServices protocol, which :meth:`FakeHostServices.calls_to` knows.
_METHODS = frozenset(
    name
    for name in dir(HostServices)
    if not name.startswith("_") and callable(getattr(HostServices, name))
)


class FakeHostServices(HostServices):
    """Host services kept in dictionaries; every call is recorded in :attr:`calls`.

    Records are made with :meth:`make_lead`, :meth:`make_booking`,
    :meth:`make_invoice` and :meth:`make_user` (``add_*`` are the same with
    the tenant required). What plugins did is read with :meth:`notifications`,
    :meth:`emails`, :meth:`sms`, :meth:`calls_to` and :meth:`stored`, and
    forgotten with :meth:`reset`.

    It behaves as the host services contract says: ``get_*`` return None for
    an id the tenant does not have, ``list_leads`` and ``list_invoices`` the
    most recently made first, ``list_bookings`` the soonest first; ``update_*``
    read ``changes`` in wire form (``{"value": "5200.00"}``, an ISO 8601 text
    for a datetime), raise :class:`LookupError` for an id the tenant does not
    have and :class:`ValueError` for a change of ``id``, ``tenant`` or an
    unknown field, or an invalid value.
    """

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
        if fields.get("id") is None:
            base["id"] = f"{kind.__name__.lower()}-{next(self._ids)}"
        record = kind(**base)  # checked before it is kept: a bad field keeps nothing
        # The record's own (converted, copied) values: later changes to what the caller
        # passed, such as a dict of custom data, do not reach the stored row.
        self._rows[(kind, tenant, record.id)] = attrs.asdict(record, recurse=False)
        return record

    def make_lead(self, tenant: str = "acme", **fields: Any) -> Lead:
        """Store a lead for ``tenant`` and return it.

        Every field not given is that of ``example(Lead)``, except ``id``, which
        is new (``lead-1``, ``lead-2``, ...) unless given.

        >>> services = FakeHostServices()
        >>> lead = services.make_lead(name="Grace Hopper", value=1200)
        >>> lead.id, lead.tenant, lead.value, lead.company
        ('lead-1', 'acme', Decimal('1200'), 'Globex')

        :raises TypeError, ValueError: when a field is not valid for a
            :class:`~services_ai_plugins.events.Lead`; nothing is stored.
        """
        lead: Lead = self._add(Lead, tenant, fields)
        return lead

    def make_booking(self, tenant: str = "acme", **fields: Any) -> Booking:
        """Store a booking for ``tenant`` and return it; fields default to ``example(Booking)``.

        >>> from datetime import datetime, timedelta, timezone
        >>> start = datetime(2030, 1, 7, 9, 0, tzinfo=timezone.utc)
        >>> booking = FakeHostServices().make_booking(
        ...     "globex", starts_at=start, ends_at=start + timedelta(minutes=30)
        ... )
        >>> booking.id, booking.tenant, booking.service
        ('booking-1', 'globex', 'Initial consultation')

        :raises TypeError, ValueError: when a field is not valid; nothing is stored.
        """
        booking: Booking = self._add(Booking, tenant, fields)
        return booking

    def make_invoice(self, tenant: str = "acme", **fields: Any) -> Invoice:
        """Store an invoice for ``tenant`` and return it; fields default to ``example(Invoice)``.

        >>> FakeHostServices().make_invoice(status="paid").total
        Decimal('1950.00')

        :raises TypeError, ValueError: when a field is not valid; nothing is stored.
        """
        invoice: Invoice = self._add(Invoice, tenant, fields)
        return invoice

    def make_user(self, tenant: str = "acme", **fields: Any) -> User:
        """Store a user account for ``tenant`` and return it; fields default to ``example(User)``.

        >>> FakeHostServices().make_user(name="Alan Turing", roles=["admin"]).roles
        ('admin',)

        :raises TypeError, ValueError: when a field is not valid; nothing is stored.
        """
        user: User = self._add(User, tenant, fields)
        return user

    def add_lead(self, tenant: str, **fields: Any) -> Lead:
        """:meth:`make_lead`, with the tenant required."""
        return self.make_lead(tenant, **fields)

    def add_booking(self, tenant: str, **fields: Any) -> Booking:
        """:meth:`make_booking`, with the tenant required."""
        return self.make_booking(tenant, **fields)

    def add_invoice(self, tenant: str, **fields: Any) -> Invoice:
        """:meth:`make_invoice`, with the tenant required."""
        return self.make_invoice(tenant, **fields)

    def add_user(self, tenant: str, **fields: Any) -> User:
        """:meth:`make_user`, with the tenant required."""
        return self.make_user(tenant, **fields)

    # -- what plugins did ------------------------------------------------------------------------

    def notifications(self, tenant: str | None = None) -> list[Notification]:
        """The notifications sent, in order; only ``tenant``'s when it is given.

        A new list: changing it leaves :attr:`sent_notifications` as it is.

        >>> services = FakeHostServices()
        >>> services.send_notification("acme", Notification(tenant="acme", message="Hi"))
        >>> [n.message for n in services.notifications("acme")], services.notifications("globex")
        (['Hi'], [])
        """
        return [n for n in self.sent_notifications if tenant is None or n.tenant == tenant]

    def emails(self, tenant: str | None = None) -> list[Email]:
        """The e-mails sent, in order; only ``tenant``'s when it is given (a new list).

        >>> services = FakeHostServices()
        >>> services.send_email("acme", example(Email))
        >>> [email.to for email in services.emails("acme")]
        [('hank@globex.example',)]
        """
        return [e for e in self.sent_emails if tenant is None or e.tenant == tenant]

    def sms(self, tenant: str | None = None) -> list[Sms]:
        """The text messages sent, in order; only ``tenant``'s when it is given (a new list).

        >>> services = FakeHostServices()
        >>> services.send_sms("acme", Sms(tenant="acme", to="+15550100", text="See you"))
        >>> [(m.to, m.text) for m in services.sms()]
        [('+15550100', 'See you')]
        """
        return [m for m in self.sent_sms if tenant is None or m.tenant == tenant]

    def calls_to(self, method: str) -> list[tuple[Any, ...]]:
        """The arguments of every call of ``method``, in order, the tenant first.

        Each item is the call's positional arguments as the services got them,
        keyword-only ones included: ``list_leads("acme", limit=5)`` is
        ``("acme", 5)``.

        >>> services = FakeHostServices()
        >>> services.store_set("acme", "crm-sync", "cursor", 7)
        >>> services.calls_to("store_set"), services.calls_to("store_get")
        ([('acme', 'crm-sync', 'cursor', 7)], [])

        :raises ValueError: when ``method`` is not a method of
            :class:`~services_ai_plugins.HostServices` (a misspelt name would
            otherwise match no call, and a test asserting there was none would pass).
        """
        if method not in _METHODS:
            known = ", ".join(sorted(_METHODS))
            raise ValueError(f"{method!r} is not a HostServices method (they are: {known})")
        return [(tenant, *arguments) for name, tenant, arguments in self.calls if name == method]

    def stored(self, tenant: str, plugin_id: str) -> dict[str, JSONValue]:
        """What the plugin ``plugin_id`` keeps for ``tenant`` in its store, by key (a deep copy).

        >>> services = FakeHostServices()
        >>> services.store_set("acme", "crm-sync", "cursor", {"page": 3})
        >>> services.stored("acme", "crm-sync"), services.stored("globex", "crm-sync")
        ({'cursor': {'page': 3}}, {})
        """
        return {
            key: copy.deepcopy(value)
            for (owner, plugin, key), value in self.store.items()
            if owner == tenant and plugin == plugin_id
        }

    def reset(self) -> None:
        """Forget the calls and the messages sent; keep the records, settings and stores.

        For a test that prepares data through the services and then checks only
        what the code under test did:

        >>> services = FakeHostServices()
        >>> lead = services.make_lead()
        >>> _ = services.get_lead("acme", lead.id)
        >>> services.reset()
        >>> services.calls
        []
        >>> services.get_lead("acme", lead.id) == lead
        True
        """
        self.calls.clear()
        self.sent_notifications.clear()
        self.sent_emails.clear()
        self.sent_sms.clear()

    # -- HostServices ----------------------------------------------------------------------------

    def _record(self, method: str, tenant: str, *args: Any) -> None:
        self.calls.append((method, tenant, args))

    def _get(self, kind: type, tenant: str, record_id: str) -> Any:
        row = self._rows.get((kind, tenant, record_id))
        return None if row is None else kind(**row)

    def _list(self, kind: type, tenant: str, limit: int) -> list[Any]:
        rows = [row for (k, t, _), row in self._rows.items() if k is kind and t == tenant]
        if kind is Booking:
            # Upcoming: the soonest first (sorted is stable: equal starts keep their order).
            return [kind(**row) for row in sorted(rows, key=_start)[:limit]]
        return [kind(**row) for row in rows[-limit:][::-1]]

    def _update(self, kind: type, tenant: str, record_id: str, changes: Mapping[str, Any]) -> Any:
        row = self._rows.get((kind, tenant, record_id))
        if row is None:
            raise LookupError(f"tenant {tenant!r} has no {kind.__name__} {record_id!r}")
        names = {field.name for field in attrs.fields(kind)} - {"id", "tenant"}
        refused = sorted(set(changes) - names)
        if refused:
            raise ValueError(f"cannot change {refused} of a {kind.__name__}")
        # Changes are JSON, so typed fields come in wire form: read them as from_wire does
        # (a PayloadError, which is a ValueError, names every bad value).
        record: Any = from_wire(kind, {**to_wire(kind(**row)), **changes})
        self._rows[(kind, tenant, record_id)] = attrs.asdict(record, recurse=False)
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


def _start(row: Mapping[str, Any]) -> Any:
    return row["starts_at"]
