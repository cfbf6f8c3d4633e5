"""What the strategies share: the manifest's keys, character sets, word builders, caching."""

from __future__ import annotations

import functools
from typing import Final

from hypothesis import strategies as st

from services_ai_plugins._json import MAX_INT_DIGITS
from services_ai_plugins.types import SettingType

__all__ = [
    "ALL_TYPES",
    "ANY_DIGITS",
    "DIGITS",
    "EXACT",
    "LOWER",
    "MANIFEST_KEYS",
    "MARKERS",
    "SETTING_KEYS",
    "UPPER",
    "VALID_DIGITS",
    "cached",
    "dotted",
    "word",
]


MANIFEST_KEYS: Final = (
    "id",
    "name",
    "version",
    "description",
    "author",
    "email",
    "homepage",
    "license",
    "entry_point",
    "plugin_class",
    "permissions",
    "optional_permissions",
    "settings",
    "requires_api",
    "requires_python",
    "dependencies",
    "requires_plugins",
    "hooks",
    "isolation",
    "changelog",
    "icon",
)

#: The keys an item of a manifest's ``settings`` list may have.
SETTING_KEYS: Final = (
    "name",
    "type",
    "label",
    "description",
    "default",
    "required",
    "choices",
    "min",
    "max",
    "max_length",
)

# Strategies are built once and cached: building one costs far more than
# drawing from it, and the composites below draw hundreds of values each.
cached = functools.cache

# Bounds of number settings stay within the integers a float holds exactly, so
# a float drawn between two bounds is never rounded outside them.
EXACT: Final = 2**53
#: Integers of arbitrary JSON get up to this many digits: past the SDK's limit
#: (MAX_INT_DIGITS) but within what Python writes as text by default (4300).
ANY_DIGITS: Final = 1100
#: Integers of valid documents have up to the SDK's limit of digits.
VALID_DIGITS: Final = MAX_INT_DIGITS
ALL_TYPES: Final = tuple(SettingType)
MARKERS: Final = (
    'python_version >= "3.10"',
    "sys_platform == 'linux'",
    'os_name != "nt" and python_version < "4"',
    'platform_machine == "x86_64" or implementation_name == "cpython"',
    'extra == "test"',
)


LOWER: Final = "abcdefghijklmnopqrstuvwxyz"
UPPER: Final = LOWER.upper()
DIGITS: Final = "0123456789"


@cached
def word(
    first: str, rest: str, min_rest: int, max_rest: int, last: str = ""
) -> st.SearchStrategy[str]:
    """Words of one character of ``first``, then ``rest``, then one of ``last`` if given.

    Cheaper to draw than ``st.from_regex`` with the same shape.
    """
    parts = [st.sampled_from(first), st.text(alphabet=rest, min_size=min_rest, max_size=max_rest)]
    if last:
        parts.append(st.sampled_from(last))
    return st.tuples(*parts).map("".join)


@cached
def dotted(word: st.SearchStrategy[str], separators: str, max_parts: int) -> st.SearchStrategy[str]:
    """One to ``max_parts`` words joined by any of ``separators``."""
    tail = st.lists(
        st.tuples(st.sampled_from(separators), word).map("".join), max_size=max_parts - 1
    )
    return st.tuples(word, tail).map(lambda parts: parts[0] + "".join(parts[1]))
