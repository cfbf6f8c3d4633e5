"""Uploaded plugin archives: checked before anything is written, extracted atomically.

The original system unpacked an uploaded ZIP with ``extractall`` and looked at
it afterwards. Here the central directory is checked first (names, member
types, flags, declared sizes), then each member is streamed into a staging
folder inside the plugins folder with reads bounded by its declared size, the
manifest and entry module are checked, and only then is the staging folder
renamed to ``<plugins_dir>/<id>/<version>/``. Any failure removes what was
written; nothing is ever written outside the plugins folder.

Every refusal of the archive itself is an :class:`ArchiveError` whose ``rule``
is one of :data:`RULES`.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import struct
import tempfile
import unicodedata
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Final, TypeAlias

import attrs

from .._manifest import MAX_MANIFEST_BYTES, Manifest
from .._registry import Registry
from .._storage._protocol import PluginRecord, SourceKind
from .._versions import plugin_prefix
from ..errors import ArchiveError, IntegrityError, ManifestError, PackageError, Problem
from ._hashing import code_hash
from ._hashing import hash_header as _hash_header
from ._package import (
    COMPILED_MESSAGES,
    MANIFEST_NAME,
    PluginFolder,
    compiled_kind,
    content_problems,
)

__all__ = [
    "RULES",
    "ArchiveError",
    "ArchiveLimits",
    "ArchiveSource",
    "ExtractedPlugin",
    "ManifestCheck",
    "code_hash",
    "extract_plugin",
    "install_archive",
]

#: What an archive can be given as: its bytes, or the path of a ZIP file.
ArchiveSource: TypeAlias = bytes | str | os.PathLike[str]
#: A caller's extra check of the manifest (such as dependencies); it raises to refuse.
ManifestCheck: TypeAlias = Callable[[Manifest], object]

#: Every ``ArchiveError.rule``, with what it means.
RULES: Final[dict[str, str]] = {
    "not-a-zip": "the upload is not a readable ZIP archive",
    "too-many-members": "the archive has more members than ArchiveLimits.max_members",
    "empty-name": "a member has an empty name",
    "bad-name": "a member name holds a NUL or control character, a ':', or a '.' or empty segment",
    "non-utf8-name": "a member name is neither flagged UTF-8 (bit 0x800) nor pure ASCII",
    "absolute-path": "a member name starts with '/' or a drive letter such as 'C:'",
    "backslash": "a member name uses '\\', which some systems read as a separator",
    "path-traversal": "a member name has a '..' segment",
    "symlink": "a member is a symbolic link",
    "not-regular": "a member is neither a regular file nor a directory (device, FIFO, ...)",
    "encrypted": "a member is encrypted",
    "unsupported-compression": "a member is compressed other than stored or deflated",
    "duplicate-name": "two members have the same name",
    "case-collision": "two members' names differ only in case or Unicode normalisation",
    "path-conflict": "a member is a file and also the folder of another member",
    "too-large": "a member, or all members together, exceed the size limits",
    "compression-ratio": "a member over 1 KiB expands more than ArchiveLimits.max_ratio times",
    "size-mismatch": "a member's real size differs from its declared size (a header that lies)",
    "overlap": "members' data overlap, or run past the central directory",
    "corrupt": "a member's data cannot be decompressed or fails its CRC-32",
    "bytecode": "a member is compiled Python (*.pyc, *.pyo) or in a __pycache__ folder: "
    "only the source is reviewed, so only the source may run",
    "native-module": "a member is native code (*.so, *.pyd, *.dylib, *.dll, ...): "
    "only Python source is reviewed and run",
    "no-manifest": "no manifest.json at the archive root nor in its one top-level folder",
    "entry-point-outside": "the manifest's entry point module is not in the archive",
    "already-installed": "this id and version are installed; pass reinstall=True to replace it",
}

_STAGING: Final = ".staging"
#: What one member may add to an archive besides its data: two headers with its name and extras.
_MEMBER_OVERHEAD: Final = 4096
#: The end of the central directory, its ZIP64 records and the archive's comment.
_TAIL_OVERHEAD: Final = 128 * 1024
_CHUNK: Final = 64 * 1024
_RATIO_FLOOR: Final = 1024
_FLAG_ENCRYPTED: Final = 0x1 | 0x40  # traditional and strong encryption
_FLAG_UTF8: Final = 0x800
_FLAG_DESCRIPTOR: Final = 0x8
_LOCAL_HEADER: Final = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIGNATURE: Final = b"PK\x03\x04"
_ZIP64_MARK: Final = 0xFFFFFFFF
_METHODS: Final = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
_READ_ERRORS: Final = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError)


@attrs.frozen
class ArchiveLimits:
    """Bounds on what an uploaded archive may hold; the defaults are safe for uploads."""

    #: The most members (files and folders) an archive may have.
    max_members: int = 2000
    #: The most bytes all members may hold together, uncompressed (100 MiB).
    max_total_bytes: int = 100 * 1024 * 1024
    #: The most bytes one member may hold, uncompressed (20 MiB).
    max_member_bytes: int = 20 * 1024 * 1024
    #: The largest uncompressed/compressed size ratio of a member over 1 KiB.
    max_ratio: float = 100.0


@attrs.frozen
class ExtractedPlugin:
    """What :func:`extract_plugin` installed on disk."""

    #: The checked manifest.
    manifest: Manifest
    #: The plugin's folder: ``<plugins_dir>/<id>/<version>``.
    path: Path
    #: The :func:`code_hash` of that folder.
    code_hash: str


@attrs.frozen
class _Member:
    info: zipfile.ZipInfo
    #: Where it goes, relative to the plugin folder ("" for the top folder itself).
    target: str
    #: Where the next member's local header (or the central directory) starts.
    bound: int


@attrs.define
class _Placed:
    """An extraction renamed into place, with what is needed to undo it."""

    extracted: ExtractedPlugin
    #: The replaced version's folder, set aside until the caller commits.
    previous: Path | None
    #: Whether ``<plugins_dir>/<id>`` was created by this extraction.
    created_parent: bool

    def commit(self) -> None:
        if self.previous is not None:
            shutil.rmtree(self.previous, ignore_errors=True)

    def rollback(self) -> None:
        shutil.rmtree(self.extracted.path, ignore_errors=True)
        if self.previous is not None:
            self.previous.rename(self.extracted.path)
        elif self.created_parent:
            with suppress(OSError):
                self.extracted.path.parent.rmdir()


def extract_plugin(
    source: ArchiveSource,
    plugins_dir: str | os.PathLike[str],
    *,
    limits: ArchiveLimits = ArchiveLimits(),
    reinstall: bool = False,
    check: ManifestCheck | None = None,
) -> ExtractedPlugin:
    """Check an uploaded plugin ZIP and install its files in ``<plugins_dir>/<id>/<version>/``.

    Before anything is written, the central directory is checked against every
    rule in :data:`RULES` that it can show (names, member types, encryption,
    duplicates, declared sizes against ``limits``, compiled Python and native
    code: only the source that is reviewed may run). Members are then streamed
    one by one into ``<plugins_dir>/.staging/<random>/``, each read stopping as
    soon as it passes its declared size. The plugin may sit at the archive root
    or inside one top-level folder. The manifest is parsed and the same content
    checks as :func:`validate_plugin` run; an entry point module that is not in
    the archive is refused with rule ``"entry-point-outside"`` (one that would
    lie outside the plugin, such as ``../x.py``, is already a
    :class:`ManifestError`). ``check(manifest)`` runs next, if given. Last, the
    staging folder is renamed into place; with ``reinstall=True`` an installed
    folder of the same version is replaced (and restored if that fails).

    Any failure leaves no file behind, and nothing is written outside
    ``plugins_dir``, which must exist.

    :raises ArchiveError: the archive broke a rule; ``rule`` says which.
    :raises ManifestError: the manifest or the entry module was refused.
    :raises PackageError: ``plugins_dir`` is missing or could not be written.
    :raises Exception: whatever ``check`` raises.

    Example::

        plugin = extract_plugin(upload_bytes, "/srv/plugins")
        plugin.path  # PosixPath('/srv/plugins/lead-notifier/1.0.0')
    """
    placed = place_archive(source, Path(plugins_dir).absolute(), limits, reinstall, check)
    placed.commit()
    return placed.extracted


def install_archive(
    source: ArchiveSource,
    plugins_dir: str | os.PathLike[str],
    registry: Registry,
    *,
    actor: str,
    limits: ArchiveLimits = ArchiveLimits(),
    reinstall: bool = False,
    check: ManifestCheck | None = None,
    downgrade: bool = False,
) -> PluginRecord:
    """Extract an uploaded plugin ZIP (see :func:`extract_plugin`), keep it, record it as pending
    (or, for a new version of a running plugin, staged beside it: see :meth:`Registry.install`).

    The archive is read once (a path too: its bytes are what is extracted and
    kept), and refused with rule ``"too-large"`` when it is larger than the
    members ``limits`` allows could make it. Once it is extracted and checked,
    its bytes are kept in the registry's artifact store
    (:attr:`Registry.artifacts`) under their SHA-256, from which every other
    host materialises the code; then the registry records the plugin's code
    hash, ``SourceKind.ARCHIVE``, the folder (as an absolute path, so a host
    started elsewhere on this machine finds it) and the archive's hash. If the
    artifact store or the registry refuses (a plugin already installed without
    ``reinstall``, a storage failure, ...), the extracted folder is removed
    again, the replaced version's folder is restored, and the error re-raised;
    a kept archive may stay (it is content-addressed: the registry's garbage
    collection removes archives no version uses).

    The registry's refusals that the manifest alone decides (installed without
    ``reinstall``, an older version without ``downgrade``, the running version
    again) come before anything is extracted: the running version's folder is
    never touched.

    A folder already at ``<plugins_dir>/<id>/<version>/`` for a plugin the
    registry has no record of (left by an install killed after its rename) is
    replaced as with ``reinstall``, so the same upload can simply be retried.

    :raises ArchiveError, ManifestError, PackageError: as :func:`extract_plugin`.
    :raises TransitionError: the registry does not allow the install.
    :raises VersionError: an older version without ``downgrade``, or the version
        that runs.
    :raises StorageError: the archive cannot be kept.
    """
    label = "<upload>" if isinstance(source, bytes) else os.fspath(source)
    data = _read_archive(source, label, limits)

    checked: list[Manifest] = []

    def checks(manifest: Manifest) -> None:
        registry.check_install(manifest, reinstall=reinstall, downgrade=downgrade)
        if check is not None:
            check(manifest)
        checked.append(manifest)

    plugins = Path(plugins_dir).absolute()
    try:
        placed = place_archive(data, plugins, limits, reinstall, checks, label=label)
    except ArchiveError as error:
        # The folder of a plugin the registry never recorded: left by an install killed
        # after its rename (kill -9). It is replaced (and restored if this install fails).
        if error.rule != "already-installed" or not checked:
            raise
        if registry.storage.get_plugin(checked[-1].id) is not None:
            raise
        placed = place_archive(data, plugins, limits, True, checks, label=label)
    extracted = placed.extracted
    try:
        artifact = hashlib.sha256(data).hexdigest()
        registry.artifacts.put(artifact, data)
        record = registry.install(
            extracted.manifest,
            actor=actor,
            code_hash=extracted.code_hash,
            source=SourceKind.ARCHIVE,
            package_path=str(extracted.path),
            reinstall=reinstall,
            downgrade=downgrade,
            artifact=artifact,
        )
    except BaseException:
        placed.rollback()
        raise
    placed.commit()
    return record


def _archive_bound(limits: ArchiveLimits) -> int:
    """The most bytes an archive within ``limits`` can take: its members' bytes (compressed,
    with deflate's few bytes of overhead), their headers and the end of the central directory."""
    return (
        limits.max_total_bytes
        + limits.max_total_bytes // 64
        + limits.max_members * _MEMBER_OVERHEAD
        + _TAIL_OVERHEAD
    )


