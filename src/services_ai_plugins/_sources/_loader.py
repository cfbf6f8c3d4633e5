"""Loading installed plugin code: verified first, each plugin under its own module namespace.

An archive or folder plugin is imported as a package named after its id
(``services_ai_plugins.loaded.crm_sync``), whose ``__path__`` is the plugin's
folder. Two plugins that both ship ``main.py`` or a ``utils`` package therefore
never collide: each imports its own modules relatively (``from . import utils``)
and sees only them. Unloading removes the package and every module under it.
Before any import the folder's code hash is recomputed and compared with the
one recorded at install: a plugin whose files changed is not imported. For a
sandboxed plugin that is before each start of one of its workers (the host
checks, then the worker itself, confined, right before its import); see
:func:`check_code`.

A plugin's modules are compiled from their source files only, the code that
was reviewed: a ``__pycache__`` beside them is never read (nor written), a
``.pyc`` without its source is not a module, and a native module (``.so``) is
refused. This holds in the host's process and in sandbox workers alike, for
the imports the plugin makes later (inside a hook) too.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import threading
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import attrs

from .._manifest import Manifest
from .._registry import Registry
from .._storage._protocol import FailureRecord, PluginRecord, PluginStatus, failure_of
from ..errors import CompiledModuleRefused, IntegrityError, PackageError
from ._hashing import folder_digests

__all__ = [
    "CompiledModuleRefused",
    "IntegrityError",
    "LoadedPlugin",
    "check_code",
    "import_plugin",
    "load_failure",
    "load_plugin",
    "namespace",
    "unload_plugin",
    "verify_plugin",
]

#: The parent of every loaded plugin's namespace package.
NAMESPACE_ROOT: Final = "services_ai_plugins.loaded"


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
    _SourceOnlyFinder.install()
    module = sys.modules.get(NAMESPACE_ROOT)
    if module is None:
        module = types.ModuleType(NAMESPACE_ROOT, "Namespaces of loaded plugins.")
        module.__path__ = []
        sys.modules[NAMESPACE_ROOT] = module
    return module


#: What the import system would load besides source: bytecode without its source, and
#: native modules (the suffixes of this platform's Python).
_COMPILED_SUFFIXES: Final = (
    *importlib.machinery.BYTECODE_SUFFIXES,
    *importlib.machinery.EXTENSION_SUFFIXES,
)


class _SourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles a plugin's module from its source file: never from bytecode, and writes none."""

    def get_code(self, fullname: str) -> types.CodeType:
        path = self.get_filename(fullname)
        data = self.get_data(path)
        _check_source(path, data)
        return self.source_to_code(data, path)

    def set_data(self, path: str, data: object, *, _mode: int = 0o666) -> None:
        """Write nothing: a file in the plugin's folder would change its code hash."""


class _SourceOnlyFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of every plugin namespace, from source files only.

    First on ``sys.meta_path``, and the only finder of names under
    :data:`NAMESPACE_ROOT`: a name it does not find is not found (the path
    finder, which reads bytecode and native modules, never sees it). A package
    (``__init__.py``) comes before a module (``name.py``), then a namespace
    folder, as for the standard finder.
    """

    _lock: Final = threading.Lock()

    @classmethod
    def install(cls) -> None:
        with cls._lock:
            if not any(isinstance(finder, cls) for finder in sys.meta_path):
                sys.meta_path.insert(0, cls())

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(f"{NAMESPACE_ROOT}."):
            return None
        tail = fullname.rpartition(".")[2]
        portions: list[str] = []
        for entry in path or ():
            base = os.path.join(entry, tail)  # noqa: PTH118 - paths as strings, as importlib's
            for suffix in importlib.machinery.SOURCE_SUFFIXES:
                init = os.path.join(base, f"__init__{suffix}")  # noqa: PTH118 - as above
                if os.path.isfile(init):  # noqa: PTH113 - as above
                    return _source_spec(fullname, init, package=base)
            for suffix in importlib.machinery.SOURCE_SUFFIXES:
                if os.path.isfile(base + suffix):  # noqa: PTH113 - as above
                    return _source_spec(fullname, base + suffix, package=None)
            compiled = _compiled(base)
            if compiled is not None:
                raise CompiledModuleRefused(
                    f"plugin module {fullname!r} is compiled code ({compiled}), not source: "
                    "a plugin's modules are run from their source only",
                    name=fullname,
                    path=compiled,
                )
            if os.path.isdir(base):  # noqa: PTH112 - as above
                portions.append(base)
        if portions:
            spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
            spec.submodule_search_locations = portions
            return spec
        raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)


#: The folders whose code was verified in this process (:func:`check_code`): folder to the
#: plugin's id and each file's SHA-256 as it was hashed. A module of such a folder is compiled
#: only from the very bytes that were verified, however late it is imported.
_VERIFIED: Final[dict[str, tuple[str, Mapping[str, str]]]] = {}


def _check_source(path: str, data: bytes) -> None:
    """Refuse a verified plugin's source file whose bytes are not the ones verified."""
    path = os.path.abspath(path)  # noqa: PTH100 - paths as strings, as importlib's
    for folder, (plugin_id, digests) in _VERIFIED.items():
        if path.startswith(folder + os.sep):
            relative = Path(os.path.relpath(path, folder)).as_posix()
            actual = hashlib.sha256(data).hexdigest()
            expected = digests.get(relative, "")
            if actual != expected:
                raise IntegrityError(plugin_id, folder, expected, actual, member=relative)
            return


