"""Red-team findings against the sandbox's operating-system layers, replayed as hostile plugins.

Each plugin here is uploaded as an archive, approved and enabled, and runs in
a real worker of a real host. Where Python's own functions stop at the audit
hook (which is no boundary), the plugin goes around it the way hostile code
would: through the C library's ``syscall`` that the SDK resolved before the
hook was installed. A test skips only where this machine lacks the layer, with
the probe's reason.
"""

from __future__ import annotations

import errno
import importlib.metadata
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import (
    BreakerPolicy,
    PluginHost,
    SandboxPolicy,
)
from services_ai_plugins._sandbox import _pool as _sandbox
from services_ai_plugins._sandbox._confine import (
    IPC_NAMESPACE,
    MEMORY_CGROUP,
    SCRATCH_TMPFS,
    SECCOMP,
    UNPRIVILEGED_USER,
    probe,
)
from services_ai_plugins.events import Context
from services_ai_plugins_testing.fakes import FakeHostServices

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or platform.system() != "Linux",
    reason="the sandbox's operating-system layers need Linux",
)

MiB = 2**20

#: System-call numbers a hostile plugin passes to syscall(2), by machine.
SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {
        "openat": 257,
        "prlimit64": 302,
        "shmget": 29,
        "msgget": 68,
        "semget": 64,
    },
    "aarch64": {
        "openat": 56,
        "prlimit64": 261,
        "shmget": 194,
        "msgget": 186,
        "semget": 190,
    },
}

HEADER = (
    "import ctypes, json, os, resource\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins._sandbox._confine._syscalls import c_library  # before audit\n\n"
    f"SYSCALLS = {SYSCALLS.get(platform.machine(), {})!r}\n\n\n"
    "def raw(name, *args):\n"
    "    result = c_library().syscall(SYSCALLS[name], *args)\n"
    "    return result if result >= 0 else -ctypes.get_errno()\n\n\n"
    "class Rlimit(ctypes.Structure):\n"
    "    _fields_ = [('cur', ctypes.c_uint64), ('max', ctypes.c_uint64)]\n\n\n"
    "def outcome(action):\n"
    "    try:\n"
    "        return ['ok', repr(action())]\n"
    "    except Exception as exc:\n"
    "        return [type(exc).__name__, getattr(exc, 'errno', None)]\n\n\n"
    "class Plugin:\n"
)

ACME = Context(tenant="acme")
GLOBEX = Context(tenant="globex")

#: A well-behaved plugin: it counts its calls, and allocates and opens a little on each.
INNOCENT = """
@hookimpl
def lead_created(self, lead, api):
    room = bytearray(32 * 2**20)  # fails at once if its address space was cut
    with open(os.devnull) as a, open(os.devnull) as b, open(os.devnull) as c:
        pass
    api.store_set("seen", (api.store_get("seen") or 0) + len(room) // len(room))
"""


def layer_missing(name: str) -> str | None:
    return next(layer.missing for layer in probe().layers() if layer.name == name)


def needs(*names: str) -> None:
    """Skip the test, with the probe's reason, where one of these layers is missing here."""
    for name in names:
        missing = layer_missing(name)
        if missing is not None:
            pytest.skip(f"no {name} layer here: {missing}")
    if platform.machine() not in SYSCALLS:
        pytest.skip(f"no system-call numbers for {platform.machine()} in this test")


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def make_host(hosts: Hosts) -> Callable[..., PluginHost]:
    def make(breaker: BreakerPolicy | None = None, **policy: Any) -> PluginHost:
        sandbox = SandboxPolicy(**{"timeout": 10.0} | policy)
        return cast("PluginHost", hosts(sandbox=sandbox, breaker=breaker))

    return make


def fire(host: PluginHost, services: FakeHostServices, context: Context) -> None:
    lead = services.make_lead(context.tenant or "acme", name="Ada")
    host.hook.lead_created(lead=lead, context=context)


def worker_pid(host: PluginHost, plugin_id: str, tenant: str | None = None) -> int:
    """The pid of the plugin's worker for ``tenant`` (None: the one that served its latest call)."""
    stand_in: Any = host.plugins()[plugin_id]
    pid = stand_in.pid if tenant is None else stand_in.pids()[tenant]
    assert isinstance(pid, int)
    return pid


def proc_limits(pid: int) -> dict[str, str]:
    """A process's soft limits, by name, as /proc shows them."""
    lines = Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]
    return {line[:26].strip(): line[26:47].strip() for line in lines}


def proc_status(pid: int, field: str) -> list[str]:
    line = next(
        x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith(field)
    )
    return line.split()[1:]


def nice_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[16])


