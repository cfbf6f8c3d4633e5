"""The code hash of a plugin: SHA-256 over its files' relative paths and contents."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

__all__ = ["code_hash", "folder_digests", "hash_files", "hash_header"]


def code_hash(folder: str | os.PathLike[str]) -> str:
    """The SHA-256 of a plugin's code, as lowercase hex, independent of any ZIP metadata.

    Every regular file under ``folder`` counts (dotfiles and ``__pycache__``
    too; folders themselves do not). Take each file's path relative to
    ``folder`` with ``/`` separators, sort them by their UTF-8 bytes, and feed
    one SHA-256 with, for each file in that order::

        path.encode("utf-8") + b"\\0" + len(content).to_bytes(8, "big") + content

    A publisher can compute it with this function on the folder they packed.

    :raises PackageError: when the folder holds a symbolic link or a file that
        is not regular.

    Example::

        code_hash("examples/hello-plugin")  # '3f1c...'
    """
    return _walk_hash(Path(folder), None)


def folder_digests(folder: str | os.PathLike[str]) -> tuple[str, dict[str, str]]:
    """The :func:`code_hash` of ``folder``, and each file's own SHA-256, from one read of each.

    The second item maps each file's relative POSIX path to the hex SHA-256 of
    its content: what the loader compares a module's source with when it
    compiles it, so a file changed after the folder was hashed is not run.

    :raises PackageError: as :func:`code_hash`.
    """
    files: dict[str, str] = {}
    return _walk_hash(Path(folder), files), files


def hash_files(root: Path, relatives: Iterable[str]) -> str:
    """The :func:`code_hash` of the given files under ``root`` (relative POSIX paths)."""
    return _hash(root, relatives, None)


def _walk_hash(root: Path, each: dict[str, str] | None) -> str:
    from ..errors import PackageError  # noqa: PLC0415 - only on the refusal paths; keeps import light

    if not root.is_dir():
        raise PackageError("is not a folder", path=str(root))
    files: list[str] = []
    for directory, dirnames, filenames in os.walk(root):
        base = Path(directory)
        for name in (*dirnames, *filenames):
            path = base / name
            mode = path.lstat().st_mode
            relative = path.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                raise PackageError("is a symbolic link", path=str(root), member=relative)
            if stat.S_ISREG(mode):
                files.append(relative)
            elif not stat.S_ISDIR(mode):
                raise PackageError("is not a regular file", path=str(root), member=relative)
    return _hash(root, files, each)


def _hash(root: Path, relatives: Iterable[str], each: dict[str, str] | None) -> str:
    digest = hashlib.sha256()
    for relative in sorted(relatives, key=lambda name: name.encode("utf-8")):
        content = (root / relative).read_bytes()
        digest.update(hash_header(relative, len(content)))
        digest.update(content)
        if each is not None:
            each[relative] = hashlib.sha256(content).hexdigest()
    return digest.hexdigest()


def hash_header(relative: str, size: int) -> bytes:
    return relative.encode("utf-8") + b"\0" + size.to_bytes(8, "big")
