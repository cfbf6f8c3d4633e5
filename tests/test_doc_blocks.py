"""Every ```python block in docs/ runs: the pages' examples are code that works.

The blocks of one page run in order in one namespace, as a doctest does, in a temporary
folder that holds the page's files: a block fenced ```<lang> title="PATH" is a file (MkDocs'
superfences shows the title above it), written there before anything runs, and compiled if
it is Python; ``file=PATH`` is read the same way. That folder is the working folder and on
``sys.path``, so a later block can ``import main``. The SDK's default registry and plugins
folder point into it too, so a page that makes a ``PluginHost()`` touches nothing of the
machine's. A block whose code awaits runs in an event loop of its own. Whatever a page
leaves open (its hosts, the storages in its namespace) is closed after it.

Two markers, each an HTML comment that the rendered page does not show:

- ``<!-- skip: REASON -->`` on the line before a fence: the block is not run (it needs a
  running Django project, a PostgreSQL server, ...). The reason is required; keep skips rare.
- ``<!-- invisible-code-block: python`` ... ``-->``: code that runs where it stands but is not
  shown, to set the scene for the blocks after it (a ``services`` or a ``lead`` they use).
  With ``file=PATH`` after ``python`` it is a hidden file of the page instead (the app module a
  settings block names, say).

The namespace starts with ``ROOT``, the repository's folder (for the bundled examples).

A block whose first line starts with ``>>>`` is a doctest: pytest's ``--doctest-glob=*.md``
runs it (pyproject.toml), so it is not run here.

A failing block fails with the page and the line: the traceback's frames of a block name the
Markdown file and the line of the page itself. Shell blocks (```console, ```bash, ```sh) are
not run; tests/test_guides.py runs the CLI commands the guides show.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from conftest import ROOT

DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent> *)(?P<ticks>`{3,})(?P<info>[^`\n]*)$")
SKIP = re.compile(r"^\s*<!--\s*skip:\s*(?P<reason>.*?)\s*-->\s*$")
INVISIBLE = re.compile(r"^\s*<!--\s*invisible-code-block:\s*python(?P<options>(?:\s+\S+=\S+)*)\s*$")
RUN_LANGUAGES = {"python", "py"}


@attrs.frozen
class Block:
    """One code block of a page: where it starts, its fence's info string, its code."""

    page: Path
    name: str  #: the page's path as shown in messages
    line: int  #: the line of the page where the code starts (after the fence)
    language: str
    options: dict[str, str]
    code: str
    skip: str | None = None  #: the reason, when the block is marked not to run
    invisible: bool = False

    @property
    def where(self) -> str:
        return f"{self.name}:{self.line}"


class BlockFailed(AssertionError):
    """A block of a page raised (the page's failure, named by page and line)."""


class DocSyntaxError(Exception):
    """A page's markers or fences are malformed (named by page and line)."""


def _end(lines: list[str], start: int, closing: str, where: str) -> int:
    """The index of the first line after ``start`` that is ``closing`` (indentation aside)."""
    for end in range(start + 1, len(lines)):
        if lines[end].strip() == closing.strip():
            return end
    raise DocSyntaxError(f"{where}: never closed (no {closing.strip()!r} line after it)")


def _options(words: list[str]) -> dict[str, str]:
    """A fence's ``key=value`` words (quotes off); its ``title`` is the file it shows."""
    options = {
        key: value.strip("\"'") for key, _, value in (w.partition("=") for w in words if "=" in w)
    }
    if "title" in options:
        options.setdefault("file", options["title"])
    return options


