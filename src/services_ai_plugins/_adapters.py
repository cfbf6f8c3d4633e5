"""What every framework adapter reads and builds the same way: its settings and its host.

One settings shape for every adapter (Django's ``SERVICES_AI_PLUGINS`` setting, Flask's
``app.config["SERVICES_AI_PLUGINS"]``, the Starlette adapter's ``settings=``)::

    {
        "SERVICES": "crm.plugins.CrmServices",  # a HostServices class or factory
        "TENANT_RESOLVER": "crm.plugins.tenant_of",  # request -> tenant | (tenant, User) | None
        "STORAGE": "/var/lib/crm/plugins.db",  # a SQLite file, a postgresql:// URL, a factory
        "PLUGINS_DIR": "/var/lib/crm/plugins",
        "SANDBOX": {"timeout": 5.0},  # SandboxPolicy(...)
        "BREAKER": {"consecutive_failures": 5},  # BreakerPolicy(...)
        "NETWORK": {"timeout": 5.0},  # NetworkPolicy(...): plugins' api.http_request
        "HOST": {"refresh_interval": 1.0},  # more PluginHost(...) arguments
        "ACTOR": "crm",
        "ADMIN_UPLOAD_LIMIT": 20 * 2**20,
        "TRUST_SANDBOXED_HTML": False,
    }

:meth:`AdapterSettings.from_mapping` checks every key (a wrong one raises
:class:`~services_ai_plugins.errors.ConfigError` naming it); :class:`HostHolder` keeps
the one host of a process, built at first use and closed once.
"""

from __future__ import annotations

import atexit
import importlib
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._api import HostServices, PluginAPI
from ._config import HostConfig, is_database_url
from ._dispatch import BreakerPolicy
from ._egress import NetworkPolicy
from ._sandbox._policy import SandboxPolicy
from .errors import ConfigError
from .events import User

if TYPE_CHECKING:
    from ._host import PluginHost
    from ._storage._protocol import Storage

__all__ = ["KEYS", "AdapterSettings", "HostHolder", "NoServices", "imported", "tenant_answer"]

#: The keys every adapter's settings may hold.
KEYS: Final = frozenset(
    {
        "SERVICES",
        "TENANT_RESOLVER",
        "STORAGE",
        "PLUGINS_DIR",
        "SANDBOX",
        "BREAKER",
        "NETWORK",
        "HOST",
        "ACTOR",
        "ADMIN_UPLOAD_LIMIT",
        "TRUST_SANDBOXED_HTML",
    }
)

#: A storage value an adapter understands itself (Django's ``"django:<alias>"``): its
#: factory, or None to let the common rules read it.
StorageHook = Callable[[str], "Callable[[], Storage] | None"]


class NoServices(HostServices):
    """No ``SERVICES`` set: plugins get no data (each data call raises NotSupported)."""


def imported(key: str, value: object, *, where: str = "SERVICES_AI_PLUGINS") -> Any:
    """``value``, or the object a dotted path ``"package.module.name"`` names.

    :raises ConfigError: naming ``key`` when the path cannot be imported.
    """
    if not isinstance(value, str):
        return value
    module, _, name = value.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            key, f"names {value!r}, which cannot be imported: {exc}", where=where
        ) from exc


def _options(key: str, value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            key, f"must be a dict of keyword arguments, not {type(value).__name__}", where=where
        )
    return dict(value)


