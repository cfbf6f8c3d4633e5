"""Event records built from an app's own values: ORM rows, attribute-bearing objects, mappings.

:func:`record_from` reads each field of a record (:mod:`services_ai_plugins.events`) from a
source, by name, converts what an ORM hands back (ids to text, amounts to ``Decimal``, ISO
8601 text to dates and datetimes, nested rows to nested records), and refuses what would be
silently wrong: a float amount, a naive datetime. Every problem is reported at once, each
named by its field, in a :class:`~services_ai_plugins.errors.RecordError`.
"""

from __future__ import annotations

import re
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, TypeVar

import attrs

from . import events
from ._json import check_json
from .errors import Problem, RecordError

__all__ = ["record_from"]

R = TypeVar("R")

#: A field's conversion: the value as the record takes it, or ``_Refused`` naming the problem.
_Convert = Callable[[str, object], object]


class _Refused(Exception):
    """One problem with one value (control flow here: it becomes a Problem)."""

    def __init__(self, message: str, problems: Iterable[Problem] = ()) -> None:
        super().__init__(message)
        self.message = message
        #: Problems of a nested record, their paths relative to it.
        self.problems = tuple(problems)


def record_from(cls: type[R], source: object, /, **overrides: object) -> R:
    """Build the event record ``cls`` from ``source``, an ORM row, any object or a mapping.

    Each field of ``cls`` is taken from ``overrides`` if named there, else from
    ``source`` (``source[name]`` for a mapping, ``source.name`` otherwise),
    else the record's default. Values are converted as an app's models give
    them:

    * ``id`` and ``*_id`` fields: an int or a UUID becomes text;
    * amounts (``Decimal``): a Decimal, an int or text such as ``"12.50"``; a
      float is refused (its binary value is not the amount: give a Decimal or
      text);
    * datetimes: timezone-aware ones, or ISO 8601 text with an offset; a naive
      datetime is refused; dates: a ``date`` or ISO text (a datetime is
      refused: its time would be lost);
    * tuples: any iterable (a list, a queryset); nested records (an invoice's
      ``lines``, a context's ``user``): the record itself, or an object or
      mapping built the same way;
    * mappings of JSON values (``data``, ``extras``): checked and copied.

    >>> from decimal import Decimal
    >>> from types import SimpleNamespace
    >>> from services_ai_plugins.events import Lead
    >>> row = SimpleNamespace(id=42, name="Ada", email="ada@example.com", value="1200.50")
    >>> lead = record_from(Lead, row, tenant="acme", status="won")
    >>> lead.id, lead.value, lead.status
    ('42', Decimal('1200.50'), 'won')
    >>> record_from(Lead, {"id": 7, "name": "Grace", "value": 12.5}, tenant="acme")
    Traceback (most recent call last):
    ...
    services_ai_plugins.errors.RecordError: invalid Lead record: value: a float is refused ...

    :raises RecordError: (a ``ValueError``) listing every field that is
        missing, unknown (an override of no field) or invalid, each by name
        (``lines[1].unit_price`` inside a nested record); ``record`` names the
        record type and ``field`` the first of them.
    :raises TypeError: when ``cls`` is not a record of
        :mod:`services_ai_plugins.events`.

    .. versionadded:: 0.1.0
    """
    build: Callable[..., R] = cls
    if not (attrs.has(cls) and cls.__module__ == events.__name__):
        raise TypeError(
            f"record_from() builds the records of services_ai_plugins.events, not {cls!r}"
        )
    values, problems = _values(cls, source, overrides)
    if problems:
        raise RecordError(cls.__name__, problems)
    try:
        return build(**values)
    except (TypeError, ValueError) as exc:  # a rule across fields, such as ends_at >= starts_at
        found = re.search(rf"\b{cls.__name__}\.(\w+)", str(exc))
        field = found[1] if found is not None else ""
        raise RecordError(cls.__name__, [Problem(field, str(exc))]) from exc


def _values(
    cls: type, source: object, overrides: Mapping[str, object]
) -> tuple[dict[str, object], list[Problem]]:
    """The record's keyword arguments, converted, and every problem found, by field."""
    fields = attrs.fields_dict(cls)
    problems = [
        Problem(name, f"no such field of {cls.__name__} (its fields: {', '.join(fields)})")
        for name in overrides
        if name not in fields
    ]
    values: dict[str, object] = {}
    for name, field in fields.items():
        try:
            value = overrides[name] if name in overrides else _read(source, name)
        except Exception as exc:  # noqa: BLE001 - the model's own property failed: report it
            problems.append(Problem(name, f"could not be read: {type(exc).__name__}: {exc}"))
            continue
        if value is _MISSING:
            if field.default is attrs.NOTHING:
                problems.append(Problem(name, "missing: the source has no such value"))
            continue
        try:
            values[name] = _converter(name, _annotation(field.type))(name, value)
        except _Refused as refused:
            problems.extend(_nested(name, refused))
    return values, problems


#: What :func:`_read` returns when the source has no value of that name.
_MISSING: Final = object()


def _read(source: object, name: str) -> object:
    if isinstance(source, Mapping):
        return source.get(name, _MISSING)
    try:
        return getattr(source, name)
    except AttributeError:
        return _MISSING


def _nested(name: str, refused: _Refused) -> list[Problem]:
    if not refused.problems:
        return [Problem(name, refused.message)]
    return [
        Problem(f"{name}{'' if p.path.startswith('[') else '.'}{p.path}", p.message)
        for p in refused.problems
    ]


