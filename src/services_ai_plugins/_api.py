"""The PluginAPI: everything a plugin may do, each call checked and scoped to one tenant.

A :class:`PluginAPI` is bound to one plugin, one tenant and one hook call's
context. It delegates to :class:`HostServices`, the protocol a host adapter
implements over its own models, and never touches storage itself. Every method
declares the permission it needs; the check reads a ``frozenset`` of the
plugin's grants (no query per call), and the snapshot is replaced when grants
change. A plugin never names a tenant: the API passes its own, and refuses
records of another tenant that host services hand back.

What in-process isolation can promise, and what it cannot: the API decides
what a *well-behaved* plugin can reach through it. Code running in the host's
process can still import anything and reach the host's objects directly, so
for untrusted code the process sandbox is the boundary; there the API is a
proxy whose calls come back to the host and pass through this same class.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from types import CodeType, FrameType
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

import attrs

from ._errors import PermissionDenied, TenantScopeError
from ._permissions import PermissionCatalogue
from ._types import JSONValue, check_json
from .events import Booking, Context, Email, Invoice, Lead, Notification, Sms, User

__all__ = ["DeniedCall", "HostServices", "PluginAPI", "requires"]

#: The largest value a plugin may keep under one key of its store, as JSON.
MAX_STORE_VALUE_BYTES: Final = 64 * 1024
#: The longest store key.
MAX_STORE_KEY_LENGTH: Final = 200
#: The most records one list call returns.
MAX_LIST_LIMIT: Final = 1000

_logger = logging.getLogger("services_ai_plugins.api")

#: The code objects of the host's call loops. ``PluginAPI.context`` looks for the
#: nearest of their frames on the current thread's stack and reads the call's
#: ``context`` there: a hook call pays nothing for it, one per (plugin, tenant)
#: ``PluginAPI`` serves every call, and only reading ``api.context`` costs a
#: short walk up the stack (nested calls find their own; threads have their own
#: stacks).
CALL_LOOPS: Final[set[CodeType]] = set()

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


@runtime_checkable
class HostServices(Protocol):
    """What the host adapter provides: its data and channels, always for one tenant.

    Every method takes the tenant first; the API passes the calling plugin's
    tenant, never one the plugin chose. Return the SDK's records
    (:mod:`services_ai_plugins.events`), built from your models.
    """

    def get_lead(self, tenant: str, lead_id: str) -> Lead | None:
        """The lead, or None when the tenant has no such lead."""
        ...

    def list_leads(self, tenant: str, *, limit: int) -> Sequence[Lead]:
        """The tenant's most recent leads, at most ``limit``."""
        ...

    def update_lead(self, tenant: str, lead_id: str, changes: Mapping[str, JSONValue]) -> Lead:
        """Apply ``changes`` to the lead and return it as stored."""
        ...

    def get_booking(self, tenant: str, booking_id: str) -> Booking | None:
        """The booking, or None."""
        ...

    def list_bookings(self, tenant: str, *, limit: int) -> Sequence[Booking]:
        """The tenant's upcoming bookings, at most ``limit``."""
        ...

    def update_booking(
        self, tenant: str, booking_id: str, changes: Mapping[str, JSONValue]
    ) -> Booking:
        """Apply ``changes`` to the booking and return it as stored."""
        ...

    def get_invoice(self, tenant: str, invoice_id: str) -> Invoice | None:
        """The invoice, or None."""
        ...

    def list_invoices(self, tenant: str, *, limit: int) -> Sequence[Invoice]:
        """The tenant's most recent invoices, at most ``limit``."""
        ...

    def get_user(self, tenant: str, user_id: str) -> User | None:
        """The user account, or None."""
        ...

    def send_notification(self, tenant: str, notification: Notification) -> None:
        """Deliver a notification to the tenant's staff."""
        ...

    def send_email(self, tenant: str, email: Email) -> None:
        """Send (or queue) an e-mail."""
        ...

    def send_sms(self, tenant: str, sms: Sms) -> None:
        """Send (or queue) a text message."""
        ...

    def get_settings(self, tenant: str, plugin_id: str) -> Mapping[str, JSONValue]:
        """The plugin's settings for the tenant, defaults filled in."""
        ...

    def store_get(self, tenant: str, plugin_id: str, key: str) -> JSONValue:
        """A value of the plugin's own key-value store, or None."""
        ...

    def store_set(self, tenant: str, plugin_id: str, key: str, value: JSONValue) -> None:
        """Keep a value in the plugin's own key-value store."""
        ...

    def store_delete(self, tenant: str, plugin_id: str, key: str) -> None:
        """Forget a key of the plugin's own store (no error when it is absent)."""
        ...


