"""Operating-system confinement of a plugin worker process.

A worker is forked from a clean zygote, calls :func:`confine` right after
``os.setsid()`` and before it imports any plugin code, and then runs that
code. :func:`probe` finds out which layers this machine offers;
:func:`confine` applies every available one, in this order, and names the
ones it applied. Each layer is worth having alone; together they are the
sandbox. Every layer is one-way: nothing in the worker can undo it.

1. ``network_namespace``: the worker moves into a new, empty network
   namespace (``unshare(CLONE_NEWNET)`` as root; as any other user inside a
   new user namespace, whose capabilities it then drops at once).

   *Stops*: every connection to the network, the host's loopback services
   included (the namespace has only a loopback interface, and it is down),
   and abstract Unix sockets of the host (they are per namespace).
   *Does not stop*: use of file descriptors the worker already holds (its
   socket to the host keeps working), and pathname Unix sockets in the file
   system (a database's socket, the D-Bus system bus, a local DNS
   resolver's socket under ``/run``): the seccomp layer covers those, by
   refusing every new socket. Without a user namespace (a non-root host where they
   are disabled) this layer is missing.

2. ``rlimits``: resource limits (``setrlimit``; soft and hard, so the worker
   cannot raise them again): address space (``RLIMIT_AS``, :attr:`Limits.memory`),
   CPU seconds over the worker's life (``RLIMIT_CPU``: ``SIGXCPU`` at the
   limit, ``SIGKILL`` a second later), the size of any file it writes
   (``RLIMIT_FSIZE``), open file descriptors (``RLIMIT_NOFILE``) and no core
   dumps (``RLIMIT_CORE`` 0). In a user namespace of its own (the non-root
   ``network_namespace`` layer) the worker also gets ``RLIMIT_NPROC`` 64: at
   most 64 threads and processes counted in that namespace alone.

   *Stops*: a plugin exhausting memory (a big allocation raises
   ``MemoryError``), spinning forever on the CPU, filling the disk through
   one file, or leaking descriptors. *Does not stop*: wall-clock time (a
   sleeping or blocked worker uses no CPU: the host enforces call timeouts),
   disk use spread over many files, or a fork bomb. ``RLIMIT_NPROC`` counts
   every process of the user, machine-wide, so outside a user namespace of
   its own it is left alone: 0 would stop the worker's own threads too, and
   any other number would be shared with every process of that user.

3. ``unprivileged_user`` (root only): ``scratch`` is handed to the
   unprivileged user (``nobody``: :attr:`Capabilities.unprivileged`), then
   the worker drops every group, its group and its user to it
   (``setgroups([])``, ``setgid``, ``setuid``), and with them every
   capability.

   *Stops*: everything only root may do: reading or writing files by their
   permissions (other users' files, ``/etc/shadow``), signalling or tracing
   other users' processes, binding low ports, loading modules, mounting.
   *Does not stop*: reading what everyone may read (Landlock does), nor
   signalling or tracing the other workers, which run as the same user
   (Landlock's scopes and seccomp do). The plugin's folder, the readable
   paths and the Python installation must be readable by that user.

   When a folder *above* them shuts that user out (Python under ``/root``,
   mode 0700; a private temporary folder), the worker first enters a mount
   namespace of its own (``private_mounts``), covers each such folder with
   an empty ``tmpfs`` and mounts back, at their own places, only the paths it
   needs: it then reaches those, and nothing else of that folder exists for
   it; no other process's view changes. When a needed path itself is
   unreadable to that user (a file of mode 0600), the worker keeps uid 0
   but clears every capability instead (``no_capabilities``): it then cannot
   override permissions, raise its limits, signal or trace others, or
   mount, but root's own files stay open to it by their permissions, where
   Landlock is the fence.

4. ``no_new_privs``: ``prctl(PR_SET_NO_NEW_PRIVS, 1)``.

   *Stops*: gaining privileges by running a set-user-id or set-group-id
   program or one with file capabilities, and it is what lets a process
   that is not root apply Landlock and seccomp. *Does not stop* anything
   else by itself.

5. ``landlock``: a Landlock ruleset that handles every file-system right the
   kernel's Landlock ABI knows (reading, writing, executing, listing,
   creating, removing, renaming and linking (``REFER``, ABI 2), truncating
   (ABI 3) and device ioctls (ABI 5)), and allows only: reading (and
   executing) beneath ``folder`` and each path of ``readable``, reading and
   writing beneath ``scratch``, and reading and writing ``/dev/null``. From
   ABI 4 it also denies binding and connecting TCP sockets (there are no
   network rules); from ABI 6 it scopes abstract Unix sockets and signals.

   *Stops*: opening anything else: ``/etc/passwd``, the host's files,
   ``/proc``, devices; writing outside ``scratch``; TCP connections and
   listening sockets (ABI 4); connecting to abstract Unix sockets created
   outside the sandbox and signalling any process outside it, the host and
   the other workers included (ABI 6); tracing processes outside it (every
   ABI). *Does not stop*: what the worker does with file descriptors opened
   before (the host socket, standard streams), ``stat``, ``access`` and
   ``readlink`` on any path (a plugin can learn that a file exists), changing
   owners, modes, times or extended attributes (the user's permissions
   decide those), connecting to pathname Unix sockets, or UDP and other
   protocols (seccomp and the network namespace do). With ABI 1 every rename
   or link between two folders fails, even inside ``scratch``.

6. ``seccomp``: a system-call filter (libseccomp through ``ctypes``), allowing
   everything except: ``execve``, ``execveat``, ``fork``, ``vfork``, ``clone``
   without ``CLONE_THREAD`` (``EPERM``) and ``clone3`` (``ENOSYS``, so the C
   library falls back to ``clone`` for threads); ``socket`` of any domain,
   ``AF_UNIX`` included (``socketpair`` stays allowed); ``kill``, ``tgkill``,
   ``rt_sigqueueinfo`` and ``rt_tgsigqueueinfo`` aimed at another process,
   ``tkill`` and
   ``pidfd_send_signal``; ``ptrace``, ``process_vm_readv``/``writev``,
   ``process_madvise``, ``pidfd_getfd``; ``unshare``, ``setns``, ``mount`` and
   the other mount calls, ``chroot``, ``pivot_root``; ``bpf``,
   ``perf_event_open``, ``userfaultfd``, ``io_uring_*``, the key rings
   (``keyctl``, ``add_key``, ``request_key``), module, ``kexec``, ``reboot``,
   swap, accounting, quota, clock and host-name calls, ``iopl``/``ioperm``,
   ``syslog``, ``open_by_handle_at``; and the terminal ioctls ``TIOCSTI`` and
   ``TIOCLINUX`` (typing into a terminal). Each fails with ``EPERM`` unless
   noted; foreign-architecture system calls (32-bit ones on x86-64) kill
   the worker.

   *Stops*: running any program, starting processes (Python threads keep
   working), creating any socket (TCP, UDP, raw, packet, netlink, Unix), and so
   DNS look-ups and connections to pathname sockets (a database's, D-Bus);
   signalling other processes; reading or writing another
   process's memory; most of the kernel's attack surface that plugins never
   need. *Does not stop*: pairs of connected sockets (``socketpair``), which
   reach nothing outside the worker; what the allowed calls
   do (memory, CPU, files: the other layers), or bugs in the kernel behind
   them.

:func:`install_audit_hook` adds one more, different kind of guard: a
``sys.addaudithook`` hook that turns a plugin's forbidden file, network,
process, signal and ``ctypes`` operations into ``PermissionError``s whose
messages say what the sandbox refused. It is *not a boundary*: audit hooks
see only what Python reports, and native code, ``ctypes`` objects created
before it was installed, symbolic and hard links (it compares path names,
not files) or a function that raises no audit event all go around it. The
kernel layers above are the boundary; the hook makes their refusals
readable.

Only Linux offers layers 1, 4, 5 and 6. The caller must be single-threaded
(Landlock and seccomp bind the calling thread; a user namespace needs it).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import os
import platform
import socket
import stat
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple, final

import attrs

from ._errors import PluginError

__all__ = [
    "LAYER_NAMES",
    "NO_CAPABILITIES",
    "Capabilities",
    "ConfinementError",
    "Layer",
    "Limits",
    "confine",
    "install_audit_hook",
    "probe",
    "unreadable_by",
]

NETWORK_NAMESPACE: Final = "network_namespace"
RLIMITS: Final = "rlimits"
UNPRIVILEGED_USER: Final = "unprivileged_user"
NO_NEW_PRIVS: Final = "no_new_privs"
LANDLOCK: Final = "landlock"
SECCOMP: Final = "seccomp"
#: Applied instead of ``unprivileged_user`` when that user could not read what the worker needs.
NO_CAPABILITIES: Final = "no_capabilities"
#: Applied before ``unprivileged_user`` when a folder above what the worker needs shuts that
#: user out (Python under ``/root``, a private temporary folder): see :func:`_expose`.
PRIVATE_MOUNTS: Final = "private_mounts"

#: The layers, in the order :func:`confine` applies them.
LAYER_NAMES: Final = (
    NETWORK_NAMESPACE,
    RLIMITS,
    UNPRIVILEGED_USER,
    NO_NEW_PRIVS,
    LANDLOCK,
    SECCOMP,
)

#: The key of :attr:`Capabilities.reasons` for unprivileged user namespaces (not a layer).
USER_NAMESPACES: Final = "user_namespaces"

_MiB: Final = 2**20

# <linux/sched.h>
_CLONE_NEWUSER: Final = 0x10000000
_CLONE_NEWNET: Final = 0x40000000
_CLONE_THREAD: Final = 0x00010000
_CLONE_NEWNS: Final = 0x00020000
# <sys/mount.h>
_MS_NOSUID: Final = 2
_MS_NODEV: Final = 4
_MS_BIND: Final = 4096
_MS_MOVE: Final = 8192
_MS_REC: Final = 16384
_MS_PRIVATE: Final = 1 << 18
# <linux/prctl.h>
_PR_SET_NO_NEW_PRIVS: Final = 38
# <linux/capability.h>
_LINUX_CAPABILITY_VERSION_3: Final = 0x20080522

#: Threads (and processes) a worker may have in a user namespace of its own, its main thread
#: included: RLIMIT_NPROC counts them there alone.
_TASKS: Final = 64
#: Seconds between SIGXCPU (the soft CPU limit) and SIGKILL (the hard one).
_CPU_GRACE: Final = 1

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

# libseccomp: <seccomp.h>.
_SCMP_ACT_ALLOW: Final = 0x7FFF0000
_SCMP_ACT_KILL_PROCESS: Final = 0x80000000
_SCMP_FLTATR_ACT_BADARCH: Final = 2
_SCMP_CMP_NE: Final = 1
_SCMP_CMP_MASKED_EQ: Final = 7
# The terminal ioctls that type into or take over a terminal; ioctl's request is 32 bits wide.
_TIOCSTI: Final = 0x5412
_TIOCLINUX: Final = 0x541C
_IOCTL_REQUEST_MASK: Final = 0xFFFFFFFF

#: A probe child's exit code: the filter loaded, but socket(AF_INET) still worked.
_FILTER_INEFFECTIVE: Final = 254
#: A probe child's exit code: an unexpected exception.
_CHILD_FAILED: Final = 255
#: A probe's result when no child could be forked (in a confined process, say).
_NO_CHILD: Final = 253


def _scmp_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class ConfinementError(PluginError):
    """A sandbox layer that :func:`probe` reported as available could not be applied.

    ``layer`` names the layer (one of :data:`LAYER_NAMES`) and ``errno`` the
    system's error number when there was one. The process is left partly
    confined: end it rather than run plugin code in it.
    """

    def __init__(self, layer: str, code: int | None, detail: str) -> None:
        #: The layer that failed.
        self.layer = layer
        #: The ``errno`` of the failure, or ``None``.
        self.errno = code
        #: What failed, in words.
        self.detail = detail
        reason = f"{detail} [{_errno_name(code)}]" if code else detail
        super().__init__(f"cannot apply the {layer} sandbox layer: {reason}")


def _errno_name(code: int) -> str:
    return errno.errorcode.get(code, f"errno {code}")


def _positive(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive integer or None (got {value!r})")


@attrs.frozen(kw_only=True)
class Limits:
    """The resource limits :func:`confine` gives a worker; ``None`` keeps the inherited one.

    Example::

        >>> Limits(memory=256 * 2**20, cpu=60).file_size
        16777216
    """

    #: The address space, in bytes (``RLIMIT_AS``): virtual memory, so each thread's stack
    #: (8 MiB by default) counts in full, as does every mapped file.
    memory: int | None = attrs.field(default=512 * _MiB, validator=_positive)
    #: CPU seconds over the worker's whole life (``RLIMIT_CPU``), not per call.
    cpu: int | None = attrs.field(default=600, validator=_positive)
    #: The largest file the worker may write, in bytes (``RLIMIT_FSIZE``).
    file_size: int | None = attrs.field(default=16 * _MiB, validator=_positive)
    #: Open file descriptors (``RLIMIT_NOFILE``): new ones are numbered below it.
    open_files: int | None = attrs.field(default=64, validator=_positive)


@attrs.frozen(kw_only=True)
class Layer:
    """One layer of the sandbox on this machine: what it stops, or why it is missing."""

    #: Its name, as :func:`confine` returns it (one of :data:`LAYER_NAMES`).
    name: str
    #: Whether :func:`confine` applies it here.
    available: bool
    #: What it stops, for an operator.
    stops: str
    #: Why it is not available; ``None`` when it is.
    missing: str | None


@attrs.frozen(kw_only=True)
class Capabilities:
    """What this machine offers a sandbox, as :func:`probe` found it.

    Build one by hand, or change one with :func:`attrs.evolve`, to apply
    fewer layers: :func:`confine` applies exactly the layers that
    :meth:`layers` reports available.
    """

    #: ``platform.system()``: ``"Linux"``, ``"Darwin"``, ...
    system: str
    #: Whether the process runs as root (effective user id 0).
    root: bool
    #: ``(uid, gid)`` of ``nobody`` (65534 when there is none) when root, else ``None``.
    unprivileged: tuple[int, int] | None
    #: Whether an unprivileged user can create a user and network namespace (tried in a child).
    user_namespaces: bool
    #: Whether a new network namespace can be entered: directly as root, else in a user namespace.
    network_namespace: bool
    #: The kernel's Landlock ABI version, or ``None`` without Landlock.
    landlock_abi: int | None
    #: Whether libseccomp loads and its filter works (tried in a child).
    seccomp: bool
    #: Whether the ``resource`` module is present.
    rlimits: bool
    #: Why each missing layer (by name) or :data:`USER_NAMESPACES` is missing, as probed.
    reasons: Mapping[str, str] = attrs.field(factory=dict, hash=False)

    def layers(self) -> tuple[Layer, ...]:
        """Every layer, in the order :func:`confine` applies them."""
        linux = self.system == "Linux"
        abi = self.landlock_abi or 0
        network_stops = "connections to the network, the host's loopback included"
        if not self.root:
            network_stops += " (through a user namespace, whose capabilities are dropped)"
        rlimit_stops = "exhausting memory, CPU time, a file's size or file descriptors; core dumps"
        if not self.root and self.network_namespace:
            rlimit_stops += f"; more than {_TASKS} threads"
        landlock_stops = "reading files outside the plugin's folder and the readable paths"
        landlock_stops += ", writing outside its scratch folder, tracing other processes"
        if abi >= 4:
            landlock_stops += ", TCP connections and listening"
        if abi >= 6:
            landlock_stops += ", signals and abstract Unix sockets outside the sandbox"
        if abi:
            landlock_stops += f" (ABI {abi})"
        return (
            Layer(
                name=NETWORK_NAMESPACE,
                available=self.network_namespace,
                stops=network_stops,
                missing=None if self.network_namespace else self._why(NETWORK_NAMESPACE),
            ),
            Layer(
                name=RLIMITS,
                available=self.rlimits,
                stops=rlimit_stops,
                missing=None if self.rlimits else self._why(RLIMITS),
            ),
            Layer(
                name=UNPRIVILEGED_USER,
                available=self._drops_user,
                stops="root's powers: other users' files, their processes, privileged calls",
                missing=None if self._drops_user else self._why(UNPRIVILEGED_USER),
            ),
            Layer(
                name=NO_NEW_PRIVS,
                available=linux,
                stops="gaining privileges through set-user-id programs; lets Landlock and "
                "seccomp apply without root",
                missing=None if linux else self._why(NO_NEW_PRIVS),
            ),
            Layer(
                name=LANDLOCK,
                available=self.landlock_abi is not None,
                stops=landlock_stops,
                missing=None if self.landlock_abi is not None else self._why(LANDLOCK),
            ),
            Layer(
                name=SECCOMP,
                available=self.seccomp,
                stops="running programs, starting processes (threads still work), new sockets, "
                "signals to other processes, ptrace, namespaces, mounts, bpf, io_uring",
                missing=None if self.seccomp else self._why(SECCOMP),
            ),
        )

    @property
    def level(self) -> str:
        """How strong a sandbox this machine offers: strong, partial or minimal.

        ``"strong"``: every layer that applies here is available (dropping the
        user applies only to root); ``"partial"``: at least Landlock or
        seccomp, the kernel-enforced file and process boundaries, is;
        ``"minimal"``: neither is.
        """
        if not self._missing():
            return "strong"
        if self.landlock_abi is not None or self.seccomp:
            return "partial"
        return "minimal"

    @property
    def report(self) -> str:
        """The level and what is missing, in one line."""
        missing = self._missing()
        if not missing:
            return f"{self.level}: every sandbox layer is available"
        gaps = "; ".join(f"{layer.name} ({layer.missing})" for layer in missing)
        return f"{self.level}: missing {gaps}"

    @property
    def _drops_user(self) -> bool:
        return self.root and self.unprivileged is not None

    def _missing(self) -> list[Layer]:
        return [
            layer
            for layer in self.layers()
            if not layer.available and (layer.name != UNPRIVILEGED_USER or self.root)
        ]

    def _why(self, name: str) -> str:
        if name in self.reasons:
            return self.reasons[name]
        if name == UNPRIVILEGED_USER:
            if not self.root:
                return "not running as root: the worker keeps the host's user"
            return "no unprivileged user to switch to"
        if self.system != "Linux" and name != RLIMITS:
            return f"needs Linux (this is {self.system or 'an unknown system'})"
        return "not offered here"


# -- probing -------------------------------------------------------------------------------------


@functools.cache
def probe() -> Capabilities:
    """Find out which sandbox layers this machine offers (cached for the process).

    Safe in any process: the namespace and seccomp trials run in a forked
    child, which exits; Landlock's version is asked without changing
    anything. Call it before forking workers, so that they inherit the
    result (and the loaded libseccomp).

    Example::

        >>> probe().level in {"strong", "partial", "minimal"}
        True
    """
    system = platform.system()
    linux = system == "Linux"
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    unprivileged = _unprivileged_ids() if root else None
    reasons: dict[str, str] = {}
    try:
        import resource  # noqa: F401, PLC0415 - only to know whether it exists (POSIX only)
    except ImportError as error:
        rlimits = False
        reasons[RLIMITS] = f"the resource module cannot be imported (not a POSIX system?): {error}"
    else:
        rlimits = True
    if not linux:
        why = f"needs Linux (this is {system or 'an unknown system'})"
        reasons.update(dict.fromkeys((NETWORK_NAMESPACE, NO_NEW_PRIVS, LANDLOCK, SECCOMP), why))
        reasons[USER_NAMESPACES] = why
        return Capabilities(
            system=system,
            root=root,
            unprivileged=unprivileged,
            user_namespaces=False,
            network_namespace=False,
            landlock_abi=None,
            seccomp=False,
            rlimits=rlimits,
            reasons=reasons,
        )

    code = _in_child(functools.partial(_try_user_namespace, unprivileged))
    user_namespaces = code == 0
    if not user_namespaces:
        reasons[USER_NAMESPACES] = _user_namespace_problem(code)
    if root:
        code = _in_child(functools.partial(_unshare, _CLONE_NEWNET))
        network_namespace = code == 0
        if not network_namespace:
            reasons[NETWORK_NAMESPACE] = (
                f"unshare(CLONE_NEWNET) failed as root: {_child_problem(code)}"
            )
    else:
        network_namespace = user_namespaces
        if not network_namespace:
            reasons[NETWORK_NAMESPACE] = reasons[USER_NAMESPACES]

    landlock_abi, problem = _landlock_abi()
    if problem is not None:
        reasons[LANDLOCK] = problem

    seccomp = False
    library = _libseccomp()
    if library is None:
        reasons[SECCOMP] = (
            "libseccomp 2.1+ cannot be loaded (ctypes.util.find_library('seccomp')): "
            "install libseccomp2"
        )
    else:
        code = _in_child(functools.partial(_try_seccomp, library))
        seccomp = code == 0
        if code == _FILTER_INEFFECTIVE:
            reasons[SECCOMP] = "a seccomp filter loaded but did not stop socket(AF_INET)"
        elif not seccomp:
            reasons[SECCOMP] = f"a seccomp filter could not be loaded: {_child_problem(code)}"
    return Capabilities(
        system=system,
        root=root,
        unprivileged=unprivileged,
        user_namespaces=user_namespaces,
        network_namespace=network_namespace,
        landlock_abi=landlock_abi,
        seccomp=seccomp,
        rlimits=rlimits,
        reasons=reasons,
    )


def _unprivileged_ids() -> tuple[int, int]:
    import pwd  # noqa: PLC0415 - POSIX only

    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return 65534, 65534
    return entry.pw_uid, entry.pw_gid


def _in_child(trial: Callable[[], int]) -> int:
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
        code = _CHILD_FAILED
        try:
            code = trial()
        except BaseException:  # noqa: BLE001 - whatever happens, the child must exit here
            code = _CHILD_FAILED
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 256 + os.WTERMSIG(status)


def _child_problem(code: int) -> str:
    if code > 256:
        return f"the trial was killed by signal {code - 256}"
    if code == _CHILD_FAILED:
        return "the trial failed unexpectedly"
    if code == _NO_CHILD:
        return "no child process could be forked to try it in"
    return f"{os.strerror(code)} [{_errno_name(code)}]"


def _user_namespace_problem(code: int) -> str:
    hints = {
        errno.EPERM: "disabled by kernel.unprivileged_userns_clone, a security module "
        "(AppArmor, SELinux) or a container's seccomp profile",
        errno.ENOSPC: "user.max_user_namespaces is 0, or the user has used up its quota",
        errno.EINVAL: "the kernel lacks user or network namespaces",
    }
    hint = hints.get(code)
    problem = _child_problem(code) + (f": {hint}" if hint else "")
    return f"unprivileged user namespaces are not available ({problem})"


def _try_user_namespace(unprivileged: tuple[int, int] | None) -> int:  # pragma: no cover - child
    """In a probe child: become unprivileged (when root), then try a user and network namespace."""
    if unprivileged is not None:
        uid, gid = unprivileged
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        except OSError as error:
            return error.errno or _CHILD_FAILED
    return _unshare(_CLONE_NEWUSER | _CLONE_NEWNET)


def _unshare(flags: int) -> int:
    """``unshare(flags)``: 0, or the errno (``os.unshare`` is Python 3.12+)."""
    if _libc().unshare(ctypes.c_int(flags)) != 0:
        return ctypes.get_errno() or _CHILD_FAILED
    return 0


def _unshare_or_raise(flags: int, what: str) -> None:
    code = _unshare(flags)
    if code:
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _landlock_abi() -> tuple[int | None, str | None]:
    """The kernel's Landlock ABI version, or ``None`` and why there is none."""
    try:
        return _syscall(_SYS_LANDLOCK_CREATE_RULESET, 0, 0, _LANDLOCK_CREATE_RULESET_VERSION), None
    except OSError as error:
        if error.errno == errno.ENOSYS:
            why = "the kernel has no Landlock (it needs Linux 5.13+ built with it)"
        elif error.errno == errno.EOPNOTSUPP:
            why = "Landlock is disabled at boot (add landlock to the kernel's lsm= parameter)"
        else:
            why = f"asking for Landlock's version failed: {error.strerror}"
        return None, why


