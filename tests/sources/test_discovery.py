"""Discovery: entry points of installed distributions and folders under the plugins folder."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLE_PLUGIN
from services_ai_plugins import MemoryStorage, PluginStatus, Registry
from services_ai_plugins._sources._discovery import (
    discover_entry_points,
    discover_folders,
    register_discovered,
)
from services_ai_plugins.storage import SourceKind

GROUP = "services_ai_test.plugins"


def distribution(site: Path, name: str, version: str, entry: str, files: dict[str, str]) -> None:
    """Write an installed distribution (dist-info with entry points) into ``site``."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{entry}\n")
    for relative, text in files.items():
        path = site / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in [m for m in sys.modules if m.startswith("sai_test_")]:
        del sys.modules[name]


def test_entry_points_with_a_manifest_attribute_or_resource(site: Path) -> None:
    """A class with a `manifest` attribute, and a module with manifest.json beside it, are found."""
    distribution(
        site,
        "sai-test-one",
        "2.1.0",
        "crm-sync = sai_test_one.plugin:CrmSync",
        {
            "sai_test_one/__init__.py": "",
            "sai_test_one/plugin.py": (
                "class CrmSync:\n"
                "    manifest = {'name': 'CRM Sync', 'permissions': ['read_leads']}\n"
            ),
        },
    )
    distribution(
        site,
        "sai-test-two",
        "0.3",
        "mailer = sai_test_two.main",
        {
            "sai_test_two/__init__.py": "",
            "sai_test_two/main.py": "def hello():\n    return 'hi'\n",
            "sai_test_two/manifest.json": json.dumps(
                {"id": "mailer", "name": "Mailer", "version": "0.3.1"}
            ),
        },
    )
    discovery = discover_entry_points(GROUP)
    assert discovery.refused == ()
    found = {p.manifest.id: p for p in discovery.found}
    assert set(found) == {"crm-sync", "mailer"}
    crm = found["crm-sync"]
    assert (str(crm.manifest.version), crm.source) == ("2.1.0", SourceKind.ENTRY_POINT)
    assert crm.manifest.permissions == ("read_leads",)
    assert crm.plugin.__name__ == "CrmSync"  # type: ignore[attr-defined]
    assert str(found["mailer"].manifest.version) == "0.3.1"
    assert len(crm.code_hash) == 64


def test_a_broken_entry_point_is_refused_and_discovery_goes_on(site: Path) -> None:
    """An entry point that fails to import, or has no manifest, is listed as refused."""
    distribution(
        site,
        "sai-test-bad",
        "1.0",
        "broken = sai_test_bad.main:Nope",
        {"sai_test_bad/__init__.py": "", "sai_test_bad/main.py": "raise ImportError('no deps')\n"},
    )
    distribution(
        site,
        "sai-test-bare",
        "1.0",
        "bare = sai_test_bare.main:Bare",
        {"sai_test_bare/__init__.py": "", "sai_test_bare/main.py": "class Bare: ...\n"},
    )
    distribution(
        site,
        "sai-test-good",
        "1.0",
        "good = sai_test_good.main:Good",
        {
            "sai_test_good/__init__.py": "",
            "sai_test_good/main.py": "class Good:\n    manifest = {'name': 'Good'}\n",
        },
    )
    discovery = discover_entry_points(GROUP)
    assert [p.manifest.id for p in discovery.found] == ["good"]
    reasons = {where.split()[2]: str(error) for where, error in discovery.refused}
    assert "ImportError: no deps" in reasons["broken"]
    assert "no manifest" in reasons["bare"]


