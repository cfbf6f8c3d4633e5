"""Finding plugins: entry points of installed distributions, and folders in the plugins folder.

Discovery finds; it does not enable. Everything found goes through the
registry like an upload (:func:`register_discovered`); an operator may choose to
approve entry-point plugins at once, since they installed those themselves.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

if TYPE_CHECKING:
    from .._kinds import SourceKind
    from .._manifest import Manifest
    from .._registry import Registry
    from .._storage._protocol import PluginRecord
    from ..errors import PluginError

# Discovery runs when a web worker boots: this module imports nothing heavy
# (no attrs, cattrs or packaging), and manifests are parsed when first needed.

__all__ = [
    "ENTRY_POINT_GROUP",
    "DiscoveredPlugin",
    "Discovery",
    "discover_entry_points",
    "discover_folders",
    "register_discovered",
    "source_hash",
]

#: The entry-point group plugins are published under (in ``pyproject.toml``:
#: ``[project.entry-points."services_ai.plugins"] my-plugin = "my_plugin.main:MyPlugin"``).
ENTRY_POINT_GROUP: Final = "services_ai.plugins"


class DiscoveredPlugin:
    """A plugin found by discovery, not yet in the registry.

    :attr:`manifest` is parsed from :attr:`document` on first use and raises
    :class:`ManifestError` then if the document is invalid.
    """

    __slots__ = (
        "_code_hash",
        "_distribution",
        "_manifest",
        "_module",
        "_source",
        "document",
        "location",
        "package_path",
        "plugin",
    )

    def __init__(
        self,
        document: dict[str, Any],
        source: SourceKind | str,
        location: str,
        *,
        package_path: str | None,
        code_hash: str | None = None,
        plugin: object = None,
        manifest: Manifest | None = None,
        distribution: Any = None,
        module: Any = None,
    ) -> None:
        #: The manifest document as found (JSON-ready).
        self.document = document
        # Kept as its value: the enum module loads only when ``source`` is read.
        self._source = str(getattr(source, "value", source))
        #: Where it was found: a folder, or ``distribution version (module:attr)``.
        self.location = location
        #: The folder holding its code (folder plugins), else None.
        self.package_path = package_path
        self._code_hash = code_hash
        self._module = module
        #: The loaded entry-point object (entry-point plugins only).
        self.plugin = plugin
        self._manifest = manifest
        # Read for its version only if the manifest has none (reading it parses METADATA).
        self._distribution = distribution

    @property
    def manifest(self) -> Manifest:
        """The plugin's manifest, parsed on first use."""
        if self._manifest is None:
            from .._manifest import Manifest  # noqa: PLC0415 - parsed only when needed

            if "version" not in self.document and self._distribution is not None:
                self.document["version"] = self._distribution.version
            self._manifest = Manifest.from_dict(self.document, source=self.location)
        return self._manifest

    @property
    def source(self) -> SourceKind:
        """Where the code came from: an entry point or a folder."""
        from .._kinds import SourceKind  # noqa: PLC0415

        return SourceKind(self._source)

    @property
    def code_hash(self) -> str:
        """The hash of its code (see :func:`code_hash`), computed on first use."""
        if self._code_hash is None:
            self._code_hash = _source_hash(self._module, self.location)
        return self._code_hash

    @property
    def plugin_id(self) -> str:
        """The plugin's id, without parsing the whole manifest."""
        return str(self.document.get("id") or self.manifest.id)

    def __repr__(self) -> str:
        return f"DiscoveredPlugin({self.plugin_id!r}, {self._source}, {self.location!r})"


class Discovery(NamedTuple):
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
    from .._kinds import MANIFEST_NAME, SourceKind  # noqa: PLC0415
    from ..errors import PluginError  # noqa: PLC0415 - folders are validated: parsing loads anyway
    from ._hashing import code_hash  # noqa: PLC0415
    from ._package import validate_plugin  # noqa: PLC0415

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
        found.append(
            DiscoveredPlugin(
                manifest.to_dict(),
                SourceKind.FOLDER,
                str(child),
                package_path=str(child),
                code_hash=digest,
                manifest=manifest,
            )
        )
    return Discovery(tuple(found), tuple(refused))


def discover_entry_points(group: str = ENTRY_POINT_GROUP) -> Discovery:
    """Every plugin published in ``group`` by an installed distribution.

    Each entry point names a plugin class or module, which is loaded (these
    are operator-installed, trusted packages). Its manifest is the object's
    ``manifest`` attribute (a ``Manifest``, a dict or JSON text), or else the
    module's; failing that, a ``manifest.json`` resource beside the module.
    A manifest without a version takes the distribution's; without an id,
    the entry point's name. Entry points are read with the standard library's
    ``importlib.metadata`` (the same data ``importlib_metadata`` reads).
    """
    found: list[DiscoveredPlugin] = []
    refused: list[tuple[str, PluginError]] = []
    for entry in sorted(_entry_points(group), key=lambda e: e.name):
        where = f"entry point {entry.name} = {entry.value}"
        try:
            plugin = entry.load()
            module = module_of(plugin, entry.module)
            document = manifest_document(plugin, module, where)
            document.setdefault("id", entry.name)
            if getattr(module, "__file__", None) is None:
                raise ValueError(f"{where}: the plugin has no source files to hash")
        except Exception as exc:  # noqa: BLE001 - a plugin that fails to load is refused, not fatal
            refused.append((where, _refusal(where, exc)))
            continue
        found.append(
            DiscoveredPlugin(
                document,
                "entry_point",
                where,
                package_path=None,
                plugin=plugin,
                distribution=entry.dist,
                module=module,
            )
        )
    return Discovery(tuple(found), tuple(refused))


