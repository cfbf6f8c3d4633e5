"""Operating-system confinement of a plugin worker process.

A worker is forked from a clean zygote, calls :func:`confine` right after
``os.setsid()`` and before it imports any plugin code, and then runs that
code. :func:`probe` finds out which layers this machine offers;
:func:`confine` applies every available one, in this order, and names the
ones it applied. Each layer is worth having alone; together they are the
sandbox. Every layer is one-way: nothing in the worker can undo it.

1. ``memory_cgroup``: the worker creates a memory control group of its own,
   ``services-ai-plugins/worker-<pid>`` beneath its zygote's group, bounds it
   at :attr:`Limits.memory` with no swap (cgroup v2: ``memory.max``,
   ``memory.swap.max`` 0, ``memory.oom.group``; cgroup v1:
   ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes``), and moves
   into it. The zygote removes the group when it reaps the worker, however it
   ended (:func:`release_worker`); a group left behind by a zygote that was
   killed is removed by the next :func:`probe` there.

   *Stops*: memory that the address-space limit does not count: shared
   memory and ``memfd`` files filled with ``write``, the scratch ``tmpfs``,
   page cache, kernel memory, pipes. Past the limit the kernel's
   out-of-memory killer ends the worker (``SIGKILL``). *Does not stop*:
   anything but memory. Needs a memory controller the host may use: a
   cgroup v1 memory hierarchy it may write to, or a cgroup v2 group whose
   children get the memory controller (its ``cgroup.subtree_control``; the
   root group, or a delegated one holding no processes of its own).

2. ``network_namespace``: the worker moves into a new, empty network
   namespace (``unshare(CLONE_NEWNET)`` as root; as any other user inside a
   new user namespace that maps only its own user and group, whose
   capabilities it drops as soon as its namespaces and its scratch mount are
   in place).

   *Stops*: every connection to the network, the host's loopback services
   included (the namespace has only a loopback interface, and it is down),
   and abstract Unix sockets of the host (they are per namespace).
   *Does not stop*: use of file descriptors the worker already holds (its
   socket to the host keeps working), and pathname Unix sockets in the file
   system (a database's socket, the D-Bus system bus, a local DNS
   resolver's socket under ``/run``): the seccomp layer covers those, by
   refusing every new socket. Without a user namespace (a non-root host where they
   are disabled) this layer is missing.

3. ``ipc_namespace``: the worker moves into a new System V IPC namespace
   (``unshare(CLONE_NEWIPC)``; in the user namespace of the previous layer
   when not root).

   *Stops*: System V shared memory, message queues and semaphores, and
   POSIX message queues, shared with any other process: a fixed key is no
   channel between two workers, and what a worker creates there goes with
   it (the namespace ends with its last process). *Does not stop*: the
   memory such objects take while the worker lives (``memory_cgroup``
   does); the seccomp layer refuses those calls anyway.

4. ``rlimits``: resource limits (``setrlimit``; soft and hard, so the worker
   cannot raise them again): address space (``RLIMIT_AS``, :attr:`Limits.memory`),
   CPU seconds over the worker's life (``RLIMIT_CPU``: ``SIGXCPU`` at the
   limit, ``SIGKILL`` a second later), the size of any file it writes
   (``RLIMIT_FSIZE``), open file descriptors (``RLIMIT_NOFILE``) and no core
   dumps (``RLIMIT_CORE`` 0). In a user namespace of its own (the non-root
   ``network_namespace`` layer), or as a user of its own (the root
   ``unprivileged_user`` layer, set once it is that user), the worker also
   gets ``RLIMIT_NPROC`` 64: at most 64 threads and processes, its own alone.

   *Stops*: a plugin exhausting memory (a big allocation raises
   ``MemoryError``), spinning forever on the CPU, filling the disk through
   one file, or leaking descriptors. *Does not stop*: wall-clock time (a
   sleeping or blocked worker uses no CPU: the host enforces call timeouts),
   disk use spread over many files, or a fork bomb. ``RLIMIT_NPROC`` counts
   every process of the user, machine-wide, so outside a user namespace of
   its own it is left alone: 0 would stop the worker's own threads too, and
   any other number would be shared with every process of that user.

5. ``scratch_tmpfs``: in a mount namespace of the worker's own, ``scratch``
   is covered with a new ``tmpfs`` of at most :attr:`Limits.scratch` bytes
   (and one file per 4 KiB of it), mode 0700, owned by the worker's user,
   mounted ``nosuid``, ``nodev`` and ``noexec``.

   *Stops*: filling the host's disk through many files (``RLIMIT_FSIZE``
   bounds one file): past the size every write fails with ``ENOSPC``;
   leaving files behind (the ``tmpfs`` goes with the worker). *Does not
   stop*: use of memory up to that size (it is memory: ``memory_cgroup``
   counts it). No other process sees the files, the host included.

6. ``unprivileged_user`` (root only): the worker takes a user id of its own,
   unique among the live workers of the machine: the first id of
   :attr:`Capabilities.worker_uids` plus its process id (root's subordinate
   range in ``/etc/subuid`` when it has one at least ``kernel.pid_max``
   long, else the ids from 0x70000000 (1879048192) on, 2**22 of them, a
   block that no distribution gives to users); its group id is the same
   number. ``scratch`` is handed to that user, then the worker drops every
   group, its group and its user to it (``setgroups([])``, ``setgid``,
   ``setuid``), and with them every capability. (Where such a range would
   collide with another user's subordinate range, every worker becomes
   ``nobody``: :attr:`Capabilities.unprivileged`.)

   *Stops*: everything only root may do: reading or writing files by their
   permissions (other users' files, ``/etc/shadow``), signalling or tracing
   other users' processes, binding low ports, loading modules, mounting; and,
   since no two workers share a user, every call the kernel allows between
   processes of one user: changing another worker's resource limits
   (``prlimit``), priority, CPU affinity or scheduling, reading its memory,
   signalling it. *Does not stop*: reading what everyone may read (Landlock
   does). The plugin's folder, the readable paths and the Python
   installation must be readable by that user (by their "other" permission
   bits).

   When a folder *above* them shuts that user out (Python under ``/root``,
   mode 0700; a private temporary folder), the worker, in its mount
   namespace (``private_mounts``, wherever ``scratch_tmpfs`` is available),
   covers each such folder with an empty ``tmpfs`` and mounts back, at their
   own places, only the paths it needs: it then reaches those, and nothing
   else of that folder exists for it; no other process's view changes. The
   same covers the ``hidden`` folders :func:`confine` is given (the
   ``site-packages`` inside the standard library's folder), the readable
   paths beneath them mounted back. When a needed path itself is
   unreadable to that user (a file of mode 0600), the worker keeps uid 0
   but clears every capability instead (``no_capabilities``): it then cannot
   override permissions, raise its limits, signal or trace others, or
   mount, but root's own files stay open to it by their permissions, where
   Landlock is the fence; such workers share uid 0, and seccomp alone keeps
   them off each other. A host that is not root cannot give its workers users
   of their own either (a user namespace maps only its own user): there too
   the seccomp layer refuses the calls that reach another process. The
   scratch folder is no path mounted back: the host makes it where the
   workers' users can enter (:func:`scratch_parent`: its temporary folder,
   else ``/tmp``, ``/var/tmp`` or ``/dev/shm``, said once in its log). After
   the private mounts, the worker has the import system list ``sys.path``'s
   folders again, as they now show, before Landlock forbids listing them.

7. ``no_new_privs``: ``prctl(PR_SET_NO_NEW_PRIVS, 1)``.

   *Stops*: gaining privileges by running a set-user-id or set-group-id
   program or one with file capabilities, and it is what lets a process
   that is not root apply Landlock and seccomp. *Does not stop* anything
   else by itself.

8. ``landlock``: a Landlock ruleset that handles every file-system right the
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
   or link between two folders fails, even inside ``scratch``. A ``hidden``
   folder that no mount namespace covered is left out by allowing, instead of
   the readable folder holding it, each thing that folder holds beside it.

9. ``seccomp``: a system-call filter (libseccomp through ``ctypes``), allowing
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
   ``syslog``, ``open_by_handle_at``; System V IPC (``shmget``, ``shmat``,
   ``shmctl``, ``shmdt``, ``msgget``, ``msgsnd``, ``msgrcv``, ``msgctl``,
   ``semget``, ``semop``, ``semtimedop``, ``semctl``) and POSIX message
   queues (``mq_*``); ``kcmp``, ``pidfd_open``, ``process_mrelease``; the
   calls that act on another process named by its id, unless that id is 0
   (the calling process): ``prlimit64``, ``sched_setaffinity``,
   ``sched_setscheduler``, ``sched_setparam``, ``sched_setattr``,
   ``migrate_pages``, ``move_pages``, ``get_robust_list``, and
   ``setpriority``/``getpriority``/``ioprio_set``/``ioprio_get`` unless they
   name the calling process (so a worker changes these for itself through
   id 0 only: its own pid or a thread's id is refused too); and the terminal
   ioctls ``TIOCSTI`` and ``TIOCLINUX`` (typing into a terminal). Each fails
   with ``EPERM`` unless noted; foreign-architecture system calls (32-bit
   ones on x86-64) kill the worker.

   *Stops*: running any program, starting processes (Python threads keep
   working), creating any socket (TCP, UDP, raw, packet, netlink, Unix), and so
   DNS look-ups and connections to pathname sockets (a database's, D-Bus);
   signalling other processes; reading or writing another
   process's memory; changing another process's limits, priority, affinity
   or scheduling (what uid 0 without capabilities, or a host that is not
   root, could otherwise do to the other workers); System V IPC; most of the
   kernel's attack surface that plugins never need. *Does not stop*: pairs
   of connected sockets (``socketpair``), which reach nothing outside the
   worker; what the allowed calls do (memory, CPU, files: the other layers),
   or bugs in the kernel behind them.

:func:`install_audit_hook` adds one more, different kind of guard: a
``sys.addaudithook`` hook that turns a plugin's forbidden file, network,
process, signal and ``ctypes`` operations into ``PermissionError``s whose
messages say what the sandbox refused. It is *not a boundary*: audit hooks
see only what Python reports, and native code, ``ctypes`` objects created
before it was installed, symbolic and hard links (it compares path names,
not files) or a function that raises no audit event all go around it. The
kernel layers above are the boundary; the hook makes their refusals
readable.

Only Linux offers layers 1, 2, 3, 5, 7, 8 and 9. The caller must be single-threaded
(Landlock and seccomp bind the calling thread; a user namespace needs it).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import importlib
import importlib.machinery
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

from ...errors import ConfinementError

__all__ = [
    "DEFAULT_WORKER_UIDS",
    "LAYER_NAMES",
    "NO_CAPABILITIES",
    "Capabilities",
    "ConfinementError",
    "Layer",
    "Limits",
    "confine",
    "install_audit_hook",
    "probe",
    "release_worker",
    "scratch_parent",
    "unreadable_by",
    "unsearchable_by",
]

MEMORY_CGROUP: Final = "memory_cgroup"
NETWORK_NAMESPACE: Final = "network_namespace"
IPC_NAMESPACE: Final = "ipc_namespace"
RLIMITS: Final = "rlimits"
SCRATCH_TMPFS: Final = "scratch_tmpfs"
UNPRIVILEGED_USER: Final = "unprivileged_user"
NO_NEW_PRIVS: Final = "no_new_privs"
LANDLOCK: Final = "landlock"
SECCOMP: Final = "seccomp"
#: Applied instead of ``unprivileged_user`` when that user could not read what the worker needs.
NO_CAPABILITIES: Final = "no_capabilities"
#: Applied before ``unprivileged_user`` when a folder above what the worker needs shuts that
#: user out (Python under ``/root``, a private temporary folder), or when folders beneath the
#: readable ones are hidden (``site-packages`` in the standard library's folder): see
#: :func:`_private_mounts`.
PRIVATE_MOUNTS: Final = "private_mounts"

#: The layers, in the order :func:`confine` applies them.
LAYER_NAMES: Final = (
    MEMORY_CGROUP,
    NETWORK_NAMESPACE,
    IPC_NAMESPACE,
    RLIMITS,
    SCRATCH_TMPFS,
    UNPRIVILEGED_USER,
    NO_NEW_PRIVS,
    LANDLOCK,
    SECCOMP,
)

#: The key of :attr:`Capabilities.reasons` for unprivileged user namespaces (not a layer).
USER_NAMESPACES: Final = "user_namespaces"
#: The key of :attr:`Capabilities.reasons` saying why workers share one user (root only).
WORKER_UIDS: Final = "worker_uids"

_MiB: Final = 2**20

#: ``(first uid, how many)`` of workers' user ids when root's subordinate range in
#: ``/etc/subuid`` cannot hold one per process id: from 0x70000000 (1879048192), a block no
#: distribution hands out (systemd leaves 0x70000000-0x7FFDFFFF unused), 2**22 ids (the
#: kernel's largest ``pid_max``). A worker's uid and gid are the first plus its pid.
DEFAULT_WORKER_UIDS: Final = (0x7000_0000, 2**22)
#: The folder of workers' memory control groups, made beneath the zygote's own group.
CGROUP_FOLDER: Final = "services-ai-plugins"
#: The prefix of one worker's memory control group's name (then its pid).
_CGROUP_WORKER: Final = "worker-"

# <linux/sched.h>
_CLONE_NEWUSER: Final = 0x10000000
_CLONE_NEWNET: Final = 0x40000000
_CLONE_NEWIPC: Final = 0x08000000
_CLONE_THREAD: Final = 0x00010000
_CLONE_NEWNS: Final = 0x00020000
# <sys/mount.h>
_MS_NOSUID: Final = 2
_MS_NODEV: Final = 4
_MS_NOEXEC: Final = 8
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
#: Bytes of the scratch tmpfs per file (inode) it may hold.
_BYTES_PER_INODE: Final = 4096
#: How the scratch tmpfs is mounted.
_SCRATCH_FLAGS: Final = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC

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
# <linux/resource.h>, <linux/ioprio.h>: whose priority setpriority()/ioprio_set() change.
_PRIO_PROCESS: Final = 0
_IOPRIO_WHO_PROCESS: Final = 1

#: A probe child's exit code: the filter loaded, but socket(AF_INET) still worked.
_FILTER_INEFFECTIVE: Final = 254
#: A probe child's exit code: an unexpected exception.
_CHILD_FAILED: Final = 255
#: A probe's result when no child could be forked (in a confined process, say).
_NO_CHILD: Final = 253


def _scmp_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


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

    ``memory`` bounds both the address space (``RLIMIT_AS``) and, where the
    ``memory_cgroup`` layer is available, the memory the kernel charges to
    the worker (shared memory, the scratch ``tmpfs``, page cache included).

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
    #: The size of the scratch folder, in bytes: a ``tmpfs`` of the worker's own (the
    #: ``scratch_tmpfs`` layer), counted as memory. ``None``: the scratch folder stays a folder
    #: of the host's temporary folder, bounded per file only.
    scratch: int | None = attrs.field(default=64 * _MiB, validator=_positive)


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


def _optional_pair(value: Sequence[int] | None) -> tuple[int, int] | None:
    """A pair of integers, from a tuple or from a list (as JSON gives it back); or None."""
    if value is None:
        return None
    first, second = value
    return int(first), int(second)


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
    #: ``(uid, gid)`` of ``nobody`` (65534 when there is none) when root, else ``None``: the
    #: user of every worker when :attr:`worker_uids` is ``None``.
    unprivileged: tuple[int, int] | None = attrs.field(converter=_optional_pair)
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
    #: Whether a new System V IPC namespace can be entered (as root, else in a user namespace).
    ipc_namespace: bool = False
    #: Whether a mount namespace of its own, with a ``tmpfs``, can be made (the scratch ``tmpfs``).
    mount_namespace: bool = False
    #: The folder (``.../services-ai-plugins``) in which each worker makes its memory control
    #: group, or ``None`` when there is no memory controller this process may use.
    memory_cgroup: str | None = None
    #: The version of the cgroup hierarchy of :attr:`memory_cgroup` (1 or 2), or ``None``.
    cgroup_version: int | None = None
    #: ``(first uid, how many)``: as root, each worker's uid and gid are the first plus its pid
    #: (:meth:`worker_ids`); ``None``: every worker is :attr:`unprivileged`.
    worker_uids: tuple[int, int] | None = attrs.field(default=None, converter=_optional_pair)
    #: Why each missing layer (by name) or :data:`USER_NAMESPACES` is missing, as probed.
    reasons: Mapping[str, str] = attrs.field(factory=dict, hash=False)

    def worker_ids(self, pid: int) -> tuple[int, int] | None:
        """The ``(uid, gid)`` a worker of process id ``pid`` becomes; ``None`` when not root."""
        if not self.root:
            return None
        if self.worker_uids is not None:
            first, count = self.worker_uids
            uid = first + pid % count  # pid < count: probe() checked kernel.pid_max
            return uid, uid
        return self.unprivileged

    @property
    def uid_scheme(self) -> str:
        """Which user each worker runs as, in words."""
        if not self.root:
            return (
                "workers keep the host's user (a user namespace maps only that one): seccomp "
                "refuses the calls that reach another worker"
            )
        if self.worker_uids is not None:
            first, count = self.worker_uids
            source = (
                "a range no distribution hands out"
                if self.worker_uids == DEFAULT_WORKER_UIDS
                else "root's subordinate range in /etc/subuid"
            )
            return (
                f"each worker its own uid and gid: {first} + its pid "
                f"({first}-{first + count - 1}, {source})"
            )
        if self.unprivileged is not None:
            why = self.reasons.get(WORKER_UIDS)
            return f"every worker uid {self.unprivileged[0]}" + (f": {why}" if why else "")
        return "workers keep the host's user"

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
        cgroup_stops = (
            "memory the address-space limit does not count: shared memory, memfd files, the "
            "scratch tmpfs, page cache (a memory control group per worker"
        )
        cgroup_stops += f", cgroup v{self.cgroup_version})" if self.cgroup_version else ")"
        user_stops = "root's powers: other users' files, their processes, privileged calls"
        if self.worker_uids is not None:
            user_stops += (
                "; a uid per worker: no limits, priorities, affinities or signals between workers"
            )
        has_cgroup = self.memory_cgroup is not None
        return (
            Layer(
                name=MEMORY_CGROUP,
                available=has_cgroup,
                stops=cgroup_stops,
                missing=None if has_cgroup else self._why(MEMORY_CGROUP),
            ),
            Layer(
                name=NETWORK_NAMESPACE,
                available=self.network_namespace,
                stops=network_stops,
                missing=None if self.network_namespace else self._why(NETWORK_NAMESPACE),
            ),
            Layer(
                name=IPC_NAMESPACE,
                available=self.ipc_namespace,
                stops="System V shared memory, message queues and semaphores shared with other "
                "processes (a fixed key is no channel between workers; nothing outlives one)",
                missing=None if self.ipc_namespace else self._why(IPC_NAMESPACE),
            ),
            Layer(
                name=RLIMITS,
                available=self.rlimits,
                stops=rlimit_stops,
                missing=None if self.rlimits else self._why(RLIMITS),
            ),
            Layer(
                name=SCRATCH_TMPFS,
                available=self.mount_namespace,
                stops="filling the disk through many files: the scratch folder is a tmpfs of "
                "Limits.scratch bytes that only the worker sees and that goes with it",
                missing=None if self.mount_namespace else self._why(SCRATCH_TMPFS),
            ),
            Layer(
                name=UNPRIVILEGED_USER,
                available=self._drops_user,
                stops=user_stops,
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
                "signals to other processes, ptrace, changing another process's limits, "
                "priority or affinity, System V IPC, namespaces, mounts, bpf, io_uring",
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
        return self.root and (self.worker_uids is not None or self.unprivileged is not None)

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
        reasons.update(
            {name: why for name in LAYER_NAMES if name not in (RLIMITS, UNPRIVILEGED_USER)}
        )
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

    worker_uids = None
    if root:
        worker_uids, problem = _worker_uid_range()
        if problem is not None:
            reasons[WORKER_UIDS] = problem
    namespaces = _probe_namespaces(root, unprivileged, reasons)
    memory_cgroup = cgroup_version = None
    try:
        memory_cgroup, cgroup_version = _find_memory_cgroup()
    except _Unavailable as missing:
        reasons[MEMORY_CGROUP] = str(missing)
    landlock_abi, problem = _landlock_abi()
    if problem is not None:
        reasons[LANDLOCK] = problem
    return Capabilities(
        system=system,
        root=root,
        unprivileged=unprivileged,
        landlock_abi=landlock_abi,
        seccomp=_probe_seccomp(reasons),
        rlimits=rlimits,
        memory_cgroup=memory_cgroup,
        cgroup_version=cgroup_version,
        worker_uids=worker_uids,
        reasons=reasons,
        **namespaces,
    )


def _probe_namespaces(
    root: bool, unprivileged: tuple[int, int] | None, reasons: dict[str, str]
) -> dict[str, bool]:
    """Which namespaces a worker can enter (each tried in a child), by Capabilities' field."""
    code = _in_child(functools.partial(_try_user_namespace, unprivileged))
    found = {"user_namespaces": code == 0}
    if code != 0:
        reasons[USER_NAMESPACES] = _user_namespace_problem(code)
    trials: tuple[tuple[str, str, str, Callable[[], int]], ...]
    if root:
        trials = (
            ("network_namespace", NETWORK_NAMESPACE, "unshare(CLONE_NEWNET) as root",
             functools.partial(_unshare, _CLONE_NEWNET)),
            ("ipc_namespace", IPC_NAMESPACE, "unshare(CLONE_NEWIPC) as root",
             functools.partial(_unshare, _CLONE_NEWIPC)),
            ("mount_namespace", SCRATCH_TMPFS, "a tmpfs in a mount namespace of its own",
             functools.partial(_try_tmpfs, None)),
        )  # fmt: skip
    elif found["user_namespaces"]:
        found["network_namespace"] = True
        ids = (os.getuid(), os.getgid())
        trials = (
            ("ipc_namespace", IPC_NAMESPACE, "unshare(CLONE_NEWUSER|CLONE_NEWIPC)",
             functools.partial(_unshare, _CLONE_NEWUSER | _CLONE_NEWIPC)),
            ("mount_namespace", SCRATCH_TMPFS, "a tmpfs in a user and mount namespace",
             functools.partial(_try_tmpfs, ids)),
        )  # fmt: skip
    else:
        for field, name in (
            ("network_namespace", NETWORK_NAMESPACE),
            ("ipc_namespace", IPC_NAMESPACE),
            ("mount_namespace", SCRATCH_TMPFS),
        ):
            found[field] = False
            reasons[name] = reasons[USER_NAMESPACES]
        return found
    for field, name, what, trial in trials:
        code = _in_child(trial)
        found[field] = code == 0
        if code != 0:
            reasons[name] = f"{what} failed: {_child_problem(code)}"
    return found


