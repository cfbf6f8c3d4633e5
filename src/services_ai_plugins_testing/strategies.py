"""Hypothesis strategies for manifests, settings and the JSON they are made of.

Plugin authors and host adapters can use them to property-test code that
reads manifests or setting values::

    from hypothesis import given
    from services_ai_plugins_testing import strategies as sais


    @given(sais.manifests())
    def test_my_admin_screen_renders_every_manifest(manifest):
        render(manifest)

Every strategy here draws *valid* input (a manifest loads without a
:class:`~services_ai_plugins.ManifestError`, a setting value passes
:func:`~services_ai_plugins.validate_settings`), except
:func:`mutated_manifest_dicts`, which corrupts valid documents on purpose.
"""

from __future__ import annotations

import functools
import keyword
import math
from typing import TYPE_CHECKING, Final

from hypothesis import strategies as st

from services_ai_plugins import Isolation, Manifest, SettingSpec, SettingType

if TYPE_CHECKING:
    from collections.abc import Iterable

    from services_ai_plugins._types import JSONValue

__all__ = [
    "MANIFEST_KEYS",
    "SETTING_KEYS",
    "dependencies",
    "display_names",
    "entry_points",
    "hook_names",
    "json_values",
    "manifest_dicts",
    "manifests",
    "mutated_manifest_dicts",
    "permission_names",
    "plugin_ids",
    "setting_names",
    "setting_specs",
    "setting_values",
    "specifiers",
    "versions",
]

#: The keys a manifest document may have, besides ``$schema`` and ``x-`` keys.
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
_cached = functools.cache

# Bounds of number settings stay within the integers a float holds exactly, so
# a float drawn between two bounds is never rounded outside them.
_EXACT: Final = 2**53
_IDENT: Final = r"[A-Za-z_][A-Za-z0-9_]{0,15}"
_ALL_TYPES: Final = tuple(SettingType)
_MARKERS: Final = (
    'python_version >= "3.10"',
    "sys_platform == 'linux'",
    'os_name != "nt" and python_version < "4"',
    'platform_machine == "x86_64" or implementation_name == "cpython"',
    'extra == "test"',
)


_LOWER: Final = "abcdefghijklmnopqrstuvwxyz"
_UPPER: Final = _LOWER.upper()
_DIGITS: Final = "0123456789"


@_cached
def _word(
    first: str, rest: str, min_rest: int, max_rest: int, last: str = ""
) -> st.SearchStrategy[str]:
    """Words of one character of ``first``, then ``rest``, then one of ``last`` if given.

    Cheaper to draw than ``st.from_regex`` with the same shape.
    """
    parts = [st.sampled_from(first), st.text(alphabet=rest, min_size=min_rest, max_size=max_rest)]
    if last:
        parts.append(st.sampled_from(last))
    return st.tuples(*parts).map("".join)


@_cached
def _dotted(
    word: st.SearchStrategy[str], separators: str, max_parts: int
) -> st.SearchStrategy[str]:
    """One to ``max_parts`` words joined by any of ``separators``."""
    tail = st.lists(
        st.tuples(st.sampled_from(separators), word).map("".join), max_size=max_parts - 1
    )
    return st.tuples(word, tail).map(lambda parts: parts[0] + "".join(parts[1]))


# -- JSON ----------------------------------------------------------------------------------------


@_cached
def _json_integers() -> st.SearchStrategy[int]:
    huge = st.integers(min_value=2**1024, max_value=10**400)  # beyond the range of a float
    return st.one_of(
        st.integers(min_value=-(2**63), max_value=2**63),
        st.integers(),
        huge,
        huge.map(lambda value: -value),
    )


