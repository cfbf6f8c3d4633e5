"""The sandbox's operating-system layers, tried for real.

Each test forks a child, confines it (with the layers under test alone, as
far as they can be separated), tries what a plugin might, and reports every
outcome to the parent over an AF_UNIX socket pair opened before confinement
(so each test also shows that such a socket keeps working). The child always
ends with ``os._exit``. A layer this machine lacks skips its tests, with the
probe's reason.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import ctypes
import encodings.idna  # noqa: F401 - getaddrinfo() imports it: a confined child could not
import errno
import json
import mmap
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pluggy
import pytest

from services_ai_plugins._cli._sandbox import add_sandbox_commands
from services_ai_plugins._sandbox import _confine
from services_ai_plugins._sandbox._confine import (
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
    Capabilities,
    ConfinementError,
    Limits,
    _mounts,
    _syscalls,
    confine,
    install_audit_hook,
    probe,
    release_worker,
)
from services_ai_plugins._sandbox._worker import hidden_paths, python_paths
from services_ai_plugins.errors import PluginError

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox's layers need Linux")

#: <linux/prctl.h>
PR_SET_DUMPABLE = 4

#: How long a child may take before it is killed and its test fails.
CHILD_TIMEOUT = 10.0
MiB = 2**20

Outcome = dict[str, Any]
Body = Callable[[], Mapping[str, Any]]


@attrs.frozen
class Sandbox:
    """The folders of one test: the plugin's, its scratch, one more readable file, and outside."""

    base: Path
    folder: Path
    scratch: Path
    shared: Path
    outside: Path


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """Folders the unprivileged user can reach (pytest's own temporary folders are private)."""
    base = Path(tempfile.mkdtemp(prefix="services-ai-plugins-confine-"))
    base.chmod(0o755)
    folder = base / "plugin"
    folder.mkdir(mode=0o755)
    (folder / "main.py").write_text("VALUE = 42\n")
    (folder / "main.py").chmod(0o644)
    scratch = base / "scratch"
    scratch.mkdir(mode=0o700)
    shared = base / "shared.txt"
    shared.write_text("shared\n")
    shared.chmod(0o644)
    outside = base / "outside"
    outside.mkdir(mode=0o777)
    outside.chmod(0o777)
    try:
        yield Sandbox(base, folder, scratch, shared, outside)
    finally:
        shutil.rmtree(base)


def layer_missing(name: str) -> str | None:
    """Why ``name`` is missing on this machine, or None when it is available."""
    return next(layer.missing for layer in probe().layers() if layer.name == name)


def only(*names: str) -> Capabilities:
    """This machine's capabilities with every layer but ``names`` (and no_new_privs) turned off.

    Skips the test when one of ``names`` is missing here.
    """
    for name in names:
        missing = layer_missing(name)
        if missing is not None:
            pytest.skip(f"no {name} layer here: {missing}")
    found = probe()
    return attrs.evolve(
        found,
        memory_cgroup=found.memory_cgroup if MEMORY_CGROUP in names else None,
        network_namespace=found.network_namespace and NETWORK_NAMESPACE in names,
        ipc_namespace=found.ipc_namespace and IPC_NAMESPACE in names,
        rlimits=found.rlimits and RLIMITS in names,
        mount_namespace=found.mount_namespace and SCRATCH_TMPFS in names,
        unprivileged=found.unprivileged if UNPRIVILEGED_USER in names else None,
        worker_uids=found.worker_uids if UNPRIVILEGED_USER in names else None,
        landlock_abi=found.landlock_abi if LANDLOCK in names else None,
        seccomp=found.seccomp and SECCOMP in names,
    )


def address_space() -> int:
    """This process's address space, in bytes (a forked child starts with the same)."""
    pages = int(Path("/proc/self/statm").read_text().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def roomy_limits(**changes: Any) -> Limits:
    """The default limits, with room for the address space pytest already uses; no scratch tmpfs
    (the tests look into the scratch folder from outside) unless ``changes`` ask for one."""
    return attrs.evolve(Limits(memory=address_space() + 512 * MiB, scratch=None), **changes)


def attempt(action: Callable[[], object]) -> Outcome:
    """Run ``action``: ``{"ok": repr(result)}`` or the exception's type, errno and message."""
    try:
        result = action()
    except Exception as error:  # noqa: BLE001 - every refusal is an outcome to report
        return {
            "error": type(error).__name__,
            "errno": getattr(error, "errno", None),
            "message": str(error),
        }
    return {"ok": repr(result)}


def run_confined(
    sandbox: Sandbox,
    capabilities: Capabilities,
    body: Body,
    *,
    limits: Limits | None = None,
    readable: tuple[Path, ...] = (),
    hidden: tuple[Path, ...] = (),
    audit: bool = False,
    folder: Path | None = None,
    before: Callable[[], object] | None = None,
) -> Outcome:
    """Fork, confine the child, run ``body`` there; what it reported (fails if it crashed)."""
    outcome, status = fork_confined(
        sandbox,
        capabilities,
        body,
        limits=limits,
        readable=readable,
        hidden=hidden,
        audit=audit,
        folder=folder,
        before=before,
    )
    if outcome is None:
        pytest.fail(f"the confined child reported nothing (wait status {status})")
    assert "crash" not in outcome, outcome["crash"]
    return outcome


def fork_confined(
    sandbox: Sandbox,
    capabilities: Capabilities,
    body: Body,
    *,
    limits: Limits | None = None,
    readable: tuple[Path, ...] = (),
    hidden: tuple[Path, ...] = (),
    audit: bool = False,
    folder: Path | None = None,
    before: Callable[[], object] | None = None,
) -> tuple[Outcome | None, int]:
    """Fork, confine the child, run ``body`` there: what it reported (if anything), its status."""
    parent_end, child_end = socket.socketpair()
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a threaded process: the child only runs ``body``.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is never written
        report: Outcome
        try:
            parent_end.close()
            os.setsid()
            if before is not None:
                before()
            try:
                applied = confine(
                    folder=folder or sandbox.folder,
                    scratch=sandbox.scratch,
                    readable=readable,
                    limits=limits or roomy_limits(),
                    capabilities=capabilities,
                    hidden=hidden,
                )
            except ConfinementError as error:
                report = {"refused": {"layer": error.layer, "errno": error.errno}}
                report["message"] = str(error)
            else:
                if audit:
                    install_audit_hook(
                        folder=folder or sandbox.folder,
                        scratch=sandbox.scratch,
                        readable=readable,
                        hidden=hidden,
                    )
                report = {"applied": list(applied), **body()}
            child_end.sendall(json.dumps(report).encode())
        except BaseException as error:  # noqa: BLE001 - the child must reach os._exit
            with_crash = {"crash": f"{type(error).__name__}: {error}"}
            try:
                child_end.sendall(json.dumps(with_crash).encode())
            finally:
                os._exit(1)
        os._exit(0)
    child_end.close()
    chunks: list[bytes] = []
    try:
        with parent_end:
            while select.select([parent_end], [], [], CHILD_TIMEOUT)[0]:
                chunk = parent_end.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            else:
                os.kill(pid, signal.SIGKILL)
    finally:
        _, status = os.waitpid(pid, 0)
        release_worker(pid, capabilities)  # as the zygote does once it reaped a worker
    return (json.loads(b"".join(chunks)) if chunks else None), status


def refused(outcome: Outcome, code: int) -> bool:
    return outcome.get("errno") == code


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port listening on 127.0.0.1 in the tests' own network namespace."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def connect(port: int) -> Callable[[], object]:
    def action() -> object:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return "connected"

    return action


def guarded_fork() -> object:
    """os.fork(), whose child (should there be one) exits at once."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - only if the sandbox failed
        os._exit(0)
    return pid


def start_threads(count: int) -> list[int]:
    """Start ``count`` threads that each add their number; the numbers, sorted."""
    results: list[int] = []
    lock = threading.Lock()

    def work(number: int) -> None:
        with lock:
            results.append(number)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(results)


# -- probe, records ------------------------------------------------------------------------------


def test_probe_describes_every_layer_in_order() -> None:
    """Each layer is either available or missing with a reason, in confine()'s order."""
    found = probe()
    assert found is probe()
    layers = found.layers()
    assert tuple(layer.name for layer in layers) == LAYER_NAMES
    for layer in layers:
        assert layer.stops
        assert (layer.missing is None) == layer.available, layer
    assert found.level in {"strong", "partial", "minimal"}
    assert found.report.startswith(f"{found.level}: ")
    assert found.system == "Linux"
    assert found.root == (os.geteuid() == 0)
    assert (found.unprivileged is not None) == found.root


def test_level_counts_the_layers_that_apply() -> None:
    """strong: all that apply (dropping the user applies to root only); partial: Landlock or
    seccomp; minimal: neither."""
    everything = Capabilities(
        system="Linux",
        root=False,
        unprivileged=None,
        user_namespaces=True,
        network_namespace=True,
        landlock_abi=6,
        seccomp=True,
        rlimits=True,
        ipc_namespace=True,
        mount_namespace=True,
        memory_cgroup="/sys/fs/cgroup/services-ai-plugins",
        cgroup_version=2,
    )
    assert everything.level == "strong"
    assert everything.report == "strong: every sandbox layer is available"
    as_root = attrs.evolve(everything, root=True)
    assert as_root.level == "partial"
    assert "unprivileged_user (no unprivileged user to switch to)" in as_root.report
    assert attrs.evolve(as_root, worker_uids=DEFAULT_WORKER_UIDS).level == "strong"
    no_cgroup = attrs.evolve(everything, memory_cgroup=None, reasons={MEMORY_CGROUP: "no v2"})
    assert no_cgroup.report == "partial: missing memory_cgroup (no v2)"
    no_seccomp = attrs.evolve(everything, seccomp=False, reasons={SECCOMP: "no libseccomp"})
    assert no_seccomp.level == "partial"
    assert no_seccomp.report == "partial: missing seccomp (no libseccomp)"
    neither = attrs.evolve(no_seccomp, landlock_abi=None)
    assert neither.level == "minimal"
    elsewhere = Capabilities(
        system="Darwin",
        root=False,
        unprivileged=None,
        user_namespaces=False,
        network_namespace=False,
        landlock_abi=None,
        seccomp=False,
        rlimits=True,
    )
    missing = {layer.name: layer.missing for layer in elsewhere.layers() if not layer.available}
    assert missing[NO_NEW_PRIVS] == "needs Linux (this is Darwin)"
    assert elsewhere.level == "minimal"


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "64"])
def test_limits_must_be_positive_integers(bad: object) -> None:
    """Each limit is a positive integer or None."""
    with pytest.raises(ValueError, match="open_files must be a positive integer or None"):
        Limits(open_files=bad)  # type: ignore[arg-type] # the wrong type is the point
    assert Limits(memory=None, cpu=None, file_size=None, open_files=None).memory is None