def _read_archive(source: ArchiveSource, label: str, limits: ArchiveLimits) -> bytes:
    """The archive's bytes, read once, no more than :func:`_archive_bound` allows."""
    bound = _archive_bound(limits)
    if isinstance(source, bytes):
        data = source
    else:
        with _open(source, label) as stream:
            data = stream.read(bound + 1)
    if len(data) > bound:
        message = f"the archive is over {bound} bytes, more than its limits allow"
        raise ArchiveError("too-large", message, path=label)
    return data


# -- the steps -------------------------------------------------------------------------------


def place_archive(
    source: ArchiveSource,
    plugins: Path,
    limits: ArchiveLimits,
    reinstall: bool,
    check: ManifestCheck | None,
    *,
    label: str | None = None,
    code_hash: str | None = None,
) -> _Placed:
    """Extract and check the archive in staging, then rename it into place.

    ``label`` names the archive in errors (default: the path, or ``<upload>``);
    with ``code_hash``, extracted code of another hash is refused before it is
    moved into place (:class:`IntegrityError`). The caller commits the result
    (a replaced folder is then removed) or rolls it back (it is restored).
    """
    if label is None:
        label = "<upload>" if isinstance(source, bytes) else os.fspath(source)
    if not plugins.is_dir():
        raise PackageError("the plugins folder does not exist", path=str(plugins))
    with _open(source, label) as stream:
        members, prefix = _plan(stream, label, limits)
        staging_root = plugins / _STAGING
        try:
            staging_root.mkdir(exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=staging_root))
        except OSError as exc:
            raise PackageError(f"cannot write: {exc}", path=str(plugins)) from exc
        try:
            digest = _extract(stream, members, staging, label=label, plugins=plugins)
            manifest = _check_content(staging, label, prefix)
            if check is not None:
                check(manifest)
            if code_hash is not None and digest != code_hash:
                raise IntegrityError(manifest.id, label, code_hash, digest)
            staging.chmod(0o755)
            extracted = ExtractedPlugin(manifest, staging, digest)
            return _move(extracted, plugins, label=label, reinstall=reinstall)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def _open(source: ArchiveSource, label: str) -> Iterator[BinaryIO]:
    if isinstance(source, bytes):
        yield io.BytesIO(source)
        return
    try:
        stream = Path(source).open("rb")  # noqa: SIM115 - closed below, after the yield
    except OSError as exc:
        raise ArchiveError("not-a-zip", f"cannot be read: {exc}", path=label) from exc
    with stream:
        yield stream