def parse_page(page: Path, root: Path = ROOT) -> list[Block]:
    """The code blocks of ``page`` in order, with the markers that apply to each.

    A fence without a language (output, a tree) is a block of language ``""``, never run.
    """
    name = str(page.relative_to(root))
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    skip: str | None = None
    index = 0
    while index < len(lines):
        line, where = lines[index], f"{name}:{index + 1}"
        invisible, marker, fence = INVISIBLE.match(line), SKIP.match(line), FENCE.match(line)
        if invisible:
            end = _end(lines, index, "-->", where)
            code = textwrap.dedent("\n".join(lines[index + 1 : end]) + "\n")
            options = _options(invisible["options"].split())
            blocks.append(Block(page, name, index + 2, "python", options, code, invisible=True))
        elif marker:
            if not marker["reason"]:
                raise DocSyntaxError(f"{where}: <!-- skip: --> needs a reason")
            skip = marker["reason"]
        elif fence:
            end = _end(lines, index, fence["indent"] + fence["ticks"], where)
            words = fence["info"].split() or [""]
            indent = len(fence["indent"])
            code = "\n".join(text[indent:] for text in lines[index + 1 : end]) + "\n"
            language, options = words[0].lower(), _options(words[1:])
            blocks.append(Block(page, name, index + 2, language, options, code, skip))
            skip = None
        elif skip is not None and line.strip():
            raise DocSyntaxError(f"{where}: <!-- skip --> must stand right before a ``` fence")
        index = end + 1 if invisible or fence else index + 1
    return blocks


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def runnable(page: Path) -> bool:
    return any(block.language in RUN_LANGUAGES for block in parse_page(page))


def doctest(block: Block) -> bool:
    return block.code.lstrip().startswith(">>>")