def test_confinement_error_is_a_plugin_error() -> None:
    """The error names the layer and the errno."""
    error = ConfinementError(LANDLOCK, errno.ENOENT, "cannot open /nowhere")
    assert isinstance(error, PluginError)
    assert (error.layer, error.errno) == (LANDLOCK, errno.ENOENT)
    assert str(error) == "cannot apply the landlock sandbox layer: cannot open /nowhere [ENOENT]"


# -- rlimits -------------------------------------------------------------------------------------


def test_memory_limit_turns_a_big_allocation_into_memory_error(sandbox: Sandbox) -> None:
    """RLIMIT_AS: beyond the limit an allocation fails, below it it works."""
    limits = Limits(memory=address_space() + 128 * MiB)

    def body() -> dict[str, Any]:
        return {
            "small": attempt(lambda: len(bytearray(16 * MiB))),
            "big": attempt(lambda: len(bytearray(512 * MiB))),
        }

    outcome = run_confined(sandbox, only(RLIMITS), body, limits=limits)
    assert outcome["applied"] == [RLIMITS, NO_NEW_PRIVS]
    assert outcome["small"] == {"ok": repr(16 * MiB)}
    assert outcome["big"]["error"] == "MemoryError"


def test_file_size_limit_stops_a_write_past_it(sandbox: Sandbox) -> None:
    """RLIMIT_FSIZE: writing past the limit fails with EFBIG; the file stops at the limit."""
    big = sandbox.scratch / "big.bin"

    def body() -> dict[str, Any]:
        return {"write": attempt(lambda: big.write_bytes(b"x" * 8192))}

    outcome = run_confined(sandbox, only(RLIMITS), body, limits=roomy_limits(file_size=4096))
    assert refused(outcome["write"], errno.EFBIG), outcome
    assert big.stat().st_size == 4096


def test_open_files_limit_caps_descriptors(sandbox: Sandbox) -> None:
    """RLIMIT_NOFILE: new descriptors stay below the limit, then EMFILE."""

    def body() -> dict[str, Any]:
        opened: list[int] = []
        try:
            while len(opened) < 100:
                opened.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as error:
            return {"errno": error.errno, "highest": max(opened, default=-1)}
        return {"errno": None, "highest": max(opened)}

    outcome = run_confined(sandbox, only(RLIMITS), body, limits=roomy_limits(open_files=32))
    assert outcome["errno"] == errno.EMFILE
    assert outcome["highest"] < 32


def test_cpu_and_core_limits(sandbox: Sandbox) -> None:
    """RLIMIT_CPU gets a second of grace between SIGXCPU and SIGKILL; no core dumps."""

    def body() -> dict[str, Any]:
        return {
            "cpu": resource.getrlimit(resource.RLIMIT_CPU),
            "core": resource.getrlimit(resource.RLIMIT_CORE),
        }

    outcome = run_confined(sandbox, only(RLIMITS), body, limits=roomy_limits(cpu=20))
    assert outcome["cpu"] == [20, 21]
    assert outcome["core"] == [0, 0]


# -- unprivileged user ---------------------------------------------------------------------------


