"""JSON values: the type that names them and the checks that keep them JSON.

``JSONValue`` is public (re-exported by :mod:`services_ai_plugins.types`); this
module imports nothing heavy, so the public ``types`` module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Final, TypeAlias

#: A value that JSON can carry.
JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"

#: How deeply JSON values in a manifest or a setting may nest.
MAX_JSON_DEPTH: Final = 64
#: The most decimal digits a JSON integer may have (Python refuses to print
#: integers past ``sys.get_int_max_str_digits()``; JSON peers give up far sooner).
MAX_INT_DIGITS: Final = 1000
_INT_LIMIT: Final = 10**MAX_INT_DIGITS


def check_json(value: object, *, depth: int = 0) -> JSONValue:
    """Return a deep copy of ``value`` if JSON can carry it, else raise ValueError."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nests deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, int) and not isinstance(value, bool):
        return check_int(value)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number (got {value!r})")
        return value
    if isinstance(value, (list, tuple)):
        return [check_json(item, depth=depth + 1) for item in value]
    if isinstance(value, dict):
        copy: dict[str, JSONValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"object keys must be strings (got {key!r})")
            copy[key] = check_json(item, depth=depth + 1)
        return copy
    raise ValueError(f"must be a JSON value (got {type(value).__name__})")


def check_int(value: int) -> int:
    """Return ``value`` if JSON text can carry it, else raise ValueError."""
    if abs(value) >= _INT_LIMIT:
        raise ValueError(f"is too large an integer (over {MAX_INT_DIGITS} digits)")
    return value


def json_type_name(value: object) -> str:
    """Name the JSON type of a Python value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def exact_json_text(value: object) -> str:
    """``value`` as compact JSON text that reads back with the same types on every database.

    Floats are written with a decimal point and without an exponent: PostgreSQL's
    ``jsonb`` keeps a number's digits, and ``1e+20`` (Python's text for ``1e20``)
    would come back as the int 100000000000000000000, while
    ``100000000000000000000.0`` comes back a float.

    >>> exact_json_text({"n": 1e20, "ok": True, "list": [1, "é"]})
    '{"n":100000000000000000000.0,"ok":true,"list":[1,"é"]}'

    :raises TypeError: for a value JSON has no type for, or an object key that is not text.
    :raises ValueError: for NaN or an infinity.
    """
    import json  # noqa: PLC0415 - imported when used: this module stays cheap to import

    out: list[str] = []
    _encode(value, out, json.dumps)
    return "".join(out)


def _encode(value: object, out: list[str], text: Callable[..., str]) -> None:
    if value is None:
        out.append("null")
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, str):
        out.append(text(value, ensure_ascii=False))
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(_float(value))
    elif isinstance(value, Mapping):
        out.append("{")
        for number, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"object keys must be str, not {type(key).__name__} ({key!r})")
            out.append("," if number else "")
            out.append(text(key, ensure_ascii=False))
            out.append(":")
            _encode(item, out, text)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for number, item in enumerate(value):
            out.append("," if number else "")
            _encode(item, out, text)
        out.append("]")
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _float(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a JSON number")
    text = float.__repr__(value)
    if "e" in text:
        import decimal  # noqa: PLC0415 - only for a float Python writes with an exponent

        text = format(decimal.Decimal(text), "f")
        if "." not in text:
            text += ".0"
    return text