def _probe_seccomp(reasons: dict[str, str]) -> bool:
    """Whether libseccomp loads and the worker's filter works (tried in a child)."""
    library = _libseccomp()
    if library is None:
        reasons[SECCOMP] = (
            "libseccomp 2.1+ cannot be loaded (ctypes.util.find_library('seccomp')): "
            "install libseccomp2"
        )
        return False
    code = _in_child(functools.partial(_try_seccomp, library))
    if code == _FILTER_INEFFECTIVE:
        reasons[SECCOMP] = "a seccomp filter loaded but did not stop socket(AF_INET)"
    elif code != 0:
        reasons[SECCOMP] = f"a seccomp filter could not be loaded: {_child_problem(code)}"
    return code == 0


def _pid_max() -> int:
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return DEFAULT_WORKER_UIDS[1]  # the kernel's largest


def _subordinate_ranges(path: Path) -> list[tuple[str, int, int]]:
    """The ``(owner, first id, count)`` entries of ``/etc/subuid`` (none when it is missing)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    ranges = []
    for line in text.splitlines():
        owner, _, rest = line.strip().partition(":")
        first, _, count = rest.partition(":")
        if owner and not owner.startswith("#") and first.isdigit() and count.isdigit():
            ranges.append((owner, int(first), int(count)))
    return ranges


def _worker_uid_range() -> tuple[tuple[int, int] | None, str | None]:
    """As root: the ``(first, count)`` of workers' uids, or None and why every worker is nobody.

    A worker's uid is the first plus its pid, so the range holds ``kernel.pid_max`` ids:
    root's own subordinate range when it is that long, else :data:`DEFAULT_WORKER_UIDS`
    unless another user's subordinate range overlaps it.
    """
    pid_max = _pid_max()
    ranges = _subordinate_ranges(Path("/etc/subuid"))
    for owner, first, count in ranges:
        if owner in ("root", "0") and count >= pid_max:
            return _mapped(first, count, pid_max)
    first, count = DEFAULT_WORKER_UIDS
    if pid_max > count:
        return None, f"kernel.pid_max ({pid_max}) is larger than the {count} worker uids"
    for owner, start, length in ranges:
        if start < first + count and first < start + length:
            return None, (
                f"the worker uids {first}-{first + count - 1} overlap {owner}'s subordinate range "
                f"in /etc/subuid ({start}-{start + length - 1}); give root a range of its own of "
                f"{pid_max} ids (kernel.pid_max) there"
            )
    return _mapped(first, count, pid_max)


def _mapped(first: int, count: int, needed: int) -> tuple[tuple[int, int] | None, str | None]:
    """``(first, count)`` if this user namespace maps the ``needed`` ids from ``first`` on as
    users and as groups (a container's namespace may map only 65536); else None and why."""
    for kind in ("uid", "gid"):
        try:
            lines = Path(f"/proc/self/{kind}_map").read_text().splitlines()
        except OSError:
            continue  # no user namespaces: every id exists
        extents = [tuple(int(field) for field in line.split()[:3]) for line in lines if line]
        if not any(inside <= first and first + needed <= inside + length
                   for inside, _, length in extents):  # fmt: skip
            return None, (
                f"this user namespace does not map the {kind}s {first}-{first + needed - 1} "
                f"(/proc/self/{kind}_map); give root a subordinate range of {needed} ids "
                "(kernel.pid_max) that it maps, in /etc/subuid"
            )
    return (first, count), None


def _map_ids(uid: int, gid: int) -> None:
    """In a new user namespace: map the user and group it was made by (only those) to themselves."""
    with contextlib.suppress(FileNotFoundError):  # kernels before 3.19 have no setgroups file
        _write_file(Path("/proc/self/setgroups"), "deny")
    _write_file(Path("/proc/self/uid_map"), f"{uid} {uid} 1")
    _write_file(Path("/proc/self/gid_map"), f"{gid} {gid} 1")


def _write_file(path: Path, text: str) -> None:
    """Write ``text`` to an existing (kernel) file in one ``write``; raises OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _try_tmpfs(ids: tuple[int, int] | None) -> int:  # pragma: no cover - a probe child
    """In a probe child: a mount namespace of its own (in a user namespace mapping ``ids``, when
    not root) with a small ``tmpfs`` mounted in it."""
    try:
        if ids is None:
            _unshare_or_raise(_CLONE_NEWNS, "unshare(CLONE_NEWNS)")
        else:
            _unshare_or_raise(_CLONE_NEWUSER | _CLONE_NEWNS, "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
            _map_ids(*ids)
        _mount(None, Path("/"), None, _MS_REC | _MS_PRIVATE)
        target = Path("/tmp") if Path("/tmp").is_dir() else Path("/")  # noqa: S108 - only mounted on
        _mount(Path("tmpfs"), target, "tmpfs", _SCRATCH_FLAGS, "size=64k,mode=0700")
    except OSError as error:
        return error.errno or _CHILD_FAILED
    return 0


# -- memory control groups -----------------------------------------------------------------------


def _unescape(field: str) -> str:
    """A path of /proc/self/mountinfo, whose spaces and such are written as octal escapes."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")