def test_root_drops_to_the_unprivileged_user(sandbox: Sandbox) -> None:
    """As root: the worker runs as a user of its own (from its pid), without groups, for good;
    scratch is that user's; the limits set before cannot be raised again; at most 64 tasks."""
    capabilities = only(RLIMITS, UNPRIVILEGED_USER)
    assert capabilities.unprivileged is not None

    def body() -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()],
            "groups": os.getgroups(),
            "back to root": attempt(lambda: os.setuid(0)),
            "shadow": attempt(lambda: Path("/etc/shadow").read_bytes()),
            "raise": attempt(lambda: resource.setrlimit(resource.RLIMIT_CPU, (30, 31))),
            "nproc": resource.getrlimit(resource.RLIMIT_NPROC),
        }

    outcome = run_confined(sandbox, capabilities, body, limits=roomy_limits(cpu=20))
    ids = capabilities.worker_ids(outcome["pid"])
    assert ids is not None
    uid, gid = ids
    assert outcome["applied"] == [RLIMITS, UNPRIVILEGED_USER, NO_NEW_PRIVS]
    assert outcome["ids"] == [uid, uid, gid, gid]
    assert outcome["groups"] == []
    assert refused(outcome["back to root"], errno.EPERM)
    assert refused(outcome["shadow"], errno.EACCES)
    assert outcome["raise"]["error"] == "ValueError"
    assert (sandbox.scratch.stat().st_uid, sandbox.scratch.stat().st_gid) == (uid, gid)
    if capabilities.worker_uids is not None:
        first, count = capabilities.worker_uids
        assert uid == first + outcome["pid"] < first + count
        assert outcome["nproc"] == [64, 64]  # its user's processes are its own alone
    else:
        assert uid == capabilities.unprivileged[0]


def test_a_private_folder_above_what_the_worker_needs_is_covered_not_opened(
    sandbox: Sandbox,
) -> None:
    """As root, with the plugin under a folder only root may enter (as Python under /root is):
    the worker sees, in a mount namespace of its own, only what it needs of that folder, and
    still becomes nobody; the host's view does not change."""
    capabilities = only(UNPRIVILEGED_USER, SCRATCH_TMPFS)
    private = sandbox.base / "private"
    private.mkdir(mode=0o700)
    plugin = private / "deep" / "plugin"
    plugin.mkdir(parents=True)
    plugin.chmod(0o755)
    (private / "deep").chmod(0o755)
    (plugin / "main.py").write_text("VALUE = 7\n")
    (plugin / "main.py").chmod(0o644)
    (private / "secret.txt").write_text("root only, but readable by its mode\n")
    (private / "secret.txt").chmod(0o644)

    def body() -> dict[str, Any]:
        return {
            "uid": os.getuid(),
            "pid": os.getpid(),
            "plugin": attempt((plugin / "main.py").read_text),
            "secret": attempt((private / "secret.txt").read_text),
            "listing": attempt(lambda: sorted(p.name for p in private.iterdir())),
        }

    outcome = run_confined(sandbox, capabilities, body, folder=plugin)
    assert outcome["applied"] == [PRIVATE_MOUNTS, UNPRIVILEGED_USER, NO_NEW_PRIVS]
    assert (outcome["uid"], outcome["uid"]) == capabilities.worker_ids(outcome["pid"])
    assert outcome["plugin"] == {"ok": repr("VALUE = 7\n")}
    assert refused(outcome["secret"], errno.ENOENT)  # hidden, not just refused
    assert outcome["listing"] == {"ok": repr(["deep"])}
    assert sorted(p.name for p in private.iterdir()) == ["deep", "secret.txt"]  # host: all


def test_a_file_the_user_may_not_read_keeps_the_worker_root_without_capabilities(
    sandbox: Sandbox,
) -> None:
    """A needed file of mode 0600 cannot be shown to nobody: uid 0 stays, every capability goes."""
    capabilities = only(UNPRIVILEGED_USER)
    assert capabilities.unprivileged is not None
    closed = sandbox.base / "closed.txt"
    closed.write_text("x\n")
    closed.chmod(0o600)
    other = sandbox.base / "others.txt"
    other.write_text("y\n")
    os.chown(other, 1, 1)  # someone else's file, its mode 0600
    other.chmod(0o600)

    def body() -> dict[str, Any]:
        return {
            "uid": os.getuid(),
            "others": attempt(other.read_text),
            "chown": attempt(lambda: os.chown(closed, 1, 1)),
        }

    outcome = run_confined(sandbox, capabilities, body, readable=(closed,))
    assert outcome["applied"] == [NO_CAPABILITIES, NO_NEW_PRIVS]
    assert outcome["uid"] == 0
    assert refused(outcome["others"], errno.EACCES)  # no CAP_DAC_OVERRIDE any more
    assert refused(outcome["chown"], errno.EPERM)  # no CAP_CHOWN


# -- network -------------------------------------------------------------------------------------


def test_network_namespace_cuts_off_the_host_loopback(sandbox: Sandbox, listener: int) -> None:
    """A port listening on the host's 127.0.0.1 is unreachable; without the layer it is not."""

    def body() -> dict[str, Any]:
        return {"connect": attempt(connect(listener))}

    control = run_confined(sandbox, only(), body)
    assert control["connect"] == {"ok": "'connected'"}
    outcome = run_confined(sandbox, only(NETWORK_NAMESPACE), body)
    assert outcome["applied"] == [NETWORK_NAMESPACE, NO_NEW_PRIVS]
    # The new namespace's only interface, its loopback, is down.
    assert refused(outcome["connect"], errno.ENETUNREACH), outcome


def test_landlock_refuses_tcp_connections(sandbox: Sandbox, listener: int) -> None:
    """Landlock ABI 4+: connecting (or binding) a TCP socket is refused with EACCES."""
    capabilities = only(LANDLOCK)
    if (capabilities.landlock_abi or 0) < 4:
        pytest.skip(f"Landlock ABI {capabilities.landlock_abi} has no network rules (ABI 4+)")

    def body() -> dict[str, Any]:
        with socket.socket() as server:
            bind = attempt(lambda: server.bind(("127.0.0.1", 0)))
        return {"connect": attempt(connect(listener)), "bind": bind}

    outcome = run_confined(sandbox, capabilities, body)
    assert refused(outcome["connect"], errno.EACCES), outcome
    assert refused(outcome["bind"], errno.EACCES), outcome


def test_seccomp_refuses_new_sockets_but_not_pairs(sandbox: Sandbox) -> None:
    """socket() of every domain fails with EPERM (AF_UNIX too); socketpair() works."""

    def body() -> dict[str, Any]:
        def unix_pair() -> object:
            left, right = socket.socketpair()
            with left, right:
                left.sendall(b"ping")
                return right.recv(4)

        return {
            "inet": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)),
            "udp": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)),
            "inet6": attempt(lambda: socket.socket(socket.AF_INET6)),
            "netlink": attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)),
            "unix": attempt(lambda: socket.socket(socket.AF_UNIX).close()),
            "pair": attempt(unix_pair),
        }

    outcome = run_confined(sandbox, only(SECCOMP), body)
    assert outcome["applied"] == [NO_NEW_PRIVS, SECCOMP]
    for name in ("inet", "udp", "inet6", "netlink", "unix"):
        assert refused(outcome[name], errno.EPERM), (name, outcome[name])
    assert outcome["pair"] == {"ok": repr(b"ping")}


# -- processes and threads -----------------------------------------------------------------------


