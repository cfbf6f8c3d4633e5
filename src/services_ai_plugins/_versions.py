"""Versions of one plugin: the upgrade policy, settings migration and what changed between two.

Pure logic over manifests and file listings, used by the registry (staged
upgrades, rollback, diffs) and shown by the CLI and the admins.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

import attrs
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ._json import JSONValue, json_type_name
from ._kinds import MANIFEST_NAME
from ._manifest import Manifest
from ._permissions import Permission, PermissionCatalogue
from ._secrets import is_sealed
from ._settings import SettingSpec, SettingType
from .errors import ArchiveError, PackageError, Problem, SettingsError

__all__ = [
    "SETTING_ATTRIBUTES",
    "FileChange",
    "FileEntry",
    "FileListing",
    "PermissionChange",
    "RequirementChange",
    "SettingChange",
    "UpgradePolicy",
    "VersionDiff",
    "VersionSide",
    "archive_files",
    "asks_for_nothing_new",
    "diff_versions",
    "folder_files",
    "migrate_settings",
    "plugin_prefix",
]


def _keep(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be a whole number >= 0 (got {value!r})")


def _seconds(instance: object, attribute: attrs.Attribute[float], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{attribute.name} must be a number of seconds > 0 (got {value!r})")


@attrs.frozen(kw_only=True)
class UpgradePolicy:
    """What a new version of an approved plugin needs, and what is kept for rollback.

    ``auto_approve``: approve by itself a new version that asks for nothing new
    (no permission, optional permission or hook it did not have; the same
    requirements), as browser extension stores do; recorded in the audit trail
    with the policy as the approver. Off by default: every new version waits
    for an admin.

    ``keep_versions``: how many earlier versions are kept (code, archive and
    each tenant's settings as they were) for :meth:`Registry.rollback`; older
    ones are forgotten, and their archives collected.

    ``migration_timeout``: the time limit, in seconds, of each tenant's
    ``plugin_upgraded`` call of an in-process plugin (a sandboxed plugin's call
    has its sandbox's time limit).

    .. versionadded:: 0.2.0
    """

    auto_approve: bool = False
    keep_versions: int = attrs.field(default=3, validator=_keep)
    migration_timeout: float = attrs.field(default=30.0, validator=_seconds)


# -- settings migration ------------------------------------------------------------------------


def migrate_settings(
    old: Sequence[SettingSpec], new: Sequence[SettingSpec], values: Mapping[str, JSONValue]
) -> dict[str, JSONValue]:
    """A tenant's stored setting values under the ``old`` schema, carried to the ``new`` one.

    ``values`` are the values as the registry stores them: only the settings a
    tenant set (an absent key, like ``None``, reads as the schema's default),
    secrets sealed (``{"$fernet": ...}``, or a plain string stored before
    secrets were encrypted). The result is stored the same way:

    * a setting the new schema no longer has is dropped;
    * a new setting is not stored: its default applies when it is read, as
      :meth:`Registry.get_settings` does for every absent key;
    * a value is kept, in the new field's type, when the field of the same name
      takes it without loss: the same type (``5.0`` for an integer is ``5``),
      an integer for a number, a choice the new list still has, and within the
      new bounds, ``max_length`` and choices. Text is never parsed into another
      type: a string ``"42"`` stored for a string field does not become the
      integer ``42``;
    * a value that no longer fits is dropped when the new field is optional or
      has a default (its default applies), else refused;
    * a required field with no default and no value is refused, unless it was
      already required with no default under the old schema (the tenant's
      settings were missing it before: the upgrade changes nothing there);
    * a secret that stays secret keeps its stored value untouched (sealed
      values are never opened here: a sealed value cannot be checked against a
      new ``max_length``, and the registry's reads apply it, as they do today);
    * a field that changes from secret to not secret, or back, does not carry
      its value: dropped when the new field is optional, else refused. Carrying
      a sealed value into a plain field would store it where secrets are not
      expected (shown in forms, audit events and the API, and it would need
      the keys, which this pure function does not have); carrying a plain value
      into a secret would present as secret a value that has been shown in the
      clear. Either way an admin sets it again, knowingly.

    :raises SettingsError: listing every refused setting at once, each problem's
        ``path`` being the setting's name; the message never repeats a value.

    Example::

        >>> from services_ai_plugins._settings import SettingType as T
        >>> old = [SettingSpec(name="limit", type=T.INTEGER), SettingSpec(name="gone", type=T.BOOLEAN)]
        >>> new = [SettingSpec(name="limit", type=T.NUMBER, max=100), SettingSpec(name="mode", type=T.STRING, default="a")]
        >>> migrate_settings(old, new, {"limit": 5, "gone": True})
        {'limit': 5}
    """  # noqa: E501 - a doctest's input is one line
    before = {str(spec.name): spec for spec in old}
    result: dict[str, JSONValue] = {}
    problems: list[Problem] = []
    for spec in new:
        name = str(spec.name)
        was = before.get(name)
        value = values.get(name)
        optional = not spec.required or spec.default is not None
        if value is None:
            already_missing = was is not None and was.required and was.default is None
            if not optional and not already_missing:
                problems.append(Problem(name, _missing_message(was)))
            continue
        was_secret = was.type is SettingType.SECRET if was is not None else is_sealed(value)
        is_secret = spec.type is SettingType.SECRET
        if was_secret != is_secret:
            if not optional:
                problems.append(Problem(name, _secret_flip_message(is_secret)))
            continue
        if is_secret:
            result[name] = copy.deepcopy(value)
            continue
        try:
            result[name] = _fit(spec, value)
        except ValueError as exc:
            if not optional:
                kind = f"the {was.type.value} setting" if was is not None else "the setting"
                problems.append(
                    Problem(name, f"the value stored for {kind} no longer fits: it {exc}")
                )
    if problems:
        raise SettingsError(problems)
    return result


def _missing_message(was: SettingSpec | None) -> str:
    if was is None:
        return "is a new required setting with no default: the tenant has no value to carry over"
    return "is now required and has no default, and the tenant has no value for it"


def _secret_flip_message(is_secret: bool) -> str:
    if is_secret:
        return (
            "becomes a secret: the value stored in the clear is not carried into a secret, "
            "and the setting is required with no default"
        )
    return (
        "is no longer a secret: its sealed value is not carried into a plain setting, "
        "and the setting is required with no default"
    )


def _fit(spec: SettingSpec, value: JSONValue) -> JSONValue:
    """``value`` in ``spec``'s type if it fits without loss, else ValueError naming why.

    Only a JSON type the field already holds passes the gate; :meth:`SettingSpec.coerce`
    then checks bounds, ``max_length`` and choices (its messages never repeat text).
    """
    kind = spec.type
    if kind is SettingType.STRING:
        ok = isinstance(value, str) and not (spec.required and value == "")
    elif kind is SettingType.INTEGER:
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    elif kind is SettingType.NUMBER:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is SettingType.BOOLEAN:
        ok = isinstance(value, bool)
    elif kind is SettingType.CHOICE:
        if not any(_same_choice(choice, value) for choice in spec.choices or ()):
            raise ValueError("is not one of the new choices")
        ok = True
    else:
        ok = True
    if not ok:
        if kind is SettingType.STRING and value == "":
            raise ValueError("is empty, and the setting is now required")
        raise ValueError(f"is {_a(json_type_name(value))}, not {_a(kind.value)}")
    return spec.coerce(value)


def _same_choice(choice: JSONValue, value: JSONValue) -> bool:
    if isinstance(choice, bool) or isinstance(value, bool):
        return type(choice) is type(value) and choice == value
    if isinstance(choice, (int, float)) and isinstance(value, (int, float)):
        return choice == value
    return type(choice) is type(value) and choice == value


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


# -- what a new version asks for -----------------------------------------------------------------


def asks_for_nothing_new(old: Manifest, new: Manifest) -> list[str]:
    """Why the ``new`` version of a plugin asks for something ``old`` did not; [] if nothing.

    An empty list is what lets :attr:`UpgradePolicy.auto_approve` approve a new
    version by itself. Each reason is a short sentence naming the item:

    * a permission ``old`` did not have (an optional permission that becomes
      required counts: approval grants it to every tenant), or an optional
      permission ``old`` declared in neither list;
    * a hook ``old`` did not list; a version that stops listing its hooks
      (``hooks`` absent: it may implement any), or lists them for the first
      time (what ``old`` implemented is unknown);
    * any change of ``requires_api``, ``requires_python``, ``dependencies``
      (a dependency added, dropped or with another specifier) or
      ``requires_plugins``, and any change of ``isolation``.

    Dropping a permission, an optional permission or a hook asks for nothing.

    >>> old = Manifest.from_dict({"id": "demo", "name": "Demo", "version": "1.0"})
    >>> asks_for_nothing_new(old, Manifest.from_dict({**old.to_dict(), "version": "1.1"}))
    []
    >>> new = Manifest.from_dict({**old.to_dict(), "version": "2.0", "permissions": ["send_email"]})
    >>> asks_for_nothing_new(old, new)
    ["asks for the permission 'send_email'"]
    """
    reasons: list[str] = []
    for name in new.permissions:
        if name in old.optional_permissions:
            reasons.append(f"asks for the permission {name!r}, which was optional")
        elif name not in old.permissions:
            reasons.append(f"asks for the permission {name!r}")
    declared = {*old.permissions, *old.optional_permissions}
    for name in new.optional_permissions:
        if name not in declared:
            reasons.append(f"asks for the optional permission {name!r}")
    if old.hooks is not None and new.hooks is None:
        reasons.append("no longer lists its hooks (it may implement any hook)")
    elif old.hooks is None and new.hooks:
        listed = ", ".join(repr(hook) for hook in new.hooks)
        reasons.append(f"lists its hooks for the first time: {listed}")
    elif old.hooks is not None and new.hooks is not None:
        reasons += [f"implements the hook {hook!r}" for hook in new.hooks if hook not in old.hooks]
    for change in _requirement_changes(old, new):
        reasons.append(change.sentence())
    if old.isolation != new.isolation:
        reasons.append(f"changes isolation from {_isolation(old)} to {_isolation(new)}")
    reasons += [
        f"may reach the host {entry!r} (network)" for entry in _missing(new.network, old.network)
    ]
    return reasons


def _isolation(manifest: Manifest) -> str:
    return manifest.isolation.value if manifest.isolation is not None else "unset"


@attrs.frozen
class RequirementChange:
    """One requirement that differs between two versions; None: absent on that side."""

    #: ``requires_api``, ``requires_python``, ``dependencies.<name>`` (the
    #: canonical distribution name) or ``requires_plugins.<plugin id>``.
    name: str
    before: str | None
    after: str | None

    def sentence(self) -> str:
        if self.before is None:
            return f"adds the requirement {self.name} {self.after or '(any version)'}"
        if self.after is None:
            return f"drops the requirement {self.name} {self.before or '(any version)'}"
        return f"changes {self.name} from {self.before or '(any)'} to {self.after or '(any)'}"

    def to_dict(self) -> dict[str, JSONValue]:
        return {"name": self.name, "before": self.before, "after": self.after}


def _requirement_changes(old: Manifest, new: Manifest) -> list[RequirementChange]:
    changes: list[RequirementChange] = []
    for field in ("requires_api", "requires_python"):
        before, after = getattr(old, field), getattr(new, field)
        if before != after:
            changes.append(
                RequirementChange(
                    field,
                    None if before is None else str(before),
                    None if after is None else str(after),
                )
            )
    olds, news = _dependencies(old), _dependencies(new)
    for key in sorted(olds.keys() | news.keys()):
        before_set, after_set = olds.get(key, set()), news.get(key, set())
        if before_set != after_set:
            changes.append(
                RequirementChange(f"dependencies.{key}", _joined(before_set), _joined(after_set))
            )
    for plugin in sorted(old.requires_plugins.keys() | new.requires_plugins.keys()):
        before_spec = old.requires_plugins.get(plugin)
        after_spec = new.requires_plugins.get(plugin)
        if before_spec != after_spec:
            changes.append(
                RequirementChange(
                    f"requires_plugins.{plugin}",
                    None if before_spec is None else str(before_spec),
                    None if after_spec is None else str(after_spec),
                )
            )
    return changes


def _dependencies(manifest: Manifest) -> dict[str, set[Requirement]]:
    """The manifest's dependencies by canonical distribution name (packaging compares
    ``A>=1,<2`` and ``a<2,>=1`` equal)."""
    found: dict[str, set[Requirement]] = {}
    for requirement in manifest.dependencies:
        found.setdefault(canonicalize_name(requirement.name), set()).add(requirement)
    return found


def _joined(requirements: set[Requirement]) -> str | None:
    return "; ".join(sorted(str(r) for r in requirements)) or None


# -- file listings -------------------------------------------------------------------------------

#: The most members (files and folders) a listing reads; the install limit's default.
MAX_LISTED_MEMBERS: Final = 2000
#: The most bytes a listing reads and hashes, all files together (100 MiB, as installs).
MAX_LISTED_BYTES: Final = 100 * 1024 * 1024
#: The longest path a listing shows, in characters.
MAX_LISTED_NAME: Final = 1024

_CHUNK: Final = 64 * 1024
_END_RECORD: Final = struct.Struct("<4s4H2LH")
_END_SIGNATURE: Final = b"PK\x05\x06"
_LOCATOR: Final = struct.Struct("<4sLQL")
_LOCATOR_SIGNATURE: Final = b"PK\x06\x07"
_END_RECORD64: Final = struct.Struct("<4sQ2H2L4Q")
_END64_SIGNATURE: Final = b"PK\x06\x06"
#: The smallest central directory entry: 46 bytes before its name.
_DIRECTORY_ENTRY: Final = 46
_READ_ERRORS: Final = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    ValueError,
    OSError,
    RuntimeError,  # encrypted
    NotImplementedError,  # compression methods zipfile lacks
)


@attrs.frozen
class FileEntry:
    """One file of a plugin: its size in bytes and the SHA-256 of its content (hex)."""

    size: int
    sha256: str

    def to_dict(self) -> dict[str, JSONValue]:
        return {"size": self.size, "sha256": self.sha256}


class FileListing(dict[str, FileEntry]):
    """A plugin's files by path (relative, ``/``-separated), and what was left out.

    ``notes`` says, one sentence each, what the listing did not read: a limit
    reached (the listing stops there), a symbolic link or special file (never
    followed or opened), a member that cannot be read. Empty: the listing is
    complete.
    """

    def __init__(
        self, entries: Iterable[tuple[str, FileEntry]] = (), notes: Iterable[str] = ()
    ) -> None:
        super().__init__(entries)
        self.notes: tuple[str, ...] = tuple(notes)

    @property
    def complete(self) -> bool:
        """Whether every file was listed."""
        return not self.notes

    def __repr__(self) -> str:
        return f"FileListing({dict(self)!r}, notes={self.notes!r})"


def archive_files(
    data: bytes,
    *,
    max_members: int = MAX_LISTED_MEMBERS,
    max_bytes: int = MAX_LISTED_BYTES,
    max_name: int = MAX_LISTED_NAME,
) -> FileListing:
    """The plugin's files in a plugin ZIP, by path relative to the plugin's folder.

    The plugin sits at the archive root (a ``manifest.json`` there) or in its
    one top-level folder, as installs read it. Nothing is extracted: each file
    is read in memory, in chunks, to hash it. The archive is treated as
    hostile: a central directory over ``max_members`` entries is not parsed
    at all, reading stops once ``max_members`` members or ``max_bytes`` bytes
    (as declared, before decompressing) are reached, and names over
    ``max_name`` characters, unsafe names (absolute, ``..``, control
    characters, backslashes), symbolic links and members that cannot be read
    (corrupt, encrypted, a size that lies) are left out; each time, the
    listing's :attr:`~FileListing.notes` say so.

    :raises ArchiveError: ``not-a-zip`` for data that is not a ZIP archive,
        ``no-manifest`` when no ``manifest.json`` is at its root or in its one
        top-level folder.
    """
    label = "<archive>"
    directory = _directory_size(data)
    if directory is not None:
        entries, size = directory
        # zipfile parses the whole central directory at once: bound it before.
        if entries > max_members or size > max_members * (_DIRECTORY_ENTRY + max_name):
            return FileListing(
                notes=[
                    f"the archive has {entries} members in a central directory of {size} bytes, "
                    f"over the {max_members} members a listing reads: not listed"
                ]
            )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except UnicodeDecodeError as exc:
        raise ArchiveError(
            "non-utf8-name", "a member name flagged UTF-8 is not valid UTF-8", path=label
        ) from exc
    except _READ_ERRORS as exc:
        raise ArchiveError(
            "not-a-zip", f"is not a readable ZIP archive: {exc}", path=label
        ) from exc
    with archive:
        infos = archive.infolist()
        notes: list[str] = []
        if len(infos) > max_members:
            notes.append(f"the archive has {len(infos)} members: listed the first {max_members}")
            infos = infos[:max_members]
        names: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            names.setdefault(info.orig_filename, info)
        prefix = plugin_prefix(names, label)
        listing = FileListing()
        seen: set[str] = set()
        budget = max_bytes
        for info in infos:
            if info.is_dir() or not info.orig_filename.startswith(prefix):
                continue
            path = info.orig_filename[len(prefix) :]
            problem = _name_problem(path, max_name)
            if problem is None and stat.S_ISLNK(info.external_attr >> 16):
                problem = "is a symbolic link: not followed"
            if problem is None and path in seen:
                problem = "appears twice in the archive: the first is listed"
            if problem is not None:
                notes.append(f"{_shown(path, max_name)} {problem}")
                continue
            seen.add(path)
            if info.file_size > budget:
                notes.append(
                    f"stopped at {_shown(path, max_name)}: the files listed so far and this one "
                    f"hold over {max_bytes} bytes"
                )
                break
            budget -= info.file_size
            try:
                listing[path] = _hash_member(archive, info)
            except _READ_ERRORS as exc:
                notes.append(f"{_shown(path, max_name)} cannot be read: {_reason(exc)}")
    listing.notes = tuple(notes)
    return listing


def _directory_size(data: bytes) -> tuple[int, int] | None:
    """The entry count and size of a ZIP's central directory, read from its end record as
    zipfile reads it (last record first, then a comment's end; a ZIP64 record when its locator
    precedes); None when there is none (zipfile refuses those)."""
    at = len(data) - _END_RECORD.size
    if at < 0:
        return None
    if not (data[at : at + 4] == _END_SIGNATURE and data[-2:] == b"\0\0"):
        start = max(0, len(data) - _END_RECORD.size - 0xFFFF)
        at = data.rfind(_END_SIGNATURE, start)
        if at < 0 or at + _END_RECORD.size > len(data):
            return None
    record = _END_RECORD.unpack_from(data, at)
    entries, size = record[4], record[5]
    locator_at = at - _LOCATOR.size
    record64_at = locator_at - _END_RECORD64.size
    if record64_at >= 0 and data[locator_at : locator_at + 4] == _LOCATOR_SIGNATURE:
        record64 = _END_RECORD64.unpack_from(data, record64_at)
        if record64[0] == _END64_SIGNATURE:
            entries, size = record64[7], record64[8]  # total entries, directory size
    return int(entries), int(size)


def plugin_prefix(names: Mapping[str, zipfile.ZipInfo], label: str) -> str:
    """Where the plugin sits in an archive (its members by name): the archive root, or its one
    top-level folder; the rule of every reader of plugin archives (installs, validation,
    listings).

    :raises ArchiveError: (rule ``no-manifest``) naming ``label``, when it is neither.
    """
    manifest = names.get(MANIFEST_NAME)
    if manifest is not None and not manifest.is_dir():
        return ""
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) == 1:
        top = next(iter(tops))
        candidate = names.get(f"{top}/{MANIFEST_NAME}")
        if candidate is not None and not candidate.is_dir():
            return f"{top}/"
    raise ArchiveError(
        "no-manifest", f"has no {MANIFEST_NAME} at its root or in its one top folder", path=label
    )


def _hash_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> FileEntry:
    digest = hashlib.sha256()
    size = 0
    # zipfile stops at the declared size and checks the CRC-32 at the end.
    with archive.open(info) as stream:
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            digest.update(chunk)
    return FileEntry(size, digest.hexdigest())


def folder_files(
    path: str | os.PathLike[str],
    *,
    max_members: int = MAX_LISTED_MEMBERS,
    max_bytes: int = MAX_LISTED_BYTES,
    max_name: int = MAX_LISTED_NAME,
) -> FileListing:
    """The regular files under a plugin's folder, by path relative to it.

    Every regular file counts, dotfiles too, as the code hash counts them
    (``_sources._hashing``), except ``__pycache__`` folders, which hold the
    interpreter's own output and never reviewed code. Symbolic links are never
    followed and special files (FIFOs, devices, sockets) never opened: the
    code hash refuses a folder holding them, and here they are left out and
    named in the listing's :attr:`~FileListing.notes`. Each file is opened
    without following a link swapped in since the walk saw it. Walking stops
    once ``max_members`` entries (files and folders) or ``max_bytes`` bytes
    have been read, and names over ``max_name`` characters or not UTF-8 are
    left out; the notes say so.

    :raises PackageError: when ``path`` is not a folder, or is a symbolic link.
    """
    root = Path(path)
    try:
        mode = root.lstat().st_mode
    except OSError as exc:
        raise PackageError(f"cannot be read: {exc.strerror}", path=str(root)) from exc
    if stat.S_ISLNK(mode):
        raise PackageError("is a symbolic link: not followed", path=str(root))
    if not stat.S_ISDIR(mode):
        raise PackageError("is not a folder", path=str(root))
    return _walk(root, max_members, max_bytes, max_name)


def _walk(root: Path, max_members: int, max_bytes: int, max_name: int) -> FileListing:
    listing = FileListing()
    notes: list[str] = []
    pending = [""]
    members = 0
    budget = max_bytes
    while pending:
        relative_dir = pending.pop()
        try:
            with os.scandir(root / relative_dir if relative_dir else root) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as exc:
            notes.append(f"{_shown(relative_dir or '.')} cannot be read: {exc.strerror}")
            continue
        subfolders: list[str] = []
        for entry in entries:
            members += 1
            if members > max_members:
                notes.append(f"stopped after {max_members} files and folders")
                listing.notes = tuple(notes)
                return listing
            relative = f"{relative_dir}/{entry.name}" if relative_dir else entry.name
            problem = _name_problem(relative, max_name)
            if problem is not None:
                notes.append(f"{_shown(relative, max_name)} {problem}")
                continue
            found = _folder_entry(root, relative, entry, budget, subfolders)
            if isinstance(found, str):
                notes.append(found)
                if found.startswith("stopped"):
                    listing.notes = tuple(notes)
                    return listing
            elif found is not None:
                listing[relative] = found
                budget -= found.size
        pending.extend(reversed(subfolders))
    listing.notes = tuple(notes)
    return listing


def _folder_entry(
    root: Path, relative: str, entry: os.DirEntry[str], budget: int, subfolders: list[str]
) -> FileEntry | str | None:
    """One entry of a folder walk: a file's entry, a note (``stopped ...`` ends the walk),
    or None (a folder, queued in ``subfolders``, or ``__pycache__``, skipped)."""
    shown = _shown(relative)
    try:
        kind = entry.stat(follow_symlinks=False).st_mode
    except OSError as exc:
        return f"{shown} cannot be read: {exc.strerror}"
    if stat.S_ISLNK(kind):
        return f"{shown} is a symbolic link: not followed"
    if stat.S_ISDIR(kind):
        if entry.name != "__pycache__":
            subfolders.append(relative)
        return None
    if not stat.S_ISREG(kind):
        return f"{shown} is not a regular file: not opened"
    try:
        found = _hash_file(root / relative, budget)
    except OSError as exc:
        return f"{shown} cannot be read: {_reason(exc)}"
    if found is None:
        return f"stopped at {shown}: the files listed so far and this one hold over the byte limit"
    return found


def _hash_file(path: Path, budget: int) -> FileEntry | None:
    """A regular file's entry, opened without following links (O_NOFOLLOW) nor blocking on a
    FIFO swapped in (O_NONBLOCK); None when it holds more than ``budget`` bytes."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    descriptor = os.open(path, flags)
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise OSError(f"{path.name} is no longer a regular file")
        digest = hashlib.sha256()
        size = 0
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            if size > budget:
                return None
            digest.update(chunk)
    return FileEntry(size, digest.hexdigest())


def _name_problem(path: str, max_name: int) -> str | None:
    if len(path) > max_name:
        return f"has a name over {max_name} characters: not listed"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "has a name that is not UTF-8: not listed"
    parts = path.split("/")
    if (
        path.startswith("/")
        or "\\" in path
        or any(part in ("", ".", "..") for part in parts)
        or any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in path)
    ):
        return "has an unsafe name: not listed"
    return None


def _shown(text: str, limit: int = MAX_LISTED_NAME) -> str:
    """A name from an untrusted source, safe to print: quoted, controls escaped, bounded."""
    bound = min(limit, 120)
    return repr(text if len(text) <= bound else text[:bound] + "...")


def _reason(exc: BaseException) -> str:
    return _printable(str(exc) or type(exc).__name__)[:200]


def _printable(text: str) -> str:
    """One line of untrusted text with its control characters escaped (ANSI sequences,
    carriage returns, bidirectional overrides: nothing that rewrites a terminal)."""
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


# -- the diff between two versions -----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class VersionSide:
    """One side of a :func:`diff_versions`: a version of a plugin as installed or staged."""

    version: str
    manifest: Manifest
    code_hash: str
    #: The plugin's files (:func:`archive_files`, :func:`folder_files`); None when unknown.
    files: Mapping[str, FileEntry] | None = None


@attrs.frozen
class PermissionChange:
    """A permission one version asks for and the other does not, as the catalogue knows it
    (``description`` and ``risk`` None: a name this host's catalogue does not know)."""

    name: str
    optional: bool
    description: str | None
    risk: str | None

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "name": self.name,
            "optional": self.optional,
            "description": self.description,
            "risk": self.risk,
        }

    def line(self, mark: str) -> str:
        risk = f"risk {self.risk}" if self.risk else "unknown to this host"
        text = f"  {mark} {self.name} ({risk})"
        return _printable(f"{text}: {self.description}" if self.description else text)


#: The attributes of a setting a diff compares, in the order it shows them.
SETTING_ATTRIBUTES: Final = (
    "type",
    "secret",
    "required",
    "default",
    "choices",
    "min",
    "max",
    "max_length",
)


@attrs.frozen
class SettingChange:
    """A setting both versions have, with each compared attribute that differs:
    ``(attribute, before, after)``, attributes from :data:`SETTING_ATTRIBUTES`."""

    name: str
    changes: tuple[tuple[str, JSONValue, JSONValue], ...]

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "name": self.name,
            "changes": {
                attribute: {"before": before, "after": after}
                for attribute, before, after in self.changes
            },
        }

    def line(self) -> str:
        parts = [
            f"{attribute} {_json_text(before)} -> {_json_text(after)}"
            for attribute, before, after in self.changes
        ]
        return _printable(f"  ~ {self.name}: " + "; ".join(parts))


