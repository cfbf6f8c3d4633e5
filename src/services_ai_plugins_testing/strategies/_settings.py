"""Setting specifications of a manifest, and values that fit them."""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

from hypothesis import strategies as st

from services_ai_plugins.types import SettingSpec, SettingType

from ._base import ALL_TYPES, EXACT, VALID_DIGITS, cached
from ._json import json_integers, valid_json_values
from ._strings import identifiers

if TYPE_CHECKING:
    from collections.abc import Iterable

    from services_ai_plugins.types import JSONValue

__all__ = ["draw_setting_spec", "setting_specs", "setting_values", "text_up_to"]


# -- settings ----------------------------------------------------------------------------------


def _choice_key(value: JSONValue) -> tuple[str, JSONValue]:
    # Choices repeat when they are equal numbers (1 and 1.0) or equal values of
    # one type; True and 1 are different choices.
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    return ("string", value)


@cached
def _choice_lists() -> st.SearchStrategy[list[JSONValue]]:
    choice: st.SearchStrategy[JSONValue] = st.one_of(
        st.text(max_size=10),
        st.integers(min_value=-1000, max_value=1000),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
    )
    return st.lists(choice, min_size=1, max_size=6, unique_by=_choice_key)


@cached
def _integer_bound() -> st.SearchStrategy[float | None]:
    whole = st.integers(min_value=-(10**12), max_value=10**12)
    # JSON may write a whole number as 3 or as 3.0; both bound an integer setting.
    return st.none() | whole | whole.map(float)


@cached
def _number_bound() -> st.SearchStrategy[float | None]:
    finite = st.floats(min_value=-1e15, max_value=1e15, allow_nan=False)
    return st.none() | finite | st.integers(min_value=-EXACT, max_value=EXACT)


def _draw_bounds(
    draw: st.DrawFn, bound: st.SearchStrategy[float | None], spec: dict[str, JSONValue]
) -> tuple[float | None, float | None]:
    low, high = draw(bound), draw(bound)
    if low is not None and high is not None and high < low:
        low, high = high, low
    if low is not None:
        spec["min"] = low
    if high is not None:
        spec["max"] = high
    return low, high


def _integers_between(low: float | None, high: float | None) -> st.SearchStrategy[int]:
    """Integers within the bounds (inclusive) that JSON and the SDK carry."""
    if low is None and high is None:
        return json_integers(VALID_DIGITS)
    largest = 10**VALID_DIGITS - 1
    lowest = -largest if low is None else max(math.ceil(low), -largest)
    highest = largest if high is None else min(math.floor(high), largest)
    if lowest > highest:
        return st.nothing()
    parts = [st.integers(min_value=lowest, max_value=highest)]
    # Uniform draws between far-apart bounds are all huge: also draw near each bound.
    if low is not None:
        parts.append(st.integers(min_value=lowest, max_value=min(highest, lowest + 1000)))
    if high is not None:
        parts.append(st.integers(min_value=max(lowest, highest - 1000), max_value=highest))
    return st.one_of(parts)


def _floats_between(low: float | None, high: float | None) -> st.SearchStrategy[float]:
    """Finite floats within the bounds (inclusive), which may be ints of any size."""
    largest = sys.float_info.max
    if (low is not None and low > largest) or (high is not None and high < -largest):
        return st.nothing()
    float_low = None if low is None or low < -largest else float(low)
    float_high = None if high is None or high > largest else float(high)
    # A large int bound may round outwards when made a float: step back inside.
    if float_low is not None and low is not None and float_low < low:
        float_low = math.nextafter(float_low, math.inf)
    if float_high is not None and high is not None and float_high > high:
        float_high = math.nextafter(float_high, -math.inf)
    if float_low is not None and float_high is not None and float_low > float_high:
        return st.nothing()
    return st.floats(
        min_value=float_low, max_value=float_high, allow_nan=False, allow_infinity=False
    )


def _numbers_between(low: float | None, high: float | None) -> st.SearchStrategy[float]:
    """Floats and integers within the bounds (inclusive)."""
    return _floats_between(low, high) | _integers_between(low, high)


@cached
def text_up_to(max_length: int, min_length: int = 0) -> st.SearchStrategy[str]:
    return st.text(min_size=min_length, max_size=max_length)


