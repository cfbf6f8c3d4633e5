"""The manifest model: parsing, every rule with its JSON path, and serialisation."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from conftest import ORIGINAL_MANIFEST
from services_ai_plugins import Manifest, ManifestError, PluginError
from services_ai_plugins.errors import Problem
from services_ai_plugins.types import MAX_MANIFEST_BYTES, Isolation, SettingType

MINIMAL: dict[str, Any] = {"id": "my-plugin", "name": "My Plugin", "version": "1.0.0"}


def refused(document: object) -> list[Problem]:
    """The problems the loader reports for ``document`` (which must be refused)."""
    with pytest.raises(ManifestError) as caught:
        Manifest.from_dict(document)
    return list(caught.value.problems)


def paths(document: object) -> set[str]:
    return {problem.path for problem in refused(document)}


def with_(**changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(MINIMAL)
    document.update(changes)
    return document


def test_the_original_systems_example_manifest_parses() -> None:
    """The original system's manifest (no id) parses; the id is derived and noted."""
    manifest = Manifest.from_dict(ORIGINAL_MANIFEST)
    assert manifest.id == "plugin-name"
    assert manifest.name == "Plugin Name"
    assert manifest.version == Version("1.0.0")
    assert manifest.entry_point == "main.py"
    assert manifest.plugin_class == "PluginClass"
    assert manifest.permissions == ("read_leads", "send_notifications")
    assert [(s.name, s.type) for s in manifest.settings] == [
        ("api_key", SettingType.STRING),
        ("enabled", SettingType.BOOLEAN),
    ]
    assert len(manifest.notes) == 1
    assert manifest.notes[0].startswith("id: derived 'plugin-name' from name 'Plugin Name'")


def test_the_bundled_example_manifest_parses(example_plugin: Path) -> None:
    """The example plugin's manifest parses with no notes (it declares its id)."""
    manifest = Manifest.from_file(example_plugin / "manifest.json")
    assert manifest.id == "hello-plugin"
    assert manifest.isolation is Isolation.PROCESS
    assert manifest.requires_api == SpecifierSet(">=1.0,<2")
    assert manifest.notes == ()
    assert manifest.extensions == {"$schema": "../../docs/reference/manifest.schema.json"}


def test_a_broken_manifest_reports_every_problem_with_its_path() -> None:
    """All problems come at once, each located by its JSON path."""
    document = {
        "id": "Not A Slug",
        "name": "x",
        "version": "one",
        "permissions": ["read_leads", 5, "read_leads"],
        "settings": [
            {"name": "a", "type": "float"},
            {"name": "b", "type": "choice"},
            {"name": "a", "type": "string"},
        ],
        "entry_point": "../escape.py",
        "colour": "blue",
    }
    problems = refused(document)
    assert {p.path for p in problems} == {
        "id",
        "version",
        "permissions[1]",
        "permissions[2]",
        "settings[0].type",
        "settings[1].choices",
        "settings[2].name",
        "entry_point",
        "colour",
    }
    by_path = {p.path: p.message for p in problems}
    assert by_path["settings[0].type"].startswith("must be one of 'string', 'integer'")
    assert "unknown key" in by_path["colour"]
    assert by_path["settings[2].name"] == "repeats the name of settings[0]"


def test_the_error_message_lists_every_problem() -> None:
    """str(ManifestError) names the source and every problem's path."""
    with pytest.raises(ManifestError) as caught:
        Manifest.from_dict({"name": "x", "version": "?", "hooks": "lead_created"}, source="m.json")
    error = caught.value
    assert isinstance(error, PluginError)
    text = str(error)
    assert text.startswith("m.json: invalid manifest (")
    for problem in error.problems:
        assert f"{problem.path}: {problem.message}" in text


