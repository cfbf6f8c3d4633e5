"""Finding out which layers this machine offers: :func:`probe` (each trial in a child)."""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Callable

from ._capabilities import (
    IPC_NAMESPACE,
    LANDLOCK,
    LAYER_NAMES,
    MEMORY_CGROUP,
    NETWORK_NAMESPACE,
    RLIMITS,
    SCRATCH_TMPFS,
    UNPRIVILEGED_USER,
    USER_NAMESPACES,
    WORKER_UIDS,
    Capabilities,
)
from ._landlock import (
    read_landlock_abi,
)
from ._mounts import (
    try_tmpfs,
    try_user_namespace,
    unprivileged_ids,
    user_namespace_problem,
    worker_uid_range,
)
from ._resources import (
    find_memory_cgroup,
)
from ._seccomp import (
    probe_seccomp,
)
from ._syscalls import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWUSER,
    Unavailable,
    child_problem,
    in_child,
    unshare,
)


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
    unprivileged = unprivileged_ids() if root else None
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
        worker_uids, problem = worker_uid_range()
        if problem is not None:
            reasons[WORKER_UIDS] = problem
    namespaces = _probe_namespaces(root, unprivileged, reasons)
    memory_cgroup = cgroup_version = None
    try:
        memory_cgroup, cgroup_version = find_memory_cgroup()
    except Unavailable as missing:
        reasons[MEMORY_CGROUP] = str(missing)
    landlock_abi, problem = read_landlock_abi()
    if problem is not None:
        reasons[LANDLOCK] = problem
    return Capabilities(
        system=system,
        root=root,
        unprivileged=unprivileged,
        landlock_abi=landlock_abi,
        seccomp=probe_seccomp(reasons),
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
    code = in_child(functools.partial(try_user_namespace, unprivileged))
    found = {"user_namespaces": code == 0}
    if code != 0:
        reasons[USER_NAMESPACES] = user_namespace_problem(code)
    trials: tuple[tuple[str, str, str, Callable[[], int]], ...]
    if root:
        trials = (
            ("network_namespace", NETWORK_NAMESPACE, "unshare(CLONE_NEWNET) as root",
             functools.partial(unshare, CLONE_NEWNET)),
            ("ipc_namespace", IPC_NAMESPACE, "unshare(CLONE_NEWIPC) as root",
             functools.partial(unshare, CLONE_NEWIPC)),
            ("mount_namespace", SCRATCH_TMPFS, "a tmpfs in a mount namespace of its own",
             functools.partial(try_tmpfs, None)),
        )  # fmt: skip
    elif found["user_namespaces"]:
        found["network_namespace"] = True
        ids = (os.getuid(), os.getgid())
        trials = (
            ("ipc_namespace", IPC_NAMESPACE, "unshare(CLONE_NEWUSER|CLONE_NEWIPC)",
             functools.partial(unshare, CLONE_NEWUSER | CLONE_NEWIPC)),
            ("mount_namespace", SCRATCH_TMPFS, "a tmpfs in a user and mount namespace",
             functools.partial(try_tmpfs, ids)),
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
        code = in_child(trial)
        found[field] = code == 0
        if code != 0:
            reasons[name] = f"{what} failed: {child_problem(code)}"
    return found