def _source_spec(
    fullname: str, filename: str, package: str | None
) -> importlib.machinery.ModuleSpec:
    spec = importlib.util.spec_from_file_location(
        fullname,
        filename,
        loader=_SourceLoader(fullname, filename),
        submodule_search_locations=[package] if package is not None else None,
    )
    assert spec is not None
    return spec


def _compiled(base: str) -> str | None:
    """A compiled file the import system would take for the module (or package) at ``base``."""
    for stem in (base, os.path.join(base, "__init__")):  # noqa: PTH118 - as above
        for suffix in _COMPILED_SUFFIXES:
            if os.path.isfile(stem + suffix):  # noqa: PTH113 - as above
                return stem + suffix
    return None


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
        cause = error.__cause__
        if registry is not None and cause is not None:
            _record_failure(registry, record.id, cause)
            # A module changed between the check of the folder and its import.
            if isinstance(cause, IntegrityError) and record.status is PluginStatus.APPROVED:
                registry.suspend(record.id, actor=actor, reason=str(cause))
        raise


def verify_plugin(
    record: PluginRecord, *, registry: Registry | None = None, actor: str = "loader"
) -> Path:
    """The plugin's folder, once its files are checked against the recorded code hash.

    :raises IntegrityError: see :func:`load_plugin`.
    :raises PackageError: when the plugin has no folder.
    """
    try:
        if record.package_path is None:
            raise PackageError("has no plugin folder to load from", path=record.id)
        folder = Path(record.package_path)
        check_code(record.id, folder, record.code_hash)
    except IntegrityError as error:
        if registry is not None:
            _record_failure(registry, record.id, error)
            if record.status is PluginStatus.APPROVED:
                registry.suspend(record.id, actor=actor, reason=str(error))
        raise
    except PackageError as error:  # no folder (deleted, never there), or one that cannot be read
        if registry is not None:
            _record_failure(registry, record.id, error)
        raise
    return folder


def check_code(plugin_id: str, folder: Path, expected: str) -> None:
    """Hash ``folder`` now and compare with ``expected`` (the hash recorded at install).

    Called before every import of the plugin's code: by the host before it
    loads the plugin and before each start of one of its workers, and by each
    worker itself, confined, right before it imports the plugin.

    :raises IntegrityError: when the hashes differ.
    :raises PackageError: when the folder is missing, or holds a link or a
        file that is not regular.
    """
    if not folder.is_dir():
        raise PackageError("its plugin folder is missing", path=str(folder))
    actual, digests = folder_digests(folder)
    if actual != expected:
        raise IntegrityError(plugin_id, str(folder), expected, actual)
    _VERIFIED[os.path.abspath(folder)] = (plugin_id, digests)  # noqa: PTH100 - a str key


def import_plugin(plugin_id: str, folder: Path, manifest: Manifest) -> LoadedPlugin:
    """Import a plugin folder's entry point under the plugin's own namespace (no hash check).

    Its modules are compiled from source only: see the module's description.

    :raises PackageError: when its code fails to import (the exception is the
        cause; :class:`CompiledModuleRefused` for a module that is only
        bytecode or native code).
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
