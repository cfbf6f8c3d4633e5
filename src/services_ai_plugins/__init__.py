"""services-ai-plugins: a safe, testable plugin SDK for multi-tenant business web apps.

The public API is what ``__all__`` lists; every module is private.
"""

from ._api import DeniedCall, HostServices, PluginAPI, requires
from ._archive import (
    ArchiveError,
    ArchiveLimits,
    ExtractedPlugin,
    code_hash,
    extract_plugin,
    install_archive,
)
from ._dependencies import check_environment, check_plugins, load_order
from ._discovery import (
    ENTRY_POINT_GROUP,
    DiscoveredPlugin,
    Discovery,
    discover_entry_points,
    discover_folders,
    register_discovered,
)
from ._errors import (
    ConflictError,
    DependencyError,
    ManifestError,
    PackageError,
    PermissionDenied,
    PluginError,
    PluginNotFound,
    Problem,
    RequirementsError,
    SettingsError,
    StorageError,
    TenantScopeError,
    TransitionError,
)
from ._loader import IntegrityError, LoadedPlugin, load_plugin, unload_plugin
from ._manifest import MAX_MANIFEST_BYTES, Isolation, Manifest
from ._markers import hookimpl
from ._memory import MemoryStorage
from ._package import PackResult, ValidatedPlugin, pack_plugin, validate_plugin
from ._permissions import DEFAULT_PERMISSIONS, Permission, PermissionCatalogue, Risk
from ._registry import Registry
from ._scaffold import ScaffoldResult, scaffold_plugin
from ._schema import manifest_json_schema
from ._settings import SettingSpec, SettingType, validate_settings
from ._sqlite import SQLiteStorage
from ._storage import (
    AuditEvent,
    AuditQuery,
    Change,
    FailureRecord,
    HookMetrics,
    MetricsDelta,
    PluginRecord,
    PluginStatus,
    SourceKind,
    Storage,
    TenantRecord,
    VersionRecord,
)
from ._version import HOST_API_VERSION, __version__

__all__ = [
    "DEFAULT_PERMISSIONS",
    "ENTRY_POINT_GROUP",
    "HOST_API_VERSION",
    "MAX_MANIFEST_BYTES",
    "ArchiveError",
    "ArchiveLimits",
    "AuditEvent",
    "AuditQuery",
    "Change",
    "ConflictError",
    "DeniedCall",
    "DependencyError",
    "DiscoveredPlugin",
    "Discovery",
    "ExtractedPlugin",
    "FailureRecord",
    "HookMetrics",
    "HostServices",
    "IntegrityError",
    "Isolation",
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
    "PluginNotFound",
    "PluginRecord",
    "PluginStatus",
    "Problem",
    "Registry",
    "RequirementsError",
    "Risk",
    "SQLiteStorage",
    "ScaffoldResult",
    "SettingSpec",
    "SettingType",
    "SettingsError",
    "SourceKind",
    "Storage",
    "StorageError",
    "TenantRecord",
    "TenantScopeError",
    "TransitionError",
    "ValidatedPlugin",
    "VersionRecord",
    "__version__",
    "check_environment",
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
