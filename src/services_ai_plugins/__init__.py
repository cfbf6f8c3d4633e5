"""services-ai-plugins: a safe, testable plugin SDK for multi-tenant business web apps.

The public API is what ``__all__`` lists; every module is private. Names are
imported on first use, so ``import services_ai_plugins`` (and a plugin's
``from services_ai_plugins import hookimpl``) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_names
from ._markers import hookimpl
from ._version import HOST_API_VERSION, __version__

if TYPE_CHECKING:
    from ._access import AccessPolicy
    from ._api import HostServices, PluginAPI, requires
    from ._check import check_plugin
    from ._config import HostConfig
    from ._dispatch import BreakerPolicy
    from ._host import PluginHealth, PluginHost
    from ._manifest import Manifest
    from ._notices import FailureMailer
    from ._registry import Registry, RegistryEvent, Suspension
    from ._sandbox._policy import SandboxPolicy
    from ._schema import manifest_json_schema
    from ._sources._package import pack_plugin, validate_plugin
    from ._storage._memory import MemoryStorage
    from ._storage._postgres._storage import PostgresStorage
    from ._storage._protocol import (
        AuditEvent,
        FailureRecord,
        HookMetrics,
        PluginRecord,
        PluginStatus,
        TenantRecord,
    )
    from ._storage._sqlite import SQLiteStorage
    from ._telemetry import MetricsPolicy
    from ._versions import UpgradePolicy, VersionDiff
    from .errors import (
        ConflictError,
        DependencyError,
        ManifestError,
        PackageError,
        PermissionDenied,
        PluginError,
        PluginNotFound,
        QuotaExceeded,
        RateLimited,
        RequirementsError,
        SandboxError,
        SandboxTimeout,
        SettingsError,
        StorageError,
        TransitionError,
        UpgradeError,
        VersionError,
    )

# Where each lazily imported name lives.
_LAZY: dict[str, str] = {
    "AccessPolicy": "._access",
    "AuditEvent": "._storage._protocol",
    "BreakerPolicy": "._dispatch",
    "ConflictError": ".errors",
    "DependencyError": ".errors",
    "FailureMailer": "._notices",
    "FailureRecord": "._storage._protocol",
    "HookMetrics": "._storage._protocol",
    "HostConfig": "._config",
    "HostServices": "._api",
    "Manifest": "._manifest",
    "ManifestError": ".errors",
    "MemoryStorage": "._storage._memory",
    "MetricsPolicy": "._telemetry",
    "PackageError": ".errors",
    "PermissionDenied": ".errors",
    "PluginAPI": "._api",
    "PluginError": ".errors",
    "PluginHealth": "._host",
    "PluginHost": "._host",
    "PluginNotFound": ".errors",
    "PluginRecord": "._storage._protocol",
    "PluginStatus": "._storage._protocol",
    "PostgresStorage": "._storage._postgres._storage",
    "QuotaExceeded": ".errors",
    "RateLimited": ".errors",
    "Registry": "._registry",
    "RegistryEvent": "._registry",
    "RequirementsError": ".errors",
    "SQLiteStorage": "._storage._sqlite",
    "SandboxError": ".errors",
    "SandboxPolicy": "._sandbox._policy",
    "SandboxTimeout": ".errors",
    "SettingsError": ".errors",
    "StorageError": ".errors",
    "Suspension": "._registry",
    "TenantRecord": "._storage._protocol",
    "TransitionError": ".errors",
    "UpgradeError": ".errors",
    "UpgradePolicy": "._versions",
    "VersionDiff": "._versions",
    "VersionError": ".errors",
    "check_plugin": "._check",
    "manifest_json_schema": "._schema",
    "pack_plugin": "._sources._package",
    "requires": "._api",
    "validate_plugin": "._sources._package",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


__all__ = [
    "HOST_API_VERSION",
    "AccessPolicy",
    "AuditEvent",
    "BreakerPolicy",
    "ConflictError",
    "DependencyError",
    "FailureMailer",
    "FailureRecord",
    "HookMetrics",
    "HostConfig",
    "HostServices",
    "Manifest",
    "ManifestError",
    "MemoryStorage",
    "MetricsPolicy",
    "PackageError",
    "PermissionDenied",
    "PluginAPI",
    "PluginError",
    "PluginHealth",
    "PluginHost",
    "PluginNotFound",
    "PluginRecord",
    "PluginStatus",
    "PostgresStorage",
    "QuotaExceeded",
    "RateLimited",
    "Registry",
    "RegistryEvent",
    "RequirementsError",
    "SQLiteStorage",
    "SandboxError",
    "SandboxPolicy",
    "SandboxTimeout",
    "SettingsError",
    "StorageError",
    "Suspension",
    "TenantRecord",
    "TransitionError",
    "UpgradeError",
    "UpgradePolicy",
    "VersionDiff",
    "VersionError",
    "__version__",
    "check_plugin",
    "hookimpl",
    "manifest_json_schema",
    "pack_plugin",
    "requires",
    "validate_plugin",
]