RefuseFn: TypeAlias = Callable[[str, str, zipfile.ZipInfo | None], ArchiveError]


def _plan(stream: BinaryIO, label: str, limits: ArchiveLimits) -> tuple[list[_Member], str]:
    """Check the central directory; return the members in extraction order and the prefix."""
    try:
        with zipfile.ZipFile(stream) as archive:
            infos = archive.infolist()
            central = archive.start_dir
    except UnicodeDecodeError as exc:
        raise ArchiveError(
            "non-utf8-name", "a member name flagged UTF-8 is not valid UTF-8", path=label
        ) from exc
    except (*_READ_ERRORS, NotImplementedError) as exc:
        raise ArchiveError(
            "not-a-zip", f"is not a readable ZIP archive: {exc}", path=label
        ) from exc

    def refuse(rule: str, message: str, info: zipfile.ZipInfo | None = None) -> ArchiveError:
        member = info.orig_filename if info is not None else None
        return ArchiveError(rule, message, path=label, member=member)

    if len(infos) > limits.max_members:
        raise refuse(
            "too-many-members", f"has {len(infos)} members, over the {limits.max_members} allowed"
        )
    names = _check_members(infos, limits, refuse)
    prefix = plugin_prefix(names, label)
    manifest = names.get(prefix + MANIFEST_NAME)
    if manifest is not None and manifest.file_size > MAX_MANIFEST_BYTES:
        raise ManifestError(
            [Problem("", f"is too large: over {MAX_MANIFEST_BYTES} bytes")],
            source=f"{label}!{manifest.orig_filename}",
        )
    by_offset = sorted(infos, key=lambda info: info.header_offset)
    bounds = [info.header_offset for info in by_offset[1:]] + [central]
    members = []
    for info, bound in zip(by_offset, bounds, strict=True):
        minimum = _LOCAL_HEADER.size + len(info.orig_filename.encode("utf-8"))
        if info.header_offset + minimum + info.compress_size > bound:
            raise refuse("overlap", "its data overlap the next member", info)
        members.append(_Member(info, info.orig_filename[len(prefix) :].rstrip("/"), bound))
    # Sorted by target, so the code hash is computed while writing.
    members.sort(key=lambda member: member.target.encode("utf-8"))
    return members, prefix


