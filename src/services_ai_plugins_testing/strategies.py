"""Hypothesis strategies for manifests, settings and the JSON they are made of.

Plugin authors and host adapters can use them to property-test code that
reads manifests or setting values::

    from hypothesis import given
    from services_ai_plugins_testing import strategies as sais


    @given(sais.manifests())
    def test_my_admin_screen_renders_every_manifest(manifest):
        render(manifest)

Two kinds of strategy live here:

* *valid* input: :func:`manifest_dicts` and :func:`manifests` load without a
  :class:`~services_ai_plugins.ManifestError`; :func:`setting_specs` are
  consistent; :func:`setting_values` pass
  :func:`~services_ai_plugins.validate_settings`; the strings (:func:`plugin_ids`,
  :func:`versions`, :func:`specifiers`, :func:`dependencies`, ...) follow the
  manifest's rules;
* *fuzzing* input, mostly invalid: :func:`json_values`,
  :func:`manifest_like_dicts`, :func:`mutated_manifest_dicts`,
  :func:`json_texts` and :func:`json_bytes`, for checking that a loader
  refuses bad input with its own error and nothing else.
"""

from __future__ import annotations

import functools
import json
import keyword
import math
import sys
from typing import TYPE_CHECKING, Final, TypeVar

from hypothesis import strategies as st

from services_ai_plugins import Isolation, Manifest, SettingSpec, SettingType
from services_ai_plugins._types import MAX_INT_DIGITS

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from services_ai_plugins._types import JSONValue