def _try_seccomp(library: ctypes.CDLL) -> int:  # pragma: no cover - a probe child
    """In a probe child: load the worker's filter, then check that it stops ``socket(AF_INET)``."""
    try:
        _set_no_new_privs()
        _load_seccomp(library)
    except OSError as error:
        return error.errno or _CHILD_FAILED
    libc = _libc()
    fd = libc.socket(ctypes.c_int(socket.AF_INET), ctypes.c_int(socket.SOCK_STREAM), 0)
    if fd >= 0 or ctypes.get_errno() != errno.EPERM:
        return _FILTER_INEFFECTIVE
    return 0


# -- system calls through ctypes -----------------------------------------------------------------


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _syscall(number: int, *args: int) -> int:
    """``syscall(number, *args)`` with integer (or address) arguments; raises OSError."""
    result = int(_libc().syscall(ctypes.c_long(number), *(ctypes.c_long(arg) for arg in args)))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _set_no_new_privs() -> None:
    no_new_privs = _libc().prctl(
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


def _drop_capabilities() -> None:
    """Clear every capability of the process (its effective, permitted and inheritable sets)."""
    header = _CapHeader(version=_LINUX_CAPABILITY_VERSION_3, pid=0)
    data = (_CapData * 2)()
    _check(_libc().capset(ctypes.byref(header), data), "capset")


# -- Landlock ------------------------------------------------------------------------------------


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


def _apply_landlock(
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
    ruleset_fd = _syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.addressof(ruleset), size, 0)
    try:
        for path in readable:
            _landlock_allow(ruleset_fd, path, _FS_READ & handled, optional=True)
        _landlock_allow(ruleset_fd, folder, _FS_READ & handled, optional=False)
        if scratch is not None:
            _landlock_allow(ruleset_fd, scratch, _FS_READ_WRITE & handled, optional=False)
        _landlock_allow(ruleset_fd, Path(os.devnull), _FS_DEVNULL & handled, optional=True)
        _syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset_fd, 0)
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
            _syscall(
                _SYS_LANDLOCK_ADD_RULE, ruleset_fd, _LANDLOCK_RULE_PATH_BENEATH,
                ctypes.addressof(rule), 0,
            )  # fmt: skip
        except OSError as error:
            raise OSError(error.errno, f"landlock_add_rule({path}): {error.strerror}") from error
    finally:
        os.close(fd)


