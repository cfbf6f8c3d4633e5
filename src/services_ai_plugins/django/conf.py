"""The ``SERVICES_AI_PLUGINS`` setting, and the one host of the process built from it.

::

    SERVICES_AI_PLUGINS = {
        "SERVICES": "crm.plugins.CrmServices",  # a HostServices class or factory (dotted path)
        "TENANT_RESOLVER": "crm.plugins.tenant_of",  # request -> tenant | (tenant, User) | None
        "STORAGE": "django",  # the project's "default" database; "django:<alias>" for another
        "PLUGINS_DIR": BASE_DIR / "plugins",
        "SANDBOX": {"timeout": 5.0, "trusted": ["legacy-crm-sync"]},  # SandboxPolicy(...)
        "BREAKER": {"consecutive_failures": 5},  # BreakerPolicy(...)
    }

Every key is optional. :func:`get_host` builds the host on first use (not at import, not
at start-up: a ``manage.py migrate`` never opens it) and closes it when the process exits;
changing the setting in a test (``override_settings``) closes it, and the next call builds
a new one. A bad value raises ``ImproperlyConfigured`` naming the key and what is wrong.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .._api import HostServices
from .._config import HostConfig, is_database_url
from .._dispatch import BreakerPolicy
from .._sandbox._policy import SandboxPolicy
from ..events import User

if TYPE_CHECKING:
    from django.http import HttpRequest

    from .._host import PluginHost
    from .._storage._protocol import Storage

__all__ = [
    "SETTING",
    "PluginsSettings",
    "TenantResolver",
    "built_host",
    "close_host",
    "get_host",
    "plugins_settings",
    "resolve_tenant",
]

#: The name of the Django setting.
SETTING: Final = "SERVICES_AI_PLUGINS"

#: A function of the request: its tenant (and signed-in user), or None (no tenant: not ours).
TenantResolver = Callable[["HttpRequest"], "str | tuple[str, User | None] | None"]

_KEYS: Final = frozenset(
    {
        "SERVICES",
        "TENANT_RESOLVER",
        "STORAGE",
        "PLUGINS_DIR",
        "SANDBOX",
        "BREAKER",
        "HOST",
        "ACTOR",
        "ADMIN_UPLOAD_LIMIT",
        "TRUST_SANDBOXED_HTML",
    }
)


class _NoServices(HostServices):
    """No ``SERVICES`` set: plugins get no data (each data call raises NotSupported)."""


def _problem(key: str, message: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{SETTING}[{key!r}] {message}")


def _imported(key: str, value: object) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return import_string(value)
    except ImportError as exc:
        raise _problem(key, f"names {value!r}, which cannot be imported: {exc}") from exc


def _options(key: str, value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _problem(key, f"must be a dict of keyword arguments, not {type(value).__name__}")
    return dict(value)


@attrs.frozen(kw_only=True)
class PluginsSettings:
    """The ``SERVICES_AI_PLUGINS`` setting, read and checked."""

    #: Builds the app's HostServices (a class or a function of no arguments).
    services: Callable[[], HostServices]
    #: The request's tenant and user (None: the default rule, ``request.tenant``).
    tenant_resolver: TenantResolver | None
    #: ``("django", alias)`` for the project's database, else a SQLite file or PostgreSQL URL,
    #: or a function of no arguments that returns the storage.
    storage: tuple[str, str] | Callable[[], Storage]
    plugins_dir: Path | None
    sandbox: SandboxPolicy
    breaker: BreakerPolicy
    #: More keyword arguments for :class:`~services_ai_plugins.PluginHost`.
    host_options: Mapping[str, Any]
    #: The actor of the host's own changes in the audit trail.
    actor: str
    #: The largest ZIP archive the admin accepts, in bytes.
    admin_upload_limit: int
    #: Insert sandboxed plugins' HTML (head, footer, widgets) as it is, instead of escaped.
    trust_sandboxed_html: bool = False

    @classmethod
    def from_django(cls) -> PluginsSettings:
        """Read ``settings.SERVICES_AI_PLUGINS`` (absent: every default).

        :raises ImproperlyConfigured: naming the key whose value is wrong.
        """
        given = getattr(django_settings, SETTING, None) or {}
        if not isinstance(given, Mapping):
            raise ImproperlyConfigured(f"{SETTING} must be a dict, not {type(given).__name__}")
        unknown = sorted(set(given) - _KEYS)
        if unknown:
            raise ImproperlyConfigured(
                f"{SETTING} has unknown keys {unknown}; known: {sorted(_KEYS)}"
            )
        services = _imported("SERVICES", given.get("SERVICES", _NoServices))
        if not callable(services):
            raise _problem("SERVICES", "must be a HostServices class or factory")
        resolver = _imported("TENANT_RESOLVER", given.get("TENANT_RESOLVER"))
        if resolver is not None and not callable(resolver):
            raise _problem("TENANT_RESOLVER", "must be a function of the request")
        try:
            sandbox = SandboxPolicy(**_options("SANDBOX", given.get("SANDBOX")))
        except (TypeError, ValueError) as exc:
            raise _problem("SANDBOX", f"is not a valid sandbox policy: {exc}") from exc
        try:
            breaker = BreakerPolicy(**_options("BREAKER", given.get("BREAKER")))
        except (TypeError, ValueError) as exc:
            raise _problem("BREAKER", f"is not a valid breaker policy: {exc}") from exc
        folder = given.get("PLUGINS_DIR")
        limit = given.get("ADMIN_UPLOAD_LIMIT", 20 * 2**20)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise _problem("ADMIN_UPLOAD_LIMIT", f"must be a positive number of bytes ({limit!r})")
        actor = given.get("ACTOR", "django")
        if not isinstance(actor, str) or not actor:
            raise _problem("ACTOR", "must be a non-empty string")
        return cls(
            services=services,
            tenant_resolver=resolver,
            storage=_storage_value(given.get("STORAGE", "django")),
            plugins_dir=Path(folder).resolve() if folder is not None else None,
            sandbox=sandbox,
            breaker=breaker,
            host_options=_options("HOST", given.get("HOST")),
            actor=actor,
            admin_upload_limit=limit,
            trust_sandboxed_html=given.get("TRUST_SANDBOXED_HTML", False) is True,
        )

    def open_storage(self) -> Storage:
        """The registry's storage this setting names (opened now)."""
        if callable(self.storage):
            return self.storage()
        kind, value = self.storage
        if kind == "django":
            from .storage import DjangoStorage  # noqa: PLC0415 - needs the app's models

            return DjangoStorage(using=value)
        return HostConfig(db=value, plugins_dir=self.folder()).open_storage()

    def folder(self) -> Path:
        """Where plugin code lives: ``PLUGINS_DIR``, else the SDK's default folder."""
        if self.plugins_dir is not None:
            return self.plugins_dir
        return HostConfig.from_env().plugins_dir