@cached
def _max_lengths() -> st.SearchStrategy[int | None]:
    return st.none() | st.integers(min_value=0, max_value=40)


@cached
def _null_keys() -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(["label", "default", "choices", "min", "max"]), max_size=3)


@cached
def _types(types: tuple[SettingType, ...]) -> st.SearchStrategy[SettingType]:
    return st.sampled_from(types)


def _draw_max_length(draw: st.DrawFn, spec: dict[str, JSONValue]) -> int | None:
    max_length = draw(_max_lengths())
    if max_length is not None:
        spec["max_length"] = max_length
    return max_length


def draw_setting_spec(
    draw: st.DrawFn, types: tuple[SettingType, ...], name: str | None
) -> dict[str, JSONValue]:
    kind = draw(_types(types))
    spec: dict[str, JSONValue] = {
        "name": draw(identifiers()) if name is None else name,
        "type": kind.value,
    }
    if draw(st.booleans()):
        spec["label"] = draw(text_up_to(30))
    if draw(st.booleans()):
        spec["description"] = draw(text_up_to(60))
    if draw(st.booleans()):
        spec["required"] = draw(st.booleans())
    default: st.SearchStrategy[JSONValue] | None = None
    if kind is SettingType.STRING:
        max_length = _draw_max_length(draw, spec)
        default = text_up_to(30 if max_length is None else max_length)
    elif kind is SettingType.SECRET:
        _draw_max_length(draw, spec)  # and never a default: the manifest is public
    elif kind is SettingType.INTEGER:
        low, high = _draw_bounds(draw, _integer_bound(), spec)
        default = _integers_between(low, high)
    elif kind is SettingType.NUMBER:
        low, high = _draw_bounds(draw, _number_bound(), spec)
        default = _numbers_between(low, high)
    elif kind is SettingType.BOOLEAN:
        default = st.booleans()
    elif kind is SettingType.CHOICE:
        choices = draw(_choice_lists())
        spec["choices"] = choices
        default = st.sampled_from(choices)
    else:
        default = valid_json_values(6)
    if default is not None and draw(st.booleans()):
        spec["default"] = draw(default)
    # A null is the same as an absent key for these (an absent default is null).
    for key in draw(_null_keys()):
        spec.setdefault(key, None)
    return spec


@st.composite
def _setting_specs(
    draw: st.DrawFn, types: tuple[SettingType, ...], name: str | None
) -> dict[str, JSONValue]:
    return draw_setting_spec(draw, types, name)


def setting_specs(
    types: Iterable[SettingType] = ALL_TYPES, *, name: str | None = None
) -> st.SearchStrategy[dict[str, JSONValue]]:
    """JSON objects describing valid settings, as found in a manifest's ``settings``.

    Every :class:`~services_ai_plugins.SettingType` is drawn unless ``types``
    narrows them. The specs are consistent: ``min <= max``, whole bounds for
    integers, bounds only on numeric settings and ``max_length`` only on text
    ones, defaults of the right JSON type within the bounds and
    ``max_length``, unique scalar choices that hold the default, and never a
    default for a secret. ``name`` fixes the setting's name.
    """
    chosen = tuple(types)
    if not chosen:
        raise ValueError("types must name at least one SettingType")
    return _setting_specs(chosen, name)


def setting_values(spec: SettingSpec) -> st.SearchStrategy[JSONValue]:
    """Values that ``spec`` accepts, in their proper type.

    Never ``None``, which means "not set", nor an empty string for a required
    text setting, which counts as missing (so a required text setting with a
    ``max_length`` of 0 has no values: the strategy is empty).
    :func:`~services_ai_plugins.validate_settings` returns them unchanged.
    """
    kind = spec.type
    if kind in (SettingType.STRING, SettingType.SECRET):
        top = 40 if spec.max_length is None else spec.max_length
        if spec.required and top == 0:
            return st.nothing()
        return text_up_to(top, 1 if spec.required else 0)
    if kind is SettingType.INTEGER:
        return _integers_between(spec.min, spec.max)
    if kind is SettingType.NUMBER:
        return _numbers_between(spec.min, spec.max)
    if kind is SettingType.BOOLEAN:
        return st.booleans()
    if kind is SettingType.CHOICE:
        return st.sampled_from(spec.choices or ())
    return valid_json_values(6)
