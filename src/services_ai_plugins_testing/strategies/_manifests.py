"""Valid manifests, as documents and as :class:`~services_ai_plugins.Manifest` records."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypothesis import strategies as st

from services_ai_plugins import Manifest
from services_ai_plugins.types import Isolation

from ._base import ALL_TYPES, VALID_DIGITS, cached
from ._json import any_json_values
from ._settings import draw_setting_spec
from ._strings import (
    dependencies,
    derivable_names,
    display_names,
    email_addresses,
    entry_points,
    hook_names,
    identifiers,
    permission_names,
    plugin_ids,
    relative_paths,
    specifiers,
    urls,
    versions,
)

if TYPE_CHECKING:
    from services_ai_plugins.types import JSONValue

__all__ = ["draw_manifest_dict", "manifest_dicts", "manifests"]


# -- manifests ---------------------------------------------------------------------------------


def _as_json(items: list[str]) -> list[JSONValue]:
    return list(items)


@cached
def _unique(items: st.SearchStrategy[str], max_size: int) -> st.SearchStrategy[list[JSONValue]]:
    return st.lists(items, max_size=max_size, unique=True).map(_as_json)


@st.composite
def _settings_lists(draw: st.DrawFn) -> list[JSONValue]:
    names = draw(st.lists(identifiers(), max_size=5, unique=True))
    return [draw_setting_spec(draw, ALL_TYPES, name) for name in names]


def _nullable(strategy: st.SearchStrategy[JSONValue]) -> st.SearchStrategy[JSONValue]:
    """A value, or an explicit null (the same as leaving the key out)."""
    return strategy | st.none()


@cached
def _optional_fields() -> tuple[tuple[str, st.SearchStrategy[JSONValue]], ...]:
    return (
        ("description", st.text(max_size=80)),
        ("author", _nullable(st.text(max_size=30))),
        ("email", _nullable(email_addresses())),
        ("homepage", _nullable(urls())),
        ("license", _nullable(st.sampled_from(["MIT", "Apache-2.0", "GPL-3.0-or-later", ""]))),
        ("entry_point", entry_points()),
        ("plugin_class", _nullable(identifiers())),
        ("settings", _settings_lists()),
        ("requires_api", _nullable(specifiers())),
        ("requires_python", _nullable(specifiers())),
        ("dependencies", _unique(dependencies(), 4)),
        (
            "requires_plugins",
            st.dictionaries(
                plugin_ids(), specifiers() | st.sampled_from(["", "*", " "]), max_size=3
            ),
        ),
        ("hooks", _nullable(_unique(hook_names(), 6))),
        ("isolation", _nullable(st.sampled_from([member.value for member in Isolation]))),
        ("changelog", _nullable(st.text(max_size=80))),
        ("icon", _nullable(relative_paths())),
    )


@cached
def _extension_keys() -> st.SearchStrategy[list[str]]:
    return st.lists(st.text(max_size=10).map(lambda key: "x-" + key), max_size=3)


def draw_manifest_dict(draw: st.DrawFn, with_id: bool | None = None) -> dict[str, JSONValue]:
    document: dict[str, JSONValue] = {}
    if with_id is None:
        with_id = draw(st.integers(min_value=0, max_value=4)) > 0
    if with_id:
        document["id"] = draw(plugin_ids())
        document["name"] = draw(display_names())
    else:
        document["name"] = draw(derivable_names())
    document["version"] = draw(versions())
    for key, strategy in _optional_fields():
        if draw(st.booleans()):
            document[key] = draw(strategy)
    if draw(st.booleans()):
        names = draw(_unique(permission_names(), 8))
        split = draw(st.integers(min_value=0, max_value=len(names)))
        document["permissions"] = names[:split]
        if split < len(names) or draw(st.booleans()):
            document["optional_permissions"] = names[split:]
    for key in draw(_extension_keys()):
        document[key] = draw(any_json_values(6, VALID_DIGITS))
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        document["$schema"] = "https://example.com/manifest.schema.json"
    return document


@st.composite
def _manifest_dicts_of(draw: st.DrawFn, with_id: bool | None) -> dict[str, JSONValue]:
    return draw_manifest_dict(draw, with_id)


@cached
def _manifest_dicts(with_id: bool | None = None) -> st.SearchStrategy[dict[str, JSONValue]]:
    return _manifest_dicts_of(with_id)


def manifest_dicts(*, with_id: bool | None = None) -> st.SearchStrategy[dict[str, JSONValue]]:
    """JSON objects that are valid manifests.

    Each draws a random subset of the optional fields (entry points in every
    form, unique and disjoint permissions, settings with unique names,
    specifiers, PEP 508 dependencies, plugin requirements including ``""``
    and ``"*"``, unique hooks, an icon path, explicit nulls) and some ``x-``
    vendor keys with JSON values. Some have no ``id`` but a ``name`` it
    derives from; ``with_id=True`` or ``False`` asks for always or never.
    """
    return _manifest_dicts(with_id)


def manifests(*, with_id: bool | None = None) -> st.SearchStrategy[Manifest]:
    """Valid :class:`~services_ai_plugins.Manifest` objects (``manifest_dicts`` loaded)."""
    return _manifest_dicts(with_id).map(Manifest.from_dict)