@attrs.frozen
class DeniedCall:
    """A refused API call, handed to the host's ``on_denied`` callback (for its audit trail)."""

    plugin_id: str
    tenant: str | None
    method: str
    #: The permission that was missing, or None for a tenant-scope refusal.
    permission: str | None
    at: datetime
    reason: str


DeniedHook = Callable[[DeniedCall], None]


def requires(permission: str | None) -> Callable[[F], F]:
    """Declare the permission an API method needs (None: its own data, always allowed).

    Hosts add API methods by subclassing :class:`PluginAPI`::

        class MyAPI(PluginAPI):
            @requires("read_tickets")
            def list_tickets(self) -> list[Ticket]:
                return self._services.list_tickets(self._require_tenant("list_tickets"))

    The check runs before the method body; a refusal raises
    :class:`PermissionDenied` and calls the host's ``on_denied``.
    """

    def decorate(method: F) -> F:
        name = method.__name__
        if permission is None:
            method.__services_ai_permission__ = None  # type: ignore[attr-defined]
            return method

        def checked(self: PluginAPI, *args: Any, **kwargs: Any) -> Any:
            if permission not in self._grants:
                self._deny(permission, name)
            return method(self, *args, **kwargs)

        checked.__name__ = name
        checked.__qualname__ = method.__qualname__
        checked.__doc__ = method.__doc__
        checked.__wrapped__ = method  # type: ignore[attr-defined]
        checked.__services_ai_permission__ = permission  # type: ignore[attr-defined]
        return checked  # type: ignore[return-value]

    return decorate


