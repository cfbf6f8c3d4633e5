"""Hypothesis strategies for event payloads, hook calls, manifests, settings and JSON.

Plugin authors can property-test their hooks with every kind of payload, and
host adapters the code that reads manifests or setting values::

    from hypothesis import given
    from services_ai_plugins_testing import strategies as sais


    @given(sais.leads(tenant="acme"))
    def test_every_lead_with_an_address_is_welcomed(lead):
        services = FakeHostServices()
        api = PluginAPI("welcome", services, tenant="acme", grants=frozenset({"send_email"}))
        Welcome().lead_created(lead=lead, api=api)
        assert len(services.emails("acme")) == (1 if lead.email else 0)


    @given(sais.manifests())
    def test_my_admin_screen_renders_every_manifest(manifest):
        render(manifest)

Three kinds of strategy live here:

* *event payloads*: one strategy per type of
  :mod:`services_ai_plugins.events` (:func:`contexts`, :func:`users`,
  :func:`leads`, :func:`bookings`, :func:`invoices`, :func:`invoice_lines`,
  :func:`emails`, :func:`sms`, :func:`notifications`, :func:`reports`,
  :func:`widgets`, :func:`html_fragments`, :func:`api_requests`,
  :func:`api_responses`, :func:`routes`), :func:`payloads` by type, and
  :func:`hook_arguments` for a whole hook call. Every record is valid and
  realistic (names, addresses at example domains, money as
  :class:`~decimal.Decimal` with two places, timezone-aware times, bookings
  that end after they start, invoices whose dates follow their status), and
  the records inside one (a context's user, an invoice's lines) belong to its
  tenant. ``tenant=`` pins the tenant: one name or a strategy of names; by
  default :func:`tenants`;
* *valid* manifest input: :func:`manifest_dicts` and :func:`manifests` load
  without a :class:`~services_ai_plugins.ManifestError`; :func:`setting_specs` are
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
import html
import json
import keyword
import math
import sys
import types
import typing
import unicodedata
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar, Union, get_args, get_origin

from hypothesis import strategies as st
from packaging.version import Version

from services_ai_plugins import Isolation, Manifest, SettingSpec, SettingType, events
from services_ai_plugins._dispatch import INJECTED
from services_ai_plugins._payload_codec import to_wire
from services_ai_plugins._types import MAX_INT_DIGITS
from services_ai_plugins.events import (
    HTTP_METHODS,
    ApiRequest,
    ApiResponse,
    Booking,
    Context,
    Email,
    HtmlFragment,
    Invoice,
    InvoiceLine,
    Lead,
    Notification,
    Report,
    Route,
    Sms,
    User,
    Widget,
)
from services_ai_plugins.hookspecs import hook_info, plugin_manager

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    import pluggy

    from services_ai_plugins._types import JSONValue

__all__ = [
    "MANIFEST_KEYS",
    "SETTING_KEYS",
    "api_requests",
    "api_responses",
    "bookings",
    "contexts",
    "dependencies",
    "display_names",
    "emails",
    "entry_points",
    "hook_arguments",
    "hook_names",
    "html_fragments",
    "invoice_lines",
    "invoices",
    "json_bytes",
    "json_texts",
    "json_values",
    "leads",
    "manifest_dicts",
    "manifest_like_dicts",
    "manifests",
    "mutated_manifest_dicts",
    "notifications",
    "payloads",
    "permission_names",
    "plugin_ids",
    "reports",
    "routes",
    "setting_names",
    "setting_specs",
    "setting_values",
    "sms",
    "specifiers",
    "tenants",
    "users",
    "versions",
    "widgets",
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


# -- event payloads ------------------------------------------------------------------------------
#
# One ``_draw_<record>(draw, tenant)`` per payload type draws a valid record of that tenant;
# records inside it (a Context's user, an Invoice's lines) are drawn by the same functions with
# the same tenant. The public strategies only choose the tenant and call them.

#: What a strategy of event payloads takes as its tenant: one tenant, a strategy of them, or
#: None for :func:`tenants`.
_TenantOption: TypeAlias = "str | st.SearchStrategy[str] | None"
_Drawer: TypeAlias = "Callable[[st.DrawFn, str], Any]"

#: Payloads without a tenant of their own: a part of another record, and a plugin's URL.
_UNTENANTED: Final = frozenset({InvoiceLine, Route})

_TENANT_NAMES: Final = (
    "acme",
    "globex",
    "initech",
    "umbrella",
    "stark-industries",
    "wayne-enterprises",
    "müller-söhne",
    "tenant-1",
)
_FIRST_NAMES: Final = (
    "Ada",
    "Grace",
    "Alan",
    "Hank",
    "Margaret",
    "Zoë",
    "José",
    "Łukasz",
    "Søren",
    "Aiko",
    "Chidi",
    "Fatima",
    "Ольга",
    "Mei",
    "Siobhán",
    "Priya",
)
_LAST_NAMES: Final = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Scorpio",
    "Hamilton",
    "Müller",
    "García",
    "Kowalski",
    "Tanaka",
    "Okafor",
    "Haddad",
    "Иванова",
    "Wong",
    "O'Brien",
    "de la Cruz",
    "Smith-Jones",
)
_COMPANIES: Final = (
    "Globex",
    "Initech",
    "Umbrella Corporation",
    "Stark Industries",
    "Wayne Enterprises",
    "Müller & Söhne GmbH",
    "Soylent Corp.",
    "Tyrell",
    "株式会社サンプル",
)
#: Reserved example domains: nothing a plugin sends to these addresses reaches anyone.
_DOMAINS: Final = (
    "example.com",
    "example.org",
    "example.net",
    "globex.example",
    "mail.example",
)
_LEAD_SOURCES: Final = ("website", "referral", "import", "event", "partner", "cold_call")
_LEAD_STATUSES: Final = ("new", "contacted", "qualified", "proposal", "won", "lost")
_BOOKING_STATUSES: Final = ("pending", "confirmed", "cancelled", "completed", "no_show")
_SERVICES: Final = (
    "Initial consultation",
    "Follow-up call",
    "Site visit",
    "Haircut & beard trim",
    "Massage (60 min)",
    "Dental check-up",
    "Onboarding workshop",
)
#: Minutes a booking lasts; 0 is allowed (a reminder, a call slot) and worth testing.
_DURATIONS: Final = (0, 15, 30, 45, 60, 90, 120, 240, 480)
_LINE_ITEMS: Final = (
    "Consulting (hours)",
    "Setup fee",
    "Monthly subscription",
    "Travel expenses",
    "Training day",
    "Support plan — Gold",
    "Licence, 12 months",
)
_CURRENCIES: Final = ("EUR", "USD", "GBP", "CHF", "SEK", "JPY", "AUD")
#: Days between issuing an invoice and its due date.
_PAYMENT_TERMS: Final = (0, 7, 14, 30, 60)
_DISCOUNT_PERCENT: Final = (5, 10, 15, 20)
_ROLES: Final = ("owner", "admin", "sales", "support", "billing", "staff")
_LOCALES: Final = ("en-GB", "en-US", "de-DE", "fr-FR", "es-ES", "ja-JP", "pt-BR", "ar-EG")
_SUBJECTS: Final = (
    "Your consultation",
    "Invoice {number}",
    "Welcome aboard!",
    "Reminder: your appointment",
    "Re: your enquiry",
    "Ihre Rechnung",
)
_SENTENCES: Final = (
    "Thanks for getting in touch.",
    "See you on Tuesday at 10:00.",
    "Please find the invoice attached.",
    "Your booking is confirmed.",
    "Let us know if anything changes.",
    "Vielen Dank für Ihre Anfrage!",
    "ご予約ありがとうございます。",
)
_NOTICES: Final = (
    "New lead from {name}",
    "Booking confirmed for {name}",
    "Invoice paid by {name}",
    "{name} cancelled an appointment",
    "Sync failed: the CRM did not answer",
)
_CHANNELS: Final = ("in_app", "email", "slack", "sms")
_LEVELS: Final = ("info", "success", "warning", "error")
_REPORT_KINDS: Final = ("sales", "bookings", "invoices", "leads", "activity")
_WIDGET_TITLES: Final = (
    "Open leads",
    "Revenue this month",
    "Upcoming bookings",
    "Overdue invoices",
    "Zoë's pipeline",
)
_WIDGET_SIZES: Final = ("small", "medium", "large", "full")
_FRAGMENTS: Final = (
    '<script defer src="https://stats.example/t.js"></script>',
    '<meta name="robots" content="noindex">',
    '<link rel="stylesheet" href="https://cdn.example/site.css">',
    "<style>.banner{color:#c00}</style>",
    '<div id="chat-widget" data-tenant="1"></div>',
    "<!-- added by a plugin -->",
)
_PLACEMENTS: Final = ("head", "footer")
_METHODS: Final = tuple(sorted(HTTP_METHODS))
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_PATH_WORDS: Final = ("stats", "leads", "webhook", "sync", "export", "settings", "v1", "42")
_HEADERS: Final = (
    ("accept", "application/json"),
    ("accept-language", "de-DE,de;q=0.9,en;q=0.8"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
    ("x-request-id", "7f3a9c"),
    ("x-forwarded-for", "203.0.113.7"),
)
_QUERY_KEYS: Final = ("page", "limit", "q", "period", "sort")
_STATUS_CODES: Final = (200, 201, 204, 301, 302, 400, 401, 403, 404, 409, 422, 500, 503)
_DATA_KEYS: Final = ("utm_campaign", "employees", "industry", "budget", "tags", "score")
_REASONS: Final = (
    "5 failures in a row in lead_created (TimeoutError)",
    "error rate 62% over the last 50 calls of filter_email",
    "suspended for 3 tenants: now suspended everywhere",
)
#: Common UTC offsets in minutes, with the odd ones (+05:45, -03:30) that catch naive arithmetic.
_COMMON_OFFSETS: Final = (0, 60, 120, -300, -240, -420, 330, 345, -210, 540, 600, 780, -600)
#: The span of generated moments (naive: ``st.datetimes`` adds the zone).
_EARLIEST: Final = datetime(2015, 1, 1)
_LATEST: Final = datetime(2035, 12, 31, 23, 59, 59)


def _offset_zone(minutes: int) -> timezone:
    return timezone(timedelta(minutes=minutes))


@_cached
def _zones() -> st.SearchStrategy[timezone]:
    common = st.sampled_from(_COMMON_OFFSETS).map(_offset_zone)
    # Any whole minute within the offsets in use (-12:00 to +14:00, with a margin).
    return common | st.integers(min_value=-14 * 60, max_value=14 * 60).map(_offset_zone)


@_cached
def _moments() -> st.SearchStrategy[datetime]:
    return st.datetimes(min_value=_EARLIEST, max_value=_LATEST, timezones=_zones())


@_cached
def _days() -> st.SearchStrategy[date]:
    return st.dates(min_value=_EARLIEST.date(), max_value=_LATEST.date())


def _cents(amount: int) -> Decimal:
    """``amount`` cents as a Decimal with two places: 1999 -> Decimal('19.99'), 100 -> '1.00'."""
    return Decimal(amount).scaleb(-2)


@_cached
def _money(low: int, high: int) -> st.SearchStrategy[Decimal]:
    """Amounts with two places, from ``low`` to ``high`` cents."""
    return st.integers(min_value=low, max_value=high).map(_cents)


@_cached
def _quantities() -> st.SearchStrategy[Decimal]:
    """Units (1 to 100) or hours in quarters (0.25 to 40.00)."""
    units = st.integers(min_value=1, max_value=100).map(Decimal)
    hours = st.integers(min_value=1, max_value=160).map(lambda quarters: _cents(25 * quarters))
    return units | hours


@_cached
def _serials() -> st.SearchStrategy[int]:
    return st.integers(min_value=1, max_value=999_999)


@_cached
def _record_ids(prefix: str) -> st.SearchStrategy[str]:
    """Ids as hosts make them: ``lead-2041``, a database's ``2041``, or a UUID."""
    return st.one_of(
        _serials().map(lambda n: f"{prefix}-{n}"),
        _serials().map(str),
        st.uuids().map(str),
    )