@attrs.frozen(kw_only=True)
class AdapterSettings:
    """An adapter's settings, read and checked (see the module docstring)."""

    #: Builds the app's HostServices (a class or a function of no arguments).
    services: Callable[[], HostServices]
    #: The request's tenant and user (None: the adapter's default rule).
    tenant_resolver: Callable[..., object] | None
    #: Opens the registry's storage (``settings.open_storage()``).
    open_storage: Callable[[], Storage]
    #: Where plugin code lives (None: the SDK's default folder).
    plugins_dir: Path | None
    sandbox: SandboxPolicy
    breaker: BreakerPolicy
    #: More keyword arguments for :class:`~services_ai_plugins.PluginHost`.
    host_options: Mapping[str, Any]
    #: The actor of the host's own changes in the audit trail.
    actor: str
    #: The largest ZIP archive an admin page accepts, in bytes.
    admin_upload_limit: int
    #: Insert sandboxed plugins' HTML (head, footer, widgets) as it is, instead of escaped.
    trust_sandboxed_html: bool = False
    #: How plugins' ``api.http_request`` calls go out (None: the host's default policy).
    network: NetworkPolicy | None = None

    @classmethod
    def from_mapping(
        cls,
        given: object,
        *,
        where: str = "SERVICES_AI_PLUGINS",
        storage_hook: StorageHook | None = None,
        storage_forms: str = "",
        default_storage: object = None,
        default_actor: str = "host",
    ) -> AdapterSettings:
        """Read and check ``given`` (None: every default).

        ``storage_hook`` reads the storage values only this adapter understands
        (``storage_forms`` names them for the message of a wrong value);
        ``default_storage`` is the ``STORAGE`` used when none is given (None: the
        SDK's default registry, as a host built with no storage uses).

        :raises ConfigError: naming the key whose value is wrong.
        """
        given = {} if given is None else given
        if not isinstance(given, Mapping):
            raise ConfigError("", f"must be a dict, not {type(given).__name__}", where=where)
        unknown = sorted(set(given) - KEYS)
        if unknown:
            raise ConfigError("", f"has unknown keys {unknown}; known: {sorted(KEYS)}", where=where)
        services = imported("SERVICES", given.get("SERVICES", NoServices), where=where)
        if not callable(services):
            raise ConfigError("SERVICES", "must be a HostServices class or factory", where=where)
        resolver = imported("TENANT_RESOLVER", given.get("TENANT_RESOLVER"), where=where)
        if resolver is not None and not callable(resolver):
            raise ConfigError("TENANT_RESOLVER", "must be a function of the request", where=where)
        sandbox_options = _options("SANDBOX", given.get("SANDBOX"), where)
        breaker_options = _options("BREAKER", given.get("BREAKER"), where)
        try:
            sandbox = SandboxPolicy(**sandbox_options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                "SANDBOX", f"is not a valid sandbox policy: {exc}", where=where
            ) from exc
        try:
            breaker = BreakerPolicy(**breaker_options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                "BREAKER", f"is not a valid breaker policy: {exc}", where=where
            ) from exc
        network = _network(given.get("NETWORK"), given.get("HOST"), where)
        limit = given.get("ADMIN_UPLOAD_LIMIT", 20 * 2**20)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ConfigError(
                "ADMIN_UPLOAD_LIMIT", f"must be a positive number of bytes ({limit!r})", where=where
            )
        actor = given.get("ACTOR", default_actor)
        if not isinstance(actor, str) or not actor:
            raise ConfigError("ACTOR", "must be a non-empty string", where=where)
        folder = given.get("PLUGINS_DIR")
        plugins_dir = Path(folder).resolve() if folder is not None else None
        trust = given.get("TRUST_SANDBOXED_HTML", False)
        if not isinstance(trust, bool):
            raise ConfigError("TRUST_SANDBOXED_HTML", "must be True or False", where=where)
        return cls(
            services=services,
            tenant_resolver=resolver,
            open_storage=_storage(
                given.get("STORAGE", default_storage),
                plugins_dir,
                where,
                storage_hook,
                storage_forms,
            ),
            plugins_dir=plugins_dir,
            sandbox=sandbox,
            breaker=breaker,
            host_options=_options("HOST", given.get("HOST"), where),
            actor=actor,
            admin_upload_limit=limit,
            trust_sandboxed_html=trust,
            network=network,
        )

    def folder(self) -> Path:
        """Where plugin code lives: ``PLUGINS_DIR``, else the SDK's default folder."""
        if self.plugins_dir is not None:
            return self.plugins_dir
        return HostConfig.from_env().plugins_dir

    def build_host(self, *, api_class: type[PluginAPI] | None = None) -> PluginHost:
        """A new host on these settings (its storage opened here: close it with
        :meth:`HostHolder.close`, or ``host.registry.storage.close()`` after
        ``host.close()``).

        :raises ConfigError: when ``SERVICES`` cannot be built.
        """
        from ._host import PluginHost  # noqa: PLC0415 - the host's imports, only when built

        options = dict(self.host_options)
        if api_class is not None:
            options.setdefault("api_class", api_class)
        if self.network is not None:
            options["network"] = self.network
        try:
            services = self.services()
        except Exception as exc:
            raise ConfigError(
                "SERVICES", f"could not be built: {type(exc).__name__}: {exc}"
            ) from exc
        storage = self.open_storage()
        try:
            return PluginHost(
                services,
                storage=storage,
                plugins_dir=self.folder(),
                sandbox=self.sandbox,
                breaker=self.breaker,
                actor=self.actor,
                **options,
            )
        except Exception:
            storage.close()
            raise