# -- seccomp -------------------------------------------------------------------------------------


class _ArgCmp(ctypes.Structure):
    """``struct scmp_arg_cmp``."""

    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


class _Rule(NamedTuple):
    """One seccomp rule: the system call, the action, and (arg, op, datum_a, datum_b) tests."""

    syscall: str
    action: int
    conditions: tuple[tuple[int, int, int, int], ...] = ()


@functools.cache
def _libseccomp() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("seccomp")
    if name is None:
        return None
    try:
        library = ctypes.CDLL(name, use_errno=True)
        library.seccomp_init.argtypes = (ctypes.c_uint32,)
        library.seccomp_init.restype = ctypes.c_void_p
        library.seccomp_release.argtypes = (ctypes.c_void_p,)
        library.seccomp_release.restype = None
        library.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
        library.seccomp_syscall_resolve_name.restype = ctypes.c_int
        library.seccomp_rule_add_array.argtypes = (
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.POINTER(_ArgCmp),
        )
        library.seccomp_rule_add_array.restype = ctypes.c_int
        library.seccomp_attr_set.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32)
        library.seccomp_attr_set.restype = ctypes.c_int
        library.seccomp_load.argtypes = (ctypes.c_void_p,)
        library.seccomp_load.restype = ctypes.c_int
    except (OSError, AttributeError):  # not loadable, or too old (seccomp_rule_add_array: 2.1+)
        return None
    return library