@_cached
def _json_values(max_leaves: int) -> st.SearchStrategy[JSONValue]:
    scalars: st.SearchStrategy[JSONValue] = st.one_of(
        st.none(),
        st.booleans(),
        _json_integers(),
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


@_cached
def _set_json_values(max_leaves: int) -> st.SearchStrategy[JSONValue]:
    return _json_values(max_leaves).filter(_is_set)


def json_values(*, max_leaves: int = 20) -> st.SearchStrategy[JSONValue]:
    """Arbitrary JSON values: ``None``, booleans, numbers, text, arrays and objects.

    Integers include huge ones (beyond the range of a float); floats are
    finite; object keys are strings. ``max_leaves`` bounds the number of
    scalars in one value, and so its size and depth.
    """
    return _json_values(max_leaves)


# -- strings of the manifest -----------------------------------------------------------------


def _not_keyword(name: str) -> bool:
    return not keyword.iskeyword(name)


@_cached
def _identifiers() -> st.SearchStrategy[str]:
    letters = _LOWER + _UPPER + "_"
    return _word(letters, letters + _DIGITS, 0, 15).filter(_not_keyword)


@_cached
def _plugin_ids() -> st.SearchStrategy[str]:
    return _word(_LOWER, _LOWER + _DIGITS + "-", 1, 62, _LOWER + _DIGITS)


def plugin_ids() -> st.SearchStrategy[str]:
    """Valid plugin ids: slugs of 3-64 lowercase letters, digits and ``-``.

    They start with a letter and do not end with ``-``, like ``crm-sync``.
    """
    return _plugin_ids()


@_cached
def _numbers(top: int) -> st.SearchStrategy[str]:
    return st.integers(min_value=0, max_value=top).map(str)


@_cached
def _release() -> st.SearchStrategy[str]:
    return st.lists(_numbers(2000), min_size=1, max_size=4).map(".".join)


@_cached
def _pep440_versions() -> st.SearchStrategy[str]:
    number = _numbers(99)
    epoch = st.just("") | number.map(lambda n: f"{n}!")
    labels = st.sampled_from(["a", "b", "rc", ".alpha", "-beta", "c"])
    pre = st.just("") | st.tuples(labels, number).map("".join)
    post = st.just("") | number.map(lambda n: f".post{n}")
    dev = st.just("") | number.map(lambda n: f".dev{n}")
    alphanumeric = _LOWER + _DIGITS
    local = st.just("") | _dotted(_word(alphanumeric, alphanumeric, 0, 7), ".", 3).map("+".__add__)
    return st.tuples(epoch, _release(), pre, post, dev, local).map("".join)


@_cached
def _semver_versions() -> st.SearchStrategy[str]:
    part = _numbers(999)
    core = st.tuples(part, part, part).map(".".join)
    label = st.sampled_from(["alpha", "beta", "rc", "a", "b", "pre", "preview"])
    pre = st.just("") | st.tuples(label, st.just("") | part.map(lambda n: f".{n}")).map(
        lambda parts: f"-{parts[0]}{parts[1]}"
    )
    build = st.just("") | _dotted(_word(_LOWER, _LOWER + _DIGITS, 0, 7), ".", 2).map("+".__add__)
    return st.tuples(core, pre, build).map("".join)


@_cached
def _versions() -> st.SearchStrategy[str]:
    return st.one_of(
        _release(),
        _pep440_versions(),
        _semver_versions(),
        st.sampled_from(["1.2.3", "1.2.3-beta.1", "1.0.0-rc.2+build.5", "0.0.1", "v2.0"]),
    )


def versions() -> st.SearchStrategy[str]:
    """Version strings that :class:`packaging.version.Version` parses.

    Both PEP 440 (``2!1.0rc1.post2.dev3+local.1``) and semantic-versioning
    style (``1.2.3``, ``1.2.3-beta.1``, ``1.0.0-rc.2+build.5``).
    """
    return _versions()


@_cached
def _specifiers() -> st.SearchStrategy[str]:
    number = _numbers(50)
    release = st.lists(number, min_size=1, max_size=3).map(".".join)
    pre = st.just("") | st.tuples(st.sampled_from(["a", "b", "rc"]), number).map("".join)
    operators = st.sampled_from([">=", "<=", ">", "<", "==", "!=", "===", ">= "])
    ordered = st.tuples(operators, release, pre).map("".join)
    compatible = st.lists(number, min_size=2, max_size=3).map(lambda parts: "~=" + ".".join(parts))
    wildcard = st.tuples(st.sampled_from(["==", "!="]), release).map(lambda p: f"{p[0]}{p[1]}.*")
    clauses = st.lists(st.one_of(ordered, compatible, wildcard), min_size=1, max_size=3)
    return st.tuples(clauses, st.sampled_from([",", ", "])).map(lambda p: p[1].join(p[0]))


def specifiers() -> st.SearchStrategy[str]:
    """Non-empty PEP 440 version specifiers, such as ``>=1.0,<2`` or ``~=1.4, !=1.4.2``."""
    return _specifiers()


@st.composite
def _dependencies(draw: st.DrawFn) -> str:
    alphanumeric = _LOWER + _UPPER + _DIGITS
    name = draw(
        st.sampled_from(alphanumeric)
        | _word(alphanumeric, alphanumeric + "._-", 0, 14, alphanumeric)
    )
    extras = draw(st.lists(_word(_LOWER, _LOWER + _DIGITS + "_", 0, 7), max_size=2))
    text = f"{name}[{','.join(extras)}]" if extras else name
    separator = "; "
    if draw(st.booleans()):
        text += f" @ https://example.com/{name}-1.0.tar.gz"
        separator = " ; "  # a marker after a URL needs a space before the ';'
    elif draw(st.booleans()):
        text += draw(_specifiers())
    if draw(st.booleans()):
        text += separator + draw(st.sampled_from(_MARKERS))
    return text


def dependencies() -> st.SearchStrategy[str]:
    """PEP 508 requirement strings: names, extras, specifiers, URLs and markers."""
    return _dependencies()


@_cached
def _display_names() -> st.SearchStrategy[str]:
    visible = st.characters(exclude_categories=("Cc", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"))
    word = st.text(alphabet=visible, min_size=1, max_size=12)
    return st.lists(word, min_size=1, max_size=5).map(" ".join)


def display_names() -> st.SearchStrategy[str]:
    """Display names: one line of up to 100 characters, without outer spaces."""
    return _display_names()


@_cached
def _derivable_names() -> st.SearchStrategy[str]:
    """Display names that a plugin id can be derived from."""
    ascii_word = _word(_LOWER + _UPPER, _LOWER + _UPPER + _DIGITS, 2, 10)
    rest = st.just("") | _display_names().map(lambda name: " " + name[:80])
    return st.tuples(ascii_word, rest).map("".join)


@_cached
def _permission_names() -> st.SearchStrategy[str]:
    return _dotted(_word(_LOWER, _LOWER + _DIGITS + "_", 0, 10), ".:", 3)


def permission_names() -> st.SearchStrategy[str]:
    """Permission names such as ``read_leads`` or ``leads.read``."""
    return _permission_names()


@_cached
def _hook_names() -> st.SearchStrategy[str]:
    return _word(_LOWER + "_", _LOWER + _DIGITS + "_", 0, 20).filter(_not_keyword)


def hook_names() -> st.SearchStrategy[str]:
    """Hook names such as ``lead_created`` (never a Python keyword)."""
    return _hook_names()


def setting_names() -> st.SearchStrategy[str]:
    """Setting names: identifiers such as ``api_key`` (never a Python keyword)."""
    return _identifiers()


@_cached
def _entry_points() -> st.SearchStrategy[str]:
    parts = st.lists(_identifiers(), min_size=1, max_size=3)
    return st.one_of(
        st.just("main.py"),
        parts.map(lambda names: "/".join(names) + ".py"),
        parts.map(".".join),
    )


def entry_points() -> st.SearchStrategy[str]:
    """Entry points in every form: ``main.py``, ``pkg/mod.py`` and ``pkg.mod``."""
    return _entry_points()


@_cached
def _relative_paths() -> st.SearchStrategy[str]:
    safe = _LOWER + _UPPER + _DIGITS + "_-"
    segment = _word(safe, safe + ".", 0, 11)
    file_name = st.tuples(_word(safe, safe, 0, 7), st.sampled_from([".png", ".svg"])).map("".join)
    return st.tuples(st.lists(segment, max_size=2), file_name).map(
        lambda parts: "/".join([*parts[0], parts[1]])
    )


@_cached
def _emails() -> st.SearchStrategy[str]:
    local = _word(_LOWER + _DIGITS, _LOWER + _DIGITS + "._+-", 0, 11)
    domain = _word(_LOWER + _DIGITS, _LOWER + _DIGITS + "-", 0, 11)
    top = _word(_LOWER, _LOWER, 1, 5)
    return st.tuples(local, domain, top).map(lambda p: f"{p[0]}@{p[1]}.{p[2]}")


@_cached
def _urls() -> st.SearchStrategy[str]:
    host = _dotted(_word(_LOWER + _DIGITS, _LOWER + _DIGITS + "-", 0, 11), ".", 3)
    path_part = st.text(alphabet=_LOWER + _UPPER + _DIGITS + "_.~-", max_size=10)
    path = st.lists(path_part, max_size=3).map(lambda parts: "".join("/" + p for p in parts))
    query = st.just("") | _word(_LOWER, _LOWER, 0, 4).map("?q=".__add__)
    return st.tuples(st.sampled_from(["http://", "https://"]), host, path, query).map("".join)


# -- settings ----------------------------------------------------------------------------------


def _choice_key(value: JSONValue) -> tuple[str, JSONValue]:
    # Choices repeat when they are equal numbers (1 and 1.0) or equal values of
    # one type; True and 1 are different choices.
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    return ("string", value)


@_cached
def _choice_lists() -> st.SearchStrategy[list[JSONValue]]:
    choice: st.SearchStrategy[JSONValue] = st.one_of(
        st.text(max_size=10),
        st.integers(min_value=-1000, max_value=1000),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
    )
    return st.lists(choice, min_size=1, max_size=6, unique_by=_choice_key)


@_cached
def _integer_bound() -> st.SearchStrategy[float | None]:
    whole = st.integers(min_value=-(10**12), max_value=10**12)
    # JSON may write a whole number as 3 or as 3.0; both bound an integer setting.
    return st.none() | whole | whole.map(float)


@_cached
def _number_bound() -> st.SearchStrategy[float | None]:
    finite = st.floats(min_value=-1e15, max_value=1e15, allow_nan=False)
    return st.none() | finite | st.integers(min_value=-_EXACT, max_value=_EXACT)


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
    return st.integers(
        min_value=None if low is None else math.ceil(low),
        max_value=None if high is None else math.floor(high),
    )


def _numbers_between(low: float | None, high: float | None) -> st.SearchStrategy[float]:
    floats = st.floats(
        min_value=None if low is None else float(low),
        max_value=None if high is None else float(high),
        allow_nan=False,
        allow_infinity=False,
    )
    lowest = None if low is None else math.ceil(low)
    highest = None if high is None else math.floor(high)
    if lowest is not None and highest is not None and lowest > highest:
        return floats
    return floats | st.integers(min_value=lowest, max_value=highest)


@_cached
def _text_up_to(max_length: int, min_length: int = 0) -> st.SearchStrategy[str]:
    return st.text(min_size=min_length, max_size=max_length)


def _draw_max_length(draw: st.DrawFn, spec: dict[str, JSONValue]) -> int | None:
    max_length = draw(st.none() | st.integers(min_value=0, max_value=40))
    if max_length is not None:
        spec["max_length"] = max_length
    return max_length


def _draw_setting_spec(
    draw: st.DrawFn, types: tuple[SettingType, ...], name: str | None
) -> dict[str, JSONValue]:
    kind = draw(st.sampled_from(types))
    spec: dict[str, JSONValue] = {
        "name": draw(_identifiers()) if name is None else name,
        "type": kind.value,
    }
    if draw(st.booleans()):
        spec["label"] = draw(_text_up_to(30))
    if draw(st.booleans()):
        spec["description"] = draw(_text_up_to(60))
    if draw(st.booleans()):
        spec["required"] = draw(st.booleans())
    default: st.SearchStrategy[JSONValue] | None = None
    if kind is SettingType.STRING:
        max_length = _draw_max_length(draw, spec)
        default = _text_up_to(30 if max_length is None else max_length)
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
        default = _set_json_values(8)
    if default is not None and draw(st.booleans()):
        spec["default"] = draw(default)
    # A null is the same as an absent key for these (an absent default is null).
    for key in draw(st.lists(st.sampled_from(["label", "default", "choices", "min", "max"]))):
        spec.setdefault(key, None)
    return spec


@st.composite
def _setting_specs(
    draw: st.DrawFn, types: tuple[SettingType, ...], name: str | None
) -> dict[str, JSONValue]:
    return _draw_setting_spec(draw, types, name)


def setting_specs(
    types: Iterable[SettingType] = _ALL_TYPES, *, name: str | None = None
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
    text setting, which counts as missing. :func:`validate_settings` returns
    them unchanged.
    """
    kind = spec.type
    if kind in (SettingType.STRING, SettingType.SECRET):
        top = 40 if spec.max_length is None else spec.max_length
        return _text_up_to(top, 1 if spec.required and top else 0)
    if kind is SettingType.INTEGER:
        return _integers_between(spec.min, spec.max)
    if kind is SettingType.NUMBER:
        return _numbers_between(spec.min, spec.max)
    if kind is SettingType.BOOLEAN:
        return st.booleans()
    if kind is SettingType.CHOICE:
        return st.sampled_from(spec.choices or ())
    return _set_json_values(8)


# -- manifests ---------------------------------------------------------------------------------


def _as_json(items: list[str]) -> list[JSONValue]:
    return list(items)


@_cached
def _unique(items: st.SearchStrategy[str], max_size: int) -> st.SearchStrategy[list[JSONValue]]:
    return st.lists(items, max_size=max_size, unique=True).map(_as_json)


@st.composite
def _settings_lists(draw: st.DrawFn) -> list[JSONValue]:
    names = draw(st.lists(_identifiers(), max_size=5, unique=True))
    return [_draw_setting_spec(draw, _ALL_TYPES, name) for name in names]


def _nullable(strategy: st.SearchStrategy[JSONValue]) -> st.SearchStrategy[JSONValue]:
    """A value, or an explicit null (the same as leaving the key out)."""
    return strategy | st.none()


@_cached
def _optional_fields() -> tuple[tuple[str, st.SearchStrategy[JSONValue]], ...]:
    return (
        ("description", st.text(max_size=80)),
        ("author", _nullable(st.text(max_size=30))),
        ("email", _nullable(_emails())),
        ("homepage", _nullable(_urls())),
        ("license", _nullable(st.sampled_from(["MIT", "Apache-2.0", "GPL-3.0-or-later", ""]))),
        ("entry_point", _entry_points()),
        ("plugin_class", _nullable(_identifiers())),
        ("settings", _settings_lists()),
        ("requires_api", _nullable(_specifiers())),
        ("requires_python", _nullable(_specifiers())),
        ("dependencies", _unique(_dependencies(), 4)),
        (
            "requires_plugins",
            st.dictionaries(
                _plugin_ids(), _specifiers() | st.sampled_from(["", "*", " "]), max_size=3
            ),
        ),
        ("hooks", _nullable(_unique(_hook_names(), 6))),
        ("isolation", _nullable(st.sampled_from([member.value for member in Isolation]))),
        ("changelog", _nullable(st.text(max_size=80))),
        ("icon", _nullable(_relative_paths())),
    )


@_cached
def _extension_keys() -> st.SearchStrategy[list[str]]:
    return st.lists(st.text(max_size=10).map(lambda key: "x-" + key), max_size=3)


def _draw_manifest_dict(draw: st.DrawFn) -> dict[str, JSONValue]:
    document: dict[str, JSONValue] = {}
    if draw(st.integers(min_value=0, max_value=4)):
        document["id"] = draw(_plugin_ids())
        document["name"] = draw(_display_names())
    else:
        document["name"] = draw(_derivable_names())
    document["version"] = draw(_versions())
    for key, strategy in _optional_fields():
        if draw(st.booleans()):
            document[key] = draw(strategy)
    if draw(st.booleans()):
        names = draw(_unique(_permission_names(), 8))
        split = draw(st.integers(min_value=0, max_value=len(names)))
        document["permissions"] = names[:split]
        if split < len(names) or draw(st.booleans()):
            document["optional_permissions"] = names[split:]
    for key in draw(_extension_keys()):
        document[key] = draw(_json_values(10))
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        document["$schema"] = "https://example.com/manifest.schema.json"
    return document


@st.composite
def _manifest_dicts(draw: st.DrawFn) -> dict[str, JSONValue]:
    return _draw_manifest_dict(draw)


def manifest_dicts() -> st.SearchStrategy[dict[str, JSONValue]]:
    """JSON objects that are valid manifests.

    Each draws a random subset of the optional fields (entry points in every
    form, unique and disjoint permissions, settings with unique names,
    specifiers, PEP 508 dependencies, plugin requirements including ``""``
    and ``"*"``, unique hooks, an icon path, explicit nulls), some ``x-``
    vendor keys with JSON values, and sometimes no ``id`` but a ``name`` it
    derives from.
    """
    return _manifest_dicts()


def manifests() -> st.SearchStrategy[Manifest]:
    """Valid :class:`~services_ai_plugins.Manifest` objects (``manifest_dicts`` loaded)."""
    return _manifest_dicts().map(Manifest.from_dict)


# -- corrupted manifests -----------------------------------------------------------------------


#: Values at the edges of the manifest's rules: bounds of numbers, lengths and emptiness.
_EDGE_VALUES: Final[tuple[JSONValue, ...]] = (
    0,
    -1,
    1,
    0.5,
    -0.0,
    2**63,
    2**1024,
    -(2**1024),
    10**400,
    1e308,
    -1e308,
    5e-324,
    "",
    " ",
    "a" * 65,
    "a" * 3000,
    [],
    {},
    [None],
    True,
    False,
    None,
)


@_cached
def _mutation_values() -> st.SearchStrategy[JSONValue]:
    return _json_values(10) | st.sampled_from(_EDGE_VALUES)


def _draw_source(draw: st.DrawFn, target: dict[str, JSONValue]) -> JSONValue:
    """A random value, or one already in ``target`` (a key's value or an array's item)."""
    found: list[JSONValue] = list(target.values())
    found.extend(item for value in target.values() if isinstance(value, list) for item in value)
    if found and draw(st.booleans()):
        return draw(st.sampled_from(found))
    return draw(_mutation_values())


def _draw_mutation(draw: st.DrawFn, target: dict[str, JSONValue], known: tuple[str, ...]) -> None:
    """Replace, delete, insert or append to one key of ``target``, in place."""
    action = draw(st.sampled_from(["replace", "delete", "insert", "append"]))
    present = sorted(target)
    arrays = [key for key in present if isinstance(target[key], list)]
    if action == "append" and arrays:
        key = draw(st.sampled_from(arrays))
        array = target[key]
        assert isinstance(array, list)  # for mypy: arrays holds the keys of lists
        position = draw(st.integers(min_value=0, max_value=len(array)))
        target[key] = [*array[:position], _draw_source(draw, target), *array[position:]]
    elif action in ("replace", "delete") and present:
        key = draw(st.sampled_from(present))
        if action == "delete":
            del target[key]
        else:
            target[key] = _draw_source(draw, target)
    else:
        key = draw(st.sampled_from(sorted({*present, *known})) | st.text(max_size=12))
        target[key] = _draw_source(draw, target)


@st.composite
def _mutated_manifest_dicts(draw: st.DrawFn) -> dict[str, JSONValue]:
    document = _draw_manifest_dict(draw)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        settings = document.get("settings")
        if isinstance(settings, list) and settings and draw(st.booleans()):
            index = draw(st.integers(min_value=0, max_value=len(settings) - 1))
            item = settings[index]
            if isinstance(item, dict):
                settings[index] = item = dict(item)
                _draw_mutation(draw, item, SETTING_KEYS)
            else:
                settings[index] = draw(_mutation_values())
        else:
            _draw_mutation(draw, document, MANIFEST_KEYS)
    return document


def mutated_manifest_dicts() -> st.SearchStrategy[dict[str, JSONValue]]:
    """Valid manifest documents with one to three random mutations, usually invalid.

    Each mutation replaces, deletes or inserts a key, or inserts an item into
    an array, at the top level or in an item of ``settings``. The new value
    is random JSON, a value at the edge of a rule (huge numbers, long or empty
    strings), or a value taken from elsewhere in the same object. The result
    is close enough to valid to reach the checks that a random JSON object
    never gets to.
    """
    return _mutated_manifest_dicts()