def _check_members(
    infos: list[zipfile.ZipInfo], limits: ArchiveLimits, refuse: RefuseFn
) -> dict[str, zipfile.ZipInfo]:
    """Check every member's name, kind and sizes; return them by name."""
    seen: dict[str, zipfile.ZipInfo] = {}
    folded: dict[str, zipfile.ZipInfo] = {}
    files: set[str] = set()
    folders: set[str] = set()
    total = 0
    for info in infos:
        name = info.orig_filename
        _check_name(name, info, refuse)
        if name in seen:
            raise refuse("duplicate-name", "appears twice in the archive", info)
        seen[name] = info
        key = unicodedata.normalize("NFC", name.rstrip("/")).casefold()
        if key in folded:
            other = folded[key].orig_filename
            raise refuse("case-collision", f"differs from {other!r} only in case", info)
        folded[key] = info
        _check_kind(info, refuse)
        compiled = compiled_kind(name)
        if compiled is not None:
            raise refuse(compiled, COMPILED_MESSAGES[compiled], info)
        if info.is_dir():
            folders.add(key)
            continue
        files.add(key)
        parts = key.split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
        _check_size(info, limits, refuse)
        total += info.file_size
        if total > limits.max_total_bytes:
            raise refuse(
                "too-large",
                f"the members hold over {limits.max_total_bytes} bytes uncompressed",
                info,
            )
    clash = files & folders
    if clash:
        culprit = next(info for key, info in folded.items() if key in clash)
        raise refuse("path-conflict", "is a file and also the folder of other members", culprit)
    return seen


