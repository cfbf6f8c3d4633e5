"""Loading installed plugins: verified by hash, each under its own module namespace."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from services_ai_plugins import (
    MemoryStorage,
    PackageError,
    PluginStatus,
    Registry,
    pack_plugin,
)
from services_ai_plugins._sources import _loader
from services_ai_plugins._sources._archive import install_archive
from services_ai_plugins._sources._loader import (
    IntegrityError,
    load_plugin,
    namespace,
    unload_plugin,
)


def make_plugin(root: Path, plugin_id: str, answer: str, main: str | None = None) -> Path:
    folder = root / plugin_id
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "id": plugin_id,
                "name": plugin_id.title(),
                "version": "1.0.0",
                "entry_point": "main.py",
                "plugin_class": "Plugin",
            }
        )
    )
    (folder / "utils.py").write_text(f"ANSWER = {answer!r}\n")
    (folder / "main.py").write_text(
        main
        or (
            "from . import utils\n\n"
            "class Plugin:\n"
            "    def answer(self):\n"
            "        return utils.ANSWER\n"
        )
    )
    return folder


@pytest.fixture
def registry() -> Registry:
    return Registry(MemoryStorage())


def install(tmp_path: Path, registry: Registry, folder: Path) -> None:
    archive = pack_plugin(folder, tmp_path / f"{folder.name}.zip").path
    (tmp_path / "plugins").mkdir(exist_ok=True)
    install_archive(archive, tmp_path / "plugins", registry, actor="ops")
    registry.approve(folder.name, actor="admin")


def test_two_plugins_with_the_same_module_names_load_side_by_side(
    tmp_path: Path, registry: Registry
) -> None:
    """Both ship main.py and utils.py; each sees only its own."""
    for plugin_id, answer in (("alpha", "from alpha"), ("bravo", "from bravo")):
        install(tmp_path, registry, make_plugin(tmp_path / "src", plugin_id, answer))
    alpha = load_plugin(registry.plugin("alpha"))
    bravo = load_plugin(registry.plugin("bravo"))
    assert alpha.plugin.answer() == "from alpha"  # type: ignore[attr-defined]
    assert bravo.plugin.answer() == "from bravo"  # type: ignore[attr-defined]
    assert alpha.module is not bravo.module
    assert "utils" not in sys.modules
    assert "main" not in sys.modules
    assert f"{namespace('alpha')}.utils" in sys.modules
    assert unload_plugin("alpha") == 3
    assert f"{namespace('alpha')}.utils" not in sys.modules
    assert f"{namespace('bravo')}.utils" in sys.modules
    unload_plugin("bravo")


def test_one_changed_byte_is_detected_at_the_next_load(tmp_path: Path, registry: Registry) -> None:
    """Tampering with an installed file refuses the load, records it and suspends the plugin."""
    install(tmp_path, registry, make_plugin(tmp_path / "src", "alpha", "ok"))
    record = registry.plugin("alpha")
    load_plugin(record)
    unload_plugin("alpha")
    installed = Path(str(record.package_path)) / "utils.py"
    installed.write_bytes(installed.read_bytes().replace(b"ok", b"oK"))
    with pytest.raises(IntegrityError) as caught:
        load_plugin(record, registry=registry)
    assert caught.value.expected == record.code_hash
    assert namespace("alpha") not in sys.modules
    [failure] = registry.storage.failures("alpha")
    assert (failure.hook, failure.exc_type) == ("load", "IntegrityError")
    assert registry.plugin("alpha").status is PluginStatus.SUSPENDED
    assert registry.audit_log(plugin_id="alpha")[0].action == "suspend"


def test_a_missing_plugin_folder_is_recorded_as_a_load_failure(
    tmp_path: Path, registry: Registry
) -> None:
    """No folder to load from: refused with a PackageError that names it, and recorded."""
    install(tmp_path, registry, make_plugin(tmp_path / "src", "alpha", "ok"))
    record = registry.plugin("alpha")
    shutil.rmtree(str(record.package_path))
    with pytest.raises(PackageError, match="its plugin folder is missing") as caught:
        load_plugin(record, registry=registry)
    assert caught.value.path == record.package_path
    [failure] = registry.storage.failures("alpha")
    assert (failure.hook, failure.exc_type) == ("load", "PackageError")
    assert registry.plugin("alpha").status is PluginStatus.APPROVED  # not suspended: no code ran


def test_a_module_changed_after_the_check_is_not_compiled(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file changed between the folder's check and its import: the loader refuses its bytes."""
    install(tmp_path, registry, make_plugin(tmp_path / "src", "alpha", "ok"))
    record = registry.plugin("alpha")
    utils = Path(str(record.package_path)) / "utils.py"
    check = _loader.check_code

    def check_then_change(plugin_id: str, folder: Path, expected: str) -> None:
        check(plugin_id, folder, expected)
        utils.write_text("ANSWER = 'tampered'\n")

    monkeypatch.setattr(_loader, "check_code", check_then_change)
    with pytest.raises(PackageError, match="failed to load: IntegrityError") as caught:
        load_plugin(record, registry=registry)
    cause = caught.value.__cause__
    assert isinstance(cause, IntegrityError)
    assert cause.member == "utils.py"
    assert namespace("alpha") not in sys.modules
    [failure] = registry.storage.failures("alpha")
    assert (failure.hook, failure.exc_type) == ("load", "IntegrityError")
    assert registry.plugin("alpha").status is PluginStatus.SUSPENDED


