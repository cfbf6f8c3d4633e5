"""Properties of the manifest loader: any input gives a manifest or a ManifestError, and
every valid manifest survives a round trip through its dict and its JSON text."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.version import Version

from services_ai_plugins import Manifest, ManifestError
from services_ai_plugins._json import MAX_INT_DIGITS
from services_ai_plugins_testing import strategies as sais

PLUGIN_ID = re.compile(r"^[a-z][a-z0-9-]{1,62}[a-z0-9]$")
MINIMAL: dict[str, Any] = {"id": "my-plugin", "name": "My Plugin", "version": "1.0.0"}


def check_error(error: ManifestError) -> None:
    """A refusal names at least one problem, each with a message and its path in the text."""
    assert error.problems
    text = str(error)
    for problem in error.problems:
        assert isinstance(problem.path, str)
        assert problem.message.strip(), problem
        assert problem.path in text


def check_name_refusal(error: ManifestError) -> None:
    """A manifest of only a name and a version is refused at ``name`` or ``id`` only,
    and an id problem only says that none could be derived (a derived id is valid)."""
    check_error(error)
    assert {problem.path for problem in error.problems} <= {"id", "name"}
    assert all("derive" in p.message for p in error.problems if p.path == "id")


def check_round_trip(manifest: Manifest) -> None:
    """The manifest reads back equal from its dict and from its JSON text."""
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    assert Manifest.from_json(manifest.to_json()) == manifest


def load_or_refuse(document: object) -> None:
    """Load ``document``: a manifest (that round trips) or a well-formed ManifestError."""
    try:
        manifest = Manifest.from_dict(document)
    except ManifestError as error:
        check_error(error)
    else:
        assert isinstance(manifest, Manifest)
        check_round_trip(manifest)


# -- nothing but a Manifest or a ManifestError --------------------------------------------------


@pytest.mark.no_cover  # fuzzing: thousands of runs under the tracer, no line it alone covers
@settings(max_examples=3000, deadline=None)
@given(sais.json_values(max_leaves=10) | sais.manifest_like_dicts())
def test_any_json_value_gives_a_manifest_or_a_manifest_error(document: object) -> None:
    """Any JSON value given to from_dict yields a Manifest or a ManifestError, nothing else."""
    load_or_refuse(document)


@pytest.mark.no_cover  # fuzzing: thousands of runs under the tracer, no line it alone covers
@settings(max_examples=3000, deadline=None)
@given(sais.mutated_manifest_dicts())
def test_a_mutated_manifest_gives_a_manifest_or_a_manifest_error(document: object) -> None:
    """A mutated valid manifest (also inside settings) yields a Manifest or a ManifestError."""
    load_or_refuse(document)


@pytest.mark.no_cover  # fuzzing: thousands of runs under the tracer, no line it alone covers
@settings(max_examples=2000, deadline=None)
@given(sais.json_texts())
def test_any_text_gives_a_manifest_or_a_manifest_error(text: str) -> None:
    """Any text given to from_json yields a Manifest or a ManifestError, nothing else."""
    try:
        Manifest.from_json(text)
    except ManifestError as error:
        check_error(error)


@pytest.mark.no_cover  # fuzzing: thousands of runs under the tracer, no line it alone covers
@settings(max_examples=2000, deadline=None)
@given(sais.json_bytes())
def test_any_bytes_give_a_manifest_or_a_manifest_error(data: bytes) -> None:
    """Any bytes given to from_json yield a Manifest or a ManifestError, nothing else."""
    try:
        Manifest.from_json(data)
    except ManifestError as error:
        check_error(error)


# -- valid manifests ---------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(sais.manifest_dicts())
def test_every_valid_manifest_loads_and_round_trips(document: dict[str, Any]) -> None:
    """A valid document loads as given, and reads back equal from to_dict and to_json."""
    manifest = Manifest.from_dict(document)
    assert manifest.id == document.get("id", manifest.id)
    assert manifest.name == document["name"]
    assert manifest.version == Version(document["version"])
    assert manifest.permissions == tuple(document.get("permissions", ()))
    assert [spec.name for spec in manifest.settings] == [
        item["name"] for item in document.get("settings", [])
    ]
    check_round_trip(manifest)


@settings(max_examples=200, deadline=None)
@given(sais.manifest_dicts())
def test_to_dict_keeps_every_vendor_key(document: dict[str, Any]) -> None:
    """to_dict gives back every ``x-`` key (and ``$schema``) with its value."""
    extensions = {k: v for k, v in document.items() if k.startswith("x-") or k == "$schema"}
    output = Manifest.from_dict(document).to_dict()
    assert {k: output[k] for k in extensions} == extensions


@settings(max_examples=200, deadline=None)
@given(sais.manifest_dicts(with_id=False))
def test_an_id_is_derived_from_the_name_with_a_note(document: dict[str, Any]) -> None:
    """Without an id, the id derives from the name, is a valid slug, and a note says so."""
    assert "id" not in document
    manifest = Manifest.from_dict(document)
    assert PLUGIN_ID.match(manifest.id)
    assert any("id" in note for note in manifest.notes)
    assert manifest.to_dict()["id"] == manifest.id


@settings(max_examples=500, deadline=None)
@given(sais.display_names() | st.text(max_size=120))
def test_any_name_derives_a_valid_id_or_a_problem_at_id(name: str) -> None:
    """For any name and no id, the id is derived (valid, with a note) or refused at ``id``."""
    try:
        manifest = Manifest.from_dict({"name": name, "version": "1.0"})
    except ManifestError as error:
        check_name_refusal(error)
    else:
        assert PLUGIN_ID.match(manifest.id)
        assert any(note.startswith("id:") for note in manifest.notes)


@settings(max_examples=300, deadline=None)
@given(sais.versions())
def test_every_drawn_version_parses(text: str) -> None:
    """Semver-style and PEP 440 versions are accepted and kept as packaging parses them."""
    manifest = Manifest.from_dict({**MINIMAL, "version": text})
    assert manifest.version == Version(text)


@settings(max_examples=300, deadline=None)
@given(sais.plugin_ids())
def test_every_drawn_plugin_id_is_accepted(plugin_id: str) -> None:
    """Every slug of the id rule is accepted as an id and as a key of requires_plugins."""
    manifest = Manifest.from_dict({**MINIMAL, "id": plugin_id, "requires_plugins": {plugin_id: ""}})
    assert manifest.id == plugin_id


# -- edges found by fuzzing, each pinned by its smallest input --------------------------------


def test_an_integer_bound_beyond_the_float_range_loads_or_is_refused() -> None:
    """An integer setting bounded by a whole number too big for a float loads or is refused."""
    load_or_refuse({**MINIMAL, "settings": [{"name": "a", "type": "integer", "min": 2**1024}]})


def test_json_text_with_an_over_long_integer_is_a_manifest_error() -> None:
    """JSON text holding an integer of 5000 digits is refused with a ManifestError."""
    with pytest.raises(ManifestError) as caught:
        Manifest.from_json('{"x-big": ' + "1" * 5000 + "}")
    check_error(caught.value)


def test_an_over_long_integer_in_an_extension_is_refused_or_round_trips() -> None:
    """An x- integer too long for JSON text is refused at load, or written and read back."""
    load_or_refuse({**MINIMAL, "x-big": 10**5000})


def test_a_non_string_key_is_a_manifest_error() -> None:
    """A top-level key that is not a string (as YAML loaders make) is a problem, not a crash."""
    with pytest.raises(ManifestError) as caught:
        Manifest.from_dict({**MINIMAL, 1: "one"})
    check_error(caught.value)


@pytest.mark.parametrize("load", [Manifest.from_dict, lambda d: Manifest.from_json(json.dumps(d))])
def test_an_integer_over_the_digit_limit_is_refused(load: Callable[[object], Manifest]) -> None:
    """An integer of one digit more than MAX_INT_DIGITS is refused by from_dict and from_json."""
    with pytest.raises(ManifestError) as caught:
        load({**MINIMAL, "x-big": 10**MAX_INT_DIGITS})
    check_error(caught.value)


@pytest.mark.parametrize("value", [10**MAX_INT_DIGITS - 1, 2**3321], ids=["nines", "2**3321"])
def test_an_integer_of_exactly_the_digit_limit_is_accepted(value: int) -> None:
    """An integer with exactly MAX_INT_DIGITS digits is accepted and round trips."""
    assert len(str(value)) == MAX_INT_DIGITS
    manifest = Manifest.from_dict({**MINIMAL, "x-big": value})
    assert manifest.extensions["x-big"] == value
    check_round_trip(manifest)


@pytest.mark.parametrize("digits", [1001, 5001])
def test_an_over_long_max_length_is_refused_or_round_trips(digits: int) -> None:
    """A max_length with more digits than JSON integers may have is refused or round trips."""
    item = {"name": "a", "type": "string", "max_length": 10 ** (digits - 1)}
    try:
        manifest = Manifest.from_dict({**MINIMAL, "settings": [item]})
    except ManifestError:
        return
    check_round_trip(manifest)