@attrs.frozen
class FileChange:
    """A file added (``before`` None), removed (``after`` None) or changed."""

    path: str
    before: FileEntry | None
    after: FileEntry | None

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "path": self.path,
            "before": self.before.to_dict() if self.before else None,
            "after": self.after.to_dict() if self.after else None,
        }

    def line(self) -> str:
        if self.before is None and self.after is not None:
            text = f"  + {self.path} ({_bytes(self.after.size)})"
        elif self.after is None and self.before is not None:
            text = f"  - {self.path} ({_bytes(self.before.size)})"
        else:
            assert self.before is not None
            assert self.after is not None
            sizes = (
                _bytes(self.after.size)
                if self.before.size == self.after.size
                else f"{self.before.size} -> {_bytes(self.after.size)}"
            )
            text = f"  ~ {self.path} ({sizes})"
        return _printable(text)


@attrs.frozen(kw_only=True)
class VersionDiff:
    """What changed between two versions of a plugin, for the admin who approves the new one.

    Built by :func:`diff_versions`. :meth:`lines` is the text the CLI prints,
    :meth:`summary` what an approval's audit event records, and :meth:`to_dict`
    the whole diff as JSON (``--json``, the audit trail), with these keys:

    * ``from``, ``to``: ``{"version": str, "code_hash": str}`` of each side;
    * ``permissions``, ``optional_permissions``: ``{"added": [...], "removed":
      [...]}``, each permission ``{"name", "optional", "description", "risk"}``
      (the catalogue's words; None for a name the host does not know);
    * ``hooks``: ``{"added": [names], "removed": [names], "listed": {"from":
      bool, "to": bool}}`` (``listed``: whether each version lists its hooks;
      a version that does not may implement any, and its hooks count as none);
    * ``settings``: ``{"added": [spec], "removed": [names], "changed":
      [{"name", "changes": {attribute: {"before", "after"}}}]}``, a spec being
      ``{"name", "type", "secret", "required", "default", "choices", "min",
      "max", "max_length"}`` and the attributes those of :data:`SETTING_ATTRIBUTES`;
    * ``requirements``: ``[{"name", "before", "after"}]``, ``name`` being
      ``requires_api``, ``requires_python``, ``dependencies.<distribution>`` or
      ``requires_plugins.<plugin id>``, ``before``/``after`` the specifier text
      (None: absent on that side);
    * ``files``: None when either side's files are unknown, else ``{"added":
      [...], "removed": [...], "changed": [...], "notes": [str]}``, each file
      ``{"path", "before", "after"}`` with ``{"size", "sha256"}`` or None, and
      ``notes`` what either listing left out (``from: ...``, ``to: ...``);
    * ``network``: ``{"added": [entries], "removed": [entries]}``, the manifest's
      ``network`` entries (hosts ``api.http_request`` may reach);
    * ``changelog``: the new version's changelog, or None;
    * ``asks_for_nothing_new``: bool, and ``reasons``: why not
      (:func:`asks_for_nothing_new`).
    """

    old_version: str
    new_version: str
    old_code_hash: str
    new_code_hash: str
    permissions_added: tuple[PermissionChange, ...] = ()
    permissions_removed: tuple[PermissionChange, ...] = ()
    optional_added: tuple[PermissionChange, ...] = ()
    optional_removed: tuple[PermissionChange, ...] = ()
    hooks_added: tuple[str, ...] = ()
    hooks_removed: tuple[str, ...] = ()
    #: Whether the old and the new version list their hooks.
    hooks_listed: tuple[bool, bool] = (True, True)
    settings_added: tuple[SettingSpec, ...] = ()
    settings_removed: tuple[str, ...] = ()
    settings_changed: tuple[SettingChange, ...] = ()
    requirements: tuple[RequirementChange, ...] = ()
    #: Whether both sides' files were known (else the ``files_*`` are empty).
    files_known: bool = False
    files_added: tuple[FileChange, ...] = ()
    files_removed: tuple[FileChange, ...] = ()
    files_changed: tuple[FileChange, ...] = ()
    #: What the file listings left out (``from: ...``, ``to: ...``).
    files_notes: tuple[str, ...] = ()
    #: The ``network`` entries the new version adds, and those it drops.
    network_added: tuple[str, ...] = ()
    network_removed: tuple[str, ...] = ()
    changelog: str | None = None
    reasons: tuple[str, ...] = ()

    @property
    def asks_for_nothing_new(self) -> list[str]:
        """Why the new version asks for something new (:func:`asks_for_nothing_new`); []
        when it asks for nothing new."""
        return list(self.reasons)

    def to_dict(self) -> dict[str, JSONValue]:
        """The whole diff as JSON-ready values; the keys are in the class docstring."""
        files: JSONValue = None
        if self.files_known:
            files = {
                "added": [change.to_dict() for change in self.files_added],
                "removed": [change.to_dict() for change in self.files_removed],
                "changed": [change.to_dict() for change in self.files_changed],
                "notes": list(self.files_notes),
            }
        return {
            "from": {"version": self.old_version, "code_hash": self.old_code_hash},
            "to": {"version": self.new_version, "code_hash": self.new_code_hash},
            "permissions": {
                "added": [p.to_dict() for p in self.permissions_added],
                "removed": [p.to_dict() for p in self.permissions_removed],
            },
            "optional_permissions": {
                "added": [p.to_dict() for p in self.optional_added],
                "removed": [p.to_dict() for p in self.optional_removed],
            },
            "hooks": {
                "added": list(self.hooks_added),
                "removed": list(self.hooks_removed),
                "listed": {"from": self.hooks_listed[0], "to": self.hooks_listed[1]},
            },
            "settings": {
                "added": [_spec_dict(spec) for spec in self.settings_added],
                "removed": list(self.settings_removed),
                "changed": [change.to_dict() for change in self.settings_changed],
            },
            "requirements": [change.to_dict() for change in self.requirements],
            "files": files,
            "network": {"added": list(self.network_added), "removed": list(self.network_removed)},
            "changelog": self.changelog,
            "asks_for_nothing_new": not self.reasons,
            "reasons": list(self.reasons),
        }

    def summary(self) -> dict[str, JSONValue]:
        """What an approval's audit event records: the versions and code hashes, the names
        of what was added, removed or changed, and file counts (None: files unknown)."""
        files: JSONValue = None
        if self.files_known:
            files = {
                "added": len(self.files_added),
                "removed": len(self.files_removed),
                "changed": len(self.files_changed),
            }
        return {
            "from": self.old_version,
            "to": self.new_version,
            "code_hash": {"from": self.old_code_hash, "to": self.new_code_hash},
            "permissions": {
                "added": [p.name for p in self.permissions_added],
                "removed": [p.name for p in self.permissions_removed],
            },
            "optional_permissions": {
                "added": [p.name for p in self.optional_added],
                "removed": [p.name for p in self.optional_removed],
            },
            "hooks": {"added": list(self.hooks_added), "removed": list(self.hooks_removed)},
            "settings": {
                "added": [str(spec.name) for spec in self.settings_added],
                "removed": list(self.settings_removed),
                "changed": [change.name for change in self.settings_changed],
            },
            "requirements": [change.name for change in self.requirements],
            "files": files,
            "network": {"added": list(self.network_added), "removed": list(self.network_removed)},
            "asks_for_nothing_new": not self.reasons,
        }

    def lines(self) -> list[str]:
        """The diff as the CLI prints it: one change a line under headings; sections with
        no change are left out. Text from the plugin is printed with its control
        characters escaped."""
        out = [_printable(f"Version {self.old_version} -> {self.new_version}")]
        if self.old_code_hash == self.new_code_hash:
            out.append(_printable(f"Code hash: {self.new_code_hash} (unchanged)"))
        else:
            out.append(_printable(f"Code hash: {self.old_code_hash} -> {self.new_code_hash}"))
        if self.reasons:
            out.append("Asks for something new:")
            out += [_printable(f"  ! {reason}") for reason in self.reasons]
        else:
            out.append("Asks for nothing new.")
        for heading, added, removed in (
            ("Permissions:", self.permissions_added, self.permissions_removed),
            ("Optional permissions:", self.optional_added, self.optional_removed),
        ):
            if added or removed:
                out.append(heading)
                out += [p.line("+") for p in added] + [p.line("-") for p in removed]
        hooks = [f"  + {hook}" for hook in self.hooks_added]
        hooks += [f"  - {hook}" for hook in self.hooks_removed]
        if self.hooks_listed == (True, False):
            hooks.append("  (the new version no longer lists its hooks: it may implement any)")
        elif self.hooks_listed == (False, True):
            hooks.append("  (the old version did not list its hooks)")
        if hooks:
            out += ["Hooks:", *map(_printable, hooks)]
        settings = [_printable(f"  + {_spec_text(spec)}") for spec in self.settings_added]
        settings += [_printable(f"  - {name}") for name in self.settings_removed]
        settings += [change.line() for change in self.settings_changed]
        if settings:
            out += ["Settings:", *settings]
        if self.requirements:
            out.append("Requirements:")
            out += [_printable(f"  ~ {_requirement_text(r)}") for r in self.requirements]
        if self.network_added or self.network_removed:
            out.append("Network:")
            out += [_printable(f"  + {entry}") for entry in self.network_added]
            out += [_printable(f"  - {entry}") for entry in self.network_removed]
        out += self._file_lines()
        if self.changelog:
            out.append("Changelog:")
            out += [_printable(f"  {line}".rstrip()) for line in self.changelog.splitlines()]
        return out

    def _file_lines(self) -> list[str]:
        if not self.files_known:
            if self.old_code_hash == self.new_code_hash:
                return []
            return ["Files: not compared (the files of a version are not known)"]
        changes = (*self.files_added, *self.files_removed, *self.files_changed)
        if not changes and not self.files_notes:
            return []
        counts = (
            f"{len(self.files_added)} added, {len(self.files_removed)} removed, "
            f"{len(self.files_changed)} changed"
        )
        out = [f"Files ({counts}):"]
        out += [change.line() for change in self.files_added]
        out += [change.line() for change in self.files_removed]
        out += [change.line() for change in self.files_changed]
        out += [_printable(f"  (not compared: {note})") for note in self.files_notes]
        return out


