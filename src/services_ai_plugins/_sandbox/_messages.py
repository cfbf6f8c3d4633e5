"""The messages that cross the sandbox's pipes: one typed record per kind.

A frame (see :mod:`._wire`) carries one message: a JSON array whose first item
names its kind. Both sides build messages as records and turn them into that
array with :meth:`to_frame`; both read an array back into a record with the
``read_*`` function of the conversation it belongs to, which is where every
shape check lives. A malformed frame from a worker is refused here with
:class:`WireError` (or, for the report a worker makes when it starts,
:class:`ValueError` saying what is wrong), before any other code looks at it.

Values inside a message (a call's arguments, a result, an API answer) stay in
their wire form (:func:`._wire.encode`); the code that uses them decodes them.

The records are slotted attrs classes, not frozen ones: each is built once and read
once, and a frozen class's guarded ``__init__`` would cost about a microsecond per
message on the call path (four messages per call with one API request).

The conversations:

=====================  ==============================================================
host → worker          :class:`Call`, :class:`RouteCall`, :class:`Stop`, and during a
                       call the answers to its API requests: :class:`ApiResult`,
                       :class:`ApiRaise` (:func:`read_from_host`)
worker → host, start   :class:`Log` while the plugin is imported, then :class:`Ready`
                       or :class:`Failed` (:func:`read_start`)
worker → host, call    :class:`Log`, :class:`ApiCall`, then :class:`Result` or
                       :class:`Raise` (:func:`read_during_call`)
host → zygote          :class:`Fork`, :class:`Wait`, :class:`Exit`
                       (:func:`read_zygote_request`)
zygote → host          :class:`Hello` once, then :class:`Forked` and :class:`Status`
                       (:func:`read_hello`, :func:`read_zygote_answer`)
=====================  ==============================================================
"""

from __future__ import annotations

import keyword
import logging
from typing import Any, ClassVar, Final, TypeAlias

import attrs

from ..errors import WireError

__all__ = [
    "HOOK_OPTIONS",
    "ApiCall",
    "ApiRaise",
    "ApiResult",
    "Call",
    "Exit",
    "Failed",
    "Fork",
    "Forked",
    "FromWorker",
    "Hello",
    "Log",
    "Raise",
    "Ready",
    "Result",
    "RouteCall",
    "Status",
    "Stop",
    "Unexpected",
    "Wait",
    "read_during_call",
    "read_from_host",
    "read_hello",
    "read_start",
    "read_zygote_answer",
    "read_zygote_request",
    "well_formed_hooks",
]

#: The options a worker reports of each implementation (pluggy's, all booleans).
HOOK_OPTIONS: Final = ("tryfirst", "trylast", "optionalhook", "hookwrapper", "wrapper")
_HOOK_FIELDS: Final = frozenset({"name", "argnames", *HOOK_OPTIONS})
#: The most implementations, arguments, layers and notes a worker's report may hold.
_MAX_HOOKS: Final = 512
_MAX_ARGS: Final = 64
_MAX_NOTES: Final = 16
_MAX_NOTE: Final = 2000
_READY_FIELDS: Final = frozenset({"pid", "hooks", "layers", "notes"})
#: The longest name of a logger a log line may carry (longer ones are cut).
_MAX_LOG_NAME: Final = 100


# -- host → worker --------------------------------------------------------------------------------


@attrs.define
class Call:
    """Run the implementation of ``hook`` with ``arguments`` (wire form, by name)."""

    KIND: ClassVar = "call"

    #: The host's number for the call, in every frame that belongs to it.
    call_id: int
    hook: str
    tenant: str | None
    arguments: Any
    #: Whether the host uses the result (a notify hook's is ignored).
    wanted: bool

    def to_frame(self) -> list[Any]:
        return ["call", self.call_id, self.hook, self.tenant, self.arguments, self.wanted]


@attrs.define
class RouteCall:
    """Serve a request with the route handler the worker knows by the number ``handler``."""

    KIND: ClassVar = "route"

    call_id: int
    handler: int
    tenant: str | None
    arguments: Any
    wanted: bool

    def to_frame(self) -> list[Any]:
        return ["route", self.call_id, self.handler, self.tenant, self.arguments, self.wanted]


@attrs.define
class Stop:
    """End the worker."""

    KIND: ClassVar = "stop"

    def to_frame(self) -> list[Any]:
        return ["stop"]


@attrs.define
class ApiResult:
    """What the host's API returned for the call's API request (wire form)."""

    KIND: ClassVar = "ok"

    call_id: int
    value: Any

    def to_frame(self) -> list[Any]:
        return ["ok", self.call_id, self.value]


