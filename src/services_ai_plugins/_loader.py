"""Loading installed plugin code: verified first, each plugin under its own module namespace.

An archive or folder plugin is imported as a package named after its id
(``services_ai_plugins.loaded.crm_sync``), whose ``__path__`` is the plugin's
folder. Two plugins that both ship ``main.py`` or a ``utils`` package therefore
never collide: each imports its own modules relatively (``from . import utils``)
and sees only them. Unloading removes the package and every module under it.
Before any import the folder's code hash is recomputed and compared with the
one recorded at install: a plugin whose files changed is not imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from pathlib import Path
from typing import Final

import attrs

from ._errors import PackageError
from ._hashing import code_hash
from ._manifest import Manifest
from ._registry import Registry
from ._storage import FailureRecord, PluginRecord, PluginStatus, failure_of

__all__ = [
    "IntegrityError",
    "LoadedPlugin",
    "import_plugin",
    "load_failure",
    "load_plugin",
    "namespace",
    "unload_plugin",
    "verify_plugin",
]

#: The parent of every loaded plugin's namespace package.
NAMESPACE_ROOT: Final = "services_ai_plugins.loaded"


class IntegrityError(PackageError):
    """A plugin's files no longer match the code hash recorded when it was installed."""

    def __init__(self, plugin_id: str, path: str, expected: str, actual: str) -> None:
        self.plugin_id = plugin_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"the code of plugin {plugin_id!r} changed since it was installed "
            f"(expected hash {expected[:16]}..., found {actual[:16]}...): refusing to load it",
            path=path,
        )


@attrs.frozen
class LoadedPlugin:
    """A plugin whose code is imported: what to register with pluggy."""

    plugin_id: str
    #: The module named by the manifest's entry point.
    module: types.ModuleType
    #: An instance of ``plugin_class``, or the module itself.
    plugin: object
    #: The plugin's namespace package name.
    namespace: str


def namespace(plugin_id: str) -> str:
    """The package name a plugin's modules live under (``crm-sync`` -> ``...loaded.crm_sync``)."""
    return f"{NAMESPACE_ROOT}.{re.sub(r'[^0-9a-zA-Z_]', '_', plugin_id)}"


def _root() -> types.ModuleType:
    module = sys.modules.get(NAMESPACE_ROOT)
    if module is None:
        module = types.ModuleType(NAMESPACE_ROOT, "Namespaces of loaded plugins.")
        module.__path__ = []
        sys.modules[NAMESPACE_ROOT] = module
    return module


def load_plugin(
    record: PluginRecord, *, registry: Registry | None = None, actor: str = "loader"
) -> LoadedPlugin:
    """Verify and import an installed archive or folder plugin under its own namespace.

    :raises IntegrityError: when the folder's code hash differs from the
        recorded one. With ``registry`` given, the mismatch is also recorded as
        a failure and the plugin is suspended (with an audit event).
    :raises PackageError: when the plugin has no folder, or its code fails to
        import (the original exception is the cause; with ``registry``, it is
        recorded as a failure with its traceback).
    """
    folder = verify_plugin(record, registry=registry, actor=actor)
    manifest = Manifest.from_dict(dict(record.manifest))
    try:
        return import_plugin(record.id, folder, manifest)
    except PackageError as error:
        if registry is not None and error.__cause__ is not None:
            _record_failure(registry, record.id, error.__cause__)
        raise


def verify_plugin(
    record: PluginRecord, *, registry: Registry | None = None, actor: str = "loader"
) -> Path:
    """The plugin's folder, once its files are checked against the recorded code hash.

    :raises IntegrityError: see :func:`load_plugin`.
    :raises PackageError: when the plugin has no folder.
    """
    if record.package_path is None:
        raise PackageError("has no plugin folder to load from", path=record.id)
    folder = Path(record.package_path)
    actual = code_hash(folder)
    if actual != record.code_hash:
        error = IntegrityError(record.id, str(folder), record.code_hash, actual)
        if registry is not None:
            _record_failure(registry, record.id, error)
            if record.status is PluginStatus.APPROVED:
                registry.suspend(record.id, actor=actor, reason=str(error))
        raise error
    return folder


def import_plugin(plugin_id: str, folder: Path, manifest: Manifest) -> LoadedPlugin:
    """Import a plugin folder's entry point under the plugin's own namespace (no hash check).

    :raises PackageError: when its code fails to import (the exception is the cause).
    """
    name = namespace(plugin_id)
    unload_plugin(plugin_id)
    _root()
    spec = importlib.util.spec_from_loader(name, loader=None, is_package=True)
    assert spec is not None
    spec.submodule_search_locations = [str(folder)]
    package = importlib.util.module_from_spec(spec)
    package.__path__ = [str(folder)]
    sys.modules[name] = package
    # Importing must not write bytecode into the plugin's folder: that would
    # change its code hash, and a compiled file there would be read, not hashed.
    writes_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        module = importlib.import_module(f"{name}.{manifest.entry_module}")
        plugin: object = module
        if manifest.plugin_class is not None:
            plugin = getattr(module, manifest.plugin_class)()
    except (Exception, SystemExit) as exc:  # any error in plugin code is the plugin's failure
        unload_plugin(plugin_id)
        raise PackageError(
            f"plugin {plugin_id!r} failed to load: {type(exc).__name__}: {exc}", path=str(folder)
        ) from exc
    finally:
        sys.dont_write_bytecode = writes_bytecode
    return LoadedPlugin(plugin_id, module, plugin, name)


def unload_plugin(plugin_id: str) -> int:
    """Forget every module of the plugin's namespace; returns how many were removed."""
    name = namespace(plugin_id)
    doomed = [key for key in sys.modules if key == name or key.startswith(f"{name}.")]
    for key in doomed:
        del sys.modules[key]
    return len(doomed)


def _record_failure(registry: Registry, plugin_id: str, error: BaseException) -> None:
    registry.storage.record_failures([load_failure(plugin_id, error)])


def load_failure(plugin_id: str, error: BaseException) -> FailureRecord:
    """The failure record of a plugin that could not be loaded (hook ``load``, no tenant)."""
    return failure_of(plugin_id, error, hook="load", tenant=None)
