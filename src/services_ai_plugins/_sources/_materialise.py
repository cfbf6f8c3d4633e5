"""Where a host finds a version's code: its folder here, or its archive materialised here.

An uploaded archive is kept in the registry's artifact store under its SHA-256
(:func:`~._archive.install_archive`), so a host that did not install the
plugin (another web server on the same registry) needs no shared filesystem:
:func:`local_code` extracts the archive into the host's own plugins folder the
first time the host loads that version, with every rule an upload is checked
against, and refuses anything whose bytes or code differ from what was
recorded at install.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Final

from .._manifest import Manifest
from .._storage._protocol import ArtifactStore, KeptVersion, PluginRecord, StagedVersion
from ..errors import ArchiveError, IntegrityError, PackageError, PluginError
from ._archive import ArchiveLimits, place_archive
from ._loader import check_code

__all__ = ["local_code", "version_code"]

_logger = logging.getLogger("services_ai_plugins.host")

#: Path segments a plugin id or version may not be (they would leave ``<plugins_dir>/<id>``).
_NOT_A_NAME: Final = frozenset({"", ".", ".."})
_LIMITS: Final = ArchiveLimits()


def local_code(
    plugin_id: str,
    version: str,
    code_hash: str,
    package_path: str | None,
    artifact: str | None,
    *,
    plugins_dir: str | os.PathLike[str],
    artifacts: ArtifactStore,
    limits: ArchiveLimits = _LIMITS,
) -> Path:
    """The folder where this host finds the code of one version of a plugin.

    In this order:

    - ``package_path``, when that folder exists here (the machine that
      installed it, or a shared filesystem). The caller checks its code hash,
      as before every import: a folder that changed is tampering.
    - ``<plugins_dir>/<id>/<version>/``, when it exists and its code hash is
      ``code_hash`` (materialised here earlier).
    - With ``artifact``: the archive is fetched from ``artifacts``, its
      SHA-256 checked, extracted into ``<plugins_dir>/<id>/<version>/`` with
      every rule of :func:`~._archive.extract_plugin` (a stale copy there is
      replaced), and refused before it is moved into place unless it holds
      this plugin and version with this code hash. When another process
      materialises it at the same time, the one that comes second uses the
      first's folder once its code hash is checked.

    :raises PackageError: the folder is missing here and there is no archive;
        the archive is missing from the store or holds another plugin or
        version; ``plugins_dir`` cannot be written.
    :raises IntegrityError: the archive's bytes are not those kept (a corrupt
        archive), or its code is not the code recorded at install.
    :raises ArchiveError, ManifestError: the archive breaks an upload's rules.
    :raises StorageError: the artifact store failed.
    """
    plugins = Path(plugins_dir).absolute()
    if {plugin_id, version} & _NOT_A_NAME or any("/" in name for name in (plugin_id, version)):
        raise PackageError(
            f"is not a plugin id and version: {plugin_id!r} {version!r}", path=str(plugins)
        )
    local = plugins / plugin_id / version
    if package_path is not None and Path(package_path).is_dir():
        return Path(package_path)
    stale = local.exists()
    if stale and _holds(plugin_id, local, code_hash):
        return local
    if artifact is None:
        raise PackageError(
            "its folder is missing here and it has no archive", path=package_path or str(local)
        )
    data = _fetch(plugin_id, artifact, artifacts, local)
    return _materialise(
        plugin_id,
        version,
        code_hash,
        data,
        artifact=artifact,
        plugins=plugins,
        limits=limits,
        stale=stale,
    )


def version_code(
    plugin_id: str,
    version: PluginRecord | StagedVersion | KeptVersion,
    *,
    plugins_dir: str | os.PathLike[str],
    artifacts: ArtifactStore,
) -> Path:
    """:func:`local_code` for one version as the registry records it: the running one
    (a :class:`PluginRecord`), a staged one or a kept one."""
    return local_code(
        plugin_id,
        version.version,
        version.code_hash,
        version.package_path,
        version.artifact,
        plugins_dir=plugins_dir,
        artifacts=artifacts,
    )


def _holds(plugin_id: str, folder: Path, code_hash: str) -> bool:
    try:
        check_code(plugin_id, folder, code_hash)
    except (PackageError, OSError):  # IntegrityError too: not this code, or unreadable
        return False
    return True


def _fetch(plugin_id: str, artifact: str, artifacts: ArtifactStore, local: Path) -> bytes:
    """The archive's bytes from the store, once they are checked against their key."""
    try:
        data = artifacts.get(artifact)
    except PluginError:
        raise
    except ValueError as exc:  # a key that is no SHA-256
        raise PackageError(f"its archive cannot be fetched: {exc}", path=str(local)) from exc
    if data is None:
        raise PackageError(
            f"its archive {artifact} is missing from the artifact store", path=str(local)
        )
    actual = hashlib.sha256(data).hexdigest()
    if actual != artifact:
        # Bytes changed in the store under the same key: a corrupt (or forged) archive.
        raise IntegrityError(plugin_id, f"artifact {artifact}", artifact, actual)
    return data


def _materialise(
    plugin_id: str,
    version: str,
    code_hash: str,
    data: bytes,
    *,
    artifact: str,
    plugins: Path,
    limits: ArchiveLimits,
    stale: bool,
) -> Path:
    label = f"artifact {artifact}"
    local = plugins / plugin_id / version

    def same_version(manifest: Manifest) -> None:
        if manifest.id != plugin_id or str(manifest.version) != version:
            raise PackageError(
                f"holds {manifest.id} {manifest.version}, not {plugin_id} {version}", path=label
            )

    try:
        plugins.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PackageError(f"cannot write: {exc}", path=str(plugins)) from exc
    # A stale copy (another install of this version) is replaced; else a copy that another
    # process moved into place first is kept, once checked: a worker may already run from it.
    try:
        placed = place_archive(
            data, plugins, limits, stale, same_version, label=label, code_hash=code_hash
        )
    except ArchiveError as error:
        if error.rule != "already-installed" or stale:
            raise
        if _holds(plugin_id, local, code_hash):
            return local
        placed = place_archive(
            data, plugins, limits, True, same_version, label=label, code_hash=code_hash
        )
    placed.commit()
    _logger.info(
        "plugin %r %s materialised from its archive %s into %s",
        plugin_id,
        version,
        artifact,
        placed.extracted.path,
    )
    return placed.extracted.path
