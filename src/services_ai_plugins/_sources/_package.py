"""Plugin folders and archives: validating them, and packing a folder reproducibly."""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import importlib.machinery
import os
import re
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Literal

import attrs

from .._manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest
from .._versions import plugin_prefix
from ..errors import ArchiveError, ManifestError, PackageError, Problem

__all__ = ["MANIFEST_NAME", "PackResult", "ValidatedPlugin", "pack_plugin", "validate_plugin"]

#: The largest entry module whose source ``validate`` reads to look for ``plugin_class``.
_MAX_SOURCE_BYTES: Final = 4 * 1024 * 1024
#: Every packed file gets this timestamp (the earliest a ZIP can hold), so packing is reproducible.
_ZIP_EPOCH: Final = (1980, 1, 1, 0, 0, 0)
#: Compiled Python: never shipped (pack leaves it out, install refuses it) and never loaded.
BYTECODE_FOLDER: Final = "__pycache__"
BYTECODE_SUFFIXES: Final = (".pyc", ".pyo")
#: Native code: the modules any platform's Python imports, and shared libraries. Refused
#: wherever a plugin is checked: only Python source is reviewed, so only source may run.
NATIVE_SUFFIXES: Final = tuple(
    sorted({*importlib.machinery.EXTENSION_SUFFIXES, ".so", ".pyd", ".dylib", ".dll"})
)
_VERSIONED_LIBRARY: Final = re.compile(r"\.so(?:\.[0-9]+)+$")
_SKIPPED_DIRS: Final = frozenset({BYTECODE_FOLDER})
_SKIPPED_SUFFIXES: Final = BYTECODE_SUFFIXES
_READ_ERRORS: Final = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    OSError,
    RuntimeError,
)

SourceKind = Literal["manifest", "folder", "archive"]
#: Why a file is compiled code (an ``ArchiveError.rule`` at install).
CompiledKind = Literal["bytecode", "native-module"]

#: What each kind of compiled file is refused with.
COMPILED_MESSAGES: Final[dict[str, str]] = {
    "bytecode": "is compiled Python (bytecode): a plugin holds its source only, the code "
    "that is reviewed and run; leave it out (pack does)",
    "native-module": "is a native module or library: a plugin may hold Python source only, "
    "the code that is reviewed and run",
}


def compiled_kind(name: str) -> CompiledKind | None:
    """Whether a plugin's file (a relative POSIX path; a folder ends in ``/``) is compiled code.

    ``"bytecode"``: a ``*.pyc``/``*.pyo`` file, or anything in (or being) a
    ``__pycache__`` folder. ``"native-module"``: a file ending in one of
    :data:`NATIVE_SUFFIXES` or a versioned shared library (``libx.so.1``).
    Case does not matter (an archive may come from a case-insensitive system).
    """
    parts = name.lower().rstrip("/").split("/")
    if BYTECODE_FOLDER in parts:
        return "bytecode"
    if name.endswith("/"):
        return None
    last = parts[-1]
    if last.endswith(BYTECODE_SUFFIXES):
        return "bytecode"
    if last.endswith(NATIVE_SUFFIXES) or _VERSIONED_LIBRARY.search(last):
        return "native-module"
    return None


@attrs.frozen
class ValidatedPlugin:
    """What :func:`validate_plugin` found: a manifest that holds, and where it came from."""

    #: The checked manifest.
    manifest: Manifest
    #: The path that was validated.
    path: str
    #: What the path is: a bare ``manifest.json``, a plugin folder or a ZIP archive.
    kind: SourceKind
    #: What the loader noticed and fixed up (such as a derived ``id``).
    notes: tuple[str, ...] = ()


@attrs.frozen
class PackResult:
    """What :func:`pack_plugin` wrote."""

    #: The archive written.
    path: Path
    #: The SHA-256 of the archive, as lowercase hex.
    sha256: str
    #: The files packed, as relative POSIX paths in archive order.
    files: tuple[str, ...]
    #: Files and folders left out (dotfiles, ``__pycache__``, compiled files).
    skipped: tuple[str, ...]
    #: The manifest of the packed plugin.
    manifest: Manifest