#: Documents that break one rule each: (document, path of the problem, part of its message).
RULE_CASES: list[tuple[object, str, str]] = [
    (42, "", "must be a JSON object (got number)"),
    ([], "", "must be a JSON object (got array)"),
    ({"name": "x"}, "version", "is required"),
    ({"id": "abc", "version": "1"}, "name", "is required"),
    (with_(id="ab"), "id", "slug of 3-64"),
    (with_(id="a" * 65), "id", "slug of 3-64"),
    (with_(id="1abc"), "id", "starting with a letter"),
    (with_(id="abc-"), "id", "not ending with '-'"),
    (with_(id=7), "id", "must be a string (got number)"),
    (with_(name=" padded"), "name", "without leading or trailing spaces"),
    (with_(name="two\nlines"), "name", "single line"),
    (with_(name="n" * 101), "name", "at most 100 characters"),
    (with_(version="1.2.3.beta.x"), "version", "not a valid version"),
    (with_(version=1.0), "version", "must be a version string"),
    (with_(description=None), "description", "must be a string (got null)"),
    (with_(email="nobody"), "email", "an e-mail address"),
    (with_(homepage="ftp://example.com"), "homepage", "http:// or https://"),
    (with_(homepage="javascript:alert(1)"), "homepage", "http:// or https://"),
    (with_(plugin_class="os.system"), "plugin_class", "name of a class"),
    (with_(plugin_class="class"), "plugin_class", "Python keyword"),
    (with_(permissions=["Read Leads"]), "permissions[0]", "permission name"),
    (with_(permissions="read_leads"), "permissions", "must be an array (got string)"),
    (with_(permissions=["read_leads", "read_leads"]), "permissions[1]", "repeats"),
    (
        with_(permissions=["read_leads"], optional_permissions=["read_leads"]),
        "optional_permissions[0]",
        "already in permissions",
    ),
    (with_(settings={}), "settings", "must be an array of settings"),
    (with_(settings=["api_key"]), "settings[0]", "must be an object describing a setting"),
    (with_(settings=[{"name": "1x", "type": "string"}]), "settings[0].name", "identifier"),
    (with_(settings=[{"type": "string"}]), "settings[0].name", "is required"),
    (with_(settings=[{"name": "a", "type": "string", "min": 1}]), "settings[0].min", "bounds"),
    (
        with_(settings=[{"name": "a", "type": "integer", "min": 5, "max": 1}]),
        "settings[0].max",
        "must not be less than min (5)",
    ),
    (
        with_(settings=[{"name": "a", "type": "integer", "min": 0.5}]),
        "settings[0].min",
        "whole number",
    ),
    (
        with_(settings=[{"name": "a", "type": "integer", "default": 11, "max": 10}]),
        "settings[0].default",
        "at most 10",
    ),
    (
        with_(settings=[{"name": "a", "type": "integer", "default": "3"}]),
        "settings[0].default",
        "must be an integer",
    ),
    (
        with_(settings=[{"name": "a", "type": "string", "default": "long", "max_length": 2}]),
        "settings[0].default",
        "at most 2 characters",
    ),
    (
        with_(settings=[{"name": "a", "type": "boolean", "max_length": 2}]),
        "settings[0].max_length",
        "only string and secret",
    ),
    (
        with_(settings=[{"name": "a", "type": "string", "max_length": -1}]),
        "settings[0].max_length",
        "non-negative integer",
    ),
    (
        with_(settings=[{"name": "a", "type": "secret", "default": "hunter2"}]),
        "settings[0].default",
        "a secret cannot have a default",
    ),
    (
        with_(settings=[{"name": "a", "type": "choice", "choices": []}]),
        "settings[0].choices",
        "non-empty list of choices",
    ),
    (
        with_(settings=[{"name": "a", "type": "choice", "choices": ["x", "x"]}]),
        "settings[0].choices[1]",
        "repeats the choice",
    ),
    (
        with_(settings=[{"name": "a", "type": "choice", "choices": [["x"]]}]),
        "settings[0].choices[0]",
        "string, number or boolean",
    ),
    (
        with_(settings=[{"name": "a", "type": "choice", "choices": ["x"], "default": "y"}]),
        "settings[0].default",
        'must be one of "x"',
    ),
    (
        with_(settings=[{"name": "a", "type": "string", "choices": ["x"]}]),
        "settings[0].choices",
        "only 'choice' settings",
    ),
    (
        with_(settings=[{"name": "a", "type": "string", "required": "yes"}]),
        "settings[0].required",
        "true or false",
    ),
    (
        with_(settings=[{"name": "a", "type": "string", "widget": "textarea"}]),
        "settings[0].widget",
        "unknown key",
    ),
    (with_(requires_api=">>1"), "requires_api", "not a valid version specifier"),
    (with_(requires_api=""), "requires_api", "must not be empty"),
    (with_(requires_python=3.10), "requires_python", "must be a version specifier"),
    (with_(dependencies=["requests >="]), "dependencies[0]", "not a valid PEP 508"),
    (with_(dependencies="requests"), "dependencies", "must be an array"),
    (
        with_(requires_plugins={"crm-sync": "latest"}),
        "requires_plugins.crm-sync",
        "not a valid version specifier",
    ),
    (
        with_(requires_plugins={"Bad Id": ">=1"}),
        "requires_plugins['Bad Id']",
        "slug",
    ),
    (with_(requires_plugins=["crm-sync"]), "requires_plugins", "must be an object"),
    (with_(hooks=["lead_created", "lead_created"]), "hooks[1]", "repeats"),
    (with_(hooks=["LeadCreated"]), "hooks[0]", "hook name"),
    (with_(isolation="container"), "isolation", "'process', 'inprocess'"),
    (with_(icon="../icon.png"), "icon", "'..' is not allowed"),
    (with_(icon="/etc/passwd"), "icon", "not an absolute one"),
    (with_(icon=".assets/icon.png"), "icon", "hidden file or folder"),
    (with_(plugin_class=".Foo"), "plugin_class", "not a path or a dotted name"),
    (with_(**{"$schema": 5}), "$schema", "must be a string (got number)"),
    (with_(changelog=["a"]), "changelog", "must be a string (got array)"),
    (with_(**{"x-deep": json.loads("[" * 70 + "]" * 70)}), "x-deep", "nests deeper"),
    (with_(Name="x"), "Name", "did you mean 'name'?"),
    (with_(entrypoint="main.py"), "entrypoint", "did you mean 'entry_point'?"),
]


