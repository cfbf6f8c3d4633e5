"""What this machine offers a sandbox, in records: the layers' names, :class:`Limits`,
:class:`Layer` and :class:`Capabilities` (as :func:`._probe.probe` finds them).

The layers are described in docs/sandbox.md ("The confinement layers").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from ._syscalls import (
    MiB,
)

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


#: ``(first uid, how many)`` of workers' user ids when root's subordinate range in
#: ``/etc/subuid`` cannot hold one per process id: from 0x70000000 (1879048192), a block no
#: distribution hands out (systemd leaves 0x70000000-0x7FFDFFFF unused), 2**22 ids (the
#: kernel's largest ``pid_max``). A worker's uid and gid are the first plus its pid.
DEFAULT_WORKER_UIDS: Final = (0x7000_0000, 2**22)


#: Threads (and processes) a worker may have in a user namespace of its own, its main thread
#: included: RLIMIT_NPROC counts them there alone.
TASKS: Final = 64


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
    memory: int | None = attrs.field(default=512 * MiB, validator=_positive)
    #: CPU seconds over the worker's whole life (``RLIMIT_CPU``), not per call.
    cpu: int | None = attrs.field(default=600, validator=_positive)
    #: The largest file the worker may write, in bytes (``RLIMIT_FSIZE``).
    file_size: int | None = attrs.field(default=16 * MiB, validator=_positive)
    #: Open file descriptors (``RLIMIT_NOFILE``): new ones are numbered below it.
    open_files: int | None = attrs.field(default=64, validator=_positive)
    #: The size of the scratch folder, in bytes: a ``tmpfs`` of the worker's own (the
    #: ``scratch_tmpfs`` layer), counted as memory. ``None``: the scratch folder stays a folder
    #: of the host's temporary folder, bounded per file only.
    scratch: int | None = attrs.field(default=64 * MiB, validator=_positive)


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
            rlimit_stops += f"; more than {TASKS} threads"
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