def _seccomp_rules(pid: int) -> tuple[_Rule, ...]:
    """The worker's filter; ``pid`` is the worker's own, the only process it may signal."""
    eperm = _scmp_errno(errno.EPERM)
    # clone(flags, ...): s390 passes the stack first and the flags second.
    flags_arg = 1 if platform.machine().startswith("s390") else 0
    not_own = ((0, _SCMP_CMP_NE, pid, 0),)
    refused = (
        # Programs and processes.
        "execve", "execveat", "fork", "vfork",
        # Other processes' memory, file descriptors and signals.
        "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd",
        "pidfd_send_signal", "tkill",
        # Namespaces and mounts.
        "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree",
        "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
        # Kernel attack surface a plugin never needs.
        "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
        "io_uring_register", "keyctl", "add_key", "request_key", "kexec_load",
        "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
        "swapoff", "acct", "quotactl", "quotactl_fd", "iopl", "ioperm", "syslog",
        "name_to_handle_at", "open_by_handle_at", "lookup_dcookie", "settimeofday",
        "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname", "vhangup",
        "uselib", "personality",
    )  # fmt: skip
    return (
        *(_Rule(name, eperm) for name in refused),
        # Threads (CLONE_THREAD) may be started; processes may not.
        _Rule("clone", eperm, ((flags_arg, _SCMP_CMP_MASKED_EQ, _CLONE_THREAD, 0),)),
        # clone3 passes its flags in memory, out of the filter's sight: ENOSYS makes the C
        # library fall back to clone, where they are visible.
        _Rule("clone3", _scmp_errno(errno.ENOSYS)),
        # Signals only to the worker itself (the pid is the thread-group id for the last three).
        _Rule("kill", eperm, not_own),
        _Rule("tgkill", eperm, not_own),
        _Rule("rt_sigqueueinfo", eperm, not_own),
        _Rule("rt_tgsigqueueinfo", eperm, not_own),
        # No new sockets at all: the worker talks over the socket it inherited. (AF_UNIX
        # too: a pathname socket (a database's, D-Bus) is reachable through no other layer.)
        _Rule("socket", eperm),
        # The kernel reads ioctl's request as 32 bits: compare only those.
        _Rule("ioctl", eperm, ((1, _SCMP_CMP_MASKED_EQ, _IOCTL_REQUEST_MASK, _TIOCSTI),)),
        _Rule("ioctl", eperm, ((1, _SCMP_CMP_MASKED_EQ, _IOCTL_REQUEST_MASK, _TIOCLINUX),)),
    )


