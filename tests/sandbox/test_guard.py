"""What a sandboxed plugin may import, and where its worker finds the folders it needs.

The import guard lets a plugin import the standard library (its private
modules too: ``sysconfig`` needs ``_sysconfigdata_*``), the SDK, and the
distributions its manifest declares together with everything those require;
nothing else. And a sandboxed plugin loads wherever the app keeps its
folders: a plugins folder or a temporary folder beneath a folder the
workers' users cannot enter. Every plugin here is uploaded as an archive,
installed, approved and enabled in a real host, and runs in a real worker.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import logging
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import PluginHost, SandboxPolicy
from services_ai_plugins._sandbox._confine import PRIVATE_MOUNTS, UNPRIVILEGED_USER, _mounts, probe
from services_ai_plugins.events import Context
from services_ai_plugins_testing.fakes import FakeHostServices

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or platform.system() != "Linux",
    reason="the process sandbox's layers need Linux",
)

HEADER = (
    "import os\n"
    "from services_ai_plugins import hookimpl\n\n\n"
    "def outcome(action):\n"
    "    try:\n"
    "        return ['ok', action()]\n"
    "    except Exception as exc:\n"
    "        return [type(exc).__name__, str(exc)]\n\n\n"
    "class Plugin:\n"
)

ACME = Context(tenant="acme")

#: Writes in its scratch folder and reads it back; tells where that folder is.
SCRATCH_USER = """
@hookimpl
def lead_created(self, lead, api):
    path = os.path.join(os.environ["TMPDIR"], "note")
    with open(path, "w") as stream:
        stream.write("written")
    with open(path) as stream:
        api.store_set("scratch", [os.environ["TMPDIR"], stream.read()])
