"""Red team: uploaded code runs only in a worker, and the source reviewed is the code that runs.

1. ``check`` (and ``call``) never import an uploaded plugin in their own
   process, not even to diagnose a load the sandbox refused: a hostile plugin
   whose import leaves a mark with its process id proves where it ran.
2. Bytecode and native modules are refused in archives (at install and by
   ``validate``), and a plugin's modules are compiled from their source only:
   a ``__pycache__`` planted next to ``main.py`` is never read, in the host's
   process or in a worker.
"""

from __future__ import annotations

import importlib.machinery
import io
import json
import os
import py_compile
import subprocess
import sys
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import DEFAULT_BREAKER, CliRunner, Hosts, Installer, plugin_folder
from services_ai_plugins import (
    Manifest,
    PackageError,
    PluginHost,
    SandboxPolicy,
    check_plugin,
    pack_plugin,
    validate_plugin,
)
from services_ai_plugins._cli._main import EXIT_OK, EXIT_REFUSED, main
from services_ai_plugins.errors import ArchiveError
from services_ai_plugins.events import Context
from services_ai_plugins.storage import SourceKind
from services_ai_plugins.tooling import code_hash, discover_folders, register_discovered
from services_ai_plugins_testing.fakes import FakeHostServices

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

ACME = Context(tenant="acme")

#: The top of a hostile plugin: its import leaves ``<marks>/imported-<pid>`` wherever it may
#: write (the checking process may write anywhere; a worker only its scratch folder).
MARKING = """\
import os
import pathlib

from services_ai_plugins import hookimpl

try:
    (pathlib.Path({marks!r}) / f"imported-{{os.getpid()}}").write_text(str(os.getuid()))
except OSError:
    pass
"""


def marked(marks: Path) -> set[int]:
    """The process ids the plugin's import ran in (those that could leave a mark)."""
    return {int(path.name.removeprefix("imported-")) for path in marks.glob("imported-*")}


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    folder = tmp_path / "marks"
    folder.mkdir()
    folder.chmod(0o777)  # a worker that is not confined may mark too: its pid differs
    return folder