def validate_plugin(path: str | os.PathLike[str]) -> ValidatedPlugin:
    """Validate a plugin: a ``manifest.json``, a plugin folder or a plugin ZIP.

    Beyond the manifest itself, a folder or archive must contain its entry
    point module (which must compile, checked without running it) and its
    icon, and the entry module must
    define ``plugin_class`` at its top level. Nothing is imported or executed.

    What runs must be the source that is reviewed: an archive holding compiled
    Python (``*.pyc``, ``*.pyo``, a ``__pycache__`` folder) or native code
    (``*.so``, ``*.pyd``, ``*.dylib``, ``*.dll``, ...) is refused, as install
    refuses it. A folder holding native code is refused too (pack would ship
    it); its bytecode is not, since pack leaves it out and the loader never
    reads it.

    :raises ManifestError: listing every problem, each with its JSON path.
    :raises ArchiveError: an archive holds compiled code (``rule`` ``"bytecode"``
        or ``"native-module"``; ``member`` names the file).
    :raises PackageError: when the path does not exist or an archive cannot be read,
        or a folder holds native code (``member`` names the file).

    Example::

        checked = validate_plugin("examples/hello-plugin")
        checked.kind, checked.manifest.id  # ("folder", "hello-plugin")
    """
    target = Path(path)
    if target.is_dir():
        tree: _Tree = PluginFolder(target)
        kind: SourceKind = "folder"
    elif zipfile.is_zipfile(target) if target.is_file() else False:
        tree = _Archive(target)
        kind = "archive"
    elif target.is_file():
        if target.suffix.lower() == ".zip":
            raise PackageError("is not a readable ZIP archive", path=str(target))
        manifest = Manifest.from_file(target)
        return ValidatedPlugin(manifest, str(target), "manifest", manifest.notes)
    else:
        raise PackageError("no such file or folder", path=str(target))
    tree.refuse_compiled()
    manifest = tree.manifest()
    problems = list(content_problems(tree, manifest))
    if problems:
        raise ManifestError(problems, source=str(target))
    return ValidatedPlugin(manifest, str(target), kind, manifest.notes)


class _Tree:
    """A plugin's files, wherever they are kept."""

    def manifest(self) -> Manifest:  # pragma: no cover - abstract
        raise NotImplementedError

    def is_file(self, name: str) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def read(self, name: str, limit: int) -> bytes | None:  # pragma: no cover - abstract
        """The file's bytes, or None when it is larger than ``limit``."""
        raise NotImplementedError

    def refuse_compiled(self) -> None:  # pragma: no cover - abstract
        """Raise when the plugin holds compiled code it would ship (see :func:`compiled_kind`)."""
        raise NotImplementedError


class PluginFolder(_Tree):
    def __init__(self, root: Path) -> None:
        self.root = root

    def manifest(self) -> Manifest:
        path = self.root / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(
                [Problem("", f"the folder has no {MANIFEST_NAME}")], source=str(self.root)
            )
        return Manifest.from_file(path)

    def is_file(self, name: str) -> bool:
        return (self.root / name).is_file()

    def read(self, name: str, limit: int) -> bytes | None:
        with (self.root / name).open("rb") as stream:
            data = stream.read(limit + 1)
        return None if len(data) > limit else data

    def refuse_compiled(self) -> None:
        # What pack ships: dot-entries and bytecode are left out (and never loaded).
        for directory, dirnames, filenames in os.walk(self.root):
            base = Path(directory)
            dirnames[:] = sorted(
                name for name in dirnames if not name.startswith(".") and name not in _SKIPPED_DIRS
            )
            for name in sorted(filenames):
                if name.startswith(".") or compiled_kind(name) != "native-module":
                    continue
                raise PackageError(
                    COMPILED_MESSAGES["native-module"],
                    path=str(self.root),
                    member=(base / name).relative_to(self.root).as_posix(),
                )


class _Archive(_Tree):
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with zipfile.ZipFile(path) as archive:
                self.infos = {info.filename: info for info in archive.infolist()}
        except _READ_ERRORS as exc:
            raise PackageError(f"cannot read the archive: {exc}", path=str(path)) from exc
        self.prefix = self._find_prefix()

    def _find_prefix(self) -> str:
        """Where the plugin sits: the archive root, or its one top-level folder."""
        try:
            return plugin_prefix(self.infos, str(self.path))
        except ArchiveError:
            raise ManifestError(
                [Problem("", f"the archive has no {MANIFEST_NAME} at its root")],
                source=str(self.path),
            ) from None

    def manifest(self) -> Manifest:
        name = self.prefix + MANIFEST_NAME
        data = self.read(MANIFEST_NAME, MAX_MANIFEST_BYTES)
        source = f"{self.path}!{name}"
        if data is None:
            raise ManifestError(
                [Problem("", f"is too large: over {MAX_MANIFEST_BYTES} bytes")], source=source
            )
        return Manifest.from_json(data, source=source)

    def is_file(self, name: str) -> bool:
        info = self.infos.get(self.prefix + name)
        return info is not None and not info.is_dir()

    def read(self, name: str, limit: int) -> bytes | None:
        info = self.infos[self.prefix + name]
        if info.flag_bits & 0x1:
            raise PackageError("is encrypted", path=str(self.path), member=info.filename)
        if info.file_size > limit:
            return None
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open(info) as stream:
                # Read one byte past the limit: the header's size may lie.
                data = stream.read(limit + 1)
        except _READ_ERRORS as exc:
            raise PackageError(
                f"cannot be read: {exc}", path=str(self.path), member=info.filename
            ) from exc
        return None if len(data) > limit else data

    def refuse_compiled(self) -> None:
        for name in sorted(self.infos):
            kind = compiled_kind(name)
            if kind is not None:
                raise ArchiveError(kind, COMPILED_MESSAGES[kind], path=str(self.path), member=name)


