"""Installed code is verified before every import: each worker start, not only the host's.

Every plugin here is a real folder packed into a real archive, installed,
approved and enabled through a real :class:`PluginHost`; sandboxed ones run
in real, confined worker processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import CliRunner, Hosts, Installer, plugin_folder
from services_ai_plugins import (
    PluginHost,
    PluginStatus,
    SandboxPolicy,
    SQLiteStorage,
    pack_plugin,
)
from services_ai_plugins._sandbox import _pool as _sandbox
from services_ai_plugins._sandbox import _stand_in
from services_ai_plugins.events import Context, Lead
from services_ai_plugins.storage import SourceKind
from services_ai_plugins.types import Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

HEADER = "import os\nfrom services_ai_plugins import hookimpl\n\n\nclass Plugin:\n"

ACME = Context(tenant="acme")

#: Stores which code ran, and the pid of the worker that ran it.
MARKED = """
@hookimpl
def lead_created(self, lead, api):
    api.store_set("ran", "original")
    api.store_set("pid", os.getpid())
"""


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def make_host(hosts: Hosts, tmp_path: Path) -> Callable[..., PluginHost]:
    def make(**policy: Any) -> PluginHost:
        sandbox = SandboxPolicy(**{"timeout": 5.0} | policy)
        storage = SQLiteStorage(tmp_path / "registry.db")  # the CLI reads the same file
        return cast("PluginHost", hosts(storage=storage, sandbox=sandbox))

    return make


def fire(host: PluginHost, services: FakeHostServices) -> Lead:
    lead = services.make_lead("acme", name="Ada")
    host.hook.lead_created(lead=lead, context=ACME)
    return lead


def folder_of(host: PluginHost, plugin_id: str) -> Path:
    path = host.registry.plugin(plugin_id).package_path
    assert path is not None
    return Path(path)


def tamper(folder: Path) -> None:
    """Rewrite main.py to run other code, keeping its size and its times (stat cannot tell)."""
    main = folder / "main.py"
    before = main.stat()
    text = main.read_text()
    changed = text.replace('"original"', '"tampered"')
    assert changed != text
    assert len(changed) == len(text)
    main.write_text(changed)
    os.utime(main, ns=(before.st_atime_ns, before.st_mtime_ns))


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    for _ in range(500):  # wait until it is dead: a zombie (until the zygote reaps it) or gone
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.01)


def crash(host: PluginHost, services: FakeHostServices, plugin_id: str) -> None:
    """Kill the plugin's acme worker; the next call finds it dead (the one after starts anew)."""
    kill(cast("int", services.stored("acme", plugin_id)["pid"]))
    fire(host, services)
    assert host.failures(plugin_id)[0].exc_type == "WorkerCrashed"


def assert_refused_for_integrity(host: PluginHost, tmp_path: Path, plugin_id: str) -> None:
    """The failure says why, and the admin sees it: failures, suspension, dashboard and CLI."""
    loads = [f for f in host.failures(plugin_id) if f.hook == "load"]
    assert [f.exc_type for f in loads] == ["IntegrityError"]
    assert "changed since it was installed" in loads[0].message
    [suspension] = host.suspensions(plugin_id)
    assert suspension.tenant is None
    assert "changed since it was installed" in suspension.reason
    assert host.registry.plugin(plugin_id).status is PluginStatus.SUSPENDED
    [row] = [r for r in host.dashboard() if r.plugin.id == plugin_id]
    assert "IntegrityError" in {f.exc_type for f in row.failures}
    assert row.suspensions == (suspension,)
    host.flush()
    code, out, err = CliRunner(tmp_path)("failures", plugin_id, "--json")
    assert code == 0, err
    assert "IntegrityError" in {f["exc_type"] for f in json.loads(out)["failures"]}
    assert plugin_id not in host.plugins()  # unloaded at the next refresh


@pytest.mark.parametrize("restart", ["killed", "evicted"])
def test_code_changed_under_a_live_host_does_not_run_when_its_worker_restarts(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    tmp_path: Path,
    restart: str,
) -> None:
    """A worker started again (crash, or LRU eviction) verifies the code first: tampered, refused.

    The rewrite keeps the file's size and modification time, so only hashing
    the content can tell.
    """
    host = make_host(max_workers=1)
    install(host, "victim", MARKED)
    install(host, "other", MARKED, tenants=("beta",))
    fire(host, services)
    assert services.stored("acme", "victim")["ran"] == "original"
    tamper(folder_of(host, "victim"))
    if restart == "killed":
        crash(host, services, "victim")
    else:  # max_workers=1: another plugin's call evicts the victim's worker
        beta = Context(tenant="beta")
        host.hook.lead_created(lead=services.make_lead("beta"), context=beta)
        assert services.stored("beta", "other")["ran"] == "original"
        assert [(w.plugin_id, w.tenant) for w in host.sandbox.workers()] == [("other", "beta")]
    fire(host, services)
    assert services.stored("acme", "victim").get("ran") == "original"  # never "tampered"
    assert_refused_for_integrity(host, tmp_path, "victim")
    fire(host, services)  # later calls: the plugin is unloaded, the other one still runs
    assert services.stored("acme", "victim").get("ran") == "original"
    assert host.registry.plugin("other").status is PluginStatus.APPROVED
    assert [f.exc_type for f in host.failures("other")] == []
    assert "other" in host.plugins()


