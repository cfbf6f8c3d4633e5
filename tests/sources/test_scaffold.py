"""``services-ai-plugins new``: a plugin folder that validates and tests from the start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services_ai_plugins import ManifestError, PackageError, pack_plugin, validate_plugin
from services_ai_plugins._cli._main import main
from services_ai_plugins.tooling import scaffold_plugin


def test_new_creates_a_plugin_that_validates(tmp_path: Path) -> None:
    """The scaffolded folder passes validate at once, and packs."""
    created = scaffold_plugin("Lead Notifier", tmp_path, author="Ada", email="ada@example.com")
    assert created.path == tmp_path / "lead-notifier"
    assert set(created.files) == {
        "manifest.json",
        "main.py",
        "tests/test_plugin.py",
        "pytest.ini",
        "README.md",
    }
    checked = validate_plugin(created.path)
    assert checked.notes == ()
    manifest = checked.manifest
    assert (manifest.id, manifest.name, manifest.plugin_class) == (
        "lead-notifier",
        "Lead Notifier",
        "LeadNotifierPlugin",
    )
    assert manifest.author == "Ada"
    assert manifest.hooks == ("lead_created",)
    assert pack_plugin(created.path, tmp_path / "out.zip").files == (
        "README.md",
        "main.py",
        "manifest.json",
        "pytest.ini",
        "tests/test_plugin.py",
    )


def test_an_id_name_gets_a_display_name(tmp_path: Path) -> None:
    """Given an id, the display name is made from its words."""
    created = scaffold_plugin("crm-sync", tmp_path)
    assert (created.manifest.id, created.manifest.name) == ("crm-sync", "Crm Sync")


@pytest.mark.slow
def test_the_scaffolded_tests_pass(tmp_path: Path) -> None:
    """pytest in the new folder runs the scaffolded tests, and they pass."""
    created = scaffold_plugin("lead-notifier", tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=created.path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def test_new_refuses_an_existing_folder(tmp_path: Path) -> None:
    """An existing folder is never overwritten."""
    (tmp_path / "lead-notifier").mkdir()
    (tmp_path / "lead-notifier" / "keep.txt").write_text("mine")
    with pytest.raises(PackageError, match="already exists"):
        scaffold_plugin("lead-notifier", tmp_path)
    assert (tmp_path / "lead-notifier" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lead-notifier"]


def test_new_refuses_an_unusable_name(tmp_path: Path) -> None:
    """A name with nothing to make an id from is refused, leaving nothing behind."""
    with pytest.raises(PackageError, match="cannot make a plugin id"):
        scaffold_plugin("???", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_new_refuses_a_bad_email(tmp_path: Path) -> None:
    """Author details go through the manifest rules before anything is written."""
    with pytest.raises(ManifestError, match="email"):
        scaffold_plugin("lead-notifier", tmp_path, email="not-an-address")
    assert list(tmp_path.iterdir()) == []


def test_new_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The new command prints what it made; a second run is refused with exit code 1."""
    assert main(["new", "Invoice Reminder", "-d", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"created {tmp_path / 'invoice-reminder'}/")
    assert main(["new", "Invoice Reminder", "-d", str(tmp_path), "--json"]) == 1
    assert '"error": "PackageError"' in capsys.readouterr().out