@_cached
def _tenant_names() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(_TENANT_NAMES),
        _plugin_ids(),  # slugs, such as a host's subdomains
        st.uuids().map(str),
        _serials().map(str),
    )


def tenants() -> st.SearchStrategy[str]:
    """Tenant names as hosts use them: ``acme``, slugs, UUIDs and numbers as text.

    Every one is a valid ``tenant`` of the event payloads (a non-blank string).
    """
    return _tenant_names()


@_cached
def _pinned(tenant: str) -> st.SearchStrategy[str]:
    return st.just(tenant)


def _tenants_of(tenant: _TenantOption) -> st.SearchStrategy[str]:
    if tenant is None:
        return _tenant_names()
    if isinstance(tenant, str):
        if not tenant.strip():
            raise ValueError(f"tenant must be a non-blank string (got {tenant!r})")
        return _pinned(tenant)
    if isinstance(tenant, st.SearchStrategy):
        return tenant
    raise TypeError(f"tenant must be a str, a strategy of str, or None (got {tenant!r})")


def _ascii_slug(text: str) -> str:
    """``text`` folded to lower-case ASCII letters and digits (``Zoë`` -> ``zoe``)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(char for char in folded.lower() if char.isalnum())


def _draw_person(draw: st.DrawFn) -> tuple[str, str]:
    """A full name and an e-mail address made from it, at a reserved example domain."""
    first = draw(_sampled(_FIRST_NAMES))
    last = draw(_sampled(_LAST_NAMES))
    local = ".".join(part for part in (_ascii_slug(first), _ascii_slug(last)) if part)
    return f"{first} {last}", f"{local or 'contact'}@{draw(_sampled(_DOMAINS))}"


def _draw_address(draw: st.DrawFn) -> str:
    return _draw_person(draw)[1]


def _draw_phone(draw: st.DrawFn, *, e164: bool = False) -> str:
    """A fictional number (US 555-01xx, UK Ofcom drama range), as entered or in E.164 form."""
    if draw(st.booleans()):
        digits = f"{draw(st.integers(min_value=0, max_value=99)):02d}"
        spaced, compact = f"+1 555 01{digits}", f"+155501{digits}"
    else:
        digits = f"{draw(st.integers(min_value=0, max_value=999)):03d}"
        spaced, compact = f"+44 20 7946 0{digits}", f"+442079460{digits}"
    return compact if e164 or draw(st.booleans()) else spaced


def _draw_optional(draw: st.DrawFn, strategy: st.SearchStrategy[_T]) -> _T | None:
    # False (None) is what Hypothesis shrinks to: a failing example keeps only what it needs.
    return draw(strategy) if draw(st.booleans()) else None


#: Integers in the JSON of payloads have up to 15 digits: every one is exact in a float (below
#: 2**53), as a browser's JavaScript reads it.
_PAYLOAD_DIGITS: Final = 15


@_cached
def _json_objects() -> st.SearchStrategy[dict[str, JSONValue]]:
    keys = st.sampled_from(_DATA_KEYS) | st.text(max_size=12)
    return st.dictionaries(keys, _json_values(6, _PAYLOAD_DIGITS), max_size=4)


def _draw_user(draw: st.DrawFn, tenant: str) -> User:
    name, email = _draw_person(draw)
    roles = draw(st.lists(st.sampled_from(_ROLES), max_size=3, unique=True))
    return User(
        id=draw(_record_ids("u")), tenant=tenant, email=email, name=name, roles=tuple(roles)
    )


def _draw_context(draw: st.DrawFn, tenant: str) -> Context:
    return Context(
        tenant=tenant,
        user=_draw_user(draw, tenant) if draw(st.booleans()) else None,
        request_id=_draw_optional(draw, _serials().map(lambda n: f"req-{n:06x}")),
        ip=_draw_optional(draw, st.ip_addresses().map(str)),
        locale=_draw_optional(draw, _sampled(_LOCALES)),
        extras=draw(_json_objects()),
    )


def _draw_lead(draw: st.DrawFn, tenant: str) -> Lead:
    name, email = _draw_person(draw)
    return Lead(
        id=draw(_record_ids("lead")),
        tenant=tenant,
        name=name,
        email=email if draw(st.booleans()) else None,
        phone=_draw_phone(draw) if draw(st.booleans()) else None,
        company=_draw_optional(draw, _sampled(_COMPANIES)),
        source=_draw_optional(draw, _sampled(_LEAD_SOURCES)),
        status=draw(_sampled(_LEAD_STATUSES)),
        value=_draw_optional(draw, _money(0, 100_000_000)),
        created_at=_draw_optional(draw, _moments()),
        data=draw(_json_objects()),
    )


def _draw_booking(draw: st.DrawFn, tenant: str) -> Booking:
    name, email = _draw_person(draw)
    starts_at = draw(_moments())
    minutes = draw(st.sampled_from(_DURATIONS))
    return Booking(
        id=draw(_record_ids("bk")),
        tenant=tenant,
        customer_name=name,
        customer_email=email,
        service=draw(_sampled(_SERVICES)),
        starts_at=starts_at,
        ends_at=starts_at + timedelta(minutes=minutes),
        status=draw(_sampled(_BOOKING_STATUSES)),
        customer_phone=_draw_phone(draw) if draw(st.booleans()) else None,
        notes=draw(_sampled(_SENTENCES)) if draw(st.booleans()) else "",
    )


def _draw_invoice_line(draw: st.DrawFn, tenant: str = "") -> InvoiceLine:
    return InvoiceLine(
        description=draw(_sampled(_LINE_ITEMS)),
        quantity=draw(_quantities()),
        unit_price=draw(_money(1, 5_000_000)),
    )


def _draw_invoice(draw: st.DrawFn, tenant: str) -> Invoice:
    status = draw(_sampled(("draft", "sent", "paid", "void", "overdue")))
    count = draw(st.integers(min_value=0 if status == "draft" else 1, max_value=5))
    lines = [_draw_invoice_line(draw) for _ in range(count)]
    subtotal = sum((line.total for line in lines), Decimal(0))
    if subtotal > 0 and draw(st.booleans()):
        # A discount, never more than the rest: the invoice's total stays positive.
        percent = draw(st.sampled_from(_DISCOUNT_PERCENT))
        discount = (subtotal * percent / 100).quantize(Decimal("0.01"), ROUND_DOWN)
        lines.append(
            InvoiceLine(
                description=f"Discount {percent}%", quantity=Decimal(1), unit_price=-discount
            )
        )
    issued_on = draw(_days()) if status != "draft" or draw(st.booleans()) else None
    due_on = None
    if issued_on is not None and draw(st.booleans()):
        due_on = issued_on + timedelta(days=draw(st.sampled_from(_PAYMENT_TERMS)))
    paid_at = None
    if status == "paid":
        assert issued_on is not None  # for mypy: only drafts may lack it
        paid_on = issued_on + timedelta(days=draw(st.integers(min_value=0, max_value=90)))
        paid_at = datetime.combine(paid_on, time.min, tzinfo=timezone.utc) + timedelta(
            seconds=draw(st.integers(min_value=0, max_value=86_399))
        )
    customer, email = _draw_person(draw)
    year = (issued_on or draw(_days())).year
    return Invoice(
        id=draw(_record_ids("inv")),
        tenant=tenant,
        number=f"{year}-{draw(st.integers(min_value=1, max_value=9999)):04d}",
        customer_name=draw(_sampled(_COMPANIES)) if draw(st.booleans()) else customer,
        currency=draw(_sampled(_CURRENCIES)),
        lines=tuple(lines),
        status=status,
        customer_email=email if draw(st.booleans()) else None,
        issued_on=issued_on,
        due_on=due_on,
        paid_at=paid_at,
    )


def _draw_email(draw: st.DrawFn, tenant: str) -> Email:
    first = draw(_sampled(_FIRST_NAMES))
    sentences = draw(st.lists(_sampled(_SENTENCES), min_size=1, max_size=3))
    body = f"Hello {first},\n\n" + " ".join(sentences) + "\n\nThe team"
    paragraphs = [f"Hello {first},", " ".join(sentences), "The team"]
    subject = draw(_sampled(_SUBJECTS)).format(number=f"2024-{draw(_serials()):06d}")
    return Email(
        tenant=tenant,
        to=tuple(_draw_address(draw) for _ in range(draw(st.integers(1, 3)))),
        subject=subject,
        body=body,
        html="".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
        if draw(st.booleans())
        else None,
        reply_to=_draw_address(draw) if draw(st.booleans()) else None,
        cc=tuple(_draw_address(draw) for _ in range(draw(st.integers(0, 2)))),
        bcc=tuple(_draw_address(draw) for _ in range(draw(st.integers(0, 1)))),
    )


def _draw_sms(draw: st.DrawFn, tenant: str) -> Sms:
    text = draw(_sampled(_SENTENCES))
    if draw(st.booleans()):
        text = f"{draw(_sampled(_FIRST_NAMES))}: {text}"
    return Sms(tenant=tenant, to=_draw_phone(draw, e164=True), text=text[:160])


def _draw_notification(draw: st.DrawFn, tenant: str) -> Notification:
    name, email = _draw_person(draw)
    recipient = None
    if draw(st.booleans()):
        recipient = draw(_record_ids("u")) if draw(st.booleans()) else email
    return Notification(
        tenant=tenant,
        message=draw(_sampled(_NOTICES)).format(name=name),
        channel=_draw_optional(draw, _sampled(_CHANNELS)),
        recipient=recipient,
        level=draw(_sampled(_LEVELS)),
    )


def _draw_report(draw: st.DrawFn, tenant: str) -> Report:
    report_id = draw(_record_ids("rep"))
    kind = draw(_sampled(_REPORT_KINDS))
    generated_at = draw(_moments())
    url = f"https://files.example.com/reports/{report_id}.csv"
    return Report(
        id=report_id,
        tenant=tenant,
        name=f"{kind.capitalize()}, {generated_at:%B %Y}",
        kind=kind,
        generated_at=generated_at,
        rows=draw(st.integers(min_value=0, max_value=100_000)),
        url=url if draw(st.booleans()) else None,
    )


def _draw_widget(draw: st.DrawFn, tenant: str) -> Widget:
    title = draw(_sampled(_WIDGET_TITLES))
    count = draw(st.integers(min_value=0, max_value=10_000))
    return Widget(
        tenant=tenant,
        title=title,
        html=f"<p><strong>{count}</strong> {html.escape(title.lower())}</p>",
        size=draw(_sampled(_WIDGET_SIZES)),
        order=draw(st.integers(min_value=-10, max_value=100)),
        plugin_id=_draw_optional(draw, _plugin_ids()),
    )


def _draw_html_fragment(draw: st.DrawFn, tenant: str) -> HtmlFragment:
    return HtmlFragment(
        tenant=tenant,
        html=draw(_sampled(_FRAGMENTS)),
        placement=draw(st.sampled_from(_PLACEMENTS)),
        plugin_id=_draw_optional(draw, _plugin_ids()),
    )


def _draw_path(draw: st.DrawFn) -> str:
    segments = draw(st.lists(_sampled(_PATH_WORDS), max_size=3))
    return "/" + "/".join(segments)


@_cached
def _query() -> st.SearchStrategy[dict[str, str]]:
    keys = st.sampled_from(_QUERY_KEYS) | _word(_LOWER, _LOWER + "_", 0, 8)
    return st.dictionaries(keys, st.text(max_size=20), max_size=3)


def _draw_api_request(draw: st.DrawFn, tenant: str) -> ApiRequest:
    method = draw(_sampled(_METHODS))
    headers = dict(draw(st.lists(st.sampled_from(_HEADERS), max_size=3, unique=True)))
    body = b""
    if method in _BODY_METHODS:
        body = json.dumps(draw(_json_objects()), ensure_ascii=False).encode("utf-8")
        headers["content-type"] = "application/json"
    params = {"id": draw(_record_ids("lead"))} if draw(st.booleans()) else {}
    return ApiRequest(
        tenant=tenant,
        method=method,
        path=_draw_path(draw),
        headers=headers,
        query=draw(_query()),
        path_params=params,
        body=body,
        user=_draw_user(draw, tenant) if draw(st.booleans()) else None,
    )


def _draw_api_response(draw: st.DrawFn, tenant: str) -> ApiResponse:
    status = draw(st.sampled_from(_STATUS_CODES) | st.integers(min_value=100, max_value=599))
    if draw(st.booleans()):
        return ApiResponse.json(tenant, draw(_json_objects()), status)
    return ApiResponse(
        tenant=tenant,
        status=status,
        headers={"content-type": "text/plain; charset=utf-8"} if draw(st.booleans()) else {},
        body=draw(_sampled(_SENTENCES)).encode("utf-8") if draw(st.booleans()) else b"",
    )


def _answer(request: ApiRequest) -> ApiResponse:
    """The handler of generated routes: echoes the method and path as JSON."""
    return ApiResponse.json(request.tenant, {"method": request.method, "path": request.path})


def _draw_route(draw: st.DrawFn, tenant: str = "") -> Route:
    methods = draw(st.lists(_sampled(_METHODS), min_size=1, max_size=3, unique=True))
    return Route(
        path=_draw_path(draw),
        handler=_answer,
        name=draw(_plugin_ids()),
        methods=tuple(methods),
    )


_DRAWERS: Final[Mapping[type, _Drawer]] = {
    Context: _draw_context,
    User: _draw_user,
    Lead: _draw_lead,
    Booking: _draw_booking,
    Invoice: _draw_invoice,
    InvoiceLine: _draw_invoice_line,
    Email: _draw_email,
    Sms: _draw_sms,
    Notification: _draw_notification,
    Report: _draw_report,
    Widget: _draw_widget,
    Route: _draw_route,
    HtmlFragment: _draw_html_fragment,
    ApiRequest: _draw_api_request,
    ApiResponse: _draw_api_response,
}


@st.composite
def _records(draw: st.DrawFn, cls: type, tenants: st.SearchStrategy[str]) -> Any:
    return _DRAWERS[cls](draw, "" if cls in _UNTENANTED else draw(tenants))


@_cached
def _records_at(cls: type, tenant: str | None) -> st.SearchStrategy[Any]:
    return _records(cls, _tenants_of(tenant))


def _payloads(cls: type, tenant: _TenantOption) -> st.SearchStrategy[Any]:
    if tenant is None or isinstance(tenant, str):
        _tenants_of(tenant)  # refuses a blank tenant before the cache sees it
        return _records_at(cls, tenant)
    return _records(cls, _tenants_of(tenant))


def payloads(
    cls: type[_T], *, tenant: str | st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[_T]:
    """Valid instances of the payload type ``cls``.

    ``cls`` is one of :data:`~services_ai_plugins.events.PAYLOAD_TYPES`. The
    strategy is the same as the one named after the type (``payloads(Lead)`` is
    :func:`leads`), for tests parametrised over the types. ``tenant`` pins the
    tenant, as there; the two payloads without one (:class:`InvoiceLine` and
    :class:`Route`) ignore it.

    :raises TypeError: when ``cls`` is not a payload type.
    :raises ValueError: when ``tenant`` is a blank string.
    """
    if cls not in _DRAWERS:
        raise TypeError(f"not an event payload type: {cls!r}")
    strategy: st.SearchStrategy[_T] = _payloads(cls, tenant)
    return strategy


def contexts(*, tenant: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Context]:
    """Valid :class:`~services_ai_plugins.events.Context` records.

    Each one may have an acting :func:`users` record (of the same tenant), a
    request id, an IPv4 or IPv6 address, a locale such as ``de-DE`` and JSON
    ``extras``. ``tenant`` pins the tenant: one name, or a strategy of names;
    by default :func:`tenants`. So do the other payload strategies::

        @given(sais.leads(tenant="acme"), sais.contexts(tenant="acme"))
        def test_lead_created(lead, context): ...

    :raises ValueError: when ``tenant`` is a blank string.
    """
    strategy: st.SearchStrategy[Context] = _payloads(Context, tenant)
    return strategy


def users(*, tenant: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[User]:
    """Valid :class:`~services_ai_plugins.events.User` records.

    A name, an address made from it and some roles. Names include non-ASCII
    ones (``Zoë``, ``Łukasz``, ``Ольга``); addresses are at reserved example
    domains. ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[User] = _payloads(User, tenant)
    return strategy


