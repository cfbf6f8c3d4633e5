"""The generated JSON Schema agrees with the loader on what a valid manifest is."""

from __future__ import annotations

import json
import re
from typing import Any

import attrs
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.version import InvalidVersion, Version

from conftest import EXAMPLE_PLUGIN, ORIGINAL_MANIFEST, ROOT
from services_ai_plugins import Manifest, manifest_json_schema
from services_ai_plugins._schema import BEYOND_SCHEMA, VERSION_PATTERN
from services_ai_plugins_testing.strategies import manifest_dicts
from test_manifest import ENTRY_POINT_CASES, MINIMAL, RULE_CASES

SCHEMA = manifest_json_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

#: Rule cases (path, message part) that only the loader can check; each is one
#: of the rules the schema's $comment lists (BEYOND_SCHEMA).
LOADER_ONLY = {
    ("optional_permissions[0]", "already in permissions"),
    ("settings[0].max", "must not be less than min (5)"),
    ("settings[0].default", "at most 10"),
    ("settings[0].default", "at most 2 characters"),
    ("settings[0].default", 'must be one of "x"'),
    ("plugin_class", "Python keyword"),
    ("requires_api", "not a valid version specifier"),
    ("dependencies[0]", "not a valid PEP 508"),
    ("requires_plugins.crm-sync", "not a valid version specifier"),
    ("x-deep", "nests deeper"),
    ("entry_point", "Python keyword"),
}


def schema_errors(document: object) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(document)]


def test_the_schema_is_valid_draft_2020_12() -> None:
    """The schema itself is a valid draft 2020-12 schema."""
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_the_committed_schema_file_is_current() -> None:
    """docs/reference/manifest.schema.json is what the code generates (`nox -s docs`)."""
    committed = json.loads((ROOT / "docs" / "reference" / "manifest.schema.json").read_text())
    assert committed == SCHEMA, "the schema changed: run `nox -s docs` and commit the result"


def test_the_schema_covers_every_field() -> None:
    """Every manifest field is a schema property with a description."""
    fields = {f.name for f in attrs.fields(Manifest)} - {"extensions", "notes"}
    assert fields <= set(SCHEMA["properties"])
    for name in fields:
        assert SCHEMA["properties"][name]["description"], name
    assert SCHEMA["required"] == ["name", "version"]
    assert SCHEMA["$comment"].count(";") == len(BEYOND_SCHEMA) - 1


def test_known_valid_manifests_validate() -> None:
    """The original system's manifest and the bundled example validate."""
    example = json.loads((EXAMPLE_PLUGIN / "manifest.json").read_text())
    for document in (ORIGINAL_MANIFEST, example, MINIMAL):
        Manifest.from_dict(document)
        assert schema_errors(document) == []


@settings(max_examples=300)
@given(manifest_dicts())
def test_every_valid_manifest_validates_against_the_schema(document: dict[str, Any]) -> None:
    """A manifest the loader accepts is accepted by the schema, before and after a round trip."""
    manifest = Manifest.from_dict(document)
    assert schema_errors(document) == []
    assert schema_errors(manifest.to_dict()) == []


@pytest.mark.parametrize(("document", "path", "fragment"), RULE_CASES)
def test_invalid_manifests_are_rejected_by_the_schema(
    document: object, path: str, fragment: str
) -> None:
    """Each rule case is rejected by the schema, unless only the loader can check it."""
    errors = schema_errors(document)
    if (path, fragment) in LOADER_ONLY:
        assert errors == [], "the schema learnt a rule: remove it from LOADER_ONLY"
    else:
        assert errors, f"the schema accepts a manifest the loader refuses at {path}"


@pytest.mark.parametrize(("entry_point", "fragment"), ENTRY_POINT_CASES)
def test_escaping_entry_points_are_rejected_by_the_schema(entry_point: str, fragment: str) -> None:
    """Entry points that leave the plugin fail the schema too."""
    errors = schema_errors({**MINIMAL, "entry_point": entry_point})
    assert bool(errors) is (("entry_point", fragment) not in LOADER_ONLY)


def _parses(text: str) -> bool:
    try:
        Version(text)
    except InvalidVersion:
        return False
    return True


VERSION_EXAMPLES = [
    "1",
    "1.0",
    "v1.2.3",
    "1.2.3-beta.1",
    "1.0.0-rc.1+build.5",
    "1!2.0",
    "1.0.post1",
    "1.0-1",
    "1.0.dev0",
    "1.0a1.post2.dev3",
    "1.0RC1",
    " 1.0 ",
    "1.0-",
    "1..0",
    "1.0+",
    "v",
    "1.0.0-alpha.beta",
    "1.0_a_1",
    "1.0+local.Version-1",
]


@pytest.mark.parametrize("text", VERSION_EXAMPLES)
def test_the_version_pattern_matches_packaging_on_examples(text: str) -> None:
    """The schema's version pattern accepts exactly what packaging.version parses."""
    assert bool(re.match(VERSION_PATTERN, text)) is _parses(text)


@settings(max_examples=2000)
@given(st.text(alphabet="0123456789.-_+!vV abcdeilmnoprstvwABCPR", max_size=16))
def test_the_version_pattern_matches_packaging(text: str) -> None:
    """On thousands of version-like strings, the pattern and packaging agree."""
    assert bool(re.match(VERSION_PATTERN, text)) is _parses(text)
