"""The PluginAPI: everything a plugin may do, each call checked and scoped to one tenant.

A :class:`PluginAPI` is bound to one plugin, one tenant and one hook call's
context. It delegates to :class:`HostServices`, the protocol a host adapter
implements over its own models (each method it does not provide raises
:class:`~services_ai_plugins.errors.NotSupported`), and touches no storage
itself: store quotas, and the plugins' stores when the services keep none,
go through its :class:`ApiMeter`. Every method
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

import asyncio
import inspect
import json
import logging
import threading
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Final, Protocol, TypeVar, cast, final, runtime_checkable

import attrs

from ._access import AccessLog, addresses, asked_for, carries_no_id
from ._context import context_for
from ._egress import HostRule, HttpResponse, NetworkPolicy, fetch, parse_rule
from ._json import JSONValue, check_json
from ._permissions import PermissionCatalogue
from ._storage._memory import StoreLedger
from ._storage._protocol import StoreUsage
from .errors import (
    EgressRefused,
    NotSupported,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    TenantScopeError,
)
from .events import Booking, Context, Email, Invoice, Lead, Notification, Sms, User

__all__ = [
    "ApiLimits",
    "ApiMeter",
    "DeniedCall",
    "HostServices",
    "PluginAPI",
    "Rate",
    "requires",
]

#: The largest value a plugin may keep under one key of its store, as JSON (the default of
#: :attr:`ApiLimits.store_value_bytes`).
MAX_STORE_VALUE_BYTES: Final = 64 * 1024
#: The default of :attr:`ApiLimits.store_keys`.
MAX_STORE_KEYS: Final = 1000
#: The default of :attr:`ApiLimits.store_bytes`.
MAX_STORE_BYTES: Final = 10 * 1024 * 1024
#: The longest store key.
MAX_STORE_KEY_LENGTH: Final = 200
#: The most records one list call returns.
MAX_LIST_LIMIT: Final = 1000

_logger = logging.getLogger("services_ai_plugins.api")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


@runtime_checkable
class HostServices(Protocol):
    """What the host adapter provides: its data and channels, always for one tenant.

    Every method takes the tenant first; the API passes the calling plugin's
    tenant, never one the plugin chose. Return the SDK's records
    (:mod:`services_ai_plugins.events`), built from your models.

    Subclass it and override only what your app has: every method has a
    default that raises :class:`~services_ai_plugins.errors.NotSupported`
    ("this app does not provide bookings (HostServices.get_booking)"), which a
    plugin sees as a clear refusal from its API call. An app without bookings
    or invoices writes no stubs (:func:`~services_ai_plugins.tooling.record_from`
    builds the records from its rows)::

        class MyServices(HostServices):
            def get_lead(self, tenant: str, lead_id: str) -> Lead | None:
                row = LeadModel.objects.filter(account__slug=tenant, pk=lead_id).first()
                return None if row is None else record_from(Lead, row, tenant=tenant)

            def send_email(self, tenant: str, email: Email) -> None:
                outbox.send(tenant, email)

    The plugins' key-value store (``store_get``, ``store_set``,
    ``store_delete``) is kept by the SDK, on the host's storage, unless the
    services override those three methods. ``get_settings`` is not needed: a
    :class:`PluginHost` hands plugins the registry's settings.

    It is still a runtime-checkable protocol: a class that defines every
    method without subclassing it is HostServices too, as before.

    .. versionchanged:: 0.1.0
       Every method has a default raising ``NotSupported``; the store is the
       SDK's unless overridden; ``get_settings`` is deprecated.
    """

    def get_lead(self, tenant: str, lead_id: str) -> Lead | None:
        """The lead, or None when the tenant has no such lead."""
        raise NotSupported("get_lead", "leads")

    def list_leads(self, tenant: str, *, limit: int) -> Sequence[Lead]:
        """The tenant's most recent leads, at most ``limit``."""
        raise NotSupported("list_leads", "leads")

    def update_lead(self, tenant: str, lead_id: str, changes: Mapping[str, JSONValue]) -> Lead:
        """Apply ``changes`` to the lead and return it as stored."""
        raise NotSupported("update_lead", "changes to leads")

    def get_booking(self, tenant: str, booking_id: str) -> Booking | None:
        """The booking, or None."""
        raise NotSupported("get_booking", "bookings")

    def list_bookings(self, tenant: str, *, limit: int) -> Sequence[Booking]:
        """The tenant's upcoming bookings, at most ``limit``."""
        raise NotSupported("list_bookings", "bookings")

    def update_booking(
        self, tenant: str, booking_id: str, changes: Mapping[str, JSONValue]
    ) -> Booking:
        """Apply ``changes`` to the booking and return it as stored."""
        raise NotSupported("update_booking", "changes to bookings")

    def get_invoice(self, tenant: str, invoice_id: str) -> Invoice | None:
        """The invoice, or None."""
        raise NotSupported("get_invoice", "invoices")

    def list_invoices(self, tenant: str, *, limit: int) -> Sequence[Invoice]:
        """The tenant's most recent invoices, at most ``limit``."""
        raise NotSupported("list_invoices", "invoices")

    def get_user(self, tenant: str, user_id: str) -> User | None:
        """The user account, or None."""
        raise NotSupported("get_user", "user accounts")

    def send_notification(self, tenant: str, notification: Notification) -> None:
        """Deliver a notification to the tenant's staff."""
        raise NotSupported("send_notification", "notifications")

    def send_email(self, tenant: str, email: Email) -> None:
        """Send (or queue) an e-mail."""
        raise NotSupported("send_email", "e-mail")

    def send_sms(self, tenant: str, sms: Sms) -> None:
        """Send (or queue) a text message."""
        raise NotSupported("send_sms", "text messages")

    def get_settings(self, tenant: str, plugin_id: str) -> Mapping[str, JSONValue]:
        """The plugin's settings for the tenant, defaults filled in.

        .. deprecated:: 0.1.0
           Not needed: plugins run by a :class:`PluginHost` get the registry's
           settings and this method is never called. Only a :class:`PluginAPI`
           built without ``settings=`` (a plugin's own tests) still asks it,
           when the services override it.
        """
        raise NotSupported("get_settings", "plugin settings")

    def store_get(self, tenant: str, plugin_id: str, key: str) -> JSONValue:
        """A value of the plugin's own key-value store, or None.

        Override the three store methods to keep plugins' stores yourself;
        otherwise the SDK keeps them on the host's storage.
        """
        raise NotSupported("store_get", "a plugin key-value store")

    def store_set(self, tenant: str, plugin_id: str, key: str, value: JSONValue) -> None:
        """Keep a value in the plugin's own key-value store."""
        raise NotSupported("store_set", "a plugin key-value store")

    def store_delete(self, tenant: str, plugin_id: str, key: str) -> None:
        """Forget a key of the plugin's own store (no error when it is absent)."""
        raise NotSupported("store_delete", "a plugin key-value store")


