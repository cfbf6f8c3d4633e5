"""Confining a worker: :func:`confine` applies every available layer, in order."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from ...errors import ConfinementError
from ._capabilities import (
    IPC_NAMESPACE,
    LANDLOCK,
    LAYER_NAMES,
    MEMORY_CGROUP,
    NETWORK_NAMESPACE,
    NO_NEW_PRIVS,
    RLIMITS,
    SCRATCH_TMPFS,
    SECCOMP,
    TASKS,
    UNPRIVILEGED_USER,
    Capabilities,
    Limits,
)
from ._landlock import (
    apply_landlock,
)
from ._mounts import (
    allowed_around,
    become,
    enter_namespaces,
    own_mounts,
)
from ._resources import (
    NO_LIMITS,
    apply_rlimits,
    join_memory_cgroup,
)
from ._seccomp import (
    libseccomp,
    load_seccomp,
)
from ._syscalls import (
    applying,
    drop_capabilities,
    set_no_new_privs,
    thread_count,
)


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
    in the order of :data:`LAYER_NAMES` (docs/sandbox.md says
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
        library = libseccomp()
        if library is None:
            raise ConfinementError(SECCOMP, errno.ENOENT, "libseccomp cannot be loaded")
    applied: list[str] = []
    ids = capabilities.worker_ids(os.getpid()) if UNPRIVILEGED_USER in available else None
    if MEMORY_CGROUP in available and limits.memory is not None:
        with applying(MEMORY_CGROUP):
            join_memory_cgroup(capabilities, limits.memory)
        applied.append(MEMORY_CGROUP)
    # A mount namespace of the worker's own: for its scratch tmpfs and its private mounts.
    mounts = SCRATCH_TMPFS in available
    namespaces = [name for name in (NETWORK_NAMESPACE, IPC_NAMESPACE) if name in available]
    own_user_namespace = enter_namespaces(capabilities.root, namespaces, mounts=mounts)
    applied += namespaces
    if RLIMITS in available:
        with applying(RLIMITS):
            apply_rlimits(limits, tasks=TASKS if own_user_namespace else None)
        applied.append(RLIMITS)
    needed = [folder, *readable]
    covered: list[Path] = []
    if mounts:
        size = limits.scratch if scratch is not None else None
        layers, covered = own_mounts(
            capabilities.root, ids, needed, hidden=hidden, scratch=scratch, size=size
        )
        applied += layers
    if own_user_namespace:
        with applying(namespaces[0] if namespaces else SCRATCH_TMPFS):
            # Full capabilities in the new namespaces are attack surface nothing needs.
            drop_capabilities()
    if ids is not None:
        applied.append(become(ids, needed, scratch))
        if applied[-1] == UNPRIVILEGED_USER and capabilities.worker_uids and RLIMITS in available:
            with applying(RLIMITS):  # a user of its own: its processes are the worker's alone
                apply_rlimits(NO_LIMITS, tasks=TASKS)
    if NO_NEW_PRIVS in available:
        with applying(NO_NEW_PRIVS):
            set_no_new_privs()
        applied.append(NO_NEW_PRIVS)
    if LANDLOCK in available:
        assert capabilities.landlock_abi is not None
        with applying(LANDLOCK):
            apply_landlock(
                capabilities.landlock_abi,
                folder=folder,
                scratch=scratch,
                readable=allowed_around(readable, hidden, covered),
            )
        applied.append(LANDLOCK)
    if library is not None:
        with applying(SECCOMP):
            load_seccomp(library)
        applied.append(SECCOMP)
    return tuple(applied)


def _check_threads(available: set[str]) -> None:
    """Refuse a threaded process when a layer that binds only the calling thread will apply."""
    single = available - {RLIMITS, UNPRIVILEGED_USER, MEMORY_CGROUP}
    if single:
        threads = thread_count()
        if threads is not None and threads > 1:
            raise ConfinementError(
                min(single, key=LAYER_NAMES.index),
                None,
                f"the process has {threads} threads; confine() binds only the calling one",
            )