def _check_name(name: str, info: zipfile.ZipInfo, refuse: RefuseFn) -> None:
    if not name:
        raise refuse("empty-name", "a member has an empty name", info)
    if not info.flag_bits & _FLAG_UTF8 and not name.isascii():
        raise refuse("non-utf8-name", "the name is not UTF-8 (no UTF-8 flag, not ASCII)", info)
    if "\\" in name:
        raise refuse("backslash", "the name uses '\\' as a separator", info)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":" and name[0].isalpha()):
        raise refuse("absolute-path", "the name is an absolute path", info)
    segments = name.split("/")
    if name.endswith("/"):
        segments.pop()
    if ".." in segments:
        raise refuse("path-traversal", "the name climbs out of the plugin with '..'", info)
    if any(segment in ("", ".") for segment in segments):
        raise refuse("bad-name", "the name has an empty or '.' segment", info)
    if ":" in name or any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise refuse("bad-name", "the name holds a ':', NUL or control character", info)


def _check_kind(info: zipfile.ZipInfo, refuse: RefuseFn) -> None:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        raise refuse("symlink", "is a symbolic link", info)
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR) or (kind == stat.S_IFDIR and not info.is_dir()):
        raise refuse("not-regular", f"is not a regular file or folder (mode {mode:o})", info)
    if info.flag_bits & _FLAG_ENCRYPTED:
        raise refuse("encrypted", "is encrypted", info)
    if not info.is_dir() and info.compress_type not in _METHODS:
        raise refuse(
            "unsupported-compression",
            f"uses compression method {info.compress_type}; only stored and deflated are allowed",
            info,
        )


