"""Storage: the protocol a backend implements, its records, and the three backends.

For adapter authors and for code that reads the registry's records directly.
A backend implements :class:`Storage`; :class:`MemoryStorage`,
:class:`SQLiteStorage` and :class:`PostgresStorage` are the ones that ship
(each also importable from the top-level package). The contract suite in
``services_ai_plugins_testing.storage_contract`` checks a new backend.
Names are imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_names

if TYPE_CHECKING:
    from ._storage._memory import MemoryStorage
    from ._storage._postgres._storage import PostgresStorage
    from ._storage._protocol import (
        AccessQuery,
        AccessRecord,
        AccessStorage,
        ArtifactInfo,
        ArtifactStore,
        AuditEvent,
        AuditQuery,
        Change,
        ChangeFeed,
        FailureRecord,
        HookMetrics,
        KeptVersion,
        MetricsDelta,
        PluginRecord,
        PluginStatus,
        SourceKind,
        StagedVersion,
        Storage,
        StorageArtifacts,
        StoreUsage,
        TenantRecord,
        VersionRecord,
    )
    from ._storage._sqlite import SQLiteStorage


# Where each lazily imported name lives.
_LAZY: dict[str, str] = {
    "AccessQuery": "._storage._protocol",
    "AccessRecord": "._storage._protocol",
    "AccessStorage": "._storage._protocol",
    "ArtifactInfo": "._storage._protocol",
    "ArtifactStore": "._storage._protocol",
    "AuditEvent": "._storage._protocol",
    "AuditQuery": "._storage._protocol",
    "Change": "._storage._protocol",
    "ChangeFeed": "._storage._protocol",
    "FailureRecord": "._storage._protocol",
    "HookMetrics": "._storage._protocol",
    "KeptVersion": "._storage._protocol",
    "MemoryStorage": "._storage._memory",
    "MetricsDelta": "._storage._protocol",
    "PluginRecord": "._storage._protocol",
    "PluginStatus": "._storage._protocol",
    "PostgresStorage": "._storage._postgres._storage",
    "SQLiteStorage": "._storage._sqlite",
    "SourceKind": "._storage._protocol",
    "StagedVersion": "._storage._protocol",
    "Storage": "._storage._protocol",
    "StorageArtifacts": "._storage._protocol",
    "StoreUsage": "._storage._protocol",
    "TenantRecord": "._storage._protocol",
    "VersionRecord": "._storage._protocol",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


__all__ = [
    "AccessQuery",
    "AccessRecord",
    "AccessStorage",
    "ArtifactInfo",
    "ArtifactStore",
    "AuditEvent",
    "AuditQuery",
    "Change",
    "ChangeFeed",
    "FailureRecord",
    "HookMetrics",
    "KeptVersion",
    "MemoryStorage",
    "MetricsDelta",
    "PluginRecord",
    "PluginStatus",
    "PostgresStorage",
    "SQLiteStorage",
    "SourceKind",
    "StagedVersion",
    "Storage",
    "StorageArtifacts",
    "StoreUsage",
    "TenantRecord",
    "VersionRecord",
]
