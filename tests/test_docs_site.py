"""The documentation site: its generated pages match the code, and it builds with --strict.

The site is MkDocs (mkdocs.yml) with mkdocstrings; ``nox -s docs`` builds it. The names a page
must show are looked up in the code here (the parser, the schema, ``__all__``, ``HOOKS``,
``PluginAPI.permissions()``), never listed by hand.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from services_ai_plugins import PluginAPI, manifest_json_schema
from services_ai_plugins._cli import _main
from services_ai_plugins.hookspecs import HOOKS

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"

#: Each page under docs/reference/python/ and the public modules it documents
#: (tests/test_exports.py pins the faces; flask, starlette and django are public by their
#: extras, and django by the modules a project names).
PAGES = {
    "services_ai_plugins": ("",),
    "admin": ("admin",),
    "django": (
        "django.conf",
        "django.middleware",
        "django.urls",
        "django.api",
        "django.services",
        "django.storage",
        "django.templatetags.services_ai_plugins",
    ),
    "errors": ("errors",),
    "events": ("events",),
    "flask": ("flask",),
    "hookspecs": ("hookspecs",),
    "prometheus": ("prometheus",),
    "sandbox": ("sandbox",),
    "starlette": ("starlette",),
    "storage": ("storage",),
    "tooling": ("tooling",),
    "types": ("types",),
    "web": ("web",),
}


def _docs_pages() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_pages", ROOT / "scripts" / "docs_pages.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from _commands(sub, f"{prefix}{name} ")


def _sections(page: str) -> dict[str, str]:
    """The page's command sections by command (its headings are ``### `name```)."""
    parts = re.split(r"^#{3,6} `([^`]+)`$", page, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_generated_pages_match_the_code() -> None:
    """docs/reference/cli.md and manifest.md are what scripts/docs_pages.py writes today."""
    pages = _docs_pages().PAGES
    assert set(pages) == {"cli.md", "manifest.md"}
    for name, build in pages.items():
        committed = (REFERENCE / name).read_text(encoding="utf-8")
        assert committed == build(), f"docs/reference/{name} is stale: run `nox -s docs`"


def test_cli_page_has_every_command_option_and_exit_code() -> None:
    """Every command and sub-command of the parser has a section naming each of its options
    and positional arguments; the exit codes of _cli/_main.py are listed."""
    page = _docs_pages().cli_page()
    sections = _sections(page)
    commands = list(_commands(_main._parser()))
    assert len(commands) > 20
    for command, parser in commands:
        assert command in sections, f"no section for `{command}`"
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            names = action.option_strings or [str(action.metavar or action.dest)]
            for name in names:
                assert f"`{name}`" in sections[command], f"`{command}` lacks {name}"
    codes = page.split("## Exit codes", 1)[1].split("## Commands", 1)[0]
    for code in (_main.EXIT_OK, _main.EXIT_REFUSED, _main.EXIT_USAGE):
        assert f"``{code}``" in codes


def test_manifest_page_has_every_field() -> None:
    """Every property of the manifest's JSON Schema, and of each definition in it, has a row,
    and the page holds the whole schema."""
    page = _docs_pages().manifest_page()
    schema = manifest_json_schema()
    fields = list(schema["properties"])
    for definition in schema.get("$defs", {}).values():
        fields += list(definition.get("properties", {}))
    assert "settings" in fields
    assert "choices" in fields  # a SettingSpec field
    for field in fields:
        assert f"| `{field}` |" in page, f"no row for {field}"
    assert f'"$id": "{schema["$id"]}"' in page


def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    if (
        importlib.util.find_spec("mkdocs") is None
        or importlib.util.find_spec("mkdocstrings") is None
    ):
        if os.environ.get("CI"):
            pytest.fail("the docs dependency group is not installed (pyproject.toml)")
        pytest.skip("mkdocs is not installed (the docs dependency group)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config)]
    return subprocess.run(
        [*command, "--site-dir", str(site)],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _exported(module: str) -> list[str]:
    """The module's ``__all__``, read from its source (Django's modules need settings to run)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None
    assert spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{module} has no __all__ list")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    built = _mkdocs(ROOT / "mkdocs.yml", folder)
    assert built.returncode == 0, built.stderr[-4000:]
    assert "WARNING" not in built.stderr
    return folder


def _ids(html: Path) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', html.read_text(encoding="utf-8")))


def test_every_python_api_page_is_listed() -> None:
    """The test below covers every page under docs/reference/python/."""
    folder = REFERENCE / "python"
    assert {path.stem for path in folder.glob("*.md")} == {*PAGES, "index"}


@pytest.mark.slow
@pytest.mark.parametrize("page_name", sorted(PAGES))
def test_python_api_page_shows_every_public_name(site: Path, page_name: str) -> None:
    """Each public module's page documents every name of its ``__all__``."""
    page = site / "reference" / "python" / page_name / "index.html"
    ids = _ids(page)
    for module in PAGES[page_name]:
        path = f"services_ai_plugins.{module}" if module else "services_ai_plugins"
        assert path in ids
        exported = [name for name in _exported(path) if not name.startswith("_")]
        assert exported
        missing = [name for name in exported if f"{path}.{name}" not in ids]
        assert not missing, f"{page.relative_to(site)} lacks {missing} of {path}"


@pytest.mark.slow
def test_python_api_pages_list_every_hook_and_api_method(site: Path) -> None:
    """The hookspecs page has every hookspec, the top level's every PluginAPI method."""
    hooks = _ids(site / "reference" / "python" / "hookspecs" / "index.html")
    assert len(HOOKS) > 30
    missing = [name for name in HOOKS if f"services_ai_plugins.hookspecs.{name}" not in hooks]
    assert not missing
    api = _ids(site / "reference" / "python" / "services_ai_plugins" / "index.html")
    methods = PluginAPI.permissions()
    assert "get_lead" in methods
    missing = [name for name in methods if f"services_ai_plugins.PluginAPI.{name}" not in api]
    assert not missing


@pytest.mark.slow
def test_cli_page_is_built_with_an_anchor_per_command(site: Path) -> None:
    ids = _ids(site / "reference" / "cli" / "index.html")
    for command, _ in _commands(_main._parser()):
        assert re.sub(r"[^a-z0-9-]+", "-", command) in ids, command


@pytest.mark.slow
def test_generated_reference_pages_list_every_hook_and_api_method(site: Path) -> None:
    """The pages `services-ai-plugins docs` writes (docs/reference/hooks.md, plugin-api.md),
    once they exist, are built and name every hook and every PluginAPI method."""
    pages = {"hooks": list(HOOKS), "plugin-api": list(PluginAPI.permissions())}
    present = {name: names for name, names in pages.items() if (REFERENCE / f"{name}.md").exists()}
    if not present:
        pytest.skip("docs/reference/hooks.md and plugin-api.md are not generated yet")
    for name, names in present.items():
        html = (site / "reference" / name / "index.html").read_text(encoding="utf-8")
        missing = [item for item in names if item not in html]
        assert not missing, f"reference/{name}.md lacks {missing}"


@pytest.mark.slow
def test_broken_link_and_page_outside_the_nav_fail_the_build(tmp_path: Path) -> None:
    """--strict with mkdocs.yml's validation settings turns a link to a missing page, a link to
    a missing anchor and a page left out of the nav into a failed build, each named."""
    copy = tmp_path / "project"
    shutil.copytree(ROOT / "docs", copy / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        ROOT / "scripts", copy / "scripts", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    (copy / "src").symlink_to(ROOT / "src")
    with (copy / "docs" / "host.md").open("a", encoding="utf-8") as page:
        page.write("\nSee [nothing](no-such-page.md) and [the loop](sandbox.md#no-such-anchor).\n")
    (copy / "docs" / "orphan.md").write_text("# Left out of the nav\n", encoding="utf-8")
    built = _mkdocs(copy / "mkdocs.yml", tmp_path / "site")
    assert built.returncode != 0
    assert "no-such-page.md" in built.stderr
    assert "no-such-anchor" in built.stderr
    assert "orphan.md" in built.stderr
