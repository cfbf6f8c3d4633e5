"""The small enumerations records and discovery share (kept free of heavier imports)."""

from __future__ import annotations

import enum

__all__ = ["DEFAULT_DB", "DEFAULT_PLUGINS_DIR", "MANIFEST_NAME", "PluginStatus", "SourceKind"]

#: The manifest's file name inside a plugin folder or archive.
MANIFEST_NAME = "manifest.json"
#: The SQLite file's name a host and the command line use when given none (in the
#: per-user data folder: see ``HostConfig``).
DEFAULT_DB = "services-ai-plugins.db"
#: The plugins folder's name when none is given (in the per-user data folder).
DEFAULT_PLUGINS_DIR = "plugins"


class PluginStatus(str, enum.Enum):
    """Where a plugin is in its lifecycle."""

    #: Installed and waiting for an admin's decision; runs nowhere.
    PENDING = "pending"
    #: Approved by an admin: tenants may enable it.
    APPROVED = "approved"
    #: Refused by an admin (with a reason); only a re-install brings it back.
    REJECTED = "rejected"
    #: Stopped everywhere (by an admin or after repeated failures) until resumed.
    SUSPENDED = "suspended"
    #: Removed; its history and audit trail are kept, and it may be installed again.
    UNINSTALLED = "uninstalled"


class SourceKind(str, enum.Enum):
    """Where a plugin's code came from."""

    ENTRY_POINT = "entry_point"
    FOLDER = "folder"
    ARCHIVE = "archive"