def test_seccomp_refuses_new_processes_but_not_threads(sandbox: Sandbox) -> None:
    """fork, subprocess, exec and posix_spawn fail with EPERM; threads still run."""

    def body() -> dict[str, Any]:
        return {
            "fork": attempt(guarded_fork),
            "subprocess": attempt(lambda: subprocess.run(["true"], check=False)),
            "exec": attempt(lambda: os.execv("/bin/true", ["true"])),  # noqa: S606 - to be refused
            "spawn": attempt(lambda: os.posix_spawn("/bin/true", ["true"], {})),
            "threads": attempt(lambda: start_threads(4)),
        }

    outcome = run_confined(sandbox, only(SECCOMP), body)
    for name in ("fork", "subprocess", "exec", "spawn"):
        assert refused(outcome[name], errno.EPERM), (name, outcome[name])
    assert outcome["threads"] == {"ok": "[0, 1, 2, 3]"}


def test_seccomp_refuses_signals_to_other_processes(sandbox: Sandbox) -> None:
    """kill() of another process fails with EPERM; the worker may still signal itself."""

    def body() -> dict[str, Any]:
        return {
            "parent": attempt(lambda: os.kill(os.getppid(), 0)),
            "itself": attempt(lambda: os.kill(os.getpid(), 0)),
        }

    outcome = run_confined(sandbox, only(SECCOMP), body)
    assert refused(outcome["parent"], errno.EPERM), outcome
    assert outcome["itself"] == {"ok": "None"}


def x86_32_getpid() -> object:
    """getpid() through x86-64's 32-bit system-call gate (``int 0x80``), in a new thread."""
    code = bytes([0xB8, 0x14, 0, 0, 0, 0xCD, 0x80, 0xC3])  # mov eax, 20; int 0x80; ret
    memory = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    memory.write(code)
    function = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(memory)))
    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(function()))
    thread.start()
    thread.join()
    return results


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64's 32-bit system calls")
def test_seccomp_ends_a_worker_making_32_bit_system_calls(sandbox: Sandbox) -> None:
    """A system call of another architecture, which the filter cannot judge, ends the whole
    worker (SIGSYS), even from a thread."""
    control, _ = fork_confined(sandbox, only(), lambda: {"pid": attempt(x86_32_getpid)})
    if control is None or "ok" not in control["pid"]:
        pytest.skip(f"no 32-bit system calls on this kernel: {control}")
    outcome, status = fork_confined(sandbox, only(SECCOMP), lambda: {"pid": attempt(x86_32_getpid)})
    assert outcome is None, outcome
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGSYS


# -- Landlock ------------------------------------------------------------------------------------


def test_landlock_allows_only_the_plugins_paths(sandbox: Sandbox) -> None:
    """Reads in the folder and readable paths, writes in scratch and /dev/null; nothing else.

    The worker stays root here: every refusal is Landlock's, not the file permissions'.
    """
    missing = sandbox.base / "missing"

    def body() -> dict[str, Any]:
        def rename_in_scratch() -> object:
            (sandbox.scratch / "a").write_text("a")
            (sandbox.scratch / "sub").mkdir()
            return (sandbox.scratch / "a").rename(sandbox.scratch / "sub" / "b")

        return {
            "passwd": attempt(lambda: Path("/etc/passwd").read_text()),
            "plugin": attempt((sandbox.folder / "main.py").read_text),
            "listing": attempt(lambda: sorted(p.name for p in sandbox.folder.iterdir())),
            "shared": attempt(sandbox.shared.read_text),
            "write plugin": attempt(lambda: (sandbox.folder / "new.py").write_text("")),
            "write outside": attempt(lambda: (sandbox.outside / "x").write_text("")),
            "write scratch": attempt(lambda: (sandbox.scratch / "x").write_text("x")),
            "rename scratch": attempt(rename_in_scratch),
            "devnull": attempt(lambda: Path(os.devnull).write_text("x")),
            "proc": attempt(lambda: Path("/proc/self/status").read_text()),
        }

    outcome = run_confined(
        sandbox, only(LANDLOCK), body, readable=(sandbox.shared, missing, Path("/nowhere"))
    )
    assert outcome["applied"] == [NO_NEW_PRIVS, LANDLOCK]
    for name in ("passwd", "write plugin", "write outside", "proc"):
        assert refused(outcome[name], errno.EACCES), (name, outcome[name])
    assert outcome["plugin"] == {"ok": repr("VALUE = 42\n")}
    assert outcome["listing"] == {"ok": repr(["main.py"])}
    assert outcome["shared"] == {"ok": repr("shared\n")}
    assert outcome["write scratch"] == {"ok": "1"}
    if (probe().landlock_abi or 0) >= 2:  # ABI 1 refuses every rename between folders
        assert "error" not in outcome["rename scratch"], outcome["rename scratch"]
        assert (sandbox.scratch / "sub" / "b").read_text() == "a"
    assert outcome["devnull"] == {"ok": "1"}
    assert not (sandbox.folder / "new.py").exists()


def test_landlock_scopes_signals_to_the_sandbox(sandbox: Sandbox) -> None:
    """Landlock ABI 6+: a root worker still cannot signal its parent; it can signal itself."""
    capabilities = only(LANDLOCK)
    if (capabilities.landlock_abi or 0) < 6:
        pytest.skip(f"Landlock ABI {capabilities.landlock_abi} has no signal scope (ABI 6+)")

    def body() -> dict[str, Any]:
        return {
            "parent": attempt(lambda: os.kill(os.getppid(), 0)),
            "itself": attempt(lambda: os.kill(os.getpid(), 0)),
        }

    outcome = run_confined(sandbox, capabilities, body)
    assert refused(outcome["parent"], errno.EPERM), outcome
    assert outcome["itself"] == {"ok": "None"}


# -- a user per worker ---------------------------------------------------------------------------


def test_workers_have_users_of_their_own_that_cannot_reach_each_other(sandbox: Sandbox) -> None:
    """As root, two workers get two users: without seccomp, the kernel itself refuses one
    worker's prlimit, setpriority and sched_setaffinity on the other, whose limits stay."""
    capabilities = only(RLIMITS, UNPRIVILEGED_USER)
    if capabilities.worker_uids is None:
        pytest.skip(f"workers share one user here: {capabilities.uid_scheme}")
    reader, writer = os.pipe()

    def victim() -> dict[str, Any]:
        os.read(reader, 1)  # until the attacker is done
        return {
            "uid": os.getuid(),
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
            "nice": os.getpriority(os.PRIO_PROCESS, 0),
            "cpus": sorted(os.sched_getaffinity(0)),
        }

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            fork_confined,
            sandbox,
            capabilities,
            victim,
            limits=roomy_limits(open_files=32),
            before=lambda: os.close(writer),
        )
        target = wait_for_confined_child(capabilities)

        def attacker() -> dict[str, Any]:
            return {
                "uid": os.getuid(),
                "prlimit": attempt(
                    lambda: resource.prlimit(target, resource.RLIMIT_NOFILE, (3, 3))
                ),
                "read limits": attempt(lambda: resource.prlimit(target, resource.RLIMIT_NOFILE)),
                "nice": attempt(lambda: os.setpriority(os.PRIO_PROCESS, target, 19)),
                "affinity": attempt(lambda: os.sched_setaffinity(target, {0})),
                "signal": attempt(lambda: os.kill(target, signal.SIGSTOP)),
            }

        attack = run_confined(sandbox, capabilities, attacker, limits=roomy_limits())
        os.write(writer, b"x")
        outcome, _ = waiting.result(timeout=CHILD_TIMEOUT * 2)
    os.close(writer)
    os.close(reader)
    assert outcome is not None
    assert attack["uid"] != outcome["uid"]
    for name in ("prlimit", "read limits", "nice", "affinity", "signal"):
        assert refused(attack[name], errno.EPERM), (name, attack[name])
    assert outcome["nofile"] == [32, 32]
    assert outcome["nice"] == 0
    assert outcome["cpus"] == sorted(os.sched_getaffinity(0))