@pytest.mark.parametrize(("document", "path", "fragment"), RULE_CASES)
def test_each_rule_is_reported_at_its_path(document: object, path: str, fragment: str) -> None:
    """Each rule, broken alone, gives one problem at the right path with a clear message."""
    problems = refused(document)
    assert [p.path for p in problems] == [path], problems
    assert fragment in problems[0].message


#: Entry points that are refused: (entry point, part of the message).
ENTRY_POINT_CASES: list[tuple[str, str]] = [
    ("../main.py", "'..' is not allowed"),
    ("pkg/../../main.py", "'..' is not allowed"),
    ("..main", "'..' is not allowed"),
    ("/srv/main.py", "not an absolute one"),
    ("C:/plugins/main.py", "not an absolute one"),
    ("pkg\\main.py", "'/' as the separator"),
    ("", "must not be empty"),
    ("main-2.py", "module file"),
    ("my-plugin/main.py", "module file"),
    ("import.py", "Python keyword"),
    ("pkg.class.main", "Python keyword"),
]


@pytest.mark.parametrize(("entry_point", "fragment"), ENTRY_POINT_CASES)
def test_entry_points_must_stay_inside_the_plugin(entry_point: str, fragment: str) -> None:
    """Entry points are relative module paths inside the plugin; escapes are named."""
    problems = refused(with_(entry_point=entry_point))
    assert [p.path for p in problems] == ["entry_point"]
    assert fragment in problems[0].message


@pytest.mark.parametrize(
    ("entry_point", "module", "files"),
    [
        ("main.py", "main", ("main.py",)),
        ("pkg/sub/main.py", "pkg.sub.main", ("pkg/sub/main.py",)),
        ("my_plugin.main", "my_plugin.main", ("my_plugin/main.py", "my_plugin/main/__init__.py")),
    ],
)
def test_entry_point_forms(entry_point: str, module: str, files: tuple[str, ...]) -> None:
    """A file path and a dotted module both name the module and where it may live."""
    manifest = Manifest.from_dict(with_(entry_point=entry_point))
    assert manifest.entry_module == module
    assert manifest.entry_files == files


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("1.2.3", "1.2.3"),
        ("1.2.3-beta.1", "1.2.3b1"),
        ("1.0.0-rc.1+build.5", "1.0.0rc1+build.5"),
        ("1.0.0-alpha", "1.0.0a0"),
        ("v2.0.0", "2.0.0"),
        ("2024.1", "2024.1"),
        ("1.0.0.dev3", "1.0.0.dev3"),
    ],
)
def test_semver_and_pep440_versions_parse(text: str, normalised: str) -> None:
    """Semantic versions parse as their PEP 440 equivalent."""
    assert str(Manifest.from_dict(with_(version=text)).version) == normalised


@pytest.mark.parametrize(
    ("name", "derived"),
    [
        ("Plugin Name", "plugin-name"),
        ("  CRM -- Sync!  ", "crm-sync"),
        ("Café Überall", "cafe-uberall"),
        ("123 Go", "plugin-123-go"),
        ("x" * 80, "x" * 64),
    ],
)
def test_id_is_derived_from_the_name(name: str, derived: str) -> None:
    """Without an id, the name gives one, and a note says so."""
    manifest = Manifest.from_dict({"name": name.strip() or name, "version": "1"})
    assert manifest.id == derived
    assert "id: derived" in manifest.notes[0]


def test_an_underivable_id_is_a_problem_at_id() -> None:
    """A name with nothing to make a slug from asks for an explicit id."""
    assert [p.path for p in refused({"name": "日本", "version": "1"})] == ["id"]