def _load_seccomp(library: ctypes.CDLL) -> None:
    """Build and load the worker's seccomp filter; raises OSError."""
    context = library.seccomp_init(_SCMP_ACT_ALLOW)
    if not context:
        raise OSError(errno.ENOMEM, "seccomp_init failed")
    try:
        # A foreign architecture's system call (a 32-bit one on x86-64) ends the whole process;
        # libseccomp's default ends only the thread. Kernels before 4.14 keep that default.
        library.seccomp_attr_set(context, _SCMP_FLTATR_ACT_BADARCH, _SCMP_ACT_KILL_PROCESS)
        for rule in _seccomp_rules(os.getpid()):
            number = library.seccomp_syscall_resolve_name(rule.syscall.encode())
            if number < 0:
                continue  # not a system call of this architecture (fork on arm64, say)
            tests = (_ArgCmp * len(rule.conditions))(
                *(_ArgCmp(arg, op, a, b) for arg, op, a, b in rule.conditions)
            )
            result = library.seccomp_rule_add_array(
                context, rule.action, number, len(rule.conditions), tests
            )
            if result < 0:
                raise OSError(-result, f"seccomp rule for {rule.syscall}: {os.strerror(-result)}")
        result = library.seccomp_load(context)
        if result < 0:
            raise OSError(-result, f"seccomp_load: {os.strerror(-result)}")
    finally:
        library.seccomp_release(context)