def leads(*, tenant: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Lead]:
    """Valid :class:`~services_ai_plugins.events.Lead` records.

    A person's name, maybe an address, a fictional phone number, a company,
    a source and a pipeline status; ``value`` a Decimal with two places
    (0.00 to 1,000,000.00) or None; ``created_at`` timezone-aware (any
    whole-minute offset, 2015 to 2035) or None; JSON ``data``. ``tenant`` as
    for :func:`contexts`.
    """
    strategy: st.SearchStrategy[Lead] = _payloads(Lead, tenant)
    return strategy


def bookings(*, tenant: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Booking]:
    """Valid :class:`~services_ai_plugins.events.Booking` records.

    ``starts_at`` is timezone-aware and ``ends_at`` 0 minutes to 8 hours later,
    in the same zone (so never before it); a service, a status such as
    ``confirmed``, a customer with an address and maybe a phone number.
    ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[Booking] = _payloads(Booking, tenant)
    return strategy


def invoice_lines() -> st.SearchStrategy[InvoiceLine]:
    """Valid :class:`~services_ai_plugins.events.InvoiceLine` records (they have no tenant).

    ``quantity`` is a whole number of units (1 to 100) or of quarter hours
    (0.25 to 40.00), ``unit_price`` a Decimal with two places (0.01 to
    50,000.00).
    """
    strategy: st.SearchStrategy[InvoiceLine] = _payloads(InvoiceLine, None)
    return strategy


def invoices(*, tenant: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Invoice]:
    """Valid, consistent :class:`~services_ai_plugins.events.Invoice` records.

    One to five :func:`invoice_lines` (drafts may have none), sometimes with a
    discount line of 5 to 20 % that never exceeds the rest, so ``total`` is
    never negative. The status decides the dates: every invoice but a draft
    has ``issued_on``; ``due_on``, when set, is 0 to 60 days after it; only a
    ``paid`` invoice has ``paid_at``, a UTC moment on or after the day it was
    issued. ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[Invoice] = _payloads(Invoice, tenant)
    return strategy


