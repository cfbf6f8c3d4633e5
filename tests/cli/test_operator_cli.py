"""The operator commands: install, list, show, approve, reject, enable, disable, audit..."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from conftest import EXAMPLE_PLUGIN, CliRunner
from services_ai_plugins._cli._main import EXIT_OK, EXIT_REFUSED, main


class Operator(CliRunner):
    """Runs the CLI against one database and plugins folder."""

    def json(self, *args: str | Path) -> Any:
        code, out, err = self(*args, "--json")
        assert code == EXIT_OK, err
        return json.loads(out)


@pytest.fixture
def operator(tmp_path: Path) -> Operator:
    return Operator(tmp_path)


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_the_whole_lifecycle_from_the_command_line(operator: Operator) -> None:
    """install -> approve -> enable -> list/show -> disable -> uninstall, all audited."""
    code, out, err = operator("install", EXAMPLE_PLUGIN)
    assert code == EXIT_OK, err
    assert out.startswith("installed hello-plugin 1.0.0: pending")
    assert (operator.plugins / "hello-plugin" / "1.0.0" / "main.py").is_file()
    assert operator("enable", "hello-plugin", "--tenant", "acme")[0] == EXIT_REFUSED
    assert operator("approve", "hello-plugin")[1] == "approved hello-plugin: approved\n"
    assert operator("enable", "hello-plugin", "--tenant", "acme")[0] == EXIT_OK
    listed = operator.json("list", "--tenant", "acme")
    assert [p["id"] for p in listed["plugins"]] == ["hello-plugin"]
    shown = operator.json("show", "hello-plugin")
    assert shown["tenants"][0]["enabled"] is True
    assert shown["granted_permissions"] == ["read_leads", "send_notifications"]
    assert operator("disable", "hello-plugin", "--tenant", "acme")[0] == EXIT_OK
    assert operator("uninstall", "hello-plugin")[0] == EXIT_OK
    events = operator.json("audit")["events"]
    assert [e["action"] for e in events] == ["uninstall", "disable", "enable", "approve", "install"]
    assert {e["actor"] for e in events} == {"ops@test"}


def test_reject_needs_a_reason(operator: Operator) -> None:
    """reject takes --reason; the reason is shown afterwards."""
    operator("install", EXAMPLE_PLUGIN)
    assert operator("reject", "hello-plugin")[0] == 2
    assert operator("reject", "hello-plugin", "--reason", "phones home")[0] == EXIT_OK
    assert "reason: phones home" in operator("show", "hello-plugin")[1]


def test_a_refused_install_changes_nothing(operator: Operator, tmp_path: Path) -> None:
    """A hostile archive exits 1 naming the rule and member; db and folder are as they were."""
    operator("install", EXAMPLE_PLUGIN)
    before = (tree(operator.plugins), operator.json("audit")["events"])
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("manifest.json", (EXAMPLE_PLUGIN / "manifest.json").read_text())
        archive.writestr("main.py", "")
        archive.writestr("../escape.py", "print('hi')")
    code, out, err = operator("install", evil)
    assert code == EXIT_REFUSED
    assert "../escape.py" in err
    assert (tree(operator.plugins), operator.json("audit")["events"]) == before
    code, out, _ = operator("install", evil, "--json")
    document = json.loads(out)
    assert document["member"] == "../escape.py"


def test_installing_the_same_version_twice_needs_reinstall(
    operator: Operator, tmp_path: Path
) -> None:
    """A second install of one version is refused unless --reinstall (a rebuilt package:
    the very same code again is refused even then)."""
    folder = tmp_path / "hello"
    shutil.copytree(EXAMPLE_PLUGIN, folder)
    operator("install", folder)
    assert operator("install", folder)[0] == EXIT_REFUSED
    code, _, err = operator("install", folder, "--reinstall")
    assert (code, "same code hash" in err) == (EXIT_REFUSED, True)
    with (folder / "main.py").open("a") as main_py:
        main_py.write("# rebuilt\n")
    code, _, err = operator("install", folder, "--reinstall")
    assert code == EXIT_OK, err


def test_the_environment_names_the_database_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SERVICES_AI_PLUGINS_DB and SERVICES_AI_PLUGINS_DIR stand in for --db and --plugins-dir."""
    monkeypatch.setenv("SERVICES_AI_PLUGINS_DB", str(tmp_path / "env.db"))
    monkeypatch.setenv("SERVICES_AI_PLUGINS_DIR", str(tmp_path / "env-plugins"))
    out = io.StringIO()
    assert main(["install", str(EXAMPLE_PLUGIN), "--actor", "env"], stdout=out) == EXIT_OK
    assert (tmp_path / "env.db").is_file()
    assert (tmp_path / "env-plugins" / "hello-plugin").is_dir()


def test_unknown_plugins_are_refused_with_exit_1(operator: Operator) -> None:
    """Naming a plugin that is not installed is refused, not a traceback."""
    code, _, err = operator("approve", "ghost")
    assert code == EXIT_REFUSED
    assert "no plugin 'ghost' is installed" in err


def test_unmet_requirements_refuse_the_install(operator: Operator, tmp_path: Path) -> None:
    """A plugin that needs another host API is refused before it is recorded or kept."""
    folder = tmp_path / "future"
    folder.mkdir()
    (folder / "main.py").write_text("")
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "id": "future",
                "name": "Future",
                "version": "1.0",
                "requires_api": ">=99",
                "dependencies": ["surely-not-installed-anywhere>=1"],
            }
        )
    )
    code, _, err = operator("install", folder)
    assert code == EXIT_REFUSED
    assert "requires_api" in err
    assert "surely-not-installed-anywhere" in err
    assert tree(operator.plugins) in ([], [".staging"])
    assert operator.json("list")["plugins"] == []


def test_bad_input_is_refused_without_side_effects(operator: Operator) -> None:
    """A missing source creates nothing; a bad --limit is a usage error; an empty reason exits 1."""
    code, _, err = operator("install", operator.db.parent / "missing.zip")
    assert code == EXIT_REFUSED
    assert "no such file or folder" in err
    assert not operator.db.exists()
    assert not operator.plugins.exists()
    assert operator("audit", "--limit", "-5")[0] == 2
    operator("install", EXAMPLE_PLUGIN)
    code, _, err = operator("reject", "hello-plugin", "--reason", " ")
    assert code == EXIT_REFUSED
    assert "reason must be a non-empty string" in err


def test_reading_a_registry_that_does_not_exist_creates_no_file(operator: Operator) -> None:
    """list, show and audit on a missing --db: an empty registry shown, no file left behind."""
    code, out, _ = operator("list")
    assert code == 0
    assert "no plugins" in out
    assert operator("audit")[0] == 0
    code, _, err = operator("show", "nothing")
    assert code == 1
    assert "nothing" in err
    assert not operator.db.exists()
