"""Setting values: coercion from form text, bounds, lengths, required settings, defaults,
partial updates, and error messages that never repeat a secret."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services_ai_plugins import Manifest, SettingsError
from services_ai_plugins._fields import Count, Number, SettingName
from services_ai_plugins.tooling import validate_settings
from services_ai_plugins.types import SettingSpec, SettingType
from services_ai_plugins_testing import strategies as sais

TEXT_TYPES = (SettingType.STRING, SettingType.SECRET)


def spec(
    name: str = "value", kind: SettingType = SettingType.STRING, **options: Any
) -> SettingSpec:
    """A SettingSpec built directly (the loader's checks are not involved)."""
    return SettingSpec(name=SettingName(name), type=kind, **options)


def loaded(*items: dict[str, Any]) -> tuple[SettingSpec, ...]:
    """Setting specs from JSON items, loaded as a manifest's ``settings``."""
    document = {"id": "my-plugin", "name": "My Plugin", "version": "1.0", "settings": list(items)}
    return Manifest.from_dict(document).settings


def refusal(specs: list[SettingSpec], values: object, *, partial: bool = False) -> SettingsError:
    """The SettingsError that validating ``values`` raises (it must raise one)."""
    with pytest.raises(SettingsError) as caught:
        validate_settings(specs, values, partial=partial)
    return caught.value


def problems(specs: list[SettingSpec], values: object, *, partial: bool = False) -> dict[str, str]:
    """The problems of a refusal, as path -> message."""
    return {p.path: p.message for p in refusal(specs, values, partial=partial).problems}


def check_error(error: SettingsError, paths: list[str]) -> None:
    """A refusal lists problems, each with a message, each at one of ``paths``."""
    assert error.problems
    for problem in error.problems:
        assert problem.message.strip()
        assert problem.path in paths


#: A character no message of the library contains, to mark offered text.
MARK = "\N{MATHEMATICAL LEFT WHITE SQUARE BRACKET}"


def settings_outcome(item: SettingSpec, value: str, *, partial: bool) -> str:
    """The text of the SettingsError for ``value``, or "" when it is accepted."""
    try:
        validate_settings([item], {item.name: value}, partial=partial)
    except SettingsError as error:
        return str(error)
    return ""


def coerce_outcome(item: SettingSpec, value: str, *, partial: bool) -> str:
    """The text of the ValueError that coerce raises for ``value``, or "" when it passes."""
    del partial  # coerce checks one value: there is nothing partial about it
    try:
        item.coerce(value)
    except ValueError as error:
        return str(error)
    return ""


# -- coercion from form text -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "options", "given", "expected"),
    [
        (SettingType.INTEGER, {}, "42", 42),
        (SettingType.INTEGER, {}, " -7 ", -7),
        (SettingType.INTEGER, {}, "+3", 3),
        (SettingType.INTEGER, {}, 5.0, 5),
        (SettingType.NUMBER, {}, "3.5", 3.5),
        (SettingType.NUMBER, {}, "1e3", 1000.0),
        (SettingType.NUMBER, {}, ".5", 0.5),
        (SettingType.NUMBER, {}, 2, 2),
        (SettingType.BOOLEAN, {}, "on", True),
        (SettingType.BOOLEAN, {}, "off", False),
        (SettingType.BOOLEAN, {}, " YES ", True),
        (SettingType.BOOLEAN, {}, "0", False),
        (SettingType.BOOLEAN, {}, 1, True),
        (SettingType.CHOICE, {"choices": (1, 2, 3)}, "3", 3),
        (SettingType.CHOICE, {"choices": (0.5, 1.5)}, "1.5", 1.5),
        (SettingType.CHOICE, {"choices": (True, False)}, "true", True),
        (SettingType.CHOICE, {"choices": ("3", 3)}, "3", "3"),
        (SettingType.CHOICE, {"choices": (1, 2)}, 2.0, 2),
        (SettingType.STRING, {}, " kept as is ", " kept as is "),
        (SettingType.JSON, {}, {"a": [1, None]}, {"a": [1, None]}),
    ],
)
def test_form_text_is_coerced_to_the_settings_type(
    kind: SettingType, options: dict[str, Any], given: object, expected: object
) -> None:
    """Text as a form sends it ("42", "on", "3.5", "3" for a choice of numbers) is coerced."""
    coerced = spec(kind=kind, **options).coerce(given)
    assert coerced == expected
    assert type(coerced) is type(expected)


