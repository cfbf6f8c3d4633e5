"""The one entry point for checks, locally and in CI: ``nox`` runs lint, typecheck and tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "typecheck", "docs", "tests"]
nox.options.error_on_external_run = True

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
SCHEMA_FILE = ROOT / "docs" / "reference" / "manifest.schema.json"


def _group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite with coverage, in parallel (pass pytest options after ``--``).

    ``nox -s tests -- -m "not slow"`` leaves out the slow tests (virtual environments, pip,
    whole test sessions in a subprocess, a PostgreSQL cluster of their own). Hypothesis
    runs the quick ``dev`` budgets unless ``$HYPOTHESIS_PROFILE`` is ``ci`` (the default
    when ``$CI`` is set).
    The PostgreSQL tests use ``$SERVICES_AI_PLUGINS_PG_URL`` or start a throwaway
    cluster; ``.ci/run`` starts one for the whole run. With that URL set, the Django tests
    (tests/django_adapter) run a second time with the whole example project on PostgreSQL
    (``SAP_DJANGO_DB=postgres``); the first run has it on SQLite.
    """
    session.install("-e", ".[testing,postgres,secrets,django]", *_group("test"))
    parallel = ["--numprocesses=auto", "--dist=worksteal"]
    session.run(
        "pytest",
        *parallel,
        # A few long property tests would leave a worker idle at the end: idle ones steal.
        "--durations=15",
        "--cov",
        "--cov-report=term-missing:skip-covered",
        *session.posargs,
    )
    if session.posargs:
        return
    if not os.environ.get("SERVICES_AI_PLUGINS_PG_URL"):
        if os.environ.get("CI"):
            session.error("CI runs the Django tests on PostgreSQL: set $SERVICES_AI_PLUGINS_PG_URL")
        session.log("no $SERVICES_AI_PLUGINS_PG_URL: the Django tests ran on SQLite only")
        return
    session.run(
        "pytest",
        *parallel,
        "tests/django_adapter",
        "--cov",
        "--cov-append",
        "--cov-report=term:skip-covered",
        env={"SAP_DJANGO_DB": "postgres"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff, and the layer contracts with import-linter.

    ``lint-imports`` reads the contracts in pyproject.toml's ``[tool.importlinter]`` and
    builds the import graph from the installed package, hence ``-e .``.
    """
    session.install("-e", ".", *_group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports", "--no-cache")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Run mypy --strict on the package, the testing package, the benchmarks and the example
    adapters."""
    session.install("-e", ".[testing,postgres,secrets]", *_group("typecheck"))
    session.run("mypy", "src", "benchmarks", "examples/adapters")


@nox.session
def docs(session: nox.Session) -> None:
    """Regenerate the reference files in docs/ from the code, then build the site into site/.

    tests/test_schema.py, tests/test_reference.py and tests/test_docs_site.py fail when a
    committed file no longer matches the code. The site is built with ``mkdocs build
    --strict``: any warning (a broken link or anchor, a page left out of the nav, a docstring
    griffe cannot read) fails the session.
    """
    _regenerate(session)
    _build_site(session)


def _regenerate(session: nox.Session) -> None:
    """Write docs/reference/: the manifest's JSON Schema, and the hook, PluginAPI and
    permission pages (the function the ``docs`` command prints them with)."""
    session.install("-e", ".")
    schema = session.run("python", "-m", "services_ai_plugins", "schema", silent=True, log=False)
    assert isinstance(schema, str)
    SCHEMA_FILE.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_FILE.write_text(json.dumps(json.loads(schema), indent=2) + "\n", encoding="utf-8")
    session.log(f"wrote {SCHEMA_FILE.relative_to(ROOT)}")
    written = session.run(
        "python",
        "-c",
        "import sys; from services_ai_plugins._reference import write_pages; "
        "print(*write_pages(sys.argv[1]), sep='\\n')",
        str(SCHEMA_FILE.parent),
        silent=True,
        log=False,
    )
    assert isinstance(written, str)
    for path in written.splitlines():
        session.log(f"wrote {Path(path).relative_to(ROOT)}")


def _build_site(session: nox.Session) -> None:
    """Write the CLI and manifest reference pages (scripts/docs_pages.py) and build the site."""
    session.install(*_group("docs"))
    session.run("python", "scripts/docs_pages.py")
    # Material's notice about MkDocs 2 is not a warning about these docs.
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--clean",
        "--site-dir",
        "site",
        env={"NO_MKDOCS_2_WARNING": "1"},
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark against its baseline; figures go to benchmarks/results.json.

    Pass pyperf options after ``--`` (default ``--fast``; ``--rigorous`` for release figures).
    """
    session.install("-e", ".[postgres,django,flask,starlette]", *_group("bench"))
    options = session.posargs or ["--fast"]
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *options)


@nox.session
def demo(session: nox.Session) -> None:
    """Run the demo (examples/demo.py) in a fresh environment."""
    session.install(".")
    session.run("python", "examples/demo.py")
