"""The app's data for plugins, over the ORM; and hooks fired when a transaction commits.

:class:`ModelServices` is a :class:`~services_ai_plugins.HostServices` whose reads and
writes of leads, bookings, invoices and users go through querysets the app declares,
one per record kind, each already narrowed to one tenant::

    class CrmServices(ModelServices):
        lead_fields = ("status", "value")  # what update_lead may change

        def leads(self, tenant):
            return Lead.objects.filter(business__slug=tenant)

        def to_lead(self, lead):
            return events.Lead(id=str(lead.pk), tenant=lead.business.slug, name=lead.name)

A kind whose two methods are not declared stays unsupported (the API call raises
:class:`~services_ai_plugins.errors.NotSupported`, as with the base class). Channels
(``send_email``, ...) are the app's to add, as on any ``HostServices``.

:func:`fire_on_commit` calls a hook once the current transaction commits (at once when
there is none), for the request's tenant or an explicit one; :func:`connect_hook` does it
from a model's ``post_save`` signal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import models, transaction
from django.db.models.signals import post_save

from .._api import HostServices
from .._json import JSONValue
from ..errors import NotSupported
from ..events import Booking, Context, Invoice, Lead, User
from .conf import built_host, get_host

__all__ = ["ModelServices", "connect_hook", "fire_on_commit"]

#: Errors of a lookup by an id the model's primary key cannot hold ("abc" for an integer key).
_BAD_ID: Final = (ValueError, TypeError, ValidationError, ObjectDoesNotExist)


class ModelServices(HostServices):
    """:class:`~services_ai_plugins.HostServices` over Django models.

    Declare, for each kind of record plugins may read, a queryset of one tenant's rows
    (``leads``, ``bookings``, ``invoices``, ``users``) and a converter to the SDK's record
    (``to_lead``, ``to_booking``, ``to_invoice``, ``to_user``). ``lead_fields`` and
    ``booking_fields`` name the model fields ``update_lead`` and ``update_booking`` may
    change (none by default: plugins only read). Lists come newest first as the
    queryset orders them, at most ``limit``.
    """

    #: The model fields a plugin's ``update_lead`` may change.
    lead_fields: Sequence[str] = ()
    #: The model fields a plugin's ``update_booking`` may change.
    booking_fields: Sequence[str] = ()

    def leads(self, tenant: str) -> models.QuerySet[Any]:
        """The tenant's leads."""
        raise NotSupported("leads", "leads")

    def to_lead(self, row: Any) -> Lead:
        """A lead row as the SDK's record."""
        raise NotSupported("to_lead", "leads")

    def bookings(self, tenant: str) -> models.QuerySet[Any]:
        """The tenant's bookings."""
        raise NotSupported("bookings", "bookings")

    def to_booking(self, row: Any) -> Booking:
        """A booking row as the SDK's record."""
        raise NotSupported("to_booking", "bookings")

    def invoices(self, tenant: str) -> models.QuerySet[Any]:
        """The tenant's invoices."""
        raise NotSupported("invoices", "invoices")

    def to_invoice(self, row: Any) -> Invoice:
        """An invoice row as the SDK's record."""
        raise NotSupported("to_invoice", "invoices")

    def users(self, tenant: str) -> models.QuerySet[Any]:
        """The tenant's user accounts."""
        raise NotSupported("users", "users")

    def to_user(self, row: Any) -> User:
        """A user row as the SDK's record."""
        raise NotSupported("to_user", "users")

    # -- the HostServices methods, from the declarations above --------------------------------

    def get_lead(self, tenant: str, lead_id: str) -> Lead | None:
        row = _one(self.leads(tenant), lead_id)
        return None if row is None else self.to_lead(row)

    def list_leads(self, tenant: str, *, limit: int) -> Sequence[Lead]:
        return [self.to_lead(row) for row in self.leads(tenant)[:limit]]

    def update_lead(self, tenant: str, lead_id: str, changes: Mapping[str, JSONValue]) -> Lead:
        row = _changed(self.leads(tenant), lead_id, changes, self.lead_fields, "lead")
        return self.to_lead(row)

    def get_booking(self, tenant: str, booking_id: str) -> Booking | None:
        row = _one(self.bookings(tenant), booking_id)
        return None if row is None else self.to_booking(row)

    def list_bookings(self, tenant: str, *, limit: int) -> Sequence[Booking]:
        return [self.to_booking(row) for row in self.bookings(tenant)[:limit]]

    def update_booking(
        self, tenant: str, booking_id: str, changes: Mapping[str, JSONValue]
    ) -> Booking:
        row = _changed(self.bookings(tenant), booking_id, changes, self.booking_fields, "booking")
        return self.to_booking(row)

    def get_invoice(self, tenant: str, invoice_id: str) -> Invoice | None:
        row = _one(self.invoices(tenant), invoice_id)
        return None if row is None else self.to_invoice(row)

    def list_invoices(self, tenant: str, *, limit: int) -> Sequence[Invoice]:
        return [self.to_invoice(row) for row in self.invoices(tenant)[:limit]]

    def get_user(self, tenant: str, user_id: str) -> User | None:
        row = _one(self.users(tenant), user_id)
        return None if row is None else self.to_user(row)