# -- confine -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _applying(layer: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise ConfinementError(layer, error.errno, error.strerror or str(error)) from error
    except ValueError as error:  # resource.setrlimit reports a refused limit so
        raise ConfinementError(layer, None, str(error)) from error


def _threads() -> int | None:
    try:
        return sum(1 for _ in Path("/proc/self/task").iterdir())
    except OSError:  # no /proc: nothing to count with
        return None


def _apply_rlimits(limits: Limits, *, tasks: int | None) -> None:
    import resource  # noqa: PLC0415 - POSIX only; probe() said it is there

    wanted = (
        (resource.RLIMIT_AS, limits.memory, 0),
        # A second between SIGXCPU and SIGKILL: the worker may report why it stops.
        (resource.RLIMIT_CPU, limits.cpu, _CPU_GRACE),
        (resource.RLIMIT_FSIZE, limits.file_size, 0),
        (resource.RLIMIT_NOFILE, limits.open_files, 0),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NPROC, tasks, 0),
    )
    for which, value, grace in wanted:
        if value is None:
            continue
        _, hard = resource.getrlimit(which)
        # Never above the inherited hard limit: only root may raise it, and no one should.
        soft = value if hard == resource.RLIM_INFINITY else min(value, hard)
        hard = value + grace if hard == resource.RLIM_INFINITY else min(value + grace, hard)
        resource.setrlimit(which, (soft, hard))