@attrs.define
class ApiRaise:
    """The exception the host's API raised for the call's API request.

    ``fields``: the exception's public attributes of plain types (what a handler
    reads: ``PermissionDenied.permission``, ...).
    """

    KIND: ClassVar = "raise"

    call_id: int
    type_name: str
    message: str
    fields: dict[str, Any] = attrs.field(factory=dict)

    def to_frame(self) -> list[Any]:
        return ["raise", self.call_id, self.type_name, self.message, self.fields]


FromHost: TypeAlias = "Call | RouteCall | Stop | ApiResult | ApiRaise"


def read_from_host(frame: list[Any]) -> FromHost:
    """A frame of the host, read in the worker (the host wrote it: only its kind is judged).

    :raises WireError: for a kind the host never sends a worker.
    """
    kind = frame[0]
    size = len(frame)
    if kind == "call" and size == 6:
        _, call_id, hook, tenant, arguments, wanted = frame
        return Call(call_id, hook, tenant, arguments, wanted)
    if kind == "route" and size == 6:
        _, call_id, handler, tenant, arguments, wanted = frame
        return RouteCall(call_id, int(handler), tenant, arguments, wanted)
    if kind == "ok" and size == 3:
        return ApiResult(frame[1], frame[2])
    if kind == "raise" and size >= 4:
        fields = frame[4] if len(frame) > 4 else {}
        return ApiRaise(frame[1], str(frame[2]), str(frame[3]), fields)
    if kind == "stop":
        return Stop()
    raise WireError(f"unexpected {kind!r} frame from the host")


# -- worker → host ------------------------------------------------------------------------------


@attrs.define
class Log:
    """A line the plugin printed or logged, for its logger in the host."""

    KIND: ClassVar = "log"

    level: int
    #: The logger's name, or ``stdout``/``stderr`` for what the plugin printed.
    name: str
    text: str

    def to_frame(self) -> list[Any]:
        return ["log", self.level, self.name, self.text]

    @classmethod
    def read(cls, frame: list[Any]) -> Log:
        """From a frame of 4 items; what a worker put in them is made a level, a name, a text."""
        _, level, name, text = frame
        if type(level) is not int or not 0 < level <= logging.CRITICAL:
            level = logging.INFO
        return cls(level, str(name)[:_MAX_LOG_NAME], str(text))


@attrs.define
class ApiCall:
    """Run ``method`` of the plugin's API with ``args`` and ``kwargs`` (wire form)."""

    KIND: ClassVar = "api"

    call_id: int
    #: The method's name as the worker sent it (the host checks it names an API method).
    method: object
    args: Any
    kwargs: Any

    def to_frame(self) -> list[Any]:
        return ["api", self.call_id, self.method, self.args, self.kwargs]


@attrs.define
class Result:
    """What the call returned (wire form)."""

    KIND: ClassVar = "ok"

    call_id: int
    value: Any

    def to_frame(self) -> list[Any]:
        return ["ok", self.call_id, self.value]


@attrs.define
class Raise:
    """The exception the call raised: its class name, message and traceback (the plugin's)."""

    KIND: ClassVar = "raise"

    call_id: int
    type_name: str
    message: str
    traceback: str

    def to_frame(self) -> list[Any]:
        return ["raise", self.call_id, self.type_name, self.message, self.traceback]


DuringCall: TypeAlias = "Log | ApiCall | Result | Raise"
#: Every message a worker sends the host.
FromWorker: TypeAlias = "Log | ApiCall | Result | Raise | Ready | Failed"


def read_during_call(frame: list[Any], call_id: int) -> DuringCall:
    """A worker's frame while the call ``call_id`` runs, read strictly.

    The channel let only the kinds a call may bring (``log``, ``api``, ``ok``,
    ``raise``) through. Every frame but a log line carries the call's id.

    :raises WireError: for a frame of another call, or one that is malformed.
    """
    kind = frame[0]
    size = len(frame)
    if kind == "log" and size == 4:
        return Log.read(frame)
    if size > 1 and (type(frame[1]) is not int or frame[1] != call_id):
        raise WireError(
            f"a {kind!r} frame of call {frame[1]!r} came during call {call_id} "
            "(a thread left running by an earlier call?)"
        )
    if kind == "api" and size == 5:
        return ApiCall(call_id, frame[2], frame[3], frame[4])
    if kind == "ok" and size == 3:
        return Result(call_id, frame[2])
    if kind == "raise" and size == 5 and _texts(frame, 2):
        return Raise(call_id, frame[2], frame[3], frame[4])
    raise WireError(f"a malformed {kind!r} frame")