def _own_cgroups() -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """This process's group in a cgroup v1 memory hierarchy and in cgroup v2, as
    ``(mount point, path)``: None for each one that is not there. Raises OSError."""
    membership = Path("/proc/self/cgroup").read_text()
    mounts = Path("/proc/self/mountinfo").read_text()
    paths: dict[int, str] = {}
    for line in membership.splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and not controllers:
            paths[2] = path
        elif "memory" in controllers.split(","):
            paths[1] = path
    found: dict[int, tuple[str, str]] = {}
    for line in mounts.splitlines():
        fields = line.split(" ")
        if "-" not in fields:
            continue
        dash = fields.index("-")
        kind = fields[dash + 1] if len(fields) > dash + 1 else ""
        options = fields[dash + 3] if len(fields) > dash + 3 else ""
        version = 2 if kind == "cgroup2" else 1 if kind == "cgroup" else 0
        if kind == "cgroup" and "memory" not in options.split(","):
            version = 0
        if version and version in paths and version not in found:
            root, point = _unescape(fields[3]), _unescape(fields[4])
            path = paths[version]
            # The mount shows the hierarchy from ``root`` on (a bind mount, a cgroup namespace).
            if root != "/" and (path == root or path.startswith(root + "/")):
                path = path[len(root) :]
            found[version] = (point, path)
    return found.get(1), found.get(2)