def unreadable_by(ids: tuple[int, int], paths: Sequence[Path]) -> Path | None:
    """The first existing path of ``paths`` that user ``ids`` (uid, gid) cannot read, or None.

    Judged by permission bits along the whole path (search on every folder
    above, read on the path itself), as the kernel would for a user without
    capabilities. Paths that do not exist are skipped.
    """
    uid, gid = ids
    for path in paths:
        try:
            target = Path(os.path.realpath(path))
            if not target.exists():
                continue
            for part in (*reversed(target.parents), target):
                info = part.stat()
                if info.st_uid == uid:
                    bits = info.st_mode >> 6
                elif info.st_gid == gid:
                    bits = info.st_mode >> 3
                else:
                    bits = info.st_mode
                needed = 0o1 if part != target else (0o5 if target.is_dir() else 0o4)
                if bits & needed != needed:
                    return part
        except OSError:
            return Path(path)
    return None


def _unprivileged(ids: tuple[int, int], needed: Sequence[Path], scratch: Path | None) -> list[str]:
    """Become user ``ids``, showing it what it needs first; else stay uid 0 without capabilities."""
    applied = []
    if scratch is not None and unreadable_by(ids, needed) is not None:
        with _applying(PRIVATE_MOUNTS):
            if _expose(ids, needed, scratch):
                applied.append(PRIVATE_MOUNTS)
    if unreadable_by(ids, needed) is None:
        with _applying(UNPRIVILEGED_USER):
            _drop_user(ids, scratch)
        applied.append(UNPRIVILEGED_USER)
    else:
        # That user could not read Python or the plugin (a file of mode 0600, say): stay
        # uid 0 without a single capability, fenced in by Landlock and seccomp.
        with _applying(UNPRIVILEGED_USER):
            _drop_capabilities()
        applied.append(NO_CAPABILITIES)
    return applied


def _expose(ids: tuple[int, int], paths: Sequence[Path], stage: Path) -> bool:
    """Let user ``ids`` reach ``paths`` whose folders above shut it out; True if it did anything.

    In a mount namespace of the worker's own (nothing changes for any other
    process), each shutting folder (``/root``, mode 0700) is covered with an
    empty, world-searchable ``tmpfs``, and only the paths the worker needs are
    mounted back at their own places inside it (bind mounts, staged through
    ``stage`` since the ``tmpfs`` hides them). Everything else in that folder
    stays hidden from the worker, whatever its permissions. A path that is
    itself unreadable (a file of mode 0600) is left as it is.
    """
    blocked: dict[Path, list[Path]] = {}
    for path in paths:
        target = Path(os.path.realpath(path))
        shut = unreadable_by(ids, [target])
        if shut is None or shut == target or not target.exists():
            continue
        blocked.setdefault(shut, []).append(target)
    if not blocked:
        return False
    _unshare_or_raise(_CLONE_NEWNS, "unshare(CLONE_NEWNS)")
    _mount(None, Path("/"), None, _MS_REC | _MS_PRIVATE)
    staged = 0
    # Shallow folders first; a shut folder beneath another one's covered tree is covered by it.
    done: list[Path] = []
    for shut in sorted(blocked, key=lambda p: len(p.parts)):
        if any(shut.is_relative_to(top) for top in done):
            continue
        targets = sorted(t for top, ts in blocked.items() if top.is_relative_to(shut) for t in ts)
        tops = [t for t in targets if not any(t != o and t.is_relative_to(o) for o in targets)]
        stages = []
        for target in tops:
            place = stage / f".mount-{staged}"
            staged += 1
            if target.is_dir():
                place.mkdir()
            else:
                place.touch()
            _mount(target, place, None, _MS_BIND | _MS_REC)
            stages.append((target, place))
        _mount(Path("tmpfs"), shut, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=1m")
        for target, place in stages:
            if place.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
            _mount(place, target, None, _MS_MOVE)
            place.rmdir() if place.is_dir() else place.unlink()
        done.append(shut)
    return True


def _mount(
    source: Path | None, target: Path, kind: str | None, flags: int, data: str | None = None
) -> None:
    result = _libc().mount(
        None if source is None else os.fsencode(source),
        os.fsencode(target),
        None if kind is None else kind.encode(),
        ctypes.c_ulong(flags),
        None if data is None else data.encode(),
    )
    _check(result, f"mount {source} on {target}")


def _drop_user(ids: tuple[int, int], scratch: Path | None) -> None:
    uid, gid = ids
    if scratch is not None:
        os.chown(scratch, uid, gid)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) != (uid, uid, gid, gid):
        raise OSError(errno.EPERM, f"still running as {os.geteuid()}:{os.getegid()}")