# -- 4: one plugin crippling another's worker ------------------------------------------------


def test_a_plugin_cannot_change_another_plugins_worker(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """A plugin enabled in one tenant aims prlimit, setpriority and sched_setaffinity at the
    worker of a plugin enabled in two: every call is refused, the other worker keeps its limits,
    priority and CPUs, and it keeps serving both tenants (a breaker that trips on one failure
    would show any). As root the two workers run as two users."""
    needs(SECCOMP)
    host = make_host(breaker=BreakerPolicy(consecutive_failures=1, failure_rate=0))
    install(host, "innocent", INNOCENT, tenants=("acme", "globex"))
    fire(host, services, ACME)
    target = worker_pid(host, "innocent", "acme")
    before = proc_limits(target)
    cpus = os.sched_getaffinity(target)
    attack = f"""
    @hookimpl
    def lead_created(self, lead, api):
        target = {target}
        tiny = Rlimit(2**20, 2**20)
        small = (2**20, 2**20)
        AS, NOFILE = resource.RLIMIT_AS, resource.RLIMIT_NOFILE
        api.store_set("attack", {{
            "uid": os.getuid(),
            "prlimit": outcome(lambda: resource.prlimit(target, AS, small)),
            "raw prlimit": raw("prlimit64", target, AS, ctypes.byref(tiny), None),
            "raw nofile": raw("prlimit64", target, NOFILE, ctypes.byref(tiny), None),
            "nice": outcome(lambda: os.setpriority(os.PRIO_PROCESS, target, 19)),
            "nice user": outcome(lambda: os.setpriority(os.PRIO_USER, 0, 19)),
            "affinity": outcome(lambda: os.sched_setaffinity(target, {{0}})),
            "own nice": outcome(lambda: os.setpriority(os.PRIO_PROCESS, 0, 1)),
        }})
    """
    install(host, "hostile", attack, tenants=("globex",))
    fire(host, services, GLOBEX)
    found = services.stored("globex", "hostile")["attack"]
    assert found["prlimit"] == ["PermissionError", None]  # the audit hook says so first
    assert found["raw prlimit"] == -errno.EPERM  # the kernel: seccomp, and another user
    assert found["raw nofile"] == -errno.EPERM
    for name in ("nice", "nice user", "affinity"):
        assert found[name] == ["PermissionError", errno.EPERM], (name, found[name])
    assert found["own nice"] == ["ok", "None"]  # its own priority is its own business
    assert proc_limits(target) == before
    assert proc_limits(target)["Max address space"] == str(host.sandbox.policy.limits.memory)
    assert nice_of(target) == 0
    assert os.sched_getaffinity(target) == cpus
    for context in (ACME, GLOBEX, ACME, GLOBEX):
        fire(host, services, context)
    assert worker_pid(host, "innocent", "acme") == target  # the same worker, never crashed
    assert services.stored("acme", "innocent")["seen"] == 3
    assert services.stored("globex", "innocent")["seen"] == 3
    assert host.failures("innocent") == []
    capabilities = probe()
    if capabilities.root and capabilities.worker_uids is not None:
        innocent_uid = int(proc_status(target, "Uid:")[0])
        assert found["uid"] != innocent_uid
        assert (innocent_uid, innocent_uid) == capabilities.worker_ids(target)
    elif capabilities.root:
        pytest.skip(f"seccomp held; the workers share one user here: {capabilities.uid_scheme}")


def test_two_workers_run_as_two_users(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """As root, each worker's uid and gid are its own, from its pid; its scratch folder is
    that user's."""
    needs(UNPRIVILEGED_USER)
    capabilities = probe()
    if capabilities.worker_uids is None:
        pytest.skip(f"workers share one user here: {capabilities.uid_scheme}")
    host = make_host()
    body = """
    @hookimpl
    def lead_created(self, lead, api):
        scratch = os.environ["TMPDIR"]
        api.store_set("ids", [os.getpid(), os.getuid(), os.getgid(), os.stat(scratch).st_uid])
    """
    install(host, "first", body)
    install(host, "second", body)
    fire(host, services, ACME)
    first = services.stored("acme", "first")["ids"]
    second = services.stored("acme", "second")["ids"]
    assert first[1] != second[1]
    for pid, uid, gid, owner in (first, second):
        assert (uid, gid) == capabilities.worker_ids(pid)
        assert owner == uid


# -- 5: System V IPC ---------------------------------------------------------------------------


def sysvipc_keys() -> set[str]:
    """The keys of every System V IPC object this (the host's) namespace shows."""
    keys = set()
    for kind in ("shm", "msg", "sem"):
        lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
        keys |= {f"{kind}:{line.split()[0]}" for line in lines}
    return keys


def test_system_v_ipc_is_refused_and_nothing_outlives_the_host(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """Two plugins of two tenants try to meet under a fixed key, and one to hold 1 GiB of
    shared memory past its memory limit: every System V call fails with EPERM, the workers
    have IPC namespaces of their own, and no object is left once the host is closed."""
    needs(SECCOMP, IPC_NAMESPACE)
    key = 0x5EC0_0000 + os.getpid() % 0xFFFF
    before = sysvipc_keys()
    host = make_host(limits={"memory": 512 * MiB})
    body = f"""
    @hookimpl
    def lead_created(self, lead, api):
        key = {key}
        api.store_set("ipc", {{
            "shm": raw("shmget", key, 2**30, 0o1000 | 0o666),
            "msg": raw("msgget", key, 0o1000 | 0o666),
            "sem": raw("semget", key, 1, 0o1000 | 0o666),
        }})
    """
    install(host, "sender", body, tenants=("acme",))
    install(host, "receiver", body, tenants=("globex",))
    fire(host, services, ACME)
    fire(host, services, GLOBEX)
    for plugin_id, tenant in (("sender", "acme"), ("receiver", "globex")):
        ipc = services.stored(tenant, plugin_id)["ipc"]
        assert ipc == {"shm": -errno.EPERM, "msg": -errno.EPERM, "sem": -errno.EPERM}, ipc
    namespaces = {
        Path(f"/proc/{worker_pid(host, plugin_id)}/ns/ipc").resolve().name
        for plugin_id in ("sender", "receiver")
    }
    assert len(namespaces) == 2
    assert Path("/proc/self/ns/ipc").resolve().name not in namespaces
    for info in host.sandbox.workers():
        assert {IPC_NAMESPACE, SECCOMP} <= set(info.layers)
    host.close()
    left = sysvipc_keys() - before
    assert not [entry for entry in left if entry.endswith(f":{key}")]


def test_memory_the_address_space_limit_misses_ends_the_worker(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """memfd files filled with write() take no address space: past its memory limit the
    worker's memory control group has the kernel end it; another plugin keeps serving, and
    the worker's group is removed once it is reaped."""
    needs(MEMORY_CGROUP)
    capabilities = probe()
    assert capabilities.memory_cgroup is not None
    host = make_host(limits={"memory": 256 * MiB, "file_size": 16 * MiB})
    install(host, "innocent", INNOCENT)
    hoard = """
    @hookimpl
    def lead_created(self, lead, api):
        kept = []
        for _ in range(40):  # 640 MiB in 16 MiB files, none of it mapped
            fd = os.memfd_create("hoard")
            os.write(fd, b"x" * 2**24)
            kept.append(fd)
        api.store_set("kept", len(kept))
    """
    install(host, "hoarder", hoard)
    host.refresh()
    assert host.sandbox.start("hoarder", ACME.tenant)
    workers = host.sandbox.workers()
    [hoarder] = [i.pid for i in workers if (i.plugin_id, i.tenant) == ("hoarder", "acme")]
    fire(host, services, ACME)
    [failure] = host.failures("hoarder")
    assert failure.exc_type == "WorkerCrashed"
    assert "SIGKILL" in failure.message
    assert "kept" not in services.stored("acme", "hoarder")
    fire(host, services, ACME)
    assert services.stored("acme", "innocent")["seen"] == 2
    assert host.failures("innocent") == []
    # Other hosts (a parallel test run) may have workers too: look at this host's own.
    groups = Path(capabilities.memory_cgroup)
    assert not (groups / f"worker-{hoarder}").exists()  # the crashed worker's group is gone
    assert all((groups / f"worker-{info.pid}").is_dir() for info in host.sandbox.workers())
    assert all(MEMORY_CGROUP in info.layers for info in host.sandbox.workers())


# -- 16: what a worker may read ----------------------------------------------------------------


@pytest.fixture
def editable_app() -> Iterator[Path]:
    """An application installed in editable mode: its folder, on sys.path, holds its package,
    its settings and its .env (world-readable, as such files often are)."""
    base = Path(tempfile.mkdtemp(prefix="services-ai-editable-app-"))
    base.chmod(0o755)
    app = base / "app"
    (app / "myapp").mkdir(parents=True)
    (app / "myapp" / "__init__.py").write_text("")
    (app / "settings.py").write_text("SECRET_KEY = 'django-insecure-123'\n")
    (app / ".env").write_text("DATABASE_PASSWORD=hunter2\n")
    for folder in (app, app / "myapp"):
        folder.chmod(0o755)
    for file in (app / "settings.py", app / ".env", app / "myapp" / "__init__.py"):
        file.chmod(0o644)
    try:
        yield app
    finally:
        shutil.rmtree(base)


def test_an_editable_apps_env_and_settings_are_not_readable(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    editable_app: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the application's folder on the workers' sys.path (as an editable install puts
    it), a plugin reads neither its .env nor its settings: not through open(), not through
    the raw system call. The SDK works as ever, and the plugin still reads its own files."""
    needs("landlock")
    sdk_paths = _sandbox._sdk_paths
    monkeypatch.setattr(_sandbox, "_sdk_paths", lambda: [*sdk_paths(), str(editable_app)])
    host = make_host()
    body = f"""
    @hookimpl
    def lead_created(self, lead, api):
        import sys
        app = {str(editable_app)!r}

        def raw_read(path):
            fd = raw("openat", -100, ctypes.c_char_p(path.encode()), os.O_RDONLY)
            if fd < 0:
                return fd
            try:
                return os.read(fd, 100).decode()
            finally:
                os.close(fd)

        api.store_set("read", {{
            "on sys.path": app in sys.path,
            "env": outcome(lambda: open(app + "/.env").read()),
            "raw env": raw_read(app + "/.env"),
            "raw settings": raw_read(app + "/settings.py"),
            "raw own file": raw_read(os.path.abspath("main.py"))[:6],
        }})
    """
    install(host, "reader", body)
    fire(host, services, ACME)
    read = services.stored("acme", "reader")["read"]
    assert read["on sys.path"] is True
    assert read["env"] == ["PermissionError", None]  # the audit hook, first
    assert read["raw env"] in (-errno.EACCES, -errno.ENOENT)  # Landlock (or hidden)
    assert read["raw settings"] in (-errno.EACCES, -errno.ENOENT)
    assert read["raw own file"] == "import"  # the raw route itself works
    assert host.failures("reader") == []


def test_a_declared_dependency_is_readable_with_its_metadata_and_nothing_beside_it(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """A plugin declaring a distribution imports it and reads its metadata (its version, as
    many packages ask at import); the packages beside it in site-packages stay closed."""
    needs("landlock")
    import iniconfig
    import pygments

    host = make_host()
    body = f"""
    @hookimpl
    def lead_created(self, lead, api):
        import importlib.metadata
        import iniconfig
        other = {pygments.__file__!r}
        api.store_set("dependency", {{
            "version": importlib.metadata.version("iniconfig"),
            "source": open(iniconfig.__file__).read(12),
            "undeclared": outcome(lambda: open(other).read()),
            "raw undeclared": raw("openat", -100, ctypes.c_char_p(other.encode()), os.O_RDONLY),
        }})
    """
    install(host, "dependent", body, manifest={"dependencies": ["iniconfig"]})
    fire(host, services, ACME)
    assert host.failures("dependent") == []
    found = services.stored("acme", "dependent")["dependency"]
    assert found["version"] == importlib.metadata.version("iniconfig")
    assert found["source"] == Path(iniconfig.__file__).read_text()[:12]
    assert found["undeclared"] == ["PermissionError", None]
    assert found["raw undeclared"] == -errno.EACCES


# -- 17: the scratch folder ----------------------------------------------------------------------


def test_the_scratch_folder_cannot_fill_the_disk(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """Files each under the file-size limit fill the scratch folder only to its size: then
    ENOSPC. The host's temporary folder never sees them, and the host keeps serving."""
    needs(SCRATCH_TMPFS)
    host = make_host(limits={"scratch": 8 * MiB, "file_size": 4 * MiB})
    install(host, "innocent", INNOCENT)
    body = """
    @hookimpl
    def lead_created(self, lead, api):
        scratch = os.environ["TMPDIR"]
        written, error = 0, None
        for number in range(64):  # 64 MiB in files of 1 MiB
            try:
                with open(os.path.join(scratch, f"fill-{number}"), "wb") as stream:
                    stream.write(b"x" * 2**20)
            except OSError as exc:
                error = exc.errno
                break
            written += 1
        api.store_set("fill", {"written": written, "errno": error, "scratch": scratch})
    """
    install(host, "filler", body)
    fire(host, services, ACME)
    fill = services.stored("acme", "filler")["fill"]
    assert fill["errno"] == errno.ENOSPC
    assert fill["written"] <= 8
    assert list(Path(fill["scratch"]).iterdir()) == []  # the host's own folder: empty
    assert host.failures("filler") == []  # it caught its error: the worker lives on
    fire(host, services, ACME)
    assert services.stored("acme", "innocent")["seen"] == 2
    assert all(SCRATCH_TMPFS in info.layers for info in host.sandbox.workers())
