"""A griffe extension for the site's Python API pages (mkdocs.yml loads it for mkdocstrings).

The package's docstrings are Sphinx-style with doctest examples, which pytest runs. Before
griffe parses a docstring this extension:

- fences each doctest example (``>>>`` lines and their output) as a ``pycon`` code block,
  which Markdown would otherwise render as nested block quotes with links in its brackets;
- writes Sphinx cross-reference roles (``:class:`~pkg.Name```) as code (``Name``), and
  the ``::`` that opens a literal block as ``:``;
- splits ``:raises A, B: text`` (several exceptions for one reason) into one ``:raises:``
  field per exception, the form griffe's Sphinx parser reads.

It reads the ``#:`` comments that document attributes (Sphinx's form, used in the package)
as those attributes' docstrings, and gives each attrs class (``@attrs.frozen``,
``@attrs.define``) the ``__init__`` attrs writes, as griffe does for dataclasses: its
signature, and a home for the ``:param:`` fields of the class docstring (which griffe would
otherwise report as matching no parameter).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

_ATTRS_DECORATORS = frozenset({"attrs.frozen", "attrs.define", "attrs.mutable"})
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|exc|mod|obj|const):`(?P<target>[^`]+)`")
# "naming the field::" ends a paragraph that opens a literal block (indented: code already).
_LITERAL = re.compile(r"(?<=\S)::$", re.MULTILINE)
_RAISES = re.compile(r"^(?P<indent>\s*):raises (?P<names>[\w.]+(?:\s*,\s*[\w.]+)+):(?P<text>.*)$")


def _fence_doctests(lines: list[str]) -> list[str]:
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        # Only examples at the docstring's own margin: an indented one is in a literal block.
        if not line.startswith(">>>"):
            out.append(line)
            index += 1
            continue
        out.append("```pycon")
        while index < len(lines) and lines[index].strip():
            out.append(lines[index])
            index += 1
        out.append("```")
    return out


def _split_raises(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        match = _RAISES.match(line)
        if match is None:
            out.append(line)
            continue
        names = [name.strip() for name in match["names"].split(",")]
        # The reason's continuation lines (indented deeper) belong to the last field.
        for name in names:
            out.append(f"{match['indent']}:raises {name}:{match['text']}")
    return out


def _role(match: re.Match[str]) -> str:
    target = match["target"]
    if target.startswith("~"):
        target = target[1:].rpartition(".")[2]
    return f"`{target}`"


def rewrite(docstring: str) -> str:
    """``docstring`` with its doctests fenced, its roles as code and its grouped ``:raises:``
    fields split."""
    text = _ROLE.sub(_role, docstring)
    text = _LITERAL.sub(":", text)
    return "\n".join(_split_raises(_fence_doctests(text.splitlines())))


def _attrs_decorator(cls: griffe.Class) -> griffe.Decorator | None:
    for decorator in cls.decorators:
        value = decorator.value
        path = value.canonical_path if isinstance(value, griffe.Expr) else str(value)
        if path.split("(")[0] in _ATTRS_DECORATORS:
            return decorator
    return None


def _attrs_init(cls: griffe.Class, decorator: griffe.Decorator) -> griffe.Function:
    # By value: griffe's StrEnum backport makes mypy read its members as plain strings.
    positional = griffe.ParameterKind("positional or keyword")
    keyword = griffe.ParameterKind("keyword-only")
    kind = keyword if "kw_only=True" in str(decorator.value) else positional
    parameters = [griffe.Parameter("self", kind=positional)]
    for member in cls.members.values():
        if member.is_alias or not isinstance(member, griffe.Attribute):
            continue
        if member.annotation is None or "property" in member.labels:
            continue
        if "class-attribute" in member.labels and "instance-attribute" not in member.labels:
            continue
        # attrs drops a private attribute's leading underscore from its __init__ parameter.
        parameters.append(
            griffe.Parameter(
                member.name.lstrip("_"),
                annotation=member.annotation,
                kind=kind,
                default=member.value,
                docstring=member.docstring,
            )
        )
    return griffe.Function(
        "__init__", parent=cls, parameters=griffe.Parameters(*parameters), returns="None"
    )


class SphinxDoctests(griffe.Extension):
    """Rewrites every docstring as :func:`rewrite` says, before it is parsed, and gives attrs
    classes their ``__init__``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)

    def on_attribute_instance(self, *, attr: griffe.Attribute, **kwargs: Any) -> None:
        if attr.docstring is not None or attr.lineno is None:
            return
        filepath = attr.filepath
        if not isinstance(filepath, Path) or filepath not in attr.lines_collection:
            return
        lines = attr.lines_collection[filepath]
        comment: list[str] = []
        index = attr.lineno - 2  # the line above the attribute, 0-based
        while index >= 0 and lines[index].lstrip().startswith("#:"):
            comment.insert(0, lines[index].lstrip()[2:].removeprefix(" "))
            index -= 1
        if comment:
            text = rewrite("\n".join(comment))
            attr.docstring = griffe.Docstring(text, lineno=index + 2, parent=attr)

    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        decorator = _attrs_decorator(cls)
        if decorator is not None and "__init__" not in cls.members:
            cls.set_member("__init__", _attrs_init(cls, decorator))
