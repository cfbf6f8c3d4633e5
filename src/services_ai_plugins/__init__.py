"""services-ai-plugins: a safe, testable plugin SDK for multi-tenant business web apps.

The public API is what ``__all__`` lists; every module is private. Names are
imported on first use, so ``import services_ai_plugins`` (and a plugin's
``from services_ai_plugins import hookimpl``) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._markers import hookimpl
from ._version import HOST_API_VERSION, __version__

if TYPE_CHECKING:
    from ._api import ApiLimits, ApiMeter, DeniedCall, HostServices, PluginAPI, Rate, requires
    from ._check import CheckProblem, CheckReport, check_plugin
    from ._dependencies import check_environment, check_plugins, load_order
    from ._dispatch import BreakerPolicy, HookTrace, HostHook, PluginOutcome
    from ._host import PluginHealth, PluginHost
    from ._manifest import MAX_MANIFEST_BYTES, Isolation, Manifest
    from ._permissions import DEFAULT_PERMISSIONS, Permission, PermissionCatalogue, Risk
    from ._registry import Registry, RegistryEvent, Suspension
    from ._sandbox._confine import Capabilities, Layer, Limits
    from ._sandbox._pool import Sandbox, SandboxedPlugin, SandboxPolicy, WorkerInfo
    from ._scaffold import ScaffoldResult, scaffold_plugin
    from ._schema import manifest_json_schema
    from ._settings import SettingSpec, SettingType, validate_settings
    from ._sources._archive import (
        ArchiveError,
        ArchiveLimits,
        ExtractedPlugin,
        code_hash,
        extract_plugin,
        install_archive,
    )
    from ._sources._discovery import (
        ENTRY_POINT_GROUP,
        DiscoveredPlugin,
        Discovery,
        discover_entry_points,
        discover_folders,
        register_discovered,
    )
    from ._sources._loader import IntegrityError, LoadedPlugin, load_plugin, unload_plugin
    from ._sources._package import PackResult, ValidatedPlugin, pack_plugin, validate_plugin
    from ._storage._memory import MemoryStorage
    from ._storage._postgres._storage import PostgresStorage
    from ._storage._protocol import (
        AuditEvent,
        AuditQuery,
        Change,
        ChangeFeed,
        FailureRecord,
        HookMetrics,
        MetricsDelta,
        PluginRecord,
        PluginStatus,
        SourceKind,
        Storage,
        StoreUsage,
        TenantRecord,
        VersionRecord,
    )
    from ._storage._sqlite import SQLiteStorage
    from .errors import (
        ConflictError,
        DependencyError,
        ManifestError,
        PackageError,
        PermissionDenied,
        PluginError,
        PluginNotFound,
        Problem,
        QuotaExceeded,
        RateLimited,
        RemoteError,
        RequirementsError,
        ResultRefused,
        SandboxError,
        SandboxTimeout,
        SecretKeyError,
        SettingsError,
        StorageError,
        TenantScopeError,
        TransitionError,
        WorkerCrashed,
    )

# Where each lazily imported name lives.
_LAZY: dict[str, str] = {
    "ApiLimits": "._api",
    "ApiMeter": "._api",
    "ArchiveError": "._sources._archive",
    "ArchiveLimits": "._sources._archive",
    "AuditEvent": "._storage._protocol",
    "AuditQuery": "._storage._protocol",
    "BreakerPolicy": "._dispatch",
    "Capabilities": "._sandbox._confine",
    "Change": "._storage._protocol",
    "ChangeFeed": "._storage._protocol",
    "CheckProblem": "._check",
    "CheckReport": "._check",
    "ConflictError": ".errors",
    "DEFAULT_PERMISSIONS": "._permissions",
    "DeniedCall": "._api",
    "DependencyError": ".errors",
    "DiscoveredPlugin": "._sources._discovery",
    "Discovery": "._sources._discovery",
    "ENTRY_POINT_GROUP": "._sources._discovery",
    "ExtractedPlugin": "._sources._archive",
    "FailureRecord": "._storage._protocol",
    "HookMetrics": "._storage._protocol",
    "HookTrace": "._dispatch",
    "HostHook": "._dispatch",
    "HostServices": "._api",
    "IntegrityError": "._sources._loader",
    "Isolation": "._manifest",
    "Layer": "._sandbox._confine",
    "Limits": "._sandbox._confine",
    "LoadedPlugin": "._sources._loader",
    "MAX_MANIFEST_BYTES": "._manifest",
    "Manifest": "._manifest",
    "ManifestError": ".errors",
    "MemoryStorage": "._storage._memory",
    "MetricsDelta": "._storage._protocol",
    "PackResult": "._sources._package",
    "PackageError": ".errors",
    "Permission": "._permissions",
    "PermissionCatalogue": "._permissions",
    "PermissionDenied": ".errors",
    "PluginAPI": "._api",
    "PluginError": ".errors",
    "PluginHealth": "._host",
    "PluginHost": "._host",
    "PluginNotFound": ".errors",
    "PluginOutcome": "._dispatch",
    "PluginRecord": "._storage._protocol",
    "PluginStatus": "._storage._protocol",
    "PostgresStorage": "._storage._postgres._storage",
    "Problem": ".errors",
    "QuotaExceeded": ".errors",
    "Rate": "._api",
    "RateLimited": ".errors",
    "Registry": "._registry",
    "RegistryEvent": "._registry",
    "RemoteError": ".errors",
    "RequirementsError": ".errors",
    "ResultRefused": ".errors",
    "Risk": "._permissions",
    "SQLiteStorage": "._storage._sqlite",
    "Sandbox": "._sandbox._pool",
    "SandboxError": ".errors",
    "SandboxPolicy": "._sandbox._pool",
    "SandboxTimeout": ".errors",
    "SandboxedPlugin": "._sandbox._pool",
    "ScaffoldResult": "._scaffold",
    "SecretKeyError": ".errors",
    "SettingSpec": "._settings",
    "SettingType": "._settings",
    "SettingsError": ".errors",
    "SourceKind": "._storage._protocol",
    "Storage": "._storage._protocol",
    "StorageError": ".errors",
    "StoreUsage": "._storage._protocol",
    "Suspension": "._registry",
    "TenantRecord": "._storage._protocol",
    "TenantScopeError": ".errors",
    "TransitionError": ".errors",
    "ValidatedPlugin": "._sources._package",
    "VersionRecord": "._storage._protocol",
    "WorkerCrashed": ".errors",
    "WorkerInfo": "._sandbox._pool",
    "check_environment": "._dependencies",
    "check_plugin": "._check",
    "check_plugins": "._dependencies",
    "code_hash": "._sources._archive",
    "discover_entry_points": "._sources._discovery",
    "discover_folders": "._sources._discovery",
    "extract_plugin": "._sources._archive",
    "install_archive": "._sources._archive",
    "load_order": "._dependencies",
    "load_plugin": "._sources._loader",
    "manifest_json_schema": "._schema",
    "pack_plugin": "._sources._package",
    "register_discovered": "._sources._discovery",
    "requires": "._api",
    "scaffold_plugin": "._scaffold",
    "unload_plugin": "._sources._loader",
    "validate_plugin": "._sources._package",
    "validate_settings": "._settings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "DEFAULT_PERMISSIONS",
    "ENTRY_POINT_GROUP",
    "HOST_API_VERSION",
    "MAX_MANIFEST_BYTES",
    "ApiLimits",
    "ApiMeter",
    "ArchiveError",
    "ArchiveLimits",
    "AuditEvent",
    "AuditQuery",
    "BreakerPolicy",
    "Capabilities",
    "Change",
    "ChangeFeed",
    "CheckProblem",
    "CheckReport",
    "ConflictError",
    "DeniedCall",
    "DependencyError",
    "DiscoveredPlugin",
    "Discovery",
    "ExtractedPlugin",
    "FailureRecord",
    "HookMetrics",
    "HookTrace",
    "HostHook",
    "HostServices",
    "IntegrityError",
    "Isolation",
    "Layer",
    "Limits",
    "LoadedPlugin",
    "Manifest",
    "ManifestError",
    "MemoryStorage",
    "MetricsDelta",
    "PackResult",
    "PackageError",
    "Permission",
    "PermissionCatalogue",
    "PermissionDenied",
    "PluginAPI",
    "PluginError",
    "PluginHealth",
    "PluginHost",
    "PluginNotFound",
    "PluginOutcome",
    "PluginRecord",
    "PluginStatus",
    "PostgresStorage",
    "Problem",
    "QuotaExceeded",
    "Rate",
    "RateLimited",
    "Registry",
    "RegistryEvent",
    "RemoteError",
    "RequirementsError",
    "ResultRefused",
    "Risk",
    "SQLiteStorage",
    "Sandbox",
    "SandboxError",
    "SandboxPolicy",
    "SandboxTimeout",
    "SandboxedPlugin",
    "ScaffoldResult",
    "SecretKeyError",
    "SettingSpec",
    "SettingType",
    "SettingsError",
    "SourceKind",
    "Storage",
    "StorageError",
    "StoreUsage",
    "Suspension",
    "TenantRecord",
    "TenantScopeError",
    "TransitionError",
    "ValidatedPlugin",
    "VersionRecord",
    "WorkerCrashed",
    "WorkerInfo",
    "__version__",
    "check_environment",
    "check_plugin",
    "check_plugins",
    "code_hash",
    "discover_entry_points",
    "discover_folders",
    "extract_plugin",
    "hookimpl",
    "install_archive",
    "load_order",
    "load_plugin",
    "manifest_json_schema",
    "pack_plugin",
    "register_discovered",
    "requires",
    "scaffold_plugin",
    "unload_plugin",
    "validate_plugin",
    "validate_settings",
]
