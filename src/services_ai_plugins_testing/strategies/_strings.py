"""The manifest's strings: plugin ids, versions, specifiers, dependencies, names, paths."""

from __future__ import annotations

import keyword
from typing import TYPE_CHECKING, TypeVar

from hypothesis import strategies as st

from ._base import DIGITS, LOWER, MARKERS, UPPER, cached, dotted, word

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "dependencies",
    "derivable_names",
    "display_names",
    "email_addresses",
    "entry_points",
    "hook_names",
    "identifiers",
    "permission_names",
    "pick",
    "plugin_ids",
    "relative_paths",
    "sampled",
    "setting_names",
    "specifiers",
    "urls",
    "versions",
]

_T = TypeVar("_T")


# -- strings of the manifest -----------------------------------------------------------------


def _not_keyword(name: str) -> bool:
    return not keyword.iskeyword(name)


@cached
def identifiers() -> st.SearchStrategy[str]:
    letters = LOWER + UPPER + "_"
    return word(letters, letters + DIGITS, 0, 15).filter(_not_keyword)


@cached
def _plugin_ids() -> st.SearchStrategy[str]:
    return word(LOWER, LOWER + DIGITS + "-", 1, 62, LOWER + DIGITS)


def plugin_ids() -> st.SearchStrategy[str]:
    """Valid plugin ids: slugs of 3-64 lowercase letters, digits and ``-``.

    They start with a letter and do not end with ``-``, like ``crm-sync``.
    """
    return _plugin_ids()


@cached
def _numbers(top: int) -> st.SearchStrategy[str]:
    return st.integers(min_value=0, max_value=top).map(str)


@cached
def _release() -> st.SearchStrategy[str]:
    return st.lists(_numbers(2000), min_size=1, max_size=4).map(".".join)


@cached
def _pep440_versions() -> st.SearchStrategy[str]:
    number = _numbers(99)
    epoch = st.just("") | number.map(lambda n: f"{n}!")
    labels = st.sampled_from(["a", "b", "rc", ".alpha", "-beta", "c"])
    pre = st.just("") | st.tuples(labels, number).map("".join)
    post = st.just("") | number.map(lambda n: f".post{n}")
    dev = st.just("") | number.map(lambda n: f".dev{n}")
    alphanumeric = LOWER + DIGITS
    local = st.just("") | dotted(word(alphanumeric, alphanumeric, 0, 7), ".", 3).map("+".__add__)
    return st.tuples(epoch, _release(), pre, post, dev, local).map("".join)


@cached
def _semver_versions() -> st.SearchStrategy[str]:
    part = _numbers(999)
    core = st.tuples(part, part, part).map(".".join)
    label = st.sampled_from(["alpha", "beta", "rc", "a", "b", "pre", "preview"])
    pre = st.just("") | st.tuples(label, st.just("") | part.map(lambda n: f".{n}")).map(
        lambda parts: f"-{parts[0]}{parts[1]}"
    )
    build = st.just("") | dotted(word(LOWER, LOWER + DIGITS, 0, 7), ".", 2).map("+".__add__)
    return st.tuples(core, pre, build).map("".join)


@cached
def _versions() -> st.SearchStrategy[str]:
    return st.one_of(
        _release(),
        _pep440_versions(),
        _semver_versions(),
        st.sampled_from(["1.2.3", "1.2.3-beta.1", "1.0.0-rc.2+build.5", "0.0.1", "v2.0"]),
    )


def versions() -> st.SearchStrategy[str]:
    """Version strings that :class:`packaging.version.Version` parses.

    Both PEP 440 (``2!1.0rc1.post2.dev3+local.1``) and semantic-versioning
    style (``1.2.3``, ``1.2.3-beta.1``, ``1.0.0-rc.2+build.5``).
    """
    return _versions()


@cached
def _specifiers() -> st.SearchStrategy[str]:
    number = _numbers(50)
    release = st.lists(number, min_size=1, max_size=3).map(".".join)
    pre = st.just("") | st.tuples(st.sampled_from(["a", "b", "rc"]), number).map("".join)
    operators = st.sampled_from([">=", "<=", ">", "<", "==", "!=", "===", ">= "])
    ordered = st.tuples(operators, release, pre).map("".join)
    compatible = st.lists(number, min_size=2, max_size=3).map(lambda parts: "~=" + ".".join(parts))
    wildcard = st.tuples(st.sampled_from(["==", "!="]), release).map(lambda p: f"{p[0]}{p[1]}.*")
    clauses = st.lists(st.one_of(ordered, compatible, wildcard), min_size=1, max_size=3)
    return st.tuples(clauses, st.sampled_from([",", ", "])).map(lambda p: p[1].join(p[0]))


def specifiers() -> st.SearchStrategy[str]:
    """Non-empty PEP 440 version specifiers, such as ``>=1.0,<2`` or ``~=1.4, !=1.4.2``."""
    return _specifiers()


