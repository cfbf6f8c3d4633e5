"""The floor plan stays honest: layers import only downwards, and no module uses another's privates.

The layer order and the other import rules are the import-linter contracts in pyproject.toml
(``[tool.importlinter]``), checked by ``lint-imports`` in ``nox -s lint``; the tests here run it on
a copy of the package with one bad import added, to prove that each contract catches what it
promises. No import-linter contract says "no private names of another module", so an ``ast``
walk over the package checks that rule.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PYPROJECT = ROOT / "pyproject.toml"
PACKAGE = "services_ai_plugins"


@attrs.frozen(order=True)
class PrivateUse:
    """One module of the package using a private name that another module defines."""

    #: The module that uses the name, e.g. ``services_ai_plugins._check``.
    user: str
    #: The name after the module that defines it, e.g. ``services_ai_plugins._cli._host._duration``.
    name: str


def _use(user: str, name: str) -> PrivateUse:
    return PrivateUse(f"{PACKAGE}.{user}", f"{PACKAGE}.{name}")


#: Uses of another module's private names that are allowed: none. A room's modules share names
#: without an underscore inside its private modules. Should one ever be needed, list it here
#: with its reason; an entry that no longer occurs fails the test too.
ALLOWED: frozenset[PrivateUse] = frozenset({
})  # fmt: skip


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@attrs.frozen
class _Tree:
    """The source folder of a package, to tell its modules from the names they define."""

    src: Path
    package: str

    def modules(self) -> Iterator[tuple[str, Path]]:
        for path in sorted((self.src / self.package).rglob("*.py")):
            # The demo's bundled plugin folders hold plugins, not modules of the package.
            if "_demo_plugins" not in path.relative_to(self.src).parts:
                parts = list(path.relative_to(self.src).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                yield ".".join(parts), path

    def is_module(self, name: str) -> bool:
        base = self.src.joinpath(*name.split("."))
        return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()

    def is_package(self, name: str) -> bool:
        return (self.src.joinpath(*name.split(".")) / "__init__.py").is_file()

    def in_package(self, name: str) -> bool:
        return name == self.package or name.startswith(self.package + ".")

    def source_of(self, module: str, node: ast.ImportFrom) -> str:
        """The absolute name of the module that a ``from ... import`` in *module* reads from."""
        if node.level == 0:
            return node.module or ""
        base = module.split(".") if self.is_package(module) else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        return ".".join([*base, node.module] if node.module else base)

    def private_uses(self, module: str, path: Path) -> Iterator[PrivateUse]:
        """Every ``from .x import _name`` and ``x._name`` in *module* where x is another module."""
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        # Local names bound to modules of the package: `from .. import _check`, `import a.b as c`.
        bound: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = self.source_of(module, node)
                if not self.in_package(source):
                    continue
                for alias in node.names:
                    target = f"{source}.{alias.name}"
                    if self.is_module(target):
                        bound[alias.asname or alias.name] = target
                    elif _is_private(alias.name) and source != module:
                        yield PrivateUse(module, target)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if self.in_package(alias.name):
                        if alias.asname:
                            bound[alias.asname] = alias.name
                        else:
                            top = alias.name.split(".")[0]
                            bound[top] = top
        inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        for node in ast.walk(tree):
            # From the outermost attribute of each chain, so `a.b._c` is read once, as a whole.
            if not isinstance(node, ast.Attribute) or id(node) in inner:
                continue
            chain: list[str] = []
            current: ast.expr = node
            while isinstance(current, ast.Attribute):
                chain.append(current.attr)
                current = current.value
            if not isinstance(current, ast.Name) or current.id not in bound:
                continue
            owner = bound[current.id]
            for attribute in reversed(chain):
                if self.is_module(f"{owner}.{attribute}"):
                    owner = f"{owner}.{attribute}"
                    continue
                if _is_private(attribute) and owner != module:
                    yield PrivateUse(module, f"{owner}.{attribute}")
                break

    def all_private_uses(self) -> set[PrivateUse]:
        return {use for module, path in self.modules() for use in self.private_uses(module, path)}


def test_no_module_uses_another_modules_private_names() -> None:
    """Outside the shrinking allowlist, no module of the core reads another module's `_name`."""
    found = _Tree(SRC, PACKAGE).all_private_uses()
    new = sorted(found - ALLOWED)
    gone = sorted(ALLOWED - found)
    assert not new, (
        "a module uses another module's private name; give that name a public one "
        "(no underscore) in the module that defines it:\n"
        + "\n".join(f"  {use.user} uses {use.name}" for use in new)
    )
    assert not gone, (
        "no longer used, so take it out of ALLOWED in tests/test_layers.py:\n"
        + "\n".join(f"  {use.user} uses {use.name}" for use in gone)
    )


