"""Fuzzing input, mostly invalid: manifest-shaped JSON, corrupted manifests, JSON text and bytes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

from hypothesis import strategies as st

from ._base import MANIFEST_KEYS, SETTING_KEYS, cached
from ._json import any_json_values, json_integers
from ._manifests import draw_manifest_dict
from ._settings import text_up_to
from ._strings import pick, sampled

if TYPE_CHECKING:
    from services_ai_plugins.types import JSONValue

__all__ = ["json_bytes", "json_texts", "manifest_like_dicts", "mutated_manifest_dicts"]


# -- manifest-shaped JSON ---------------------------------------------------------------------


@cached
def _manifest_like_dicts() -> st.SearchStrategy[dict[str, JSONValue]]:
    keys = st.sampled_from(MANIFEST_KEYS) | st.text(max_size=12)
    return st.dictionaries(keys, any_json_values(4), max_size=6)


def manifest_like_dicts() -> st.SearchStrategy[dict[str, JSONValue]]:
    """JSON objects with mostly manifest keys and random JSON values: nearly always invalid.

    Cheap to draw; random values reach the check of each field rather than
    only "unknown key". See :func:`mutated_manifest_dicts` for documents
    that get past the first checks.
    """
    return _manifest_like_dicts()


# -- corrupted manifests -----------------------------------------------------------------------


#: Numbers at the edges: zero, signs, fractions, beyond 64 bits and the float range, and
#: integers of 1001 and 5001 digits (the SDK's limit is 1000; Python writes at most 4300).
_EDGE_NUMBERS: Final[tuple[JSONValue, ...]] = (
    0,
    -1,
    1,
    0.5,
    -0.0,
    2**63,
    2**1024,
    -(2**1024),
    10**1000,
    -(10**1000),
    10**5000,
    1e308,
    -1e308,
    5e-324,
)
#: Other values at the edges of the manifest's rules: lengths, emptiness, nulls.
_EDGE_VALUES: Final[tuple[JSONValue, ...]] = (
    *_EDGE_NUMBERS,
    "",
    " ",
    "a" * 65,
    "a" * 3000,
    [],
    {},
    [None],
    True,
    False,
    None,
)


@cached
def _mutation_values() -> st.SearchStrategy[JSONValue]:
    return any_json_values(6) | st.sampled_from(_EDGE_VALUES)


@cached
def _numbers_like() -> st.SearchStrategy[JSONValue]:
    return (
        st.sampled_from(_EDGE_NUMBERS)
        | json_integers()
        | st.floats(allow_nan=False, allow_infinity=False)
    )


@cached
def _text_like() -> st.SearchStrategy[JSONValue]:
    return st.sampled_from(["", " ", "a" * 65, "a" * 3000]) | st.text(max_size=20)


@cached
def _short_lists() -> st.SearchStrategy[list[JSONValue]]:
    return st.lists(_mutation_values(), max_size=3)


def _draw_like(draw: st.DrawFn, value: JSONValue) -> JSONValue:
    """A random value of the same JSON type as ``value``: it gets past the type checks."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return draw(_numbers_like())
    if isinstance(value, str):
        return draw(_text_like())
    if isinstance(value, list):
        return draw(_short_lists())
    return draw(_mutation_values())


def _draw_source(draw: st.DrawFn, target: dict[str, JSONValue]) -> JSONValue:
    """A random value, or one already in ``target`` (a key's value or an array's item)."""
    found: list[JSONValue] = list(target.values())
    found.extend(item for value in target.values() if isinstance(value, list) for item in value)
    reuse = draw(st.booleans())
    if found and reuse:
        return pick(draw, found)
    return draw(_mutation_values())


def _draw_mutation(draw: st.DrawFn, target: dict[str, JSONValue], known: tuple[str, ...]) -> None:
    """Replace, delete, insert or append to one key of ``target``, in place."""
    action = draw(sampled(("replace", "delete", "insert", "append")))
    present = sorted(target)
    arrays = [key for key in present if isinstance(target[key], list)]
    if action == "append" and arrays:
        key = pick(draw, arrays)
        array = target[key]
        assert isinstance(array, list)  # for mypy: arrays holds the keys of lists
        position = draw(st.integers(min_value=0, max_value=len(array)))
        target[key] = [*array[:position], _draw_source(draw, target), *array[position:]]
    elif action in ("replace", "delete") and present:
        key = pick(draw, present)
        if action == "delete":
            del target[key]
        elif draw(st.booleans()):
            target[key] = _draw_like(draw, target[key])
        else:
            target[key] = _draw_source(draw, target)
    else:
        invent = draw(st.booleans())
        key = draw(text_up_to(12)) if invent else pick(draw, sorted({*present, *known}))
        target[key] = _draw_source(draw, target)


@st.composite
def _mutated_manifest_dicts(draw: st.DrawFn) -> dict[str, JSONValue]:
    document = draw_manifest_dict(draw)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        settings = document.get("settings")
        if isinstance(settings, list) and settings and draw(st.booleans()):
            index = draw(st.integers(min_value=0, max_value=len(settings) - 1))
            item = settings[index]
            if isinstance(item, dict):
                settings[index] = item = dict(item)
                _draw_mutation(draw, item, SETTING_KEYS)
            else:
                settings[index] = draw(_mutation_values())
        else:
            _draw_mutation(draw, document, MANIFEST_KEYS)
    return document


def mutated_manifest_dicts() -> st.SearchStrategy[dict[str, JSONValue]]:
    """Valid manifest documents with one to three random mutations, usually invalid.

    Each mutation replaces, deletes or inserts a key, or inserts an item into
    an array, at the top level or in an item of ``settings``. The new value
    is random JSON, a value at the edge of a rule (huge numbers, long or empty
    strings), a value of the same JSON type as the old one, or a value taken
    from elsewhere in the same object. The result is close enough to valid to
    reach the checks that a random JSON object never gets to.
    """
    return _mutated_manifest_dicts()


# -- text and bytes for parsers ----------------------------------------------------------------

_JSON_ALPHABET: Final = '{}[]":,.-+0123456789eEtrufalsnNIiy \\/\n\t'


def _truncate(parts: tuple[str, float]) -> str:
    text, fraction = parts
    return text[: int(len(text) * fraction)]


@cached
def _json_texts() -> st.SearchStrategy[str]:
    documents = st.one_of(
        any_json_values(8).map(json.dumps),
        _manifest_like_dicts().map(json.dumps),
    )
    return st.one_of(
        st.text(),
        st.text(alphabet=_JSON_ALPHABET, max_size=80),
        documents,
        st.tuples(documents, st.floats(min_value=0, max_value=1)).map(_truncate),
    )


def json_texts() -> st.SearchStrategy[str]:
    """Text for fuzzing a JSON parser: arbitrary, JSON-like, JSON, and (cut) manifests.

    It mixes any text, text over JSON's punctuation, JSON documents (among
    them :func:`manifest_like_dicts`) and prefixes of them.
    """
    return _json_texts()


def _with_bom(data: bytes) -> bytes:
    return b"\xef\xbb\xbf" + data


@cached
def _json_bytes() -> st.SearchStrategy[bytes]:
    encoded = _json_texts().map(lambda text: text.encode("utf-8", "surrogatepass"))
    return st.one_of(st.binary(), encoded, encoded.map(_with_bom))


def json_bytes() -> st.SearchStrategy[bytes]:
    """Bytes for fuzzing a JSON reader: arbitrary bytes, and :func:`json_texts` as UTF-8.

    Encoded texts sometimes start with a UTF-8 byte order mark.
    """
    return _json_bytes()
