"""The services-ai-plugins command line: output, --json and exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import MINIMAL_PLUGIN, PluginWriter
from services_ai_plugins import HOST_API_VERSION, __version__, manifest_json_schema
from services_ai_plugins._cli._main import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, main


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)


def cli(*args: str | Path) -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in args], stdout=out, stderr=err)
    return Run(code, out.getvalue(), err.getvalue())


def test_validate_a_good_plugin_prints_one_line(example_plugin: Path) -> None:
    """A valid plugin gives a one-line summary and exit code 0."""
    run = cli("validate", example_plugin)
    assert run.code == EXIT_OK
    assert run.out == f"ok: hello-plugin 1.0.0 (Hello Plugin), folder {example_plugin}\n"
    assert run.err == ""


def test_validate_a_broken_manifest_lists_every_problem(tmp_path: Path) -> None:
    """Every problem is printed with its JSON path, and the exit code is 1."""
    path = tmp_path / "manifest.json"
    path.write_text(
        json.dumps(
            {
                "name": "Broken",
                "version": "not-a-version",
                "permissions": ["ok", "Not OK"],
                "settings": [{"name": "limit", "type": "integer", "default": "ten"}],
            }
        )
    )
    run = cli("validate", path)
    assert run.code == EXIT_REFUSED
    assert run.out == ""
    assert run.err.startswith(f"error: {path}: invalid manifest (3 problems):\n")
    assert "  version: 'not-a-version' is not a valid version" in run.err
    assert "  permissions[1]: must be a permission name" in run.err
    assert "  settings[0].default: must be an integer (got 'ten')" in run.err


def test_validate_json_output_for_problems(tmp_path: Path) -> None:
    """--json prints the problems as data, still with exit code 1."""
    path = tmp_path / "manifest.json"
    path.write_text('{"name": "Broken", "version": "1", "isolation": "vm"}')
    run = cli("validate", "--json", path)
    assert run.code == EXIT_REFUSED
    document = run.json()
    assert document["ok"] is False
    assert document["error"] == "ManifestError"
    assert document["source"] == str(path)
    assert document["problems"] == [
        {"path": "isolation", "message": "must be one of 'process', 'inprocess' (got 'vm')"}
    ]


def test_validate_json_output_for_success_carries_notes(tmp_path: Path) -> None:
    """--json on success gives id, version and the loader's notes."""
    path = tmp_path / "manifest.json"
    path.write_text('{"name": "Plugin Name", "version": "1.0"}')
    run = cli("validate", path, "--json")
    assert run.code == EXIT_OK
    document = run.json()
    assert document["ok"] is True
    assert (document["id"], document["version"], document["kind"]) == (
        "plugin-name",
        "1.0",
        "manifest",
    )
    assert document["notes"][0].startswith("id: derived 'plugin-name'")
    assert "note: id: derived" in cli("validate", path).out


def test_validate_says_the_entry_point_is_missing(write_plugin: PluginWriter) -> None:
    """On a folder whose entry point is missing, validate says so."""
    folder = write_plugin(MINIMAL_PLUGIN, {})
    run = cli("validate", folder)
    assert run.code == EXIT_REFUSED
    assert "entry_point: the entry point module is missing: no main.py in the plugin" in run.err


def test_validate_says_where_json_stops_parsing(tmp_path: Path) -> None:
    """On a file that is not JSON, validate names the line and column."""
    path = tmp_path / "manifest.json"
    path.write_text('{\n  "name": "x",\n  "version": "1",\n}\n')
    run = cli("validate", path)
    assert run.code == EXIT_REFUSED
    assert "is not valid JSON: Expecting property name enclosed in double quotes" in run.err
    assert "at line 4, column 1" in run.err


def test_validate_a_missing_path(tmp_path: Path) -> None:
    """A path that does not exist is refused with exit code 1, not a traceback."""
    run = cli("validate", tmp_path / "nothing")
    assert run.code == EXIT_REFUSED
    assert run.err == f"error: {tmp_path / 'nothing'}: no such file or folder\n"