def _network(value: object, host: object, where: str) -> NetworkPolicy | None:
    """``NETWORK``: the keyword arguments of a NetworkPolicy, or None."""
    if value is None:
        return None
    if isinstance(host, Mapping) and "network" in host:
        raise ConfigError(
            "NETWORK",
            "and HOST['network'] are both given: set the network policy in one place",
            where=where,
        )
    if isinstance(value, NetworkPolicy):
        return value
    try:
        return NetworkPolicy(**_options("NETWORK", value, where))
    except (TypeError, ValueError) as exc:
        raise ConfigError("NETWORK", f"is not a valid network policy: {exc}", where=where) from exc


def _storage(
    value: object, plugins_dir: Path | None, where: str, hook: StorageHook | None, forms: str
) -> Callable[[], Storage]:
    if value is None:

        def default() -> Storage:
            config = HostConfig.from_env()
            return config.open_storage()

        return default
    if isinstance(value, str):
        special = hook(value) if hook is not None else None
        if special is not None:
            return special
        if is_database_url(value) or value.endswith((".db", ".sqlite", ".sqlite3")):
            db = value if is_database_url(value) else str(Path(value).resolve())

            def at_value() -> Storage:
                folder = plugins_dir or HostConfig.from_env().plugins_dir
                return HostConfig(db=db, plugins_dir=folder).open_storage()

            return at_value
        found = imported("STORAGE", value, where=where)
        if callable(found):
            return found  # type: ignore[no-any-return]
    elif callable(value):
        return value
    raise ConfigError(
        "STORAGE",
        f"must be {forms}a SQLite file (.db, .sqlite, .sqlite3), a postgresql:// URL or a "
        f"function that opens a storage (got {value!r})",
        where=where,
    )


def tenant_answer(
    found: object, *, where: str = "SERVICES_AI_PLUGINS"
) -> tuple[str, User | None] | None:
    """A tenant resolver's answer as ``(tenant, user)``, or None (no tenant).

    A resolver may answer a tenant name, a ``(tenant, User)`` pair or None.

    :raises ConfigError: naming ``TENANT_RESOLVER`` when it answered something else.
    """
    if found is None:
        return None
    if isinstance(found, str):
        return (found, None) if found else None
    if (
        isinstance(found, tuple)
        and len(found) == 2
        and isinstance(found[0], str)
        and (found[1] is None or isinstance(found[1], User))
    ):
        return found[0], found[1]
    raise ConfigError(
        "TENANT_RESOLVER",
        f"answered {found!r}: it must answer a tenant name, a (tenant, User) pair or None",
        where=where,
    )


class HostHolder:
    """One host, built at first use from settings read then, and closed once.

    A process holds one (the Django app's), or an app does (Flask's extension, the
    Starlette lifespan). :meth:`close` closes the host and the storage it opened;
    the next :meth:`get` builds a new one.
    """

    def __init__(
        self,
        read: Callable[[], AdapterSettings],
        *,
        api_class: type[PluginAPI] | None = None,
        close_at_exit: bool = True,
    ) -> None:
        self._read = read
        self._api_class = api_class
        self._close_at_exit = close_at_exit
        self._lock = threading.Lock()
        self._host: PluginHost | None = None
        self._settings: AdapterSettings | None = None

    def settings(self) -> AdapterSettings:
        """The settings, read once (again after :meth:`close`)."""
        found = self._settings
        if found is None:
            found = self._settings = self._read()
        return found

    def get(self) -> PluginHost:
        """The host, built on first use."""
        host = self._host
        if host is not None:
            return host
        with self._lock:
            if self._host is None:
                self._host = self.settings().build_host(api_class=self._api_class)
                if self._close_at_exit:
                    atexit.register(self.close)
            return self._host

    def built(self) -> PluginHost | None:
        """The host if it was built, else None (never builds one)."""
        return self._host

    def close(self) -> None:
        """Close the host (if built) and its storage; the next :meth:`get` builds anew."""
        with self._lock:
            host, self._host, self._settings = self._host, None, None
        if host is not None:
            try:
                host.close()
            finally:
                host.registry.storage.close()