def diff_versions(
    old: VersionSide, new: VersionSide, catalogue: PermissionCatalogue
) -> VersionDiff:
    """What changed from ``old`` to ``new``, each permission described by ``catalogue``.

    Example::

        diff = diff_versions(
            VersionSide(version="1.0", manifest=running, code_hash=record.code_hash),
            VersionSide(version="1.1", manifest=staged, code_hash=staged_hash),
            PermissionCatalogue(),
        )
        print("\\n".join(diff.lines()))
    """
    before, after = old.manifest, new.manifest

    def described(names: Iterable[str], optional: bool) -> tuple[PermissionChange, ...]:
        found = []
        for name in names:
            try:
                known: Permission | None = catalogue[name]
            except KeyError:
                known = None
            found.append(
                PermissionChange(
                    name,
                    optional,
                    known.description if known else None,
                    known.risk.value if known else None,
                )
            )
        return tuple(found)

    old_hooks, new_hooks = before.hooks or (), after.hooks or ()
    old_specs = {str(spec.name): spec for spec in before.settings}
    new_specs = {str(spec.name): spec for spec in after.settings}
    changed = []
    for name, spec in new_specs.items():
        was = old_specs.get(name)
        if was is not None:
            differences = _setting_differences(was, spec)
            if differences:
                changed.append(SettingChange(name, differences))
    files = _file_changes(old.files, new.files)
    return VersionDiff(
        old_version=old.version,
        new_version=new.version,
        old_code_hash=old.code_hash,
        new_code_hash=new.code_hash,
        permissions_added=described(_missing(after.permissions, before.permissions), False),
        permissions_removed=described(_missing(before.permissions, after.permissions), False),
        optional_added=described(
            _missing(after.optional_permissions, before.optional_permissions), True
        ),
        optional_removed=described(
            _missing(before.optional_permissions, after.optional_permissions), True
        ),
        hooks_added=_missing(new_hooks, old_hooks),
        hooks_removed=_missing(old_hooks, new_hooks),
        hooks_listed=(before.hooks is not None, after.hooks is not None),
        settings_added=tuple(spec for name, spec in new_specs.items() if name not in old_specs),
        settings_removed=tuple(name for name in old_specs if name not in new_specs),
        settings_changed=tuple(changed),
        requirements=tuple(_requirement_changes(before, after)),
        files_known=files is not None,
        files_added=files[0] if files else (),
        files_removed=files[1] if files else (),
        files_changed=files[2] if files else (),
        files_notes=_listing_notes(old.files, new.files),
        network_added=_missing(after.network, before.network),
        network_removed=_missing(before.network, after.network),
        changelog=after.changelog,
        reasons=tuple(asks_for_nothing_new(before, after)),
    )


