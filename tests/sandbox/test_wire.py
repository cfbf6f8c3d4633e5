"""What crosses the sandbox's pipes: the value codec and the frames (properties and edges)."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services_ai_plugins._examples import example
from services_ai_plugins._sandbox._wire import (
    Channel,
    FrameTooLarge,
    WireError,
    _count_values,
    decode,
    encode,
)
from services_ai_plugins.events import PAYLOAD_TYPES, Lead, Route
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


# -- what a frame's text may hold: checked before (or as) it becomes values -----------------------


def frame_of(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1E400"])
def test_numbers_json_does_not_allow_are_refused(
    pair: tuple[Channel, socket.socket], number: str
) -> None:
    """json.loads reads these as floats; a frame may not hold them (the documentation says so)."""
    channel, other = pair
    other.sendall(frame_of(f'["ok",[1.5,{number}]]'.encode()))
    with pytest.raises(WireError, match="not JSON"):
        channel.receive(1)


def test_finite_floats_still_arrive(pair: tuple[Channel, socket.socket]) -> None:
    channel, other = pair
    other.sendall(frame_of(b'["ok",[1.5,-2e-300,1e308,0.0]]'))
    assert channel.receive(1) == ["ok", [1.5, -2e-300, 1e308, 0.0]]


#: Text with lone surrogates, pairs written as two escapes, and characters of every plane.
texts_and_surrogates = st.lists(
    st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)), max_size=12
).map("".join)


@given(texts_and_surrogates)
def test_a_string_arrives_if_and_only_if_it_is_unicode(text: str) -> None:
    """Property: an escaped surrogate pair is one character; a lone one refuses the frame."""
    try:  # the oracle: UTF-16 pairs surrogates up and refuses a lone one
        expected: str | None = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError:
        expected = None
    left, right = socket.socketpair()
    with left, right:
        channel = Channel(left)
        right.sendall(frame_of(json.dumps(["ok", {text: [text]}], ensure_ascii=True).encode()))
        if expected is None:
            with pytest.raises(WireError, match="not Unicode"):
                channel.receive(1)
        else:
            assert channel.receive(1) == ["ok", {expected: [expected]}]


def test_the_utf8_form_of_a_surrogate_is_refused(pair: tuple[Channel, socket.socket]) -> None:
    """json.loads would read these bytes (it decodes with surrogatepass); a frame may not."""
    channel, other = pair
    other.sendall(frame_of(b'["ok","\xed\xa0\x80"]'))
    with pytest.raises(WireError, match="not UTF-8"):
        channel.receive(1)


def structure(value: Any) -> int:
    """What the bound counts: each container, and each item or member after a container's first."""
    if type(value) is list:
        return 1 + max(len(value) - 1, 0) + sum(structure(item) for item in value)
    if type(value) is dict:
        return 1 + max(len(value) - 1, 0) + sum(structure(item) for item in value.values())
    return 0


tricky_text = st.text(alphabet=',[]{}:"\\ab\u00e9', max_size=8)
tricky_values = st.recursive(
    st.one_of(st.none(), st.integers(), tricky_text),
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(tricky_text, children, max_size=4)
    ),
    max_leaves=30,
)


@given(st.one_of(tricky_values, json_values()))
def test_values_are_counted_outside_strings(value: Any) -> None:
    """Property: the bound counts the structure exactly; text full of commas is one value."""
    body = json.dumps(["ok", value], ensure_ascii=False, separators=(",", ":")).encode()
    count = structure(["ok", value])
    _count_values(body, count)  # at the bound: accepted
    with pytest.raises(WireError, match=f"more than {count - 1} values"):
        _count_values(body, count - 1)


def test_a_channel_bounds_the_values_of_a_frame() -> None:
    left, right = socket.socketpair()
    with left, right:
        channel = Channel(left, max_values=1000)
        right.sendall(frame_of(json.dumps(["ok", [0] * 998]).encode()))  # 1 + 1 + 1 + 997
        assert len(channel.receive(1)[1]) == 998
        right.sendall(frame_of(json.dumps(["ok", [0] * 999]).encode()))
        with pytest.raises(WireError, match="more than 1000 values"):
            channel.receive(1)