#: The methods of :class:`HostServices`, and their defaults (which raise NotSupported).
_DEFAULTS: Final[Mapping[str, object]] = types.MappingProxyType(
    {
        name: value
        for name, value in vars(HostServices).items()
        if not name.startswith("_") and inspect.isfunction(value)
    }
)

#: The store methods: overridden all three, or none (then the SDK keeps the store).
STORE_METHODS: Final = ("store_get", "store_set", "store_delete")


def provides(services: object, method: str) -> bool:
    """Whether ``services`` has its own ``method``, rather than HostServices' default.

    A structural implementation (not a subclass) provides every method it
    defines; a subclass provides what it overrides.
    """
    found = inspect.getattr_static(services, method, None)
    return found is not None and found is not _DEFAULTS.get(method)


@attrs.frozen
class DeniedCall:
    """A refused API call, handed to the host's ``on_denied`` callback (for its audit trail)."""

    plugin_id: str
    tenant: str | None
    method: str
    #: The permission that was missing, or None for a tenant-scope or limit refusal.
    permission: str | None
    at: datetime
    reason: str


DeniedHook = Callable[[DeniedCall], None]


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be a positive int (got {value!r})")


def _positive_int_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{attribute.name} must be a positive int or None (got {value!r})")


def _positive_seconds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{attribute.name} must be a positive number of seconds (got {value!r})")


@attrs.frozen
class Rate:
    """At most ``count`` calls per ``per`` seconds, in bursts of up to ``count``.

    A token bucket: it holds ``count`` calls and refills at ``count / per``
    calls a second.
    """

    count: int = attrs.field(validator=_positive_int)
    per: float = attrs.field(default=60.0, validator=_positive_seconds)


def _default_rates() -> Mapping[str, Rate]:
    return types.MappingProxyType(
        {
            "send_notification": Rate(60, per=60.0),
            "send_email": Rate(30, per=60.0),
            "send_sms": Rate(10, per=60.0),
            "http_request": Rate(60, per=60.0),
        }
    )


def _rates(value: Mapping[object, object]) -> Mapping[str, Rate]:
    rates: dict[str, Rate] = {}
    for method, rate in dict(value).items():
        if isinstance(method, str) and isinstance(rate, Rate):
            rates[method] = rate
        else:
            raise TypeError(f"rates must map API method names to Rate (got {method!r}: {rate!r})")
    return types.MappingProxyType(rates)