def wait_for_confined_child(capabilities: Capabilities) -> int:
    """The pid of the one confined child running as a worker's user (waits until it is)."""
    assert capabilities.worker_uids is not None
    first, count = capabilities.worker_uids
    deadline = time.monotonic() + CHILD_TIMEOUT
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    # Our own child only: other test processes (pytest-xdist) have workers too.
                    ppid = (entry / "stat").read_text().rpartition(")")[2].split()[1]
                    if first <= entry.stat().st_uid < first + count and int(ppid) == os.getpid():
                        return int(entry.name)
        time.sleep(0.01)
    pytest.fail("the confined child never became a worker's user")


def test_capabilities_cross_the_wire_and_name_each_workers_user() -> None:
    """Capabilities survive JSON (lists become tuples again); worker_ids() follows the pid."""
    found = probe()
    assert Capabilities(**json.loads(json.dumps(attrs.asdict(found)))) == found
    as_root = attrs.evolve(found, root=True, unprivileged=(65534, 65534))
    with_range = attrs.evolve(as_root, worker_uids=[100000, 65536])
    assert with_range.worker_uids == (100000, 65536)
    assert with_range.worker_ids(1234) == (101234, 101234)
    assert "root's subordinate range in /etc/subuid" in with_range.uid_scheme
    shared = attrs.evolve(as_root, worker_uids=None, reasons={"worker_uids": "overlap"})
    assert shared.worker_ids(1234) == (65534, 65534)
    assert shared.uid_scheme == "every worker uid 65534: overlap"
    assert attrs.evolve(found, root=False).worker_ids(1234) is None
    default = attrs.evolve(as_root, worker_uids=DEFAULT_WORKER_UIDS)
    assert "a range no distribution hands out" in default.uid_scheme


