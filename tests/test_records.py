"""record_from: event records built from an app's ORM-like values, every problem named by field."""

from __future__ import annotations

import typing
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services_ai_plugins import events
from services_ai_plugins._records import _KINDS, _annotation
from services_ai_plugins.errors import ProblemsError, RecordError
from services_ai_plugins.events import (
    PAYLOAD_TYPES,
    Booking,
    Context,
    Invoice,
    InvoiceLine,
    Lead,
    User,
)
from services_ai_plugins.tooling import record_from
from services_ai_plugins_testing.strategies import (
    bookings,
    contexts,
    invoice_lines,
    invoices,
    leads,
    reports,
    users,
)

RECORDS = st.one_of(
    leads(), bookings(), invoices(), invoice_lines(), users(), contexts(), reports()
)


def as_orm(record: Any, *, texts: bool) -> dict[str, Any]:
    """The record's fields as an ORM hands them back: nested records as rows (mappings or
    objects), and with ``texts`` amounts as text, datetimes and dates as ISO 8601 text, and
    digit ids as ints."""
    fields: dict[str, Any] = {}
    for name, field_value in attrs.asdict(record, recurse=False).items():
        fields[name] = _orm_value(name, field_value, texts=texts)
    return fields


def _orm_value(name: str, value: Any, *, texts: bool) -> Any:
    if isinstance(value, tuple) and value and attrs.has(type(value[0])):
        return [SimpleNamespace(**as_orm(item, texts=texts)) for item in value]
    if attrs.has(type(value)):
        return as_orm(value, texts=texts)
    if texts and isinstance(value, Decimal):
        return str(value)
    if texts and isinstance(value, date):
        return value.isoformat()
    if texts and isinstance(value, tuple):
        return list(value)
    if texts and (name == "id" or name.endswith("_id")) and isinstance(value, str):
        return int(value) if value.isdigit() and str(int(value)) == value else value
    return value


@given(RECORDS, st.booleans(), st.booleans())
def test_any_valid_records_fields_rebuild_the_same_record(
    record: Any, as_object: bool, texts: bool
) -> None:
    """A valid record's field values, given as an object or as a mapping, as they are or in the
    forms an ORM uses (text amounts and datetimes, int ids, lists, nested rows), rebuild it."""
    fields = as_orm(record, texts=texts)
    source: Any = SimpleNamespace(**fields) if as_object else fields
    assert record_from(type(record), source) == record


@given(RECORDS)
def test_overrides_win_over_the_source(record: Any) -> None:
    """Fields given as overrides replace the source's: a source of nothing but overrides works."""
    fields = attrs.asdict(record, recurse=False)
    assert record_from(type(record), None, **fields) == record
    assert record_from(type(record), {name: object() for name in fields}, **fields) == record


#: (record strategy, field, an invalid value for it, what the problem says)
INVALID: list[tuple[st.SearchStrategy[Any], str, Any, str]] = [
    (leads(), "value", 12.5, "a float is refused"),
    (leads(), "value", "twelve", "must be an amount"),
    (leads(), "value", True, "must be an amount"),
    (leads(), "created_at", datetime(2024, 5, 6, 9, 0), "a naive datetime is refused"),
    (leads(), "created_at", "2024-05-06T09:00:00", "a naive datetime is refused"),
    (leads(), "created_at", date(2024, 5, 6), "timezone-aware datetime"),
    (leads(), "data", {"amount": Decimal("1.5")}, "JSON values only"),
    (leads(), "name", 42, "must be text"),
    (leads(), "id", 4.0, "must be an id"),
    (bookings(), "starts_at", datetime(2030, 1, 7, 9, 0), "a naive datetime is refused"),
    (invoices(), "issued_on", datetime(2024, 5, 1, tzinfo=timezone.utc), "not a datetime"),
    (invoices(), "paid_at", "yesterday", "ISO 8601 datetime"),
    (invoice_lines(), "unit_price", 150.0, "a float is refused"),
    (invoice_lines(), "quantity", Decimal("NaN"), "finite"),
    (users(), "roles", "admin", "must be a list"),
    (contexts(), "extras", ["not", "a", "mapping"], "mapping of JSON values"),
]


@pytest.mark.parametrize(
    ("records", "field", "bad", "says"), INVALID, ids=[f"{c[1]}={c[2]!r}" for c in INVALID]
)
@given(data=st.data())
def test_an_invalid_field_is_reported_by_name(
    records: st.SearchStrategy[Any], field: str, bad: Any, says: str, data: st.DataObject
) -> None:
    """One bad value among valid ones: RecordError (a ValueError) names the record and the
    field, and says what is wrong."""
    record = data.draw(records)
    fields = {**attrs.asdict(record, recurse=False), field: bad}
    as_object = data.draw(st.booleans())
    with pytest.raises(RecordError) as caught:
        record_from(type(record), SimpleNamespace(**fields) if as_object else fields)
    error = caught.value
    assert (error.record, error.field) == (type(record).__name__, field)
    assert [problem.path for problem in error.problems] == [field]
    assert says in error.problems[0].message
    assert isinstance(error, ValueError)
    assert isinstance(error, ProblemsError)
    assert str(error).startswith(f"invalid {type(record).__name__} record: {field}: ")