@attrs.frozen(kw_only=True)
class ApiLimits:
    """How much one plugin may keep and send for one tenant; None lifts a limit.

    ::

        PluginHost(
            services,
            limits=ApiLimits(store_bytes=50 * 2**20, rates={"send_email": Rate(100, per=60)}),
        )

    Store limits count each key's UTF-8 length plus its value's JSON text;
    ``rates`` maps an API method's name to its :class:`Rate` (methods it does
    not name are not rate-limited; a host's own methods can use it too, see
    :meth:`PluginAPI._throttle`). Going over raises :class:`QuotaExceeded`
    (:class:`RateLimited` for a rate).
    """

    #: The most keys a plugin's store may hold for one tenant.
    store_keys: int | None = attrs.field(default=MAX_STORE_KEYS, validator=_positive_int_or_none)
    #: The most bytes (keys and JSON values) a plugin's store may hold for one tenant.
    store_bytes: int | None = attrs.field(default=MAX_STORE_BYTES, validator=_positive_int_or_none)
    #: The largest value under one key, as JSON (``ValueError`` beyond it).
    store_value_bytes: int = attrs.field(default=MAX_STORE_VALUE_BYTES, validator=_positive_int)
    #: Calls per method and (plugin, tenant): 60 notifications, 30 e-mails and 10 text
    #: messages a minute by default.
    rates: Mapping[str, Rate] = attrs.field(factory=_default_rates, converter=_rates)
    #: How ``http_request`` calls go out (the private-address rule, caps, time limit).
    network: NetworkPolicy = attrs.field(factory=NetworkPolicy)


class _Ledger(Protocol):
    """Where an :class:`ApiMeter` keeps store usage: a :class:`Storage` has these methods."""

    def charge_store(
        self,
        plugin_id: str,
        tenant: str,
        key: str,
        size: int | None,
        *,
        max_keys: int | None = None,
        max_bytes: int | None = None,
    ) -> int | None: ...

    def store_usage(self, plugin_id: str, tenant: str) -> StoreUsage: ...


class _KeptStore(Protocol):
    """Where an :class:`ApiMeter` keeps the plugins' stores itself: a :class:`Storage` has these
    methods."""

    def store_read(self, plugin_id: str, tenant: str, key: str) -> JSONValue: ...

    def store_write(
        self,
        plugin_id: str,
        tenant: str,
        key: str,
        value: JSONValue,
        *,
        max_keys: int | None = None,
        max_bytes: int | None = None,
    ) -> None: ...

    def store_remove(self, plugin_id: str, tenant: str, key: str) -> bool: ...


_KEPT_STORE_METHODS: Final = ("store_read", "store_write", "store_remove")


#: Buckets kept before full ones (as good as new) are dropped.
_MAX_BUCKETS: Final = 4096