"""


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def make_host(hosts: Hosts) -> Callable[..., PluginHost]:
    def make(**options: Any) -> PluginHost:
        return cast("PluginHost", hosts(sandbox=SandboxPolicy(timeout=10.0), **options))

    return make


def fire(host: PluginHost, services: FakeHostServices) -> None:
    host.hook.lead_created(lead=services.make_lead("acme", name="Ada"), context=ACME)


def worker_users_available() -> bool:
    """Whether workers run as users of their own here (root, with that layer)."""
    return any(layer.available for layer in probe().layers() if layer.name == UNPRIVILEGED_USER)


@pytest.fixture
def private_folder() -> Any:
    """A fresh folder of mode 0700 owned by this user (root), outside pytest's own folders."""
    folder = Path(tempfile.mkdtemp(prefix="services-ai-guard-", dir="/tmp"))
    folder.chmod(0o700)
    yield folder
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def closed_tmpdir(private_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The host's temporary folder (TMPDIR), beneath a 0700 folder (``private_folder``)."""
    temporary = private_folder / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return temporary


# -- the standard library's private modules ------------------------------------------------------


def test_the_standard_librarys_private_modules_import(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """sysconfig works in a sandboxed plugin: its get_config_vars() imports _sysconfigdata_*,
    a module sys.stdlib_module_names does not list."""
    import sysconfig

    host = make_host()
    body = """
    @hookimpl
    def lead_created(self, lead, api):
        import sysconfig
        api.store_set("sysconfig", {
            "paths": outcome(lambda: sysconfig.get_paths()["stdlib"]),
            "version": outcome(lambda: sysconfig.get_config_vars()["py_version_short"]),
            "data": outcome(lambda: __import__(sysconfig._get_sysconfigdata_name()).__name__),
        })
    """
    install(host, "config-reader", body)
    fire(host, services)
    assert host.failures("config-reader") == []
    found = services.stored("acme", "config-reader")["sysconfig"]
    assert found["paths"] == ["ok", sysconfig.get_paths()["stdlib"]]
    assert found["version"] == ["ok", sysconfig.get_config_vars()["py_version_short"]]
    assert found["data"] == ["ok", sysconfig._get_sysconfigdata_name()]  # type: ignore[attr-defined]


def test_private_modules_outside_the_standard_library_stay_refused(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """An underscore name is no pass: site-packages' private modules (pytest's, hypothesis's)
    stay refused by the guard, and a made-up one is not found."""
    import _pytest

    assert "site-packages" in (_pytest.__file__ or "")
    host = make_host()
    body = """
    @hookimpl
    def lead_created(self, lead, api):
        import importlib
        api.store_set("imports", {
            name: outcome(lambda: importlib.import_module(name).__name__)
            for name in ("_pytest", "_hypothesis_globals", "_no_such_module_here")
        })
    """
    install(host, "sneaky", body)
    fire(host, services)
    imports = services.stored("acme", "sneaky")["imports"]
    for name in ("_pytest", "_hypothesis_globals", "_no_such_module_here"):
        assert imports[name][0] == "ModuleNotFoundError", name
        assert "may not import" in imports[name][1]


def test_a_plugin_cannot_pass_its_own_module_for_a_private_standard_one(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """Underscore modules the plugin writes to its scratch folder stay refused, even in a
    folder it names like the standard library's (lib-dynload) and puts first on sys.path:
    the guard knows the standard library's folders from before the plugin ran."""
    host = make_host()
    body = """
    @hookimpl
    def lead_created(self, lead, api):
        import importlib, sys
        made = os.path.join(os.environ["TMPDIR"], "lib-dynload")
        os.mkdir(made)
        for folder in (os.environ["TMPDIR"], made):
            with open(os.path.join(folder, "_smuggled_" + str(len(folder)) + ".py"), "w") as f:
                f.write("VALUE = 1\\n")
            sys.path.insert(0, folder)
        importlib.invalidate_caches()
        api.store_set("smuggled", [
            outcome(lambda: importlib.import_module("_smuggled_" + str(len(f))).VALUE)
            for f in (os.environ["TMPDIR"], made)
        ])
    """
    install(host, "smuggler", body)
    fire(host, services)
    smuggled = services.stored("acme", "smuggler")["smuggled"]
    assert [kind for kind, _ in smuggled] == ["ModuleNotFoundError"] * 2, smuggled
    assert all("may not import" in text for _, text in smuggled)


# -- the dependencies of declared dependencies ---------------------------------------------------


def test_a_declared_dependency_brings_what_it_requires(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """Declaring jsonschema lets the plugin validate with it: jsonschema imports referencing,
    rpds and jsonschema_specifications (its requirements, and theirs), whose metadata it
    may read too. An undeclared package (psycopg) stays refused."""
    pytest.importorskip("jsonschema")
    pytest.importorskip("psycopg")
    host = make_host()
    body = """
    @hookimpl
    def lead_created(self, lead, api):
        import importlib, importlib.metadata
        import jsonschema

        def check():
            schema = {"type": "object", "required": ["name"]}
            jsonschema.validate({"name": "Ada"}, schema)
            try:
                jsonschema.validate({}, schema)
            except jsonschema.ValidationError as error:
                return error.message
            return "accepted"

        api.store_set("validated", {
            "check": outcome(check),
            "referencing": outcome(lambda: importlib.import_module("referencing").__name__),
            "rpds version": outcome(lambda: importlib.metadata.version("rpds-py")),
            "psycopg": outcome(lambda: importlib.import_module("psycopg").__name__),
        })
    """
    install(host, "validator", body, manifest={"dependencies": ["jsonschema"]})
    fire(host, services)
    assert host.failures("validator") == []
    found = services.stored("acme", "validator")["validated"]
    assert found["check"] == ["ok", "'name' is a required property"]
    assert found["referencing"] == ["ok", "referencing"]
    assert found["rpds version"] == ["ok", importlib.metadata.version("rpds-py")]
    assert found["psycopg"][0] == "ModuleNotFoundError"


def test_the_closure_follows_markers_and_extras() -> None:
    """Requirements for another Python or platform are left out; extras are followed only
    when named; distributions that are not installed are skipped."""
    from packaging.requirements import Requirement

    from services_ai_plugins._sandbox._pool import _dependency_closure

    pytest.importorskip("hypothesis")
    plain = _dependency_closure([Requirement("hypothesis")])
    assert plain == ["hypothesis", "sortedcontainers"]  # not its many extras' packages
    assert _dependency_closure([Requirement("hypothesis; python_version < '3'")]) == []
    assert _dependency_closure([Requirement("services-ai-no-such-distribution")]) == []
    # psycopg's "binary" extra requires psycopg-binary, installed here; plain psycopg does not.
    pytest.importorskip("psycopg_binary")
    assert "psycopg-binary" not in _dependency_closure([Requirement("psycopg")])
    assert "psycopg-binary" in _dependency_closure([Requirement("psycopg[binary]")])


# -- folders the workers' users cannot enter -----------------------------------------------------


def test_a_plugins_folder_under_a_closed_folder_loads(
    hosts: Hosts,
    install: Installer,
    services: FakeHostServices,
    private_folder: Path,
) -> None:
    """Plugins kept beneath a 0700 folder of root's load and run in workers that are users
    of their own: each worker mounts back what it needs of the closed folder."""
    if not worker_users_available():
        pytest.skip("workers do not run as users of their own here")
    plugins = private_folder / "app" / "plugins"
    plugins.mkdir(parents=True)
    host = cast("PluginHost", hosts(sandbox=SandboxPolicy(timeout=10.0), plugins_dir=plugins))
    install(host, "closed-in", SCRATCH_USER)
    fire(host, services)
    assert host.failures("closed-in") == []
    assert services.stored("acme", "closed-in")["scratch"][1] == "written"
    [info] = {w.pid: w for w in host.sandbox.workers() if w.tenant == "acme"}.values()
    assert UNPRIVILEGED_USER in info.layers
    assert PRIVATE_MOUNTS in info.layers


def test_a_closed_temporary_folder_moves_the_scratch_folders_and_says_so(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    closed_tmpdir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With TMPDIR a folder beneath a 0700 one, workers still start: their scratch folders
    go where their users can enter, and the host says once why and which folder."""
    if not worker_users_available():
        pytest.skip("workers do not run as users of their own here")
    temporary = closed_tmpdir
    private_folder = temporary.parent
    caplog.set_level(logging.WARNING, "services_ai_plugins.sandbox")
    host = make_host()
    install(host, "scratcher", SCRATCH_USER)
    install(host, "scratcher-two", SCRATCH_USER)
    fire(host, services)
    assert host.failures("scratcher") == []
    scratch, read = services.stored("acme", "scratcher")["scratch"]
    assert read == "written"
    assert not Path(scratch).is_relative_to(private_folder)
    notes = [r.getMessage() for r in caplog.records if str(temporary) in r.getMessage()]
    assert len(notes) == 1, notes  # once, though several workers started
    assert str(private_folder) in notes[0]
    assert "TMPDIR" in notes[0]


def test_no_reachable_scratch_folder_is_one_clear_error(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    closed_tmpdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where no folder for scratch folders is open to the workers' users, the load fails
    with a message naming the closed folder and what to do, not a Landlock error."""
    if not worker_users_available():
        pytest.skip("workers do not run as users of their own here")
    temporary = closed_tmpdir
    private_folder = temporary.parent
    monkeypatch.setattr(_mounts, "SCRATCH_FALLBACKS", ())
    host = make_host()
    install(host, "stranded", SCRATCH_USER)
    fire(host, services)  # the plugin loads on its first call
    [failure] = host.failures("stranded")
    assert failure.exc_type == "SandboxError"
    assert str(private_folder) in failure.message
    assert "TMPDIR" in failure.message
    assert "landlock" not in failure.message


def test_sandbox_info_checks_the_plugins_and_temporary_folders(
    closed_tmpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sandbox-info says whether the workers reach the plugins folder and a folder for their
    scratch folders, in its text and in its JSON document."""
    from services_ai_plugins._cli._main import main

    if not worker_users_available():
        pytest.skip("workers do not run as users of their own here")
    temporary = closed_tmpdir
    private_folder = temporary.parent
    plugins = private_folder / "plugins"
    plugins.mkdir()

    def run(*extra: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        code = main(["sandbox-info", *extra, "--plugins-dir", str(plugins)], stdout=out, stderr=err)
        assert code == 0, err.getvalue()
        return out.getvalue()

    reach = json.loads(run("--json"))["reach"]
    assert reach["plugins_dir"]["blocked"] == str(private_folder)
    assert reach["plugins_dir"]["ok"] is probe().mount_namespace
    assert reach["scratch"]["temporary"] == str(temporary)
    assert reach["scratch"]["ok"] is True
    assert not Path(reach["scratch"]["folder"]).is_relative_to(private_folder)
    assert str(private_folder) in reach["scratch"]["problem"]
    text = run()
    assert f"plugins folder: {plugins}: {private_folder} shuts the workers' users out" in text
    assert f"scratch folders: in {reach['scratch']['folder']}: " in text

    monkeypatch.setattr(_mounts, "SCRATCH_FALLBACKS", ())
    stranded = json.loads(run("--json"))["reach"]["scratch"]
    assert stranded["ok"] is False
    assert "no worker can start" in stranded["says"]

    open_plugins = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        open_plugins.chmod(0o755)
        out = io.StringIO()
        main(["sandbox-info", "--json", "--plugins-dir", str(open_plugins)], stdout=out)
        fine = json.loads(out.getvalue())["reach"]["plugins_dir"]
        assert fine["ok"] is True
        assert fine["blocked"] is None
    finally:
        open_plugins.rmdir()


def _toy_distribution(entry: Path, name: str, source: str, requires: tuple[str, ...] = ()) -> None:
    """Install distribution ``name`` (one module of that name) in folder ``entry``, as pip would."""
    (entry / name).mkdir(parents=True)
    (entry / name / "__init__.py").write_text(source)
    info = entry / f"{name}-1.0.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0"]
    lines += [f"Requires-Dist: {requirement}" for requirement in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    (info / "top_level.txt").write_text(name + "\n")


def test_a_dependency_installed_outside_the_sdks_folder_is_found(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A declared distribution in another folder of the host's sys.path than the SDK's (a
    dist-packages, a user's site folder) imports in the worker, with what it requires; a
    distribution beside them that nobody declared stays refused."""
    entry = tmp_path / "elsewhere"
    _toy_distribution(
        entry, "guardtoy", "from guardtoy_base import BASE\nTOY = BASE + 1\n", ("guardtoy_base>=1",)
    )
    _toy_distribution(entry, "guardtoy_base", "BASE = 41\n")
    _toy_distribution(entry, "guardtoy_other", "OTHER = 1\n")
    monkeypatch.syspath_prepend(str(entry))
    host = make_host()
    body = """
    @hookimpl
    def lead_created(self, lead, api):
        import importlib
        api.store_set("toys", {
            "toy": outcome(lambda: importlib.import_module("guardtoy").TOY),
            "other": outcome(lambda: importlib.import_module("guardtoy_other").OTHER),
        })
    """
    install(host, "toy-user", body, manifest={"dependencies": ["guardtoy"]})
    fire(host, services)
    assert host.failures("toy-user") == []
    toys = services.stored("acme", "toy-user")["toys"]
    assert toys["toy"] == ["ok", 42], toys
    assert toys["other"][0] == "ModuleNotFoundError"