def test_every_problem_is_reported_at_once_with_nested_paths() -> None:
    """Missing fields, unknown overrides and bad values of nested rows are listed together,
    each by its path."""
    row = SimpleNamespace(
        id=uuid.UUID(int=7),
        number="2024-0042",
        currency="EUR",
        lines=[
            {"description": "Consulting", "quantity": 12, "unit_price": "150.00"},
            {"description": "Setup", "quantity": 1.0, "unit_price": 99.5},
        ],
        paid_at=datetime(2024, 5, 1, 12, 0),
    )
    with pytest.raises(RecordError) as caught:
        record_from(Invoice, row, tenant="acme", colour="red")
    assert [(p.path, p.message.split(" (")[0]) for p in caught.value.problems] == [
        ("colour", "no such field of Invoice"),
        ("customer_name", "missing: the source has no such value"),
        ("lines[1].quantity", "a float is refused"),
        ("lines[1].unit_price", "a float is refused"),
        ("paid_at", "a naive datetime is refused"),
    ]
    assert caught.value.field == "colour"


def test_converts_what_orms_return() -> None:
    """Int and UUID ids become text, text amounts Decimals, ISO text dates and datetimes,
    querysets of rows nested records; defaults fill what the source lacks."""
    user_row = SimpleNamespace(id=5, tenant="acme", email="ada@example.com", name="Ada")
    context = record_from(Context, {"tenant": "acme", "user": user_row})
    assert context.user == User(id="5", tenant="acme", email="ada@example.com", name="Ada")
    booking = record_from(
        Booking,
        {
            "id": uuid.UUID(int=1),
            "customer_name": "Ada",
            "customer_email": "ada@example.com",
            "service": "Consultation",
            "starts_at": "2030-01-07T09:00:00+01:00",
            "ends_at": datetime(2030, 1, 7, 9, 30, tzinfo=timezone(timedelta(hours=1))),
        },
        tenant="acme",
    )
    assert booking.id == "00000000-0000-0000-0000-000000000001"
    assert booking.starts_at == datetime(2030, 1, 7, 8, 0, tzinfo=timezone.utc)
    assert (booking.status, booking.notes) == ("pending", "")
    line = record_from(InvoiceLine, {"description": "Hours", "quantity": "1.5", "unit_price": 80})
    assert line.total == Decimal("120.0")
    lead = record_from(Lead, {"id": 3, "name": "Grace", "value": None}, tenant="acme")
    assert (lead.id, lead.value, lead.data) == ("3", None, {})


def test_a_rule_across_fields_is_reported_with_its_field() -> None:
    """A record's own rule (a booking ending before it starts) is a RecordError too."""
    start = datetime(2030, 1, 7, 9, 0, tzinfo=timezone.utc)
    with pytest.raises(RecordError) as caught:
        record_from(
            Booking,
            {"starts_at": start, "ends_at": start - timedelta(hours=1)},
            id="b-1",
            tenant="acme",
            customer_name="Ada",
            customer_email="ada@example.com",
            service="Consultation",
        )
    assert caught.value.field == "ends_at"
    assert "must not be before starts_at" in str(caught.value)


def test_a_read_that_fails_is_reported_by_field() -> None:
    """A model property that raises (a missing relation, say) is that field's problem."""

    class Row:
        id = 1
        name = "Ada"

        @property
        def email(self) -> str:
            raise LookupError("Lead.contact does not exist")

    with pytest.raises(RecordError) as caught:
        record_from(Lead, Row(), tenant="acme")
    assert caught.value.field == "email"
    assert "could not be read: LookupError: Lead.contact does not exist" in str(caught.value)


def test_only_event_records_are_built() -> None:
    """record_from refuses a class that is not a record of services_ai_plugins.events."""

    @attrs.frozen
    class Mine:
        id: str

    with pytest.raises(TypeError, match=r"records of services_ai_plugins\.events"):
        record_from(Mine, {"id": "1"})


@pytest.mark.parametrize("cls", [*PAYLOAD_TYPES, InvoiceLine], ids=lambda cls: cls.__name__)
def test_fields_convert_alike_with_annotations_as_text_or_resolved(cls: type) -> None:
    """attrs holds a field's annotation as text until something (the payload codec) resolves
    it to types: record_from picks the same conversion either way."""
    hints = typing.get_type_hints(cls, vars(events))
    for name, text in cls.__annotations__.items():
        assert _plan(name, _annotation(text)) == _plan(name, _annotation(hints[name])), name


def _plan(name: str, annotation: str) -> tuple[bool, object]:
    """Whether a field may be None, and the conversion record_from gives its values."""
    kind = annotation.removesuffix(" | None")
    if kind == "str" and (name == "id" or name.endswith("_id")):
        return annotation.endswith(" | None"), "id"
    return annotation.endswith(" | None"), _KINDS.get(kind, "as it is")
