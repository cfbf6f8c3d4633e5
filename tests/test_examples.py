"""The documented example payloads, and the hook arguments built from them."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from services_ai_plugins._examples import FILLED, OPTIONAL, example, example_values, parameter_types
from services_ai_plugins.events import PAYLOAD_TYPES, Lead
from services_ai_plugins.hookspecs import plugin_manager


def _ids(cls: type[Any]) -> str:
    return cls.__name__


@pytest.mark.parametrize("cls", PAYLOAD_TYPES, ids=_ids)
def test_every_payload_type_has_a_fresh_example(cls: type[Any]) -> None:
    """example(cls) builds an instance of cls, a new one on every call."""
    first, second = example(cls), example(cls)
    assert type(first) is cls
    assert first == second
    assert first is not second


def test_example_refuses_other_types() -> None:
    """example() of a type that is not a payload raises TypeError."""
    with pytest.raises(TypeError, match="not an event payload type"):
        example(dict)


def test_a_hooks_arguments_come_from_the_examples_at_the_tenant() -> None:
    """lead_created gets example(Lead) moved to the tenant; context, api, settings are not built."""
    spec = plugin_manager().hook.lead_created.spec
    assert spec is not None
    wanted = [name for name in spec.argnames if name not in FILLED]
    assert "lead" in wanted
    assert not {"context", "api", "settings"} & set(wanted)
    values, problems = example_values("lead_created", parameter_types(spec.function, wanted), "t")
    assert problems == []
    assert values["lead"] == attrs.evolve(example(Lead), tenant="t")
    assert OPTIONAL.isdisjoint(values)


def test_an_argument_without_an_example_is_a_problem_by_name() -> None:
    """A plain str (plugin_installed's version) has no example: a problem names it."""
    spec = plugin_manager().hook.plugin_installed.spec
    assert spec is not None
    kinds = parameter_types(spec.function, ["version"])
    values, problems = example_values("plugin_installed", kinds, None)
    assert values == {}
    assert [problem.path for problem in problems] == ["version"]
    assert "has no example (a str)" in problems[0].message
