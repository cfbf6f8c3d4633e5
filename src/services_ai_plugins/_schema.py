"""The JSON Schema (draft 2020-12) of ``manifest.json``, generated from the model.

The schema is built by walking the attrs fields of :class:`Manifest` and
:class:`SettingSpec`: their types, defaults and descriptions, and the
:class:`StringRule` of each constrained string. Adding a field to the model adds
it here. A few rules need more than one field or Python itself to check; the
loader enforces them and the schema lists them in its ``$comment``.
"""

from __future__ import annotations

import copy
import enum
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Final, Union, get_args, get_origin

import attrs
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from ._fields import RULES, Count, Number
from ._json import JSONValue
from ._manifest import UNIQUE_ITEMS, Manifest
from ._settings import SettingSpec, SettingType
from ._version import HOST_API_VERSION

__all__ = ["VERSION_PATTERN", "manifest_json_schema"]

SCHEMA_ID: Final = f"https://services-ai-plugins.dev/schema/manifest-{HOST_API_VERSION}.json"


def _caseless(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" for c in word)


def _words(*words: str) -> str:
    return "(?:" + "|".join(_caseless(w) for w in words) + ")"


_SEP = "[._-]?"
#: PEP 440 versions (as :class:`packaging.version.Version` accepts them), in the
#: common subset of Python and ECMA-262 regular expressions.
VERSION_PATTERN: Final = (
    r"^\s*[vV]?(?:[0-9]+!)?[0-9]+(?:\.[0-9]+)*"
    rf"(?:{_SEP}{_words('alpha', 'a', 'beta', 'b', 'preview', 'pre', 'c', 'rc')}{_SEP}[0-9]*)?"
    rf"(?:-[0-9]+|{_SEP}{_words('post', 'rev', 'r')}{_SEP}[0-9]*)?"
    rf"(?:{_SEP}{_caseless('dev')}{_SEP}[0-9]*)?"
    r"(?:\+[a-zA-Z0-9]+(?:[._-][a-zA-Z0-9]+)*)?\s*$"
)

#: Rules the loader enforces that JSON Schema cannot express.
BEYOND_SCHEMA: Final = (
    "setting names are unique within 'settings'",
    "'optional_permissions' and 'permissions' do not overlap",
    "a setting's 'min' is not greater than its 'max', and its default lies within them",
    "a string setting's default is not longer than its 'max_length'",
    "a 'choice' setting's default is one of its choices",
    "module and class names in 'entry_point' and 'plugin_class' are not Python keywords",
    "'requires_api', 'requires_python' and the values of 'requires_plugins' are PEP 440 "
    "specifiers, 'dependencies' PEP 508 "
    "requirements (the schema checks that they are non-empty strings)",
    "JSON values nest at most 64 levels deep",
)


def _type_schema(kind: Any) -> dict[str, Any]:
    if kind in RULES:
        rule = RULES[kind]
        schema: dict[str, Any] = {"type": "string", "pattern": rule.pattern}
        if rule.max_length is not None:
            schema["maxLength"] = rule.max_length
        if rule.format is not None:
            schema["format"] = rule.format
        return schema
    if kind is Number:
        return {"type": "number"}
    if kind is Count:
        return {"type": "integer", "minimum": 0}
    if kind is str:
        return {"type": "string"}
    if kind is bool:
        return {"type": "boolean"}
    if kind is int:
        return {"type": "integer"}
    if kind is Version:
        return {"type": "string", "pattern": VERSION_PATTERN}
    if kind in (SpecifierSet, Requirement):
        return {"type": "string", "pattern": r"\S"}
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return {"enum": [member.value for member in kind]}
    if attrs.has(kind):
        return {"$ref": f"#/$defs/{kind.__name__}"}
    origin, args = get_origin(kind), get_args(kind)
    if origin in (Union, types.UnionType):
        options = [arg for arg in args if arg is not type(None)]
        inner = (
            _type_schema(options[0])
            if len(options) == 1
            else {"anyOf": [_type_schema(o) for o in options]}
        )
        return {"anyOf": [inner, {"type": "null"}]}
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        array: dict[str, Any] = {"type": "array", "items": _type_schema(args[0])}
        if args[0] in UNIQUE_ITEMS:
            array["uniqueItems"] = True
        return array
    if origin in (Mapping, dict, typing.Mapping):
        return {
            "type": "object",
            "propertyNames": _type_schema(args[0]),
            "additionalProperties": {"type": "string"} if args[1] is SpecifierSet else {},
        }
    raise TypeError(f"no JSON Schema for {kind!r}")  # pragma: no cover - a new field type


def _json_field_schema(name: str) -> dict[str, Any] | None:
    """Fields whose values are free JSON, with the shape the loader wants."""
    if name == "default":
        return {}
    if name == "choices":
        return {
            "anyOf": [
                {
                    "type": "array",
                    "uniqueItems": True,
                    "items": {"type": ["string", "number", "boolean"]},
                },
                {"type": "null"},
            ]
        }
    return None


def _object_schema(cls: type, *, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in attrs.fields(cls):
        if field.name in skip:
            continue
        schema = _json_field_schema(field.name)
        if schema is None:
            schema = _type_schema(hints[field.name])
        description = field.metadata.get("description")
        if description:
            schema = {"description": description, **schema}
        default: object = field.default
        if default is attrs.NOTHING:
            required.append(field.name)
        elif not isinstance(default, attrs.Factory):  # type: ignore[arg-type]  # a class at run time
            schema["default"] = _json_default(default)
        properties[field.name] = schema
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _json_default(default: object) -> JSONValue:
    if isinstance(default, enum.Enum):
        return default.value  # type: ignore[no-any-return]  # our enums have str values
    if isinstance(default, tuple):
        return list(default)
    assert default is None or isinstance(default, (str, bool, int, float))
    return default


def _setting_rules() -> list[dict[str, Any]]:
    """The per-type rules of a setting spec, as if/then clauses."""

    def when(kinds: set[SettingType], then: dict[str, Any]) -> dict[str, Any]:
        values = sorted(kind.value for kind in kinds)
        return {
            "if": {"properties": {"type": {"enum": values}}, "required": ["type"]},
            "then": then,
        }

    every = set(SettingType)
    null = {"type": "null"}
    numeric = {SettingType.INTEGER, SettingType.NUMBER}
    text = {SettingType.STRING, SettingType.SECRET}
    return [
        when(
            {SettingType.CHOICE},
            {"required": ["choices"], "properties": {"choices": {"type": "array", "minItems": 1}}},
        ),
        when(every - {SettingType.CHOICE}, {"properties": {"choices": null}}),
        when(every - numeric, {"properties": {"min": null, "max": null}}),
        when(every - text, {"properties": {"max_length": null}}),
        when({SettingType.SECRET}, {"properties": {"default": null}}),
        when({SettingType.STRING}, {"properties": {"default": {"type": ["string", "null"]}}}),
        when(
            {SettingType.INTEGER},
            {
                "properties": {
                    "default": {"type": ["integer", "null"]},
                    "min": {"type": ["integer", "null"]},
                    "max": {"type": ["integer", "null"]},
                }
            },
        ),
        when({SettingType.NUMBER}, {"properties": {"default": {"type": ["number", "null"]}}}),
        when({SettingType.BOOLEAN}, {"properties": {"default": {"type": ["boolean", "null"]}}}),
        when(
            {SettingType.CHOICE},
            {"properties": {"default": {"type": ["string", "number", "boolean", "null"]}}},
        ),
    ]


@functools.cache
def _build() -> dict[str, Any]:
    manifest = _object_schema(Manifest, skip=frozenset({"extensions", "notes"}))
    # ``id`` may be left out: it is then derived from ``name``.
    manifest["required"] = [name for name in manifest["required"] if name != "id"]
    manifest["properties"]["$schema"] = {
        "description": "A link to this schema, for editors.",
        "type": "string",
    }
    manifest["patternProperties"] = {"^x-": {"description": "A vendor extension, kept as given."}}
    setting = _object_schema(SettingSpec)
    setting["allOf"] = _setting_rules()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "services-ai-plugins plugin manifest",
        "description": "The manifest.json of a services-ai-plugins plugin.",
        "$comment": "Also checked by the loader, beyond this schema: "
        + "; ".join(BEYOND_SCHEMA)
        + ".",
        **manifest,
        "$defs": {"SettingSpec": setting},
    }


def manifest_json_schema() -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of ``manifest.json``.

    It is generated from the :class:`Manifest` model, so editors validate
    against the same fields and formats the loader checks. Rules that span
    several fields are checked by the loader only; the schema's ``$comment``
    lists them.

    Example::

        >>> schema = manifest_json_schema()
        >>> schema["required"]
        ['name', 'version']
    """
    return copy.deepcopy(_build())
