"""The contract suites' comparison: every difference between what came back and what should have.

Shared by :mod:`~services_ai_plugins_testing.storage_contract` and
:mod:`~services_ai_plugins_testing.services_contract`, so that a storage
backend and a host adapter are judged by the same rules and their failures
read alike.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime

import attrs
import pytest

__all__ = ["describe", "differences", "expect_same"]


def expect_same(got: object, expected: object, what: str) -> None:
    """Fail, listing every difference by its path, unless ``got`` is ``expected``.

    Stricter than ``==`` where a backend could fool it: a ``bool`` must not come
    back as ``1``, an enum member as its plain value, a tuple as a list, or a
    timezone-aware datetime as a naive one.
    """
    problems = differences(got, expected, "")
    if problems:
        pytest.fail(f"{what}:\n  " + "\n  ".join(problems), pytrace=False)


def differences(got: object, expected: object, path: str) -> list[str]:
    """Every way ``got`` differs from ``expected``, each a line led by its path (none: the same)."""
    where = f"{path}: " if path else ""
    cls = type(expected)
    if attrs.has(cls):
        if type(got) is not cls:
            return [f"{where}expected a {cls.__name__}, got {got!r}"]
        problems: list[str] = []
        for field in attrs.fields(cls):
            name = f"{path}.{field.name}" if path else field.name
            problems += differences(getattr(got, field.name), getattr(expected, field.name), name)
        return problems
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            return [f"{where}expected a mapping {expected!r}, got {describe(got)}"]
        problems = []
        missing = [k for k in expected if k not in got]
        extra = [k for k in got if k not in expected]
        if missing:
            problems.append(f"{where}keys missing: {missing!r} (got {dict(got)!r})")
        if extra:
            problems.append(f"{where}unexpected keys: {extra!r} (got {dict(got)!r})")
        for key in expected:
            if key in got:
                problems += differences(got[key], expected[key], f"{path}[{key!r}]")
        return problems
    if isinstance(expected, (list, tuple)):
        if type(got) is not cls:
            return [f"{where}expected {describe(expected)}, got {describe(got)}"]
        assert isinstance(got, (list, tuple))
        if len(got) != len(expected):
            return [
                f"{where}expected {len(expected)} item(s), got {len(got)}:\n"
                f"    expected: {expected!r}\n    got:      {got!r}"
            ]
        problems = []
        for index, (item, wanted) in enumerate(zip(got, expected, strict=True)):
            problems += differences(item, wanted, f"{path}[{index}]")
        return problems
    if isinstance(expected, enum.Enum):
        if not isinstance(got, cls) or got != expected:
            return [f"{where}expected {expected!r}, got {describe(got)}"]
        return []
    if isinstance(expected, datetime):
        if not isinstance(got, datetime):
            return [f"{where}expected the datetime {expected!r}, got {describe(got)}"]
        if got.utcoffset() is None:
            return [
                f"{where}expected the aware datetime {expected.isoformat()}, got the naive "
                f"{got.isoformat()}: datetimes must come back timezone-aware"
            ]
        if got != expected:
            return [f"{where}expected {expected.isoformat()}, got {got.isoformat()}"]
        return []
    if isinstance(expected, bool) or isinstance(got, bool):
        if type(got) is not type(expected) or got != expected:
            return [f"{where}expected {expected!r}, got {describe(got)}"]
        return []
    if isinstance(expected, (int, float)):
        if not isinstance(got, (int, float)) or got != expected:
            return [f"{where}expected {expected!r}, got {describe(got)}"]
        return []
    if got != expected or type(got) is not cls:
        return [f"{where}expected {expected!r}, got {describe(got)}"]
    return []


def describe(value: object) -> str:
    """A value for a failure message: its repr and its type, ``1 (int)``."""
    return f"{value!r} ({type(value).__name__})"
