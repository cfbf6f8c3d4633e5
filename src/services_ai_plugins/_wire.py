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

Both directions decode strictly: a payload must pass :func:`from_wire`, and
anything else (a NaN, an unknown tag, a class instance) is refused with
:class:`WireError`. Nothing is ever unpickled: a hostile worker can send the
host only data.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import socket
import struct
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from time import monotonic
from typing import Any, Final, cast

from ._errors import PluginError
from .events import PAYLOAD_TYPES, Route, _converter, _from_host, from_wire

__all__ = ["MAX_FRAME", "Channel", "WireError", "decode", "encode"]

#: The largest frame accepted by default (16 MiB).
MAX_FRAME: Final = 16 * 2**20

_HEADER: Final = struct.Struct(">I")
#: A peer that died makes sending fail with EPIPE, never a SIGPIPE (where the system can say so).
_NO_SIGNAL: Final = getattr(socket, "MSG_NOSIGNAL", 0)
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
_loads: Final = json.loads


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
_TAGS: Final = frozenset({"$r", "$t", "$d", *_SCALARS})


class WireError(PluginError):
    """A value or a frame that cannot cross the sandbox boundary (named, with what is wrong)."""


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


class Channel:
    """Frames over a connected stream socket: :meth:`send` and :meth:`receive`.

    ``receive`` waits up to ``timeout`` seconds (None: forever) and raises
    :class:`TimeoutError` when that passes, :class:`EOFError` when the other
    side closed, and :class:`WireError` for a frame that is too large or not
    JSON.
    """

    __slots__ = ("_buffer", "_chunk", "_limit", "_view", "_waiting", "sock")

    def __init__(self, sock: socket.socket, *, limit: int = MAX_FRAME) -> None:
        self.sock: Final = sock
        self._limit = limit
        self._buffer = bytearray()
        self._chunk = bytearray(_CHUNK)
        self._view = memoryview(self._chunk)
        # The socket stays blocking; a receive's time limit is the kernel's (SO_RCVTIMEO),
        # changed only when it must be: no extra system call per frame.
        sock.settimeout(None)
        #: The receive time-out set on the socket, in seconds (None: none).
        self._waiting: float | None = None

    def send(self, message: list[Any], *, fds: Sequence[int] = ()) -> None:
        """Write one frame (the message must already be encoded), passing ``fds`` along."""
        try:
            body = _dumps(message).encode()
        except (TypeError, ValueError) as exc:
            raise WireError(f"cannot send: {exc}") from exc
        frame = _HEADER.pack(len(body)) + body
        if fds:
            sent = socket.send_fds(self.sock, [frame], list(fds))
            frame = frame[sent:]
        if frame:
            self.sock.sendall(frame, _NO_SIGNAL)

    def receive(self, timeout: float | None = None, *, fds: list[int] | None = None) -> list[Any]:
        """Read one frame; descriptors passed along are appended to ``fds``.

        See the class docstring for the errors.
        """
        buffer = self._buffer
        sock = self.sock
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            if len(buffer) >= 4:
                (size,) = _HEADER.unpack_from(buffer)
                if size > self._limit:
                    raise WireError(f"a frame of {size} bytes is over the limit of {self._limit}")
                if len(buffer) >= 4 + size:
                    body = bytes(buffer[4 : 4 + size])
                    del buffer[: 4 + size]
                    try:
                        message = _loads(body)
                    except ValueError as exc:
                        raise WireError(f"a frame is not JSON: {exc}") from None
                    except RecursionError:
                        raise WireError("a frame is nested too deeply") from None
                    if type(message) is not list or not message or type(message[0]) is not str:
                        raise WireError("a frame must be a JSON array starting with its kind")
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
        self.sock.close()