def test_an_import_error_is_recorded_and_the_host_carries_on(
    tmp_path: Path, registry: Registry
) -> None:
    """A plugin whose import fails is recorded with its traceback; others still load."""
    crash = "class Plugin: ...\nraise RuntimeError('boom')\n"
    broken = make_plugin(tmp_path / "src", "alpha", "x", main=crash)
    install(tmp_path, registry, broken)
    install(tmp_path, registry, make_plugin(tmp_path / "src", "bravo", "fine"))
    with pytest.raises(PackageError, match="failed to load: RuntimeError: boom"):
        load_plugin(registry.plugin("alpha"), registry=registry)
    [failure] = registry.storage.failures("alpha")
    assert "RuntimeError: boom" in failure.traceback
    assert namespace("alpha") not in sys.modules
    assert load_plugin(registry.plugin("bravo")).plugin.answer() == "fine"  # type: ignore[attr-defined]
    unload_plugin("bravo")


def test_loading_leaves_the_plugin_folder_as_installed(tmp_path: Path, registry: Registry) -> None:
    """Importing writes no bytecode into the plugin, so the next load verifies again."""
    install(tmp_path, registry, make_plugin(tmp_path / "src", "alpha", "ok"))
    record = registry.plugin("alpha")
    for _ in range(3):
        assert load_plugin(record, registry=registry).plugin.answer() == "ok"  # type: ignore[attr-defined]
    assert not (Path(str(record.package_path)) / "__pycache__").exists()
    assert registry.plugin("alpha").status is PluginStatus.APPROVED
    unload_plugin("alpha")


def _bytecode_of(source: str, scratch: Path) -> bytes:
    """``source`` compiled to an unchecked-hash .pyc (which Python's loader takes on trust)."""
    import py_compile

    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "other.py").write_text(source)
    py_compile.compile(
        str(scratch / "other.py"),
        cfile=str(scratch / "other.pyc"),
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    return (scratch / "other.pyc").read_bytes()


def test_packages_and_namespace_folders_load_from_source_only(tmp_path: Path) -> None:
    """A package, a folder without __init__.py and their modules: each compiled from source.

    Every one of them has planted bytecode in its __pycache__, which Python's own
    loader would run instead; none of it runs.
    """
    from services_ai_plugins._manifest import Manifest
    from services_ai_plugins._sources._loader import _SourceLoader, import_plugin

    main = (
        "from .pkg import mod\n"
        "from .ns import util\n"
        "from . import pkg\n\n"
        "class Plugin:\n"
        "    def answer(self):\n"
        "        return [pkg.WHO, mod.WHO, util.WHO]\n"
    )
    folder = make_plugin(tmp_path, "layered", "x", main=main)
    files = {
        "pkg/__init__.py": "WHO = 'pkg source'\n",
        "pkg/mod.py": "WHO = 'mod source'\n",
        "ns/util.py": "WHO = 'util source'\n",
    }
    tag = sys.implementation.cache_tag
    for relative, source in files.items():
        path = folder / relative
        path.parent.mkdir(exist_ok=True)
        path.write_text(source)
        cached = path.parent / "__pycache__" / f"{path.stem}.{tag}.pyc"
        cached.parent.mkdir(exist_ok=True)
        cached.write_bytes(_bytecode_of(source.replace("source", "bytecode"), tmp_path / "s"))
    cached = folder / "__pycache__" / f"main.{tag}.pyc"
    cached.parent.mkdir(exist_ok=True)
    cached.write_bytes(_bytecode_of(main.replace("util.WHO]", "'main bytecode']"), tmp_path / "s"))
    before = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
    manifest = Manifest.from_file(folder / "manifest.json")
    loaded = import_plugin("layered", folder, manifest)
    try:
        assert loaded.plugin.answer() == ["pkg source", "mod source", "util source"]  # type: ignore[attr-defined]
        assert isinstance(loaded.module.__loader__, _SourceLoader)
    finally:
        unload_plugin("layered")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == before


def test_a_missing_module_is_not_found_as_usual(tmp_path: Path) -> None:
    """``from . import nothing``: the plugin sees the ImportError Python would raise."""
    from services_ai_plugins._manifest import Manifest
    from services_ai_plugins._sources._loader import import_plugin

    main = (
        "try:\n"
        "    from . import nothing\n"
        "except ImportError as error:\n"
        "    FOUND = type(error).__name__\n\n"
        "class Plugin:\n"
        "    found = FOUND\n"
    )
    folder = make_plugin(tmp_path, "missing", "x", main=main)
    loaded = import_plugin("missing", folder, Manifest.from_file(folder / "manifest.json"))
    try:
        assert loaded.plugin.found == "ImportError"  # type: ignore[attr-defined]
    finally:
        unload_plugin("missing")
