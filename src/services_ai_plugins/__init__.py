"""services-ai-plugins: a safe, testable plugin SDK for multi-tenant business web apps.

The public API is what ``__all__`` lists; every module is private.
"""

from ._errors import ManifestError, PackageError, PluginError, Problem, SettingsError
from ._manifest import MAX_MANIFEST_BYTES, Isolation, Manifest
from ._markers import hookimpl
from ._package import PackResult, ValidatedPlugin, pack_plugin, validate_plugin
from ._scaffold import ScaffoldResult, scaffold_plugin
from ._schema import manifest_json_schema
from ._settings import SettingSpec, SettingType, validate_settings
from ._version import HOST_API_VERSION, __version__

__all__ = [
    "HOST_API_VERSION",
    "MAX_MANIFEST_BYTES",
    "Isolation",
    "Manifest",
    "ManifestError",
    "PackResult",
    "PackageError",
    "PluginError",
    "Problem",
    "ScaffoldResult",
    "SettingSpec",
    "SettingType",
    "SettingsError",
    "ValidatedPlugin",
    "__version__",
    "hookimpl",
    "manifest_json_schema",
    "pack_plugin",
    "scaffold_plugin",
    "validate_plugin",
    "validate_settings",
]
