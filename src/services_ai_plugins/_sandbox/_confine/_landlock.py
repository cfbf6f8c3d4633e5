"""The ``landlock`` layer: what the worker may read, write and reach, by path.

The plugin's folder and the readable paths read-only, its scratch folder
read-write, ``/dev/null``; TCP and (ABI 6+) signals and abstract Unix sockets
outside the sandbox refused. See docs/sandbox.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from ._syscalls import (
    syscall,
)

# Landlock: its system calls (the same numbers on every architecture but alpha), <linux/landlock.h>.
_SYS_LANDLOCK_CREATE_RULESET: Final = 444
_SYS_LANDLOCK_ADD_RULE: Final = 445
_SYS_LANDLOCK_RESTRICT_SELF: Final = 446
_LANDLOCK_CREATE_RULESET_VERSION: Final = 1 << 0
_LANDLOCK_RULE_PATH_BENEATH: Final = 1
_FS_EXECUTE: Final = 1 << 0
_FS_WRITE_FILE: Final = 1 << 1
_FS_READ_FILE: Final = 1 << 2
_FS_READ_DIR: Final = 1 << 3
_FS_REMOVE_DIR: Final = 1 << 4
_FS_REMOVE_FILE: Final = 1 << 5
_FS_MAKE_CHAR: Final = 1 << 6
_FS_MAKE_DIR: Final = 1 << 7
_FS_MAKE_REG: Final = 1 << 8
_FS_MAKE_SOCK: Final = 1 << 9
_FS_MAKE_FIFO: Final = 1 << 10
_FS_MAKE_BLOCK: Final = 1 << 11
_FS_MAKE_SYM: Final = 1 << 12
_FS_REFER: Final = 1 << 13  # ABI 2
_FS_TRUNCATE: Final = 1 << 14  # ABI 3
_FS_IOCTL_DEV: Final = 1 << 15  # ABI 5
_NET_BIND_TCP: Final = 1 << 0  # ABI 4
_NET_CONNECT_TCP: Final = 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET: Final = 1 << 0  # ABI 6
_SCOPE_SIGNAL: Final = 1 << 1  # ABI 6
#: The rights Landlock accepts on a rule for a file (not a directory).
_FS_FILE_RIGHTS: Final = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_FS_READ: Final = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
_FS_READ_WRITE: Final = (
    _FS_READ_FILE
    | _FS_READ_DIR
    | _FS_WRITE_FILE
    | _FS_TRUNCATE
    | _FS_REMOVE_DIR
    | _FS_REMOVE_FILE
    | _FS_MAKE_DIR
    | _FS_MAKE_REG
    | _FS_MAKE_SYM
    | _FS_REFER
)
_FS_DEVNULL: Final = _FS_READ_FILE | _FS_WRITE_FILE | _FS_TRUNCATE


def read_landlock_abi() -> tuple[int | None, str | None]:
    """The kernel's Landlock ABI version, or ``None`` and why there is none."""
    try:
        return syscall(_SYS_LANDLOCK_CREATE_RULESET, 0, 0, _LANDLOCK_CREATE_RULESET_VERSION), None
    except OSError as error:
        if error.errno == errno.ENOSYS:
            why = "the kernel has no Landlock (it needs Linux 5.13+ built with it)"
        elif error.errno == errno.EOPNOTSUPP:
            why = "Landlock is disabled at boot (add landlock to the kernel's lsm= parameter)"
        else:
            why = f"asking for Landlock's version failed: {error.strerror}"
        return None, why


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # packed in <linux/landlock.h>: 12 bytes
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _landlock_fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: executing to making symbolic links
    if abi >= 2:
        rights |= _FS_REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
    return rights


def apply_landlock(
    abi: int, *, folder: Path, scratch: Path | None, readable: Sequence[Path]
) -> None:
    handled = _landlock_fs_rights(abi)
    ruleset = _RulesetAttr(
        handled_access_fs=handled,
        handled_access_net=_NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0,
        scoped=_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0,
    )
    # An older kernel refuses the fields it does not know, even as zeros: pass only its own.
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset_fd = syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.addressof(ruleset), size, 0)
    try:
        for path in readable:
            _landlock_allow(ruleset_fd, path, _FS_READ & handled, optional=True)
        _landlock_allow(ruleset_fd, folder, _FS_READ & handled, optional=False)
        if scratch is not None:
            _landlock_allow(ruleset_fd, scratch, _FS_READ_WRITE & handled, optional=False)
        _landlock_allow(ruleset_fd, Path(os.devnull), _FS_DEVNULL & handled, optional=True)
        syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset_fd, 0)
    finally:
        os.close(ruleset_fd)


def _landlock_allow(ruleset_fd: int, path: Path, rights: int, *, optional: bool) -> None:
    """Allow ``rights`` beneath ``path``; an optional path the worker cannot reach is skipped."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, PermissionError) as error:
        if optional:
            # Skipping it gives the worker less access, never more.
            return
        raise OSError(error.errno, f"cannot open {path}: {error.strerror}") from error
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _FS_FILE_RIGHTS
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        try:
            syscall(
                _SYS_LANDLOCK_ADD_RULE, ruleset_fd, _LANDLOCK_RULE_PATH_BENEATH,
                ctypes.addressof(rule), 0,
            )  # fmt: skip
        except OSError as error:
            raise OSError(error.errno, f"landlock_add_rule({path}): {error.strerror}") from error
    finally:
        os.close(fd)
