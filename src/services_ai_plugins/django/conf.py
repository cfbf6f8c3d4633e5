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

The keys are every adapter's (see ``docs/django.md``); ``STORAGE`` also takes
``"django"`` and ``"django:<alias>"``, its default. :func:`get_host` builds the host on
first use (not at import, not at start-up: a ``manage.py migrate`` never opens it) and
closes it when the process exits; changing the setting in a test (``override_settings``)
closes it, and the next call builds a new one. A bad value raises
``ImproperlyConfigured`` naming the key and what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from .._adapters import AdapterSettings, HostHolder, tenant_answer
from ..errors import ConfigError
from ..events import User
from .api import DjangoPluginAPI

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

#: The setting, read and checked (every adapter's settings).
PluginsSettings = AdapterSettings

#: A function of the request: its tenant (and signed-in user), or None (no tenant: not ours).
TenantResolver = Callable[["HttpRequest"], "str | tuple[str, User | None] | None"]


@contextmanager
def _django_errors() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        raise ImproperlyConfigured(str(exc)) from exc


def _django_storage(value: str) -> Callable[[], Storage] | None:
    """``"django"`` and ``"django:<alias>"``: the registry in the project's database."""
    if value != "django" and not value.startswith("django:"):
        return None
    alias = value.removeprefix("django").removeprefix(":") or "default"
    if alias not in django_settings.DATABASES:
        raise ConfigError("STORAGE", f"names database {alias!r}, which DATABASES lacks")

    def open_storage() -> Storage:
        from .storage import DjangoStorage  # noqa: PLC0415 - needs the app's models

        return DjangoStorage(using=alias)

    return open_storage


def _read() -> AdapterSettings:
    with _django_errors():
        return AdapterSettings.from_mapping(
            getattr(django_settings, SETTING, None),
            storage_hook=_django_storage,
            storage_forms="'django', 'django:<alias>', ",
            default_storage="django",
            default_actor="django",
        )


_holder: Final = HostHolder(_read, api_class=DjangoPluginAPI)


def plugins_settings() -> AdapterSettings:
    """The setting, read once (again after :func:`close_host`).

    :raises ImproperlyConfigured: naming the key whose value is wrong.
    """
    return _holder.settings()


def get_host() -> PluginHost:
    """The process's host, built on first use from ``SERVICES_AI_PLUGINS``.

    :raises ImproperlyConfigured: when the setting is wrong.
    """
    host = _holder.built()
    if host is not None:
        return host
    with _django_errors():
        return _holder.get()


def built_host() -> PluginHost | None:
    """The process's host if it was built, else None (never builds one)."""
    return _holder.built()


def close_host() -> None:
    """Close the process's host (if built); the next :func:`get_host` builds a new one."""
    _holder.close()


def resolve_tenant(request: HttpRequest) -> tuple[str, User | None] | None:
    """The request's tenant and user by ``TENANT_RESOLVER`` (default: ``request.tenant``).

    A resolver may answer a tenant name, a ``(tenant, User)`` pair or None.

    :raises ImproperlyConfigured: when the resolver answers something else.
    """
    resolver = plugins_settings().tenant_resolver
    found: object = resolver(request) if resolver is not None else getattr(request, "tenant", None)
    with _django_errors():
        return tenant_answer(found)


def _setting_changed(*, setting: str, **_: object) -> None:
    if setting in (SETTING, "DATABASES"):
        close_host()


def connect_signals() -> None:
    """Close the host when a test changes the setting (``override_settings``)."""
    from django.core.signals import setting_changed  # noqa: PLC0415

    setting_changed.connect(_setting_changed, dispatch_uid="services_ai_plugins.conf")
