"""What crosses the sandbox's pipes: the value codec and the frames (properties and edges)."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services_ai_plugins._wire import Channel, WireError, decode, encode
from services_ai_plugins.events import PAYLOAD_TYPES, Lead, Route, example
from services_ai_plugins_testing.strategies import json_values, payloads

RECORD_TYPES = [cls for cls in PAYLOAD_TYPES if cls is not Route]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=st.just(timezone(timedelta(hours=2)))),
    st.dates(),
    st.binary(max_size=64),
)
values = st.recursive(
    st.one_of(scalars, st.sampled_from(RECORD_TYPES).flatmap(payloads)),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=6), children, max_size=4),
    ),
    max_leaves=12,
)


@given(values)
def test_every_value_comes_back_equal_through_json(value: Any) -> None:
    """Property: decode(json(encode(v))) == v, types included (tuples stay tuples)."""
    wire = json.loads(json.dumps(encode(value), allow_nan=False))
    back = decode(wire)
    assert back == value
    assert type(back) is type(value)


@given(json_values())
def test_plain_json_is_sent_as_it_is(value: Any) -> None:
    """Property: JSON without "$" keys needs no tags (what most hooks exchange costs nothing)."""
    encoded = encode(value)
    assert decode(encoded) == value


@given(st.dictionaries(st.sampled_from(["$r", "$t", "$n", "$x", "v"]), st.integers(), max_size=3))
def test_dicts_with_dollar_keys_are_escaped(value: dict[str, int]) -> None:
    """Property: user data that looks like a tag is never read as one."""
    assert decode(json.loads(json.dumps(encode(value)))) == value


@pytest.mark.parametrize(
    "data",
    [
        {"$r": "Lead", "v": {"tenant": "acme"}},  # an invalid record
        {"$r": "Nope", "v": {}},
        {"$r": "Route", "v": {}},  # handlers never cross
        {"$t": "not a list"},
        {"$n": "NaN"},
        {"$n": 3},
        {"$dt": "yesterday"},
        {"$b": "***"},
        {"$t": [], "$d": {}},
        [1, {"$day": "2024-13-01"}],
    ],
)
def test_malformed_tags_are_refused(data: Any) -> None:
    with pytest.raises(WireError):
        decode(data)


@pytest.mark.parametrize(
    "value", [object(), {1: "a"}, float("nan"), Decimal("Infinity"), {1, 2}, Route]
)
def test_what_cannot_cross_is_named(value: Any) -> None:
    with pytest.raises(WireError, match=r"cannot send|keys must be strings"):
        json.dumps(encode(value), allow_nan=False)


def test_a_route_is_refused_as_a_value() -> None:
    with pytest.raises(WireError, match=r"events\.Route"):
        encode(Route(path="/x", handler=print, name="x"))


@pytest.fixture
def pair() -> Iterator[tuple[Channel, socket.socket]]:
    left, right = socket.socketpair()
    yield Channel(left, limit=1024), right
    left.close()
    right.close()


def test_frames_arrive_whole_in_pieces_and_in_a_row(pair: tuple[Channel, socket.socket]) -> None:
    channel, other = pair
    body = json.dumps(["ok", encode(example(Lead))]).encode()
    frame = struct.pack(">I", len(body)) + body
    other.sendall(frame[:3])
    other.sendall(frame[3:10] + b"")
    other.sendall(frame[10:] + frame)
    assert channel.receive(1)[1] == encode(example(Lead))
    assert channel.receive(1)[0] == "ok"


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (struct.pack(">I", 2048), "over the limit"),
        (struct.pack(">I", 3) + b"{x}", "not JSON"),
        (struct.pack(">I", 2) + b"{}", "JSON array"),
        (struct.pack(">I", 2) + b"[]", "JSON array"),
    ],
)
def test_bad_frames_are_refused(
    pair: tuple[Channel, socket.socket], frame: bytes, message: str
) -> None:
    channel, other = pair
    other.sendall(frame)
    with pytest.raises(WireError, match=message):
        channel.receive(1)


def test_a_silent_or_closed_peer(pair: tuple[Channel, socket.socket]) -> None:
    channel, other = pair
    with pytest.raises(TimeoutError):
        channel.receive(0.05)
    other.close()
    with pytest.raises(EOFError):
        channel.receive(1)


def test_descriptors_travel_with_a_frame(pair: tuple[Channel, socket.socket]) -> None:
    channel, other = pair
    receiver = Channel(other)
    first, second = socket.socketpair()
    with first, second:
        channel.send(
            ["fork", {"at": encode(datetime(2024, 5, 6, tzinfo=timezone.utc))}],
            fds=[first.fileno()],
        )
        fds: list[int] = []
        message = receiver.receive(1, fds=fds)
        assert decode(message[1]) == {"at": datetime(2024, 5, 6, tzinfo=timezone.utc)}
        [fd] = fds
        with socket.socket(fileno=fd) as copy:
            copy.sendall(b"hi")
            assert second.recv(2) == b"hi"
    assert decode({"$day": "2024-05-31"}) == date(2024, 5, 31)
