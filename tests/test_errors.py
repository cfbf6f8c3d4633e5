"""One exception tree: every exception class lives in ``errors``, under ``PluginError``, drawn."""

from __future__ import annotations

import builtins
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import services_ai_plugins
from services_ai_plugins import errors

#: Exception classes that may live outside ``errors`` or off the drawing, and why.
#: A new one fails ``test_every_exception_is_in_the_tree`` until it is placed in
#: the tree or added here with its reason.
ALLOWED: dict[str, str] = {
    "services_ai_plugins._manifest._JSONRuleError": (
        "control flow inside the manifest loader: turned into a Problem, never escapes"
    ),
    "services_ai_plugins._manifest._Problems": (
        "control flow inside the manifest loader: carries problems up to ManifestError"
    ),
    "services_ai_plugins._records._Refused": (
        "control flow inside record_from: turned into a Problem of RecordError, never escapes"
    ),
    "services_ai_plugins._sandbox._confine._syscalls.Unavailable": (
        "control flow inside probe(): a layer this machine lacks, reported as a reason"
    ),
}

#: Package modules that the walk does not import: plugin code, not SDK code; and the Django
#: app, whose modules need a configured Django project (tests/django_adapter/test_app_modules.py
#: walks it there: it defines no exception class of its own).
SKIPPED = ("services_ai_plugins._demo_plugins", "services_ai_plugins.django")

_BRANCH = re.compile(r"^(?P<lead>[ │]*)[├└]── (?P<name>\w+) +(?:\(also (?P<also>\w+)\))?")


def _modules() -> list[str]:
    names = [services_ai_plugins.__name__]
    for info in pkgutil.walk_packages(
        services_ai_plugins.__path__, prefix=f"{services_ai_plugins.__name__}."
    ):
        if not info.name.startswith(SKIPPED):
            names.append(info.name)
    return names


def _defined_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of the package, by qualified name."""
    found: dict[str, type[BaseException]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__.startswith(services_ai_plugins.__name__)
            ):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return found


def _drawn_tree() -> dict[str, tuple[str, str | None]]:
    """The tree drawn in ``errors.__doc__``: each drawn class name, its parent and its "also"."""
    assert errors.__doc__ is not None
    lines = errors.__doc__.splitlines()
    root = next(i for i, line in enumerate(lines) if line.strip() == "PluginError")
    parents: dict[str, tuple[str, str | None]] = {}
    stack = ["PluginError"]
    for line in lines[root + 1 :]:
        match = _BRANCH.match(line.strip("\n")[4:])
        if match is None:
            break
        depth = len(match["lead"]) // 4
        del stack[depth + 1 :]
        parents[match["name"]] = (stack[depth], match["also"])
        stack.append(match["name"])
    return parents


def _drawn_parent(cls: type[BaseException], drawn: set[str]) -> str | None:
    """The nearest ancestor of ``cls`` that the drawing names."""
    for base in cls.__mro__[1:]:
        if base.__module__ == errors.__name__ and base.__name__ in drawn:
            return base.__name__
    return None


def test_the_walk_sees_the_whole_package() -> None:
    """The walk reaches the subpackages, so the checks below cover them."""
    modules = set(_modules())
    for name in (
        "services_ai_plugins._sandbox._wire",
        "services_ai_plugins._sources._archive",
        "services_ai_plugins._storage._postgres._storage",
        "services_ai_plugins._cli._host",
    ):
        assert name in modules
    found = _defined_exceptions()
    assert "services_ai_plugins.errors.FrameTooLarge" in found
    assert "services_ai_plugins._sandbox._confine._syscalls.Unavailable" in found


def test_every_exception_is_in_the_tree() -> None:
    """Each exception class is defined in ``errors``, is a PluginError, and is drawn there."""
    drawn = _drawn_tree()
    misplaced = []
    for qualified, cls in sorted(_defined_exceptions().items()):
        if qualified in ALLOWED:
            continue
        if cls.__module__ != errors.__name__:
            misplaced.append(f"{qualified}: defined outside services_ai_plugins.errors")
        elif not issubclass(cls, errors.PluginError):
            misplaced.append(f"{qualified}: not a PluginError")
        elif cls.__name__ != "PluginError" and cls.__name__ not in drawn:
            misplaced.append(f"{qualified}: not drawn in the errors module's docstring")
    assert not misplaced, "\n".join(misplaced)


def test_allowlist_names_only_classes_that_exist() -> None:
    """A stale allowlist entry is removed, so the list stays a list of decisions."""
    assert set(ALLOWED) <= set(_defined_exceptions())


def test_drawing_matches_the_classes() -> None:
    """Every drawn name is an exception in ``errors``, under the parent the drawing shows,
    and also the builtin exception its "(also ...)" note names."""
    drawn = _drawn_tree()
    assert len(drawn) >= 28
    for name, (parent, also) in drawn.items():
        cls = getattr(errors, name)
        assert name in errors.__all__
        assert issubclass(cls, errors.PluginError), name
        assert _drawn_parent(cls, set(drawn) | {"PluginError"}) == parent, name
        if also is not None:
            assert issubclass(cls, getattr(builtins, also)), name


def test_public_errors_module_lists_the_whole_tree() -> None:
    """``errors.__all__`` is the drawn tree, its root and the Problem record."""
    assert set(errors.__all__) == {*_drawn_tree(), "PluginError", "Problem"}


def test_the_architecture_page_draws_the_same_tree() -> None:
    """docs/architecture.md draws the tree of ``errors.__doc__``, line for line."""
    assert errors.__doc__ is not None
    lines = errors.__doc__.splitlines()
    root = next(i for i, line in enumerate(lines) if line.strip() == "PluginError")
    drawing = ["PluginError"]
    for line in lines[root + 1 :]:
        if _BRANCH.match(line[4:]) is None:
            break
        drawing.append(line[4:])
    page = (Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text(
        encoding="utf-8"
    )
    start = page.index("```text\nPluginError\n") + len("```text\n")
    assert page[start : page.index("```", start)].splitlines() == drawing
