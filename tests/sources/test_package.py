"""Validating plugin folders and archives, and packing folders reproducibly."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest

from conftest import MINIMAL_PLUGIN, PluginWriter
from services_ai_plugins import (
    ManifestError,
    PackageError,
    pack_plugin,
    validate_plugin,
)

PLUGIN_CODE = "class MyPlugin:\n    pass\n"


def problems(error: pytest.ExceptionInfo[ManifestError]) -> dict[str, str]:
    return {p.path: p.message for p in error.value.problems}


def test_a_valid_folder_validates(write_plugin: PluginWriter) -> None:
    """A folder with a manifest and its entry module validates as a folder."""
    folder = write_plugin(MINIMAL_PLUGIN, {"main.py": PLUGIN_CODE})
    checked = validate_plugin(folder)
    assert checked.kind == "folder"
    assert checked.manifest.id == "my-plugin"


def test_the_example_plugin_validates(example_plugin: Path) -> None:
    """The bundled example validates as a folder and as a manifest file."""
    assert validate_plugin(example_plugin).manifest.id == "hello-plugin"
    assert validate_plugin(example_plugin / "manifest.json").kind == "manifest"


def test_a_missing_entry_point_is_named(write_plugin: PluginWriter) -> None:
    """A folder whose entry point module is missing says which files were looked for."""
    folder = write_plugin({**MINIMAL_PLUGIN, "entry_point": "pkg.main"}, {"main.py": PLUGIN_CODE})
    with pytest.raises(ManifestError) as caught:
        validate_plugin(folder)
    assert problems(caught) == {
        "entry_point": "the entry point module is missing: no pkg/main.py or "
        "pkg/main/__init__.py in the plugin"
    }
    assert caught.value.source == str(folder)


def test_a_package_entry_point_is_found(write_plugin: PluginWriter) -> None:
    """A dotted entry point may be a package's __init__.py."""
    folder = write_plugin(
        {**MINIMAL_PLUGIN, "entry_point": "pkg.main"}, {"pkg/main/__init__.py": PLUGIN_CODE}
    )
    assert validate_plugin(folder).manifest.entry_module == "pkg.main"


def test_an_entry_point_that_does_not_compile_is_reported(write_plugin: PluginWriter) -> None:
    """The entry module must compile; the line is named. Nothing is executed."""
    folder = write_plugin(
        MINIMAL_PLUGIN, {"main.py": "import os\nos._exit(3)\nclass MyPlugin(:\n    pass\n"}
    )
    with pytest.raises(ManifestError) as caught:
        validate_plugin(folder)
    message = problems(caught)["entry_point"]
    assert message.startswith("main.py does not compile:")
    assert "(line 3)" in message


@pytest.mark.parametrize(
    "source",
    [
        "class MyPlugin:\n    pass\n",
        "from ._impl import Impl as MyPlugin\n",
        "MyPlugin = make_plugin()\n",
        "MyPlugin: type = object\n",
        "def MyPlugin():\n    return None\n",
        "try:\n    from fast import MyPlugin\nexcept ImportError:\n    class MyPlugin: ...\n",
        "if True:\n    MyPlugin, Other = object, object\n",
    ],
)
def test_plugin_class_may_be_defined_in_any_top_level_way(
    write_plugin: PluginWriter, source: str
) -> None:
    """A class, an import, an assignment or a factory all define plugin_class."""
    validate_plugin(write_plugin(MINIMAL_PLUGIN, {"main.py": source}))


def test_an_entry_point_that_parses_but_does_not_compile(write_plugin: PluginWriter) -> None:
    """Compiling catches what parsing lets through, such as return outside a function."""
    folder = write_plugin(MINIMAL_PLUGIN, {"main.py": "class MyPlugin: ...\nreturn 1\n"})
    with pytest.raises(ManifestError) as caught:
        validate_plugin(folder)
    assert "'return' outside function (line 2)" in problems(caught)["entry_point"]


def test_an_undefined_plugin_class_is_reported(write_plugin: PluginWriter) -> None:
    """plugin_class must be defined at the top level of the entry module."""
    folder = write_plugin(MINIMAL_PLUGIN, {"main.py": "class Other:\n    class MyPlugin: ...\n"})
    with pytest.raises(ManifestError) as caught:
        validate_plugin(folder)
    assert problems(caught) == {
        "plugin_class": "'MyPlugin' is not defined at the top level of main.py"
    }


def test_manifest_and_content_problems_are_separate_steps(write_plugin: PluginWriter) -> None:
    """A broken manifest is reported from the manifest file itself."""
    folder = write_plugin({"name": "x", "version": "nope"}, {})
    with pytest.raises(ManifestError) as caught:
        validate_plugin(folder)
    assert caught.value.source == str(folder / "manifest.json")
    assert set(problems(caught)) == {"version"}