def confine(
    *,
    folder: Path,
    scratch: Path | None,
    readable: Sequence[Path],
    limits: Limits,
    capabilities: Capabilities,
) -> tuple[str, ...]:
    """Confine this process; return the names of the layers applied, in order.

    Applies every layer that ``capabilities.layers()`` reports available,
    in the order of :data:`LAYER_NAMES` (the module's documentation says
    what each stops and what it does not). Call it in a single-threaded
    process, before any untrusted code runs; nothing can undo it.

    ``folder`` is the plugin's code (readable), ``scratch`` a fresh folder
    it may write (``None``: none), and ``readable`` the other paths it may
    read (Python's installation, its site-packages, CA certificates...);
    those that do not exist, or that the worker's user cannot reach, are
    skipped. As root, ``scratch`` is handed to the unprivileged user: make
    it a fresh, empty folder (only the folder itself changes owner).

    Raises :class:`ConfinementError` naming the layer, when a layer the
    capabilities offer fails (or when the process has other threads): the
    process is then partly confined, and should exit.

    Example (in a forked worker)::

        applied = confine(
            folder=plugin_folder,
            scratch=scratch_folder,
            readable=[Path(sys.prefix), Path(sys.base_prefix)],
            limits=Limits(),
            capabilities=probe(),
        )
    """
    available = {layer.name for layer in capabilities.layers() if layer.available}
    if available - {RLIMITS, UNPRIVILEGED_USER}:
        threads = _threads()
        if threads is not None and threads > 1:
            raise ConfinementError(
                min(available - {RLIMITS, UNPRIVILEGED_USER}, key=LAYER_NAMES.index),
                None,
                f"the process has {threads} threads; confine() binds only the calling one",
            )
    library = None
    if SECCOMP in available:
        # Loaded now, before the memory limit, and before Landlock hides the library's file.
        library = _libseccomp()
        if library is None:
            raise ConfinementError(SECCOMP, errno.ENOENT, "libseccomp cannot be loaded")
    applied: list[str] = []
    own_user_namespace = False
    if NETWORK_NAMESPACE in available:
        with _applying(NETWORK_NAMESPACE):
            if capabilities.root:
                _unshare_or_raise(_CLONE_NEWNET, "unshare(CLONE_NEWNET)")
            else:
                _unshare_or_raise(
                    _CLONE_NEWUSER | _CLONE_NEWNET, "unshare(CLONE_NEWUSER|CLONE_NEWNET)"
                )
                # Full capabilities in the new namespaces are attack surface nothing needs.
                _drop_capabilities()
                own_user_namespace = True
        applied.append(NETWORK_NAMESPACE)
    if RLIMITS in available:
        with _applying(RLIMITS):
            _apply_rlimits(limits, tasks=_TASKS if own_user_namespace else None)
        applied.append(RLIMITS)
    if UNPRIVILEGED_USER in available:
        assert capabilities.unprivileged is not None
        applied += _unprivileged(capabilities.unprivileged, [folder, *readable], scratch)
    if NO_NEW_PRIVS in available:
        with _applying(NO_NEW_PRIVS):
            _set_no_new_privs()
        applied.append(NO_NEW_PRIVS)
    if LANDLOCK in available:
        assert capabilities.landlock_abi is not None
        with _applying(LANDLOCK):
            _apply_landlock(
                capabilities.landlock_abi, folder=folder, scratch=scratch, readable=readable
            )
        applied.append(LANDLOCK)
    if library is not None:
        with _applying(SECCOMP):
            _load_seccomp(library)
        applied.append(SECCOMP)
    return tuple(applied)


# -- the audit hook ------------------------------------------------------------------------------


@final
class _Roots:
    """Folders and files, matched by name: a path is inside when it is one or lies beneath one."""

    def __init__(self, paths: Sequence[Path | str]) -> None:
        names: set[str] = set()
        for path in paths:
            name = _absolute(path)
            assert name is not None
            names |= {name, os.path.realpath(name)}
        self.names: Final = frozenset(names)
        self._prefixes: Final = tuple(
            name if name.endswith(os.sep) else name + os.sep for name in sorted(names)
        )

    def __contains__(self, name: str) -> bool:
        return name in self.names or name.startswith(self._prefixes)


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

    def __init__(self, *, folder: Path, scratch: Path | None, readable: Sequence[Path]) -> None:
        writable = [] if scratch is None else [scratch]
        self._read: Final = _Roots([folder, *readable, *writable, os.devnull])
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
        if name is not None and name not in self._read:
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
    **dict.fromkeys(("ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle"), _AuditGuard.native),
}


def install_audit_hook(*, folder: Path, scratch: Path | None, readable: Sequence[Path]) -> None:
    """Turn a plugin's forbidden operations into readable ``PermissionError``s, for good.

    Adds a ``sys.addaudithook`` hook (it cannot be removed) that refuses:
    reading (opening, listing) outside ``folder``, ``scratch`` and
    ``readable``; writing (opening for writing, creating, removing,
    renaming, changing) outside ``scratch``; ``/dev/null`` is always
    allowed. Also: new sockets (of any family), ``connect``,
    ``bind``, ``sendto`` and host-name look-ups; ``subprocess``,
    ``os.system``, ``os.exec*``, ``os.posix_spawn*``, ``os.spawn*``,
    ``os.fork``, ``os.forkpty``; ``os.kill`` and ``os.killpg``; and
    ``ctypes`` loading a library or looking up a symbol. Each message starts
    with ``plugin sandbox:`` and names the operation. Plugins may add audit
    hooks of their own.

    This is not a security boundary (see the module's documentation): it
    compares path names, not files, and code that raises no audit event goes
    around it. It is there so that plugin authors read what the kernel
    layers of :func:`confine` refused. Install it after :func:`confine`,
    when the worker's own imports are done; opening an allowed path costs a
    dictionary look-up and a prefix comparison.

    Example (in a worker)::

        install_audit_hook(folder=plugin_folder, scratch=scratch_folder, readable=[])
        open("/etc/passwd")  # PermissionError: plugin sandbox: reading '/etc/passwd' ...
    """
    sys.addaudithook(_AuditGuard(folder=folder, scratch=scratch, readable=readable))
