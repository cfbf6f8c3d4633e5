"""The sandbox's far side: the zygote, and the worker each sandboxed plugin runs in.

The host starts one *zygote* per sandbox: ``python -I`` with a minimal
environment, which imports the SDK once and then only forks. Each fork
becomes one plugin's *worker*: a new session (so the host can kill it and
everything it started as one process group), standard streams on
``/dev/null``, every inherited descriptor closed but its channel, its working
directory in the plugin's folder, the operating-system layers of
:mod:`._confine` applied, an import guard and an audit hook installed, and only
then the plugin's code imported. Forking from a zygote that already imported
the SDK makes a worker start in a few milliseconds instead of the ~100 ms a
fresh interpreter needs, and its pages are shared with the zygote.

This module runs only in those processes; the host never imports plugin code.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import io
import logging
import os
import signal
import socket
import sys
import threading
import traceback
import types
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

import attrs
import pluggy
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .._context import CURRENT_CONTEXT, context_for
from .._manifest import Manifest
from .._markers import PROJECT_NAME
from .._payload_codec import to_wire
from .._sources._loader import check_code, import_plugin
from ..errors import PackageError, PluginError
from ..events import Context, normalise_routes
from . import _confine
from ._messages import (
    ApiCall,
    ApiRaise,
    ApiResult,
    Call,
    Failed,
    Fork,
    Forked,
    FromWorker,
    Hello,
    Log,
    Raise,
    Ready,
    Result,
    RouteCall,
    Status,
    Stop,
    Wait,
    read_from_host,
    read_zygote_request,
)
from ._wire import IGNORED_RESULT, Channel, WireError, decode, encode

__all__ = ["hidden_paths", "python_paths", "zygote_main"]

#: Modules every worker may import besides the standard library and the plugin's own.
SDK_MODULES: Final = frozenset(
    {
        "services_ai_plugins",
        "services_ai_plugins_testing",
        "attr",
        "attrs",
        "cattrs",
        "pluggy",
        "packaging",
        "importlib_metadata",
        "typing_extensions",
        "exceptiongroup",
        "zipp",
    }
)

#: How deep hook calls may nest (a hook whose API call fires a hook of the same plugin).
MAX_DEPTH: Final = 8

_CHANNEL_FD: Final = 3


def zygote_main(fd: int) -> NoReturn:
    """Serve the host on the socket ``fd``: fork workers, report their exit status.

    Requests are :class:`._messages.Fork` (with the worker's end of its channel),
    :class:`._messages.Wait` and :class:`._messages.Exit`; each answer (``Forked``,
    ``Status``) repeats the request's number, so the host matches answers to requests and
    drops a late one.
    """
    sock = socket.socket(fileno=fd)
    channel = Channel(sock)
    children: set[int] = set()
    capabilities = _confine.probe()
    channel.send(Hello(os.getpid(), attrs.asdict(capabilities, recurse=True)).to_frame())
    while True:
        fds: list[int] = []
        try:
            request = read_zygote_request(channel.receive(fds=fds))
        except (EOFError, OSError, WireError):
            break
        if isinstance(request, Fork):
            number, config = request.number, request.config
            pid = os.fork()
            if pid == 0:  # the worker: never returns into this loop
                try:
                    _worker_main(config, fds[0], capabilities, sock)
                finally:
                    os._exit(70)
            for received in fds:
                os.close(received)
            children.add(pid)
            channel.send(Forked(number, pid).to_frame())
        elif isinstance(request, Wait):
            pid = request.pid
            status = _reap(pid) if pid in children else None
            children.discard(pid)
            channel.send(Status(request.number, pid, status).to_frame())
        else:  # Exit
            break
    for pid in children:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        _reap(pid)
    os._exit(0)


def _reap(pid: int) -> int | None:
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None
    finally:  # its memory control group, however it ended (it may have been killed)
        _confine.release_worker(pid, _confine.probe())


# -- the worker ------------------------------------------------------------------------------------


def _worker_main(
    config: dict[str, Any], fd: int, capabilities: _confine.Capabilities, zygote: socket.socket
) -> NoReturn:
    os.setsid()
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGCHLD"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    zygote.close()
    if fd != _CHANNEL_FD:
        os.dup2(fd, _CHANNEL_FD)
        os.close(fd)
    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(null, std)
    os.closerange(_CHANNEL_FD + 1, 65536)
    channel = Channel(socket.socket(fileno=_CHANNEL_FD), limit=int(config["max_frame"]))
    # Where the plugin's declared dependencies are, when not where the SDK is.
    sys.path.extend(path for path in config.get("paths", ()) if path not in sys.path)
    worker = _WorkerLoop(channel, config)
    try:
        worker.start(capabilities)
    except BaseException as exc:  # noqa: BLE001 - reported to the host, then the worker ends
        with contextlib.suppress(OSError):
            failed = Failed(type(exc).__name__, str(exc), _plugin_traceback(exc))
            channel.send(failed.to_frame())
        os._exit(0)
    worker.serve()
    os._exit(0)


#: Why an async generator implementation is refused at load (as in the host's process).
ASYNC_REFUSAL: Final = (
    "async generator implementations are not supported: a hook returns one result; "
    "make it an async def that returns it (or a plain def)"
)


class _WorkerLoop:
    """One plugin, loaded in this process, answering the host's calls."""

    def __init__(self, channel: Channel, config: dict[str, Any]) -> None:
        self.channel = channel
        self.config = config
        self.plugin_id: str = config["plugin_id"]
        self.methods: frozenset[str] = frozenset(config["api_methods"])
        self.functions: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {}
        #: Route handlers returned by ``register_routes``, by the number the host knows them
        #: by, each with the injected names it takes besides the request (see _ROUTE_NAMES).
        self.handlers: list[tuple[Callable[..., Any], tuple[str, ...]]] = []
        self.send_lock = threading.Lock()
        self.calls: list[_Call] = []
        self.output = _Output(self, int(config["output_limit"]))

    def start(self, capabilities: _confine.Capabilities) -> None:
        scratch = Path(self.config["scratch"]) if self.config.get("scratch") else None
        # An entry-point plugin has no folder: it reads its code from site-packages.
        folder = Path(self.config["folder"] or self.config["scratch"])
        dependencies = [
            *_requirement_names(self.config["manifest"]),
            *self.config.get("distributions", ()),
        ]
        readable = [
            *(Path(p) for p in self.config["readable"]),
            *python_paths(self.config["modules"], dependencies),
        ]
        hidden = hidden_paths(readable)
        os.environ.clear()
        os.environ.update(self.config["env"])
        os.chdir(folder)
        sys.stdout = self.output.stream("stdout")
        sys.stderr = self.output.stream("stderr")
        root = logging.getLogger()
        root.handlers[:] = [_Forward(self)]
        root.setLevel(logging.DEBUG)
        _fill_import_caches(with_metadata=bool(dependencies))
        layers = _confine.confine(
            folder=folder,
            scratch=scratch,
            readable=readable,
            limits=_confine.Limits(**self.config["limits"]),
            capabilities=capabilities,
            hidden=hidden,
        )
        allowed = SDK_MODULES | frozenset(self.config["modules"])
        sys.meta_path.insert(0, _ImportGuard(self.plugin_id, allowed))
        _confine.install_audit_hook(
            folder=folder, scratch=scratch, readable=readable, hidden=hidden
        )
        plugin = self._import(folder)
        # A manager without specifications: it reads the implementations and their options
        # without judging them; the host checks them against its specifications, as for
        # a plugin in its own process.
        pm = pluggy.PluginManager(PROJECT_NAME)
        pm.register(plugin, name=self.plugin_id)
        hooks = []
        for caller in pm.get_hookcallers(plugin) or ():
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                if inspect.isasyncgenfunction(impl.function):  # the report has no place for it
                    raise PackageError(
                        f"its hooks are refused: {caller.name}: {ASYNC_REFUSAL}",
                        path=self.plugin_id,
                    )
                self.functions[caller.name] = (impl.function, tuple(impl.argnames))
                hooks.append(
                    {
                        "name": caller.name,
                        "argnames": list(impl.argnames),
                        "kwargnames": list(impl.kwargnames),
                        "tryfirst": impl.tryfirst,
                        "trylast": impl.trylast,
                        "optionalhook": impl.optionalhook,
                        "hookwrapper": impl.hookwrapper,
                        "wrapper": impl.wrapper,
                    }
                )
        notes = []
        ids = capabilities.worker_ids(os.getpid())
        if _confine.NO_CAPABILITIES in layers and ids is not None:
            blocked = _confine.unreadable_by(ids, [folder, *readable])
            notes.append(
                f"workers stay uid 0, without capabilities: {blocked} is not readable by "
                "the workers' users (other users: by its 'other' permission bits)"
            )
        applied = [*layers, "import_guard", "audit_hook"]
        self.output.flush()  # what it printed while imported, before it says it is ready
        self.send(Ready(os.getpid(), hooks, tuple(applied), notes))

    def _import(self, folder: Path) -> object:
        target = self.config.get("module")
        if target is None:
            expected = self.config.get("code_hash")
            # Confined, and no plugin code has run here yet: a change made after the host
            # checked the folder (before the fork) is caught now, before the import.
            if expected is not None:
                check_code(self.plugin_id, folder, expected)
            manifest = Manifest.from_dict(self.config["manifest"])
            try:
                return import_plugin(self.plugin_id, folder, manifest).plugin
            except PluginError as error:
                if error.__cause__ is not None:
                    raise error.__cause__ from None
                raise
        module = importlib.import_module(target)
        plugin: Any = module
        for part in (self.config.get("attribute") or "").split("."):
            if part:
                plugin = getattr(plugin, part)
        return plugin() if isinstance(plugin, type) else plugin

    def send(self, message: FromWorker) -> None:
        with self.send_lock:
            self.channel.send(message.to_frame())

    def serve(self) -> None:
        while True:
            try:
                message = read_from_host(self.channel.receive())
            except (EOFError, OSError):
                return
            if isinstance(message, (Call, RouteCall)):
                self.call(message)
            elif isinstance(message, Stop):
                return
            else:
                raise WireError(f"unexpected {message.KIND!r} frame from the host")

    def call(self, request: Call | RouteCall) -> None:
        """Run one hook implementation (or route handler) and send its result, or its exception.

        Every frame of the call carries its id.
        """
        call_id, wanted = request.call_id, request.wanted
        values = decode(request.arguments, trusted=True)
        hook = None
        if isinstance(request, RouteCall):
            function, argnames = self.handlers[request.handler]
        else:
            hook = request.hook
            function, argnames = self.functions[hook]
        if "settings" in values:
            values["settings"] = types.MappingProxyType(values["settings"])
        call = _Call(call_id, request.tenant, values.get("context"), threading.get_ident())
        if "api" in argnames:
            values["api"] = SandboxAPI(self, call)
        self.calls.append(call)
        # api.context, as in the host's process: set once per call, for its threads and tasks too.
        token = CURRENT_CONTEXT.set(call.context) if call.context is not None else None
        try:
            if hook is None:  # a route: the request, then what the handler names
                extra = {name: values.get(name) for name in argnames if name != "request"}
                result = function(values["request"], **extra)
            else:
                result = function(*[values[name] for name in argnames])
                if inspect.iscoroutine(result):  # an async def hook: run to its end here
                    result = _run_to_end(result)
            if hook == "register_routes" and result is not None:
                answer: Result | Raise = Result(call_id, {"$routes": self._routes(result)})
            else:
                answer = Result(call_id, _result(result, wanted))
        except BaseException as exc:  # noqa: BLE001 - the plugin's failure, sent to the host
            answer = Raise(
                call_id,
                type(exc).__name__,
                _text(str(exc)),
                _text(_plugin_traceback(exc)),
            )
        finally:
            if token is not None:
                CURRENT_CONTEXT.reset(token)
            self.calls.pop()
            self.output.flush()
        returned = isinstance(answer, Result)
        ignored = not wanted and returned
        try:
            with self.send_lock:
                limit = IGNORED_RESULT if ignored else int(self.config["max_frame"])
                self.channel.send(answer.to_frame(), limit=limit)
        except WireError as exc:  # nothing was sent: too big, or a string that is not Unicode
            if ignored:  # the host ignores it anyway: it gets None
                self.send(Result(call_id, None))
            else:
                what = "result" if returned else "exception"
                self.send(Raise(call_id, "WireError", f"the {what} cannot be sent: {exc}", ""))

    def _routes(self, returned: object) -> list[dict[str, Any]]:
        """Routes as data; their handlers stay here, called by number when a request comes."""
        routes = []
        for route in normalise_routes(self.plugin_id, returned):
            if route.native:
                raise TypeError(
                    f"route {route.name!r} is a (path, view, name) tuple: a framework-native view, "
                    "which takes the web framework's own request and can only run in the host's "
                    "process; a sandboxed plugin returns Route(path=..., handler=..., name=...) "
                    "whose handler takes an ApiRequest"
                )
            self.handlers.append((route.handler, _route_names(route.handler)))
            wire = to_wire(route)
            data = {"path": wire["path"], "name": wire["name"], "methods": wire["methods"]}
            routes.append({"route": data, "handler": len(self.handlers) - 1})
        return routes

    def api_call(
        self,
        call: _Call,
        method: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        *,
        thread: int | None = None,
    ) -> Any:
        """Ask the host to run an API method for the running call; serve nested calls meanwhile.

        ``thread``: the thread the request was made from, when another one waits for it
        (``api.ahttp_request`` waits in a thread, off the hook's event loop).
        """
        with call.lock:
            return self._api_call(call, method, args, kwargs, thread)

    async def api_call_async(
        self, call: _Call, method: str, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> Any:
        """:meth:`api_call` awaited in an async hook: the wait for the host's answer runs in
        a thread, so the hook's other tasks go on meanwhile."""
        return await asyncio.to_thread(
            self.api_call, call, method, args, kwargs, thread=threading.get_ident()
        )

    def _api_call(
        self,
        call: _Call,
        method: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        thread: int | None,
    ) -> Any:
        caller = threading.get_ident() if thread is None else thread
        if not self.calls or self.calls[-1] is not call or caller != call.thread:
            raise RuntimeError(
                f"api.{method}() can be used only during the hook call that received this api, "
                "from the thread running it"
            )
        self.send(ApiCall(call.id, method, encode(list(args)), encode(kwargs)))
        while True:
            message = read_from_host(self.channel.receive())
            if isinstance(message, (ApiResult, ApiRaise)) and message.call_id != call.id:
                raise WireError(f"the host answered api.{method}() of call {call.id} for another")
            if isinstance(message, ApiResult):
                return decode(message.value, trusted=True)
            if isinstance(message, ApiRaise):
                raise _rebuild(message.type_name, message.message, message.fields)
            if isinstance(message, (Call, RouteCall)) and len(self.calls) < MAX_DEPTH:
                self.call(message)
                continue
            raise WireError(f"unexpected {message.KIND!r} frame while waiting for api.{method}()")


#: What a route handler may take besides the request, by name, as hooks do.
_ROUTE_NAMES: Final = ("api", "settings", "context")


def _route_names(handler: Callable[..., Any]) -> tuple[str, ...]:
    """The injected names a route handler's signature takes (none when it cannot be read).

    The request is passed first, by position, whatever its parameter is named.
    """
    try:
        parameters = inspect.signature(handler).parameters
    except (TypeError, ValueError):
        return ()
    return tuple(
        name
        for name in _ROUTE_NAMES
        if name in parameters
        and parameters[name].kind
        in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    )


@attrs.define
class _Call:
    #: The host's number for the call, in every frame that belongs to it.
    id: int
    tenant: str | None
    context: Context | None
    thread: int
    #: Held for each of the call's API requests while it is with the host: an async hook's
    #: tasks may make requests from several threads (``api.ahttp_request`` waits in one),
    #: one at a time. (A call nested in a request has a lock of its own.)
    lock: threading.Lock = attrs.field(factory=threading.Lock, eq=False, repr=False)


class SandboxAPI:
    """A plugin's ``api`` in its worker: each method call is run by the host.

    The host checks the plugin's grants and scopes the call to the tenant of the
    hook call in progress; this object holds no grants, no services and no
    tenant it could change.
    """

    __slots__ = ("_call", "_worker", "logger")

    def __init__(self, worker: _WorkerLoop, call: _Call) -> None:
        self._worker = worker
        self._call = call
        #: The plugin's own logger; records go to the host's logger of the same name.
        self.logger = logging.getLogger(f"services_ai_plugins.plugins.{worker.plugin_id}")

    @property
    def plugin_id(self) -> str:
        """The calling plugin's id."""
        return self._worker.plugin_id

    @property
    def tenant(self) -> str | None:
        """The tenant this call is for."""
        return self._call.tenant

    @property
    def context(self) -> Context | None:
        """The hook call's context, during the call (None once it is over)."""
        return context_for(self._call.tenant)

    async def ahttp_request(self, method: str, url: str, **options: Any) -> Any:
        """``api.http_request`` for an ``async def`` hook: awaiting it leaves the hook's
        event loop free (see the host's :meth:`PluginAPI.ahttp_request`)."""
        if "http_request" not in self._worker.methods:
            raise AttributeError("'PluginAPI' object has no attribute 'ahttp_request'")
        return await self._worker.api_call_async(self._call, "http_request", (method, url), options)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or name not in self._worker.methods:
            raise AttributeError(f"'PluginAPI' object has no attribute {name!r}")
        worker, call = self._worker, self._call

        def method(*args: Any, **kwargs: Any) -> Any:
            return worker.api_call(call, name, args, kwargs)

        method.__name__ = name
        return method

    def __repr__(self) -> str:
        return f"PluginAPI(plugin_id={self.plugin_id!r}, tenant={self.tenant!r}) [sandboxed]"


class _PipeLoop(asyncio.SelectorEventLoop):
    """An event loop that wakes itself through a pipe, not a socket pair: a worker may make no
    sockets (its audit hook and seccomp filter refuse them), AF_UNIX ones included.

    asyncio's own loop makes a socket pair in ``_make_self_pipe``; these four methods are
    its self-pipe, the same on Python 3.10 to 3.13, with a pipe's two ends instead.
    """

    _read_end: int
    _write_end: int | None

    def _make_self_pipe(self) -> None:
        loop: Any = self
        self._read_end, self._write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        loop._internal_fds += 1
        loop._add_reader(self._read_end, self._read_from_self)

    def _close_self_pipe(self) -> None:
        loop: Any = self
        loop._remove_reader(self._read_end)
        write_end, self._write_end = self._write_end, None
        os.close(self._read_end)
        if write_end is not None:
            os.close(write_end)
        loop._internal_fds -= 1

    def _read_from_self(self) -> None:
        while True:
            try:
                if not os.read(self._read_end, 4096):
                    return
            except InterruptedError:
                continue
            except BlockingIOError:
                return

    def _write_to_self(self) -> None:
        # Called from other threads (a to_thread call ending), even while the loop closes.
        write_end = self._write_end
        if write_end is not None:
            with contextlib.suppress(OSError):
                os.write(write_end, b"\0")


def _run_to_end(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """An ``async def`` hook's coroutine, run to its end on an event loop of its own, in this
    thread (the one its API requests must come from), as ``asyncio.run`` does: the tasks it
    left are cancelled, its threads joined and the loop closed before the call returns.

    A call nested in an async hook's blocking API request finds that hook's loop running in
    this thread: it is set aside while the nested hook's own loop runs, and put back after.
    """
    running = asyncio._get_running_loop()
    asyncio._set_running_loop(None)
    loop = _PipeLoop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        try:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
            asyncio._set_running_loop(running)


def _rebuild(type_name: object, message: object, fields: object) -> BaseException:
    """The exception the host's API raised, as the same class where the SDK or builtins have it."""
    from .. import errors  # noqa: PLC0415 - loaded already; imported here for the lookup only

    text = str(message)
    name = str(type_name)
    found = getattr(errors, name, None) or getattr(builtins, name, None)
    cls: type[Exception] | None = (
        found if isinstance(found, type) and issubclass(found, Exception) else None
    )
    if cls is None:
        # The host's own exception class: one of the same name, which plugins catch as
        # RuntimeError (or Exception).
        cls = _FOREIGN.get(name)
        if cls is None:
            label = name if name.isidentifier() else "HostError"
            cls = _FOREIGN[name] = types.new_class(label, (RuntimeError,))
    exc = cls.__new__(cls)
    exc.args = (text,)
    if isinstance(fields, dict):
        for key, value in fields.items():
            if isinstance(key, str) and not key.startswith("_"):
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(exc, key, value)
    return exc


_FOREIGN: dict[str, type[Exception]] = {}


def _result(result: object, wanted: bool) -> Any:
    """The result as wire data; what cannot cross is None where the host ignores the result."""
    try:
        return encode(result)
    except WireError:
        if wanted:
            raise
        return None


def _text(text: str) -> str:
    """``text`` as valid Unicode: a lone surrogate (a file name's undecodable byte) escaped."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _plugin_traceback(exc: BaseException) -> str:
    """The traceback without this module's frames (the plugin author's frames only)."""
    frames = exc.__traceback__
    while frames is not None and frames.tb_frame.f_globals.get("__name__") == __name__:
        frames = frames.tb_next
    return "".join(traceback.format_exception(type(exc), exc, frames))


class _Output:
    """What the plugin prints, sent to the host's plugin logger in lines, capped per call."""

    def __init__(self, worker: _WorkerLoop, limit: int) -> None:
        self.worker = worker
        self.limit = limit
        self.used = 0
        self.dropped = 0
        self.streams: list[_Lines] = []

    def stream(self, name: str) -> io.TextIOWrapper:
        lines = _Lines(self, name)
        self.streams.append(lines)
        return io.TextIOWrapper(
            lines,  # type: ignore[arg-type]  # a raw stream: all a TextIOWrapper needs
            encoding="utf-8",
            errors="replace",
            write_through=True,
        )

    def emit(self, level: int, name: str, text: str) -> None:
        size = len(text)
        if self.used + size > self.limit:
            self.dropped += size
            return
        self.used += size
        with contextlib.suppress(OSError):
            self.worker.send(Log(level, _text(name[:100]), _text(text)))

    def flush(self) -> None:
        """End of a call: say what was dropped, and start counting again."""
        for lines in self.streams:
            if lines.pending:  # a line without its newline yet
                lines.end()
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            with contextlib.suppress(OSError):
                self.worker.send(
                    Log(logging.WARNING, "output", f"{dropped} characters of output dropped")
                )
        self.used = 0


class _Lines(io.RawIOBase):
    def __init__(self, output: _Output, name: str) -> None:
        self.output = output
        self.name_ = name
        self.level = logging.INFO if name == "stdout" else logging.WARNING
        self.pending = b""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        if self.output.used >= self.output.limit:
            self.output.dropped += len(chunk)
            return len(chunk)
        self.pending += chunk
        *lines, self.pending = self.pending.split(b"\n")
        if len(self.pending) > 4096:
            lines.append(self.pending)
            self.pending = b""
        for line in lines:
            self.output.emit(self.level, self.name_, line.decode("utf-8", "replace"))
        return len(chunk)

    def end(self) -> None:
        """Send what is left of a line (the call ended before its newline)."""
        rest, self.pending = self.pending, b""
        self.output.emit(self.level, self.name_, rest.decode("utf-8", "replace"))


class _Forward(logging.Handler):
    """Log records of the worker, sent to the host (formatted here, capped with the output)."""

    def __init__(self, worker: _WorkerLoop) -> None:
        super().__init__(logging.DEBUG)
        self.worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        except Exception:  # noqa: BLE001 - a bad log call must not fail the plugin
            text = str(record.msg)
        self.worker.output.emit(record.levelno, record.name, text)


#: Shared libraries and data an interpreter may need to read (extension modules' libraries, zones).
_SYSTEM_PATHS: Final = (
    "/usr/lib",
    "/usr/lib64",
    "/lib",
    "/lib64",
    "/usr/local/lib",
    "/usr/share/zoneinfo",
    "/etc/localtime",
)

#: The folders of installed distributions, as found inside a standard library's folder.
_SITE_FOLDERS: Final = ("site-packages", "dist-packages")
#: How the folders of Python installations among the system libraries are named.
_PYTHON_FOLDERS: Final = ("python", "pypy")


def python_paths(modules: Iterable[str] = (), distributions: Iterable[str] = ()) -> list[Path]:
    """What a worker may read to import: the standard library, the SDK, ``modules``, libraries.

    The standard library's folders (the ``site-packages`` inside them are
    among :func:`hidden_paths`); the folder (or file) of each module of the
    SDK (:data:`SDK_MODULES`) and of ``modules`` (the top-level modules of a
    plugin's declared dependencies), as this interpreter finds them; the
    ``.dist-info`` (or ``.egg-info``) folders and ``<name>.libs`` folders of
    their distributions and of ``distributions``; and the system libraries.
    Never a whole ``sys.path`` entry: ``site-packages``, or an application
    installed in editable mode (its ``.env``, its settings), holds much more.
    """
    found: dict[str, None] = dict.fromkeys(f for f in _stdlib_folders() if Path(f).exists())
    names = sorted(SDK_MODULES.union(modules))
    wanted = {canonicalize_name(name) for name in (*names, *distributions)}
    for name in names:
        if name not in sys.stdlib_module_names:
            found.update(dict.fromkeys(_module_locations(name)))
    for entry in _site_entries():
        found.update(dict.fromkeys(_distribution_files(entry, wanted)))
    for entry in _SYSTEM_PATHS:
        if Path(entry).exists():
            found[os.path.realpath(entry)] = None  # /lib is /usr/lib on most systems now
    return [Path(path) for path in found]


def hidden_paths(readable: Sequence[Path]) -> list[Path]:
    """Folders beneath ``readable`` paths that a worker must not read all the same.

    The ``site-packages`` (``dist-packages``) inside the standard library's
    folders, the Python folders among the system libraries (other than the
    standard library's: ``/usr/lib/python3`` holds a distribution's packages),
    and ``sys.path`` entries beneath a readable folder. The worker covers them
    (the readable paths beneath them stay); see :func:`._confine.confine`.
    """
    stdlib = _stdlib_folders()
    hidden: dict[str, None] = {}
    for folder in stdlib:
        for name in _SITE_FOLDERS:
            if Path(folder, name).is_dir():
                hidden[f"{folder}/{name}"] = None
    for root in dict.fromkeys(os.path.realpath(entry) for entry in _SYSTEM_PATHS):
        with contextlib.suppress(OSError), os.scandir(root) as children:
            for child in children:
                path = child.path
                if child.name.startswith(_PYTHON_FOLDERS) and not any(
                    folder == path or folder.startswith(path + "/") for folder in stdlib
                ):
                    hidden[path] = None
    roots = {str(path).rstrip("/") for path in readable}
    for entry in _site_entries():
        if entry not in roots and any(entry.startswith(root + "/") for root in roots):
            hidden[entry] = None
    return [Path(path) for path in hidden if path not in roots]


def _stdlib_folders() -> list[str]:
    """The standard library's folders: its own, ``lib-dynload``, its zip file when there is one."""
    own = os.path.dirname(os.__file__)  # noqa: PTH120 - a str, as sys.path's entries are
    folders = [own]
    for entry in sys.path:
        name = entry.rpartition("/")[2]
        if entry != own and (
            entry.startswith(own + "/")
            or name == "lib-dynload"
            or (name.startswith("python") and name.endswith(".zip"))
        ):
            folders.append(entry)
    return folders


def _site_entries() -> list[str]:
    """The folders of ``sys.path`` that are not the standard library's."""
    stdlib = _stdlib_folders()
    return [
        entry
        for entry in sys.path
        if entry and entry not in stdlib and not entry.endswith(".zip") and Path(entry).is_dir()
    ]


def _module_locations(name: str) -> list[str]:
    """Where top-level module ``name`` is: a package's folders, a module's file; [] if nowhere."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:  # a package (a namespace one may have several)
        return list(spec.submodule_search_locations)
    if spec.origin and os.path.isabs(spec.origin):  # noqa: PTH117 - not "built-in"/"frozen"
        return [spec.origin]
    return []


def _distribution_files(entry: str, wanted: Collection[str]) -> list[str]:
    """The metadata (``.dist-info``, ``.egg-info``) and ``.libs`` folders in ``entry`` of the
    distributions (and modules) named in ``wanted``."""
    found = []
    with contextlib.suppress(OSError), os.scandir(entry) as children:
        for child in children:
            stem, dot, suffix = child.name.rpartition(".")
            if dot and suffix in ("dist-info", "egg-info", "libs"):
                distribution = stem.partition("-")[0] if suffix != "libs" else stem
                if canonicalize_name(distribution) in wanted:
                    found.append(child.path)
    return found


def _requirement_names(manifest: Mapping[str, Any]) -> list[str]:
    """The distributions a manifest (as a dict) declares in ``dependencies``."""
    names = []
    for text in manifest.get("dependencies") or ():
        with contextlib.suppress(InvalidRequirement, TypeError):
            names.append(Requirement(str(text)).name)
    return names


def _fill_import_caches(*, with_metadata: bool) -> None:
    """Have the import system list ``sys.path``'s folders now, while the worker still may.

    Landlock lets a worker read the packages it may import but not list the
    folders holding them (``site-packages``); the finders keep what they
    listed until a folder changes. With ``with_metadata``, ``importlib.metadata``'s
    listings too (a dependency asking for its own version).
    """
    importlib.machinery.PathFinder.find_spec("services_ai_plugins_no_such_module")
    if with_metadata:
        from importlib import metadata  # noqa: PLC0415 - only for plugins with dependencies

        for _ in metadata.distributions(name="services-ai-plugins-no-such-distribution"):
            pass


class _ImportGuard(importlib.abc.MetaPathFinder):
    """Refuses top-level imports that are neither the standard library, the SDK nor declared.

    The standard library counts its private modules, which ``sys.stdlib_module_names``
    does not list (``_sysconfigdata_*``, ``_strptime``, ``_pydecimal``): a name starting
    with ``_`` that the standard library's own folders hold, and only those folders (not
    ``site-packages``), is imported from there.
    """

    def __init__(self, plugin_id: str, allowed: frozenset[str]) -> None:
        self.plugin_id = plugin_id
        self.allowed = set(allowed) | set(sys.stdlib_module_names) | set(sys.modules)
        self.stdlib = [
            folder
            for folder in _stdlib_folders()
            if not set(Path(folder).parts).intersection(_SITE_FOLDERS)
        ]

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        top = fullname.partition(".")[0]
        if top in self.allowed:
            return None
        if fullname == top and top.startswith("_"):
            # Looked for in the standard library's folders alone: a module of the same name
            # elsewhere on sys.path (site-packages) never passes for it.
            spec = importlib.machinery.PathFinder.find_spec(top, self.stdlib)
            if spec is not None:
                self.allowed.add(top)  # a package: its submodules follow
                return spec
        raise ModuleNotFoundError(
            f"plugin {self.plugin_id!r} may not import {fullname!r} in its sandbox: it is not "
            "in the standard library, the SDK, or the plugin's declared requirements",
            name=fullname,
        )


if __name__ == "__main__":  # pragma: no cover - how the host starts a zygote
    zygote_main(int(sys.argv[1]))