class _Unavailable(Exception):
    """A layer this machine does not offer; the message says why."""


def _find_memory_cgroup() -> tuple[str, int]:
    """The folder for workers' memory control groups and its cgroup version.

    Beneath this process's own group: in a cgroup v1 memory hierarchy, or in
    cgroup v2 when its children get the memory controller. Makes the folder
    (it stays, empty, for later hosts), tries a group in it, and removes the
    groups of workers that no longer exist. Raises :class:`_Unavailable`.
    """
    try:
        v1, v2 = _own_cgroups()
    except OSError as error:
        why = f"cannot read /proc/self/cgroup or /proc/self/mountinfo: {error.strerror}"
        raise _Unavailable(why) from None
    if v1 is not None:
        version, (point, path) = 1, v1
    elif v2 is not None:
        version, (point, path) = 2, v2
    else:
        raise _Unavailable("no cgroup v1 memory hierarchy or cgroup v2 is mounted here")
    group = Path(point + path.rstrip("/"))
    if version == 2:
        try:
            offered = (group / "cgroup.controllers").read_text().split()
            enabled = (group / "cgroup.subtree_control").read_text().split()
        except OSError as error:
            why = f"cgroup v2: cannot read the controllers of {group}: {error.strerror}"
            raise _Unavailable(why) from None
        if "memory" not in offered:
            raise _Unavailable(f"cgroup v2: the memory controller is not enabled for {group}")
        if "memory" not in enabled:
            raise _Unavailable(
                f"cgroup v2: the memory controller is not enabled for the child groups of "
                f"{group} (its cgroup.subtree_control), and a group holding processes, as the "
                "host's does, cannot enable it: only a host in the root group, or in a group "
                "that delegates memory to its children without holding processes, gets this layer"
            )
    folder = group / CGROUP_FOLDER
    try:
        with contextlib.suppress(FileExistsError):
            folder.mkdir()
        if version == 2 and "memory" not in (folder / "cgroup.subtree_control").read_text().split():
            _write_file(folder / "cgroup.subtree_control", "+memory")
        trial = folder / f"probe-{os.getpid()}"
        with contextlib.suppress(FileExistsError):
            trial.mkdir()
        try:
            _write_file(trial / _MEMORY_LIMIT[version], str(64 * _MiB))
        finally:
            trial.rmdir()
    except OSError as error:
        raise _Unavailable(
            f"cgroup v{version}: cannot make a memory control group in {group}: "
            f"{error.strerror} [{_errno_name(error.errno or 0)}]"
        ) from None
    _sweep_cgroups(folder)
    return str(folder), version


