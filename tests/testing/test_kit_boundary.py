"""The core and its test kit: the SDK never loads the kit until a check runs.

Each test runs a fresh interpreter, so that what it imports is what the code
under test imported, not what earlier tests left in ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import EXAMPLE_PLUGIN, ROOT

SRC = ROOT / "src"

#: Runs the CLI's entry point with ``sys.argv`` set, as the console script does.
RUN_CLI = """
import sys
{prelude}
sys.argv = ["services-ai-plugins", *{argv!r}]
from services_ai_plugins._cli._main import run
try:
    run()
except SystemExit as exit_:
    loaded = sorted(
        m for m in sys.modules
        if m.partition(".")[0] in ("services_ai_plugins_testing", "hypothesis")
    )
    print("LOADED=" + repr(loaded), file=sys.stderr)
    raise
"""

#: Makes ``import hypothesis`` fail, as when the ``testing`` extra is not installed.
NO_HYPOTHESIS = 'sys.modules["hypothesis"] = None'


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def _loaded(stderr: str) -> list[str]:
    line = next(line for line in stderr.splitlines() if line.startswith("LOADED="))
    names: list[str] = eval(line.removeprefix("LOADED="))  # noqa: S307 - our own repr of a list
    return names


def test_importing_the_sdk_loads_neither_the_test_kit_nor_hypothesis(tmp_path: Path) -> None:
    """import services_ai_plugins (and its top-level names' table) leaves the kit alone."""
    code = (
        "import sys, services_ai_plugins\n"
        "from services_ai_plugins import PluginHost, hookimpl\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.partition('.')[0] in "
        "('services_ai_plugins_testing', 'hypothesis'))))"
    )
    result = _python("import json\n" + code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_the_command_lines_help_loads_neither_the_test_kit_nor_hypothesis(tmp_path: Path) -> None:
    """services-ai-plugins --help (and check --help) run without importing the test kit."""
    for argv in (["--help"], ["check", "--help"]):
        result = _python(RUN_CLI.format(prelude="", argv=argv), tmp_path)
        assert result.returncode == 0, result.stderr
        assert "usage:" in result.stdout
        assert _loaded(result.stderr) == [], argv


def test_a_check_loads_the_engine_from_the_test_kit(tmp_path: Path) -> None:
    """The check itself is the test kit's: it is imported when a check runs, not before."""
    argv = ["check", str(EXAMPLE_PLUGIN), "--json", "--examples", "0"]
    result = _python(RUN_CLI.format(prelude="", argv=argv), tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True
    assert "services_ai_plugins_testing.check" in _loaded(result.stderr)


def test_without_hypothesis_check_names_the_extra_to_install(tmp_path: Path) -> None:
    """No hypothesis: check_plugin raises ExtraNotInstalled (a PluginError and an ImportError)."""
    code = (
        f"import sys\n{NO_HYPOTHESIS}\n"
        "from services_ai_plugins import PluginError, check_plugin\n"
        "from services_ai_plugins.errors import ExtraNotInstalled\n"
        "try:\n"
        f"    check_plugin({str(EXAMPLE_PLUGIN)!r})\n"
        "except ExtraNotInstalled as error:\n"
        "    assert isinstance(error, PluginError) and isinstance(error, ImportError)\n"
        "    print(error.feature, error.extra, error.module, sep='|')\n"
        "    print(error)\n"
    )
    result = _python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    fields, message = result.stdout.splitlines()
    assert fields == "check|testing|hypothesis"
    assert message == (
        "check needs the SDK's 'testing' extra (hypothesis is not installed): "
        "pip install 'services-ai-plugins[testing]'"
    )


def test_without_hypothesis_the_check_command_is_refused_without_a_traceback(
    tmp_path: Path,
) -> None:
    """The command exits 1 and says what to install; --json gives the error as a document."""
    argv = ["check", str(EXAMPLE_PLUGIN)]
    result = _python(RUN_CLI.format(prelude=NO_HYPOTHESIS, argv=argv), tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "error: check needs the SDK's 'testing' extra" in result.stderr
    assert "pip install 'services-ai-plugins[testing]'" in result.stderr
    result = _python(RUN_CLI.format(prelude=NO_HYPOTHESIS, argv=[*argv, "--json"]), tmp_path)
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert (document["ok"], document["error"]) == (False, "ExtraNotInstalled")
    # The other commands do not need the extra.
    argv = ["validate", str(EXAMPLE_PLUGIN)]
    result = _python(RUN_CLI.format(prelude=NO_HYPOTHESIS, argv=argv), tmp_path)
    assert result.returncode == 0, result.stderr