def test_vendor_extensions_and_schema_link_are_kept() -> None:
    """x- keys and $schema survive a round trip unchanged."""
    extensions = {"x-acme": {"tier": ["gold", 1]}, "$schema": "./schema.json"}
    manifest = Manifest.from_dict(with_(**extensions))
    assert manifest.extensions == extensions
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert {k: v for k, v in manifest.to_dict().items() if k in extensions} == extensions


def test_extensions_are_copied_not_shared() -> None:
    """Changing the input after loading does not change the manifest."""
    document = with_(**{"x-list": [1, 2]})
    manifest = Manifest.from_dict(document)
    document["x-list"].append(3)
    assert manifest.extensions["x-list"] == [1, 2]


def test_requires_plugins_accepts_any_version() -> None:
    """'' and '*' both mean any version of the required plugin."""
    manifest = Manifest.from_dict(with_(requires_plugins={"crm-sync": "*", "mailer": ">=2"}))
    assert manifest.requires_plugins == {"crm-sync": SpecifierSet(), "mailer": SpecifierSet(">=2")}


def test_to_json_round_trips_and_leaves_out_defaults() -> None:
    """to_json writes identity fields and non-defaults only, and reads back equal."""
    manifest = Manifest.from_dict(ORIGINAL_MANIFEST)
    document = json.loads(manifest.to_json())
    assert list(document)[:4] == ["id", "name", "version", "entry_point"]
    assert "hooks" not in document
    assert "optional_permissions" not in document
    assert document["settings"][1] == {"name": "enabled", "type": "boolean", "default": True}
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest
    assert again.notes == ()


def test_manifests_are_frozen() -> None:
    """A manifest cannot be changed in place; attrs.evolve makes a changed copy."""
    manifest = Manifest.from_dict(MINIMAL)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        manifest.name = "Other"  # type: ignore[misc]
    assert attrs.evolve(manifest, name="Other").name == "Other"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            '{"id": "abc",\n "name": "x"\n "version": "1"}',
            "Expecting ',' delimiter at line 3, column 2",
        ),
        ("", "Expecting value at line 1, column 1"),
        ('{"name": "a", "name": "b"}', "the key 'name' appears twice"),
        ('{"version": NaN}', "NaN is not a JSON number"),
        ('{"version": Infinity}', "Infinity is not a JSON number"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        ("[" * 100_000 + "]" * 100_000, "nests too deeply"),
    ],
)
def test_text_that_is_not_json_says_where_it_stops(text: str | bytes, fragment: str) -> None:
    """Unparseable text gives one problem at the document, naming line and column."""
    with pytest.raises(ManifestError) as caught:
        Manifest.from_json(text, source="manifest.json")
    assert [p.path for p in caught.value.problems] == [""]
    assert fragment in caught.value.problems[0].message
    assert str(caught.value).startswith("manifest.json: ")


def test_a_utf8_byte_order_mark_is_accepted() -> None:
    """Editors on Windows write a BOM; it is not an error."""
    assert Manifest.from_json(b"\xef\xbb\xbf" + json.dumps(MINIMAL).encode()).id == "my-plugin"


def test_manifests_over_the_size_cap_are_refused(tmp_path: Path) -> None:
    """Text over the cap is refused before parsing, from a file, a string or bytes."""
    padding = " " * MAX_MANIFEST_BYTES
    text = json.dumps(MINIMAL) + padding
    for source in (text, text.encode()):
        with pytest.raises(ManifestError, match="too large"):
            Manifest.from_json(source)
    path = tmp_path / "manifest.json"
    path.write_text(text)
    with pytest.raises(ManifestError, match="too large") as caught:
        Manifest.from_file(path)
    assert caught.value.source == str(path)
    assert Manifest.from_json(text, max_bytes=2 * MAX_MANIFEST_BYTES).id == "my-plugin"


def test_a_missing_file_is_a_manifest_error(tmp_path: Path) -> None:
    """A file that cannot be read gives a ManifestError naming it, not an OSError."""
    missing = tmp_path / "nope" / "manifest.json"
    with pytest.raises(ManifestError, match="cannot read the file") as caught:
        Manifest.from_file(missing)
    assert caught.value.source == str(missing)


def test_an_integral_float_is_an_integer_default() -> None:
    """JSON has one number type: 5.0 is accepted as the integer default 5."""
    manifest = Manifest.from_dict(
        with_(settings=[{"name": "n", "type": "integer", "default": 5.0}])
    )
    default = manifest.settings[0].default
    assert (default, type(default)) == (5, int)


def test_validate_settings_uses_the_manifest_schema() -> None:
    """Manifest.validate_settings checks values against its own settings."""
    manifest = Manifest.from_dict(ORIGINAL_MANIFEST)
    assert manifest.validate_settings({"api_key": "k", "enabled": "off"}) == {
        "api_key": "k",
        "enabled": False,
    }