def test_the_worker_checks_the_code_itself_once_confined(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A change after the host's check (before the fork) is caught by the worker, before import."""
    host = make_host()
    install(host, "victim", MARKED)
    fire(host, services)
    tamper(folder_of(host, "victim"))
    checked: list[str] = []

    def host_check_misses_it(self: Any) -> None:  # stands for a change right after the check
        checked.append(self.plugin_id)

    crash(host, services, "victim")
    monkeypatch.setattr(_stand_in.PluginWorkers, "_verify", host_check_misses_it)
    fire(host, services)
    assert checked
    assert set(checked) == {"victim"}
    assert services.stored("acme", "victim")["ran"] == "original"
    monkeypatch.undo()
    assert_refused_for_integrity(host, tmp_path, "victim")


def test_a_prestarted_worker_is_verified_too(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """host.sandbox.start (warming a tenant's worker) refuses changed code like a call does."""
    host = make_host()
    install(host, "victim", MARKED)
    fire(host, services)
    tamper(folder_of(host, "victim"))
    crash(host, services, "victim")
    with pytest.raises(Exception, match="changed since it was installed") as caught:
        host.sandbox.start("victim", "acme")
    assert type(caught.value).__name__ == "IntegrityError"
    assert host.registry.plugin("victim").status is PluginStatus.SUSPENDED


def test_a_sandboxed_plugin_cannot_rewrite_its_own_code(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """Its installed files are read-only to its worker: write, append, replace, delete, chmod.

    Each attempt fails in the worker, the files are as installed, and the
    next worker (after a crash) runs the installed code.
    """
    host = make_host()
    install(
        host,
        "rewriter",
        """
        @hookimpl
        def lead_created(self, lead, api):
            here = os.path.dirname(os.path.abspath(__file__))
            main = os.path.join(here, "main.py")
            attempts = {
                "append": lambda: open(main, "a").write("\\nEVIL = 1\\n"),
                "truncate": lambda: open(main, "w").write("EVIL = 1\\n"),
                "chmod": lambda: os.chmod(main, 0o666),
                "unlink": lambda: os.unlink(main),
                "new_module": lambda: open(os.path.join(here, "evil.py"), "w").write("x = 1"),
                "rename": lambda: os.rename(main, os.path.join(here, "old.py")),
            }
            outcome = {}
            for name, attempt in attempts.items():
                try:
                    attempt()
                    outcome[name] = "done"
                except Exception as exc:
                    outcome[name] = type(exc).__name__
            api.store_set("outcome", outcome)
            api.store_set("pid", os.getpid())
        """,
    )
    folder = folder_of(host, "rewriter")
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    fire(host, services)
    outcome = cast("dict[str, str]", services.stored("acme", "rewriter")["outcome"])
    assert "done" not in outcome.values(), outcome
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files
    pid = services.stored("acme", "rewriter")["pid"]
    crash(host, services, "rewriter")
    fire(host, services)  # a new worker: the code is intact, so it runs
    assert services.stored("acme", "rewriter")["pid"] not in (pid, os.getpid())
    assert host.registry.plugin("rewriter").status is PluginStatus.APPROVED
    assert [f.exc_type for f in host.failures("rewriter")] == ["WorkerCrashed"]


@pytest.mark.parametrize("isolation", [Isolation.PROCESS, Isolation.INPROCESS])
def test_a_missing_plugin_folder_is_a_recorded_load_failure(
    hosts: Hosts,
    install: Installer,
    tmp_path: Path,
    isolation: Isolation,
) -> None:
    """The next host finds the folder gone: a load failure the admin sees, not just a log line."""
    storage = SQLiteStorage(tmp_path / "registry.db")
    policy = SandboxPolicy(isolation={SourceKind.ARCHIVE: isolation})
    first = hosts(storage=storage, sandbox=policy)
    install(first, "vanished", MARKED)
    assert "vanished" in first.plugins()
    folder = folder_of(first, "vanished")
    # Gone from the registry's archives too, else the next host materialises it again.
    assert first.registry.artifacts.delete(str(first.registry.plugin("vanished").artifact))
    first.close()
    shutil.rmtree(folder)
    second = hosts(storage=SQLiteStorage(tmp_path / "registry.db"), sandbox=policy)
    assert "vanished" not in second.plugins()
    [failure] = second.failures("vanished")
    assert failure.hook == "load"
    assert "missing" in failure.message
    [row] = [r for r in second.dashboard() if r.plugin.id == "vanished"]
    assert row.failures == (failure,)
    code, out, err = CliRunner(tmp_path)("failures", "vanished", "--json")
    assert code == 0, err
    assert [f["hook"] for f in json.loads(out)["failures"]] == ["load"]


def test_a_sandboxed_entry_point_is_verified_before_each_worker_start(
    hosts: Hosts,
    services: FakeHostServices,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """Its module's sources are hashed again before a worker imports them: changed, refused."""
    # Not under pytest's temporary folder: its parents are closed to the workers' user.
    module_dir = Path(tempfile.mkdtemp(prefix="services-ai-entry-"))
    module_dir.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(module_dir, ignore_errors=True))
    (module_dir / "entry_mod.py").write_text(
        "import os\n"
        "from services_ai_plugins import hookimpl\n\n"
        "manifest = {'id': 'entry', 'name': 'Entry', 'version': '1.0.0',\n"
        "            'permissions': ['read_leads'], 'isolation': 'process',\n"
        "            'dependencies': ['entry-mod']}\n\n"
        "@hookimpl\n"
        "def lead_created(lead, api):\n"
        "    api.store_set('pid', os.getpid())\n"
    )
    # Installed as pip would: a distribution whose module the worker may import.
    metadata = module_dir / "entry_mod-1.0.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: entry-mod\nVersion: 1.0\n")
    (metadata / "top_level.txt").write_text("entry_mod\n")
    monkeypatch.syspath_prepend(str(module_dir))
    # ... in a folder on the workers' path too (as site-packages is).
    sdk_paths = _sandbox._sdk_paths
    monkeypatch.setattr(_sandbox, "_sdk_paths", lambda: [*sdk_paths(), str(module_dir)])
    import entry_mod  # type: ignore[import-not-found]  # written just above

    storage = SQLiteStorage(tmp_path / "registry.db")
    host = hosts(storage=storage, sandbox=SandboxPolicy(timeout=5.0))
    host.install_object(entry_mod, actor="ops")
    host.registry.approve("entry", actor="admin")
    host.registry.enable("entry", "acme", actor="admin")
    fire(host, services)
    pid = services.stored("acme", "entry")["pid"]
    assert pid != os.getpid()
    with (module_dir / "entry_mod.py").open("a") as file:
        file.write("\nEVIL = True\n")
    crash(host, services, "entry")
    fire(host, services)
    assert services.stored("acme", "entry")["pid"] == pid  # no new worker ran it
    assert_refused_for_integrity(host, tmp_path, "entry")


LAZY = """\
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead, api):
        from . import late  # imported at its first call, long after the load

        late.run(api)
"""


@pytest.mark.parametrize("isolation", [Isolation.PROCESS, Isolation.INPROCESS])
def test_a_module_imported_late_runs_only_if_it_is_the_verified_one(
    hosts: Hosts, services: FakeHostServices, tmp_path: Path, isolation: Isolation
) -> None:
    """A module first imported inside a hook is compiled only from the bytes that were verified.

    In the host's process, and in a worker that is already running (no start
    to check): the changed module is refused, and says why.
    """
    host = hosts(
        storage=SQLiteStorage(tmp_path / "registry.db"),
        sandbox=SandboxPolicy(timeout=5.0, isolation={SourceKind.ARCHIVE: isolation}),
    )
    folder = plugin_folder(tmp_path, "lazy", LAZY)
    (folder / "late.py").write_text('def run(api):\n    api.store_set("ran", "original")\n')
    host.install(pack_plugin(folder, tmp_path / "lazy.zip").path, actor="ops")
    host.registry.approve("lazy", actor="admin")
    host.registry.enable("lazy", "acme", actor="admin")
    assert "lazy" in host.plugins()
    if isolation is Isolation.PROCESS:
        assert host.sandbox.start("lazy", "acme")  # the tenant's worker runs, verified, before
    installed = folder_of(host, "lazy") / "late.py"
    installed.write_text(installed.read_text().replace('"original"', '"tampered"'))
    fire(host, services)
    assert "ran" not in services.stored("acme", "lazy")
    [failure] = host.failures("lazy")
    assert failure.hook == "lead_created"
    assert "IntegrityError" in f"{failure.exc_type} {failure.message}"
    assert "late.py" in failure.message
