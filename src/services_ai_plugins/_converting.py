"""Strict cattrs hooks shared by the SDK's converters (manifests and event payloads).

cattrs structures any iterable into a tuple (a string becomes a tuple of
characters); these hooks accept JSON arrays only, structure every item, and
collect every failure, each located the way cattrs locates them, so the
converters' error walkers can report one problem per bad item with its path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args, get_origin

import cattrs
from cattrs.errors import IterableValidationError, IterableValidationNote

from ._json import json_type_name

__all__ = ["ExtraCheck", "is_variadic_tuple", "locate", "strict_tuple_hooks"]

#: More checks on a whole array: (item type, the raw items) -> located errors.
ExtraCheck = Callable[[Any, list[Any]], list[Exception]]


def is_variadic_tuple(kind: Any) -> bool:
    """Whether ``kind`` is ``tuple[X, ...]``."""
    args = get_args(kind)
    return get_origin(kind) is tuple and len(args) == 2 and args[1] is Ellipsis


def locate(exc: Exception, index: int | str, kind: Any) -> Exception:
    """Attach the position of ``exc`` in its collection, as cattrs does; return ``exc``."""
    where = f"@ index {index!r}" if isinstance(index, int) else f"@ key {index!r}"
    notes = [*getattr(exc, "__notes__", []), IterableValidationNote(where, index, kind)]
    # ``__notes__`` is typed for Python 3.11+ only; cattrs reads it on 3.10 too.
    setattr(exc, "__notes__", notes)  # noqa: B010
    return exc


def strict_tuple_hooks(
    converter: cattrs.Converter, extra: ExtraCheck | None = None
) -> Callable[[Any], Callable[[object, Any], tuple[Any, ...]]]:
    """A hook factory for ``tuple[X, ...]``: JSON arrays only, every bad item reported."""

    def factory(kind: Any) -> Callable[[object, Any], tuple[Any, ...]]:
        item_kind = get_args(kind)[0]

        def hook(value: object, _: Any) -> tuple[Any, ...]:
            if not isinstance(value, list):
                raise ValueError(f"must be an array (got {json_type_name(value)})")
            items: list[Any] = []
            errors: list[Exception] = []
            for index, item in enumerate(value):
                try:
                    items.append(converter.structure(item, item_kind))
                except Exception as exc:  # noqa: BLE001 - collected and reported by path
                    errors.append(locate(exc, index, item_kind))
            if extra is not None:
                errors.extend(extra(item_kind, value))
            if errors:
                raise IterableValidationError("invalid items", errors, kind)
            return tuple(items)

        return hook

    return factory