#: The file of a memory control group's limit, by cgroup version.
_MEMORY_LIMIT: Final = {1: "memory.limit_in_bytes", 2: "memory.max"}


def _sweep_cgroups(folder: Path) -> None:
    """Remove the groups of workers (and probes) whose process no longer exists."""
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            _, _, pid = entry.name.rpartition("-")
            if entry.is_dir() and pid.isdigit() and not Path(f"/proc/{pid}").exists():
                with contextlib.suppress(OSError):
                    Path(entry.path).rmdir()


def _join_memory_cgroup(capabilities: Capabilities, limit: int) -> None:
    """Make this process's memory control group, bound it at ``limit`` bytes, and move in."""
    folder, version = capabilities.memory_cgroup, capabilities.cgroup_version
    assert folder is not None
    assert version is not None
    pid = os.getpid()
    group = Path(folder) / f"{_CGROUP_WORKER}{pid}"
    with contextlib.suppress(FileExistsError):  # a group a dead process of this pid left
        group.mkdir()
    _write_file(group / _MEMORY_LIMIT[version], str(limit))
    # No swap: what is over the limit is not pushed to disk, the worker is stopped.
    optional = (
        {"memory.swap.max": "0", "memory.oom.group": "1"}
        if version == 2
        else {"memory.memsw.limit_in_bytes": str(limit)}
    )
    for name, value in optional.items():
        with contextlib.suppress(FileNotFoundError):  # no swap accounting (or an older kernel)
            _write_file(group / name, value)
    if version == 1 and _threads() == 1:
        # The calling thread alone, named "0": the kernel then skips the lock that moving a
        # whole process takes, which costs a scheduler grace period (milliseconds).
        _write_file(group / "tasks", "0")
    else:
        _write_file(group / "cgroup.procs", str(pid))