def _converter(name: str, annotation: str) -> _Convert:
    """How to convert the value of a field, from its name and its annotation's text."""
    optional = annotation.endswith(" | None")
    kind = annotation.removesuffix(" | None")
    convert = _KINDS.get(kind, _as_is)
    if kind == "str" and (name == "id" or name.endswith("_id")):
        convert = _identifier
    if optional:
        inner = convert
        return lambda field, value: None if value is None else inner(field, value)
    return convert


def _annotation(hint: object) -> str:
    """A field's annotation as the text the records' source spells it (``"Decimal | None"``),
    whether attrs holds that text or the types it names (once something resolved them)."""
    if isinstance(hint, str):
        return hint
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        rest = [argument for argument in arguments if argument is not type(None)]
        if len(rest) == 1 and len(rest) < len(arguments):
            return f"{_annotation(rest[0])} | None"
        return repr(hint)  # a JSON value's union: given as it is
    if origin is tuple and len(arguments) == 2 and arguments[1] is Ellipsis:
        return f"tuple[{_annotation(arguments[0])}, ...]"
    if origin is Mapping and len(arguments) == 2:
        value = arguments[1]
        if value is str:
            return "Mapping[str, str]"
        if typing.get_origin(value) is tuple:  # ApiRequest.query: every value of a name
            return f"Mapping[str, {_annotation(value)}]"
        return "Mapping[str, JSONValue]"
    if isinstance(hint, type):
        return hint.__name__
    return repr(hint)


def _as_is(field: str, value: object) -> object:
    return value


def _text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise _Refused(f"must be text (got {_brief(value)})")
    return value


def _identifier(field: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, uuid.UUID) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    raise _Refused(f"must be an id: text, an int or a UUID (got {_brief(value)})")


def _decimal(field: str, value: object) -> Decimal:
    if isinstance(value, float):
        raise _Refused(
            f"a float is refused ({value!r}): a binary float is not an exact amount; "
            f"give a Decimal or text such as {str(value)!r}"
        )
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, str)):
        raise _Refused(f"must be an amount: a Decimal, an int or text (got {_brief(value)})")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise _Refused(f"must be an amount such as '12.50' (got {value!r})") from None
    if not number.is_finite():
        raise _Refused(f"must be a finite amount (got {value!r})")
    return number


def _datetime(field: str, value: object) -> datetime:
    moment = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise _Refused(
                f"must be an ISO 8601 datetime with its offset (got {value!r})"
            ) from None
    if not isinstance(moment, datetime):
        raise _Refused(f"must be a timezone-aware datetime (got {_brief(value)})")
    if moment.utcoffset() is None:
        raise _Refused(
            f"a naive datetime is refused ({moment.isoformat()}): it names no instant; make it "
            "timezone-aware (Django: USE_TZ = True; SQLAlchemy: DateTime(timezone=True)), "
            "or give its tzinfo"
        )
    return moment


def _date(field: str, value: object) -> date:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise _Refused(
                f"must be an ISO 8601 date such as '2024-05-01' (got {value!r})"
            ) from None
    if isinstance(value, datetime):
        raise _Refused(
            f"must be a date, not a datetime ({value.isoformat()}): its time would be lost; "
            "give .date() of it in the tenant's time zone"
        )
    if not isinstance(value, date):
        raise _Refused(f"must be a date (got {_brief(value)})")
    return value


def _integer(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refused(f"must be an int (got {_brief(value)})")
    return value


def _flag(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _Refused(f"must be True or False (got {_brief(value)})")
    return value


def _items(value: object) -> list[object]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise _Refused(f"must be a list or another iterable of items (got {_brief(value)})")
    return list(value)


def _texts(field: str, value: object) -> tuple[str, ...]:
    items = _items(value)
    problems = [
        Problem(f"[{index}]", f"must be text (got {_brief(item)})")
        for index, item in enumerate(items)
        if not isinstance(item, str)
    ]
    if problems:
        raise _Refused("", problems)
    return tuple(str(item) for item in items)


def _record(cls: type) -> _Convert:
    def convert(field: str, value: object) -> object:
        if isinstance(value, cls):
            return value
        try:
            return record_from(cls, value)
        except RecordError as exc:
            raise _Refused(str(exc), exc.problems) from None

    return convert


def _records(cls: type) -> _Convert:
    one = _record(cls)

    def convert(field: str, value: object) -> tuple[object, ...]:
        built: list[object] = []
        problems: list[Problem] = []
        for index, item in enumerate(_items(value)):
            try:
                built.append(one(field, item))
            except _Refused as refused:
                problems.extend(_nested(f"[{index}]", refused))
        if problems:
            raise _Refused("", problems)
        return tuple(built)

    return convert


def _json_object(field: str, value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _Refused(f"must be a mapping of JSON values (got {_brief(value)})")
    try:
        checked = check_json(dict(value))
    except ValueError as exc:
        raise _Refused(f"must hold JSON values only: a value {exc}") from None
    assert isinstance(checked, dict)  # check_json maps a dict to a dict
    return checked


def _brief(value: object) -> str:
    text = repr(value)
    shown = text if len(text) <= 60 else f"{text[:57]}..."
    return f"{type(value).__name__} {shown}"


#: Conversions by the annotation's text (without ``| None``); others are given as they are.
_KINDS: Final[Mapping[str, _Convert]] = {
    "str": _text,
    "Decimal": _decimal,
    "datetime": _datetime,
    "date": _date,
    "int": _integer,
    "bool": _flag,
    "tuple[str, ...]": _texts,
    "tuple[InvoiceLine, ...]": _records(events.InvoiceLine),
    "User": _record(events.User),
    "Mapping[str, JSONValue]": _json_object,
}