def _check_size(info: zipfile.ZipInfo, limits: ArchiveLimits, refuse: RefuseFn) -> None:
    size, packed = info.file_size, info.compress_size
    if size > _RATIO_FLOOR and size > limits.max_ratio * max(packed, 1):
        raise refuse(
            "compression-ratio",
            f"expands {packed} bytes to {size}, over {limits.max_ratio:g} times",
            info,
        )
    if size > limits.max_member_bytes:
        raise refuse(
            "too-large", f"holds {size} bytes, over the {limits.max_member_bytes} allowed", info
        )
    if info.compress_type == zipfile.ZIP_STORED and size != packed:
        raise refuse("size-mismatch", f"is stored, yet declares {packed} bytes as {size}", info)


def _extract(
    stream: BinaryIO, members: list[_Member], staging: Path, *, label: str, plugins: Path
) -> str:
    """Write every member under ``staging``; return the code hash of what was written."""
    digest = hashlib.sha256()
    made: set[str] = {""}
    for member in members:
        target = member.target
        if member.info.is_dir():
            parent, folder = target, None
        else:
            parent, _, folder = target.rpartition("/")
        if parent not in made:
            try:
                (staging / parent).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise PackageError(f"cannot write: {exc}", path=str(plugins)) from exc
            made.add(parent)
        if folder is None:
            continue
        digest.update(_hash_header(target, member.info.file_size))
        try:
            _write_member(stream, member, staging / target, digest, label=label)
        except OSError as exc:
            raise PackageError(f"cannot write: {exc}", path=str(plugins)) from exc
    return digest.hexdigest()


def _write_member(
    stream: BinaryIO, member: _Member, path: Path, digest: hashlib._Hash, *, label: str
) -> None:
    """Stream one member into ``path``, feeding ``digest``; its reads stop past its size."""
    info = member.info

    def refuse(rule: str, message: str) -> ArchiveError:
        return ArchiveError(rule, message, path=label, member=info.orig_filename)

    stream.seek(_data_start(stream, member, refuse))
    declared = info.file_size
    left = info.compress_size
    inflate = zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
    written = 0
    crc = 0
    with path.open("xb") as output:
        pending = b""
        while True:
            if pending:
                chunk, pending = pending, b""
            elif left:
                chunk = stream.read(min(_CHUNK, left))
                if not chunk:
                    raise refuse("corrupt", "its data are cut short")
                left -= len(chunk)
            else:
                break
            if inflate is None:
                data = chunk
            else:
                try:
                    # One byte more than may come, to see a member that is larger than it says.
                    data = inflate.decompress(chunk, declared - written + 1)
                except zlib.error as exc:
                    raise refuse("corrupt", f"cannot be decompressed: {exc}") from exc
                pending = inflate.unconsumed_tail
            written += len(data)
            if written > declared:
                raise refuse("size-mismatch", f"holds more than the {declared} bytes it declares")
            output.write(data)
            digest.update(data)
            crc = zlib.crc32(data, crc)
            if inflate is not None and inflate.eof:
                break
    if inflate is not None and (not inflate.eof or left or inflate.unused_data):
        raise refuse("corrupt", "its compressed data do not end where they should")
    if written != declared:
        raise refuse("size-mismatch", f"holds {written} bytes, not the {declared} it declares")
    if crc != info.CRC:
        raise refuse("corrupt", "its CRC-32 does not match its data")


