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
import ctypes
import encodings.idna  # noqa: F401 - getaddrinfo() imports it: a confined child could not
import errno
import json
import mmap
import os
import platform
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from services_ai_plugins._confine import (
    LANDLOCK,
    LAYER_NAMES,
    NETWORK_NAMESPACE,
    NO_CAPABILITIES,
    NO_NEW_PRIVS,
    PRIVATE_MOUNTS,
    RLIMITS,
    SECCOMP,
    UNPRIVILEGED_USER,
    Capabilities,
    ConfinementError,
    Limits,
    confine,
    install_audit_hook,
    probe,
)
from services_ai_plugins._errors import PluginError
from services_ai_plugins._sandbox_cli import add_sandbox_commands

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox's layers need Linux")

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
        network_namespace=found.network_namespace and NETWORK_NAMESPACE in names,
        rlimits=found.rlimits and RLIMITS in names,
        unprivileged=found.unprivileged if UNPRIVILEGED_USER in names else None,
        landlock_abi=found.landlock_abi if LANDLOCK in names else None,
        seccomp=found.seccomp and SECCOMP in names,
    )


def address_space() -> int:
    """This process's address space, in bytes (a forked child starts with the same)."""
    pages = int(Path("/proc/self/statm").read_text().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def roomy_limits(**changes: Any) -> Limits:
    """The default limits, with room for the address space pytest already uses."""
    return attrs.evolve(Limits(memory=address_space() + 512 * MiB), **changes)


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
                )
            except ConfinementError as error:
                report = {"refused": {"layer": error.layer, "errno": error.errno}}
                report["message"] = str(error)
            else:
                if audit:
                    install_audit_hook(
                        folder=folder or sandbox.folder, scratch=sandbox.scratch, readable=readable
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
    )
    assert everything.level == "strong"
    assert everything.report == "strong: every sandbox layer is available"
    as_root = attrs.evolve(everything, root=True)
    assert as_root.level == "partial"
    assert "unprivileged_user (no unprivileged user to switch to)" in as_root.report
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
    """As root: the worker runs as nobody, without groups, for good; scratch is nobody's; the
    limits set before cannot be raised again."""
    capabilities = only(RLIMITS, UNPRIVILEGED_USER)
    assert capabilities.unprivileged is not None
    uid, gid = capabilities.unprivileged

    def body() -> dict[str, Any]:
        return {
            "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()],
            "groups": os.getgroups(),
            "back to root": attempt(lambda: os.setuid(0)),
            "shadow": attempt(lambda: Path("/etc/shadow").read_bytes()),
            "raise": attempt(lambda: resource.setrlimit(resource.RLIMIT_CPU, (30, 31))),
        }

    outcome = run_confined(sandbox, capabilities, body, limits=roomy_limits(cpu=20))
    assert outcome["applied"] == [RLIMITS, UNPRIVILEGED_USER, NO_NEW_PRIVS]
    assert outcome["ids"] == [uid, uid, gid, gid]
    assert outcome["groups"] == []
    assert refused(outcome["back to root"], errno.EPERM)
    assert refused(outcome["shadow"], errno.EACCES)
    assert outcome["raise"]["error"] == "ValueError"
    assert (sandbox.scratch.stat().st_uid, sandbox.scratch.stat().st_gid) == (uid, gid)


def test_a_private_folder_above_what_the_worker_needs_is_covered_not_opened(
    sandbox: Sandbox,
) -> None:
    """As root, with the plugin under a folder only root may enter (as Python under /root is):
    the worker sees, in a mount namespace of its own, only what it needs of that folder, and
    still becomes nobody; the host's view does not change."""
    capabilities = only(UNPRIVILEGED_USER)
    assert capabilities.unprivileged is not None
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
            "plugin": attempt((plugin / "main.py").read_text),
            "secret": attempt((private / "secret.txt").read_text),
            "listing": attempt(lambda: sorted(p.name for p in private.iterdir())),
        }

    outcome = run_confined(sandbox, capabilities, body, folder=plugin)
    assert outcome["applied"] == [PRIVATE_MOUNTS, UNPRIVILEGED_USER, NO_NEW_PRIVS]
    assert outcome["uid"] == capabilities.unprivileged[0]
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

    outcome = run_confined(sandbox, found, body)
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
        network_namespace=True,
        landlock_abi=None,
        seccomp=False,
    )

    def become_unprivileged() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

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
            "nproc": resource.getrlimit(resource.RLIMIT_NPROC),
            "connect": attempt(connect(listener)),
            "threads": attempt(many_threads),
        }

    outcome = run_confined(
        sandbox,
        capabilities,
        body,
        before=become_unprivileged,
        limits=Limits(memory=None),
    )
    assert outcome["applied"] == [NETWORK_NAMESPACE, RLIMITS, NO_NEW_PRIVS]
    assert outcome["capabilities"] == ["0000000000000000"]
    assert outcome["nproc"] == [64, 64]
    assert "error" in outcome["connect"], outcome["connect"]
    assert outcome["threads"] == {"ok": "63"}


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
        }

    with spare, _other:
        outcome = run_confined(sandbox, only(), body, audit=True)
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
    }
    for name, message in expected.items():
        assert outcome[name]["error"] == "PermissionError", (name, outcome[name])
        assert outcome[name]["message"].startswith(message), (name, outcome[name])
    assert f"only in its scratch folder {sandbox.scratch}" in outcome["write plugin"]["message"]
    for name in ("plugin", "write scratch", "mkdir scratch", "devnull", "own hook"):
        assert "ok" in outcome[name], (name, outcome[name])
    assert (sandbox.folder / "main.py").read_text() == "VALUE = 42\n"


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
    for layer in found.layers():
        line = next(line for line in lines if f" {layer.name} " in line)
        assert line.lstrip().startswith("available" if layer.available else "missing")
    assert lines[-1] == f"level: {found.report}"