def test_plugin_folders_are_found_and_installed_as_pending(tmp_path: Path) -> None:
    """Folders with a manifest are found; archive installs and broken folders are not used."""
    plugins = tmp_path / "plugins"
    shutil.copytree(EXAMPLE_PLUGIN, plugins / "hello")
    (plugins / "broken").mkdir()
    (plugins / "broken" / "manifest.json").write_text("{")
    (plugins / "crm-sync" / "1.0.0").mkdir(parents=True)  # an installed archive's layout
    (plugins / ".staging").mkdir()
    discovery = discover_folders(plugins)
    assert [p.manifest.id for p in discovery.found] == ["hello-plugin"]
    assert [Path(where).name for where, _ in discovery.refused] == ["broken"]
    registry = Registry(MemoryStorage())
    [record] = register_discovered(registry, discovery.found, actor="discovery")
    assert (record.status, record.source) == (PluginStatus.PENDING, SourceKind.FOLDER)
    assert record.package_path == str(plugins / "hello")
    # Discovering the same code again changes nothing.
    register_discovered(registry, discover_folders(plugins).found, actor="discovery")
    assert len(registry.audit_log()) == 1


def test_entry_point_plugins_may_be_approved_at_once(site: Path) -> None:
    """An operator can choose to approve pip-installed plugins as they are discovered."""
    distribution(
        site,
        "sai-test-three",
        "1.0",
        "three = sai_test_three.main:Three",
        {
            "sai_test_three/__init__.py": "",
            "sai_test_three/main.py": "class Three:\n    manifest = {'name': 'Three Plugin'}\n",
        },
    )
    registry = Registry(MemoryStorage())
    found = discover_entry_points(GROUP).found
    [record] = register_discovered(registry, found, actor="ops", approve_entry_points=True)
    assert record.status is PluginStatus.APPROVED
    assert [e.action for e in registry.audit_log()] == ["approve", "install"]


def _keys(entries: object) -> list[tuple[str, str, str]]:
    return sorted((e.name, e.value, e.dist.version) for e in entries)  # type: ignore[attr-defined]


def test_entry_point_reading_agrees_with_the_standard_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast reader gives what `importlib.metadata.entry_points(group=...)` gives.

    Covered: a distribution installed twice on sys.path (the first one wins,
    even when the later copy publishes more), the group's name appearing in
    another section only, names that differ in case and separators, and
    distributions without entry points.
    """
    import importlib.metadata

    from services_ai_plugins._sources._discovery import _entry_points

    first, second = tmp_path / "first", tmp_path / "second"

    def write(site: Path, folder: str, name: str, version: str, text: str | None) -> None:
        info = site / folder
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        if text is not None:
            (info / "entry_points.txt").write_text(text)

    write(
        first, "Sai.Test_Twice-2.0.dist-info", "Sai.Test_Twice", "2.0", f"[{GROUP}]\nnew = m:New\n"
    )
    write(
        second,
        "sai_test_twice-1.0.dist-info",
        "sai-test-twice",
        "1.0",
        f"[{GROUP}]\nnew = m:Old\nonly-old = m:Gone\n",
    )
    write(
        first,
        "sai_test_mention-1.0.dist-info",
        "sai-test-mention",
        "1.0",
        f"[console_scripts]\nx = {GROUP}:main\n",
    )
    write(first, "sai_test_none-1.0.dist-info", "sai-test-none", "1.0", None)
    write(
        second, "sai_test_other-3.0.dist-info", "sai-test-other", "3.0", f"[{GROUP}]\nother = o:P\n"
    )
    monkeypatch.setattr(sys, "path", [str(first), str(second)])

    ours = _keys(_entry_points(GROUP))
    assert ours == _keys(importlib.metadata.entry_points(group=GROUP))
    assert ours == [("new", "m:New", "2.0"), ("other", "o:P", "3.0")]


def test_a_distribution_without_a_folder_name_is_named_from_its_metadata() -> None:
    """A distribution from another finder (no `*.dist-info` folder) is named by METADATA."""
    import importlib.metadata

    from services_ai_plugins._sources._discovery import _distribution_name

    class InMemory(importlib.metadata.Distribution):
        def read_text(self, filename: str) -> str | None:
            if filename == "METADATA":
                return "Metadata-Version: 2.1\nName: Sai.Test__Memory\nVersion: 1.0\n"
            return None

        def locate_file(self, path: str | os.PathLike[str]) -> Path:
            return Path(path)

    assert _distribution_name(InMemory()) == "sai_test_memory"