def test_the_worker_uid_range_comes_from_subuid_or_a_free_block(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Root's subordinate range when it holds a uid per pid; else the default block, unless
    another user's range overlaps it (then workers share nobody, and the reason says so)."""
    subuid = tmp_path / "subuid"
    subuid.write_text("# comment\nalice:100000:65536\nroot:200000:5000000\n")
    assert _mounts._subordinate_ranges(subuid)[1] == ("root", 200000, 5000000)
    ranges: list[tuple[str, int, int]] = []
    monkeypatch.setattr(_mounts, "_subordinate_ranges", lambda path: ranges)
    monkeypatch.setattr(_mounts, "_pid_max", lambda: 4194304)
    ranges[:] = [("root", 200000, 5000000)]
    assert _mounts.worker_uid_range() == ((200000, 5000000), None)
    ranges[:] = [("root", 200000, 65536)]  # too short: the default block
    assert _mounts.worker_uid_range() == (DEFAULT_WORKER_UIDS, None)
    ranges[:] = [("lxd", DEFAULT_WORKER_UIDS[0] + 10, 100)]
    found, why = _mounts.worker_uid_range()
    assert found is None
    assert why is not None
    assert "overlap lxd's subordinate range" in why


def test_worker_uids_must_exist_in_the_hosts_user_namespace() -> None:
    """In a user namespace that maps only 65536 ids (a container's), the default range is
    refused with the reason; where every id is mapped, it is taken."""
    if not probe().root:
        pytest.skip("maps ids of a new user namespace from outside: needs root")
    first, count = DEFAULT_WORKER_UIDS
    assert _mounts._mapped(first, count, 32768) == ((first, count), None)
    ready_read, ready = os.pipe()
    done, done_write = os.pipe()
    report_read, report = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reports through the pipe
        return_code = 2
        try:
            try:
                _syscalls.unshare_or_raise(0x10000000, "unshare(CLONE_NEWUSER)")
            except OSError as exc:  # told to the parent, which would otherwise wait for ever
                os.write(report, json.dumps({"refused": str(exc)}).encode())
                return_code = 1
            else:
                os.write(ready, b"x")
                os.read(done, 1)
                os.write(report, json.dumps(_mounts._mapped(first, count, 32768)).encode())
                return_code = 0
        finally:
            os._exit(return_code)
    # The child's ends closed here: a child that died early is an end of file, not a hang.
    os.close(ready)
    os.close(report)
    if not os.read(ready_read, 1):
        with os.fdopen(report_read) as stream:
            said = stream.read()
        os.waitpid(pid, 0)
        for fd in (ready_read, done, done_write):
            os.close(fd)
        refused = json.loads(said).get("refused") if said else None
        if refused is None:
            pytest.fail(f"the child in a new user namespace died before it was ready ({said!r})")
        # The kernel's own limit, met while the suite's sandboxes hold namespaces of their own.
        pytest.skip(f"no new user namespace now: {refused}")
    for kind in ("uid", "gid"):
        Path(f"/proc/{pid}/{kind}_map").write_text("0 100000 65536")
    os.write(done_write, b"x")
    with os.fdopen(report_read) as stream:
        found, why = json.loads(stream.read())
    os.waitpid(pid, 0)
    for fd in (ready_read, done, done_write):
        os.close(fd)
    assert found is None
    assert f"does not map the uids {first}-{first + 32767}" in why


# -- memory, IPC, scratch --------------------------------------------------------------------


def fill_memfds(total: int) -> object:
    """Write ``total`` bytes into memfd files, 4 MiB each, kept open: memory no mapping holds."""
    chunk = b"x" * (4 * MiB)
    kept = []
    for _ in range(total // len(chunk)):
        fd = os.memfd_create("hoard")
        os.write(fd, chunk)
        kept.append(fd)
    return len(kept)


def test_memory_cgroup_bounds_memory_the_address_space_limit_does_not_count(
    sandbox: Sandbox,
) -> None:
    """memfd files filled by write() take no address space: only the worker's memory control
    group stops them (the kernel ends the worker); its group goes once it is reaped."""
    capabilities = only(MEMORY_CGROUP)
    assert capabilities.memory_cgroup is not None
    limits = Limits(memory=48 * MiB, cpu=None, file_size=None, open_files=None, scratch=None)
    control = run_confined(
        sandbox, only(), lambda: {"filled": attempt(lambda: fill_memfds(96 * MiB))}
    )
    assert control["filled"] == {"ok": "24"}

    def body() -> dict[str, Any]:
        membership = Path("/proc/self/cgroup").read_text()
        os.write(reporter, json.dumps({"cgroup": membership}).encode())
        return {"filled": attempt(lambda: fill_memfds(96 * MiB))}

    reporter_read, reporter = os.pipe()
    outcome, status = fork_confined(sandbox, capabilities, body, limits=limits)
    os.close(reporter)
    with os.fdopen(reporter_read) as stream:
        seen = json.loads(stream.read())
    assert outcome is None, outcome  # it never got to report
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGKILL  # the out-of-memory killer
    groups = set(re.findall(rf"/{_confine.CGROUP_FOLDER}/(worker-[0-9]+)", seen["cgroup"]))
    assert groups  # it ran in a worker's group, gone once it is reaped
    assert not [g for g in groups if (Path(capabilities.memory_cgroup) / g).exists()]


def sysv_ipc() -> dict[str, Any]:
    """Try each kind of System V IPC object through the C library (IPC_PRIVATE, 0600)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def call(name: str, *args: int) -> object:
        result = getattr(libc, name)(*args)
        if result < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return result

    create = 0o1000 | 0o600
    return {
        "shm": attempt(lambda: call("shmget", 0, 4096, create)),
        "msg": attempt(lambda: call("msgget", 0, create)),
        "sem": attempt(lambda: call("semget", 0, 1, create)),
    }


def test_ipc_namespace_keeps_system_v_objects_apart(sandbox: Sandbox) -> None:
    """A worker does not see the host's segment under a fixed key, and what it creates is
    gone with it."""
    key = 0x5A17_0000 + os.getpid() % 0xFFFF
    libc = ctypes.CDLL(None, use_errno=True)
    ours = libc.shmget(key, 4096, 0o1000 | 0o600)
    assert ours >= 0, os.strerror(ctypes.get_errno())
    try:

        def body() -> dict[str, Any]:
            own = ctypes.CDLL(None, use_errno=True)
            seen = own.shmget(key, 0, 0)
            made = own.shmget(key + 1, 1 * MiB, 0o1000 | 0o600)
            return {"seen": [seen, ctypes.get_errno()], "made": made, **sysv_ipc()}

        outcome = run_confined(sandbox, only(IPC_NAMESPACE), body)
    finally:
        libc.shmctl(ours, 0, None)  # IPC_RMID
    assert outcome["applied"] == [IPC_NAMESPACE, NO_NEW_PRIVS]
    assert outcome["seen"] == [-1, errno.ENOENT]
    assert outcome["made"] >= 0
    assert "ok" in outcome["shm"]  # allowed in its own namespace (seccomp refuses it anyway)
    keys = [line.split()[0] for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]]
    assert str(key + 1) not in keys


def test_seccomp_refuses_system_v_ipc_and_calls_on_other_processes(sandbox: Sandbox) -> None:
    """System V IPC, and prlimit, setpriority, sched_setaffinity, kcmp and pidfd_open on
    another process fail with EPERM; on the worker itself, by pid 0, they work."""
    parent = os.getpid()
    cpus = os.sched_getaffinity(0)
    kcmp = {"x86_64": 312, "aarch64": 272}.get(platform.machine())

    def body() -> dict[str, Any]:
        libc = ctypes.CDLL(None, use_errno=True)

        def raw_kcmp() -> object:
            if kcmp is None or libc.syscall(kcmp, parent, os.getpid(), 0, 0, 0) >= 0:
                return "allowed"
            raise OSError(ctypes.get_errno(), "kcmp")

        return {
            **sysv_ipc(),
            "prlimit parent": attempt(lambda: resource.prlimit(parent, resource.RLIMIT_NOFILE)),
            "prlimit itself": attempt(lambda: resource.prlimit(0, resource.RLIMIT_NOFILE)),
            "setrlimit": attempt(lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0))),
            "nice parent": attempt(lambda: os.setpriority(os.PRIO_PROCESS, parent, 19)),
            "nice user": attempt(lambda: os.setpriority(os.PRIO_USER, 0, 19)),
            "nice itself": attempt(lambda: os.setpriority(os.PRIO_PROCESS, 0, 1)),
            "nice()": attempt(lambda: os.nice(1)),
            "affinity parent": attempt(lambda: os.sched_setaffinity(parent, cpus)),
            "affinity itself": attempt(lambda: os.sched_setaffinity(0, cpus)),
            "get affinity": attempt(lambda: len(os.sched_getaffinity(0))),
            "kcmp": attempt(raw_kcmp),
            "pidfd": attempt(lambda: os.pidfd_open(parent)),
        }

    outcome = run_confined(sandbox, only(SECCOMP), body)
    refusals = ("shm", "msg", "sem", "prlimit parent", "nice parent", "nice user")
    refusals += ("affinity parent", "pidfd") + (("kcmp",) if kcmp else ())
    for name in refusals:
        assert refused(outcome[name], errno.EPERM), (name, outcome[name])
    for name in ("prlimit itself", "setrlimit", "nice itself", "nice()", "affinity itself"):
        assert "ok" in outcome[name], (name, outcome[name])
    assert outcome["get affinity"] == {"ok": str(len(cpus))}


def test_scratch_tmpfs_bounds_the_scratch_folder_and_keeps_it_private(sandbox: Sandbox) -> None:
    """Files under the file-size limit fill the scratch tmpfs, then ENOSPC; the host's folder
    stays empty and the tmpfs goes with the worker."""
    limits = roomy_limits(scratch=2 * MiB, file_size=MiB)

    def body() -> dict[str, Any]:
        relative = attempt(lambda: Path("relative").write_text("x"))
        written = []
        error = None
        for number in range(8):
            try:
                (sandbox.scratch / f"part-{number}").write_bytes(b"x" * (MiB // 2))
            except OSError as exc:
                error = exc.errno
                break
            written.append(number)
        info = os.statvfs(sandbox.scratch)
        return {
            "relative": relative,
            "written": len(written),
            "errno": error,
            "size": info.f_blocks * info.f_frsize,
            "inodes": info.f_files,
            "owner": sandbox.scratch.stat().st_uid,
        }

    outcome = run_confined(
        sandbox,
        only(SCRATCH_TMPFS),
        body,
        limits=limits,
        before=lambda: os.chdir(sandbox.scratch),  # as an entry-point plugin's worker does
    )
    assert outcome["applied"] == [SCRATCH_TMPFS, NO_NEW_PRIVS]
    assert outcome["relative"] == {"ok": "1"}  # into the tmpfs, the working folder now
    assert outcome["errno"] == errno.ENOSPC
    assert outcome["written"] == 3  # 2 MiB: a small file and 1.5 MiB, then no more
    assert outcome["size"] == 2 * MiB
    assert outcome["inodes"] == 2 * MiB // 4096
    assert outcome["owner"] == os.getuid()
    assert list(sandbox.scratch.iterdir()) == []


# -- what a worker may read --------------------------------------------------------------------


@pytest.fixture
def editable_app(sandbox: Sandbox) -> Path:
    """An application folder as an editable install leaves it: its package beside its .env."""
    app = sandbox.base / "app"
    (app / "myapp").mkdir(parents=True)
    (app / "myapp" / "__init__.py").write_text("NAME = 'myapp'\n")
    (app / ".env").write_text("DATABASE_PASSWORD=hunter2\n")
    (app / "settings.py").write_text("SECRET_KEY = 'x'\n")
    for path in (app, app / "myapp"):
        path.chmod(0o755)
    for path in (app / "myapp" / "__init__.py", app / ".env", app / "settings.py"):
        path.chmod(0o644)
    return app


@pytest.mark.parametrize("how", ["mounts", "landlock"])
def test_hidden_folders_stay_unreadable_beneath_readable_ones(
    how: str, sandbox: Sandbox, editable_app: Path
) -> None:
    """A hidden folder beneath a readable one is unreadable, but for the readable paths beneath
    it: covered in a mount namespace of the worker's own, or else left out of Landlock's rules."""
    package = editable_app / "myapp"
    layers = (LANDLOCK, SCRATCH_TMPFS) if how == "mounts" else (LANDLOCK,)

    def body() -> dict[str, Any]:
        return {
            "env": attempt((editable_app / ".env").read_text),
            "settings": attempt((editable_app / "settings.py").read_text),
            "package": attempt((package / "__init__.py").read_text),
            "shared": attempt(sandbox.shared.read_text),
            "listing": attempt(lambda: sorted(p.name for p in sandbox.base.iterdir())),
        }

    outcome = run_confined(
        sandbox,
        only(*layers),
        body,
        readable=(sandbox.base, package),
        hidden=(editable_app,),
    )
    assert (PRIVATE_MOUNTS in outcome["applied"]) == (how == "mounts")
    for name in ("env", "settings"):
        assert "error" in outcome[name], (name, outcome[name])
    assert outcome["package"] == {"ok": repr("NAME = 'myapp'\n")}
    assert outcome["shared"] == {"ok": repr("shared\n")}
    if how == "mounts":  # the folder is there, empty
        assert outcome["listing"] == {"ok": repr(sorted(p.name for p in sandbox.base.iterdir()))}
    else:  # Landlock allows what the folder holds beside it, not the folder itself
        assert refused(outcome["listing"], errno.EACCES), outcome["listing"]
    assert (editable_app / ".env").read_text() == "DATABASE_PASSWORD=hunter2\n"  # host: as it was


def test_python_paths_name_packages_not_whole_sys_path_entries(
    monkeypatch: pytest.MonkeyPatch, editable_app: Path
) -> None:
    """The readable paths hold the standard library, the SDK's packages and the declared
    dependencies' packages with their metadata: never a sys.path entry whole."""
    monkeypatch.syspath_prepend(str(editable_app))
    readable = python_paths(["myapp"], ["myapp"])
    names = {str(path) for path in readable}
    assert str(editable_app / "myapp") in names
    assert str(editable_app) not in names
    assert not [entry for entry in sys.path if entry.endswith("site-packages") and entry in names]
    pluggy_folder = Path(pluggy.__file__).parent
    assert str(pluggy_folder) in names
    assert any(name.endswith(".dist-info") and "pluggy" in name for name in names)
    stdlib = str(Path(os.__file__).parent)
    assert stdlib in names
    hidden = {str(path) for path in hidden_paths([*readable, editable_app.parent])}
    assert str(editable_app) in hidden  # a sys.path entry beneath a readable folder
    stdlib_site = Path(stdlib, "site-packages")
    if stdlib_site.is_dir():
        assert str(stdlib_site) in hidden
    assert not hidden & names


# -- everything ----------------------------------------------------------------------------------


def test_full_confinement(sandbox: Sandbox, listener: int) -> None:
    """Every layer the machine offers, in order; the plugin's work still works, nothing else."""
    found = probe()
    expected = [layer.name for layer in found.layers() if layer.available]

    def body() -> dict[str, Any]:
        return {
            "threads": attempt(lambda: start_threads(8)),
            "plugin": attempt((sandbox.folder / "main.py").read_text),
            "scratch": attempt(lambda: (sandbox.scratch / "x").write_text("x")),
            "passwd": attempt(lambda: Path("/etc/passwd").read_text()),
            "connect": attempt(connect(listener)),
            "inet": attempt(lambda: socket.socket(socket.AF_INET)),
            "fork": attempt(guarded_fork),
            "parent": attempt(lambda: os.kill(os.getppid(), 0)),
        }

    outcome = run_confined(sandbox, found, body, limits=roomy_limits(scratch=16 * MiB))
    assert outcome["applied"] == expected
    assert outcome["threads"] == {"ok": repr(list(range(8)))}
    assert outcome["plugin"] == {"ok": repr("VALUE = 42\n")}
    assert outcome["scratch"] == {"ok": "1"}
    for name in ("passwd", "connect", "inet", "fork", "parent"):
        assert "error" in outcome[name], (name, outcome[name])


def test_a_worker_that_is_not_root(sandbox: Sandbox, listener: int) -> None:
    """Not root: a user namespace carries the network one; its capabilities are dropped, and
    RLIMIT_NPROC counts the worker's own threads alone."""
    found = probe()
    if found.unprivileged is None:
        pytest.skip("the tests run as an unprivileged user already: see the other tests")
    if not found.user_namespaces:
        pytest.skip(f"no user namespaces here: {found.reasons.get('user_namespaces')}")
    uid, gid = found.unprivileged
    capabilities = attrs.evolve(
        found,
        root=False,
        unprivileged=None,
        worker_uids=None,
        memory_cgroup=None,  # the probe, as root, found one; nobody may not make groups there
        network_namespace=True,
        landlock_abi=None,
        seccomp=False,
    )
    sandbox.scratch.chmod(0o755)  # the host's folder: the tmpfs covers it

    def become_unprivileged() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        # Changing user made the process undumpable (its /proc files root's); a zygote that a
        # host of that user starts is dumpable, as after any exec.
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)

    def many_threads() -> object:
        stop = threading.Event()
        started: list[threading.Thread] = []
        try:
            for _ in range(100):
                thread = threading.Thread(target=stop.wait)
                thread.start()
                started.append(thread)
        except RuntimeError:
            pass
        finally:
            stop.set()
            for thread in started:
                thread.join()
        return len(started)

    def body() -> dict[str, Any]:
        status = Path("/proc/self/status").read_text().splitlines()
        return {
            "capabilities": [line.split()[1] for line in status if line.startswith("CapEff")],
            "ids": [os.getuid(), os.getgid()],
            "nproc": resource.getrlimit(resource.RLIMIT_NPROC),
            "connect": attempt(connect(listener)),
            "threads": attempt(many_threads),
            "scratch": attempt(lambda: (sandbox.scratch / "x").write_text("in its tmpfs")),
            "mount": attempt(lambda: os.statvfs(sandbox.scratch).f_blocks),
        }

    outcome = run_confined(
        sandbox,
        capabilities,
        body,
        before=become_unprivileged,
        limits=Limits(memory=None, scratch=MiB),
    )
    expected = [NETWORK_NAMESPACE, IPC_NAMESPACE, RLIMITS, SCRATCH_TMPFS, NO_NEW_PRIVS]
    assert "applied" in outcome, outcome
    assert outcome["applied"] == [name for name in expected if name in outcome["applied"]]
    assert {NETWORK_NAMESPACE, RLIMITS, NO_NEW_PRIVS} <= set(outcome["applied"])
    assert outcome["capabilities"] == ["0000000000000000"]
    assert outcome["ids"] == [uid, gid]  # its user namespace maps its own user to itself
    assert outcome["nproc"] == [64, 64]
    assert "error" in outcome["connect"], outcome["connect"]
    assert outcome["threads"] == {"ok": "63"}
    if SCRATCH_TMPFS in outcome["applied"]:
        assert outcome["scratch"] == {"ok": "12"}
        assert outcome["mount"] == {"ok": str(MiB // os.statvfs(sandbox.scratch).f_frsize)}
        assert list(sandbox.scratch.iterdir()) == []  # the host's folder stayed empty


# -- failures ------------------------------------------------------------------------------------


def test_a_layer_that_fails_raises_confinement_error(sandbox: Sandbox) -> None:
    """A plugin folder that does not exist: Landlock cannot allow it, and says so."""
    outcome = run_confined(sandbox, only(LANDLOCK), dict, folder=sandbox.base / "missing-plugin")
    assert outcome["refused"] == {"layer": LANDLOCK, "errno": errno.ENOENT}
    assert "cannot apply the landlock sandbox layer" in outcome["message"]
    assert "missing-plugin" in outcome["message"]


def test_confine_refuses_a_threaded_process(sandbox: Sandbox) -> None:
    """Landlock and seccomp bind only the calling thread: another thread is refused."""
    stop = threading.Event()

    def start_a_thread() -> None:
        threading.Thread(target=stop.wait, daemon=True).start()

    outcome = run_confined(sandbox, only(SECCOMP), dict, before=start_a_thread)
    assert outcome["refused"]["layer"] == NO_NEW_PRIVS
    assert "the process has 2 threads" in outcome["message"]


# -- the audit hook ------------------------------------------------------------------------------


def test_audit_hook_explains_what_the_sandbox_refuses(sandbox: Sandbox) -> None:
    """Forbidden operations raise PermissionError saying "plugin sandbox" and what was refused."""
    link = sandbox.scratch / "link"

    spare, _other = socket.socketpair()  # made before the hook, which refuses new sockets

    def unix_connect() -> object:
        spare.connect("/run/x")
        return "connected"

    def body() -> dict[str, Any]:
        inet = socket.AF_INET
        return {
            "passwd": attempt(lambda: Path("/etc/passwd").read_text()),
            "listing /etc": attempt(lambda: list(Path("/etc").iterdir())),
            "plugin": attempt((sandbox.folder / "main.py").read_text),
            "write plugin": attempt(lambda: (sandbox.folder / "main.py").write_text("")),
            "remove plugin": attempt((sandbox.folder / "main.py").unlink),
            "write scratch": attempt(lambda: (sandbox.scratch / "x").write_text("x")),
            "mkdir scratch": attempt((sandbox.scratch / "d").mkdir),
            "move out": attempt(lambda: (sandbox.scratch / "x").rename(sandbox.outside / "x")),
            "symlink": attempt(lambda: link.symlink_to("/etc/passwd")),
            "devnull": attempt(lambda: Path(os.devnull).write_text("x")),
            "inet": attempt(lambda: socket.socket(inet)),
            "unix": attempt(lambda: socket.socket(socket.AF_UNIX).close()),
            "unix connect": attempt(unix_connect),
            "lookup": attempt(lambda: socket.getaddrinfo("localhost", 80)),
            "subprocess": attempt(lambda: subprocess.run(["true"], check=False)),
            "system": attempt(lambda: os.system("true")),  # noqa: S605 - to be refused
            "fork": attempt(guarded_fork),
            "kill": attempt(lambda: os.kill(os.getppid(), 0)),
            "ctypes": attempt(lambda: ctypes.CDLL(None)),
            "own hook": attempt(lambda: sys.addaudithook(lambda event, args: None)),
            "prlimit": attempt(lambda: resource.prlimit(os.getppid(), resource.RLIMIT_NOFILE)),
            "own prlimit": attempt(lambda: resource.prlimit(0, resource.RLIMIT_NOFILE)),
            "hidden": attempt((sandbox.outside / "secret").read_text),
            "beneath hidden": attempt((sandbox.outside / "open" / "file").read_text),
        }

    (sandbox.outside / "secret").write_text("secret")
    (sandbox.outside / "open").mkdir()
    (sandbox.outside / "open" / "file").write_text("open")
    with spare, _other:
        outcome = run_confined(
            sandbox,
            only(),
            body,
            audit=True,
            readable=(sandbox.base, sandbox.outside / "open"),
            hidden=(sandbox.outside,),
        )
    expected = {
        "passwd": "plugin sandbox: reading '/etc/passwd' is not allowed (a plugin reads only",
        "listing /etc": "plugin sandbox: listing '/etc' is not allowed",
        "write plugin": "plugin sandbox: opening for writing '",
        "remove plugin": "plugin sandbox: changing (os.remove) '",
        "move out": "plugin sandbox: changing (os.rename) '",
        "symlink": "plugin sandbox: linking to '/etc/passwd' is not allowed",
        "inet": "plugin sandbox: network access is not allowed (a socket of family AF_INET)",
        "unix": "plugin sandbox: network access is not allowed (a socket of family AF_UNIX)",
        "unix connect": "plugin sandbox: network access is not allowed (socket.connect '/run/x')",
        "lookup": "plugin sandbox: network access is not allowed (socket.getaddrinfo",
        "subprocess": "plugin sandbox: starting programs or processes is not allowed "
        "(subprocess.Popen",
        "system": "plugin sandbox: starting programs or processes is not allowed (os.system",
        "fork": "plugin sandbox: starting programs or processes is not allowed (os.fork)",
        "kill": "plugin sandbox: sending signals is not allowed (os.kill",
        "ctypes": "plugin sandbox: loading native code with ctypes is not allowed "
        "(ctypes.dlopen None)",
        "prlimit": "plugin sandbox: changing or reading another process's limits is not allowed",
        "hidden": f"plugin sandbox: reading '{sandbox.outside / 'secret'}' is not allowed",
    }
    for name, message in expected.items():
        assert outcome[name]["error"] == "PermissionError", (name, outcome[name])
        assert outcome[name]["message"].startswith(message), (name, outcome[name])
    assert f"only in its scratch folder {sandbox.scratch}" in outcome["write plugin"]["message"]
    for name in ("plugin", "write scratch", "mkdir scratch", "devnull", "own hook", "own prlimit"):
        assert "ok" in outcome[name], (name, outcome[name])
    assert (sandbox.folder / "main.py").read_text() == "VALUE = 42\n"
    assert outcome["beneath hidden"] == {"ok": repr("open")}


# -- the command line ----------------------------------------------------------------------------


def test_sandbox_info_command_lists_every_layer() -> None:
    """sandbox-info: one line per layer, the level, and the same as a JSON document."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true")
    parser = argparse.ArgumentParser(prog="services-ai-plugins")
    add_sandbox_commands(parser.add_subparsers(dest="command"), common, "services-ai-plugins")
    args = parser.parse_args(["sandbox-info", "--json"])
    assert args.json
    document, lines = args.handler(args)
    found = probe()
    assert json.loads(json.dumps(document))["level"] == found.level
    assert [layer["name"] for layer in document["layers"]] == list(LAYER_NAMES)
    assert document["landlock_abi"] == found.landlock_abi
    assert document["uid_scheme"] == found.uid_scheme
    assert document["memory_cgroup"] == found.memory_cgroup
    readable = set(document["readable"])
    assert str(Path(os.__file__).parent) in readable
    assert str(Path(pluggy.__file__).parent) in readable
    assert not readable & {entry for entry in sys.path if entry.endswith("-packages")}
    assert set(document["hidden"]).isdisjoint(readable)
    assert any(line.startswith("reads (") for line in lines)
    for layer in found.layers():
        line = next(line for line in lines if f" {layer.name} " in line)
        assert line.lstrip().startswith("available" if layer.available else "missing")
    assert lines[-1] == f"level: {found.report}"
