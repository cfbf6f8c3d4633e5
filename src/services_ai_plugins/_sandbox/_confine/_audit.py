"""The audit hook: a plugin's forbidden operations as readable errors (``PermissionError``).

Not a boundary (the kernel layers are): it makes their refusals readable. See
docs/sandbox.md ("The audit hook").
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, final

from ._syscalls import (
    Resolver,
)


@final
class _Roots:
    """Folders and files, matched by name: a path is inside when it is one or lies beneath one."""

    def __init__(self, paths: Sequence[Path | str]) -> None:
        resolver = Resolver()
        names: set[str] = set()
        for path in paths:
            name = _absolute(path)
            assert name is not None
            names |= {name.rstrip("/") or "/", resolver.real(name)}
        self.names: Final = frozenset(names)

    def depth(self, name: str) -> int:
        """The length of the longest of the names that ``name`` is or lies beneath; -1: none."""
        end = len(name)
        while end > 0:
            if name[:end] in self.names:
                return end
            end = name.rfind("/", 0, end)
        return 0 if "/" in self.names else -1

    def __contains__(self, name: str) -> bool:
        return self.depth(name) >= 0


#: A check of one audit event: the guard, the event's name and its arguments.
_Check = Callable[["_AuditGuard", str, tuple[Any, ...]], None]

_WRITE_FLAGS: Final = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def _refuse(what: str, detail: str = "") -> PermissionError:
    return PermissionError(f"plugin sandbox: {what} is not allowed{detail}")


def _absolute(path: object) -> str | None:
    """The path's absolute name, or None for a file descriptor (or something not a path)."""
    if path is None:
        path = "."
    if not isinstance(path, (str, bytes, os.PathLike)):
        return None
    name = os.fsdecode(os.fspath(path))
    if name.startswith(os.sep) and "/." not in name and "//" not in name:
        return name  # already absolute and normal, as imports' paths are: the common case
    # A str in and out, on every open(): pathlib's objects would cost more here.
    return os.path.abspath(name)  # noqa: PTH100 - as above


