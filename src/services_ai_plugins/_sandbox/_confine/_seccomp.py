"""The ``seccomp`` layer: the system calls a worker may not make (through libseccomp).

No programs, no processes (threads still work), no new sockets, signals only to
itself, no namespaces, mounts or kernel attack surface. See docs/sandbox.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import platform
import socket
from typing import Final, NamedTuple

from ._capabilities import (
    SECCOMP,
)
from ._syscalls import (
    CHILD_FAILED,
    CLONE_THREAD,
    c_library,
    child_problem,
    in_child,
    set_no_new_privs,
)

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


def _scmp_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


def probe_seccomp(reasons: dict[str, str]) -> bool:
    """Whether libseccomp loads and the worker's filter works (tried in a child)."""
    library = libseccomp()
    if library is None:
        reasons[SECCOMP] = (
            "libseccomp 2.1+ cannot be loaded (ctypes.util.find_library('seccomp')): "
            "install libseccomp2"
        )
        return False
    code = in_child(functools.partial(_try_seccomp, library))
    if code == _FILTER_INEFFECTIVE:
        reasons[SECCOMP] = "a seccomp filter loaded but did not stop socket(AF_INET)"
    elif code != 0:
        reasons[SECCOMP] = f"a seccomp filter could not be loaded: {child_problem(code)}"
    return code == 0


def _try_seccomp(library: ctypes.CDLL) -> int:  # pragma: no cover - a probe child
    """In a probe child: load the worker's filter, then check that it stops ``socket(AF_INET)``."""
    try:
        set_no_new_privs()
        load_seccomp(library)
    except OSError as error:
        return error.errno or CHILD_FAILED
    libc = c_library()
    fd = libc.socket(ctypes.c_int(socket.AF_INET), ctypes.c_int(socket.SOCK_STREAM), 0)
    if fd >= 0 or ctypes.get_errno() != errno.EPERM:
        return _FILTER_INEFFECTIVE
    return 0


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
def libseccomp() -> ctypes.CDLL | None:
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
        _Rule("clone", eperm, ((flags_arg, _SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0),)),
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


def load_seccomp(library: ctypes.CDLL) -> None:
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
