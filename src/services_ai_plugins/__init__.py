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
    from ._archive import (
        ArchiveError,
        ArchiveLimits,
        ExtractedPlugin,
        code_hash,
        extract_plugin,
        install_archive,
    )
    from ._check import CheckProblem, CheckReport, check_plugin
    from ._confine import Capabilities, Layer, Limits
    from ._dependencies import check_environment, check_plugins, load_order
    from ._discovery import (
        ENTRY_POINT_GROUP,
        DiscoveredPlugin,
        Discovery,
        discover_entry_points,
        discover_folders,
        register_discovered,
    )
    from ._dispatch import BreakerPolicy, HookTrace, HostHook, PluginOutcome
    from ._errors import (
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
    from ._host import PluginHealth, PluginHost
    from ._loader import IntegrityError, LoadedPlugin, load_plugin, unload_plugin
    from ._manifest import MAX_MANIFEST_BYTES, Isolation, Manifest
    from ._memory import MemoryStorage
    from ._package import PackResult, ValidatedPlugin, pack_plugin, validate_plugin
    from ._permissions import DEFAULT_PERMISSIONS, Permission, PermissionCatalogue, Risk
    from ._postgres import PostgresStorage
    from ._registry import Registry, RegistryEvent, Suspension
    from ._sandbox import Sandbox, SandboxedPlugin, SandboxPolicy, WorkerInfo
    from ._scaffold import ScaffoldResult, scaffold_plugin
    from ._schema import manifest_json_schema
    from ._settings import SettingSpec, SettingType, validate_settings
    from ._sqlite import SQLiteStorage
    from ._storage import (
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

# Where each lazily imported name lives.
_LAZY: dict[str, str] = {
    "ApiLimits": "._api",
    "ApiMeter": "._api",
    "ArchiveError": "._archive",
    "ArchiveLimits": "._archive",
    "AuditEvent": "._storage",
    "AuditQuery": "._storage",
    "BreakerPolicy": "._dispatch",
    "Capabilities": "._confine",
    "Change": "._storage",
    "ChangeFeed": "._storage",
    "CheckProblem": "._check",
    "CheckReport": "._check",
    "ConflictError": "._errors",
    "DEFAULT_PERMISSIONS": "._permissions",
    "DeniedCall": "._api",
    "DependencyError": "._errors",
    "DiscoveredPlugin": "._discovery",
    "Discovery": "._discovery",
    "ENTRY_POINT_GROUP": "._discovery",
    "ExtractedPlugin": "._archive",
    "FailureRecord": "._storage",
    "HookMetrics": "._storage",
    "HookTrace": "._dispatch",
    "HostHook": "._dispatch",
    "HostServices": "._api",
    "IntegrityError": "._loader",
    "Isolation": "._manifest",
    "Layer": "._confine",
    "Limits": "._confine",
    "LoadedPlugin": "._loader",
    "MAX_MANIFEST_BYTES": "._manifest",
    "Manifest": "._manifest",
    "ManifestError": "._errors",
    "MemoryStorage": "._memory",
    "MetricsDelta": "._storage",
    "PackResult": "._package",
    "PackageError": "._errors",
    "Permission": "._permissions",
    "PermissionCatalogue": "._permissions",
    "PermissionDenied": "._errors",
    "PluginAPI": "._api",
    "PluginError": "._errors",
    "PluginHealth": "._host",
    "PluginHost": "._host",
    "PluginNotFound": "._errors",
    "PluginOutcome": "._dispatch",
    "PluginRecord": "._storage",
    "PluginStatus": "._storage",
    "PostgresStorage": "._postgres",
    "Problem": "._errors",
    "QuotaExceeded": "._errors",
    "Rate": "._api",
    "RateLimited": "._errors",
    "Registry": "._registry",
    "RegistryEvent": "._registry",
    "RemoteError": "._errors",
    "RequirementsError": "._errors",
    "ResultRefused": "._errors",
    "Risk": "._permissions",
    "SQLiteStorage": "._sqlite",
    "Sandbox": "._sandbox",
    "SandboxError": "._errors",
    "SandboxPolicy": "._sandbox",
    "SandboxTimeout": "._errors",
    "SandboxedPlugin": "._sandbox",
    "ScaffoldResult": "._scaffold",
    "SecretKeyError": "._errors",
    "SettingSpec": "._settings",
    "SettingType": "._settings",
    "SettingsError": "._errors",
    "SourceKind": "._storage",
    "Storage": "._storage",
    "StorageError": "._errors",
    "StoreUsage": "._storage",
    "Suspension": "._registry",
    "TenantRecord": "._storage",
    "TenantScopeError": "._errors",
    "TransitionError": "._errors",
    "ValidatedPlugin": "._package",
    "VersionRecord": "._storage",
    "WorkerCrashed": "._errors",
    "WorkerInfo": "._sandbox",
    "check_environment": "._dependencies",
    "check_plugin": "._check",
    "check_plugins": "._dependencies",
    "code_hash": "._archive",
    "discover_entry_points": "._discovery",
    "discover_folders": "._discovery",
    "extract_plugin": "._archive",
    "install_archive": "._archive",
    "load_order": "._dependencies",
    "load_plugin": "._loader",
    "manifest_json_schema": "._schema",
    "pack_plugin": "._package",
    "register_discovered": "._discovery",
    "requires": "._api",
    "scaffold_plugin": "._scaffold",
    "unload_plugin": "._loader",
    "validate_plugin": "._package",
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
