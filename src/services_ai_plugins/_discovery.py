"""Finding plugins: entry points of installed distributions, and folders in the plugins folder.

Discovery finds; it does not enable. Everything found goes through the
registry like an upload (:func:`register_discovered`); an operator may choose to
approve entry-point plugins at once, since they installed those themselves.
"""

from __future__ import annotations

import importlib.resources
import inspect
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._errors import ManifestError, PackageError, PluginError, Problem
from ._hashing import code_hash, hash_files
from ._manifest import MANIFEST_NAME, Manifest
from ._storage import PluginRecord, PluginStatus, SourceKind

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = [
    "ENTRY_POINT_GROUP",
    "DiscoveredPlugin",
    "Discovery",
    "discover_entry_points",
    "discover_folders",
    "register_discovered",
]

#: The entry-point group plugins are published under (in ``pyproject.toml``:
#: ``[project.entry-points."services_ai.plugins"] my-plugin = "my_plugin.main:MyPlugin"``).
ENTRY_POINT_GROUP: Final = "services_ai.plugins"


@attrs.frozen
class DiscoveredPlugin:
    """A plugin found by discovery, not yet in the registry."""

    manifest: Manifest
    source: SourceKind
    #: Where it was found: a folder, or ``distribution version (module:attr)``.
    location: str
    #: The folder holding its code (folder plugins), else None.
    package_path: str | None
    #: The hash of its code (see :func:`code_hash`).
    code_hash: str
    #: The loaded entry-point object (entry-point plugins only).
    plugin: object = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class Discovery:
    """What one discovery pass found, and what it could not use (with why)."""

    found: tuple[DiscoveredPlugin, ...]
    #: (where, error) for every candidate that was refused; discovery carries on past them.
    refused: tuple[tuple[str, PluginError], ...]


def discover_folders(plugins_dir: str | os.PathLike[str]) -> Discovery:
    """Every plugin folder directly under ``plugins_dir`` (a ``manifest.json`` plus code).

    Folders whose name starts with ``.`` are skipped, and so are the
    ``<id>/<version>/`` folders that installed archives live in (they have no
    manifest at their top). Each folder is validated as ``validate`` does.
    """
    from ._package import validate_plugin  # noqa: PLC0415 - parsing modules load on demand

    root = Path(plugins_dir)
    found: list[DiscoveredPlugin] = []
    refused: list[tuple[str, PluginError]] = []
    if not root.is_dir():
        return Discovery((), ())
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not (child / MANIFEST_NAME).is_file():
            continue
        try:
            manifest = validate_plugin(child).manifest
            digest = code_hash(child)
        except PluginError as error:
            refused.append((str(child), error))
            continue
        found.append(DiscoveredPlugin(manifest, SourceKind.FOLDER, str(child), str(child), digest))
    return Discovery(tuple(found), tuple(refused))


def discover_entry_points(group: str = ENTRY_POINT_GROUP) -> Discovery:
    """Every plugin published in ``group`` by an installed distribution.

    Each entry point names a plugin class or module, which is loaded (these
    are operator-installed, trusted packages). Its manifest is the object's
    ``manifest`` attribute (a ``Manifest``, a dict or JSON text), or else the
    module's; failing that, a ``manifest.json`` resource beside the module.
    A manifest without a version takes the distribution's; without an id,
    the entry point's name.
    """
    import importlib_metadata  # noqa: PLC0415 - costly, and only discovery needs it

    found: list[DiscoveredPlugin] = []
    refused: list[tuple[str, PluginError]] = []
    for entry in sorted(importlib_metadata.entry_points(group=group), key=lambda e: e.name):
        dist = entry.dist
        where = f"{dist.name if dist else '?'} {dist.version if dist else '?'} ({entry.value})"
        try:
            plugin = entry.load()
            module = inspect.getmodule(plugin) or sys.modules.get(entry.module)
            document = _manifest_document(plugin, module, where)
            document.setdefault("id", entry.name)
            if dist is not None:
                document.setdefault("version", dist.version)
            manifest = Manifest.from_dict(document, source=where)
            digest = _source_hash(module, where)
        except PluginError as error:
            refused.append((where, error))
            continue
        except Exception as exc:  # noqa: BLE001 - a plugin that fails to import is refused, not fatal
            failed = PackageError(
                f"cannot load the entry point: {type(exc).__name__}: {exc}", path=where
            )
            failed.__cause__ = exc
            refused.append((where, failed))
            continue
        found.append(
            DiscoveredPlugin(manifest, SourceKind.ENTRY_POINT, where, None, digest, plugin)
        )
    return Discovery(tuple(found), tuple(refused))


def _manifest_document(plugin: object, module: Any, where: str) -> dict[str, Any]:
    for owner in (plugin, module):
        value = getattr(owner, "manifest", None)
        if isinstance(value, Manifest):
            return value.to_dict()
        if isinstance(value, dict):
            return dict(value)
        if isinstance(value, (str, bytes)):
            parsed = json.loads(value)
            if isinstance(parsed, dict):
                return parsed
    package = getattr(module, "__package__", None) or getattr(module, "__name__", "")
    if package:
        resource = importlib.resources.files(package).joinpath(MANIFEST_NAME)
        if resource.is_file():
            text = resource.read_bytes()
            return Manifest.from_json(text, source=f"{where}: manifest.json").to_dict()
    raise ManifestError(
        [Problem("", "no manifest: give the plugin a `manifest` attribute or ship manifest.json")],
        source=where,
    )


def _source_hash(module: Any, where: str) -> str:
    """The code hash of an entry-point plugin's own sources: its package, or its module file.

    Compiled files are left out: the interpreter rewrites them, and entry-point
    plugins are not verified before import (they were installed by the operator).
    """
    path = getattr(module, "__file__", None)
    if path is None:
        raise PackageError("has no source files to hash", path=where)
    file = Path(path)
    if not hasattr(module, "__path__"):
        return hash_files(file.parent, [file.name])
    root = file.parent
    sources = [
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    ]
    return hash_files(root, sources)


def register_discovered(
    registry: Registry,
    found: Iterable[DiscoveredPlugin],
    *,
    actor: str,
    approve_entry_points: bool = False,
) -> list[PluginRecord]:
    """Record what discovery found: new plugins and new versions go in as pending.

    A plugin already installed at the same version and code hash is left as it
    is. With ``approve_entry_points=True`` entry-point plugins are approved at
    once (an operator installed them with pip).
    """
    records: list[PluginRecord] = []
    for plugin in found:
        manifest = plugin.manifest
        current = registry.storage.get_plugin(manifest.id)
        unchanged = (
            current is not None
            and current.status is not PluginStatus.UNINSTALLED
            and current.version == str(manifest.version)
            and current.code_hash == plugin.code_hash
        )
        if not unchanged:
            replace = current is not None and current.status not in (
                PluginStatus.REJECTED,
                PluginStatus.UNINSTALLED,
            )
            registry.install(
                manifest,
                actor=actor,
                code_hash=plugin.code_hash,
                source=plugin.source,
                package_path=plugin.package_path,
                reinstall=replace,
            )
            if approve_entry_points and plugin.source is SourceKind.ENTRY_POINT:
                registry.approve(manifest.id, actor=actor)
        records.append(registry.plugin(manifest.id))
    return records