def content_problems(tree: _Tree, manifest: Manifest) -> Iterator[Problem]:
    entry = next((name for name in manifest.entry_files if tree.is_file(name)), None)
    if entry is None:
        wanted = " or ".join(manifest.entry_files)
        yield Problem(
            "entry_point", f"the entry point module is missing: no {wanted} in the plugin"
        )
    else:
        yield from _source_problems(tree, entry, manifest.plugin_class)
    if manifest.icon is not None and not tree.is_file(manifest.icon):
        yield Problem("icon", f"the file {manifest.icon!r} is missing from the plugin")


def _source_problems(tree: _Tree, entry: str, plugin_class: str | None) -> Iterator[Problem]:
    source = tree.read(entry, _MAX_SOURCE_BYTES)
    if source is None:
        yield Problem("entry_point", f"{entry} is larger than {_MAX_SOURCE_BYTES} bytes")
        return
    try:
        module = ast.parse(source, filename=entry)
        # Compiling (not running) the tree also catches what the parser lets
        # through, such as ``return`` outside a function.
        compile(module, entry, "exec", dont_inherit=True)
    except SyntaxError as exc:
        yield Problem("entry_point", f"{entry} does not compile: {exc.msg} (line {exc.lineno})")
        return
    except (ValueError, RecursionError, MemoryError) as exc:
        yield Problem("entry_point", f"{entry} does not compile: {exc}")
        return
    if plugin_class is not None and plugin_class not in _top_level_names(module):
        yield Problem(
            "plugin_class", f"{plugin_class!r} is not defined at the top level of {entry}"
        )


def _top_level_names(module: ast.Module) -> set[str]:
    """Names a module binds when it runs, looking into top-level ``if``/``try`` blocks."""
    names: set[str] = set()
    pending: list[ast.stmt] = list(module.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            pending.extend(node.body)
            pending.extend(getattr(node, "orelse", []))
            pending.extend(getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                pending.extend(handler.body)
    return names


def pack_plugin(
    folder: str | os.PathLike[str], output: str | os.PathLike[str] | None = None
) -> PackResult:
    """Validate a plugin folder and write it as a reproducible ZIP archive.

    The same files give the same bytes: entries are sorted, timestamps fixed,
    permissions normalised (``0644``, or ``0755`` for executables), and
    dotfiles, ``__pycache__`` folders, compiled files and earlier archives of
    the plugin (``<id>-*.zip`` at its top) left out. The archive
    is written to a temporary file and renamed into place, so a failure never
    leaves a partial archive behind.

    :param output: the archive to write; by default ``<id>-<version>.zip`` in
        the current folder.
    :raises ManifestError: when the folder does not validate.
    :raises PackageError: when ``folder`` is not a folder, holds a symbolic link,
        another file that is not regular or native code (``*.so``, ``*.pyd``,
        ...: see :func:`validate_plugin`), or the archive cannot be written.
    """
    root = Path(folder)
    if not root.is_dir():
        raise PackageError("is not a folder", path=str(root))
    manifest = validate_plugin(root).manifest
    target = Path(output) if output is not None else Path(f"{manifest.id}-{manifest.version}.zip")
    files, skipped = _collect(root, exclude=target, archives=f"{manifest.id}-*.zip")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            _write_zip(stream, root, files)
        os.chmod(temporary, 0o644)  # noqa: PTH101 - on the descriptor's path, before the rename
        Path(temporary).replace(target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return PackResult(target, _sha256(target), tuple(files), tuple(skipped), manifest)


def _collect(root: Path, *, exclude: Path, archives: str) -> tuple[list[str], list[str]]:
    excluded = exclude.resolve()
    files: list[str] = []
    skipped: list[str] = []
    for directory, dirnames, filenames in os.walk(root):
        base = Path(directory)
        for name in sorted(dirnames):
            relative = (base / name).relative_to(root).as_posix()
            if (base / name).is_symlink():
                raise PackageError(
                    "is a symbolic link, which a plugin cannot hold",
                    path=str(root),
                    member=relative,
                )
            if name.startswith(".") or name in _SKIPPED_DIRS:
                skipped.append(relative + "/")
                dirnames.remove(name)
        for name in filenames:
            path = base / name
            relative = path.relative_to(root).as_posix()
            earlier_archive = base == root and fnmatch.fnmatchcase(name, archives)
            if (
                name.startswith(".")
                or name.endswith(_SKIPPED_SUFFIXES)
                or earlier_archive
                or path.resolve() == excluded
            ):
                skipped.append(relative)
                continue
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise PackageError(
                    "is a symbolic link, which a plugin cannot hold",
                    path=str(root),
                    member=relative,
                )
            if not stat.S_ISREG(mode):
                raise PackageError("is not a regular file", path=str(root), member=relative)
            files.append(relative)
    return sorted(files), sorted(skipped)


def _write_zip(stream: object, root: Path, files: list[str]) -> None:
    with zipfile.ZipFile(stream, "w") as archive:  # type: ignore[call-overload]  # a binary file object
        for relative in files:
            path = root / relative
            executable = path.stat().st_mode & stat.S_IXUSR
            info = zipfile.ZipInfo(relative, date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = (
                3  # Unix, whatever machine packs it, so the attributes mean the same
            )
            info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
            archive.writestr(info, path.read_bytes(), compresslevel=9)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