def test_schema_prints_the_json_schema() -> None:
    """schema prints the generated schema; --json wraps it in a result."""
    run = cli("schema")
    assert run.code == EXIT_OK
    assert json.loads(run.out) == manifest_json_schema()
    assert cli("schema", "--json").json() == {"ok": True, "schema": manifest_json_schema()}


def test_pack_prints_the_sha256_and_is_reproducible(example_plugin: Path, tmp_path: Path) -> None:
    """pack twice gives the same SHA-256, printed on its own line."""
    first = cli("pack", example_plugin, "-o", tmp_path / "a.zip")
    second = cli("pack", example_plugin, "--output", tmp_path / "b.zip", "--json")
    assert first.code == second.code == EXIT_OK
    sha_line = first.out.splitlines()[-1]
    assert sha_line.startswith("sha256: ")
    assert sha_line.removeprefix("sha256: ") == second.json()["sha256"]
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()


def test_pack_refuses_an_invalid_folder(write_plugin: PluginWriter, tmp_path: Path) -> None:
    """pack validates first: an invalid folder gives exit code 1 and no archive."""
    folder = write_plugin({**MINIMAL_PLUGIN, "version": "?"}, {"main.py": ""})
    run = cli("pack", folder, "-o", tmp_path / "out.zip", "--json")
    assert run.code == EXIT_REFUSED
    assert run.json()["problems"][0]["path"] == "version"
    assert not (tmp_path / "out.zip").exists()


def test_pack_reports_an_unwritable_output(example_plugin: Path, tmp_path: Path) -> None:
    """An output that cannot be written is refused with exit code 1."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    run = cli("pack", example_plugin, "-o", blocker / "x.zip")
    assert run.code == EXIT_REFUSED
    assert run.err.startswith("error: ")


@pytest.mark.parametrize(
    "args",
    [[], ["frobnicate"], ["validate"], ["pack"], ["validate", "a", "b"], ["schema", "--nope"]],
)
def test_usage_errors_exit_with_2(args: list[str]) -> None:
    """Unknown commands, options and missing arguments are usage errors (exit 2)."""
    assert cli(*args).code == EXIT_USAGE


def test_help_exits_with_0() -> None:
    """--help is not an error."""
    assert cli("--help").code == EXIT_OK


def test_version_names_the_sdk_and_host_api() -> None:
    """--version prints the SDK version and the host API version."""
    run = cli("--version")
    assert run.code == EXIT_OK
    assert run.out == f"services-ai-plugins {__version__} (host API {HOST_API_VERSION})\n"


def test_usage_errors_go_to_the_given_error_stream() -> None:
    """argparse's own messages go to the streams main() was given."""
    run = cli("pack")
    assert run.code == EXIT_USAGE
    assert "the following arguments are required: folder" in run.err
    assert run.out == ""


def test_python_dash_m_runs_the_cli(example_plugin: Path) -> None:
    """python -m services_ai_plugins is the same command line, with the same exit codes."""
    ok = subprocess.run(
        [sys.executable, "-m", "services_ai_plugins", "validate", str(example_plugin)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (ok.returncode, ok.stdout.startswith("ok: hello-plugin")) == (0, True)
    usage = subprocess.run(
        [sys.executable, "-m", "services_ai_plugins", "nonsense"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert usage.returncode == EXIT_USAGE


def test_a_reader_that_stops_early_gets_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Output into a pipe nobody reads any more (`... | head`): exit 141, no BrokenPipeError."""
    import os

    from services_ai_plugins._cli._main import run

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone
    saved = os.dup(1)
    with os.fdopen(write_end, "w") as pipe:
        monkeypatch.setattr("sys.stdout", pipe)
        monkeypatch.setattr("sys.argv", ["services-ai-plugins", "schema"])
        try:
            with pytest.raises(SystemExit) as exited:
                run()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
    assert exited.value.code == 141
    assert "Traceback" not in capsys.readouterr().err
