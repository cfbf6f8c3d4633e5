"""Settings migration: a tenant's stored values carried from one settings schema to the next."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services_ai_plugins import Manifest, SettingsError
from services_ai_plugins._json import JSONValue
from services_ai_plugins._settings import SettingSpec, SettingType
from services_ai_plugins._versions import migrate_settings
from services_ai_plugins_testing import strategies as sais

SEALED = {"$fernet": "gAAAAABsealed-token"}


def spec(name: str, kind: str, **more: Any) -> SettingSpec:
    """A checked spec, as a manifest holds it (defaults normalised)."""
    document = {"id": "demo", "name": "Demo", "version": "1.0", "settings": []}
    document["settings"] = [{"name": name, "type": kind, **more}]
    return Manifest.from_dict(document).settings[0]


def refusal(
    old: list[SettingSpec], new: list[SettingSpec], values: dict[str, JSONValue]
) -> dict[str, str]:
    with pytest.raises(SettingsError) as caught:
        migrate_settings(old, new, values)
    return {problem.path: problem.message for problem in caught.value.problems}


def test_values_of_unchanged_fields_are_kept_and_removed_fields_dropped() -> None:
    old = [spec("limit", "integer"), spec("gone", "boolean"), spec("name", "string")]
    new = [spec("limit", "integer"), spec("name", "string")]
    values: dict[str, JSONValue] = {"limit": 7, "gone": True, "name": "Ada"}
    assert migrate_settings(old, new, values) == {"limit": 7, "name": "Ada"}


def test_defaults_of_new_fields_are_not_stored() -> None:
    """The registry reads an absent key as the schema's default: storing it would pin it."""
    new = [spec("mode", "choice", choices=["a", "b"], default="a"), spec("n", "integer", default=3)]
    assert migrate_settings([], new, {}) == {}


def test_a_value_equal_to_the_old_default_that_was_set_stays_set() -> None:
    old = [spec("n", "integer", default=3)]
    new = [spec("n", "integer", default=5)]
    assert migrate_settings(old, new, {"n": 3}) == {"n": 3}


def test_an_integer_moves_into_a_number_field() -> None:
    assert migrate_settings([spec("x", "integer")], [spec("x", "number")], {"x": 4}) == {"x": 4}


def test_a_whole_number_moves_into_an_integer_field_as_an_integer() -> None:
    migrated = migrate_settings([spec("x", "number")], [spec("x", "integer")], {"x": 4.0})
    assert migrated == {"x": 4}
    assert type(migrated["x"]) is int


@pytest.mark.parametrize(
    ("old", "new", "value", "reason"),
    [
        (spec("x", "number"), spec("x", "integer"), 2.5, "is a number, not an integer"),
        (spec("x", "string"), spec("x", "integer"), "42", "is a string, not an integer"),
        (spec("x", "integer"), spec("x", "string"), 42, "is a number, not a string"),
        (spec("x", "integer"), spec("x", "boolean"), 1, "is a number, not a boolean"),
        (spec("x", "boolean"), spec("x", "integer"), True, "is a boolean, not an integer"),
        (spec("x", "integer"), spec("x", "integer", max=10), 11, "must be at most 10"),
        (spec("x", "integer"), spec("x", "integer", min=0), -1, "must be at least 0"),
        (spec("x", "string"), spec("x", "string", max_length=3), "abcd", "at most 3 characters"),
        (
            spec("x", "choice", choices=["a", "b"]),
            spec("x", "choice", choices=["a"]),
            "b",
            "not one of the new choices",
        ),
        (
            spec("x", "choice", choices=[1, 2]),
            spec("x", "choice", choices=["1", "2"]),
            1,
            "not one of the new choices",
        ),
    ],
)
def test_a_value_that_no_longer_fits(
    old: SettingSpec, new: SettingSpec, value: JSONValue, reason: str
) -> None:
    """Dropped when the new field is optional (its default applies); refused when required,
    the problem naming the field and why, never the value."""
    assert migrate_settings([old], [new], {"x": value}) == {}
    required = attrs.evolve(new, required=True)
    message = refusal([old], [required], {"x": value})["x"]
    assert reason in message
    assert "no longer fits" in message
    if isinstance(value, str) and value:
        assert value not in message


def test_an_empty_string_does_not_fill_a_field_that_becomes_required() -> None:
    """As validate_settings counts it: an empty string is a missing value."""
    old = [spec("x", "string")]
    assert "is empty" in refusal(old, [spec("x", "string", required=True)], {"x": ""})["x"]
    new = [spec("x", "string", required=True, default="d")]
    assert migrate_settings(old, new, {"x": ""}) == {}
    assert migrate_settings(old, [spec("x", "string")], {"x": ""}) == {"x": ""}


def test_a_required_field_with_a_default_drops_an_unfit_value() -> None:
    new = [spec("x", "integer", required=True, default=5, max=10)]
    assert migrate_settings([spec("x", "integer")], new, {"x": 50}) == {}


def test_a_new_required_field_without_default_is_refused_naming_it() -> None:
    new = [spec("api_url", "string", required=True), spec("token", "secret", required=True)]
    problems = refusal([], new, {})
    assert set(problems) == {"api_url", "token"}
    assert "required" in problems["api_url"]
    assert "no default" in problems["api_url"]


def test_a_field_that_becomes_required_without_a_value_is_refused() -> None:
    old = [spec("x", "integer", default=3)]
    new = [spec("x", "integer", required=True)]
    assert "now required" in refusal(old, new, {})["x"]


def test_a_field_already_required_and_missing_is_not_a_new_refusal() -> None:
    """The tenant's settings lacked it under the old version too: the upgrade changes nothing."""
    old = [spec("x", "integer", required=True)]
    new = [spec("x", "integer", required=True, max=9)]
    assert migrate_settings(old, new, {}) == {}