def hostile(
    root: Path, marks: Path, plugin_id: str, body: str, *, manifest: Mapping[str, Any] = {}
) -> Path:
    """A plugin folder whose main.py marks its import, then defines ``body`` (class Plugin)."""
    folder = plugin_folder(root, plugin_id, MARKING.format(marks=str(marks)) + body)
    if manifest:
        document = json.loads((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_text(json.dumps({**document, **manifest}))
    return folder


UNKNOWN_HOOK = """

class Plugin:
    @hookimpl
    def lead_craeted(self, lead):
        pass

    @hookimpl
    def lead_updated(self, leed):
        pass
"""

FORGED_PACKAGE_ERROR = """

class PackageError(Exception):
    pass


raise PackageError("its hooks are refused: lead_craeted: no such hook is specified")


class Plugin:
    pass
"""

PRINTS = """
print("hello from the plugin's import")


class Plugin:
    @hookimpl
    def lead_created(self, lead, api):
        api.store_set("pid", os.getpid())
"""


def run(*args: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in args], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


# -- 1. check diagnoses from what the worker reported ----------------------------------------------


def test_check_names_refused_hooks_without_importing_the_plugin_itself(
    tmp_path: Path, marks: Path
) -> None:
    """A sandboxed load refused for its hooks: check lists each refusal from the worker's report.

    The old diagnosis imported the plugin again in the checking process (root, the
    admin's environment) to list the refusals: the mark with check's own pid proved it.
    """
    folder = hostile(tmp_path, marks, "refused", UNKNOWN_HOOK)
    for source in (folder, pack_plugin(folder, tmp_path / "refused.zip").path):
        report = check_plugin(source, examples=0)
        assert sorted((p.severity, p.kind, p.hook, p.argument) for p in report.problems) == [
            ("error", "unknown-argument", "lead_updated", "leed"),
            ("error", "unknown-hook", "lead_craeted", None),
        ]
        assert "did you mean 'lead_created'?" in next(
            p.message for p in report.problems if p.kind == "unknown-hook"
        )
        assert not report.loaded
        assert os.getpid() not in marked(marks)
    code, out, _ = run("check", folder, "--examples", "0")
    assert code == EXIT_REFUSED
    assert "error    unknown-hook       lead_craeted: no such hook is specified" in out
    assert os.getpid() not in marked(marks)


def test_the_check_command_in_its_own_process_never_imports_the_plugin(
    tmp_path: Path, marks: Path
) -> None:
    """``python -m services_ai_plugins check plugin.zip``: the command's process leaves no mark."""
    folder = hostile(tmp_path, marks, "refused", UNKNOWN_HOOK)
    archive = pack_plugin(folder, tmp_path / "refused.zip").path
    command = [sys.executable, "-m", "services_ai_plugins", "check", str(archive), "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=300)
    assert process.returncode == EXIT_REFUSED, err
    kinds = sorted(p["kind"] for p in json.loads(out)["problems"])
    assert kinds == ["unknown-argument", "unknown-hook"]
    assert process.pid not in marked(marks)


def test_a_forged_package_error_at_import_is_a_load_problem_and_runs_nowhere_else(
    tmp_path: Path, marks: Path
) -> None:
    """The plugin raises its own ``PackageError`` at import (what the old diagnosis looked for)."""
    report = check_plugin(hostile(tmp_path, marks, "forger", FORGED_PACKAGE_ERROR), examples=0)
    assert [(p.kind, p.hook) for p in report.problems] == [("load", "load")]
    assert report.problems[0].message.startswith("PackageError: its hooks are refused")
    assert os.getpid() not in marked(marks)


def test_check_of_a_plugin_that_prints_while_importing(tmp_path: Path, marks: Path) -> None:
    """print() at import neither fails the sandboxed load nor sends check to import it itself.

    (The print part needs the worker's start to give print() somewhere to write.)
    """
    report = check_plugin(hostile(tmp_path, marks, "talker", PRINTS), examples=0)
    assert os.getpid() not in marked(marks)
    assert report.problems == (), report.problems
    assert report.loaded
    assert [(h.hook, h.calls, h.failed) for h in report.hooks] == [("lead_created", 1, 0)]


def test_call_runs_an_uploaded_plugin_only_in_its_worker(tmp_path: Path, marks: Path) -> None:
    """``services-ai-plugins call``: the plugin answers, and its import never ran in the CLI."""
    cli = CliRunner(tmp_path)
    works = """

class Plugin:
    @hookimpl
    def lead_created(self, lead):
        return os.getpid()
"""
    for plugin_id, body in (("worker-only", works), ("refused", UNKNOWN_HOOK)):
        folder = hostile(tmp_path, marks, plugin_id, body)
        for step in (("install", folder), ("approve", plugin_id)):
            code, _, err = cli(*step)
            assert code == EXIT_OK, err
        code, _, err = cli("enable", plugin_id, "--tenant", "acme")
        assert code == EXIT_OK, err
    code, out, err = cli("call", "lead_created", "--tenant", "acme", "--sample", "--json")
    document = json.loads(out)
    [outcome] = document["outcomes"]
    assert outcome["plugin_id"] == "worker-only"
    assert outcome["failure"] is None, outcome
    assert outcome["result"] != os.getpid()
    assert document["not_loaded"] == ["refused"]
    assert os.getpid() not in marked(marks)


# -- 7. the source reviewed is the code that runs -------------------------------------------------

#: The reviewed source: it stores where it ran, and that it is the source.
SOURCE = """\
import os

from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead, api):
        api.store_set("ran", "the reviewed source")
        api.store_set("pid", os.getpid())
"""

#: What a planted ``.pyc`` holds instead: the same names, other behaviour.
PLANTED = SOURCE.replace("the reviewed source", "planted bytecode")

NATIVE = importlib.machinery.EXTENSION_SUFFIXES[0]
CACHE_TAG = sys.implementation.cache_tag


def manifest(plugin_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": plugin_id,
        "name": plugin_id.title(),
        "version": "1.0.0",
        "entry_point": "main.py",
        "plugin_class": "Plugin",
        "permissions": ["read_leads"],
        **extra,
    }


def compiled(source: str, scratch: Path) -> bytes:
    """``source`` as an unchecked-hash .pyc: Python takes it without looking at main.py."""
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "planted.py").write_text(source)
    target = scratch / "planted.pyc"
    py_compile.compile(
        str(scratch / "planted.py"),
        cfile=str(target),
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    return target.read_bytes()


def plant(folder: Path, scratch: Path, module: str = "main") -> Path:
    """Put bytecode of :data:`PLANTED` where Python's own loader would read it for ``module``."""
    target = folder / "__pycache__" / f"{module}.{CACHE_TAG}.pyc"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(compiled(PLANTED, scratch))
    return target


def archive(path: Path, files: Mapping[str, str | bytes]) -> Path:
    """A ZIP built by hand (pack would leave compiled files out)."""
    with zipfile.ZipFile(path, "w") as zipped:
        for name, content in files.items():
            zipped.writestr(name, content)
    return path


def folder_plugin(
    plugins: Path, plugin_id: str, files: Mapping[str, str | bytes], **extra: Any
) -> Path:
    """A plugin folder placed straight in the plugins folder (an operator's folder plugin)."""
    folder = plugins / plugin_id
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(manifest(plugin_id, **extra)))
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return folder


@pytest.fixture
def make_host(hosts: Hosts) -> Callable[..., PluginHost]:
    def make(**policy: Any) -> PluginHost:
        sandbox = SandboxPolicy(**{"timeout": 10.0} | policy)
        return cast("PluginHost", hosts(sandbox=sandbox, breaker=DEFAULT_BREAKER))

    return make


def discover(host: PluginHost) -> None:
    """Register, approve and enable (for acme) every folder plugin in the host's plugins folder."""
    found = discover_folders(host.plugins_dir)
    assert found.refused == ()
    for record in register_discovered(host.registry, found.found, actor="ops"):
        host.registry.approve(record.id, actor="admin")
        host.registry.enable(record.id, "acme", actor="admin")


def installed_earlier(host: PluginHost, plugin_id: str, files: Mapping[str, str | bytes]) -> Path:
    """An uploaded plugin as an earlier release installed it, compiled files and all.

    Its folder under the plugins folder, recorded (with the code hash of what is
    there), approved and enabled for acme: the hash holds, so only the loader
    stands between the compiled files and the host.
    """
    folder = folder_plugin(host.plugins_dir / plugin_id, "1.0.0", files)
    document = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**document, "id": plugin_id}))
    host.registry.install(
        Manifest.from_file(folder / "manifest.json"),
        actor="ops",
        code_hash=code_hash(folder),
        source=SourceKind.ARCHIVE,
        package_path=str(folder),
    )
    host.registry.approve(plugin_id, actor="admin")
    host.registry.enable(plugin_id, "acme", actor="admin")
    return folder


