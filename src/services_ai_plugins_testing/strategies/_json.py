"""Arbitrary JSON values, and the valid ones documents accept."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypothesis import strategies as st

from services_ai_plugins._json import MAX_INT_DIGITS

from ._base import ANY_DIGITS, VALID_DIGITS, cached

if TYPE_CHECKING:
    from services_ai_plugins.types import JSONValue

__all__ = ["any_json_values", "json_integers", "json_values", "valid_json_values"]


# -- JSON ----------------------------------------------------------------------------------------


def _negated(value: int) -> int:
    return -value


def _offset(parts: tuple[int, int]) -> int:
    return parts[0] + parts[1]


@cached
def json_integers(max_digits: int = ANY_DIGITS) -> st.SearchStrategy[int]:
    top = 10**max_digits - 1
    # Every branch is bounded: Hypothesis may carry a drawn integer from one branch to
    # another (and replays saved ones), so an unbounded branch could exceed ``top``.
    parts = [
        st.integers(min_value=-min(top, 2**63), max_value=min(top, 2**63)),
        st.integers(min_value=-min(top, 2**128), max_value=min(top, 2**128)),
    ]
    # Near the edges: past the float range, and either side of the SDK's digit limit.
    edges = [2**1024, 10**400, 10 ** (MAX_INT_DIGITS - 1), 10**MAX_INT_DIGITS, top - 1000]
    edges = sorted({edge for edge in edges if edge > 0 and edge + 1000 <= top})
    if edges:
        huge = st.tuples(st.sampled_from(edges), st.integers(min_value=-1000, max_value=1000))
        parts += [huge.map(_offset), huge.map(_offset).map(_negated)]
    return st.one_of(parts)


@cached
def any_json_values(max_leaves: int, max_digits: int = ANY_DIGITS) -> st.SearchStrategy[JSONValue]:
    scalars: st.SearchStrategy[JSONValue] = st.one_of(
        st.none(),
        st.booleans(),
        json_integers(max_digits),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=10), children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def _is_set(value: JSONValue) -> bool:
    return value is not None


@cached
def valid_json_values(max_leaves: int) -> st.SearchStrategy[JSONValue]:
    """JSON values that a manifest or a json setting accepts, never None."""
    return any_json_values(max_leaves, VALID_DIGITS).filter(_is_set)


def json_values(
    *, max_leaves: int = 20, max_digits: int = ANY_DIGITS
) -> st.SearchStrategy[JSONValue]:
    """Arbitrary JSON values: ``None``, booleans, numbers, text, arrays and objects.

    Integers include huge ones, beyond the range of a float and up to
    ``max_digits`` digits: by default more than the SDK accepts (it refuses
    integers over ``MAX_INT_DIGITS``, 1000), but few enough for ``json.dumps``
    to write. Floats are finite; object keys are strings. ``max_leaves``
    bounds the number of scalars in one value, and so its size and depth.
    """
    if max_digits < 1:
        raise ValueError("max_digits must be at least 1")
    return any_json_values(max_leaves, max_digits)