@pytest.mark.parametrize(
    ("kind", "options", "given", "fragment"),
    [
        (SettingType.INTEGER, {}, "4.5", "must be an integer"),
        (SettingType.INTEGER, {}, 4.5, "must be an integer"),
        (SettingType.INTEGER, {}, True, "must be an integer"),
        (SettingType.INTEGER, {}, "1" * 31, "must be an integer"),
        (SettingType.NUMBER, {}, "1e999", "must be a finite number"),
        (SettingType.NUMBER, {}, math.nan, "must be a finite number"),
        (SettingType.NUMBER, {}, "three", "must be a number"),
        (SettingType.NUMBER, {}, False, "must be a number"),
        (SettingType.BOOLEAN, {}, "maybe", "must be true or false"),
        (SettingType.BOOLEAN, {}, 2, "must be true or false"),
        (SettingType.CHOICE, {"choices": ("a", "b")}, "c", 'must be one of "a", "b"'),
        (SettingType.CHOICE, {"choices": (1, 2)}, True, "must be one of 1, 2"),
        (SettingType.STRING, {}, 5, "must be a string (got number)"),
        (SettingType.JSON, {}, {1: "x"}, "keys must be strings"),
    ],
)
def test_values_of_the_wrong_type_are_refused(
    kind: SettingType, options: dict[str, Any], given: object, fragment: str
) -> None:
    """A value that cannot be coerced raises ValueError naming what was expected."""
    with pytest.raises(ValueError, match=re.escape(fragment)):
        spec(kind=kind, **options).coerce(given)


# -- bounds and lengths ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [SettingType.INTEGER, SettingType.NUMBER])
def test_bounds_are_inclusive(kind: SettingType) -> None:
    """Values equal to min or max pass; one step outside is refused with the bound named."""
    bounded = spec(kind=kind, min=Number(1), max=Number(10))
    assert bounded.coerce(1) == 1
    assert bounded.coerce("10") == 10
    with pytest.raises(ValueError, match=r"must be at least 1 \(got 0\)"):
        bounded.coerce(0)
    with pytest.raises(ValueError, match=r"must be at most 10 \(got 11"):
        bounded.coerce("11")


def test_a_number_just_outside_its_bounds_is_refused() -> None:
    """Bounds of number settings are compared exactly, fractions included."""
    bounded = spec(kind=SettingType.NUMBER, min=Number(0.5), max=Number(1.5))
    assert bounded.coerce("0.5") == 0.5
    with pytest.raises(ValueError, match=r"at least 0\.5"):
        bounded.coerce(0.49)
    with pytest.raises(ValueError, match=r"at most 1\.5"):
        bounded.coerce("1.51")


@pytest.mark.parametrize("kind", TEXT_TYPES)
def test_max_length_is_inclusive(kind: SettingType) -> None:
    """Text of exactly max_length characters passes; one more is refused with both lengths."""
    limited = spec(kind=kind, max_length=Count(3))
    assert limited.coerce("abc") == "abc"
    with pytest.raises(ValueError, match=r"must be at most 3 characters long \(got 4\)"):
        limited.coerce("abcd")


# -- required settings and defaults ------------------------------------------------------------


def test_a_missing_required_setting_is_refused() -> None:
    """A required setting without a default must be given."""
    assert problems([spec("token", required=True)], {}) == {"token": "is required"}


@pytest.mark.parametrize("kind", TEXT_TYPES)
def test_an_empty_string_for_a_required_text_setting_counts_as_missing(kind: SettingType) -> None:
    """An empty string does not fill a required string or secret."""
    assert problems([spec("token", kind, required=True)], {"token": ""}) == {"token": "is required"}


def test_an_empty_string_for_a_required_setting_takes_the_default() -> None:
    """An empty string for a required string with a default gives the default."""
    specs = [spec("greeting", required=True, default="hello")]
    assert validate_settings(specs, {"greeting": ""}) == {"greeting": "hello"}


def test_an_empty_string_is_a_value_for_an_optional_string() -> None:
    """An optional string may be set to the empty string."""
    assert validate_settings([spec("note")], {"note": ""}) == {"note": ""}


def test_none_means_not_set() -> None:
    """None for a setting is the same as leaving it out: the default, or None."""
    specs = [spec("limit", SettingType.INTEGER, default=5), spec("note")]
    assert validate_settings(specs, {"limit": None, "note": None}) == {"limit": 5, "note": None}