def test_every_refusal_is_listed_at_once() -> None:
    old = [spec("a", "string"), spec("b", "integer")]
    new = [
        spec("a", "integer", required=True),
        spec("b", "integer", required=True, max=1),
        spec("c", "boolean", required=True),
    ]
    assert set(refusal(old, new, {"a": "x", "b": 5})) == {"a", "b", "c"}


def test_a_secret_that_stays_secret_keeps_its_sealed_value_untouched() -> None:
    old = [spec("token", "secret")]
    new = [spec("token", "secret", required=True, max_length=10)]
    migrated = migrate_settings(old, new, {"token": SEALED})
    assert migrated == {"token": SEALED}
    assert migrated["token"] is not SEALED  # a copy: the caller's record is not shared


def test_a_plaintext_secret_from_before_encryption_is_kept_as_stored() -> None:
    """The registry seals it at the next write, as it does today."""
    old, new = [spec("token", "secret")], [spec("token", "secret")]
    assert migrate_settings(old, new, {"token": "legacy"}) == {"token": "legacy"}


def test_a_secret_that_becomes_plain_never_carries_its_sealed_value() -> None:
    old = [spec("token", "secret")]
    assert migrate_settings(old, [spec("token", "string")], {"token": SEALED}) == {}
    assert migrate_settings(old, [spec("token", "json")], {"token": SEALED}) == {}
    message = refusal(old, [spec("token", "json", required=True)], {"token": SEALED})["token"]
    assert "no longer a secret" in message
    assert "gAAAA" not in message


def test_a_plain_value_that_becomes_secret_is_not_carried() -> None:
    old = [spec("token", "string")]
    assert migrate_settings(old, [spec("token", "secret")], {"token": "shown before"}) == {}
    message = refusal(old, [spec("token", "secret", required=True)], {"token": "shown before"})
    assert "becomes a secret" in message["token"]
    assert "shown before" not in message["token"]


def test_a_sealed_value_left_from_an_unknown_field_is_treated_as_a_secret() -> None:
    """A stored value the old schema did not name: sealed means secret, and never goes plain."""
    assert migrate_settings([], [spec("token", "string")], {"token": SEALED}) == {}
    assert migrate_settings([], [spec("token", "secret")], {"token": SEALED}) == {"token": SEALED}


def test_stored_nulls_read_as_not_set() -> None:
    assert migrate_settings([spec("x", "integer")], [spec("x", "integer")], {"x": None}) == {}


# -- properties ------------------------------------------------------------------------------


def specs_from(documents: list[dict[str, JSONValue]]) -> list[SettingSpec]:
    unique = {str(doc["name"]): doc for doc in documents}
    manifest = Manifest.from_dict(
        {"id": "demo", "name": "Demo", "version": "1.0", "settings": list(unique.values())}
    )
    return list(manifest.settings)


schemas = st.lists(sais.setting_specs(), max_size=5).map(specs_from)
#: Schemas over a few shared names, so that old and new fields meet.
shared_schemas = st.lists(
    st.sampled_from(["a", "b", "c", "d"]).flatmap(lambda name: sais.setting_specs(name=name)),
    max_size=4,
).map(specs_from)


@st.composite
def stored_values(draw: st.DrawFn, schema: list[SettingSpec]) -> dict[str, JSONValue]:
    """What the registry stores for a tenant: some fields set, secrets sealed or plain."""
    values: dict[str, JSONValue] = {}
    for setting in schema:
        if not draw(st.booleans()):
            continue
        if setting.type is SettingType.SECRET and draw(st.booleans()):
            values[str(setting.name)] = {"$fernet": draw(st.text(min_size=1, max_size=20))}
            continue
        value = draw(st.one_of(st.nothing(), sais.setting_values(setting)) | st.just(None))
        if value is not None:
            values[str(setting.name)] = value
    return values


@given(st.data(), shared_schemas, shared_schemas)
def test_migrated_values_fit_the_new_schema_or_the_refusal_names_each_field(
    data: st.DataObject, old: list[SettingSpec], new: list[SettingSpec]
) -> None:
    values = data.draw(stored_values(old))
    new_names = {str(s.name) for s in new}
    try:
        migrated = migrate_settings(old, new, values)
    except SettingsError as error:
        assert error.problems
        assert {p.path for p in error.problems} <= new_names
        for problem in error.problems:
            assert problem.message
            value = values.get(problem.path)
            if isinstance(value, str) and len(value) > 3:
                assert value not in problem.message
        return
    assert set(migrated) <= new_names & set(values)
    by_name = {str(s.name): s for s in new}
    was = {str(s.name): s for s in old}
    secrets = [n for n, v in migrated.items() if by_name[n].type is SettingType.SECRET]
    for name, value in migrated.items():
        if name in secrets:
            assert was[name].type is SettingType.SECRET
            assert value == values[name]  # untouched
        else:
            assert was[name].type is not SettingType.SECRET
            # What the registry will read back: the value, as the schema takes it.
            assert by_name[name].coerce(value) == value
            assert json.dumps(by_name[name].coerce(value)) == json.dumps(value)
    # Nothing required is left without a value or default unless it already was.
    for setting in new:
        name = str(setting.name)
        if setting.required and setting.default is None and name not in migrated:
            before = was.get(name)
            assert before is not None
            assert before.required
            assert before.default is None
            assert values.get(name) is None


@given(st.data(), schemas)
def test_migrating_to_the_same_schema_keeps_every_value(
    data: st.DataObject, schema: list[SettingSpec]
) -> None:
    values = data.draw(stored_values(schema))
    assert migrate_settings(schema, schema, values) == values