def run_block(block: Block, namespace: dict[str, Any]) -> None:
    """Run one block in ``namespace``, its frames named by the page and its own lines."""
    source = "\n" * (block.line - 1) + block.code
    code = compile(
        source, str(block.page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    # Tracebacks show the page's text for these frames.
    import linecache

    linecache.cache[str(block.page)] = (
        len(source),
        None,
        block.page.read_text(encoding="utf-8").splitlines(keepends=True),
        str(block.page),
    )
    if code.co_flags & inspect.CO_COROUTINE:
        awaitable = eval(code, namespace)  # noqa: S307 (the docs' own code, run on purpose)
        asyncio.run(awaitable)
    else:
        exec(code, namespace)  # noqa: S102 (the docs' own code, run on purpose)


def close_what_is_open(namespace: dict[str, Any], hosts: list[Any]) -> None:
    """Close every host the page made, then the storages it left in its namespace."""
    for host in hosts:
        host.close()
    for value in list(namespace.values()):
        if type(value).__name__.endswith("Storage") and callable(getattr(value, "close", None)):
            value.close()


@pytest.fixture
def hosts(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every PluginHost made while the test runs, to be closed after the page."""
    from services_ai_plugins import PluginHost

    made: list[Any] = []
    init = PluginHost.__init__

    def recording(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(PluginHost, "__init__", recording)
    return made


@pytest.fixture
def page_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working folder for one page: the cwd, on sys.path, the SDK's data folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SERVICES_AI_PLUGINS_DB", str(tmp_path / "registry.db"))
    monkeypatch.setenv("SERVICES_AI_PLUGINS_DIR", str(tmp_path / "plugins"))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:  # the page's own modules (a namespace one too)
        module = sys.modules[name]
        where = [getattr(module, "__file__", None) or "", *getattr(module, "__path__", ())]
        if any(str(path).startswith(str(tmp_path)) for path in where):
            del sys.modules[name]


@pytest.mark.parametrize(
    "page", [p for p in pages() if runnable(p)], ids=lambda p: str(p.relative_to(DOCS))
)
def test_the_python_blocks_of_a_page_run(page: Path, page_folder: Path, hosts: list[Any]) -> None:
    """Each ```python block of the page runs, in order, in one namespace; skips say why."""
    run_page(parse_page(page), page_folder, hosts)


def run_page(blocks: list[Block], folder: Path, hosts: list[Any]) -> dict[str, Any]:
    """Write the page's files into ``folder``, run its blocks in order; return the namespace."""
    for block in blocks:
        if "file" in block.options:
            target = folder / block.options["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code, encoding="utf-8")
            # Its folders as regular packages, as in a real project: a namespace portion
            # would lose to a regular package of the same name further down sys.path.
            for package in target.relative_to(folder).parents:
                if package != Path():
                    (folder / package / "__init__.py").touch()
    # The folder's listing may be cached by an import since it went on sys.path, and a new
    # file within the same timestamp tick would not be seen: the import system is told.
    importlib.invalidate_caches()
    # A module of the same name imported by another test (examples/django_app's ``crm``, say)
    # would stand in for the page's own: set aside while the page runs, put back after.
    tops = {
        Path(b.options["file"]).parts[0].removesuffix(".py") for b in blocks if "file" in b.options
    }
    aside = {
        name: sys.modules.pop(name) for name in list(sys.modules) if name.partition(".")[0] in tops
    }
    namespace: dict[str, Any] = {"__name__": "__doc__", "ROOT": ROOT}
    try:
        for block in blocks:
            if block.language not in RUN_LANGUAGES or block.skip is not None or doctest(block):
                continue
            if "file" in block.options:  # a file of the page's project: it must compile
                compile("\n" * (block.line - 1) + block.code, str(block.page), "exec")
                continue
            try:
                run_block(block, namespace)
            except Exception as exc:  # the page and line, on Python 3.10 too (no add_note)
                message = f"the ```python block at {block.where} failed: {exc!r}"
                raise BlockFailed(message) from exc
    finally:
        close_what_is_open(namespace, hosts)
        for name in [n for n in sys.modules if n.partition(".")[0] in tops]:
            del sys.modules[name]  # the page's own
        sys.modules.update(aside)
    return namespace


def test_a_page_runs_in_order_with_its_files_and_stops_at_the_failing_block(
    tmp_path: Path, page_folder: Path, hosts: list[Any]
) -> None:
    """Files first, blocks in order in one namespace, awaits in a loop; a failure names its line."""
    page = tmp_path / "page.md"
    page.write_text(
        "```python file=helper.py\nVALUE = 41\n```\n\n"
        "```python\nfrom helper import VALUE\nimport asyncio\n```\n\n"
        "```python\nawait asyncio.sleep(0)\nVALUE += 1\n```\n\n"
        ">>> doctests are pytest's\n\n"
        "<!-- skip: shows a failure -->\n```python\nraise SystemExit\n```\n"
    )
    namespace = run_page(parse_page(page, tmp_path), page_folder, hosts)
    assert namespace["VALUE"] == 42
    page.write_text(page.read_text() + "\n```python\nVALUE = 1 / 0\n```\n")
    with pytest.raises(BlockFailed, match=r"block at page\.md:23 failed: ZeroDivisionError"):
        run_page(parse_page(page, tmp_path), page_folder, hosts)


def test_every_skip_names_its_reason_and_a_block() -> None:
    """The markers parse on every page; each skip stands before a block and says why."""
    skipped = [block for page in pages() for block in parse_page(page) if block.skip]
    assert all(block.skip for block in skipped)
    assert all(block.language in RUN_LANGUAGES for block in skipped), [
        block.where for block in skipped if block.language not in RUN_LANGUAGES
    ]


def test_a_failing_block_names_the_page_and_line(tmp_path: Path) -> None:
    """A block that raises shows the Markdown file and the line of the page in its traceback."""
    page = tmp_path / "page.md"
    page.write_text("# Title\n\nText.\n\n```python\nx = 1\nraise ValueError(x)\n```\n")
    [block] = parse_page(page, tmp_path)
    assert block.line == 6
    with pytest.raises(ValueError, match=r"^1$") as info:
        run_block(block, {})
    frame = info.traceback[-1]
    assert (str(frame.path), frame.lineno + 1) == (str(page), 7)


def test_markers_are_read(tmp_path: Path) -> None:
    """A skip applies to the next block only; invisible code runs; a bare skip is refused."""
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- invisible-code-block: python\nhidden = 2\n-->\n\n"
        "<!-- skip: needs a server -->\n```python\nnever()\n```\n\n"
        "```python\nassert hidden == 2\n```\n"
    )
    hidden, skipped, shown = parse_page(page, tmp_path)
    assert hidden.invisible
    assert hidden.skip is None
    assert skipped.skip == "needs a server"
    assert shown.skip is None
    page.write_text("<!-- skip: -->\n```python\npass\n```\n")
    with pytest.raises(DocSyntaxError, match="needs a reason"):
        parse_page(page, tmp_path)
