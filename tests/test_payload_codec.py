"""The payloads' wire form: to_wire and from_wire, through the SDK's one converter."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from services_ai_plugins import PluginError
from services_ai_plugins._examples import example
from services_ai_plugins._payload_codec import from_wire, to_wire
from services_ai_plugins.errors import PayloadError
from services_ai_plugins.events import (
    PAYLOAD_TYPES,
    ApiRequest,
    Booking,
    Context,
    Email,
    HtmlFragment,
    Invoice,
    Lead,
    Notification,
    Report,
    Route,
    Sms,
    User,
    Widget,
)

WIRE_TYPES = [cls for cls in PAYLOAD_TYPES if cls is not Route]


def _ids(cls: type[Any]) -> str:
    return cls.__name__


def _roundtrip(payload: Any) -> Any:
    """Through the wire and JSON text, as the sandbox sends it."""
    text = json.dumps(to_wire(payload))
    return from_wire(type(payload), json.loads(text))


@pytest.mark.parametrize("cls", WIRE_TYPES, ids=_ids)
def test_examples_round_trip_through_the_wire(cls: type[Any]) -> None:
    """from_wire(cls, to_wire(x)) == x for every example, also through JSON text."""
    payload = example(cls)
    wire = to_wire(payload)
    assert from_wire(cls, wire) == payload
    assert _roundtrip(payload) == payload
    assert json.loads(json.dumps(wire)) == wire  # JSON-ready: nothing but JSON types


def test_wire_types() -> None:
    """Decimals are strings, datetimes and dates ISO 8601, bytes base64, tuples arrays."""
    invoice = attrs.evolve(
        example(Invoice), paid_at=datetime(2024, 6, 3, 12, 0, tzinfo=timezone.utc)
    )
    wire = to_wire(invoice)
    assert wire["lines"] == [
        {"description": "Consulting (hours)", "quantity": "12", "unit_price": "150.00"},
        {"description": "Setup fee", "quantity": "1", "unit_price": "150.00"},
    ]
    assert wire["issued_on"] == "2024-05-31"
    assert wire["paid_at"] == "2024-06-03T12:00:00+00:00"
    request = attrs.evolve(example(ApiRequest), body=b"\x00\xffhi")
    assert to_wire(request)["body"] == "AP9oaQ=="
    assert to_wire(example(User))["roles"] == ["sales"]


def test_datetimes_keep_their_offset_on_the_wire() -> None:
    """A datetime comes back as the same instant with the same UTC offset; 'Z' reads as UTC."""
    booking = example(Booking)
    back = from_wire(Booking, to_wire(booking))
    assert back.starts_at.utcoffset() == timedelta(hours=2)
    wire = to_wire(example(Report))
    wire["generated_at"] = "2024-06-01T06:00:00Z"
    assert from_wire(Report, wire) == example(Report)


def test_route_wire_leaves_the_handler_out_and_is_not_read_back() -> None:
    """to_wire(Route) drops the handler; from_wire(Route, ...) is refused with a TypeError."""
    assert to_wire(example(Route)) == {
        "path": "/stats",
        "name": "lead-stats",
        "methods": ["GET"],
        "native": False,
    }
    with pytest.raises(TypeError, match="handler is code, not data"):
        from_wire(Route, to_wire(example(Route)))


def test_wire_refuses_what_is_not_a_payload() -> None:
    """to_wire and from_wire refuse types outside PAYLOAD_TYPES with a TypeError."""
    with pytest.raises(TypeError, match="not an event payload"):
        to_wire({"tenant": "acme"})
    with pytest.raises(TypeError, match="not an event payload type"):
        from_wire(dict, {})


def _problems(cls: type[Any], data: object) -> dict[str, str]:
    with pytest.raises(PayloadError) as caught:
        from_wire(cls, data)
    error = caught.value
    assert error.payload_type is cls
    for problem in error.problems:
        assert f"{problem.path}: {problem.message}" in str(error) or not problem.path
    return {problem.path: problem.message for problem in error.problems}


def test_payload_error_is_a_value_error_and_a_plugin_error() -> None:
    """PayloadError is caught as ValueError and as PluginError, and names the payload type."""
    with pytest.raises(ValueError, match="invalid Sms payload: text: is required") as caught:
        from_wire(Sms, {"tenant": "acme", "to": "+15550100"})
    assert isinstance(caught.value, PluginError)


def test_from_wire_refuses_unknown_keys_with_their_path() -> None:
    """Unknown keys are reported by path, nested ones too, with a suggestion when one is close."""
    wire: Any = to_wire(example(Invoice))
    wire["colour"] = "red"
    wire["lines"][1]["price"] = "1.00"
    wire["x"] = 1
    assert _problems(Invoice, wire) == {
        "colour": "unknown key",
        "x": "unknown key",
        "lines[1].price": "unknown key; did you mean 'unit_price'?",
    }


@pytest.mark.parametrize(
    ("cls", "change", "path", "message"),
    [
        (Lead, {"tenant": 7}, "tenant", "must be a string (got number)"),
        (Lead, {"value": 4800.0}, "value", "must be a decimal number as a string"),
        (Lead, {"value": "4,800"}, "value", "got '4,800'"),
        (Lead, {"value": "1_000"}, "value", "got '1_000'"),
        (Lead, {"value": "\u0663"}, "value", "must be a decimal number as a string"),
        (Lead, {"value": "NaN"}, "value", "got 'NaN'"),
        (Lead, {"created_at": "2024-05-06T09:30"}, "created_at", "must include a UTC offset"),
        (Lead, {"created_at": "yesterday"}, "created_at", "ISO 8601 date-time"),
        (Lead, {"data": []}, "data", "must be an object (got array)"),
        (Lead, {"data": {"n": float("inf")}}, "data.n", "finite"),
        (Invoice, {"issued_on": "31/05/2024"}, "issued_on", "ISO 8601 date"),
        (Invoice, {"lines": {}}, "lines", "must be an array (got object)"),
        (Invoice, {"lines": [None]}, "lines[0]", "must be an object (got null)"),
        (User, {"roles": "sales"}, "roles", "must be an array (got string)"),
        (User, {"roles": ["sales", 1]}, "roles[1]", "must be a string (got number)"),
        (Report, {"rows": True}, "rows", "must be an integer (got boolean)"),
        (Report, {"rows": "42"}, "rows", "must be an integer (got string)"),
        (Widget, {"order": 1.5}, "order", "must be an integer"),
        (HtmlFragment, {"placement": "body"}, "placement", "must be one of 'head', 'footer'"),
        (ApiRequest, {"body": "not base64!"}, "body", "must be base64 text"),
        (ApiRequest, {"headers": {"accept": ["a"]}}, "headers.accept", "must be a string"),
        (ApiRequest, {"query": {"a b": 1}}, "query['a b']", "must be an array (got number)"),
        (ApiRequest, {"query": {"q": "x"}}, "query.q", "must be an array (got string)"),
        (ApiRequest, {"query": {"q": ["x", 2]}}, "query.q[1]", "must be a string"),
        (ApiRequest, {"query": {"q": []}}, "", "ApiRequest.query['q'] must have at least one"),
        (ApiRequest, {"user": {"id": "u"}}, "user.tenant", "is required"),
        (Context, {"user": "ada"}, "user", "must be an object (got string)"),
        (Email, {"to": "a@example.com"}, "to", "must be an array (got string)"),
        (Notification, {"level": None}, "level", "must be a string (got null)"),
    ],
)
def test_from_wire_refuses_wrong_types_with_their_path(
    cls: type[Any], change: dict[str, Any], path: str, message: str
) -> None:
    """A value of the wrong wire type is reported at its path, in words."""
    wire = {**to_wire(example(cls)), **change}
    problems = _problems(cls, wire)
    assert path in problems, problems
    assert message in problems[path]


def test_from_wire_reports_every_problem_and_missing_keys() -> None:
    """Missing keys read 'is required'; all problems come in one error."""
    problems = _problems(Booking, {"tenant": "acme", "starts_at": 1, "status": None})
    assert problems["id"] == "is required"
    assert problems["ends_at"] == "is required"
    assert problems["starts_at"].startswith("must be an ISO 8601 date-time string")
    assert problems["status"] == "must be a string (got null)"


def test_from_wire_refuses_what_is_not_an_object() -> None:
    """A payload must be a JSON object."""
    assert _problems(Lead, ["lead-2041"]) == {"": "must be a JSON object (got array)"}


def test_from_wire_refuses_keys_that_are_not_strings() -> None:
    """Keys that JSON could not carry are a PayloadError, at any depth."""
    sms: dict[Any, str] = {"tenant": "acme", "to": "+15550100", "text": "Hi"}
    assert _problems(Sms, {**sms, 1: "x"}) == {"": "keys must be strings (got 1)"}
    wire: dict[Any, Any] = to_wire(example(Context))
    wire["user"][None] = "x"
    wire["extras"][2] = "x"
    assert _problems(Context, wire) == {
        "user": "keys must be strings (got None)",
        "extras": "keys must be strings (got 2)",
    }


def test_from_wire_runs_the_records_own_checks() -> None:
    """Checks made when a record is built also apply to data from the wire."""
    wire = to_wire(example(Booking))
    wire["ends_at"] = "2024-05-14T09:00:00+02:00"
    with pytest.raises(PayloadError, match="must not be before starts_at"):
        from_wire(Booking, wire)