def _missing(names: Iterable[str], present: Iterable[str]) -> tuple[str, ...]:
    have = set(present)
    return tuple(str(name) for name in names if name not in have)


def _setting_values(spec: SettingSpec) -> dict[str, JSONValue]:
    return {
        "type": spec.type.value,
        "secret": spec.type is SettingType.SECRET,
        "required": spec.required,
        "default": spec.default,
        "choices": list(spec.choices) if spec.choices is not None else None,
        "min": spec.min,
        "max": spec.max,
        "max_length": spec.max_length,
    }


def _spec_dict(spec: SettingSpec) -> dict[str, JSONValue]:
    return {"name": str(spec.name), **_setting_values(spec)}


def _setting_differences(
    old: SettingSpec, new: SettingSpec
) -> tuple[tuple[str, JSONValue, JSONValue], ...]:
    before, after = _setting_values(old), _setting_values(new)
    return tuple(
        (attribute, before[attribute], after[attribute])
        for attribute in SETTING_ATTRIBUTES
        # JSON text tells 1 from 1.0 and true, which == does not.
        if _json_text(before[attribute]) != _json_text(after[attribute])
    )


def _spec_text(spec: SettingSpec) -> str:
    parts = [spec.type.value]
    if spec.required:
        parts.append("required")
    if spec.default is not None:
        parts.append(f"default {_json_text(spec.default)}")
    if spec.choices is not None:
        parts.append("one of " + ", ".join(_json_text(c) for c in spec.choices))
    if spec.min is not None:
        parts.append(f"at least {spec.min}")
    if spec.max is not None:
        parts.append(f"at most {spec.max}")
    if spec.max_length is not None:
        parts.append(f"at most {spec.max_length} characters")
    return f"{spec.name} ({', '.join(parts)})"


