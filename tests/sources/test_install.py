"""A newcomer's path: ``pip install .`` in a fresh virtualenv, then the CLI."""

from __future__ import annotations

import hashlib
import subprocess
import venv
from pathlib import Path

import pytest

from conftest import EXAMPLE_PLUGIN, ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the SDK installed from this checkout (not editable)."""
    env = tmp_path_factory.mktemp("fresh") / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    subprocess.run(
        [
            env / "bin" / "python",
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return env


def run(env: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [env / "bin" / "services-ai-plugins", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_console_script_validates_the_example(installed: Path) -> None:
    """After pip install ., services-ai-plugins validate works on the example plugin."""
    result = run(installed, "validate", EXAMPLE_PLUGIN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: hello-plugin 1.0.0")


def test_the_installed_package_is_typed_and_complete(installed: Path) -> None:
    """The wheel ships py.typed, the testing package, and imports from outside the checkout."""
    code = (
        "import importlib.resources as r, services_ai_plugins, services_ai_plugins_testing;"
        "print(r.files('services_ai_plugins').joinpath('py.typed').is_file(),"
        " r.files('services_ai_plugins_testing').joinpath('py.typed').is_file(),"
        " services_ai_plugins.__file__)"
    )
    result = subprocess.run(
        [installed / "bin" / "python", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=installed,
    )
    typed, testing_typed, location = result.stdout.split()
    assert (typed, testing_typed) == ("True", "True")
    assert str(installed) in location


def test_pack_is_reproducible_from_the_installed_cli(installed: Path, tmp_path: Path) -> None:
    """pack twice gives byte-identical archives, and prints their SHA-256."""
    hashes = []
    for name in ("one.zip", "two.zip"):
        result = run(installed, "pack", EXAMPLE_PLUGIN, "-o", tmp_path / name)
        assert result.returncode == 0, result.stderr
        printed = result.stdout.splitlines()[-1].removeprefix("sha256: ")
        assert printed == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        hashes.append(printed)
    assert hashes[0] == hashes[1]