@final
class _AuditGuard:
    """The audit hook: refuses a plugin's forbidden operations with readable errors."""

    def __init__(
        self,
        *,
        folder: Path,
        scratch: Path | None,
        readable: Sequence[Path],
        hidden: Sequence[Path] = (),
    ) -> None:
        writable = [] if scratch is None else [scratch]
        self._read: Final = _Roots([folder, *readable, *writable, os.devnull])
        self._hidden: Final = _Roots(hidden)
        self._write: Final = _Roots([*writable, os.devnull])
        self._write_hint: Final = (
            f" (a plugin writes only in its scratch folder {scratch})"
            if scratch
            else " (a plugin without a scratch folder writes no files)"
        )

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        check = _AUDIT_CHECKS.get(event)
        if check is not None:
            check(self, event, args)

    def read(self, path: object, operation: str) -> None:
        name = _absolute(path)
        # Inside a hidden folder only what a readable path deeper down holds.
        if name is not None and self._read.depth(name) <= self._hidden.depth(name):
            raise _refuse(
                f"{operation} {name!r}",
                " (a plugin reads only its folder, its scratch folder and the paths it is given)",
            )

    def write(self, path: object, operation: str) -> None:
        name = _absolute(path)
        if name is not None and name not in self._write:
            raise _refuse(f"{operation} {name!r}", self._write_hint)

    def opening(self, event: str, args: tuple[Any, ...]) -> None:
        path, mode, flags = args
        writes = (isinstance(flags, int) and bool(flags & _WRITE_FLAGS)) or (
            isinstance(mode, str) and any(letter in mode for letter in "wax+")
        )
        if writes:
            self.write(path, "opening for writing")
        else:
            self.read(path, "reading")

    def listing(self, event: str, args: tuple[Any, ...]) -> None:
        self.read(args[0], "listing")

    def changing(self, event: str, args: tuple[Any, ...]) -> None:
        self.write(args[0], f"changing ({event})")

    def moving(self, event: str, args: tuple[Any, ...]) -> None:
        source, target = args[0], args[1]
        self.write(source, f"changing ({event})")
        self.write(target, f"changing ({event})")

    def linking(self, event: str, args: tuple[Any, ...]) -> None:
        target, link = args[0], args[1]
        self.write(link, "creating a symbolic link")
        name = _absolute(link)
        if name is not None and isinstance(target, (str, bytes, os.PathLike)):
            # The link's target, relative to the link's folder, must be readable already.
            target_name = os.fsdecode(os.fspath(target))
            if not target_name.startswith(os.sep):
                target_name = name.rpartition(os.sep)[0] + os.sep + target_name
            self.read(target_name, "linking to")

    def new_socket(self, event: str, args: tuple[Any, ...]) -> None:
        family = args[1]
        # -1: a socket object around an existing descriptor (socket.socket(fileno=...)).
        if family != -1:
            try:
                name = socket.AddressFamily(family).name
            except ValueError:
                name = str(family)
            raise _refuse("network access", f" (a socket of family {name})")

    def network(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "socket.sendmsg" and args[1] is None:
            return  # on a connected socket: nothing new is reached
        # The socket methods' first argument is the socket; look-ups' the host name.
        shown = args if event.startswith("socket.get") else args[1:]
        raise _refuse("network access", f" ({event}{_arguments(shown)})")

    def processes(self, event: str, args: tuple[Any, ...]) -> None:
        raise _refuse("starting programs or processes", f" ({event}{_arguments(args)})")

    def signals(self, event: str, args: tuple[Any, ...]) -> None:
        raise _refuse("sending signals", f" ({event}{_arguments(args)})")

    def limits(self, event: str, args: tuple[Any, ...]) -> None:
        if args[0] not in (0, os.getpid()):
            raise _refuse("changing or reading another process's limits", f" ({event} {args[0]})")

    def native(self, event: str, args: tuple[Any, ...]) -> None:
        raise _refuse("loading native code with ctypes", f" ({event}{_arguments(args)})")


def _arguments(args: tuple[Any, ...]) -> str:
    text = ", ".join(repr(arg) for arg in args)
    return f" {text[:200]}" if text else ""


_AUDIT_CHECKS: Final[Mapping[str, _Check]] = {
    "open": _AuditGuard.opening,
    "os.listdir": _AuditGuard.listing,
    "os.scandir": _AuditGuard.listing,
    **dict.fromkeys(
        (
            "os.chmod",
            "os.chown",
            "os.mkdir",
            "os.mkfifo",
            "os.mknod",
            "os.remove",
            "os.removexattr",
            "os.rmdir",
            "os.setxattr",
            "os.truncate",
            "os.utime",
            "shutil.rmtree",
        ),
        _AuditGuard.changing,
    ),
    "os.rename": _AuditGuard.moving,
    "os.link": _AuditGuard.moving,
    "os.symlink": _AuditGuard.linking,
    "socket.__new__": _AuditGuard.new_socket,
    **dict.fromkeys(
        (
            "socket.bind",
            "socket.connect",
            "socket.sendto",
            "socket.sendmsg",
            "socket.getaddrinfo",
            "socket.gethostbyname",
            "socket.gethostbyaddr",
            "socket.getnameinfo",
        ),
        _AuditGuard.network,
    ),
    **dict.fromkeys(
        (
            "subprocess.Popen",
            "os.system",
            "os.exec",
            "os.posix_spawn",
            "os.spawn",
            "os.fork",
            "os.forkpty",
            "os.startfile",
        ),
        _AuditGuard.processes,
    ),
    **dict.fromkeys(("os.kill", "os.killpg"), _AuditGuard.signals),
    "resource.prlimit": _AuditGuard.limits,
    **dict.fromkeys(("ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle"), _AuditGuard.native),
}


def install_audit_hook(
    *, folder: Path, scratch: Path | None, readable: Sequence[Path], hidden: Sequence[Path] = ()
) -> None:
    """Turn a plugin's forbidden operations into readable ``PermissionError``s, for good.

    Adds a ``sys.addaudithook`` hook (it cannot be removed) that refuses:
    reading (opening, listing) outside ``folder``, ``scratch`` and
    ``readable``, or inside ``hidden`` but outside a readable path beneath
    it; writing (opening for writing, creating, removing, renaming,
    changing) outside ``scratch``; ``/dev/null`` is always
    allowed. Also: new sockets (of any family), ``connect``,
    ``bind``, ``sendto`` and host-name look-ups; ``subprocess``,
    ``os.system``, ``os.exec*``, ``os.posix_spawn*``, ``os.spawn*``,
    ``os.fork``, ``os.forkpty``; ``os.kill`` and ``os.killpg``;
    ``resource.prlimit`` on another process; and
    ``ctypes`` loading a library or looking up a symbol. Each message starts
    with ``plugin sandbox:`` and names the operation. Plugins may add audit
    hooks of their own.

    This is not a security boundary (see docs/sandbox.md): it
    compares path names, not files, and code that raises no audit event goes
    around it. It is there so that plugin authors read what the kernel
    layers of :func:`confine` refused. Install it after :func:`confine`,
    when the worker's own imports are done; opening an allowed path costs a
    set look-up per folder above it.

    Example (in a worker)::

        install_audit_hook(folder=plugin_folder, scratch=scratch_folder, readable=[])
        open("/etc/passwd")  # PermissionError: plugin sandbox: reading '/etc/passwd' ...
    """
    sys.addaudithook(_AuditGuard(folder=folder, scratch=scratch, readable=readable, hidden=hidden))