@final
class ApiMeter:
    """The limits of a host's :class:`PluginAPI` objects, and what plugins used of them.

    A :class:`PluginHost` makes one over its storage and gives it to every API
    object it builds, so limits hold across the API objects of every snapshot.
    Store usage is kept in ``ledger`` (:meth:`Storage.charge_store`): with the
    host's storage it is shared by every process and survives restarts, and
    concurrent writes cannot take a store past its limits. Without one it is
    kept in this object's memory. Rates are counted in this process's memory
    (each process of a host allows the full rate).

    When the host services do not keep plugins' stores themselves, the meter
    keeps them in ``ledger`` too (:meth:`Storage.store_write`: each value and
    its charge in one transaction); a ledger without those methods (a storage
    written before them) has no store to offer, and store calls raise
    :class:`~services_ai_plugins.errors.NotSupported`.

    :param limits: the limits (default :class:`ApiLimits`).
    :param ledger: where store usage is kept (a :class:`Storage`).
    :param clock: seconds, for the rates (default ``time.monotonic``).
    :param access: the data-access log's buffer: every granted call of a method
        that needs a permission, made for a tenant, is added to it (a
        :class:`PluginHost` passes its own, flushed with its metrics).
    """

    def __init__(
        self,
        limits: ApiLimits | None = None,
        *,
        ledger: _Ledger | None = None,
        clock: Callable[[], float] = time.monotonic,
        access: AccessLog | None = None,
    ) -> None:
        missing = [name for name in ("charge_store", "store_usage") if not hasattr(ledger, name)]
        if ledger is not None and missing:
            raise TypeError(
                f"{ledger!r} cannot keep the plugins' store usage: it has no "
                f"{' and no '.join(missing)} (methods of the Storage protocol)"
            )
        #: The limits applied.
        self.limits: Final = limits if limits is not None else ApiLimits()
        self._ledger: Final[_Ledger] = ledger if ledger is not None else StoreLedger()
        kept = all(hasattr(self._ledger, name) for name in _KEPT_STORE_METHODS)
        self._store: Final = cast("_KeptStore", self._ledger) if kept else None
        self._clock: Final = clock
        #: Where granted calls on tenant data are recorded (None: not recorded).
        self.access: Final = access
        self._lock: Final = threading.Lock()
        # (plugin, tenant, method) -> [tokens, when they were counted, refusing since then]
        self._buckets: dict[tuple[str, str, str], list[float]] = {}
        # (plugin, HostServices method) pairs whose NotSupported was logged already.
        self._unsupported: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"ApiMeter({self.limits!r})"

    def store_usage(self, plugin_id: str, tenant: str) -> StoreUsage:
        """What the plugin keeps in its store for ``tenant``, as charged."""
        return self._ledger.store_usage(plugin_id, tenant)

    def charge_store(self, plugin_id: str, tenant: str, key: str, size: int | None) -> int | None:
        """Charge ``size`` bytes for ``key`` (None: its deletion); return the size it had.

        :raises QuotaExceeded: when the store would grow past a limit (nothing charged).
        """
        return self._ledger.charge_store(
            plugin_id,
            tenant,
            key,
            size,
            max_keys=self.limits.store_keys,
            max_bytes=self.limits.store_bytes,
        )

    def refund_store(self, plugin_id: str, tenant: str, key: str, size: int | None) -> None:
        """Put back the size ``key`` had before a charge whose write failed."""
        self._ledger.charge_store(plugin_id, tenant, key, size)

    def store_read(self, plugin_id: str, tenant: str, key: str) -> JSONValue:
        """A value of the plugin's store kept by the SDK (a copy), or None.

        :raises NotSupported: when the ledger keeps no values.
        """
        return self._kept("store_get").store_read(plugin_id, tenant, key)

    def store_write(self, plugin_id: str, tenant: str, key: str, value: JSONValue) -> None:
        """Keep ``value`` in the plugin's store kept by the SDK, charged within the limits, in one
        transaction.

        :raises QuotaExceeded: when the store would grow past a limit (nothing kept).
        :raises NotSupported: when the ledger keeps no values.
        """
        self._kept("store_set").store_write(
            plugin_id,
            tenant,
            key,
            value,
            max_keys=self.limits.store_keys,
            max_bytes=self.limits.store_bytes,
        )

    def store_remove(self, plugin_id: str, tenant: str, key: str) -> bool:
        """Forget ``key`` of the plugin's store kept by the SDK; whether it was there.

        :raises NotSupported: when the ledger keeps no values.
        """
        return self._kept("store_delete").store_remove(plugin_id, tenant, key)

    def _kept(self, method: str) -> _KeptStore:
        if self._store is None:
            raise NotSupported(method, "a plugin key-value store")
        return self._store

    def _network_rules(self, plugin_id: str) -> tuple[HostRule, ...]:
        """The hosts the plugin's approved manifest lets it reach (none without a storage)."""
        get_plugin = getattr(self._ledger, "get_plugin", None)
        record = get_plugin(plugin_id) if get_plugin is not None else None
        if record is None or getattr(record.status, "value", record.status) != "approved":
            return ()
        entries = record.manifest.get("network") or []
        return tuple(parse_rule(entry) for entry in entries if isinstance(entry, str))

    def first_unsupported(self, plugin_id: str, method: str) -> bool:
        """Whether this is the first NotSupported of the HostServices ``method`` for the plugin
        (the API logs only that one)."""
        key = (plugin_id, method)
        with self._lock:
            if key in self._unsupported:
                return False
            self._unsupported.add(key)
            return True

    def take(self, plugin_id: str, tenant: str, method: str) -> tuple[float, bool] | None:
        """Count one call of ``method``: None when its rate allows it, else (seconds until it
        would, whether this is the first refusal since the last allowed call)."""
        rate = self.limits.rates.get(method)
        if rate is None:
            return None
        key = (plugin_id, tenant, method)
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= _MAX_BUCKETS:
                    self._prune(now)
                bucket = self._buckets[key] = [float(rate.count), now, 0.0]
            refill = rate.count / rate.per
            tokens = min(float(rate.count), bucket[0] + (now - bucket[1]) * refill)
            bucket[1] = now
            if tokens >= 1.0:
                bucket[0] = tokens - 1.0
                bucket[2] = 0.0
                return None
            bucket[0] = tokens
            first = not bucket[2]
            bucket[2] = 1.0
            return (1.0 - tokens) / refill, first

    def _prune(self, now: float) -> None:
        """Drop the buckets that are full again: a new one would be the same."""
        rates = self.limits.rates
        for key, (tokens, when, _) in list(self._buckets.items()):
            rate = rates[key[2]]
            if tokens + (now - when) * rate.count / rate.per >= rate.count:
                del self._buckets[key]


