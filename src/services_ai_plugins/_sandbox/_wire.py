"""What crosses the sandbox's pipes: frames, and the values inside them.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON (an
array whose first item names the message). Values are JSON, with three tagged
objects for what JSON lacks::

    {"$r": "Lead", "v": {...}}   an event payload, written by the events' converter
    {"$t": [...]}                a tuple
    {"$d": {...}}                a dict whose keys start with "$" (escaped)
    {"$n": "12.50"}              a Decimal
    {"$dt": "2024-05-06T09:30:00+00:00"}, {"$day": "2024-05-06"}   a datetime, a date
    {"$b": "aGk="}               bytes, base64
    {"$http": [200, [["content-type", "text/plain"]], "aGk=", "https://x.test/"]}   an HttpResponse

Both directions decode strictly: a payload must pass :func:`from_wire`, and
anything else (a NaN, an unknown tag, a class instance) is refused with
:class:`WireError`. Nothing is ever unpickled: a hostile worker can send the
host only data.

A frame's text is refused before it becomes values when it is not UTF-8, holds
``NaN`` or ``Infinity``, a string that is not Unicode (a lone surrogate such as
``"\\ud800"``), more values than the receiver allows (``max_values``: a frame of
nested empty lists would otherwise cost fifty times its size in memory), or,
where the receiver names the kinds it expects, another kind or more bytes than
that kind may have. Sending can have a time limit too: a peer that stops
reading never holds the sender past it.

A :class:`Channel` is used from threads (:meth:`Channel.send`,
:meth:`Channel.receive`: the socket blocks, within a time limit) and from an
event loop (:meth:`Channel.asend`, :meth:`Channel.areceive`: the loop waits for
the socket to be ready and each read and write is a non-blocking one); both
cut and check frames with the same code.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import re
import select
import socket
import struct
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from time import monotonic
from typing import Any, Final, cast

from .._egress import HttpResponse
from .._payload_codec import converter as _converter
from .._payload_codec import from_host as _from_host
from .._payload_codec import from_wire
from ..errors import FrameTooLarge, WireError
from ..events import PAYLOAD_TYPES, Route

__all__ = [
    "IGNORED_RESULT",
    "MAX_FRAME",
    "Channel",
    "FrameTooLarge",
    "WireError",
    "decode",
    "encode",
]

#: The largest frame accepted by default (16 MiB).
MAX_FRAME: Final = 16 * 2**20
#: The largest answer (frame body, in bytes) to a call whose result the host ignores (a
#: NOTIFY hook's): a worker sends None instead of a bigger result; traces show a smaller one.
IGNORED_RESULT: Final = 4096

_HEADER: Final = struct.Struct(">I")
#: A peer that died makes sending fail with EPIPE, never a SIGPIPE (where the system can say so).
_NO_SIGNAL: Final = getattr(socket, "MSG_NOSIGNAL", 0)
#: A send with a time limit: never blocks in the kernel; the wait is a poll with the time left.
_NO_WAIT: Final = _NO_SIGNAL | socket.MSG_DONTWAIT
#: The most bytes read from the socket at once.
_CHUNK: Final = 1 << 16
#: ``struct timeval`` (seconds, microseconds), as the kernel reads SO_RCVTIMEO.
_TIMEVAL: Final = struct.Struct("@ll")
_RECORDS: Final[dict[str, type]] = {cls.__name__: cls for cls in PAYLOAD_TYPES if cls is not Route}
_SIMPLE: Final = (str, int, float, bool, type(None))
#: Per payload type, what :func:`to_wire` calls (looked up on first use, not per value).
_WRITERS: Final[dict[type, Callable[[Any], Any]]] = {}
_RECORD_TYPES: Final = frozenset(_RECORDS.values())
_dumps: Final[Callable[[Any], str]] = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":")
).encode
#: The longest kind read from a frame's first bytes (``["api",...``) before its values are.
_KIND_BYTES: Final = 16
#: A JSON string literal, escapes included (to count the structure outside strings).
_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: JSON, but no number a float can hold
        raise ValueError(f"{text[:40]} is out of range")
    return value


_loads: Final[Callable[[str], Any]] = json.JSONDecoder(
    parse_constant=_constant, parse_float=_float
).decode


def _decimal(text: str) -> Decimal:
    value = Decimal(text)
    if not value.is_finite():
        raise ValueError("not a finite number")
    return value


def _bytes(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


_SCALARS: Final[dict[str, Callable[[str], Any]]] = {
    "$n": _decimal,
    "$dt": datetime.fromisoformat,
    "$day": date.fromisoformat,
    "$b": _bytes,
}
_TAGS: Final = frozenset({"$r", "$t", "$d", "$http", *_SCALARS})


def encode(value: object) -> Any:
    """``value`` as JSON-ready data (see the module docstring for the tags).

    :raises WireError: for anything that is not JSON, a tuple, or an event payload.
    """
    kind = type(value)
    writer = _WRITERS.get(kind)
    if writer is None and kind in _RECORD_TYPES:
        writer = _WRITERS[kind] = _converter().get_unstructure_hook(kind)
    if writer is not None:  # an event payload: its converter's own unstructure function
        return {"$r": kind.__name__, "v": writer(value)}
    # Exact types (a subclass could not be rebuilt as itself on the other side),
    # tested with ``is`` first: this runs for every value of every call.
    if kind in _SIMPLE:
        if kind is float and not math.isfinite(cast("float", value)):
            raise WireError(f"cannot send the number {value} across the sandbox (not JSON)")
        return value
    if kind is list:
        return [encode(item) for item in cast("list[Any]", value)]
    if kind is tuple:
        return {"$t": [encode(item) for item in cast("tuple[Any, ...]", value)]}
    if isinstance(value, dict):
        return _encode_dict(value)
    if isinstance(value, Mapping):  # settings arrive as a read-only proxy
        return _encode_dict(dict(value))
    if kind is Decimal:
        number = cast("Decimal", value)
        if not number.is_finite():
            raise WireError(f"cannot send the Decimal {number} across the sandbox")
        return {"$n": str(number)}
    if kind is datetime:
        return {"$dt": cast("datetime", value).isoformat()}
    if kind is date:
        return {"$day": cast("date", value).isoformat()}
    if kind is bytes:
        return {"$b": base64.b64encode(cast("bytes", value)).decode("ascii")}
    if kind is HttpResponse:  # api.http_request's answer
        reply = cast("HttpResponse", value)
        body = base64.b64encode(reply.body).decode("ascii")
        return {"$http": [reply.status, [list(pair) for pair in reply.headers], body, reply.url]}
    raise WireError(f"cannot send a {kind.__module__}.{kind.__qualname__} across the sandbox")


def _encode_dict(value: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    escape = False
    for key, item in value.items():
        if type(key) is not str:
            raise WireError(f"dictionary keys must be strings to cross the sandbox, not {key!r}")
        if key[:1] == "$":
            escape = True
        out[key] = encode(item)
    return {"$d": out} if escape else out


def decode(data: Any, *, trusted: bool = False) -> Any:
    """The value :func:`encode` made, rebuilt and checked.

    ``trusted``: the data comes from the host, which wrote it from valid
    records (the worker's side); payloads are then read without checking the
    wire shape again. Data from a worker is never trusted.

    :raises WireError: for an unknown tag or a payload that is not valid.
    """
    try:
        return _decode(data, trusted)
    except RecursionError:
        raise WireError("a value is nested too deeply") from None


def _decode(data: Any, trusted: bool) -> Any:
    kind = type(data)
    if kind is list:
        return [_decode(item, trusted) for item in data]
    if kind is not dict:
        if kind in _SIMPLE:
            return data
        raise WireError(f"unexpected {kind.__name__} in a frame")
    if len(data) <= 2 and data.keys() & _TAGS:
        return _tagged(data, trusted)
    return {key: _decode(item, trusted) for key, item in data.items()}


def _tagged(data: dict[str, Any], trusted: bool) -> Any:
    if len(data) == 1:
        ((tag, text),) = data.items()
        scalar = _SCALARS.get(tag)
        if scalar is not None:
            if type(text) is not str:
                raise WireError(f"malformed {tag} value in a frame")
            try:
                return scalar(text)
            except (ArithmeticError, ValueError, binascii.Error) as exc:
                raise WireError(f"malformed {tag} value in a frame: {exc}") from None
    if "$t" in data and len(data) == 1 and type(data["$t"]) is list:
        return tuple(_decode(item, trusted) for item in data["$t"])
    if "$d" in data and len(data) == 1 and type(data["$d"]) is dict:
        return {key: _decode(item, trusted) for key, item in data["$d"].items()}
    if "$http" in data and len(data) == 1:
        return _http_response(data["$http"])
    if "$r" in data and "v" in data and len(data) == 2:
        cls = _RECORDS.get(data["$r"]) if type(data["$r"]) is str else None
        if cls is None:
            raise WireError(f"unknown record type {data['$r']!r} in a frame")
        try:
            if trusted:
                return _from_host(cls, data["v"])
            return from_wire(cls, data["v"])
        except ValueError as exc:
            raise WireError(str(exc)) from exc
    raise WireError(f"malformed tagged value in a frame: {sorted(data)}")


def _http_response(value: object) -> HttpResponse:
    """An :class:`HttpResponse` from its wire form: ``[status, [[name, value], ...], b64, url]``."""
    if type(value) is list and len(value) == 4:
        status, headers, body, url = value
        pairs = headers if type(headers) is list else None
        if (
            type(status) is int
            and type(body) is str
            and type(url) is str
            and pairs is not None
            and all(
                type(pair) is list and len(pair) == 2 and all(type(part) is str for part in pair)
                for pair in pairs
            )
        ):
            try:
                data = base64.b64decode(body, validate=True)
            except (ValueError, binascii.Error) as exc:
                raise WireError(f"malformed $http value in a frame: {exc}") from None
            return HttpResponse(status, tuple((name, text) for name, text in pairs), data, url)
    raise WireError("malformed $http value in a frame")


class Channel:
    """Frames over a connected stream socket: :meth:`send` and :meth:`receive`.

    ``receive`` waits up to ``timeout`` seconds (None: forever) and raises
    :class:`TimeoutError` when that passes, :class:`EOFError` when the other
    side closed, and :class:`WireError` for a frame that is too large (over
    ``limit`` bytes: :class:`FrameTooLarge`), not JSON, or holds more than
    ``max_values`` values (None: any number). After any of these but
    ``TimeoutError`` the channel is out of step: close it.
    """

    __slots__ = (
        "_buffer",
        "_chunk",
        "_limit",
        "_max_values",
        "_pending",
        "_poll",
        "_view",
        "_waiting",
        "last_size",
        "sock",
    )

    def __init__(
        self, sock: socket.socket, *, limit: int = MAX_FRAME, max_values: int | None = None
    ) -> None:
        self.sock: Final = sock
        self._limit = limit
        self._max_values = max_values
        self._buffer = bytearray()
        self._chunk = bytearray(_CHUNK)
        self._view = memoryview(self._chunk)
        # The socket stays blocking; a receive's time limit is the kernel's (SO_RCVTIMEO),
        # changed only when it must be: no extra system call per frame.
        sock.settimeout(None)
        #: The receive time-out set on the socket, in seconds (None: none).
        self._waiting: float | None = None
        self._poll: select.poll | None = None
        #: The bytes of the last frame received, its 4-byte length included.
        self.last_size = 0
        #: An event loop's wait for this socket in progress (``close`` ends it).
        self._pending: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    def send(
        self,
        message: list[Any],
        *,
        fds: Sequence[int] = (),
        timeout: float | None = None,
        limit: int | None = None,
    ) -> int:
        """Write one frame (the message must already be encoded), passing ``fds`` along.

        Waits at most ``timeout`` seconds for the other side to make room (None:
        as long as it takes), then raises :class:`TimeoutError`; part of the
        frame may have been written then: close the channel. A frame whose body
        is over ``limit`` bytes raises :class:`FrameTooLarge`, and one that is
        not JSON (or holds a string that is not Unicode) :class:`WireError`,
        both before anything is written.

        :returns: the bytes written, the 4-byte length included.
        """
        frame = _frame(message, limit)
        if timeout is not None:
            self._send_within(frame, fds, timeout)
            return len(frame)
        rest: bytes = frame
        if fds:
            sent = socket.send_fds(self.sock, [frame], list(fds))
            rest = frame[sent:]
        if rest:
            self.sock.sendall(rest, _NO_SIGNAL)
        return len(frame)

    def _send_within(self, frame: bytes, fds: Sequence[int], timeout: float) -> None:
        """Write ``frame``, waiting for room at most ``timeout`` seconds in all."""
        view = memoryview(frame)
        size = len(frame)
        sent = 0
        deadline = None
        while True:
            try:
                if fds and not sent:
                    sent = socket.send_fds(self.sock, [view], list(fds), _NO_WAIT)
                else:
                    sent += self.sock.send(view[sent:], _NO_WAIT)
            except BlockingIOError:  # the other side's buffer is full: wait for room
                pass
            if sent >= size:
                return
            now = monotonic()
            if deadline is None:  # the first send did not take it all: only now the clock
                deadline = now + timeout
            if now >= deadline:
                raise TimeoutError(f"the other side read no frame for {timeout:g} s")
            poll = self._poll
            if poll is None:
                poll = self._poll = select.poll()
                poll.register(self.sock, select.POLLOUT)
            poll.poll(max(1, math.ceil((deadline - now) * 1000)))

    def receive(
        self,
        timeout: float | None = None,
        *,
        fds: list[int] | None = None,
        limit: int | None = None,
        kinds: Mapping[bytes, int] | None = None,
    ) -> list[Any]:
        """Read one frame; descriptors passed along are appended to ``fds``.

        ``limit``: at most this many bytes for this frame (and at most the
        channel's own limit). ``kinds``: the kinds of frame expected, each with
        its own limit in bytes; another kind is refused, and so is a frame that
        does not start with its kind as the sender writes it (``["kind",``),
        before its values are read. See the class docstring for the errors.
        """
        buffer = self._buffer
        sock = self.sock
        deadline = None if timeout is None else monotonic() + timeout
        most = self._most(limit)
        while True:
            message = self._take(most, kinds)
            if message is not None:
                return message
            if deadline is None:
                if self._waiting is not None:
                    self._wait(None)
            else:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    raise TimeoutError
                waiting = self._waiting
                if waiting is None or not remaining / 2 <= waiting <= remaining:
                    self._wait(remaining)
            try:
                if fds is None:
                    size = sock.recv_into(self._chunk)
                    chunk: bytes | memoryview = self._view[:size]
                else:
                    chunk, received, _, _ = socket.recv_fds(sock, _CHUNK, 4)
                    fds.extend(received)
            except (BlockingIOError, TimeoutError):  # SO_RCVTIMEO ran out: look at the deadline
                continue
            if not chunk:
                raise EOFError("the other side closed the channel")
            buffer += chunk

    async def asend(self, message: list[Any], *, timeout: float, limit: int | None = None) -> int:
        """:meth:`send` from an event loop: the loop waits for room, never the thread.

        The same frame, limits and errors as :meth:`send` (no descriptors); the
        writes are non-blocking ones, so the socket stays as :meth:`send` needs it.

        :returns: the bytes written, the 4-byte length included.
        """
        frame = _frame(message, limit)
        loop = asyncio.get_running_loop()
        view = memoryview(frame)
        size = len(frame)
        sent = 0
        deadline = monotonic() + timeout
        while True:
            with contextlib.suppress(BlockingIOError):  # its buffer is full: wait for room
                sent += self.sock.send(view[sent:], _NO_WAIT)
            if sent >= size:
                return size
            await self._ready(loop, deadline, write=True)

    async def areceive(
        self,
        timeout: float,
        *,
        limit: int | None = None,
        kinds: Mapping[bytes, int] | None = None,
    ) -> list[Any]:
        """:meth:`receive` from an event loop: the loop waits for the frame, never the thread.

        The same frames, limits and errors as :meth:`receive` (no descriptors);
        the reads are non-blocking ones.
        """
        loop = asyncio.get_running_loop()
        deadline = monotonic() + timeout
        most = self._most(limit)
        while True:
            message = self._take(most, kinds)
            if message is not None:
                return message
            try:
                size = self.sock.recv_into(self._chunk, _CHUNK, socket.MSG_DONTWAIT)
            except BlockingIOError:
                await self._ready(loop, deadline, write=False)
                continue
            if not size:
                raise EOFError("the other side closed the channel")
            self._buffer += self._view[:size]

    async def _ready(
        self, loop: asyncio.AbstractEventLoop, deadline: float, *, write: bool
    ) -> None:
        """Wait in ``loop`` until the socket can be written (or read), by ``deadline``.

        The deadline is a timer of the loop's (cheaper than ``asyncio.wait_for`` on every
        wait). Closing the channel meanwhile (from any thread) ends the wait: the next
        read or write then fails.

        :raises TimeoutError: when the deadline passes first.
        """
        remaining = deadline - monotonic()
        if remaining <= 0:
            raise TimeoutError
        ready: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(remaining, _expire, ready)
        fd = self.sock.fileno()
        if write:
            loop.add_writer(fd, _set_done, ready)
        else:
            loop.add_reader(fd, _set_done, ready)
        self._pending = (loop, ready)
        try:
            await ready
        finally:
            self._pending = None
            timer.cancel()
            if write:
                loop.remove_writer(fd)
            else:
                loop.remove_reader(fd)

    def _most(self, limit: int | None) -> int:
        """The most bytes the next frame may have: ``limit``, at most the channel's own."""
        return self._limit if limit is None or limit > self._limit else max(limit, 0)

    def _take(self, most: int, kinds: Mapping[bytes, int] | None) -> list[Any] | None:
        """The next frame's message if the buffer holds all of it (None: not yet).

        Refuses a frame longer than ``most`` bytes as soon as its length is read.
        """
        buffer = self._buffer
        if len(buffer) < 4:
            return None
        (size,) = _HEADER.unpack_from(buffer)
        if size > most:
            raise FrameTooLarge(size, most)
        if len(buffer) < 4 + size:
            return None
        body = bytes(buffer[4 : 4 + size])
        del buffer[: 4 + size]
        self.last_size = 4 + size
        return self._parse(body, kinds)

    def _parse(self, body: bytes, kinds: Mapping[bytes, int] | None) -> list[Any]:
        """The message in a frame's body, refused as early as its bytes allow."""
        canonical = False
        if kinds is not None and body[:2] == b'["':
            end = body.find(b'"', 2, 2 + _KIND_BYTES)
            kind = body[2:end] if end > 0 else b""
            most = kinds.get(kind)
            if most is None:
                raise WireError(f"unexpected {kind.decode(errors='replace')!r} frame")
            if len(body) > most:
                raise FrameTooLarge(len(body), most, kind.decode())
            canonical = True
        max_values = self._max_values
        # A value takes a byte at least: only a frame longer than the bound can hold more.
        if max_values is not None and len(body) > max_values:
            _count_values(body, max_values)
        try:
            text = body.decode()  # strict: the UTF-8 form of a surrogate is refused here
        except UnicodeDecodeError as exc:
            raise WireError(f"a frame is not UTF-8: {exc}") from None
        try:
            message = _loads(text)
        except ValueError as exc:
            raise WireError(f"a frame is not JSON: {exc}") from None
        except RecursionError:
            raise WireError("a frame is nested too deeply") from None
        # An escaped surrogate (\ud800-\udfff) is valid JSON, but alone it is no character:
        # look closer only where the text has one.
        if ("\\ud" in text or "\\uD" in text) and not _unicode(message):
            raise WireError("a frame holds a string that is not Unicode (a lone surrogate)")
        if type(message) is not list or not message or type(message[0]) is not str:
            raise WireError("a frame must be a JSON array starting with its kind")
        if kinds is not None and not canonical:
            raise WireError("a frame must be a JSON array starting with its kind")
        return message

    def _wait(self, seconds: float | None) -> None:
        """Set the socket's receive time-out: at most ``seconds`` (rounded down), or none."""
        if seconds is None:
            value = 0.0
        elif seconds > 0.02:
            value = math.floor(seconds * 100) / 100  # steady across calls: set once
        else:
            value = max(seconds, 1e-6)
        whole = int(value)
        self.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(whole, int((value - whole) * 1e6))
        )
        self._waiting = None if seconds is None else value

    def close(self) -> None:
        """Close the socket; a wait for it in an event loop ends (its next read fails)."""
        pending, self._pending = self._pending, None
        self.sock.close()
        if pending is not None:
            loop, future = pending
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                loop.call_soon_threadsafe(_set_done, future)


def _frame(message: list[Any], limit: int | None) -> bytes:
    """One frame of ``message``: its length and its JSON text.

    :raises FrameTooLarge: for a body over ``limit`` bytes.
    :raises WireError: for a message that is not JSON (or holds a string that is not Unicode).
    """
    try:
        body = _dumps(message).encode()
    except (TypeError, ValueError) as exc:
        raise WireError(f"cannot send: {exc}") from exc
    if limit is not None and len(body) > limit:
        kind = message[0] if message and type(message[0]) is str else None
        raise FrameTooLarge(len(body), limit, kind)
    return _HEADER.pack(len(body)) + body


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _count_values(body: bytes, most: int) -> None:
    """Refuse a frame holding more than ``most`` values, before it is parsed.

    Counts the commas and opening brackets: one for each array item or object
    member after the first, and one for each container. Where that is over the
    bound, the count is taken again outside string literals (a long text full
    of commas is one value).
    """
    count = body.count(b",") + body.count(b"[") + body.count(b"{")
    if count <= most:
        return
    bare = _STRING.sub(b"", body)
    count = bare.count(b",") + bare.count(b"[") + bare.count(b"{")
    if count > most:
        raise WireError(f"a frame holds more than {most} values")


def _unicode(message: object) -> bool:
    """Whether every string in a parsed frame is valid Unicode (no lone surrogate)."""
    try:
        _dumps(message).encode()
    except UnicodeEncodeError:
        return False
    return True