class PluginAPI:
    """The calling plugin's own API: bound to one plugin, one tenant and one context.

    Hooks receive it as ``api``. Every method checks the plugin's grants (see
    :meth:`permissions` for which method needs what) and works on the bound
    tenant only. ``tenant`` is None in hooks without a tenant
    (``register_routes``, plugin-level lifecycle hooks); tenant-scoped methods
    then raise :class:`TenantScopeError`.

    :param grants: the permissions granted to this plugin for this tenant (a
        snapshot; the host builds a new API object when grants change).
    :param on_denied: called with a :class:`DeniedCall` for every refusal,
        so the host can record it; refusals are also logged on the plugin's logger.
    :param settings: the plugin's settings for the tenant, when the host keeps
        them (a :class:`PluginHost` passes the registry's); otherwise
        :meth:`get_settings` asks the host services.
    """

    __slots__ = (
        "_context",
        "_grants",
        "_on_denied",
        "_plugin_id",
        "_services",
        "_settings",
        "_tenant",
        "logger",
    )

    def __init__(
        self,
        plugin_id: str,
        services: HostServices,
        *,
        tenant: str | None,
        grants: frozenset[str],
        context: Context | None = None,
        on_denied: DeniedHook | None = None,
        settings: Mapping[str, JSONValue] | None = None,
    ) -> None:
        if context is not None and tenant is not None and context.tenant != tenant:
            raise TenantScopeError(plugin_id, "PluginAPI", tenant, context.tenant)
        self._plugin_id: Final = plugin_id
        self._services: Final = services
        self._tenant: Final = tenant
        self._grants: Final = frozenset(grants)
        self._context: Final = context
        self._on_denied: Final = on_denied
        self._settings: Final = settings
        #: The plugin's own logger (``services_ai_plugins.plugins.<id>``).
        self.logger: Final = logging.getLogger(f"services_ai_plugins.plugins.{plugin_id}")

    def __repr__(self) -> str:
        return f"PluginAPI(plugin_id={self._plugin_id!r}, tenant={self._tenant!r})"

    # -- what the plugin may know about itself ---------------------------------------------------

    @property
    def plugin_id(self) -> str:
        """The calling plugin's id."""
        return self._plugin_id

    @property
    def tenant(self) -> str | None:
        """The tenant this call is for (None in hooks without a tenant)."""
        return self._tenant

    @property
    def context(self) -> Context | None:
        """The hook call's context: tenant, acting user, request metadata.

        The context given when the API was built, else the context of the hook
        call running now for this API's tenant (None outside such a call).
        """
        if self._context is not None:
            return self._context
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            if frame.f_code in CALL_LOOPS:
                current = frame.f_locals.get("context")
                if isinstance(current, Context) and current.tenant == self._tenant:
                    return current
                return None
            frame = frame.f_back
        return None

    def has_permission(self, permission: str) -> bool:
        """Whether this plugin holds ``permission`` here (to skip work it may not do)."""
        return permission in self._grants

    @classmethod
    def permissions(cls) -> dict[str, str | None]:
        """Every API method and the permission it needs (None: always allowed)."""
        table: dict[str, str | None] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if hasattr(value, "__services_ai_permission__"):
                    table[name] = value.__services_ai_permission__
        return dict(sorted(table.items()))

    @classmethod
    def check_catalogue(cls, catalogue: PermissionCatalogue) -> list[str]:
        """The permissions this API's methods need that ``catalogue`` does not define."""
        needed = {p for p in cls.permissions().values() if p is not None}
        return sorted(catalogue.unknown(needed))

    # -- leads, bookings, invoices, users --------------------------------------------------------

    @requires("read_leads")
    def get_lead(self, lead_id: str) -> Lead | None:
        """The lead with this id, or None."""
        return self._own("get_lead", self._services.get_lead(self._scope("get_lead"), lead_id))

    @requires("read_leads")
    def list_leads(self, *, limit: int = 100) -> list[Lead]:
        """The most recent leads, at most ``limit`` (up to 1000)."""
        tenant = self._scope("list_leads")
        return self._own_all("list_leads", self._services.list_leads(tenant, limit=_limit(limit)))

    @requires("write_leads")
    def update_lead(self, lead_id: str, changes: Mapping[str, JSONValue]) -> Lead:
        """Change fields of a lead; returns it as stored."""
        tenant = self._scope("update_lead")
        checked = _json_mapping(changes, "changes")
        return self._own("update_lead", self._services.update_lead(tenant, lead_id, checked))

    @requires("read_bookings")
    def get_booking(self, booking_id: str) -> Booking | None:
        """The booking with this id, or None."""
        tenant = self._scope("get_booking")
        return self._own("get_booking", self._services.get_booking(tenant, booking_id))

    @requires("read_bookings")
    def list_bookings(self, *, limit: int = 100) -> list[Booking]:
        """Upcoming bookings, at most ``limit`` (up to 1000)."""
        tenant = self._scope("list_bookings")
        bookings = self._services.list_bookings(tenant, limit=_limit(limit))
        return self._own_all("list_bookings", bookings)

    @requires("write_bookings")
    def update_booking(self, booking_id: str, changes: Mapping[str, JSONValue]) -> Booking:
        """Change fields of a booking; returns it as stored."""
        tenant = self._scope("update_booking")
        checked = _json_mapping(changes, "changes")
        return self._own(
            "update_booking", self._services.update_booking(tenant, booking_id, checked)
        )

    @requires("read_invoices")
    def get_invoice(self, invoice_id: str) -> Invoice | None:
        """The invoice with this id, or None."""
        tenant = self._scope("get_invoice")
        return self._own("get_invoice", self._services.get_invoice(tenant, invoice_id))

    @requires("read_invoices")
    def list_invoices(self, *, limit: int = 100) -> list[Invoice]:
        """The most recent invoices, at most ``limit`` (up to 1000)."""
        tenant = self._scope("list_invoices")
        invoices = self._services.list_invoices(tenant, limit=_limit(limit))
        return self._own_all("list_invoices", invoices)

    @requires("read_users")
    def get_user(self, user_id: str) -> User | None:
        """The user account with this id, or None."""
        return self._own("get_user", self._services.get_user(self._scope("get_user"), user_id))

    # -- messages ------------------------------------------------------------------------------

    @requires("send_notifications")
    def send_notification(
        self,
        message: str,
        *,
        channel: str | None = None,
        recipient: str | None = None,
        level: str = "info",
    ) -> None:
        """Notify the tenant's staff."""
        tenant = self._scope("send_notification")
        notification = Notification(
            tenant=tenant, message=message, channel=channel, recipient=recipient, level=level
        )
        self._services.send_notification(tenant, notification)

    @requires("send_email")
    def send_email(
        self,
        to: str | Iterable[str],
        subject: str,
        body: str,
        *,
        html: str | None = None,
        reply_to: str | None = None,
    ) -> None:
        """Send an e-mail on the tenant's behalf."""
        tenant = self._scope("send_email")
        recipients = (to,) if isinstance(to, str) else tuple(to)
        email = Email(
            tenant=tenant, to=recipients, subject=subject, body=body, html=html, reply_to=reply_to
        )
        self._services.send_email(tenant, email)

    @requires("send_sms")
    def send_sms(self, to: str, text: str) -> None:
        """Send a text message on the tenant's behalf."""
        tenant = self._scope("send_sms")
        self._services.send_sms(tenant, Sms(tenant=tenant, to=to, text=text))

    # -- the plugin's own data (no permission needed) --------------------------------------------

    @requires(None)
    def get_settings(self) -> dict[str, JSONValue]:
        """This plugin's settings for the tenant, defaults filled in."""
        tenant = self._scope("get_settings")
        if self._settings is not None:
            return dict(self._settings)
        return dict(self._services.get_settings(tenant, self._plugin_id))

    @requires(None)
    def get_setting(self, name: str) -> JSONValue:
        """One of this plugin's settings for the tenant.

        :raises KeyError: when the manifest declares no such setting.
        """
        settings = self.get_settings()
        if name not in settings:
            known = ", ".join(sorted(settings)) or "none"
            raise KeyError(
                f"plugin {self._plugin_id!r} has no setting {name!r} (settings: {known})"
            )
        return settings[name]

    @requires(None)
    def store_get(self, key: str, default: JSONValue = None) -> JSONValue:
        """A value this plugin kept for the tenant, or ``default``."""
        tenant = self._scope("store_get")
        value = self._services.store_get(tenant, self._plugin_id, _key(key))
        return default if value is None else value

    @requires(None)
    def store_set(self, key: str, value: JSONValue) -> None:
        """Keep a JSON value for the tenant under ``key`` (up to 64 KiB)."""
        tenant = self._scope("store_set")
        checked = check_json(value)
        size = len(json.dumps(checked, ensure_ascii=False).encode())
        if size > MAX_STORE_VALUE_BYTES:
            raise ValueError(f"value for {key!r} is {size} bytes; at most {MAX_STORE_VALUE_BYTES}")
        self._services.store_set(tenant, self._plugin_id, _key(key), checked)

    @requires(None)
    def store_delete(self, key: str) -> None:
        """Forget ``key`` for the tenant."""
        self._services.store_delete(self._scope("store_delete"), self._plugin_id, _key(key))

    # -- checks ----------------------------------------------------------------------------------

    def _scope(self, method: str) -> str:
        tenant = self._tenant
        if tenant is None:
            self._refuse(method, None, "no tenant in this hook")
            raise TenantScopeError(self._plugin_id, method, None, None)
        return tenant

    # Subclasses call it by this name too (see ``requires``).
    _require_tenant = _scope

    def _own(self, method: str, record: T) -> T:
        actual = getattr(record, "tenant", self._tenant)
        if record is not None and actual != self._tenant:
            self._refuse(method, None, f"host services returned data of tenant {actual!r}")
            raise TenantScopeError(self._plugin_id, method, self._tenant, actual)
        return record

    def _own_all(self, method: str, records: Iterable[T]) -> list[T]:
        return [self._own(method, record) for record in records]

    def _deny(self, permission: str, method: str) -> None:
        self._refuse(method, permission, f"missing permission {permission!r}")
        raise PermissionDenied(self._plugin_id, permission, method, self._tenant)

    def _refuse(self, method: str, permission: str | None, reason: str) -> None:
        self.logger.warning("refused %s(): %s (tenant %r)", method, reason, self._tenant)
        if self._on_denied is not None:
            self._on_denied(
                DeniedCall(
                    plugin_id=self._plugin_id,
                    tenant=self._tenant,
                    method=method,
                    permission=permission,
                    at=datetime.now(timezone.utc),
                    reason=reason,
                )
            )


def _limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIST_LIMIT} (got {limit!r})")
    return limit


def _key(key: object) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_STORE_KEY_LENGTH:
        raise ValueError(f"a store key is a string of 1 to {MAX_STORE_KEY_LENGTH} characters")
    return key


def _json_mapping(changes: object, name: str) -> dict[str, JSONValue]:
    checked = check_json(dict(changes)) if isinstance(changes, Mapping) else None
    if not isinstance(checked, dict):
        raise ValueError(f"{name} must be a mapping of field names to JSON values")
    return checked