def requires(permission: str | None) -> Callable[[F], F]:
    """Declare the permission an API method needs (None: its own data, always allowed).

    Hosts add API methods by subclassing :class:`PluginAPI`::

        class MyAPI(PluginAPI):
            @requires("read_tickets")
            def list_tickets(self, *, status: str | None = None) -> list[Ticket]:
                tenant = self._require_tenant("list_tickets")
                return self._services.list_tickets(tenant, status=status)

    Before the method body runs, the permission is checked (a refusal raises
    :class:`PermissionDenied` and calls the host's ``on_denied``), then each
    argument against the method's annotations: ``str``, ``int`` (not a
    ``bool``), ``float``, ``None``, unions, mappings, iterables of a type, and
    classes. A wrong type raises ``TypeError`` naming the method and the
    argument, and nothing reaches the host services; annotations that cannot
    be resolved at run time, and ``JSONValue``, are not checked here.

    A granted call made with a tenant goes into the host's data-access log,
    with the records it returned; when it returned none, with the ids it asked
    for, read from its first parameter named ``<kind>_id`` (one id) or
    ``<kind>_ids`` (several): ``get_ticket(ticket_id)`` of an unknown id is
    logged as asking for ``ticket`` ``ticket_id``.
    """

    def decorate(method: F) -> F:
        name = method.__name__
        arguments = _Signature(method)

        if permission is None:

            def checked(self: PluginAPI, *args: Any, **kwargs: Any) -> Any:
                if args or kwargs:
                    arguments.check(args, kwargs)
                try:
                    return method(self, *args, **kwargs)
                except NotSupported as missing:
                    self._unsupported(name, missing)
                    raise

        else:
            asks = asked_for(method)

            def checked(self: PluginAPI, *args: Any, **kwargs: Any) -> Any:
                if permission not in self._grants:
                    self._deny(permission, name)
                if args or kwargs:
                    arguments.check(args, kwargs)
                try:
                    result = method(self, *args, **kwargs)
                except NotSupported as missing:
                    self._unsupported(name, missing)
                    raise
                # The data-access log: a granted call that returned (refusals are DeniedCalls).
                access = self._meter.access
                if access is not None and self._tenant is not None:
                    # A call that returned no record is kept with what it asked for (a record
                    # with an id, the common case, costs one getattr here).
                    asked = (
                        asks(args, kwargs)
                        if asks is not None
                        and getattr(result, "id", None) is None
                        and carries_no_id(result)
                        else None
                    )
                    if asked is None:
                        access.add(self._plugin_id, self._tenant, name, permission, result)
                    else:
                        access.add_asked(self._plugin_id, self._tenant, name, permission, asked)
                return result

        checked.__name__ = name
        checked.__qualname__ = method.__qualname__
        checked.__doc__ = method.__doc__
        checked.__module__ = method.__module__
        checked.__wrapped__ = method  # type: ignore[attr-defined]
        checked.__services_ai_permission__ = permission  # type: ignore[attr-defined]
        return checked  # type: ignore[return-value]

    return decorate


# -- argument checks -------------------------------------------------------------------------------


@attrs.frozen
class _Accepts:
    """What one parameter accepts."""

    #: A value must be an instance of one of these...
    types: tuple[type, ...]
    #: ... and pass this test, if any.
    test: Callable[[Any], bool] | None
    #: The words for a message ("str or None").
    text: str
    #: Exact types accepted without more ado (the fast path: ``type(value) in fast``).
    fast: frozenset[type]

    def __call__(self, value: object) -> bool:
        return isinstance(value, self.types) and (self.test is None or self.test(value))