def release_worker(pid: int, capabilities: Capabilities) -> None:
    """Remove what worker ``pid`` left outside itself, once it is reaped: its memory control group.

    Call it after ``waitpid`` returned for the worker, however it ended; it does
    nothing when there is nothing to remove.
    """
    if capabilities.memory_cgroup is not None:
        with contextlib.suppress(OSError):
            (Path(capabilities.memory_cgroup) / f"{_CGROUP_WORKER}{pid}").rmdir()


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
        # System V IPC (and the i386/s390 multiplexer), POSIX message queues: channels between
        # processes, and memory the address-space limit does not count.
        "shmget", "shmat", "shmctl", "shmdt", "msgget", "msgsnd", "msgrcv", "msgctl", "semget",
        "semop", "semtimedop", "semctl", "ipc", "mq_open", "mq_unlink", "mq_timedsend",
        "mq_timedreceive", "mq_notify", "mq_getsetattr",
        # Other processes, by descriptor or comparison.
        "kcmp", "pidfd_open", "process_mrelease",
    )  # fmt: skip
    # Calls that act on the process their first argument names: only 0, "the caller", passes.
    # (libseccomp tests an argument once per rule, so "0 or the worker's pid" cannot be said.)
    on_itself = (
        "prlimit64", "sched_setaffinity", "sched_setscheduler", "sched_setparam",
        "sched_setattr", "migrate_pages", "move_pages", "get_robust_list",
    )  # fmt: skip
    not_zero = ((0, _SCMP_CMP_NE, 0, 0),)
    # setpriority(which, who, ...) and ioprio_set(which, who, ...): the caller alone, as a
    # process (not its process group, not every process of its user), by who = 0.
    by_who = (
        ("setpriority", _PRIO_PROCESS),
        ("getpriority", _PRIO_PROCESS),
        ("ioprio_set", _IOPRIO_WHO_PROCESS),
        ("ioprio_get", _IOPRIO_WHO_PROCESS),
    )
    return (
        *(_Rule(name, eperm) for name in refused),
        *(_Rule(name, eperm, not_zero) for name in on_itself),
        *(_Rule(name, eperm, ((0, _SCMP_CMP_NE, which, 0),)) for name, which in by_who),
        *(_Rule(name, eperm, ((1, _SCMP_CMP_NE, 0, 0),)) for name, _ in by_who),
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


#: Limits that leave every limit as it is (for :func:`_apply_rlimits` with ``tasks`` alone).
_NO_LIMITS: Final = Limits(memory=None, cpu=None, file_size=None, open_files=None, scratch=None)


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


class _Resolver:
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


@final
class _Permissions(_Resolver):
    """What user ``ids`` (uid, gid) may reach by permission bits, as the kernel would judge a
    user without capabilities: search on every folder above a path, read on the path."""

    def __init__(self, ids: tuple[int, int]) -> None:
        super().__init__()
        self.uid, self.gid = ids
        #: A folder: the first folder, itself or above, the user may not search (None: none).
        self._closed: dict[str, str | None] = {"/": None}

    def _allows(self, info: os.stat_result, needed: int) -> bool:
        if info.st_uid == self.uid:
            bits = info.st_mode >> 6
        elif info.st_gid == self.gid:
            bits = info.st_mode >> 3
        else:
            bits = info.st_mode
        return bits & needed == needed

    def shut(self, folder: str) -> str | None:
        """The first folder from the root down to real ``folder`` that the user may not search."""
        if folder not in self._closed:
            parent = folder.rpartition("/")[0] or "/"
            above = self.shut(parent)
            if above is None:
                info = self.lstat(folder)
                above = folder if info is None or not self._allows(info, 0o1) else None
            self._closed[folder] = above
        return self._closed[folder]

    def blocked(self, path: Path) -> Path | None:
        """``path``, or the folder above it, that shuts the user out; None when it may read it
        (or when it does not exist)."""
        try:
            target = self.real(path)
            info = self.lstat(target)
            if info is None:
                return None
            shut = self.shut(target.rpartition("/")[0] or "/") if target != "/" else None
            if shut is not None:
                return Path(shut)
            if not self._allows(info, 0o5 if stat.S_ISDIR(info.st_mode) else 0o4):
                return Path(target)
        except OSError:
            return path
        return None

    def shut_out(self, paths: Sequence[Path]) -> list[tuple[Path, Path]]:
        """Each of ``paths`` that a folder above it shuts the user out of: (real path, folder)."""
        found = []
        for path in paths:
            blocked = self.blocked(path)
            if blocked is not None and str(blocked) != self.real(path):
                found.append((Path(self.real(path)), blocked))
        return found


def unreadable_by(ids: tuple[int, int], paths: Sequence[Path]) -> Path | None:
    """The first existing path of ``paths`` that user ``ids`` (uid, gid) cannot read, or None.

    Judged by permission bits along the whole path (search on every folder
    above, read on the path itself), as the kernel would for a user without
    capabilities. Paths that do not exist are skipped.
    """
    permissions = _Permissions(ids)
    for path in paths:
        blocked = permissions.blocked(path)
        if blocked is not None:
            return blocked
    return None


def unsearchable_by(ids: tuple[int, int], folder: Path) -> Path | None:
    """The first folder, from the root down to ``folder`` itself, that user ``ids`` (uid, gid)
    may not search (enter), judged by permission bits; None when it reaches ``folder`` (or when
    ``folder`` does not exist)."""
    permissions = _Permissions(ids)
    try:
        real = permissions.real(folder)
        if permissions.lstat(real) is None:
            return None
        shut = permissions.shut(real)
    except OSError:
        return folder
    return None if shut is None else Path(shut)


#: Where workers' scratch folders go when the host's temporary folder is closed to their users,
#: the first one they can reach (each is a folder every user may enter on a usual system).
SCRATCH_FALLBACKS: Final = ("/tmp", "/var/tmp", "/dev/shm")  # noqa: S108 - fresh 0700 folders


def scratch_parent(
    capabilities: Capabilities, temporary: str | os.PathLike[str]
) -> tuple[Path | None, str | None]:
    """The folder to make the workers' scratch folders in, and why not ``temporary`` (if not).

    ``temporary`` (the host's temporary folder) when the workers' users can enter it
    (always when they are the host's own user: a host that is not root); else the first
    of :data:`SCRATCH_FALLBACKS` they can enter, with the reason. ``(None, reason)`` when
    none is: the workers cannot reach a scratch folder, and cannot start.
    """
    users = any(
        layer.available for layer in capabilities.layers() if layer.name == UNPRIVILEGED_USER
    )
    ids = capabilities.worker_ids(0) if users else None
    if ids is None:
        return Path(temporary), None
    shut = unsearchable_by(ids, Path(temporary))
    if shut is None:
        return Path(temporary), None
    reason = (
        f"the host's temporary folder {temporary} is closed to the workers' users "
        f"({shut} may not be entered by other users)"
    )
    for candidate in SCRATCH_FALLBACKS:
        if Path(candidate).is_dir() and unsearchable_by(ids, Path(candidate)) is None:
            return Path(candidate), reason
    if SCRATCH_FALLBACKS:
        reason += f", and so is each of {', '.join(SCRATCH_FALLBACKS)}"
    return None, reason


def _private_mounts(
    shut_out: Sequence[tuple[Path, Path]],
    hidden: Sequence[Path],
    readable: Sequence[Path],
    stage: Path | None,
) -> list[Path]:
    """Cover folders with an empty ``tmpfs``, each path a worker needs beneath mounted back.

    In the worker's own mount namespace (nothing changes for any other
    process): first each folder that shuts the worker's user out of a path it
    needs (``shut_out``: ``/root``, mode 0700, above Python), then each
    ``hidden`` folder (``site-packages`` inside the standard library's
    folder), with the ``readable`` paths beneath it. Everything else in those
    folders stops existing for the worker, whatever its permissions. Returns
    the folders covered; without a ``stage`` (a folder the mounts pass
    through) a folder with paths to mount back is left as it is.
    """
    blocked: dict[Path, list[Path]] = {}
    for target, shut in shut_out:
        blocked.setdefault(shut, []).append(target)
    covered = _cover(blocked, stage)
    # Looked at after the first covers: what they hid is gone, what they mounted back is there.
    resolver = _Resolver()
    wanted = [resolver.real(path) for path in readable]
    hide: dict[Path, list[Path]] = {}
    for folder in hidden:
        name = resolver.real(folder)
        info = resolver.lstat(name)
        if info is not None and stat.S_ISDIR(info.st_mode) and name not in wanted:
            hide[Path(name)] = [Path(p) for p in wanted if p.startswith(name + "/")]
    return covered + _cover(hide, stage)


def _cover(blocked: Mapping[Path, Sequence[Path]], stage: Path | None) -> list[Path]:
    """Cover each folder of ``blocked`` with an empty ``tmpfs`` and mount back its paths there.

    The paths are bind-mounted to ``stage`` first (the ``tmpfs`` hides them),
    then moved back to their own places. Returns the folders covered.
    """
    staged = 0
    # Shallow folders first; a shut folder beneath another one's covered tree is covered by it.
    done: list[Path] = []
    for shut in sorted(blocked, key=lambda p: len(p.parts)):
        if any(shut.is_relative_to(top) for top in done):
            continue
        targets = sorted(t for top, ts in blocked.items() if top.is_relative_to(shut) for t in ts)
        tops = [t for t in targets if not any(t != o and t.is_relative_to(o) for o in targets)]
        if tops and stage is None:
            continue
        stages = []
        for target in tops:
            assert stage is not None
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
    return done


def _become(ids: tuple[int, int], needed: Sequence[Path], scratch: Path | None) -> str:
    """Become user ``ids`` if it can read what the worker needs; else stay uid 0 without
    capabilities. The layer applied (:data:`UNPRIVILEGED_USER` or :data:`NO_CAPABILITIES`)."""
    permissions = _Permissions(ids)  # the view of now, after the private mounts
    with _applying(UNPRIVILEGED_USER):
        if all(permissions.blocked(path) is None for path in needed):
            _drop_user(ids, scratch)
            return UNPRIVILEGED_USER
        # That user could not read Python or the plugin (a file of mode 0600, say): stay
        # uid 0 without a single capability, fenced in by Landlock and seccomp.
        _drop_capabilities()
        return NO_CAPABILITIES


def _mount_scratch(scratch: Path, size: int, ids: tuple[int, int] | None) -> None:
    """Cover ``scratch`` with a ``tmpfs`` of ``size`` bytes, owned by ``ids`` (else the caller)."""
    inodes = max(size // _BYTES_PER_INODE, 64)
    options = f"size={size},nr_inodes={inodes},mode=0700"
    if ids is not None:
        options += f",uid={ids[0]},gid={ids[1]}"
    _mount(Path("tmpfs"), scratch, "tmpfs", _SCRATCH_FLAGS, options)


def _allowed_around(
    readable: Sequence[Path], hidden: Sequence[Path], covered: Sequence[Path]
) -> Sequence[Path]:
    """``readable``, each path that holds ``hidden`` folders not ``covered`` by a mount
    replaced by what it holds beside them.

    For Landlock, where no mount namespace hid those folders: one rule per
    remaining entry (a folder of the standard library holds a few hundred).
    """
    resolver = _Resolver()
    done = {str(path) for path in covered}
    hidden_names = {resolver.real(folder) for folder in hidden} - done
    if not hidden_names:
        return readable
    hidden_names = {name for name in hidden_names if resolver.lstat(name) is not None}
    hidden_names -= {resolver.real(path) for path in readable}

    def around(name: str) -> list[str]:
        if name in hidden_names:
            return []
        if not any(h.startswith(name.rstrip("/") + "/") for h in hidden_names):
            return [name]
        try:
            children = sorted(str(child) for child in Path(name).iterdir())
        except OSError:
            return []
        return [part for child in children for part in around(child)]

    return [Path(part) for path in readable for part in around(resolver.real(path))]


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
    hidden: Sequence[Path] = (),
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
    skipped. ``hidden`` are folders beneath ``readable`` paths that the
    worker must not read all the same (the ``site-packages`` inside the
    standard library's folder): covered with an empty ``tmpfs`` in the
    worker's mount namespace (``private_mounts``; the readable paths beneath
    them mounted back), or, without one, left out of Landlock's rules. As
    root, ``scratch`` is handed to the worker's user: make it a fresh, empty
    folder (only the folder itself changes owner).

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
    _check_threads(available)
    library = None
    if SECCOMP in available:
        # Loaded now, before the memory limit, and before Landlock hides the library's file.
        library = _libseccomp()
        if library is None:
            raise ConfinementError(SECCOMP, errno.ENOENT, "libseccomp cannot be loaded")
    applied: list[str] = []
    ids = capabilities.worker_ids(os.getpid()) if UNPRIVILEGED_USER in available else None
    if MEMORY_CGROUP in available and limits.memory is not None:
        with _applying(MEMORY_CGROUP):
            _join_memory_cgroup(capabilities, limits.memory)
        applied.append(MEMORY_CGROUP)
    # A mount namespace of the worker's own: for its scratch tmpfs and its private mounts.
    mounts = SCRATCH_TMPFS in available
    namespaces = [name for name in (NETWORK_NAMESPACE, IPC_NAMESPACE) if name in available]
    own_user_namespace = _enter_namespaces(capabilities.root, namespaces, mounts=mounts)
    applied += namespaces
    if RLIMITS in available:
        with _applying(RLIMITS):
            _apply_rlimits(limits, tasks=_TASKS if own_user_namespace else None)
        applied.append(RLIMITS)
    needed = [folder, *readable]
    covered: list[Path] = []
    if mounts:
        size = limits.scratch if scratch is not None else None
        layers, covered = _own_mounts(
            capabilities.root, ids, needed, hidden=hidden, scratch=scratch, size=size
        )
        applied += layers
    if own_user_namespace:
        with _applying(namespaces[0] if namespaces else SCRATCH_TMPFS):
            # Full capabilities in the new namespaces are attack surface nothing needs.
            _drop_capabilities()
    if ids is not None:
        applied.append(_become(ids, needed, scratch))
        if applied[-1] == UNPRIVILEGED_USER and capabilities.worker_uids and RLIMITS in available:
            with _applying(RLIMITS):  # a user of its own: its processes are the worker's alone
                _apply_rlimits(_NO_LIMITS, tasks=_TASKS)
    if NO_NEW_PRIVS in available:
        with _applying(NO_NEW_PRIVS):
            _set_no_new_privs()
        applied.append(NO_NEW_PRIVS)
    if LANDLOCK in available:
        assert capabilities.landlock_abi is not None
        with _applying(LANDLOCK):
            _apply_landlock(
                capabilities.landlock_abi,
                folder=folder,
                scratch=scratch,
                readable=_allowed_around(readable, hidden, covered),
            )
        applied.append(LANDLOCK)
    if library is not None:
        with _applying(SECCOMP):
            _load_seccomp(library)
        applied.append(SECCOMP)
    return tuple(applied)


def _own_mounts(
    root: bool,
    ids: tuple[int, int] | None,
    needed: Sequence[Path],
    *,
    hidden: Sequence[Path],
    scratch: Path | None,
    size: int | None,
) -> tuple[list[str], list[Path]]:
    """In a mount namespace of the worker's own (made now as root; else the user namespace's):
    the scratch ``tmpfs`` of ``size`` bytes, and the private mounts. The layers applied and the
    folders covered."""
    applied: list[str] = []
    shut_out = _Permissions(ids).shut_out(needed) if ids is not None else []
    if (scratch is None or size is None) and not shut_out and not hidden:
        return applied, []
    with _applying(SCRATCH_TMPFS if size is not None else PRIVATE_MOUNTS):
        if root:
            _unshare_or_raise(_CLONE_NEWNS, "unshare(CLONE_NEWNS)")
        _mount(None, Path("/"), None, _MS_REC | _MS_PRIVATE)
        if scratch is not None and size is not None:
            _mount_scratch(scratch, size, ids)
            applied.append(SCRATCH_TMPFS)
    covered: list[Path] = []
    if shut_out or hidden:
        wanted = [*needed, scratch] if scratch is not None else needed
        with _applying(PRIVATE_MOUNTS):
            covered = _private_mounts(shut_out, hidden, wanted, scratch)
        if covered:
            applied.append(PRIVATE_MOUNTS)
            _relist_imports()
    # The working folder as the new mounts show it (the scratch tmpfs, say, not the folder
    # beneath it); one now hidden stays as it was, where Landlock refuses it.
    with contextlib.suppress(OSError):
        os.chdir(Path.cwd())
    return applied, covered


def _relist_imports() -> None:
    """Have the import system list ``sys.path``'s folders again, as the private mounts now
    show them, while this process may still list them (Landlock lets it list only the
    folders it may read: a folder holding a mounted-back package is not one of them)."""
    importlib.invalidate_caches()
    importlib.machinery.PathFinder.find_spec("services_ai_plugins_no_such_module")
    metadata = sys.modules.get("importlib.metadata")
    if metadata is not None:  # a plugin with dependencies: their metadata's listings too
        for _ in metadata.distributions(name="services-ai-plugins-no-such-distribution"):
            pass


def _check_threads(available: set[str]) -> None:
    """Refuse a threaded process when a layer that binds only the calling thread will apply."""
    single = available - {RLIMITS, UNPRIVILEGED_USER, MEMORY_CGROUP}
    if single:
        threads = _threads()
        if threads is not None and threads > 1:
            raise ConfinementError(
                min(single, key=LAYER_NAMES.index),
                None,
                f"the process has {threads} threads; confine() binds only the calling one",
            )


def _enter_namespaces(root: bool, namespaces: Sequence[str], *, mounts: bool) -> bool:
    """Enter the network and IPC ``namespaces``; whether in a user namespace of the worker's own.

    As root each directly; as any other user all in one new user namespace that
    maps only the caller's user and group (with a mount namespace when
    ``mounts``), whose capabilities the caller must drop once its mounts are done.
    """
    if root:
        for name, flag in ((NETWORK_NAMESPACE, _CLONE_NEWNET), (IPC_NAMESPACE, _CLONE_NEWIPC)):
            if name in namespaces:
                with _applying(name):
                    _unshare_or_raise(flag, f"unshare({name})")
        return False
    if not namespaces and not mounts:
        return False
    flags = _CLONE_NEWUSER | (_CLONE_NEWNS if mounts else 0)
    flags |= _CLONE_NEWNET if NETWORK_NAMESPACE in namespaces else 0
    flags |= _CLONE_NEWIPC if IPC_NAMESPACE in namespaces else 0
    with _applying(namespaces[0] if namespaces else SCRATCH_TMPFS):
        uid, gid = os.getuid(), os.getgid()
        _unshare_or_raise(flags, f"unshare(CLONE_NEWUSER|...) (flags {flags:#x})")
        _map_ids(uid, gid)
    return True


# -- the audit hook ------------------------------------------------------------------------------


@final
class _Roots:
    """Folders and files, matched by name: a path is inside when it is one or lies beneath one."""

    def __init__(self, paths: Sequence[Path | str]) -> None:
        resolver = _Resolver()
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

    This is not a security boundary (see the module's documentation): it
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