__all__ = [
    "MANIFEST_KEYS",
    "SETTING_KEYS",
    "dependencies",
    "display_names",
    "entry_points",
    "hook_names",
    "json_bytes",
    "json_texts",
    "json_values",
    "manifest_dicts",
    "manifest_like_dicts",
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

_T = TypeVar("_T")

# Strategies are built once and cached: building one costs far more than
# drawing from it, and the composites below draw hundreds of values each.
_cached = functools.cache

# Bounds of number settings stay within the integers a float holds exactly, so
# a float drawn between two bounds is never rounded outside them.
_EXACT: Final = 2**53
#: Integers of arbitrary JSON get up to this many digits: past the SDK's limit
#: (MAX_INT_DIGITS) but within what Python writes as text by default (4300).
_ANY_DIGITS: Final = 1100
#: Integers of valid documents have up to the SDK's limit of digits.
_VALID_DIGITS: Final = MAX_INT_DIGITS
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


def _negated(value: int) -> int:
    return -value


def _offset(parts: tuple[int, int]) -> int:
    return parts[0] + parts[1]


@_cached
def _json_integers(max_digits: int = _ANY_DIGITS) -> st.SearchStrategy[int]:
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


@_cached
def _json_values(max_leaves: int, max_digits: int = _ANY_DIGITS) -> st.SearchStrategy[JSONValue]:
    scalars: st.SearchStrategy[JSONValue] = st.one_of(
        st.none(),
        st.booleans(),
        _json_integers(max_digits),
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
def _valid_json_values(max_leaves: int) -> st.SearchStrategy[JSONValue]:
    """JSON values that a manifest or a json setting accepts, never None."""
    return _json_values(max_leaves, _VALID_DIGITS).filter(_is_set)


def json_values(
    *, max_leaves: int = 20, max_digits: int = _ANY_DIGITS
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
    return _json_values(max_leaves, max_digits)


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


@_cached
def _distribution_names() -> st.SearchStrategy[str]:
    alphanumeric = _LOWER + _UPPER + _DIGITS
    return st.sampled_from(alphanumeric) | _word(
        alphanumeric, alphanumeric + "._-", 0, 14, alphanumeric
    )


@_cached
def _extras() -> st.SearchStrategy[list[str]]:
    return st.lists(_word(_LOWER, _LOWER + _DIGITS + "_", 0, 7), max_size=2)


@_cached
def _sampled(options: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.sampled_from(options)


def _pick(draw: st.DrawFn, options: Sequence[_T]) -> _T:
    """One of ``options`` (not empty), without building a strategy for each draw."""
    return options[draw(st.integers(min_value=0, max_value=len(options) - 1))]


@st.composite
def _dependencies(draw: st.DrawFn) -> str:
    name = draw(_distribution_names())
    extras = draw(_extras())
    text = f"{name}[{','.join(extras)}]" if extras else name
    separator = "; "
    if draw(st.booleans()):
        text += f" @ https://example.com/{name}-1.0.tar.gz"
        separator = " ; "  # a marker after a URL needs a space before the ';'
    elif draw(st.booleans()):
        text += draw(_specifiers())
    if draw(st.booleans()):
        text += separator + draw(_sampled(_MARKERS))
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
    """Integers within the bounds (inclusive) that JSON and the SDK carry."""
    if low is None and high is None:
        return _json_integers(_VALID_DIGITS)
    largest = 10**_VALID_DIGITS - 1
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


@_cached
def _text_up_to(max_length: int, min_length: int = 0) -> st.SearchStrategy[str]:
    return st.text(min_size=min_length, max_size=max_length)


@_cached
def _max_lengths() -> st.SearchStrategy[int | None]:
    return st.none() | st.integers(min_value=0, max_value=40)


@_cached
def _null_keys() -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(["label", "default", "choices", "min", "max"]), max_size=3)


@_cached
def _types(types: tuple[SettingType, ...]) -> st.SearchStrategy[SettingType]:
    return st.sampled_from(types)


def _draw_max_length(draw: st.DrawFn, spec: dict[str, JSONValue]) -> int | None:
    max_length = draw(_max_lengths())
    if max_length is not None:
        spec["max_length"] = max_length
    return max_length


def _draw_setting_spec(
    draw: st.DrawFn, types: tuple[SettingType, ...], name: str | None
) -> dict[str, JSONValue]:
    kind = draw(_types(types))
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
        default = _valid_json_values(6)
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
    text setting, which counts as missing (so a required text setting with a
    ``max_length`` of 0 has no values: the strategy is empty).
    :func:`~services_ai_plugins.validate_settings` returns them unchanged.
    """
    kind = spec.type
    if kind in (SettingType.STRING, SettingType.SECRET):
        top = 40 if spec.max_length is None else spec.max_length
        if spec.required and top == 0:
            return st.nothing()
        return _text_up_to(top, 1 if spec.required else 0)
    if kind is SettingType.INTEGER:
        return _integers_between(spec.min, spec.max)
    if kind is SettingType.NUMBER:
        return _numbers_between(spec.min, spec.max)
    if kind is SettingType.BOOLEAN:
        return st.booleans()
    if kind is SettingType.CHOICE:
        return st.sampled_from(spec.choices or ())
    return _valid_json_values(6)


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


def _draw_manifest_dict(draw: st.DrawFn, with_id: bool | None = None) -> dict[str, JSONValue]:
    document: dict[str, JSONValue] = {}
    if with_id is None:
        with_id = draw(st.integers(min_value=0, max_value=4)) > 0
    if with_id:
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
        document[key] = draw(_json_values(6, _VALID_DIGITS))
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        document["$schema"] = "https://example.com/manifest.schema.json"
    return document


@st.composite
def _manifest_dicts_of(draw: st.DrawFn, with_id: bool | None) -> dict[str, JSONValue]:
    return _draw_manifest_dict(draw, with_id)


@_cached
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


# -- manifest-shaped JSON ---------------------------------------------------------------------


@_cached
def _manifest_like_dicts() -> st.SearchStrategy[dict[str, JSONValue]]:
    keys = st.sampled_from(MANIFEST_KEYS) | st.text(max_size=12)
    return st.dictionaries(keys, _json_values(4), max_size=6)


def manifest_like_dicts() -> st.SearchStrategy[dict[str, JSONValue]]:
    """JSON objects with mostly manifest keys and random JSON values: nearly always invalid.

    Cheap to draw; random values reach the check of each field rather than
    only "unknown key". See :func:`mutated_manifest_dicts` for documents
    that get past the first checks.
    """
    return _manifest_like_dicts()


# -- corrupted manifests -----------------------------------------------------------------------


#: Numbers at the edges: zero, signs, fractions, beyond 64 bits and the float range, and
#: integers of 1001 and 5001 digits (the SDK's limit is 1000; Python writes at most 4300).
_EDGE_NUMBERS: Final[tuple[JSONValue, ...]] = (
    0,
    -1,
    1,
    0.5,
    -0.0,
    2**63,
    2**1024,
    -(2**1024),
    10**1000,
    -(10**1000),
    10**5000,
    1e308,
    -1e308,
    5e-324,
)
#: Other values at the edges of the manifest's rules: lengths, emptiness, nulls.
_EDGE_VALUES: Final[tuple[JSONValue, ...]] = (
    *_EDGE_NUMBERS,
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
    return _json_values(6) | st.sampled_from(_EDGE_VALUES)


@_cached
def _numbers_like() -> st.SearchStrategy[JSONValue]:
    return (
        st.sampled_from(_EDGE_NUMBERS)
        | _json_integers()
        | st.floats(allow_nan=False, allow_infinity=False)
    )


@_cached
def _text_like() -> st.SearchStrategy[JSONValue]:
    return st.sampled_from(["", " ", "a" * 65, "a" * 3000]) | st.text(max_size=20)


@_cached
def _short_lists() -> st.SearchStrategy[list[JSONValue]]:
    return st.lists(_mutation_values(), max_size=3)


def _draw_like(draw: st.DrawFn, value: JSONValue) -> JSONValue:
    """A random value of the same JSON type as ``value``: it gets past the type checks."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return draw(_numbers_like())
    if isinstance(value, str):
        return draw(_text_like())
    if isinstance(value, list):
        return draw(_short_lists())
    return draw(_mutation_values())


def _draw_source(draw: st.DrawFn, target: dict[str, JSONValue]) -> JSONValue:
    """A random value, or one already in ``target`` (a key's value or an array's item)."""
    found: list[JSONValue] = list(target.values())
    found.extend(item for value in target.values() if isinstance(value, list) for item in value)
    reuse = draw(st.booleans())
    if found and reuse:
        return _pick(draw, found)
    return draw(_mutation_values())


def _draw_mutation(draw: st.DrawFn, target: dict[str, JSONValue], known: tuple[str, ...]) -> None:
    """Replace, delete, insert or append to one key of ``target``, in place."""
    action = draw(_sampled(("replace", "delete", "insert", "append")))
    present = sorted(target)
    arrays = [key for key in present if isinstance(target[key], list)]
    if action == "append" and arrays:
        key = _pick(draw, arrays)
        array = target[key]
        assert isinstance(array, list)  # for mypy: arrays holds the keys of lists
        position = draw(st.integers(min_value=0, max_value=len(array)))
        target[key] = [*array[:position], _draw_source(draw, target), *array[position:]]
    elif action in ("replace", "delete") and present:
        key = _pick(draw, present)
        if action == "delete":
            del target[key]
        elif draw(st.booleans()):
            target[key] = _draw_like(draw, target[key])
        else:
            target[key] = _draw_source(draw, target)
    else:
        invent = draw(st.booleans())
        key = draw(_text_up_to(12)) if invent else _pick(draw, sorted({*present, *known}))
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
    strings), a value of the same JSON type as the old one, or a value taken
    from elsewhere in the same object. The result is close enough to valid to
    reach the checks that a random JSON object never gets to.
    """
    return _mutated_manifest_dicts()


# -- text and bytes for parsers ----------------------------------------------------------------

_JSON_ALPHABET: Final = '{}[]":,.-+0123456789eEtrufalsnNIiy \\/\n\t'


def _truncate(parts: tuple[str, float]) -> str:
    text, fraction = parts
    return text[: int(len(text) * fraction)]


@_cached
def _json_texts() -> st.SearchStrategy[str]:
    documents = st.one_of(
        _json_values(8).map(json.dumps),
        _manifest_like_dicts().map(json.dumps),
    )
    return st.one_of(
        st.text(),
        st.text(alphabet=_JSON_ALPHABET, max_size=80),
        documents,
        st.tuples(documents, st.floats(min_value=0, max_value=1)).map(_truncate),
    )


def json_texts() -> st.SearchStrategy[str]:
    """Text for fuzzing a JSON parser: arbitrary, JSON-like, JSON, and (cut) manifests.

    It mixes any text, text over JSON's punctuation, JSON documents (among
    them :func:`manifest_like_dicts`) and prefixes of them.
    """
    return _json_texts()


def _with_bom(data: bytes) -> bytes:
    return b"\xef\xbb\xbf" + data


@_cached
def _json_bytes() -> st.SearchStrategy[bytes]:
    encoded = _json_texts().map(lambda text: text.encode("utf-8", "surrogatepass"))
    return st.one_of(st.binary(), encoded, encoded.map(_with_bom))


def json_bytes() -> st.SearchStrategy[bytes]:
    """Bytes for fuzzing a JSON reader: arbitrary bytes, and :func:`json_texts` as UTF-8.

    Encoded texts sometimes start with a UTF-8 byte order mark.
    """
    return _json_bytes()
