"""Operating-system confinement of a plugin worker process: one module per layer.

A worker is forked from a clean zygote, calls :func:`confine` right after
``os.setsid()`` and before it imports any plugin code, and then runs that code.
:func:`probe` finds out which layers this machine offers; :func:`confine` applies
every available one, in the order of :data:`LAYER_NAMES`, and names the ones it
applied. docs/sandbox.md says what each layer stops and what it does not.

This module is the face the rest of the SDK imports; the modules behind it import
only downwards, in this order:

- :mod:`._syscalls`: ctypes and system-call plumbing the others share.
- :mod:`._capabilities`: the layers' names, :class:`Limits`, :class:`Layer`,
  :class:`Capabilities`.
- :mod:`._landlock`, :mod:`._seccomp`: those two layers.
- :mod:`._resources`: the ``memory_cgroup`` and ``rlimits`` layers.
- :mod:`._mounts`: namespaces, the scratch ``tmpfs``, private mounts, the user drop.
- :mod:`._audit`: the audit hook (:func:`install_audit_hook`).
- :mod:`._probe`: :func:`probe`.
- :mod:`._apply`: :func:`confine`.
"""

from ...errors import ConfinementError
from ._apply import confine
from ._audit import install_audit_hook
from ._capabilities import (
    DEFAULT_WORKER_UIDS,
    IPC_NAMESPACE,
    LANDLOCK,
    LAYER_NAMES,
    MEMORY_CGROUP,
    NETWORK_NAMESPACE,
    NO_CAPABILITIES,
    NO_NEW_PRIVS,
    PRIVATE_MOUNTS,
    RLIMITS,
    SCRATCH_TMPFS,
    SECCOMP,
    UNPRIVILEGED_USER,
    USER_NAMESPACES,
    WORKER_UIDS,
    Capabilities,
    Layer,
    Limits,
)
from ._mounts import SCRATCH_FALLBACKS, scratch_parent, unreadable_by, unsearchable_by
from ._probe import probe
from ._resources import CGROUP_FOLDER, release_worker

__all__ = [
    "CGROUP_FOLDER",
    "DEFAULT_WORKER_UIDS",
    "IPC_NAMESPACE",
    "LANDLOCK",
    "LAYER_NAMES",
    "MEMORY_CGROUP",
    "NETWORK_NAMESPACE",
    "NO_CAPABILITIES",
    "NO_NEW_PRIVS",
    "PRIVATE_MOUNTS",
    "RLIMITS",
    "SCRATCH_FALLBACKS",
    "SCRATCH_TMPFS",
    "SECCOMP",
    "UNPRIVILEGED_USER",
    "USER_NAMESPACES",
    "WORKER_UIDS",
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
