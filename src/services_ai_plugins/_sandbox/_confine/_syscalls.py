"""System calls through ctypes, and the plumbing every layer shares.

The C library, ``syscall``, ``unshare``, ``mount``, ``prctl``, ``capset``; a trial
run in a forked child; the paths resolver; the flags of ``<linux/sched.h>`` and
``<sys/mount.h>``. Linux only where a call needs it; importing is safe anywhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import os
import stat
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from ...errors import ConfinementError

MiB: Final = 2**20


# <linux/sched.h>
CLONE_NEWUSER: Final = 0x10000000
CLONE_NEWNET: Final = 0x40000000
CLONE_NEWIPC: Final = 0x08000000
CLONE_THREAD: Final = 0x00010000
CLONE_NEWNS: Final = 0x00020000
# <sys/mount.h>
MS_NOSUID: Final = 2
MS_NODEV: Final = 4
MS_NOEXEC: Final = 8
MS_BIND: Final = 4096
MS_MOVE: Final = 8192
MS_REC: Final = 16384
MS_PRIVATE: Final = 1 << 18
# <linux/prctl.h>
_PR_SET_NO_NEW_PRIVS: Final = 38
# <linux/capability.h>
_LINUX_CAPABILITY_VERSION_3: Final = 0x20080522


#: A probe child's exit code: an unexpected exception.
CHILD_FAILED: Final = 255
#: A probe's result when no child could be forked (in a confined process, say).
_NO_CHILD: Final = 253


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, f"errno {code}")


def map_ids(uid: int, gid: int) -> None:
    """In a new user namespace: map the user and group it was made by (only those) to themselves."""
    with contextlib.suppress(FileNotFoundError):  # kernels before 3.19 have no setgroups file
        write_file(Path("/proc/self/setgroups"), "deny")
    write_file(Path("/proc/self/uid_map"), f"{uid} {uid} 1")
    write_file(Path("/proc/self/gid_map"), f"{gid} {gid} 1")


def write_file(path: Path, text: str) -> None:
    """Write ``text`` to an existing (kernel) file in one ``write``; raises OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class Unavailable(Exception):
    """A layer this machine does not offer; the message says why."""


def in_child(trial: Callable[[], int]) -> int:
    """Run ``trial`` in a forked child: its exit code (0 success, else an errno), or 256 + signal.

    The child calls only ``trial`` and ``os._exit``: it never returns into the caller's code.
    """
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a threaded process; the child only makes system calls.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            pid = os.fork()
        except OSError:  # a confined process, say: nothing more to be had in it
            return _NO_CHILD
    if pid == 0:  # pragma: no cover - the child's coverage is never written
        code = CHILD_FAILED
        try:
            code = trial()
        except BaseException:  # noqa: BLE001 - whatever happens, the child must exit here
            code = CHILD_FAILED
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 256 + os.WTERMSIG(status)


def child_problem(code: int) -> str:
    if code > 256:
        return f"the trial was killed by signal {code - 256}"
    if code == CHILD_FAILED:
        return "the trial failed unexpectedly"
    if code == _NO_CHILD:
        return "no child process could be forked to try it in"
    return f"{os.strerror(code)} [{errno_name(code)}]"


def unshare(flags: int) -> int:
    """``unshare(flags)``: 0, or the errno (``os.unshare`` is Python 3.12+)."""
    if c_library().unshare(ctypes.c_int(flags)) != 0:
        return ctypes.get_errno() or CHILD_FAILED
    return 0


def unshare_or_raise(flags: int, what: str) -> None:
    code = unshare(flags)
    if code:
        raise OSError(code, f"{what}: {os.strerror(code)}")


@functools.cache
def c_library() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def syscall(number: int, *args: int) -> int:
    """``syscall(number, *args)`` with integer (or address) arguments; raises OSError."""
    result = int(c_library().syscall(ctypes.c_long(number), *(ctypes.c_long(arg) for arg in args)))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def set_no_new_privs() -> None:
    no_new_privs = c_library().prctl(
        ctypes.c_int(_PR_SET_NO_NEW_PRIVS),
        ctypes.c_ulong(1),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    _check(no_new_privs, "prctl(PR_SET_NO_NEW_PRIVS)")


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def drop_capabilities() -> None:
    """Clear every capability of the process (its effective, permitted and inheritable sets)."""
    header = _CapHeader(version=_LINUX_CAPABILITY_VERSION_3, pid=0)
    data = (_CapData * 2)()
    _check(c_library().capset(ctypes.byref(header), data), "capset")


@contextlib.contextmanager
def applying(layer: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise ConfinementError(layer, error.errno, error.strerror or str(error)) from error
    except ValueError as error:  # resource.setrlimit reports a refused limit so
        raise ConfinementError(layer, None, str(error)) from error


def thread_count() -> int | None:
    try:
        return sum(1 for _ in Path("/proc/self/task").iterdir())
    except OSError:  # no /proc: nothing to count with
        return None


class Resolver:
    """Real paths and ``lstat`` results, each part looked at once (``os.path.realpath`` looks at
    every part of every path again: with a few hundred paths that adds up)."""

    def __init__(self) -> None:
        self._real: dict[str, str] = {"/": "/"}
        self._lstat: dict[str, os.stat_result | None] = {}

    def lstat(self, name: str) -> os.stat_result | None:
        """``os.lstat(name)``, or None when it does not exist; raises other OSErrors."""
        if name not in self._lstat:
            try:
                self._lstat[name] = os.lstat(name)
            except (FileNotFoundError, NotADirectoryError):
                self._lstat[name] = None
        return self._lstat[name]

    def real(self, path: str | os.PathLike[str]) -> str:
        """``os.path.realpath(path)``."""
        name = os.fspath(path)
        found = self._real.get(name)
        if found is not None:
            return found
        parent, _, base = name.rpartition("/")
        if not name.startswith("/") or base in ("", ".", "..") or "/./" in name or "/../" in name:
            found = os.path.realpath(name)
        else:
            folder = self.real(parent or "/")
            joined = (folder if folder != "/" else "") + "/" + base
            info = self.lstat(joined)
            found = os.path.realpath(joined) if info and stat.S_ISLNK(info.st_mode) else joined
        self._real[name] = found
        return found


def mount(
    source: Path | None, target: Path, kind: str | None, flags: int, data: str | None = None
) -> None:
    result = c_library().mount(
        None if source is None else os.fsencode(source),
        os.fsencode(target),
        None if kind is None else kind.encode(),
        ctypes.c_ulong(flags),
        None if data is None else data.encode(),
    )
    _check(result, f"mount {source} on {target}")