def _requirement_text(change: RequirementChange) -> str:
    before = "(absent)" if change.before is None else change.before or "(any version)"
    after = "(absent)" if change.after is None else change.after or "(any version)"
    return f"{change.name}: {before} -> {after}"


def _file_changes(
    old: Mapping[str, FileEntry] | None, new: Mapping[str, FileEntry] | None
) -> tuple[tuple[FileChange, ...], tuple[FileChange, ...], tuple[FileChange, ...]] | None:
    if old is None or new is None:
        return None
    added = tuple(FileChange(path, None, new[path]) for path in sorted(new) if path not in old)
    removed = tuple(FileChange(path, old[path], None) for path in sorted(old) if path not in new)
    changed = tuple(
        FileChange(path, old[path], new[path])
        for path in sorted(old)
        if path in new and old[path] != new[path]
    )
    return added, removed, changed


def _listing_notes(
    old: Mapping[str, FileEntry] | None, new: Mapping[str, FileEntry] | None
) -> tuple[str, ...]:
    notes: list[str] = []
    for side, listing in (("from", old), ("to", new)):
        notes += [f"{side}: {note}" for note in getattr(listing, "notes", ())]
    return tuple(notes)


def _json_text(value: JSONValue) -> str:
    return json.dumps(value, sort_keys=True)


def _bytes(size: int) -> str:
    return "1 byte" if size == 1 else f"{size} bytes"