KINDS = {b"ok": 64, b"log": 1024}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'["boom",1]', "unexpected 'boom' frame"),
        (b'["ok","' + b"x" * 100 + b'"]', "'ok' frame of 109 bytes is over the limit of 64"),
        (b'[ "ok",1]', "starting with its kind"),  # parsed, then refused: not as written
        (b'["\\u006fk",1]', "unexpected"),
        (b'{"ok":1}', "starting with its kind"),
    ],
)
def test_a_receiver_naming_the_kinds_it_expects_refuses_others(
    pair: tuple[Channel, socket.socket], body: bytes, message: str
) -> None:
    channel, other = pair
    other.sendall(frame_of(body))
    with pytest.raises(WireError, match=message):
        channel.receive(1, kinds=KINDS)


def test_a_frame_over_the_limit_of_one_receive_is_refused_before_it_is_read(
    pair: tuple[Channel, socket.socket],
) -> None:
    channel, other = pair
    other.sendall(frame_of(b'["log","' + b"x" * 200 + b'"]'))
    with pytest.raises(FrameTooLarge) as caught:
        channel.receive(1, limit=100, kinds=KINDS)
    assert (caught.value.size, caught.value.limit) == (210, 100)


def test_expected_kinds_arrive_and_their_size_is_told(pair: tuple[Channel, socket.socket]) -> None:
    channel, other = pair
    other.sendall(frame_of(b'["log",20,"x","hello"]'))
    assert channel.receive(1, kinds=KINDS) == ["log", 20, "x", "hello"]
    assert channel.last_size == 4 + 22


# -- sending with a time limit -----------------------------------------------------------------


def test_a_send_to_a_peer_that_does_not_read_ends_by_its_time_limit() -> None:
    left, right = socket.socketpair()
    with left, right:
        channel = Channel(left)
        with pytest.raises(TimeoutError):
            channel.send(["ok", "x" * 2**24], timeout=0.2)


def test_a_send_over_its_limit_writes_nothing(pair: tuple[Channel, socket.socket]) -> None:
    channel, other = pair
    with pytest.raises(FrameTooLarge, match="'ok' frame of 209 bytes is over the limit of 100"):
        channel.send(["ok", "x" * 200], limit=100)
    with pytest.raises(WireError, match="cannot send"):
        channel.send(["ok", "\ud800"], timeout=1)
    assert channel.send(["ok", 1], limit=100) == 4 + 8
    assert Channel(other).receive(1) == ["ok", 1]  # the first frame written


@given(st.lists(st.integers(0, 3 * 2**20), min_size=1, max_size=3))
def test_frames_sent_with_a_time_limit_arrive_whole(sizes: list[int]) -> None:
    """Property: however the socket takes them (a bit at a time), frames arrive whole, in order."""
    left, right = socket.socketpair()
    with left, right:
        sender, receiver = Channel(left), Channel(right)
        received: list[list[Any]] = []
        reader = threading.Thread(
            target=lambda: received.extend(receiver.receive(60) for _ in sizes)
        )
        reader.start()
        for number, size in enumerate(sizes):
            sender.send(["ok", number, "y" * size], timeout=60)
        reader.join(60)
        assert [(m[1], len(m[2])) for m in received] == list(enumerate(sizes))


def test_descriptors_travel_with_a_time_limited_frame(pair: tuple[Channel, socket.socket]) -> None:
    channel, other = pair
    receiver = Channel(other, limit=2**22)
    first, second = socket.socketpair()
    with first, second:
        reader_fds: list[int] = []
        got: list[list[Any]] = []
        reader = threading.Thread(target=lambda: got.append(receiver.receive(60, fds=reader_fds)))
        reader.start()
        channel.send(["fork", 1, "z" * 2**21], fds=[first.fileno()], timeout=60)
        reader.join(60)
        assert got[0][:2] == ["fork", 1]
        [fd] = reader_fds
        with socket.socket(fileno=fd) as copy:
            copy.sendall(b"hi")
            assert second.recv(2) == b"hi"