def test_a_missing_icon_is_reported(write_plugin: PluginWriter) -> None:
    """The icon the manifest names must be in the plugin."""
    folder = write_plugin({**MINIMAL_PLUGIN, "icon": "icon.png"}, {"main.py": PLUGIN_CODE})
    with pytest.raises(ManifestError) as caught:
        validate_plugin(folder)
    assert set(problems(caught)) == {"icon"}


def test_a_folder_without_a_manifest(tmp_path: Path) -> None:
    """An empty folder is refused with a message naming the manifest file."""
    with pytest.raises(ManifestError, match=r"has no manifest\.json"):
        validate_plugin(tmp_path)


def test_a_path_that_does_not_exist(tmp_path: Path) -> None:
    """A missing path is a PackageError naming it."""
    with pytest.raises(PackageError, match="no such file or folder") as caught:
        validate_plugin(tmp_path / "missing")
    assert caught.value.path == str(tmp_path / "missing")


def test_a_zip_that_is_not_a_zip(tmp_path: Path) -> None:
    """A .zip that is not an archive is refused as such."""
    fake = tmp_path / "plugin.zip"
    fake.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(PackageError, match="not a readable ZIP archive"):
        validate_plugin(fake)


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_an_archive_validates_at_its_root_or_in_one_top_folder(tmp_path: Path) -> None:
    """A ZIP holds the plugin at its root, or inside a single top-level folder."""
    import json

    manifest = json.dumps(MINIMAL_PLUGIN).encode()
    flat = _zip(tmp_path / "flat.zip", {"manifest.json": manifest, "main.py": PLUGIN_CODE.encode()})
    nested = _zip(
        tmp_path / "nested.zip",
        {"my-plugin/manifest.json": manifest, "my-plugin/main.py": PLUGIN_CODE.encode()},
    )
    for archive in (flat, nested):
        checked = validate_plugin(archive)
        assert checked.kind == "archive"
        assert checked.manifest.id == "my-plugin"


def test_an_archive_without_its_entry_point(tmp_path: Path) -> None:
    """The entry point check applies to archives too."""
    import json

    archive = _zip(tmp_path / "p.zip", {"manifest.json": json.dumps(MINIMAL_PLUGIN).encode()})
    with pytest.raises(ManifestError) as caught:
        validate_plugin(archive)
    assert set(problems(caught)) == {"entry_point"}


def test_an_archive_without_a_manifest(tmp_path: Path) -> None:
    """An archive with no manifest at its root says so."""
    archive = _zip(tmp_path / "p.zip", {"a/manifest.json": b"{}", "b/main.py": b""})
    with pytest.raises(ManifestError, match=r"no manifest\.json at its root"):
        validate_plugin(archive)


def test_an_archive_manifest_error_names_the_member(tmp_path: Path) -> None:
    """Problems inside an archive's manifest name the archive and the member."""
    archive = _zip(tmp_path / "p.zip", {"manifest.json": b"{not json"})
    with pytest.raises(ManifestError) as caught:
        validate_plugin(archive)
    assert caught.value.source == f"{archive}!manifest.json"
    assert "line 1, column 2" in str(caught.value)


def test_an_oversized_archive_manifest_is_refused_without_reading_it(tmp_path: Path) -> None:
    """A manifest member over the cap is refused by its declared size."""
    archive = _zip(tmp_path / "p.zip", {"manifest.json": b" " * (300 * 1024)})
    with pytest.raises(ManifestError, match="too large"):
        validate_plugin(archive)


# -- pack --------------------------------------------------------------------------------------


def _tree(write_plugin: PluginWriter) -> Path:
    folder = write_plugin(
        MINIMAL_PLUGIN,
        {
            "main.py": PLUGIN_CODE,
            "lib/util.py": "X = 1\n",
            "lib/data.bin": bytes(range(256)),
            ".env": "SECRET=1\n",
            ".git/config": "[core]\n",
            "__pycache__/main.cpython-311.pyc": b"\0",
            "lib/__pycache__/util.cpython-311.pyc": b"\0",
            "lib/stale.pyc": b"\0",
        },
    )
    (folder / "run.sh").write_text("#!/bin/sh\n")
    (folder / "run.sh").chmod(0o755)
    return folder


def test_pack_writes_sorted_normalised_entries(write_plugin: PluginWriter, tmp_path: Path) -> None:
    """Entries are sorted, timestamps fixed, modes 0644/0755, and junk left out."""
    folder = _tree(write_plugin)
    result = pack_plugin(folder, tmp_path / "out" / "plugin.zip")
    assert result.files == ("lib/data.bin", "lib/util.py", "main.py", "manifest.json", "run.sh")
    assert result.skipped == (
        ".env",
        ".git/",
        "__pycache__/",
        "lib/__pycache__/",
        "lib/stale.pyc",
    )
    with zipfile.ZipFile(result.path) as archive:
        infos = archive.infolist()
        assert [i.filename for i in infos] == list(result.files)
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        modes = {i.filename: stat.S_IMODE(i.external_attr >> 16) for i in infos}
        assert modes["run.sh"] == 0o755
        assert modes["main.py"] == 0o644
        assert archive.read("lib/data.bin") == bytes(range(256))
    assert result.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()


