"""The payloads' wire form: JSON-ready dictionaries, written and read through one converter.

For the process sandbox (and the command line's ``call --data``),
:func:`to_wire` turns a payload into a JSON-ready ``dict`` and
:func:`from_wire` reads one back, strictly::

    >>> from services_ai_plugins._examples import example
    >>> from services_ai_plugins.events import Lead
    >>> lead = example(Lead)
    >>> wire = to_wire(lead)
    >>> wire["value"], wire["created_at"]
    ('4800.00', '2024-05-06T09:30:00+00:00')
    >>> from_wire(Lead, wire) == lead
    True

On the wire, :class:`~decimal.Decimal` values are strings, datetimes and dates
are ISO 8601 text, ``bytes`` are base64 text and tuples are arrays. A datetime
keeps its UTC offset but not its zone name: it comes back as the same instant
with a fixed-offset ``tzinfo``.

The converter is private to the SDK (never cattrs' global one) and built on
first use, so importing the payloads stays cheap. :func:`converter` and
:func:`located_problems` serve the command line, which reads each hook
argument on its own; :func:`from_host` serves the sandbox's worker, which
reads what the host wrote.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._converting import is_variadic_tuple, locate, strict_tuple_hooks
from ._json import JSONValue, check_int, check_json, json_type_name
from .errors import PayloadError, Problem
from .events import PAYLOAD_TYPES, Route

__all__ = ["converter", "from_host", "from_wire", "located_problems", "to_wire"]

_T = TypeVar("_T")

_DECIMAL_TEXT: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def to_wire(payload: object) -> dict[str, JSONValue]:
    """A payload as a JSON-ready ``dict``: :func:`from_wire` reads it back equal.

    Decimals become strings, datetimes and dates ISO 8601 text, ``bytes``
    base64 text and tuples arrays; nested records become objects. Every field
    is written, including those at their default. A :class:`Route` is written
    without its ``handler``.

    :raises TypeError: when ``payload`` is not an instance of one of
        :data:`PAYLOAD_TYPES`.
    """
    if type(payload) not in PAYLOAD_TYPES:
        raise TypeError(f"not an event payload: {_brief(payload)}")
    document: dict[str, JSONValue] = converter().unstructure(payload)
    return document


def from_wire(cls: type[_T], data: object) -> _T:
    """Read a payload of type ``cls`` from what :func:`to_wire` made.

    Strict: every required key must be there, no unknown key may be, and every
    value must have the wire type (a string for a Decimal, an array for a
    tuple, ...). Once the data has the right shape, records check themselves
    as when built in Python (a booking must not end before it starts, ...).

    >>> from services_ai_plugins.events import Sms
    >>> from_wire(Sms, {"tenant": "acme", "to": 4930123456, "txt": "Hi"})
    Traceback (most recent call last):
    ...
    services_ai_plugins.errors.PayloadError: invalid Sms payload (3 problems):
      txt: unknown key; did you mean 'text'?
      to: must be a string (got number)
      text: is required

    :raises PayloadError: listing every problem, each with its path.
    :raises TypeError: when ``cls`` is not a payload type, or is :class:`Route`
        (its handler is code and cannot cross the wire).
    """
    if cls is Route:
        raise TypeError(
            "Route cannot be read from the wire: its handler is code, not data; "
            "the sandbox proxies route handlers instead"
        )
    if cls not in PAYLOAD_TYPES:
        raise TypeError(f"not an event payload type: {cls!r}")
    if not isinstance(data, dict):
        problem = Problem("", f"must be a JSON object (got {json_type_name(data)})")
        raise PayloadError([problem], payload_type=cls)
    try:
        payload: _T = converter().structure(data, cls)
    except (ClassValidationError, IterableValidationError, ValueError, TypeError) as exc:
        raise PayloadError(_unique(located_problems(exc, "", cls)), payload_type=cls) from exc
    return payload


def _unique(problems: Iterator[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def located_problems(exc: BaseException, path: str, cls: Any) -> Iterator[Problem]:
    """Flatten a cattrs validation error into problems, each located below ``path``."""
    if isinstance(exc, IterableValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, index_note in with_notes:
            yield from located_problems(sub, _join(path, index_note.index), index_note.type)
        for sub in without:
            yield from located_problems(sub, path, cls)
    elif isinstance(exc, ClassValidationError):
        # Unknown keys first: a misspelt key explains the "is required" that follows.
        attribute_notes, others = exc.group_exceptions()
        for sub in others:
            yield from located_problems(sub, path, exc.cl)
        for sub, attribute_note in attribute_notes:
            yield from located_problems(sub, _join(path, attribute_note.name), attribute_note.type)
    elif isinstance(exc, ForbiddenExtraKeysError):
        known = [field.name for field in attrs.fields(exc.cl)]
        for key in sorted(exc.extra_fields):
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            yield Problem(_join(path, key), f"unknown key{hint}")
    elif isinstance(exc, KeyError):
        yield Problem(path, "is required")
    elif isinstance(exc, (ValueError, TypeError)):
        yield Problem(path, str(exc))
    else:  # pragma: no cover - a bug in a hook: let it surface
        raise exc


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
        return f"{path}.{part}" if path else part
    return f"{path}[{part!r}]"


def _string(value: object, _: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got {json_type_name(value)})")
    return value


def _integer(value: object, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer (got {json_type_name(value)})")
    return check_int(value)


def _decimal_from_wire(value: object, _: Any) -> Decimal:
    if not isinstance(value, str) or not _DECIMAL_TEXT.fullmatch(value):
        got = repr(value) if isinstance(value, str) else json_type_name(value)
        raise ValueError(f"must be a decimal number as a string, such as '12.50' (got {got})")
    try:
        return Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid numbers
        raise ValueError(f"is not a decimal number (got {value!r})") from None


def _datetime_from_wire(value: object, _: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 date-time string (got {json_type_name(value)})")
    # Python 3.10 does not read the "Z" that other languages write for UTC.
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"must be an ISO 8601 date-time such as '2024-05-06T09:30:00+00:00' (got {value!r})"
        ) from None
    if moment.utcoffset() is None:
        raise ValueError(f"must include a UTC offset, such as '+00:00' (got {value!r})")
    return moment


def _date_from_wire(value: object, _: Any) -> date:
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 date string (got {json_type_name(value)})")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"must be an ISO 8601 date such as '2024-05-31' (got {value!r})") from None


def _bytes_from_wire(value: object, _: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"must be base64 text (got {json_type_name(value)})")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64 text (standard alphabet, with padding)") from None


def _bytes_to_wire(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _is_mapping(kind: Any) -> bool:
    return get_origin(kind) is Mapping


def _is_literal(kind: Any) -> bool:
    return get_origin(kind) is Literal


def _tuple_to_wire(
    converter: cattrs.Converter,
) -> Callable[[Any], Callable[[tuple[Any, ...]], list[Any]]]:
    def factory(kind: Any) -> Callable[[tuple[Any, ...]], list[Any]]:
        item_kind = get_args(kind)[0]

        def hook(value: tuple[Any, ...]) -> list[Any]:
            return [converter.unstructure(item, item_kind) for item in value]

        return hook

    return factory


def _mapping_hooks(
    converter: cattrs.Converter,
) -> Callable[[Any], Callable[[object, Any], dict[str, Any]]]:
    def factory(kind: Any) -> Callable[[object, Any], dict[str, Any]]:
        # The payloads hold three kinds of mapping: str -> str (HTTP headers, path
        # parameters), str -> tuple[str, ...] (a query's values, a JSON array of strings
        # per name) and str -> JSONValue (extras, custom data).
        item_kind = get_args(kind)[1]
        item: Callable[[object], Any]
        if item_kind is str:
            item = lambda value: _string(value, str)  # noqa: E731 - one line per kind
        elif is_variadic_tuple(item_kind):
            item = lambda value: converter.structure(value, item_kind)  # noqa: E731
        else:
            item = check_json

        def hook(value: object, _: Any) -> dict[str, Any]:
            if not isinstance(value, dict):
                raise ValueError(f"must be an object (got {json_type_name(value)})")
            odd = [key for key in value if not isinstance(key, str)]
            if odd:
                raise ValueError(f"keys must be strings (got {odd[0]!r})")
            errors: list[Exception] = []
            copy: dict[str, Any] = {}
            for key, entry in value.items():
                try:
                    copy[key] = item(entry)
                except (ValueError, IterableValidationError) as exc:
                    errors.append(locate(exc, key, item_kind))
            if errors:
                raise IterableValidationError("invalid entries", errors, dict)
            return copy

        return hook

    return factory


def _mapping_to_wire(kind: Any) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    def hook(value: Mapping[str, Any]) -> dict[str, Any]:
        copy = check_json(dict(value))  # a deep copy: the wire shares nothing with the record
        assert isinstance(copy, dict)
        return copy

    return hook


def _literal_hook(kind: Any) -> Callable[[object, Any], object]:
    choices = get_args(kind)
    names = ", ".join(repr(choice) for choice in choices)

    def hook(value: object, _: Any) -> object:
        if isinstance(value, str) and value in choices:
            return value
        got = repr(value) if isinstance(value, str) else json_type_name(value)
        raise ValueError(f"must be one of {names} (got {got})")

    return hook


def _record_hooks(
    converter: cattrs.Converter,
) -> Callable[[Any], Callable[[object, Any], Any]]:
    def factory(cls: Any) -> Callable[[object, Any], Any]:
        generated = make_dict_structure_fn(
            cls, converter, _cattrs_forbid_extra_keys=True, _cattrs_detailed_validation=True
        )

        def hook(value: object, _: Any) -> Any:
            if not isinstance(value, dict):
                raise ValueError(f"must be an object (got {json_type_name(value)})")
            odd = [key for key in value if not isinstance(key, str)]
            if odd:
                raise ValueError(f"keys must be strings (got {odd[0]!r})")
            return generated(value, cls)

        return hook

    return factory


def _make_converter() -> cattrs.Converter:
    """Build the converter that reads and writes payloads (never cattrs' global one)."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(str, _string)
    converter.register_structure_hook(int, _integer)
    converter.register_structure_hook(Decimal, _decimal_from_wire)
    converter.register_unstructure_hook(Decimal, str)
    converter.register_structure_hook(datetime, _datetime_from_wire)
    converter.register_unstructure_hook(datetime, datetime.isoformat)
    converter.register_structure_hook(date, _date_from_wire)
    converter.register_unstructure_hook(date, date.isoformat)
    converter.register_structure_hook(bytes, _bytes_from_wire)
    converter.register_unstructure_hook(bytes, _bytes_to_wire)
    converter.register_structure_hook_factory(_is_literal, _literal_hook)
    converter.register_structure_hook_factory(is_variadic_tuple, strict_tuple_hooks(converter))
    converter.register_unstructure_hook_factory(is_variadic_tuple, _tuple_to_wire(converter))
    converter.register_structure_hook_factory(_is_mapping, _mapping_hooks(converter))
    converter.register_unstructure_hook_factory(_is_mapping, _mapping_to_wire)
    converter.register_structure_hook_factory(attrs.has, _record_hooks(converter))
    converter.register_unstructure_hook(
        Route, make_dict_unstructure_fn(Route, converter, handler=override(omit=True))
    )
    return converter


_CONVERTER: cattrs.Converter | None = None


def converter() -> cattrs.Converter:
    global _CONVERTER  # noqa: PLW0603 - built once, on first use, so import stays cheap
    if _CONVERTER is None:
        _CONVERTER = _make_converter()
    return _CONVERTER


def _same(value: object, _: Any) -> object:
    return value


def _make_trusted_converter() -> cattrs.Converter:
    """A converter that reads what :func:`to_wire` wrote, without checking its shape again.

    For the sandbox's worker, which reads payloads from the host that wrote
    them from valid records: the records' own validators still run; the wire
    types are trusted. Never for data from a plugin.
    """
    converter = cattrs.Converter(forbid_extra_keys=False, detailed_validation=False)
    converter.register_structure_hook(str, _same)
    converter.register_structure_hook(int, _same)
    converter.register_structure_hook(Decimal, lambda value, _: Decimal(value))
    converter.register_structure_hook(datetime, lambda value, _: datetime.fromisoformat(value))
    converter.register_structure_hook(date, lambda value, _: date.fromisoformat(value))
    converter.register_structure_hook(bytes, lambda value, _: base64.b64decode(value))
    converter.register_structure_hook_func(_is_literal, _same)
    converter.register_structure_hook_func(_is_mapping, _same)
    return converter


_TRUSTED: cattrs.Converter | None = None


def from_host(cls: type[_T], data: dict[str, Any]) -> _T:
    """Read a payload :func:`to_wire` wrote in the host (the sandbox worker's side)."""
    global _TRUSTED  # noqa: PLW0603 - built once, on first use
    if _TRUSTED is None:
        _TRUSTED = _make_trusted_converter()
    payload: _T = _TRUSTED.structure(data, cls)
    return payload


def _brief(value: object) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"