def _storage_value(value: object) -> tuple[str, str] | Callable[[], Storage]:
    if isinstance(value, str):
        if value == "django":
            return ("django", "default")
        if value.startswith("django:"):
            alias = value.removeprefix("django:")
            if alias not in django_settings.DATABASES:
                raise _problem("STORAGE", f"names database {alias!r}, which DATABASES lacks")
            return ("django", alias)
        if is_database_url(value) or value.endswith((".db", ".sqlite", ".sqlite3")):
            path = value if is_database_url(value) else str(Path(value).resolve())
            return ("url", path)
        imported = _imported("STORAGE", value)
        if callable(imported):
            return imported  # type: ignore[no-any-return]
    elif callable(value):
        return value
    raise _problem(
        "STORAGE",
        f"must be 'django', 'django:<database alias>', a SQLite file, a postgresql:// URL or "
        f"a function that opens a storage (got {value!r})",
    )


_lock = threading.Lock()
_host: PluginHost | None = None
_settings: PluginsSettings | None = None


def plugins_settings() -> PluginsSettings:
    """The setting, read once (again after :func:`close_host`)."""
    global _settings  # noqa: PLW0603 - one per process, on purpose
    found = _settings
    if found is None:
        found = _settings = PluginsSettings.from_django()
    return found


def get_host() -> PluginHost:
    """The process's host, built on first use from ``SERVICES_AI_PLUGINS``.

    :raises ImproperlyConfigured: when the setting is wrong.
    """
    global _host  # noqa: PLW0603 - one per process, on purpose
    host = _host
    if host is not None:
        return host
    with _lock:
        if _host is None:
            _host = _build(plugins_settings())
            atexit.register(close_host)
        return _host


def _build(config: PluginsSettings) -> PluginHost:
    from .._host import PluginHost  # noqa: PLC0415 - only when a host is asked for
    from .api import DjangoPluginAPI  # noqa: PLC0415

    options = dict(config.host_options)
    options.setdefault("api_class", DjangoPluginAPI)
    try:
        services = config.services()
    except Exception as exc:
        raise _problem("SERVICES", f"could not be built: {type(exc).__name__}: {exc}") from exc
    storage = config.open_storage()
    try:
        return PluginHost(
            services,
            storage=storage,
            plugins_dir=config.folder(),
            sandbox=config.sandbox,
            breaker=config.breaker,
            actor=config.actor,
            **options,
        )
    except Exception:
        storage.close()
        raise


def built_host() -> PluginHost | None:
    """The process's host if it was built, else None (never builds one)."""
    return _host


def close_host() -> None:
    """Close the process's host (if built); the next :func:`get_host` builds a new one."""
    global _host, _settings
    with _lock:
        host, _host, _settings = _host, None, None
    if host is not None:
        try:
            host.close()
        finally:
            host.registry.storage.close()  # opened here, so closed here (the host does not)


def resolve_tenant(request: HttpRequest) -> tuple[str, User | None] | None:
    """The request's tenant and user by ``TENANT_RESOLVER`` (default: ``request.tenant``).

    A resolver may answer a tenant name, a ``(tenant, User)`` pair or None.

    :raises ImproperlyConfigured: when the resolver answers something else.
    """
    resolver = plugins_settings().tenant_resolver
    found: object = resolver(request) if resolver is not None else getattr(request, "tenant", None)
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
    raise _problem(
        "TENANT_RESOLVER",
        f"answered {found!r}: it must answer a tenant name, a (tenant, User) pair or None",
    )


def _setting_changed(*, setting: str, **_: object) -> None:
    if setting in (SETTING, "DATABASES"):
        close_host()


def connect_signals() -> None:
    """Close the host when a test changes the setting (``override_settings``)."""
    from django.core.signals import setting_changed  # noqa: PLC0415

    setting_changed.connect(_setting_changed, dispatch_uid="services_ai_plugins.conf")