def _one(rows: models.QuerySet[Any], pk: str) -> Any:
    try:
        return rows.filter(pk=pk).first()
    except _BAD_ID:
        return None


def _changed(
    rows: models.QuerySet[Any],
    pk: str,
    changes: Mapping[str, JSONValue],
    allowed: Sequence[str],
    kind: str,
) -> Any:
    refused = sorted(set(changes) - set(allowed))
    if refused:
        raise ValueError(
            f"{kind} fields {refused} cannot be changed by plugins "
            f"(allowed: {sorted(allowed) or 'none'})"
        )
    with transaction.atomic(using=rows.db):
        row = _one(rows.select_for_update(), pk)
        if row is None:
            raise LookupError(f"no {kind} {pk!r} for this tenant")
        for name, value in changes.items():
            setattr(row, name, value)
        try:
            row.full_clean(exclude=[f.name for f in row._meta.fields if f.name not in changes])
        except ValidationError as exc:
            raise ValueError(f"{kind} {pk!r}: {exc.message_dict}") from None
        row.save(update_fields=list(changes))
    return row


def fire_on_commit(
    hook: str,
    /,
    *,
    tenant: str | None = None,
    context: Context | None = None,
    using: str | None = None,
    **kwargs: Any,
) -> None:
    """Call ``hook`` with ``kwargs`` once the current transaction commits.

    The call's context is ``context``, else a context of ``tenant`` (keeping the
    request's user when the request is for that tenant), else the request's
    context (:meth:`PluginHost.current_context`), taken now rather than at the
    commit. Nothing is called when the transaction rolls back; outside a
    transaction (autocommit) the hook runs at once. A plugin's failure is the
    host's to record, never the saving code's.

    :raises ValueError: when there is no context to call the hook in.
    """
    if context is None:
        # A request context exists only where the middleware built the host: never build
        # one here (a save in a migration or a shell fires nothing until it commits).
        host = built_host()
        current = host.current_context() if host is not None else None
        if tenant is None:
            if current is None:
                raise ValueError(
                    f"fire_on_commit({hook!r}) needs a tenant or a context: there is no request "
                    "context here"
                )
            context = current
        elif current is not None and current.tenant == tenant:
            context = current
        else:
            context = Context(tenant=tenant)
    elif tenant is not None and context.tenant != tenant:
        raise ValueError(f"tenant {tenant!r} is not the context's tenant {context.tenant!r}")
    fixed = context

    def call() -> None:
        get_host().call_hook(hook, context=fixed, **kwargs)

    transaction.on_commit(call, using=using)


def connect_hook(
    model: type[models.Model],
    hook: str,
    *,
    payload: Callable[[Any], Mapping[str, Any]],
    tenant: Callable[[Any], str],
    created: bool | None = True,
) -> Callable[..., None]:
    """Fire ``hook`` after the commit each time a ``model`` row is saved.

    ``payload(row)`` gives the hook's arguments (``{"lead": to_lead(row)}``) and
    ``tenant(row)`` the row's tenant; ``created`` picks the saves: True for new
    rows (the default), False for changes, None for both. The payload is built
    at the save, so the hook sees the row as it was saved. Returns the signal
    receiver (kept alive by the signal; disconnect it with
    ``post_save.disconnect(receiver, sender=model)``).
    """

    def receiver(sender: type[models.Model], instance: Any, **signal: Any) -> None:
        if created is not None and bool(signal.get("created")) is not created:
            return
        fire_on_commit(
            hook, tenant=tenant(instance), using=signal.get("using"), **payload(instance)
        )

    post_save.connect(receiver, sender=model, weak=False, dispatch_uid=(model, hook, created))
    return receiver