@attrs.define
class Ready:
    """The worker imported its plugin: its implementations, the layers applied, notes.

    ``hooks``: one record per implementation, of a plain name, its argument
    names (``argnames``; those with defaults, which the host never passes, in
    ``kwargnames``) and pluggy's boolean options.
    """

    KIND: ClassVar = "ready"

    pid: int
    hooks: list[dict[str, Any]]
    layers: tuple[str, ...]
    #: What the worker could not get, for the host's log (said once per sandbox).
    notes: list[str]

    def to_frame(self) -> list[Any]:
        info = {"pid": self.pid, "hooks": self.hooks, "layers": list(self.layers)}
        return ["ready", {**info, "notes": self.notes}]

    @classmethod
    def read(cls, frame: list[Any]) -> Ready:
        """A worker's ``ready`` frame, read strictly.

        :raises ValueError: saying what is wrong with it.
        """
        if len(frame) != 2 or type(frame[1]) is not dict:
            raise ValueError("its ready frame is not ['ready', {...}]")
        info = frame[1]
        if set(info) != _READY_FIELDS:
            raise ValueError(f"its ready frame has the fields {sorted(info)}")
        pid, layers, notes = info["pid"], info["layers"], info["notes"]
        if type(pid) is not int:
            raise ValueError("its pid is not a number")
        if type(layers) is not list or len(layers) > _MAX_HOOKS:
            raise ValueError("its layers are not a list")
        if type(notes) is not list or len(notes) > _MAX_NOTES:
            raise ValueError(f"its notes are not a list (of at most {_MAX_NOTES})")
        if not all(type(note) is str and len(note) <= _MAX_NOTE for note in notes):
            raise ValueError(f"a note is not a text of at most {_MAX_NOTE} characters")
        return cls(
            pid,
            well_formed_hooks(info["hooks"]),
            tuple(_name(layer, "layer") for layer in layers),
            notes,
        )


@attrs.define
class Failed:
    """The worker could not start: the exception's class name, message and traceback."""

    KIND: ClassVar = "failed"

    type_name: str
    message: str
    traceback: str

    def to_frame(self) -> list[Any]:
        return ["failed", self.type_name, self.message, self.traceback]


@attrs.define
class Unexpected:
    """A frame of another kind than the conversation expects (or malformed), by its kind.

    ``frame`` is kept for the message that names it.
    """

    kind: object
    frame: list[Any]


AtStart: TypeAlias = "Log | Ready | Failed | Unexpected"


def read_start(frame: list[Any]) -> AtStart:
    """A worker's frame while it starts: a log line, then its ready (or failed) report.

    :raises ValueError: for a ``ready`` frame that is malformed (see :meth:`Ready.read`).
    """
    kind = frame[0]
    size = len(frame)
    if kind == "log" and size == 4:
        return Log.read(frame)
    if kind == "ready":
        return Ready.read(frame)
    if kind == "failed" and size == 4 and _texts(frame, 1):
        return Failed(frame[1], frame[2], frame[3])
    return Unexpected(kind, frame)


# -- host ↔ zygote --------------------------------------------------------------------------------


@attrs.define
class Fork:
    """Fork a worker with ``config``; its channel's end travels with the frame."""

    KIND: ClassVar = "fork"

    #: The request's number: the answer repeats it.
    number: int
    config: dict[str, Any]

    def to_frame(self) -> list[Any]:
        return ["fork", self.number, self.config]


@attrs.define
class Wait:
    """Reap the (killed) worker ``pid``."""

    KIND: ClassVar = "wait"

    number: int
    pid: int

    def to_frame(self) -> list[Any]:
        return ["wait", self.number, self.pid]


@attrs.define
class Exit:
    """Kill the workers forked, and exit."""

    KIND: ClassVar = "exit"

    def to_frame(self) -> list[Any]:
        return ["exit"]


def read_zygote_request(frame: list[Any]) -> Fork | Wait | Exit:
    """A request of the host, read in the zygote (the host wrote it: only its kind is judged).

    Anything but a fork or a wait is the end.
    """
    kind = frame[0]
    if kind == "fork":
        return Fork(frame[1], frame[2])
    if kind == "wait":
        return Wait(frame[1], int(frame[2]))
    return Exit()