class _Signature:
    """The argument checks of one API method, built from its annotations on its first call.

    ``check(args, kwargs)`` raises TypeError for the first argument of a type the
    method does not accept. It is generated per method: one exact-type look-up per
    positional argument, the general check only for other types.
    """

    __slots__ = ("_method", "check")

    def __init__(self, method: Callable[..., Any]) -> None:
        self._method = method
        self.check: Callable[[tuple[Any, ...], dict[str, Any]], None] = self._first

    def _first(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.check = check = self._build()
        check(args, kwargs)

    def _build(self) -> Callable[[tuple[Any, ...], dict[str, Any]], None]:
        names = getattr(self._method, "__globals__", {})
        where = self._method.__qualname__
        positional: list[tuple[str, _Accepts] | None] = []
        named: dict[str, tuple[str, _Accepts]] = {}
        parameters = list(inspect.signature(self._method).parameters.values())[1:]  # self
        for parameter in parameters:
            if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                break
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                continue
            accepts = _accepts(_resolve(parameter.annotation, names))
            param = None if accepts is None else (parameter.name, accepts)
            if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
                positional.append(param)
            if param is not None and parameter.kind is not inspect.Parameter.POSITIONAL_ONLY:
                named[parameter.name] = param

        def refuse(name: str, accepts: _Accepts, value: object) -> TypeError:
            return TypeError(
                f"{where}(): {name} must be {accepts.text}, not {type(value).__name__}"
            )

        def slow(name: str, accepts: _Accepts) -> Callable[[object], None]:
            def check_one(value: object) -> None:
                if not accepts(value):
                    raise refuse(name, accepts, value)

            return check_one

        def check_named(kwargs: dict[str, Any]) -> None:
            for key, value in kwargs.items():
                param = named.get(key)
                if param is not None and type(value) not in param[1].fast and not param[1](value):
                    raise refuse(param[0], param[1], value)

        scope: dict[str, Any] = {"check_named": check_named}
        lines = ["def check(args, kwargs):"]
        if any(param is not None for param in positional):
            lines.append("    n = len(args)")
        for index, param in enumerate(positional):
            if param is not None:
                scope[f"fast{index}"] = param[1].fast
                scope[f"slow{index}"] = slow(*param)
                lines.append(
                    f"    if n > {index} and type(args[{index}]) not in fast{index}:"
                    f" slow{index}(args[{index}])"
                )
        lines.append("    if kwargs: check_named(kwargs)" if named else "    pass")
        # As attrs builds __init__: the text holds parameter positions only, no names or
        # annotations (those stay in the scope), so nothing from the method can inject code.
        exec("\n".join(lines), scope)  # noqa: S102 - see above
        check: Callable[[tuple[Any, ...], dict[str, Any]], None] = scope["check"]
        return check


def _resolve(annotation: object, names: Mapping[str, Any]) -> object:
    """The annotation as an object (None: leave the argument unchecked)."""
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        try:
            annotation = eval(annotation, dict(names))  # noqa: S307 - the method's own annotation
        except Exception:  # noqa: BLE001 - a name only type checkers see: not checked here
            return None
        if isinstance(annotation, str):
            return None  # a string alias (JSONValue): the method checks such values itself
    return annotation


def _not_bool(value: object) -> bool:
    return type(value) is not bool


_NONE: Final = type(None)


def _simple(kind: type, text: str | None = None) -> _Accepts:
    return _Accepts((kind,), None, text or kind.__name__, frozenset({kind}))


def _accepts(annotation: object) -> _Accepts | None:
    """How to check a value against ``annotation``; None: anything goes."""
    if annotation is None or annotation is Any or annotation is object:
        return None
    if annotation is _NONE:
        return _simple(_NONE, "None")
    if annotation is int:
        return _Accepts((int,), _not_bool, "int", frozenset({int}))
    if annotation is float:
        return _Accepts((int, float), _not_bool, "float", frozenset({int, float}))
    supertype = getattr(annotation, "__supertype__", None)  # a NewType
    if supertype is not None:
        return _accepts(supertype)
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return _union([_accepts(argument) for argument in arguments])
    if origin is typing.Literal:
        allowed = tuple(arguments)
        return _Accepts(
            (object,),
            lambda value: any(type(value) is type(a) and value == a for a in allowed),
            " or ".join(repr(a) for a in allowed),
            frozenset(),
        )
    if isinstance(origin, type):
        if issubclass(origin, Mapping):
            return _Accepts((origin,), None, "a mapping", frozenset({dict}))
        if issubclass(origin, Iterable) and not issubclass(origin, (str, bytes)):
            homogeneous = len(arguments) == 1 or (len(arguments) == 2 and arguments[1] is ...)
            inner = _accepts(arguments[0]) if arguments and homogeneous else None
            text = _article(origin) + (f" of {inner.text}" if inner is not None else "")
            return _Accepts((origin,), _items(inner), text, frozenset())
        return _simple(origin)
    if isinstance(annotation, type):
        return _simple(annotation)
    return None


def _article(origin: type) -> str:
    return {"Iterable": "an iterable", "Sequence": "a sequence"}.get(
        origin.__name__, f"a {origin.__name__}"
    )


def _items(inner: _Accepts | None) -> Callable[[Any], bool]:
    """The test of an iterable: not a string or a mapping, and (if it is a collection) its items."""

    def test(value: Any) -> bool:
        if isinstance(value, (str, bytes, Mapping)):
            return False
        if inner is None or not isinstance(value, (list, tuple, set, frozenset)):
            return True  # an iterator is not consumed here: the method checks what it reads
        return all(inner(item) for item in value)

    return test


def _union(parts: list[_Accepts | None]) -> _Accepts | None:
    known = [part for part in parts if part is not None]
    if len(known) < len(parts):
        return None
    kinds = tuple(kind for part in known for kind in part.types)
    text = " or ".join(part.text for part in known)
    fast = frozenset().union(*(part.fast for part in known))
    if all(part.test is None for part in known):
        return _Accepts(kinds, None, text, fast)
    return _Accepts(kinds, lambda value: any(part(value) for part in known), text, fast)


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
    :param settings: the plugin's settings for the tenant (a :class:`PluginHost`
        passes the registry's, and the host services are never asked). Without
        it, :meth:`get_settings` asks the services' deprecated ``get_settings``
        if they override it, else finds none.
    :param meter: the limits of the plugin's store and of its messages, and
        what it used of them (a :class:`PluginHost` passes its own, shared by
        every API object it builds); default: an :class:`ApiMeter` of this
        object's own, with the default :class:`ApiLimits`.
    """

    __slots__ = (
        "_context",
        "_grants",
        "_meter",
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
        meter: ApiMeter | None = None,
    ) -> None:
        if context is not None and tenant is not None and context.tenant != tenant:
            raise TenantScopeError(plugin_id, "PluginAPI", tenant, context.tenant)
        self._meter: Final = meter if meter is not None else ApiMeter()
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
        call running now for this API's tenant (None outside such a call). The
        call's context follows it into threads started with
        ``contextvars.copy_context().run`` and into asyncio tasks created
        during the call. A context of another tenant is never returned, and
        the API acts for its own tenant whatever the running call's context.
        """
        if self._context is not None:
            return self._context
        return context_for(self._tenant)

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
    @addresses("notification", "recipient")
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
        self._throttle("send_notification", tenant)
        self._services.send_notification(tenant, notification)

    @requires("send_email")
    @addresses("email", "to")
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
        self._throttle("send_email", tenant)
        self._services.send_email(tenant, email)

    @requires("send_sms")
    @addresses("sms", "to")
    def send_sms(self, to: str, text: str) -> None:
        """Send a text message on the tenant's behalf."""
        tenant = self._scope("send_sms")
        sms = Sms(tenant=tenant, to=to, text=text)
        self._throttle("send_sms", tenant)
        self._services.send_sms(tenant, sms)

    # -- the plugin's own data (no permission needed) --------------------------------------------

    @requires(None)
    def get_settings(self) -> dict[str, JSONValue]:
        """This plugin's settings for the tenant, defaults filled in."""
        tenant = self._scope("get_settings")
        if self._settings is not None:
            return dict(self._settings)
        if provides(self._services, "get_settings"):  # deprecated: only without a host
            return dict(self._services.get_settings(tenant, self._plugin_id))
        return {}

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
        """A value this plugin kept for the tenant, or ``default``.

        The store is the host services' when they override the store methods,
        else the SDK's own, on the host's storage (see :class:`HostServices`).
        """
        tenant = self._scope("store_get")
        name = _key(key)
        if self._app_store():
            value = self._services.store_get(tenant, self._plugin_id, name)
        else:
            value = self._meter.store_read(self._plugin_id, tenant, name)
        return default if value is None else value

    @requires(None)
    def store_set(self, key: str, value: JSONValue) -> None:
        """Keep a JSON value for the tenant under ``key``.

        The store's limits (:class:`ApiLimits`: by default 64 KiB a value,
        1000 keys and 10 MiB in all, counting keys and JSON values) hold for
        every process of the host.

        :raises ValueError: for a bad key, a value JSON cannot carry, or one
            over ``store_value_bytes``.
        :raises QuotaExceeded: when the store would hold too many keys or
            bytes; nothing is kept (deleting keys makes room).
        """
        tenant = self._scope("store_set")
        name = _key(key)
        checked = check_json(value)
        size = len(json.dumps(checked, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        largest = self._meter.limits.store_value_bytes
        if size > largest:
            raise ValueError(f"value for {key!r} is {size} bytes; at most {largest}")
        size += len(name.encode("utf-8"))
        if not self._app_store():
            try:  # the SDK's store: the value and its charge in one transaction
                self._meter.store_write(self._plugin_id, tenant, name, checked)
            except QuotaExceeded as refused:
                self._refuse("store_set", None, str(refused))
                raise
            return
        try:
            previous = self._meter.charge_store(self._plugin_id, tenant, name, size)
        except QuotaExceeded as refused:
            self._refuse("store_set", None, str(refused))
            raise
        try:
            self._services.store_set(tenant, self._plugin_id, name, checked)
        except BaseException:
            self._meter.refund_store(self._plugin_id, tenant, name, previous)
            raise

    @requires(None)
    def store_delete(self, key: str) -> None:
        """Forget ``key`` for the tenant."""
        tenant = self._scope("store_delete")
        name = _key(key)
        if not self._app_store():
            self._meter.store_remove(self._plugin_id, tenant, name)
            return
        self._services.store_delete(tenant, self._plugin_id, name)
        self._meter.refund_store(self._plugin_id, tenant, name, None)

    @requires("http_requests")
    def http_request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: JSONValue = None,
        body: bytes | str | None = None,
        timeout: float | None = None,
    ) -> HttpResponse:
        """Send an HTTP request, made by the host, to a host the manifest's ``network`` lists.

        ``json`` sends a JSON body (with its content type), ``body`` bytes or text; the
        response is read whole (up to the host's limit)::

            reply = api.http_request("POST", "https://api.example-crm.com/leads", json={...})
            if reply.status == 201:
                created = reply.json()

        The request goes out only over the scheme and port the rule allows, to a public
        address the host resolved and connected to itself; redirects are followed (each
        hop checked again). Limits: the host's :class:`NetworkPolicy`
        (``PluginHost(network=...)``) and the ``http_request`` rate.

        :raises EgressRefused: when a guard refuses (its ``reason``: ``"host"``,
            ``"address"``, ``"too_large"``, ``"timeout"``, ...).
        :raises RateLimited: over the plugin's ``http_request`` rate.
        """
        self._throttle("http_request", self._tenant or "")
        sent_headers = dict(headers or {})
        data: bytes | None
        if json is not None:
            if body is not None:
                raise TypeError("http_request() takes json or body, not both")
            data = _json_body(json)
            sent_headers.setdefault("Content-Type", "application/json")
        else:
            data = body.encode("utf-8") if isinstance(body, str) else body
        rules = self._meter._network_rules(self._plugin_id)
        try:
            return fetch(
                self._plugin_id,
                rules,
                self._meter.limits.network,
                method,
                url,
                headers=sent_headers,
                body=data,
                timeout=timeout,
            )
        except EgressRefused as refused:
            self._refuse("http_request", None, f"{refused.reason}: {refused}")
            raise

    async def ahttp_request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: JSONValue = None,
        body: bytes | str | None = None,
        timeout: float | None = None,
    ) -> HttpResponse:
        """:meth:`http_request` for async hooks: the request runs in a thread, not the loop
        (a sandboxed plugin's ``async def`` hook awaits it too: see docs/network.md)."""
        return await asyncio.to_thread(
            self.http_request,
            method,
            url,
            headers=headers,
            json=json,
            body=body,
            timeout=timeout,
        )

    # -- checks ----------------------------------------------------------------------------------

    def _app_store(self) -> bool:
        """Whether the host services keep plugins' stores (else the SDK does, in the meter).

        :raises TypeError: when they override some of the store methods but not all three.
        """
        own = [method for method in STORE_METHODS if provides(self._services, method)]
        if not own:
            return False
        if len(own) < len(STORE_METHODS):
            missing = [method for method in STORE_METHODS if method not in own]
            raise TypeError(
                f"{type(self._services).__name__} overrides {', '.join(own)} but not "
                f"{', '.join(missing)}: override all three store methods of HostServices, or "
                "none of them to let the SDK keep the plugins' stores"
            )
        return True

    def _scope(self, method: str) -> str:
        tenant = self._tenant
        if tenant is None:
            self._refuse(method, None, "no tenant in this hook")
            raise TenantScopeError(self._plugin_id, method, None, None)
        return tenant

    # Subclasses call it by this name too (see ``requires``).
    _require_tenant = _scope

    def _throttle(self, method: str, tenant: str) -> None:
        """Count one call of ``method`` against its rate (``ApiLimits.rates``), before it acts.

        A host's own channel methods call it too::

            @requires("send_fax")
            def send_fax(self, number: str, text: str) -> None:
                tenant = self._require_tenant("send_fax")
                self._throttle("send_fax", tenant)  # with ApiLimits(rates={"send_fax": ...})
                self._services.send_fax(tenant, number, text)

        The first refusal after an allowed call is logged and passed to
        ``on_denied``; the next ones of the same run are only raised.

        :raises RateLimited: when the rate is used up; nothing is done.
        """
        refused = self._meter.take(self._plugin_id, tenant, method)
        if refused is None:
            return
        retry_after, first = refused
        rate = self._meter.limits.rates[method]
        error = RateLimited(
            self._plugin_id, tenant, method, rate.count, per=rate.per, retry_after=retry_after
        )
        if first:
            self._refuse(method, None, f"over its rate of {rate.count} calls per {rate.per:g} s")
        raise error

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

    def _unsupported(self, method: str, error: NotSupported) -> None:
        """Make a call the app does not support visible: logged at INFO once per (plugin,
        HostServices method) and host; not a refusal, so ``on_denied`` does not hear of it."""
        if self._meter.first_unsupported(self._plugin_id, error.method):
            self.logger.info("%s(): %s; the plugin gets NotSupported (logged once)", method, error)

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


def _json_body(value: object) -> bytes:
    return json.dumps(check_json(value), ensure_ascii=False).encode("utf-8")


def _limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIST_LIMIT} (got {limit!r})")
    return limit


def _key(key: object) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_STORE_KEY_LENGTH:
        raise ValueError(f"a store key is a string of 1 to {MAX_STORE_KEY_LENGTH} characters")
    if "\x00" in key or not _encodable(key):
        raise ValueError(f"a store key may not hold NUL or lone surrogates (got {key!r})")
    return key


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_mapping(changes: object, name: str) -> dict[str, JSONValue]:
    checked = check_json(dict(changes)) if isinstance(changes, Mapping) else None
    if not isinstance(checked, dict):
        raise ValueError(f"{name} must be a mapping of field names to JSON values")
    return checked
