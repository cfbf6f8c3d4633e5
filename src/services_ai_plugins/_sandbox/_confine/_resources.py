"""The ``memory_cgroup`` and ``rlimits`` layers: what a worker may spend.

A memory control group per worker (bounded at :attr:`Limits.memory`, no swap),
removed when the zygote reaps it; and the resource limits (address space, CPU
seconds, file size, descriptors, no core dumps). See docs/sandbox.md.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final

from ._capabilities import (
    Capabilities,
    Limits,
)
from ._syscalls import (
    MiB,
    Unavailable,
    errno_name,
    thread_count,
    write_file,
)

#: The folder of workers' memory control groups, made beneath the zygote's own group.
CGROUP_FOLDER: Final = "services-ai-plugins"
#: The prefix of one worker's memory control group's name (then its pid).
_CGROUP_WORKER: Final = "worker-"


#: Seconds between SIGXCPU (the soft CPU limit) and SIGKILL (the hard one).
_CPU_GRACE: Final = 1


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


def find_memory_cgroup() -> tuple[str, int]:
    """The folder for workers' memory control groups and its cgroup version.

    Beneath this process's own group: in a cgroup v1 memory hierarchy, or in
    cgroup v2 when its children get the memory controller. Makes the folder
    (it stays, empty, for later hosts), tries a group in it, and removes the
    groups of workers that no longer exist. Raises :class:`Unavailable`.
    """
    try:
        v1, v2 = _own_cgroups()
    except OSError as error:
        why = f"cannot read /proc/self/cgroup or /proc/self/mountinfo: {error.strerror}"
        raise Unavailable(why) from None
    if v1 is not None:
        version, (point, path) = 1, v1
    elif v2 is not None:
        version, (point, path) = 2, v2
    else:
        raise Unavailable("no cgroup v1 memory hierarchy or cgroup v2 is mounted here")
    group = Path(point + path.rstrip("/"))
    if version == 2:
        try:
            offered = (group / "cgroup.controllers").read_text().split()
            enabled = (group / "cgroup.subtree_control").read_text().split()
        except OSError as error:
            why = f"cgroup v2: cannot read the controllers of {group}: {error.strerror}"
            raise Unavailable(why) from None
        if "memory" not in offered:
            raise Unavailable(f"cgroup v2: the memory controller is not enabled for {group}")
        if "memory" not in enabled:
            raise Unavailable(
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
            write_file(folder / "cgroup.subtree_control", "+memory")
        trial = folder / f"probe-{os.getpid()}"
        with contextlib.suppress(FileExistsError):
            trial.mkdir()
        try:
            write_file(trial / _MEMORY_LIMIT[version], str(64 * MiB))
        finally:
            trial.rmdir()
    except OSError as error:
        raise Unavailable(
            f"cgroup v{version}: cannot make a memory control group in {group}: "
            f"{error.strerror} [{errno_name(error.errno or 0)}]"
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


def join_memory_cgroup(capabilities: Capabilities, limit: int) -> None:
    """Make this process's memory control group, bound it at ``limit`` bytes, and move in."""
    folder, version = capabilities.memory_cgroup, capabilities.cgroup_version
    assert folder is not None
    assert version is not None
    pid = os.getpid()
    group = Path(folder) / f"{_CGROUP_WORKER}{pid}"
    with contextlib.suppress(FileExistsError):  # a group a dead process of this pid left
        group.mkdir()
    write_file(group / _MEMORY_LIMIT[version], str(limit))
    # No swap: what is over the limit is not pushed to disk, the worker is stopped.
    optional = (
        {"memory.swap.max": "0", "memory.oom.group": "1"}
        if version == 2
        else {"memory.memsw.limit_in_bytes": str(limit)}
    )
    for name, value in optional.items():
        with contextlib.suppress(FileNotFoundError):  # no swap accounting (or an older kernel)
            write_file(group / name, value)
    if version == 1 and thread_count() == 1:
        # The calling thread alone, named "0": the kernel then skips the lock that moving a
        # whole process takes, which costs a scheduler grace period (milliseconds).
        write_file(group / "tasks", "0")
    else:
        write_file(group / "cgroup.procs", str(pid))


def release_worker(pid: int, capabilities: Capabilities) -> None:
    """Remove what worker ``pid`` left outside itself, once it is reaped: its memory control group.

    Call it after ``waitpid`` returned for the worker, however it ended; it does
    nothing when there is nothing to remove.
    """
    if capabilities.memory_cgroup is not None:
        with contextlib.suppress(OSError):
            (Path(capabilities.memory_cgroup) / f"{_CGROUP_WORKER}{pid}").rmdir()


#: Limits that leave every limit as it is (for :func:`apply_rlimits` with ``tasks`` alone).
NO_LIMITS: Final = Limits(memory=None, cpu=None, file_size=None, open_files=None, scratch=None)


def apply_rlimits(limits: Limits, *, tasks: int | None) -> None:
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
