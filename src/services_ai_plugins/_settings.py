"""Plugin settings: the schema a manifest declares, and the values a tenant sets."""

from __future__ import annotations

import copy
import enum
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Final

import attrs

from ._fields import Count, Number, SettingName, described
from ._json import JSONValue, check_int, check_json, json_type_name
from .errors import Problem, SettingsError

__all__ = ["SettingSpec", "SettingType", "validate_settings"]


class SettingType(str, enum.Enum):
    """The kinds of value a setting holds."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    #: One of a fixed list of ``choices``.
    CHOICE = "choice"
    #: A string that is never shown back: error messages never repeat it, the
    #: registry stores it encrypted and masks it in audit events, and hosts
    #: must mask it wherever they display settings.
    SECRET = "secret"  # noqa: S105 - the name of a setting type, not a password
    #: Any JSON value.
    JSON = "json"


_TEXT_TYPES: Final = frozenset({SettingType.STRING, SettingType.SECRET})
_NUMERIC_TYPES: Final = frozenset({SettingType.INTEGER, SettingType.NUMBER})
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})
_INTEGER_TEXT: Final = re.compile(r"\s*[-+]?\d{1,30}\s*")
_NUMBER_TEXT: Final = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*")


@attrs.frozen(kw_only=True)
class SettingSpec:
    """One entry of a manifest's ``settings`` list.

    Example (in ``manifest.json``)::

        {"name": "threshold", "type": "integer", "default": 10, "min": 0, "max": 100}
    """

    name: SettingName = described("The setting's key (an identifier such as 'api_key').")
    type: SettingType = described("The kind of value.")
    label: str | None = described(
        "A short label for forms; the name is used when absent.", default=None
    )
    description: str = described("What the setting does, for the admin screen.", default="")
    default: JSONValue = described(
        "The value used when none is set (null: no default). Secrets take none.", default=None
    )
    required: bool = described(
        "Whether a value must be set (an empty string does not count).", default=False
    )
    choices: tuple[JSONValue, ...] | None = described(
        "The allowed values of a 'choice' setting (strings, numbers or booleans).", default=None
    )
    min: Number | None = described(
        "The smallest allowed value of an 'integer' or 'number' setting.", default=None
    )
    max: Number | None = described(
        "The largest allowed value of an 'integer' or 'number' setting.", default=None
    )
    max_length: Count | None = described(
        "The longest allowed 'string' or 'secret', in characters.", default=None
    )

    def coerce(self, value: object) -> JSONValue:
        """Check one value against this setting and return it in its proper type.

        Text is accepted where a form would send it: ``"42"`` for an integer,
        ``"on"``/``"off"`` for a boolean, ``"3"`` for a choice of numbers.

        :raises ValueError: with a message naming what is wrong. The message
            never repeats the value of a ``secret`` or ``string`` setting.
        """
        return _coerce(self, value, strict=False)

    def normalised(self) -> SettingSpec:
        """This spec with its default in its proper type (``5.0`` -> ``5`` for integers).

        Call it on a spec whose :meth:`problems` are empty.
        """
        if self.default is None or self.type is SettingType.SECRET:
            return self
        default = _coerce(self, self.default, strict=True)
        return self if default is self.default else attrs.evolve(self, default=default)

    def problems(self) -> list[Problem]:
        """List what is inconsistent in this spec, with paths relative to it."""
        return list(_spec_problems(self))


def _coerce(spec: SettingSpec, value: object, *, strict: bool) -> JSONValue:
    kind = spec.type
    if kind in _TEXT_TYPES:
        if not isinstance(value, str):
            raise ValueError(f"must be a string (got {json_type_name(value)})")
        if spec.max_length is not None and len(value) > spec.max_length:
            raise ValueError(
                f"must be at most {spec.max_length} characters long (got {len(value)})"
            )
        return value
    if kind is SettingType.INTEGER:
        return _check_bounds(spec, _to_integer(value, strict=strict))
    if kind is SettingType.NUMBER:
        return _check_bounds(spec, _to_number(value, strict=strict))
    if kind is SettingType.BOOLEAN:
        return _to_boolean(value, strict=strict)
    if kind is SettingType.CHOICE:
        return _to_choice(spec.choices or (), value, strict=strict)
    return check_json(value)


def _to_integer(value: object, *, strict: bool) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return check_int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)  # JSON has one number type: 5.0 is the integer 5
    if not strict and isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        return int(value)
    raise ValueError(f"must be an integer (got {_describe(value)})")


def _to_number(value: object, *, strict: bool) -> int | float:
    if isinstance(value, int) and not isinstance(value, bool):
        number: int | float = check_int(value)
    elif isinstance(value, float):
        number = value
    elif not strict and isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
        number = float(value)
    else:
        raise ValueError(f"must be a number (got {_describe(value)})")
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"must be a finite number (got {number!r})")
    return number


def _to_boolean(value: object, *, strict: bool) -> bool:
    if isinstance(value, bool):
        return value
    if not strict:
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    raise ValueError(f"must be true or false (got {_describe(value)})")


def _same_choice(choice: JSONValue, value: object) -> bool:
    if isinstance(choice, bool) or isinstance(value, bool):
        return type(choice) is type(value) and choice == value
    if isinstance(choice, (int, float)) and isinstance(value, (int, float)):
        return choice == value
    return type(choice) is type(value) and choice == value


def _choice_text(choice: JSONValue) -> str:
    return choice if isinstance(choice, str) else json.dumps(choice)


def _to_choice(choices: Iterable[JSONValue], value: object, *, strict: bool) -> JSONValue:
    options = list(choices)
    for choice in options:
        if _same_choice(choice, value):
            return choice
    if not strict and isinstance(value, str):
        for choice in options:
            if not isinstance(choice, str) and _choice_text(choice) == value.strip().lower():
                return choice
    listed = ", ".join(json.dumps(choice) for choice in options)
    raise ValueError(f"must be one of {listed} (got {_describe(value)})")


def _check_bounds(spec: SettingSpec, number: int | float) -> int | float:
    if spec.min is not None and number < spec.min:
        raise ValueError(f"must be at least {spec.min} (got {number})")
    if spec.max is not None and number > spec.max:
        raise ValueError(f"must be at most {spec.max} (got {number})")
    return number


def _describe(value: object) -> str:
    """Show a (non-secret) value briefly in a message."""
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return repr(text)
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return json_type_name(value)


def _spec_problems(spec: SettingSpec) -> Iterable[Problem]:
    kind = spec.type
    choices_ok = True
    if kind is SettingType.CHOICE:
        if not spec.choices:
            choices_ok = False
            yield Problem("choices", "a 'choice' setting needs a non-empty list of choices")
        for index, choice in enumerate(spec.choices or ()):
            if choice is None or isinstance(choice, (list, dict)):
                choices_ok = False
                yield Problem(
                    f"choices[{index}]",
                    f"must be a string, number or boolean (got {json_type_name(choice)})",
                )
            elif any(_same_choice(earlier, choice) for earlier in (spec.choices or ())[:index]):
                choices_ok = False
                yield Problem(f"choices[{index}]", f"repeats the choice {json.dumps(choice)}")
    elif spec.choices is not None:
        yield Problem("choices", f"only 'choice' settings take choices, not '{kind.value}'")
    for bound in ("min", "max"):
        limit = getattr(spec, bound)
        if limit is None:
            continue
        if kind not in _NUMERIC_TYPES:
            yield Problem(
                bound, f"only integer and number settings take bounds, not '{kind.value}'"
            )
        elif kind is SettingType.INTEGER and isinstance(limit, float) and not limit.is_integer():
            yield Problem(bound, f"must be a whole number for an integer setting (got {limit})")
    if spec.min is not None and spec.max is not None and spec.max < spec.min:
        yield Problem("max", f"must not be less than min ({spec.min})")
    if spec.max_length is not None and kind not in _TEXT_TYPES:
        yield Problem(
            "max_length", f"only string and secret settings take max_length, not '{kind.value}'"
        )
    if spec.default is not None:
        if kind is SettingType.SECRET:
            yield Problem("default", "a secret cannot have a default: the manifest is public")
        elif choices_ok:
            try:
                _coerce(spec, spec.default, strict=True)
            except ValueError as exc:
                yield Problem("default", str(exc))


def validate_settings(
    specs: Iterable[SettingSpec], values: object, *, partial: bool = False
) -> dict[str, JSONValue]:
    """Check setting values against a settings schema and return them coerced.

    ``values`` maps setting names to values, as a form or an API client sends
    them (text is coerced, see :meth:`SettingSpec.coerce`). ``None`` means
    "not set". Unless ``partial`` is true, the result has every setting of the
    schema, in schema order: missing ones take their default, or ``None``.
    With ``partial=True`` only the given keys are checked and returned, as an
    update does.

    :raises SettingsError: listing every offending setting by name (unknown
        names, wrong types, values out of bounds, required settings missing).

    Example::

        >>> spec = SettingSpec(name="limit", type=SettingType.INTEGER, min=1)
        >>> validate_settings([spec], {"limit": "5"})
        {'limit': 5}
    """
    schema = list(specs)
    by_name: dict[str, SettingSpec] = {spec.name: spec for spec in schema}
    if not isinstance(values, Mapping):
        raise SettingsError(
            [Problem("", f"must be an object of setting values (got {json_type_name(values)})")]
        )
    problems: list[Problem] = []
    given: dict[str, JSONValue] = {}
    for key, value in values.items():
        spec = by_name.get(key) if isinstance(key, str) else None
        if spec is None:
            known = ", ".join(sorted(by_name)) or "none"
            problems.append(Problem(str(key), f"unknown setting (known settings: {known})"))
            continue
        if value is None or (value == "" and spec.type in _TEXT_TYPES and spec.required):
            given[key] = None
            continue
        try:
            given[key] = spec.coerce(value)
        except ValueError as exc:
            problems.append(Problem(key, str(exc)))
    if partial:
        for key, value in given.items():
            if value is None and by_name[key].required and by_name[key].default is None:
                problems.append(Problem(key, "is required"))
        result = given
    else:
        result = {}
        for spec in schema:
            value = given.get(spec.name)
            if value is None and spec.default is not None:
                value = copy.deepcopy(spec.default)
            if value is None and spec.required and not _failed(problems, spec.name):
                problems.append(Problem(spec.name, "is required"))
            result[spec.name] = value
    if problems:
        raise SettingsError(problems)
    return result


def _failed(problems: list[Problem], name: str) -> bool:
    return any(problem.path == name for problem in problems)