def emails(*, tenant: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Email]:
    """Valid :class:`~services_ai_plugins.events.Email` records.

    One to three recipients, a greeting and a few sentences, maybe an HTML
    part and a reply-to address; ``cc`` and ``bcc`` may be empty. Every
    address is at a reserved example domain. ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[Email] = _payloads(Email, tenant)
    return strategy


def sms(*, tenant: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Sms]:
    """Valid :class:`~services_ai_plugins.events.Sms` records.

    A fictional number in E.164 form and at most 160 characters of text.
    ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[Sms] = _payloads(Sms, tenant)
    return strategy


def notifications(
    *, tenant: str | st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[Notification]:
    """Valid :class:`~services_ai_plugins.events.Notification` records.

    A message, maybe a channel (``in_app``, ``slack``, ...) and a recipient
    (a user id or an address), and a level. ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[Notification] = _payloads(Notification, tenant)
    return strategy


def reports(*, tenant: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Report]:
    """Valid :class:`~services_ai_plugins.events.Report` records.

    A kind, a name for its month, a timezone-aware ``generated_at``, a number of
    rows and maybe a download URL. ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[Report] = _payloads(Report, tenant)
    return strategy


def widgets(*, tenant: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Widget]:
    """Valid :class:`~services_ai_plugins.events.Widget` records, with or without a ``plugin_id``.

    ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[Widget] = _payloads(Widget, tenant)
    return strategy


def html_fragments(
    *, tenant: str | st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[HtmlFragment]:
    """Valid :class:`~services_ai_plugins.events.HtmlFragment` records for the head or the footer.

    ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[HtmlFragment] = _payloads(HtmlFragment, tenant)
    return strategy


def api_requests(
    *, tenant: str | st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[ApiRequest]:
    """Valid :class:`~services_ai_plugins.events.ApiRequest` records.

    Any HTTP method of :data:`~services_ai_plugins.events.HTTP_METHODS`; a
    ``POST``, ``PUT`` or ``PATCH`` carries a JSON body and its content type.
    Headers, query and path parameters hold text; the signed-in user, when
    there is one, is of the same tenant. ``tenant`` as for :func:`contexts`.
    """
    strategy: st.SearchStrategy[ApiRequest] = _payloads(ApiRequest, tenant)
    return strategy


def api_responses(
    *, tenant: str | st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[ApiResponse]:
    """Valid :class:`~services_ai_plugins.events.ApiResponse` records.

    JSON (made by :meth:`~services_ai_plugins.events.ApiResponse.json`) or
    text or empty, with any status from 100 to 599. ``tenant`` as for
    :func:`contexts`.
    """
    strategy: st.SearchStrategy[ApiResponse] = _payloads(ApiResponse, tenant)
    return strategy


def routes() -> st.SearchStrategy[Route]:
    """Valid :class:`~services_ai_plugins.events.Route` records (they have no tenant).

    Paths of up to three segments, one to three distinct methods, a slug
    name; the handler answers every request with its method and path as JSON.
    """
    strategy: st.SearchStrategy[Route] = _payloads(Route, None)
    return strategy


# -- hook arguments ------------------------------------------------------------------------------


class _JSON:
    """Stands for ``JSONValue`` when the specifications' annotations are resolved."""


def _hint_namespace() -> dict[str, Any]:
    from services_ai_plugins._api import PluginAPI  # noqa: PLC0415 - only to read annotations

    namespace: dict[str, Any] = {name: getattr(events, name) for name in events.__all__}
    namespace.update(PluginAPI=PluginAPI, JSONValue=_JSON)
    return namespace


@_cached
def _specifications() -> pluggy.PluginManager:
    return plugin_manager()


def _draw_json_object(draw: st.DrawFn, tenant: str) -> dict[str, JSONValue]:
    return draw(_json_objects())


def _draw_text(draw: st.DrawFn, tenant: str) -> str:
    return draw(st.text(max_size=40))


def _draw_plugin_id(draw: st.DrawFn, tenant: str) -> str:
    return draw(_plugin_ids())


def _draw_version(draw: st.DrawFn, tenant: str) -> str:
    return draw(_versions())


def _draw_reason(draw: st.DrawFn, tenant: str) -> str:
    return draw(_sampled(_REASONS))


def _draw_tenant_or_none(draw: st.DrawFn, tenant: str) -> str | None:
    return tenant if draw(st.booleans()) else None


def _draw_setting_changes(draw: st.DrawFn, tenant: str) -> dict[str, JSONValue]:
    names = draw(st.lists(_identifiers(), min_size=1, max_size=4, unique=True))
    values: list[JSONValue] = [
        "********" if draw(st.booleans()) else draw(_json_values(4, _PAYLOAD_DIGITS)) for _ in names
    ]
    return dict(zip(names, values, strict=True))


#: Fields that change together: taken from one record, they keep another one valid (a booking
#: that ends after it starts) and consistent (an invoice's dates that follow its status).
_TOGETHER: Final[Mapping[type, tuple[frozenset[str], ...]]] = {
    Booking: (frozenset({"starts_at", "ends_at"}),),
    Invoice: (frozenset({"status", "issued_on", "due_on", "paid_at"}),),
}


def _field_values(kind: type) -> _Drawer:
    """Field name to wire value, for some fields of a record of ``kind`` (never id or tenant).

    Applied to any record of ``kind``, the values make a valid one: fields that depend on each
    other come together, from one drawn record.
    """

    def draw_values(draw: st.DrawFn, tenant: str) -> dict[str, JSONValue]:
        wire = to_wire(_DRAWERS[kind](draw, tenant))
        names = sorted(set(wire) - {"id", "tenant"})
        chosen = set(draw(st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True)))
        for group in _TOGETHER.get(kind, ()):
            if chosen & group:
                chosen |= group
        return {name: wire[name] for name in sorted(chosen)}

    return draw_values


def _optional(drawer: _Drawer) -> _Drawer:
    def draw_optional(draw: st.DrawFn, tenant: str) -> Any:
        return drawer(draw, tenant) if draw(st.booleans()) else None

    return draw_optional


def _many(drawer: _Drawer) -> _Drawer:
    def draw_many(draw: st.DrawFn, tenant: str) -> tuple[Any, ...]:
        return tuple(drawer(draw, tenant) for _ in range(draw(st.integers(0, 4))))

    return draw_many


#: Arguments drawn by their name, whatever their type.
_BY_NAME: Final[Mapping[str, _Drawer]] = {
    "plugin_id": _draw_plugin_id,
    "version": _draw_version,
    "from_version": _draw_version,
    "to_version": _draw_version,
    "reason": _draw_reason,
    "tenant": _draw_tenant_or_none,
    "changed": _draw_setting_changes,
}


def _argument_drawer(hook: str, name: str, hint: Any, subject: type | None) -> _Drawer:
    """How to draw the argument ``name`` of ``hook``, annotated ``hint``.

    ``subject`` is the record the hook is about (the lead of ``lead_updated``), if any.
    """
    if name in _BY_NAME:
        return _BY_NAME[name]
    if hint in _DRAWERS:
        return _DRAWERS[hint]
    origin, arguments = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType) and type(None) in arguments:
        members = [member for member in arguments if member is not type(None)]
        if len(members) == 1:
            return _optional(_argument_drawer(hook, name, members[0], subject))
    if origin is tuple and len(arguments) == 2 and arguments[1] is Ellipsis:
        return _many(_argument_drawer(hook, name, arguments[0], subject))
    if origin is Mapping and arguments == (str, _JSON):
        if name == "changes" and subject is not None:
            return _field_values(subject)  # each changed field's value before the update
        if name == "data" and hook == "filter_lead_data":
            return _field_values(Lead)  # the fields about to be saved
        return _draw_json_object
    if hint is str:
        return _draw_text
    raise TypeError(f"hook {hook!r}: cannot generate argument {name!r} of type {hint!r}")


@_cached
def _hook_plan(hook: str) -> tuple[tuple[str, _Drawer], ...]:
    info = hook_info(hook)  # KeyError, with a close name, for an unknown hook
    caller = getattr(_specifications().hook, hook)
    function = caller.spec.function
    hints = typing.get_type_hints(function, localns=_hint_namespace())
    injected = () if info.host_only else INJECTED
    names = [name for name in caller.spec.argnames if name not in injected]
    records = [hints[name] for name in names if hints[name] in (Lead, Booking, Invoice)]
    subject = records[0] if len(records) == 1 else None
    return tuple((name, _argument_drawer(hook, name, hints[name], subject)) for name in names)


def _version_key(text: str) -> Version:
    return Version(text)


@st.composite
def _hook_arguments(
    draw: st.DrawFn, plan: tuple[tuple[str, _Drawer], ...], tenants: st.SearchStrategy[str]
) -> dict[str, Any]:
    tenant = draw(tenants)
    values = {name: drawer(draw, tenant) for name, drawer in plan}
    invoice = values.get("invoice")
    if "lines" in values and isinstance(invoice, Invoice):
        values["lines"] = invoice.lines  # a filter chain starts from the invoice's own lines
    if "from_version" in values and "to_version" in values:
        low, high = sorted((values["from_version"], values["to_version"]), key=_version_key)
        values["from_version"], values["to_version"] = low, high
    return values


def hook_arguments(
    hook_name: str, *, tenant: str | st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments for a call of the built-in hook ``hook_name``, as the host makes it.

    Each dict holds every argument of the hook's specification
    (:mod:`services_ai_plugins.hookspecs`) but those the host fills in for each
    plugin (``api``, ``settings`` and ``plugin_id``), so
    ``host.hook.<hook_name>(**arguments)`` is a valid call. The host-only
    ``plugin_suspended`` gets all of its arguments, ``plugin_id`` included.
    Records come from the payload strategies, all of one tenant: pinned by
    ``tenant`` as for :func:`contexts`, else drawn from :func:`tenants`.

    Arguments are drawn to match: ``changes`` maps some fields of the hook's
    record to their values before the update, in wire form
    (:func:`~services_ai_plugins.events.to_wire`), such that the record with
    them applied is valid (a booking's times change together, an invoice's
    status with its dates); ``filter_lead_data``'s ``data`` maps lead fields to
    wire values; ``filter_invoice_lines``' ``lines`` are the invoice's own;
    ``from_version`` is never above ``to_version``; ``plugin_settings_changed``'s
    ``changed`` maps setting names to values (some masked as ``"********"``)::

        @given(sais.hook_arguments("lead_updated", tenant="acme"))
        def test_lead_updated(arguments):
            plugin.lead_updated(**arguments, api=api, settings={})

    :raises KeyError: when no built-in hook has that name (the message suggests a close one).
    :raises ValueError: when ``tenant`` is a blank string.
    """
    plan = _hook_plan(hook_name)
    return _hook_arguments(plan, _tenants_of(tenant))