def test_the_private_name_check_sees_every_spelling(tmp_path: Path) -> None:
    """Relative, absolute and aliased imports and attribute chains are caught; own names are not."""
    package = tmp_path / "pkg"
    (package / "_room").mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "_room" / "__init__.py").write_text("", encoding="utf-8")
    (package / "_room" / "_inner.py").write_text("_secret = 1\nopen_name = 2\n", encoding="utf-8")
    (package / "_low.py").write_text("_hidden = 1\n__version__ = '1'\n", encoding="utf-8")
    (package / "_user.py").write_text(
        "import pkg._room._inner\n"
        "import pkg._low as low\n"
        "from . import _low\n"
        "from ._low import _hidden, __version__\n"
        "from ._room import _inner\n"
        "from ._room._inner import open_name\n"
        "_mine = 1\n"
        "print(_mine, _low._hidden, _low.__version__, low._hidden, _inner.open_name)\n"
        "print(pkg._room._inner._secret, _inner._secret, _low.__dict__)\n",
        encoding="utf-8",
    )
    (package / "_room" / "_sibling.py").write_text(
        "from ._inner import _secret\nfrom .. import _low\nx = _low._hidden\n", encoding="utf-8"
    )
    (package / "_room" / "_self.py").write_text(
        "from . import _self\n_own = 1\nx = _self._own\n", encoding="utf-8"
    )

    found = _Tree(tmp_path, "pkg").all_private_uses()

    assert found == {
        PrivateUse("pkg._user", "pkg._low._hidden"),
        PrivateUse("pkg._user", "pkg._room._inner._secret"),
        PrivateUse("pkg._room._sibling", "pkg._room._inner._secret"),
        PrivateUse("pkg._room._sibling", "pkg._low._hidden"),
    }


# --- the import-linter contracts -------------------------------------------------------------


def _lint_imports() -> str:
    pytest.importorskip("importlinter", reason="import-linter is not installed (lint group)")
    script = Path(sys.executable).parent / "lint-imports"
    found = str(script) if script.is_file() else shutil.which("lint-imports")
    if found is None:
        pytest.skip("import-linter is installed but its lint-imports command is not on PATH")
    return found


def _copy_of_the_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for package in (PACKAGE, f"{PACKAGE}_testing"):
        shutil.copytree(SRC / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    return src


def _run_lint_imports(src: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the project's contracts, on the package under *src*."""
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "PYTHONIOENCODING": "utf-8",
        "NO_COLOR": "1",
        "COLUMNS": "300",
    }
    return subprocess.run(
        [_lint_imports(), "--config", str(PYPROJECT), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=False,
    )


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as file:
        file.write(f"\n{line}\n")


def test_the_contracts_hold_for_the_tree_as_it_is(tmp_path: Path) -> None:
    """The untouched copy passes every contract (so the failures below come from the change)."""
    result = _run_lint_imports(_copy_of_the_tree(tmp_path), tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


LAYERS = "The layers of services_ai_plugins import only downwards BROKEN"
ACYCLIC = "No import cycle between the modules of one package BROKEN"
TEST_KIT = "The core never imports its test kit BROKEN"
WORKER = "The sandbox worker imports nothing above the sandbox room BROKEN"


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        pytest.param(
            "_storage/_protocol.py",
            "from .. import _host",
            [LAYERS, "services_ai_plugins._storage._protocol -> services_ai_plugins._host"],
            id="upward-import",
        ),
        pytest.param(
            "_storage/_protocol.py",
            "from . import _memory",
            [ACYCLIC, "._protocol -> ._memory"],
            id="cycle-inside-a-room",
        ),
        pytest.param(
            "_api.py",
            "from . import _permissions as _siblings",
            [],
            id="downward-import-is-fine",
        ),
        pytest.param(
            "storage.py",
            "from ._storage._memory import MemoryStorage",
            [],
            id="public-face-has-its-place",
        ),
        pytest.param(
            "_registry.py",
            "import services_ai_plugins_testing.fakes",
            [TEST_KIT, "services_ai_plugins._registry -> services_ai_plugins_testing.fakes"],
            id="core-imports-test-kit",
        ),
        pytest.param(
            "_sandbox/_worker.py",
            "from .. import _host",
            [WORKER, LAYERS, "services_ai_plugins._sandbox._worker -> services_ai_plugins._host"],
            id="worker-imports-host",
        ),
        pytest.param(
            "_loading.py",
            "from . import _host",
            [LAYERS, "services_ai_plugins._loading -> services_ai_plugins._host"],
            id="optional-layer-once-it-exists",
        ),
        pytest.param(
            "_unplaced.py",
            "from . import errors",
            [LAYERS, "services_ai_plugins._unplaced"],
            id="module-outside-every-layer",
        ),
    ],
)
def test_a_bad_import_breaks_the_contract_that_forbids_it(
    tmp_path: Path, module: str, line: str, broken: list[str]
) -> None:
    """One added import fails ``lint-imports`` and the output names the contract and the import."""
    src = _copy_of_the_tree(tmp_path)
    _append(src / PACKAGE / module, line)

    result = _run_lint_imports(src, tmp_path)

    output = " ".join((result.stdout + result.stderr).split())
    if broken:
        assert result.returncode != 0, output
        for text in broken:
            assert text in output
    else:
        assert result.returncode == 0, output
