"""Namespaces, mounts and the user drop: the ``network_namespace``, ``ipc_namespace``,
``scratch_tmpfs``, ``private_mounts`` and ``unprivileged_user`` layers.

Also which user each worker becomes (a uid per worker as root), which folders
shut that user out (:func:`unreadable_by`, :func:`unsearchable_by`), and where
the scratch folders go (:func:`scratch_parent`). See docs/sandbox.md.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import importlib.machinery
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, final

from ._capabilities import (
    DEFAULT_WORKER_UIDS,
    IPC_NAMESPACE,
    NETWORK_NAMESPACE,
    NO_CAPABILITIES,
    PRIVATE_MOUNTS,
    SCRATCH_TMPFS,
    UNPRIVILEGED_USER,
    Capabilities,
)
from ._syscalls import (
    CHILD_FAILED,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWUSER,
    MS_BIND,
    MS_MOVE,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_REC,
    Resolver,
    applying,
    child_problem,
    drop_capabilities,
    map_ids,
    mount,
    unshare,
    unshare_or_raise,
)

#: Bytes of the scratch tmpfs per file (inode) it may hold.
_BYTES_PER_INODE: Final = 4096
#: How the scratch tmpfs is mounted.
_SCRATCH_FLAGS: Final = MS_NOSUID | MS_NODEV | MS_NOEXEC


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


def worker_uid_range() -> tuple[tuple[int, int] | None, str | None]:
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


def try_tmpfs(ids: tuple[int, int] | None) -> int:  # pragma: no cover - a probe child
    """In a probe child: a mount namespace of its own (in a user namespace mapping ``ids``, when
    not root) with a small ``tmpfs`` mounted in it."""
    try:
        if ids is None:
            unshare_or_raise(CLONE_NEWNS, "unshare(CLONE_NEWNS)")
        else:
            unshare_or_raise(CLONE_NEWUSER | CLONE_NEWNS, "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
            map_ids(*ids)
        mount(None, Path("/"), None, MS_REC | MS_PRIVATE)
        target = Path("/tmp") if Path("/tmp").is_dir() else Path("/")  # noqa: S108 - only mounted on
        mount(Path("tmpfs"), target, "tmpfs", _SCRATCH_FLAGS, "size=64k,mode=0700")
    except OSError as error:
        return error.errno or CHILD_FAILED
    return 0


def unprivileged_ids() -> tuple[int, int]:
    import pwd  # noqa: PLC0415 - POSIX only

    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return 65534, 65534
    return entry.pw_uid, entry.pw_gid


def user_namespace_problem(code: int) -> str:
    hints = {
        errno.EPERM: "disabled by kernel.unprivileged_userns_clone, a security module "
        "(AppArmor, SELinux) or a container's seccomp profile",
        errno.ENOSPC: "user.max_user_namespaces is 0, or the user has used up its quota",
        errno.EINVAL: "the kernel lacks user or network namespaces",
    }
    hint = hints.get(code)
    problem = child_problem(code) + (f": {hint}" if hint else "")
    return f"unprivileged user namespaces are not available ({problem})"


def try_user_namespace(unprivileged: tuple[int, int] | None) -> int:  # pragma: no cover - child
    """In a probe child: become unprivileged (when root), then try a user and network namespace."""
    if unprivileged is not None:
        uid, gid = unprivileged
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        except OSError as error:
            return error.errno or CHILD_FAILED
    return unshare(CLONE_NEWUSER | CLONE_NEWNET)


@final
class _Permissions(Resolver):
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
    resolver = Resolver()
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
            mount(target, place, None, MS_BIND | MS_REC)
            stages.append((target, place))
        mount(Path("tmpfs"), shut, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
        for target, place in stages:
            if place.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
            mount(place, target, None, MS_MOVE)
            place.rmdir() if place.is_dir() else place.unlink()
        done.append(shut)
    return done


def become(ids: tuple[int, int], needed: Sequence[Path], scratch: Path | None) -> str:
    """Become user ``ids`` if it can read what the worker needs; else stay uid 0 without
    capabilities. The layer applied (:data:`UNPRIVILEGED_USER` or :data:`NO_CAPABILITIES`)."""
    permissions = _Permissions(ids)  # the view of now, after the private mounts
    with applying(UNPRIVILEGED_USER):
        if all(permissions.blocked(path) is None for path in needed):
            _drop_user(ids, scratch)
            return UNPRIVILEGED_USER
        # That user could not read Python or the plugin (a file of mode 0600, say): stay
        # uid 0 without a single capability, fenced in by Landlock and seccomp.
        drop_capabilities()
        return NO_CAPABILITIES


def _mount_scratch(scratch: Path, size: int, ids: tuple[int, int] | None) -> None:
    """Cover ``scratch`` with a ``tmpfs`` of ``size`` bytes, owned by ``ids`` (else the caller)."""
    inodes = max(size // _BYTES_PER_INODE, 64)
    options = f"size={size},nr_inodes={inodes},mode=0700"
    if ids is not None:
        options += f",uid={ids[0]},gid={ids[1]}"
    mount(Path("tmpfs"), scratch, "tmpfs", _SCRATCH_FLAGS, options)


def allowed_around(
    readable: Sequence[Path], hidden: Sequence[Path], covered: Sequence[Path]
) -> Sequence[Path]:
    """``readable``, each path that holds ``hidden`` folders not ``covered`` by a mount
    replaced by what it holds beside them.

    For Landlock, where no mount namespace hid those folders: one rule per
    remaining entry (a folder of the standard library holds a few hundred).
    """
    resolver = Resolver()
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


def _drop_user(ids: tuple[int, int], scratch: Path | None) -> None:
    uid, gid = ids
    if scratch is not None:
        os.chown(scratch, uid, gid)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) != (uid, uid, gid, gid):
        raise OSError(errno.EPERM, f"still running as {os.geteuid()}:{os.getegid()}")


def own_mounts(
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
    with applying(SCRATCH_TMPFS if size is not None else PRIVATE_MOUNTS):
        if root:
            unshare_or_raise(CLONE_NEWNS, "unshare(CLONE_NEWNS)")
        mount(None, Path("/"), None, MS_REC | MS_PRIVATE)
        if scratch is not None and size is not None:
            _mount_scratch(scratch, size, ids)
            applied.append(SCRATCH_TMPFS)
    covered: list[Path] = []
    if shut_out or hidden:
        wanted = [*needed, scratch] if scratch is not None else needed
        with applying(PRIVATE_MOUNTS):
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


def enter_namespaces(root: bool, namespaces: Sequence[str], *, mounts: bool) -> bool:
    """Enter the network and IPC ``namespaces``; whether in a user namespace of the worker's own.

    As root each directly; as any other user all in one new user namespace that
    maps only the caller's user and group (with a mount namespace when
    ``mounts``), whose capabilities the caller must drop once its mounts are done.
    """
    if root:
        for name, flag in ((NETWORK_NAMESPACE, CLONE_NEWNET), (IPC_NAMESPACE, CLONE_NEWIPC)):
            if name in namespaces:
                with applying(name):
                    unshare_or_raise(flag, f"unshare({name})")
        return False
    if not namespaces and not mounts:
        return False
    flags = CLONE_NEWUSER | (CLONE_NEWNS if mounts else 0)
    flags |= CLONE_NEWNET if NETWORK_NAMESPACE in namespaces else 0
    flags |= CLONE_NEWIPC if IPC_NAMESPACE in namespaces else 0
    with applying(namespaces[0] if namespaces else SCRATCH_TMPFS):
        uid, gid = os.getuid(), os.getgid()
        unshare_or_raise(flags, f"unshare(CLONE_NEWUSER|...) (flags {flags:#x})")
        map_ids(uid, gid)
    return True
