"""Tooling: the steps beneath install and discovery, for tools and custom hosts.

- archives: :func:`extract_plugin`, :func:`install_archive`, :class:`ArchiveLimits`,
  :class:`ExtractedPlugin`, :func:`code_hash`;
- discovery: :func:`discover_entry_points`, :func:`discover_folders`,
  :func:`register_discovered`, :class:`Discovery`, :class:`DiscoveredPlugin`,
  :data:`ENTRY_POINT_GROUP`;
- loading: :func:`load_plugin`, :func:`unload_plugin`, :class:`LoadedPlugin`;
- checks: :func:`check_environment`, :func:`check_plugins`, :func:`load_order`,
  :func:`validate_settings`;
- results of the top-level tools: :class:`PackResult` (``pack_plugin``),
  :class:`ValidatedPlugin` (``validate_plugin``), :class:`CheckReport`,
  :class:`CheckProblem` and :class:`HookSummary` (``check_plugin``);
- scaffolding: :func:`scaffold_plugin`, :class:`ScaffoldResult`;
- payloads: :func:`to_wire` and :func:`from_wire` (a payload record as JSON-ready data
  and back, as the sandbox and the test kit send them), :func:`example` (the
  documented example of each payload record), :func:`record_from` (a payload record
  built from an app's ORM row, object or mapping, for host services).

Names are imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_names

if TYPE_CHECKING:
    from ._check import CheckProblem, CheckReport, HookSummary
    from ._dependencies import check_environment, check_plugins, load_order
    from ._examples import example
    from ._payload_codec import from_wire, to_wire
    from ._records import record_from
    from ._scaffold import ScaffoldResult, scaffold_plugin
    from ._settings import validate_settings
    from ._sources._archive import (
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
    from ._sources._loader import LoadedPlugin, load_plugin, unload_plugin
    from ._sources._package import PackResult, ValidatedPlugin


# Where each lazily imported name lives.
_LAZY: dict[str, str] = {
    "ArchiveLimits": "._sources._archive",
    "CheckProblem": "._check",
    "CheckReport": "._check",
    "DiscoveredPlugin": "._sources._discovery",
    "Discovery": "._sources._discovery",
    "ENTRY_POINT_GROUP": "._sources._discovery",
    "ExtractedPlugin": "._sources._archive",
    "HookSummary": "._check",
    "LoadedPlugin": "._sources._loader",
    "PackResult": "._sources._package",
    "ScaffoldResult": "._scaffold",
    "ValidatedPlugin": "._sources._package",
    "check_environment": "._dependencies",
    "check_plugins": "._dependencies",
    "code_hash": "._sources._archive",
    "discover_entry_points": "._sources._discovery",
    "discover_folders": "._sources._discovery",
    "example": "._examples",
    "from_wire": "._payload_codec",
    "extract_plugin": "._sources._archive",
    "install_archive": "._sources._archive",
    "load_order": "._dependencies",
    "load_plugin": "._sources._loader",
    "record_from": "._records",
    "register_discovered": "._sources._discovery",
    "scaffold_plugin": "._scaffold",
    "to_wire": "._payload_codec",
    "unload_plugin": "._sources._loader",
    "validate_settings": "._settings",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


__all__ = [
    "ENTRY_POINT_GROUP",
    "ArchiveLimits",
    "CheckProblem",
    "CheckReport",
    "DiscoveredPlugin",
    "Discovery",
    "ExtractedPlugin",
    "HookSummary",
    "LoadedPlugin",
    "PackResult",
    "ScaffoldResult",
    "ValidatedPlugin",
    "check_environment",
    "check_plugins",
    "code_hash",
    "discover_entry_points",
    "discover_folders",
    "example",
    "extract_plugin",
    "from_wire",
    "install_archive",
    "load_order",
    "load_plugin",
    "record_from",
    "register_discovered",
    "scaffold_plugin",
    "to_wire",
    "unload_plugin",
    "validate_settings",
]