def _entry_points(group: str) -> list[Any]:
    """The entry points in ``group``, as ``importlib.metadata.entry_points(group=...)`` gives them.

    Cheaper on a large environment: a distribution's ``entry_points.txt`` is
    parsed only if the group's name occurs in it (a section header names the
    group literally), and only those distributions are checked for duplicates
    (the same distribution twice on ``sys.path``: the first one wins).
    """
    import importlib.metadata  # noqa: PLC0415 - only discovery needs it

    seen: set[str] = set()
    entries: list[Any] = []
    for dist in importlib.metadata.distributions():
        text = dist.read_text("entry_points.txt")
        if not text or group not in text:
            continue
        name = _distribution_name(dist)
        if name in seen:
            continue
        seen.add(name)
        entries.extend(dist.entry_points.select(group=group))
    return entries


def _distribution_name(dist: Any) -> str:
    """A distribution's normalised name (PEP 503, with underscores as the standard library has it).

    Read from its ``*.dist-info`` folder name when there is one, else from METADATA.
    """
    # The standard library's own de-duplication reads the name from the
    # ``*.dist-info`` folder, not from METADATA; use it when it is there.
    name = getattr(dist, "_normalized_name", None)
    if isinstance(name, str) and name:
        return name
    import re  # noqa: PLC0415

    return re.sub(r"[-_.]+", "_", str(dist.metadata["Name"] or "")).lower()


def module_of(plugin: object, module_name: str) -> Any:
    """The module a plugin object (a module, a class or an instance) comes from, if imported."""
    if isinstance(plugin, types.ModuleType):
        return plugin
    return sys.modules.get(getattr(plugin, "__module__", None) or module_name)


def _refusal(where: str, exc: Exception) -> PluginError:
    from ..errors import PackageError, PluginError  # noqa: PLC0415 - the refusal path only

    if isinstance(exc, PluginError):
        return exc
    failed = PackageError(f"cannot load the entry point: {type(exc).__name__}: {exc}", path=where)
    failed.__cause__ = exc
    return failed


def manifest_document(plugin: object, module: Any, where: str) -> dict[str, Any]:
    """The manifest of an imported plugin: its (or its module's) ``manifest``, else the
    ``manifest.json`` of its package; ``where`` names it in errors."""
    for owner in (plugin, module):
        value = getattr(owner, "manifest", None)
        to_dict = getattr(value, "to_dict", None)
        if callable(to_dict):  # a Manifest
            document = to_dict()
            if isinstance(document, dict):
                return document
        if isinstance(value, dict):
            return dict(value)
        if isinstance(value, (str, bytes)):
            import json  # noqa: PLC0415 - only for manifests given as JSON text

            parsed = json.loads(value)
            if isinstance(parsed, dict):
                return parsed
    package = getattr(module, "__package__", None) or getattr(module, "__name__", "")
    if package:
        import importlib.resources  # noqa: PLC0415 - only for plugins that ship manifest.json

        from .._kinds import MANIFEST_NAME  # noqa: PLC0415

        resource = importlib.resources.files(package).joinpath(MANIFEST_NAME)
        if resource.is_file():
            import json  # noqa: PLC0415

            parsed = json.loads(resource.read_bytes())
            if isinstance(parsed, dict):
                return parsed
    from ..errors import ManifestError, Problem  # noqa: PLC0415 - the refusal path only

    raise ManifestError(
        [Problem("", "no manifest: give the plugin a `manifest` attribute or ship manifest.json")],
        source=where,
    )


def _source_hash(module: Any, where: str) -> str:
    """The code hash of an entry-point plugin's own sources: its package, or its module file.

    Compiled files are left out: the interpreter rewrites them. An entry-point
    plugin in the host's process is imported once, at discovery, and this hash
    of the files it was imported from is what the registry compares (changed
    code is a new version, pending approval). A sandboxed one is imported again
    by each worker: :func:`source_hash` is checked before each start.
    """
    path = getattr(module, "__file__", None)
    if path is None:
        raise ValueError(f"{where}: the plugin has no source files to hash")
    return source_hash(path, package=hasattr(module, "__path__"))


def source_hash(path: str | os.PathLike[str], *, package: bool) -> str:
    """The code hash of an entry-point plugin from its module's ``__file__``.

    A package (``package=True``, ``path`` its ``__init__.py``) is every file
    under its folder but compiled ones and ``__pycache__``; a plain module is
    its one file. The host records it at discovery, and checks it again
    before each start of a sandboxed entry-point plugin's worker.
    """
    from ._hashing import hash_files  # noqa: PLC0415 - hashing loads when a hash is asked for

    file = Path(path)
    if not package:
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
    is. With ``approve_entry_points=True`` entry-point plugins that are
    pending (new, or found earlier) are approved at once (an operator installed
    them with pip); rejected or suspended ones stay as they are.

    Each plugin's ``requires_api``, ``requires_python`` and ``dependencies``
    must be met here, as for an upload; all are checked before any is recorded.

    :raises RequirementsError: for the first plugin with an unmet requirement,
        naming each (nothing is recorded).
    """
    from .._dependencies import require_environment  # noqa: PLC0415
    from .._kinds import PluginStatus, SourceKind  # noqa: PLC0415

    found = list(found)
    for plugin in found:
        require_environment(plugin.manifest)
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
        if (
            approve_entry_points
            and plugin.source is SourceKind.ENTRY_POINT
            and registry.plugin(manifest.id).status is PluginStatus.PENDING
        ):
            registry.approve(manifest.id, actor=actor)
        records.append(registry.plugin(manifest.id))
    return records