def _data_start(
    stream: BinaryIO, member: _Member, refuse: Callable[[str, str], ArchiveError]
) -> int:
    """Check a member's local header against the central directory; return where its data start."""
    info = member.info
    stream.seek(info.header_offset)
    header = stream.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size:
        raise refuse("corrupt", "its local header is cut short")
    (signature, _, _, flags, method, _, _, _, packed, size, name_length, extra_length) = (
        _LOCAL_HEADER.unpack(header)
    )
    raw_name = stream.read(name_length)
    expected_name = info.orig_filename.encode("utf-8" if info.flag_bits & _FLAG_UTF8 else "cp437")
    if signature != _LOCAL_SIGNATURE or raw_name != expected_name:
        raise refuse("corrupt", "its local header does not match the central directory")
    if flags & _FLAG_ENCRYPTED:
        raise refuse("encrypted", "its local header says it is encrypted")
    if method != info.compress_type:
        raise refuse("corrupt", "its local header names another compression method")
    sizes_known = not flags & _FLAG_DESCRIPTOR and _ZIP64_MARK not in (packed, size)
    if sizes_known and (packed, size) != (info.compress_size, info.file_size):
        raise refuse(
            "size-mismatch",
            f"its local header declares {size} bytes ({packed} packed), the central "
            f"directory {info.file_size} ({info.compress_size} packed)",
        )
    start = info.header_offset + _LOCAL_HEADER.size + int(name_length) + int(extra_length)
    if start + info.compress_size > member.bound:
        raise refuse("overlap", "its data overlap the next member")
    return start


def _check_content(staging: Path, label: str, prefix: str) -> Manifest:
    source = f"{label}!{prefix}{MANIFEST_NAME}"
    manifest = Manifest.from_json((staging / MANIFEST_NAME).read_bytes(), source=source)
    tree = PluginFolder(staging)
    if not any(tree.is_file(name) for name in manifest.entry_files):
        raise ArchiveError(
            "entry-point-outside",
            f"the entry point {manifest.entry_point!r} is not in the archive "
            f"(looked for {' or '.join(manifest.entry_files)})",
            path=label,
            member=prefix + manifest.entry_files[0],
        )
    problems = list(content_problems(tree, manifest))
    if problems:
        raise ManifestError(problems, source=label)
    return manifest


def _move(staged: ExtractedPlugin, plugins: Path, *, label: str, reinstall: bool) -> _Placed:
    """Rename the staging folder into place, setting aside a version it replaces."""
    manifest, staging = staged.manifest, staged.path
    parent = plugins / manifest.id
    final = parent / str(manifest.version)
    # The id is a slug and a PEP 440 version has no separator: stay inside plugins_dir.
    assert final.parent.parent == plugins, final
    created = False
    previous: Path | None = None
    try:
        try:  # another process may create it at the same moment (two hosts materialising)
            parent.mkdir()
            created = True
        except FileExistsError:
            if not parent.is_dir():
                raise
        if final.exists():
            if not reinstall:
                raise ArchiveError(
                    "already-installed",
                    f"{manifest.id} {manifest.version} is already installed; "
                    "pass reinstall=True to replace it",
                    path=label,
                )
            previous = plugins / _STAGING / f"replaced-{uuid.uuid4().hex}"
            final.rename(previous)
        try:
            staging.rename(final)
        except OSError:
            if previous is not None:
                previous.rename(final)
            elif final.exists():
                raise ArchiveError(
                    "already-installed",
                    f"{manifest.id} {manifest.version} was installed meanwhile",
                    path=label,
                ) from None
            raise
    except BaseException as exc:
        if created:
            with suppress(OSError):
                parent.rmdir()
        if isinstance(exc, OSError):
            raise PackageError(
                f"cannot move the plugin into place: {exc}", path=str(final)
            ) from exc
        raise
    return _Placed(attrs.evolve(staged, path=final), previous, created)