@cached
def _distribution_names() -> st.SearchStrategy[str]:
    alphanumeric = LOWER + UPPER + DIGITS
    return st.sampled_from(alphanumeric) | word(
        alphanumeric, alphanumeric + "._-", 0, 14, alphanumeric
    )


@cached
def _extras() -> st.SearchStrategy[list[str]]:
    return st.lists(word(LOWER, LOWER + DIGITS + "_", 0, 7), max_size=2)


@cached
def sampled(options: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.sampled_from(options)


def pick(draw: st.DrawFn, options: Sequence[_T]) -> _T:
    """One of ``options`` (not empty), without building a strategy for each draw."""
    return options[draw(st.integers(min_value=0, max_value=len(options) - 1))]


@st.composite
def _dependencies(draw: st.DrawFn) -> str:
    name = draw(_distribution_names())
    extras = draw(_extras())
    text = f"{name}[{','.join(extras)}]" if extras else name
    separator = "; "
    if draw(st.booleans()):
        text += f" @ https://example.com/{name}-1.0.tar.gz"
        separator = " ; "  # a marker after a URL needs a space before the ';'
    elif draw(st.booleans()):
        text += draw(_specifiers())
    if draw(st.booleans()):
        text += separator + draw(sampled(MARKERS))
    return text


def dependencies() -> st.SearchStrategy[str]:
    """PEP 508 requirement strings: names, extras, specifiers, URLs and markers."""
    return _dependencies()


@cached
def _display_names() -> st.SearchStrategy[str]:
    visible = st.characters(exclude_categories=("Cc", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"))
    word = st.text(alphabet=visible, min_size=1, max_size=12)
    return st.lists(word, min_size=1, max_size=5).map(" ".join)


def display_names() -> st.SearchStrategy[str]:
    """Display names: one line of up to 100 characters, without outer spaces."""
    return _display_names()


@cached
def derivable_names() -> st.SearchStrategy[str]:
    """Display names that a plugin id can be derived from."""
    ascii_word = word(LOWER + UPPER, LOWER + UPPER + DIGITS, 2, 10)
    rest = st.just("") | _display_names().map(lambda name: " " + name[:80])
    return st.tuples(ascii_word, rest).map("".join)


@cached
def _permission_names() -> st.SearchStrategy[str]:
    return dotted(word(LOWER, LOWER + DIGITS + "_", 0, 10), ".:", 3)


def permission_names() -> st.SearchStrategy[str]:
    """Permission names such as ``read_leads`` or ``leads.read``."""
    return _permission_names()


@cached
def _hook_names() -> st.SearchStrategy[str]:
    return word(LOWER + "_", LOWER + DIGITS + "_", 0, 20).filter(_not_keyword)


def hook_names() -> st.SearchStrategy[str]:
    """Hook names such as ``lead_created`` (never a Python keyword)."""
    return _hook_names()


def setting_names() -> st.SearchStrategy[str]:
    """Setting names: identifiers such as ``api_key`` (never a Python keyword)."""
    return identifiers()


@cached
def _entry_points() -> st.SearchStrategy[str]:
    parts = st.lists(identifiers(), min_size=1, max_size=3)
    return st.one_of(
        st.just("main.py"),
        parts.map(lambda names: "/".join(names) + ".py"),
        parts.map(".".join),
    )


def entry_points() -> st.SearchStrategy[str]:
    """Entry points in every form: ``main.py``, ``pkg/mod.py`` and ``pkg.mod``."""
    return _entry_points()


@cached
def relative_paths() -> st.SearchStrategy[str]:
    safe = LOWER + UPPER + DIGITS + "_-"
    segment = word(safe, safe + ".", 0, 11)
    file_name = st.tuples(word(safe, safe, 0, 7), st.sampled_from([".png", ".svg"])).map("".join)
    return st.tuples(st.lists(segment, max_size=2), file_name).map(
        lambda parts: "/".join([*parts[0], parts[1]])
    )


@cached
def email_addresses() -> st.SearchStrategy[str]:
    local = word(LOWER + DIGITS, LOWER + DIGITS + "._+-", 0, 11)
    domain = word(LOWER + DIGITS, LOWER + DIGITS + "-", 0, 11)
    top = word(LOWER, LOWER, 1, 5)
    return st.tuples(local, domain, top).map(lambda p: f"{p[0]}@{p[1]}.{p[2]}")


@cached
def urls() -> st.SearchStrategy[str]:
    host = dotted(word(LOWER + DIGITS, LOWER + DIGITS + "-", 0, 11), ".", 3)
    path_part = st.text(alphabet=LOWER + UPPER + DIGITS + "_.~-", max_size=10)
    path = st.lists(path_part, max_size=3).map(lambda parts: "".join("/" + p for p in parts))
    query = st.just("") | word(LOWER, LOWER, 0, 4).map("?q=".__add__)
    return st.tuples(st.sampled_from(["http://", "https://"]), host, path, query).map("".join)