def test_a_required_setting_with_a_default_need_not_be_given() -> None:
    """A required setting with a default is filled by its default."""
    specs = [spec("limit", SettingType.INTEGER, required=True, default=5)]
    assert validate_settings(specs, {}) == {"limit": 5}


def test_defaults_are_filled_in_schema_order() -> None:
    """The result has every setting, in schema order, whatever the order of the input."""
    specs = [
        spec("a", SettingType.INTEGER, default=1),
        spec("b"),
        spec("c", SettingType.BOOLEAN, default=False),
        spec("d", SettingType.CHOICE, choices=("x", "y"), default="y"),
    ]
    result = validate_settings(specs, {"c": "on", "b": "text"})
    assert list(result.items()) == [("a", 1), ("b", "text"), ("c", True), ("d", "y")]


def test_defaults_are_copied_not_shared() -> None:
    """Changing a returned default leaves the schema's default untouched."""
    specs = [spec("tags", SettingType.JSON, default=["a"])]
    result = validate_settings(specs, {})
    tags = result["tags"]
    assert isinstance(tags, list)
    tags.append("b")
    assert specs[0].default == ["a"]


def test_a_failing_required_setting_is_reported_once() -> None:
    """A required setting given a bad value gets its type problem, not also "is required"."""
    specs = [spec("limit", SettingType.INTEGER, required=True)]
    error = refusal(specs, {"limit": "many"})
    assert [p.path for p in error.problems] == ["limit"]
    assert "must be an integer" in error.problems[0].message


# -- partial updates ---------------------------------------------------------------------------


def test_partial_returns_only_the_given_keys() -> None:
    """With partial=True, only the given settings are checked and returned, coerced."""
    specs = [
        spec("a", SettingType.INTEGER, default=1),
        spec("b", required=True),
        spec("c", SettingType.BOOLEAN),
    ]
    assert validate_settings(specs, {"c": "yes"}, partial=True) == {"c": True}
    assert validate_settings(specs, {}, partial=True) == {}


def test_partial_refuses_to_clear_a_required_setting() -> None:
    """With partial=True, None for a required setting without a default is refused."""
    specs = [spec("token", SettingType.SECRET, required=True)]
    assert problems(specs, {"token": None}, partial=True) == {"token": "is required"}
    assert problems(specs, {"token": ""}, partial=True) == {"token": "is required"}


def test_partial_may_clear_a_required_setting_with_a_default() -> None:
    """With partial=True, None for a required setting with a default is allowed (unset)."""
    specs = [spec("limit", SettingType.INTEGER, required=True, default=3)]
    assert validate_settings(specs, {"limit": None}, partial=True) == {"limit": None}


# -- refused input -----------------------------------------------------------------------------


def test_unknown_setting_names_are_refused_with_the_known_ones() -> None:
    """A name not in the schema is a problem at that name, listing the known settings."""
    specs = [spec("b"), spec("a")]
    assert problems(specs, {"c": 1}) == {"c": "unknown setting (known settings: a, b)"}
    assert problems([], {"c": 1}) == {"c": "unknown setting (known settings: none)"}


def test_a_non_string_key_is_an_unknown_setting() -> None:
    """A key that is not a string is reported as an unknown setting, by its text."""
    assert set(problems([spec("a")], {1: "x"})) == {"1"}


@pytest.mark.parametrize("values", [None, [], ["a"], "a=1", 3, ("a", 1)])
def test_values_that_are_not_a_mapping_are_refused(values: object) -> None:
    """Values must be a mapping; anything else is one problem at the document."""
    error = refusal([spec("a")], values)
    assert [p.path for p in error.problems] == [""]
    assert "must be an object of setting values" in error.problems[0].message


def test_every_problem_is_reported_at_once() -> None:
    """All offending settings are listed together, each by its name."""
    specs = [
        spec("limit", SettingType.INTEGER, max=Number(5)),
        spec("flag", SettingType.BOOLEAN),
        spec("token", SettingType.SECRET, required=True),
    ]
    error = refusal(specs, {"limit": 6, "flag": "perhaps", "other": 1})
    assert {p.path for p in error.problems} == {"limit", "flag", "other", "token"}
    assert "(4 problems)" in str(error)


@pytest.mark.parametrize("kind", TEXT_TYPES)
def test_error_messages_do_not_repeat_a_text_value(kind: SettingType) -> None:
    """The refusal of a too-long string or secret gives lengths, never the text."""
    error = refusal([spec("token", kind, max_length=Count(4))], {"token": "hunter2-secret"})
    assert "hunter2" not in str(error)
    assert "hunter2" not in repr(error.problems)