def fire(host: PluginHost, services: FakeHostServices) -> None:
    host.hook.lead_created(lead=services.make_lead("acme", name="Ada"), context=ACME)


COMPILED_ARCHIVES = {
    "bytecode": {"__pycache__/main.cpython-311.pyc": b"\0" * 16},
    "bytecode-beside": {"helper.pyc": b"\0" * 16},
    "native-module": {f"fast{NATIVE}": b"\x7fELF"},
    "native-library": {"lib/libfast.so.1": b"\x7fELF"},
}


@pytest.mark.parametrize("extra", COMPILED_ARCHIVES.values(), ids=COMPILED_ARCHIVES.keys())
def test_an_archive_with_compiled_code_is_refused_at_install_and_by_validate(
    tmp_path: Path, make_host: Callable[..., PluginHost], extra: Mapping[str, bytes]
) -> None:
    """Install, validate, check and the CLI all refuse it, by rule, naming the file."""
    [(member, _)] = extra.items()
    rule = "bytecode" if member.endswith(".pyc") else "native-module"
    upload = archive(
        tmp_path / "upload.zip",
        {"manifest.json": json.dumps(manifest("shipper")), "main.py": SOURCE, **extra},
    )
    host = make_host()
    with pytest.raises(ArchiveError) as installing:
        host.install(upload, actor="ops")
    with pytest.raises(ArchiveError) as validating:
        validate_plugin(upload)
    for caught in (installing.value, validating.value):
        assert (caught.rule, caught.member) == (rule, member)
        assert f"!{member}: " in str(caught)
    assert host.registry.storage.get_plugin("shipper") is None
    assert not (host.plugins_dir / "shipper").exists()
    report = check_plugin(upload, examples=0)
    assert [(p.kind, p.path) for p in report.problems] == [("invalid", member)]
    (tmp_path / "cli").mkdir()
    for code, out, _ in (
        run("validate", upload, "--json"),
        CliRunner(tmp_path / "cli")("install", upload, "--json"),
    ):
        assert code == EXIT_REFUSED, out
        document = json.loads(out)
        assert (document["error"], document["member"]) == ("ArchiveError", member)


def test_a_folder_with_native_code_is_refused_and_its_bytecode_left_out(tmp_path: Path) -> None:
    """validate and pack refuse a native module; a __pycache__ is left out by pack, not shipped."""
    plugins = tmp_path / "plugins"
    native = folder_plugin(plugins, "native", {"main.py": SOURCE, f"lib/fast{NATIVE}": b"\x7fELF"})
    for refuse in (validate_plugin, lambda folder: pack_plugin(folder, tmp_path / "n.zip")):
        with pytest.raises(PackageError) as caught:
            refuse(native)
        assert caught.value.member == f"lib/fast{NATIVE}"
        assert "native module" in str(caught.value)
    assert [str(path) for path, _ in discover_folders(plugins).refused] == [str(native)]
    cached = folder_plugin(plugins, "cached", {"main.py": SOURCE})
    plant(cached, tmp_path / "scratch")
    assert validate_plugin(cached).manifest.id == "cached"
    packed = pack_plugin(cached, tmp_path / "cached.zip")
    assert packed.files == ("main.py", "manifest.json")
    assert packed.skipped == ("__pycache__/",)