@attrs.define
class Hello:
    """The zygote started: its pid, and what this machine offers (``Capabilities`` as data)."""

    KIND: ClassVar = "hello"

    pid: int
    capabilities: dict[str, Any]

    def to_frame(self) -> list[Any]:
        return ["hello", {"pid": self.pid, "capabilities": self.capabilities}]


def read_hello(frame: list[Any]) -> Hello:
    """The zygote's first frame.

    :raises WireError: when it is not a ``hello`` frame with its pid and capabilities.
    """
    info = frame[1] if frame[0] == "hello" and len(frame) == 2 else None
    if type(info) is not dict or set(info) != {"pid", "capabilities"}:
        raise WireError(f"the zygote said {frame[0]!r} first, not hello")
    if type(info["pid"]) is not int or type(info["capabilities"]) is not dict:
        raise WireError("the zygote's hello is malformed")
    return Hello(info["pid"], info["capabilities"])


@attrs.define
class Forked:
    """The worker of the request ``number`` was forked: its pid."""

    KIND: ClassVar = "forked"

    number: int
    pid: int

    def to_frame(self) -> list[Any]:
        return ["forked", self.number, self.pid]


@attrs.define
class Status:
    """The worker ``pid`` was reaped: its wait status (None: it was none of the zygote's)."""

    KIND: ClassVar = "status"

    number: int
    pid: int
    status: int | None

    def to_frame(self) -> list[Any]:
        return ["status", self.number, self.pid, self.status]


def read_zygote_answer(frame: list[Any]) -> tuple[object, Forked | Status | Unexpected]:
    """An answer of the zygote: the number of the request it answers, and what it says.

    A ``forked`` answer needs a positive pid, a ``status`` answer an integer (or no)
    status; anything else is :class:`Unexpected`.
    """
    kind = frame[0]
    size = len(frame)
    number = frame[1] if size > 1 else None
    if kind == "forked" and size == 3 and type(frame[2]) is int and frame[2] > 0:
        return number, Forked(frame[1], frame[2])
    if kind == "status" and size == 4 and (frame[3] is None or type(frame[3]) is int):
        return number, Status(frame[1], frame[2], frame[3])
    return number, Unexpected(kind, frame)


# -- the implementations a worker reports -------------------------------------------------------


def _texts(frame: list[Any], start: int) -> bool:
    return all(type(value) is str for value in frame[start:])


def _name(value: object, what: str) -> str:
    """``value`` if it is a plain name: ASCII, an identifier, no keyword, no leading ``_``.

    ASCII only: Python folds other identifiers (NFKC), so a name could be one
    thing in a report and another in the code made from it.
    """
    if (
        type(value) is not str
        or not value.isascii()
        or not value.isidentifier()
        or keyword.iskeyword(value)
        or value.startswith("_")
    ):
        raise ValueError(f"{what} {value!r} is not a plain ASCII name")
    return value


def well_formed_hooks(hooks: object) -> list[dict[str, Any]]:
    """The implementations a worker reported, checked strictly (``ValueError`` says what is wrong).

    Each is a record of exactly a plain name, distinct plain argument names
    (and those with defaults, ``kwargnames``, which the host never passes) and
    boolean options; no name twice. Whether the hooks and arguments are
    specified is the host's question (against its specifications).
    """
    if type(hooks) is not list:
        raise ValueError("its implementations are not a list")
    if len(hooks) > _MAX_HOOKS:
        raise ValueError(f"it reported {len(hooks)} implementations (at most {_MAX_HOOKS})")
    checked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, hook in enumerate(hooks):
        if type(hook) is not dict or set(hook) - {"kwargnames"} != _HOOK_FIELDS:
            raise ValueError(f"implementation {index} is not a record of name, argnames, options")
        name = _name(hook["name"], "hook name")
        if name in seen:
            raise ValueError(f"hook {name!r} is reported twice")
        seen.add(name)
        options = {option: hook[option] for option in HOOK_OPTIONS}
        if not all(type(value) is bool for value in options.values()):
            raise ValueError(f"{name}: its options must be true or false")
        names = _names(hook["argnames"], name)
        defaults = _names(hook.get("kwargnames", []), name)
        if len(set(names + defaults)) != len(names) + len(defaults):
            raise ValueError(f"{name}: an argument name is repeated")
        checked.append({"name": name, "argnames": names, "kwargnames": defaults, **options})
    return checked


def _names(argnames: object, hook: str) -> list[str]:
    if type(argnames) is not list or len(argnames) > _MAX_ARGS:
        raise ValueError(f"{hook}: its argument names are not a list (of at most {_MAX_ARGS})")
    return [_name(arg, f"{hook}: argument") for arg in argnames]