def test_pack_is_byte_for_byte_reproducible(write_plugin: PluginWriter, tmp_path: Path) -> None:
    """Packing twice, even after timestamps change, gives the same SHA-256."""
    folder = _tree(write_plugin)
    first = pack_plugin(folder, tmp_path / "a.zip")
    for path in folder.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    copy = shutil.copytree(folder, tmp_path / "elsewhere")
    second = pack_plugin(copy, tmp_path / "b.zip")
    assert first.sha256 == second.sha256
    assert first.path.read_bytes() == second.path.read_bytes()


def test_the_packed_archive_validates(write_plugin: PluginWriter, tmp_path: Path) -> None:
    """What pack writes is a valid plugin archive."""
    result = pack_plugin(_tree(write_plugin), tmp_path / "p.zip")
    assert validate_plugin(result.path).manifest == result.manifest


def test_pack_defaults_to_id_and_version_here(
    write_plugin: PluginWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an output path, pack writes ID-VERSION.zip in the current folder."""
    folder = write_plugin(MINIMAL_PLUGIN, {"main.py": PLUGIN_CODE})
    monkeypatch.chdir(tmp_path)
    result = pack_plugin(folder)
    assert result.path == Path("my-plugin-1.0.0.zip")
    assert (tmp_path / "my-plugin-1.0.0.zip").is_file()


def test_pack_into_the_plugin_folder_leaves_the_archive_out(write_plugin: PluginWriter) -> None:
    """Writing the archive inside the folder does not pack the archive into itself."""
    folder = write_plugin(MINIMAL_PLUGIN, {"main.py": PLUGIN_CODE})
    first = pack_plugin(folder, folder / "dist.zip")
    second = pack_plugin(folder, folder / "dist.zip")
    assert "dist.zip" not in second.files
    assert first.sha256 == second.sha256


def test_pack_leaves_out_earlier_archives_of_the_plugin(
    write_plugin: PluginWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pack .` after a version bump does not pack the previous archive."""
    folder = write_plugin(MINIMAL_PLUGIN, {"main.py": PLUGIN_CODE, "data/keep.zip": b"PK"})
    monkeypatch.chdir(folder)
    pack_plugin(".")
    manifest = (folder / "manifest.json").read_text().replace("1.0.0", "1.1.0")
    (folder / "manifest.json").write_text(manifest)
    second = pack_plugin(".")
    assert second.path == Path("my-plugin-1.1.0.zip")
    assert "my-plugin-1.0.0.zip" in second.skipped
    assert "data/keep.zip" in second.files


def test_pack_refuses_symbolic_links(write_plugin: PluginWriter, tmp_path: Path) -> None:
    """A link in the folder is refused by name, and no archive is written."""
    folder = write_plugin(MINIMAL_PLUGIN, {"main.py": PLUGIN_CODE})
    (folder / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(PackageError, match="symbolic link") as caught:
        pack_plugin(folder, tmp_path / "p.zip")
    assert caught.value.member == "passwd"
    assert list(tmp_path.glob("*.zip")) == []
    assert list(tmp_path.glob(".p.zip*")) == []


def test_pack_refuses_an_invalid_folder_and_writes_nothing(
    write_plugin: PluginWriter, tmp_path: Path
) -> None:
    """A folder that does not validate is not packed, and a previous archive survives."""
    folder = write_plugin(MINIMAL_PLUGIN, {"main.py": PLUGIN_CODE})
    target = tmp_path / "p.zip"
    good = pack_plugin(folder, target)
    (folder / "main.py").unlink()
    with pytest.raises(ManifestError):
        pack_plugin(folder, target)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == good.sha256


def test_pack_refuses_a_file(tmp_path: Path) -> None:
    """pack takes a folder; a file is a PackageError."""
    path = tmp_path / "manifest.json"
    path.write_text("{}")
    with pytest.raises(PackageError, match="is not a folder"):
        pack_plugin(path)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("main.pyc", "bytecode"),
        ("lib/util.PYO", "bytecode"),
        ("__pycache__/main.cpython-311.pyc", "bytecode"),
        ("lib/__pycache__/", "bytecode"),
        ("lib/__pycache__/notes.txt", "bytecode"),
        ("fast.cpython-311-x86_64-linux-gnu.so", "native-module"),
        ("fast.abi3.so", "native-module"),
        ("lib/fast.pyd", "native-module"),
        ("libhelper.so.1.2", "native-module"),
        ("helper.DYLIB", "native-module"),
        ("helper.dll", "native-module"),
        ("main.py", None),
        ("solver.py", None),
        ("data/so.json", None),
        ("notes.so.txt", None),
        ("pycache_notes.md", None),
        ("lib/", None),
        ("lib.so/", None),
    ],
)
def test_compiled_code_is_told_from_source_and_data(name: str, kind: str | None) -> None:
    """What validate and install refuse as compiled code, and what they leave alone."""
    from services_ai_plugins._sources._package import compiled_kind

    assert compiled_kind(name) == kind