#: Where an uploaded plugin runs: the host's process (a policy trusting archives), or a worker.
WHERE = {"in-process": {"archive": "inprocess"}, "sandboxed": {}}


@pytest.mark.parametrize("isolation", WHERE.values(), ids=WHERE.keys())
def test_a_planted_pyc_is_never_run_in_process_or_in_a_worker(
    tmp_path: Path,
    make_host: Callable[..., PluginHost],
    services: FakeHostServices,
    isolation: Mapping[str, str],
) -> None:
    """An unchecked-hash __pycache__/main.*.pyc beside main.py: main.py's source runs, not it."""
    host = make_host(isolation=isolation)
    cached = f"__pycache__/main.{CACHE_TAG}.pyc"
    bytecode = compiled(PLANTED, tmp_path / "scratch")
    folder = installed_earlier(host, "planted", {"main.py": SOURCE, cached: bytecode})
    planted = folder / cached
    fire(host, services)
    assert host.failures("planted") == []
    stored = services.stored("acme", "planted")
    assert stored["ran"] == "the reviewed source"
    assert (stored["pid"] == os.getpid()) is bool(isolation)
    assert sorted(path.name for path in planted.parent.iterdir()) == [planted.name]


def test_a_discovered_folder_plugin_ignores_its_pycache(
    tmp_path: Path, make_host: Callable[..., PluginHost], services: FakeHostServices
) -> None:
    """An operator's folder plugin (in the host's process) whose __pycache__ was tampered with."""
    host = make_host()
    folder = folder_plugin(host.plugins_dir, "operators", {"main.py": SOURCE})
    plant(folder, tmp_path / "scratch")
    discover(host)
    fire(host, services)
    assert host.failures("operators") == []
    stored = services.stored("acme", "operators")
    assert (stored["ran"], stored["pid"]) == ("the reviewed source", os.getpid())


def test_a_hooks_late_import_writes_no_bytecode(
    make_host: Callable[..., PluginHost],
    services: FakeHostServices,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A module imported inside a hook, in the host's process: no __pycache__, the hash holds.

    (Bytecode written then would change the plugin's code hash: its next load refused.)
    """
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # Python's default
    late = SOURCE.replace(
        '        api.store_set("ran", "the reviewed source")\n',
        '        from . import helper\n\n        api.store_set("ran", helper.WHO)\n',
    )
    host = make_host()
    folder = folder_plugin(
        host.plugins_dir, "late", {"main.py": late, "helper.py": "WHO = 'the reviewed source'\n"}
    )
    discover(host)
    fire(host, services)
    assert services.stored("acme", "late")["ran"] == "the reviewed source"
    assert not (folder / "__pycache__").exists()
    host.refresh(force=True)
    fire(host, services)
    assert host.failures("late") == []


SOURCELESS = """\
from services_ai_plugins import hookimpl

from . import helper


class Plugin:
    @hookimpl
    def lead_created(self, lead, api):
        api.store_set("ran", helper.WHO)
"""


@pytest.mark.parametrize("isolation", WHERE.values(), ids=WHERE.keys())
@pytest.mark.parametrize("kind", ["bytecode", "native"])
def test_a_module_that_is_only_compiled_is_refused(
    tmp_path: Path,
    make_host: Callable[..., PluginHost],
    services: FakeHostServices,
    isolation: Mapping[str, str],
    kind: str,
) -> None:
    """``from . import helper`` with only helper.pyc (or a native helper) beside main.py: refused.

    The load fails with CompiledModuleRefused naming the file; nothing of it runs.
    """
    if kind == "bytecode":
        name, content = "helper.pyc", compiled("WHO = 'planted bytecode'\n", tmp_path / "s")
    else:
        name, content = f"helper{NATIVE}", b"\x7fELF, or so it says"
    host = make_host(isolation=isolation)
    installed_earlier(host, "sourceless", {"main.py": SOURCELESS, name: content})
    fire(host, services)
    assert services.stored("acme", "sourceless") == {}
    [failure] = host.failures("sourceless")
    assert failure.hook == "load"
    assert "CompiledModuleRefused" in failure.traceback
    assert f"{name}), not source" in failure.traceback


def test_bytecode_planted_in_an_installed_archive_is_refused_by_its_hash(
    tmp_path: Path, make_host: Callable[..., PluginHost], services: FakeHostServices
) -> None:
    """Planted after install: the code hash no longer matches, so nothing of it runs."""
    host = make_host()
    header, _, body = SOURCE.partition("class Plugin:\n")
    Installer(tmp_path, f"{header}class Plugin:\n")(host, "uploaded", body)
    folder = Path(str(host.registry.plugin("uploaded").package_path))
    plant(folder, tmp_path / "scratch")
    fire(host, services)
    assert services.stored("acme", "uploaded") == {}
    assert [f.exc_type for f in host.failures("uploaded")] == ["IntegrityError"]