# -- properties --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(sais.setting_specs())
def test_every_drawn_setting_spec_loads_without_problems(item: dict[str, Any]) -> None:
    """Every spec setting_specs draws is accepted by the loader and is self-consistent."""
    (loaded_spec,) = loaded(item)
    assert loaded_spec.problems() == []
    assert loaded_spec.name == item["name"]
    assert loaded_spec.type.value == item["type"]


@settings(max_examples=300, deadline=None)
@given(sais.manifests(), st.data())
def test_valid_values_are_returned_with_defaults_for_the_rest(
    manifest: Manifest, data: st.DataObject
) -> None:
    """Valid values come back unchanged, missing ones as their default or None (or "required")."""
    values: dict[str, Any] = {}
    for item in manifest.settings:
        if data.draw(st.booleans(), label=f"give {item.name}"):
            values[item.name] = data.draw(sais.setting_values(item), label=item.name)
    expected = {item.name: values.get(item.name, item.default) for item in manifest.settings}
    missing = {
        item.name
        for item in manifest.settings
        if item.required and item.default is None and item.name not in values
    }
    if missing:
        assert {p.path for p in refusal(list(manifest.settings), values).problems} == missing
    else:
        assert validate_settings(manifest.settings, values) == expected
    assert validate_settings(manifest.settings, values, partial=True) == values


@settings(max_examples=200, deadline=None)
@given(sais.setting_specs(), st.data())
def test_coercion_is_idempotent(item: dict[str, Any], data: st.DataObject) -> None:
    """A coerced value coerces to itself."""
    (loaded_spec,) = loaded(item)
    value = data.draw(sais.setting_values(loaded_spec))
    once = loaded_spec.coerce(value)
    assert loaded_spec.coerce(once) == once


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(10**29), max_value=10**29), st.sampled_from(["", " ", "\t"]))
def test_integer_text_reads_back_the_integer(number: int, space: str) -> None:
    """The decimal text of any integer of up to 30 digits, padded with spaces, coerces to it."""
    assert spec(kind=SettingType.INTEGER).coerce(f"{space}{number}{space}") == number


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_number_text_reads_back_the_number(number: float) -> None:
    """The repr of any finite float coerces back to the same float."""
    assert spec(kind=SettingType.NUMBER).coerce(repr(number)) == number


@settings(max_examples=200, deadline=None)
@given(sais.setting_specs(types=[SettingType.CHOICE]), st.data())
def test_a_choice_is_found_from_its_json_text(item: dict[str, Any], data: st.DataObject) -> None:
    """A number or boolean choice is found from its JSON text, as a form sends it."""
    (loaded_spec,) = loaded(item)
    choices = loaded_spec.choices or ()
    choice = data.draw(st.sampled_from(choices))
    text = choice if isinstance(choice, str) else json.dumps(choice)
    # A string choice spelled the same wins over the number: "3" is "3", not 3.
    if text not in [c for c in choices if isinstance(c, str)]:
        assert loaded_spec.coerce(text) == choice


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(sais.setting_specs(), max_size=4, unique_by=lambda item: item["name"]),
    st.data(),
)
def test_any_values_give_a_dict_or_a_settings_error(
    items: list[dict[str, Any]], data: st.DataObject
) -> None:
    """Any mapping of JSON values or text gives a dict or a SettingsError, nothing else."""
    specs = loaded(*items)
    names = [item["name"] for item in items]
    keys = (st.sampled_from(names) | st.text(max_size=8)) if names else st.text(max_size=8)
    values = data.draw(st.dictionaries(keys, sais.json_values(max_leaves=6) | st.text()))
    partial = data.draw(st.booleans())
    try:
        result = validate_settings(specs, values, partial=partial)
    except SettingsError as error:
        check_error(error, [*values, *names])
    else:
        assert list(result) == (list(values) if partial else names)


@settings(max_examples=500, deadline=None)
@given(sais.setting_specs(types=TEXT_TYPES), st.text(max_size=60), st.booleans())
def test_error_messages_never_contain_a_text_value(
    item: dict[str, Any], text: str, partial: bool
) -> None:
    """A refused string or secret never shows in the message, which depends on its length only."""
    (loaded_spec,) = loaded(item)
    offered = f"{MARK}{text}"
    filler = "x" * len(offered)
    for outcome in (settings_outcome, coerce_outcome):
        message = outcome(loaded_spec, offered, partial=partial)
        assert MARK not in message
        assert message == outcome(loaded_spec, filler, partial=partial)
