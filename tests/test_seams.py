"""The spine's seams are public: no spine module uses another module's private names.

A private name (``_name``) is its module's own business. The spine (host,
loading, dispatch, API, registry, context) reaches other modules through
public names only: no ``from .x import _name`` (a private *module* may be
imported), no ``module._name``, and no ``obj._name`` whose name the module
does not define itself (an attribute, method or slot of one of its own classes).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import services_ai_plugins

PACKAGE = Path(services_ai_plugins.__file__).parent
SPINE = ("_api", "_context", "_dispatch", "_host", "_loading", "_registry")
#: Public despite the underscore: namedtuple's API (the underscore only avoids field names).
PUBLIC = frozenset({"_replace", "_asdict", "_fields", "_make"})


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _own_names(tree: ast.Module) -> set[str]:
    """The private names a module defines: functions, classes, attributes, slots, globals."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ entries
    return {name for name in names if _private(name)}


def borrowed(source: str) -> list[str]:
    """Each use of another module's private name in ``source``, with its line."""
    tree = ast.parse(source)
    own = _own_names(tree)
    modules: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                package = node.module or ""
                path = PACKAGE.joinpath(*package.split(".")) if package else PACKAGE
                is_module = (path / alias.name).is_dir() or (path / f"{alias.name}.py").is_file()
                if is_module:
                    modules.add(alias.asname or alias.name)
                elif _private(alias.name):
                    where = "." * node.level + (node.module or "")
                    found.append(f"{node.lineno}: from {where} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not _private(node.attr) or node.attr in PUBLIC:
            continue
        value = node.value
        if isinstance(value, ast.Name) and value.id in modules:
            found.append(f"{node.lineno}: {value.id}.{node.attr}")
        elif node.attr not in own:
            found.append(f"{node.lineno}: .{node.attr} (not defined in this module)")
    return found


@pytest.mark.parametrize("module", SPINE)
def test_a_spine_module_uses_no_other_modules_private_names(module: str) -> None:
    """The module names only public names of the others (its own private ones are its own)."""
    source = (PACKAGE / f"{module}.py").read_text(encoding="utf-8")
    assert borrowed(source) == []


def test_the_rule_catches_each_way_of_borrowing() -> None:
    """A private name imported, read off an imported module, or off another module's object."""
    source = (
        "from ._registry import _grants\n"
        "from . import _dispatch\n"
        "class Host:\n"
        "    def __init__(self):\n"
        "        self._mine = 1\n"
        "    def run(self, registry):\n"
        "        _dispatch._LOOP_CODES\n"
        "        registry._settings(None)\n"
        "        return self._mine\n"
    )
    assert borrowed(source) == [
        "1: from ._registry import _grants",
        "7: _dispatch._LOOP_CODES",
        "8: ._settings (not defined in this module)",
    ]
