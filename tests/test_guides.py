"""The guides' shell sessions work as shown: each is followed, command by command, in a tmp dir.

A guide's ```console blocks hold ``$ command`` lines, each followed by the output it shows;
its ```<lang> file=PATH blocks are files the reader writes at that point ("replace main.py
with"). Following a guide runs both in page order: commands in a temporary folder (``cd``
moves within it; ``services-ai-plugins`` is this checkout's CLI; ``pytest`` runs in a
subprocess; ``pip install`` is left out, the environment has it), each file written where
the reader stands. Every command must exit 0, and print the lines shown (in order, ``...``
standing for any text, a line of ``...`` for any lines).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from test_doc_blocks import Block, parse_page

GUIDES = ROOT / "docs" / "guides"
SHELLS = {"console", "shell-session"}
TIMEOUT = 600  # seconds per command: pytest and check run whole sessions on a busy machine


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """The ``$ command`` lines of a console block, each with the output lines shown after it."""
    found: list[tuple[str, list[str]]] = []
    for line in block.code.splitlines():
        if line.startswith("$ "):
            found.append((line[2:], []))
        elif found and line.strip():
            found[-1][1].append(line)
    return found


def argv(command: str) -> list[str] | None:
    """What runs for a guide's command, or None for one left out (``pip install``)."""
    words = shlex.split(command)
    if words[0] == "pip":
        return None
    if words[0] == "services-ai-plugins":
        return [sys.executable, "-m", "services_ai_plugins", *words[1:]]
    if words[0] == "pytest":
        return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *words[1:]]
    raise AssertionError(f"a guide's command this test does not know how to run: {command!r}")


def follow(page: Path, folder: Path, root: Path = ROOT) -> int:
    """Follow ``page`` in ``folder``: its files written, its commands run; how many ran."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env["SERVICES_AI_PLUGINS_DB"] = str(folder / "registry.db")
    env["SERVICES_AI_PLUGINS_DIR"] = str(folder / "plugins")
    env.pop("PYTEST_ADDOPTS", None)
    here, ran = folder, 0
    for block in parse_page(page, root):
        if "file" in block.options:
            (here / block.options["file"]).parent.mkdir(parents=True, exist_ok=True)
            (here / block.options["file"]).write_text(block.code, encoding="utf-8")
            continue
        if block.language not in SHELLS:
            continue
        for command, shown in commands(block):
            if command.startswith("cd "):
                here = (here / command[3:].strip()).resolve()
                assert here.is_relative_to(folder), f"{block.where}: cd out of the guide's folder"
                continue
            run = argv(command)
            if run is None:
                continue
            done = subprocess.run(
                run, cwd=here, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
            )
            output = (done.stdout + done.stderr).splitlines()
            assert done.returncode == 0, (
                f"{block.where}: `{command}` exited {done.returncode}:\n" + "\n".join(output)
            )
            patterns = [line.replace("...", "*") for line in shown if line.strip() != "..."]
            pytest.LineMatcher(output).fnmatch_lines(patterns, consecutive=False)
            ran += 1
    return ran


@pytest.mark.slow
def test_your_first_plugin_works_as_the_guide_shows(tmp_path: Path) -> None:
    """new, the files the guide shows, pytest, validate, pack, check, install, approve, enable."""
    ran = follow(GUIDES / "first-plugin.md", tmp_path)
    assert ran >= 9
    assert (tmp_path / "lead-greeter" / "lead-greeter-0.1.0.zip").is_file()


def test_a_command_that_fails_fails_the_guide(tmp_path: Path) -> None:
    """A guide whose command exits non-zero fails with the page, line and output."""
    page = tmp_path / "guide.md"
    page.write_text("```console\n$ services-ai-plugins validate missing\n```\n")
    with pytest.raises(AssertionError, match=r"validate missing` exited 1"):
        follow(page, tmp_path, tmp_path)


def test_output_the_guide_shows_must_be_printed(tmp_path: Path) -> None:
    """A shown output line that the command does not print fails the guide."""
    page = tmp_path / "guide.md"
    page.write_text("```console\n$ services-ai-plugins --version\nsomething else\n```\n")
    with pytest.raises(pytest.fail.Exception, match="something else"):
        follow(page, tmp_path, tmp_path)
    page.write_text("```console\n$ services-ai-plugins --version\nservices-ai-plugins ...\n```\n")
    assert follow(page, tmp_path, tmp_path) == 1


@pytest.mark.slow
def test_testing_plugins_runs_as_the_guide_shows(tmp_path: Path) -> None:
    """The guide's plugin and its tests (unit, host, sandbox, properties) pass: pytest -q."""
    assert follow(GUIDES / "testing-plugins.md", tmp_path) == 1
