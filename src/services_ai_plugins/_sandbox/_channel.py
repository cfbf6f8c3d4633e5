"""The host side of one worker's channel: its calls, their deadlines, and what it reports.

A :class:`WorkerProcess` is one live worker process. It sends a call, serves the
API requests the worker makes meanwhile (on the plugin's real :class:`PluginAPI`,
so grants are never decided in the worker), passes on what the plugin printed or
logged up to the policy's limit, and reads the answer, all by the call's deadline.
A worker that overruns is killed with its whole process group; one that dies is
reaped and its cause recorded. A call's steps are one generator
(:meth:`WorkerProcess._steps`), driven in a thread (:meth:`WorkerProcess.call`)
or awaited in an event loop that it never blocks (:meth:`WorkerProcess.acall`).
The handlers of a plugin's routes are :class:`SandboxedRoute` objects. Every frame
is read into its record by :mod:`._messages`; the implementations a worker reports
are held against the host's specifications here (:func:`judged`), and kept per code
hash (:func:`read_hooks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from time import monotonic
from typing import Any, Final, Protocol

from .._egress import call_deadline
from .._logs import OUTPUT_ATTRIBUTE
from ..errors import (
    PackageError,
    RemoteError,
    SandboxError,
    SandboxTimeout,
    WorkerCrashed,
)
from ..events import ApiRequest, ApiResponse, Route
from ._messages import (
    ApiCall,
    ApiRaise,
    ApiResult,
    Call,
    Failed,
    Log,
    Raise,
    Ready,
    Result,
    RouteCall,
    Stop,
    Unexpected,
    read_during_call,
    read_start,
    well_formed_hooks,
)
from ._policy import SandboxPolicy
from ._wire import IGNORED_RESULT, Channel, FrameTooLarge, WireError, decode, encode

_logger = logging.getLogger("services_ai_plugins.sandbox")

#: How deep hook calls may nest through one worker (a hook whose API call fires a hook).
MAX_DEPTH: Final = 8
#: The ids of hook calls, unique in the host: every frame of a call carries its id.
_CALL_IDS: Final = itertools.count(1)

#: One step of a call, for its driver to do: ``("send", message, deadline, limit)``,
#: ``("receive", deadline, limit, kinds)``, ``("api", api, request, number)``, ``("end", killed)``.
Step = tuple[Any, ...]


class WorkerOwner(Protocol):
    """What a worker process needs of the plugin it serves (the stand-in's side)."""

    @property
    def plugin_id(self) -> str: ...

    def evict(self, worker: WorkerProcess) -> bool:
        """Take ``worker`` out of the plugin's pool if it is idle (the sandbox's bound)."""

    @property
    def api_methods(self) -> frozenset[str]:
        """The names of the API methods a worker may ask the host to run."""

    @property
    def host_closed(self) -> bool:
        """Whether the host is closing (a call cut short then fails as such)."""

    def route(
        self,
        name: str,
        path: str,
        request: ApiRequest,
        *,
        api: Any,
        settings: Mapping[str, Any] | None,
        context: Any,
    ) -> ApiResponse:
        """Serve ``request`` with the route ``name`` in a worker of its tenant."""

    async def aroute(
        self,
        name: str,
        path: str,
        request: ApiRequest,
        *,
        api: Any,
        settings: Mapping[str, Any] | None,
        context: Any,
    ) -> ApiResponse:
        """:meth:`route` from an event loop, which it never blocks."""


class SandboxedRoute:
    """The handler of a sandboxed plugin's route, as the host holds it (``Route.handler``).

    Calling it serves the request in a worker of the request's tenant (the
    handler runs there); ``aio`` does the same from an event loop without
    blocking it. The host passes the tenant-bound ``api`` (the worker's API
    requests during the call are run on it), the plugin's ``settings`` and the
    ``context``; the worker hands the handler those its signature names.
    """

    __slots__ = ("_owner", "name", "path", "plugin_id")

    def __init__(self, owner: WorkerOwner, name: str, path: str) -> None:
        self._owner = owner
        #: The plugin whose route it is.
        self.plugin_id: Final = owner.plugin_id
        #: The route's name and path, as the plugin returned them.
        self.name: Final = name
        self.path: Final = path

    def __call__(
        self,
        request: ApiRequest,
        *,
        api: Any = None,
        settings: Mapping[str, Any] | None = None,
        context: Any = None,
    ) -> ApiResponse:
        """The plugin's response to ``request``.

        :raises SandboxError: (and its subclasses) as a hook call of the plugin would.
        :raises WorkerBusy: when no worker of the tenant is free within ``wait_timeout``.
        """
        return self._owner.route(
            self.name, self.path, request, api=api, settings=settings, context=context
        )

    async def aio(
        self,
        request: ApiRequest,
        *,
        api: Any = None,
        settings: Mapping[str, Any] | None = None,
        context: Any = None,
    ) -> ApiResponse:
        """:meth:`__call__`, awaited: the event loop is never blocked."""
        return await self._owner.aroute(
            self.name, self.path, request, api=api, settings=settings, context=context
        )

    def __repr__(self) -> str:
        return f"<sandboxed route {self.name!r} ({self.path}) of plugin {self.plugin_id!r}>"


class Reaper(Protocol):
    """What reaps a worker once it is killed: the zygote that forked it."""

    def wait(self, pid: int) -> int | None:
        """The wait status of the killed worker ``pid`` (None: unknown)."""


class WorkerProcess:
    """One live worker process and its channel."""

    #: The deadline of the call in progress (None: none): a nested call ends no later.
    _deadline: float | None = None

    def __init__(  # noqa: PLR0917 - private; made by the stand-in's _spawn() only
        self,
        owner: WorkerOwner,
        tenant: str | None,
        zygote: Reaper,
        pid: int,
        channel: Channel,
        policy: SandboxPolicy,
    ) -> None:
        self.owner = owner
        self.plugin_id = owner.plugin_id
        #: The tenant whose calls it serves (None: the hooks bound to no tenant).
        self.tenant = tenant
        #: The numbers it knows the plugin's route handlers by, by route name (None: not built).
        self.route_numbers: dict[str, int] | None = None
        self.zygote = zygote
        self.pid = pid
        self.channel = channel
        self.policy = policy
        self.started = self.last_used = monotonic()
        self.start_time = 0.0
        self.calls = 0
        #: Calls in progress (nested ones included), and how many of them wait for the host
        #: to serve an API request: a nested call may come only when the two are equal.
        self.depth = 0
        self.serving = 0
        self.dead = False
        self.hooks: list[dict[str, Any]] = []
        self.layers: tuple[str, ...] = ()
        self.scratch: str | None = None
        self.logger = logging.getLogger(f"services_ai_plugins.plugins.{owner.plugin_id}")

    def _until_ready(self, deadline: float) -> Ready | Failed | Unexpected:
        """The first message after what the plugin printed or logged while it was imported.

        :raises ValueError: for a ``ready`` report that is malformed.
        """
        output = _OutputRelay(self)
        try:
            while True:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    raise TimeoutError
                message = read_start(self.channel.receive(remaining))
                if not isinstance(message, Log):
                    return message
                output.log(message)
        finally:
            output.report("while importing")

    def call(
        self,
        target: str | int,
        tenant: str | None,
        arguments: Any,
        *,
        wanted: bool,
        what: str,
        api: Any,
        timeout: float,
    ) -> Any:
        """Send one call and serve the worker until it answers (see :meth:`_steps`).

        This thread waits on the channel, within the call's deadline.
        """
        steps = self._steps(
            target, tenant, arguments, wanted=wanted, what=what, api=api, timeout=timeout
        )
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as stop:
                return stop.value
            value = error = None
            try:
                value = self._step(step)
            except BaseException as exc:  # noqa: BLE001 - thrown into the steps, which decide
                error = exc

    async def acall(
        self,
        target: str | int,
        tenant: str | None,
        arguments: Any,
        *,
        wanted: bool,
        what: str,
        api: Any,
        timeout: float,
    ) -> Any:
        """:meth:`call` from an event loop, which it never blocks.

        The same steps: the frames are sent and received with the loop's
        non-blocking I/O (:meth:`Channel.asend`, :meth:`Channel.areceive`) by the
        call's deadline; the worker's API requests run in a thread (the app's
        services may block), in a copy of this context (a hook they fire finds
        this worker); stopping and reaping the worker runs in a thread too. A
        cancelled call kills the worker (its channel is out of step) and reaps it
        in a thread.
        """
        steps = self._steps(
            target, tenant, arguments, wanted=wanted, what=what, api=api, timeout=timeout
        )
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as stop:
                return stop.value
            value = error = None
            try:
                value = await self._astep(step)
            except asyncio.CancelledError:
                self._abandon()
                steps.close()
                raise
            except Exception as exc:  # noqa: BLE001 - thrown into the steps, which decide
                error = exc

    def _step(self, step: Step) -> Any:
        """Do one step of a call in this thread."""
        kind = step[0]
        if kind == "receive":
            _, deadline, limit, kinds = step
            return self.channel.receive(deadline - monotonic(), limit=limit, kinds=kinds)
        if kind == "send":
            _, message, deadline, limit = step
            return self.channel.send(message, timeout=deadline - monotonic(), limit=limit)
        if kind == "api":
            return self._serve_api(*step[1:])
        return self._end(killed=step[1])

    async def _astep(self, step: Step) -> Any:
        """Do one step of a call in the running event loop, without blocking it."""
        kind = step[0]
        if kind == "receive":
            _, deadline, limit, kinds = step
            return await self.channel.areceive(deadline - monotonic(), limit=limit, kinds=kinds)
        if kind == "send":
            _, message, deadline, limit = step
            return await self.channel.asend(message, timeout=deadline - monotonic(), limit=limit)
        if kind == "api":  # to_thread runs it in a copy of this context
            return await asyncio.to_thread(self._serve_api, *step[1:])
        return await asyncio.to_thread(functools.partial(self._end, killed=step[1]))

    def _steps(  # noqa: PLR0915 - one loop serving every frame a call may bring
        self,
        target: str | int,
        tenant: str | None,
        arguments: Any,
        *,
        wanted: bool,
        what: str,
        api: Any,
        timeout: float,
    ) -> Generator[Step, Any, Any]:
        """One call, as the steps a driver does (:meth:`call` in a thread, :meth:`acall` in a loop).

        ``target``: the hook's name (a :class:`Call`), or the number the worker knows a route
        handler by (a :class:`RouteCall`); ``arguments`` in wire form; ``wanted``: whether the
        host uses the result. The call gets a new id; the worker's API requests and answer
        must carry it. Every send and receive ends by the call's deadline (a nested call's is
        no later than the call it is nested in). Each step is yielded (``("send", message,
        deadline, limit)``, ``("receive", deadline, limit, kinds)``, ``("api", api, request,
        number)``, ``("end", killed)``); the driver sends back its outcome, or throws in
        what it raised: the frame rules and what each failure means are decided here once.
        """
        hook = target if type(target) is str else what
        if self.depth >= MAX_DEPTH:
            raise SandboxError(
                self.plugin_id, f"{what}: hook calls nested more than {MAX_DEPTH} deep"
            )
        deadline = monotonic() + timeout
        outer = self._deadline
        if outer is not None and outer < deadline:
            deadline = outer
        call_id = next(_CALL_IDS)
        policy = self.policy
        kinds = _frame_kinds(policy.max_frame, policy.output_limit, wanted)
        budget = policy.max_call_bytes
        self.depth += 1
        self.calls += 1
        self._deadline = deadline
        requests = spent = 0
        output = _OutputRelay(self)
        try:
            try:
                request = (
                    Call(call_id, target, tenant, arguments, wanted)
                    if type(target) is str
                    else RouteCall(call_id, int(target), tenant, arguments, wanted)
                )
                yield ("send", request.to_frame(), deadline, None)
            except WireError as exc:  # nothing was written: a string that is not Unicode
                raise SandboxError(
                    self.plugin_id, f"cannot send the arguments of {what}: {exc}"
                ) from None
            while True:
                message = yield ("receive", deadline, budget - spent, kinds)
                spent += self.channel.last_size
                answer = read_during_call(message, call_id)
                if isinstance(answer, Log):
                    output.log(answer)
                    continue
                if isinstance(answer, ApiCall):
                    requests += 1
                    self.serving += 1
                    try:
                        reply = yield ("api", api, answer, requests)
                    finally:
                        self.serving -= 1
                    spent += yield from self._answer(reply, deadline, budget - spent)
                    continue
                if isinstance(answer, Result):
                    value = answer.value
                    try:
                        if target == "register_routes" and isinstance(value, dict):
                            return self._routes(value.get("$routes"))
                        return decode(value)
                    except WireError as exc:
                        raise SandboxError(
                            self.plugin_id, f"{what} returned a value the host refuses: {exc}"
                        ) from None
                raise RemoteError(
                    self.plugin_id, answer.type_name, answer.message, answer.traceback
                )
        except TimeoutError:
            yield ("end", True)
            raise SandboxTimeout(self.plugin_id, hook, timeout) from None
        except WireError as exc:
            yield ("end", True)
            if (
                isinstance(exc, FrameTooLarge)
                and exc.kind is None
                and exc.size <= policy.max_frame
                and spent + exc.size > budget
            ):
                raise SandboxError(
                    self.plugin_id,
                    f"{what}: its worker went over the call's budget of {budget} bytes "
                    f"(a frame of {exc.size} bytes after {spent}); it was stopped",
                ) from None
            raise SandboxError(
                self.plugin_id, f"{what}: its worker broke the protocol: {exc}"
            ) from None
        except (EOFError, OSError):
            if self.owner.host_closed:
                yield ("end", True)
                raise SandboxError(self.plugin_id, f"{what}: the host closed") from None
            if self.dead and monotonic() >= deadline:  # a nested call ran out of time
                raise SandboxTimeout(self.plugin_id, hook, timeout) from None
            cause = yield ("end", False)
            raise WorkerCrashed(self.plugin_id, hook, cause) from None
        finally:
            self.depth -= 1
            self._deadline = outer
            output.report("in this call")

    def _routes(self, routes: object) -> list[Route]:
        """The plugin's routes, each handler a proxy that serves the request in this worker."""
        if type(routes) is not list:
            raise WireError("register_routes: expected a list of routes")
        built = []
        for item in routes:
            if type(item) is not dict or type(item.get("handler")) is not int:
                raise WireError("register_routes: malformed route")
            data = item.get("route")
            if type(data) is not dict or set(data) != {"path", "name", "methods"}:
                raise WireError("register_routes: a route must have path, name and methods")
            methods = data["methods"]
            try:
                route = Route(
                    path=data["path"],
                    name=data["name"],
                    methods=tuple(methods) if type(methods) is list else methods,
                    handler=SandboxedRoute(self.owner, data["name"], str(data["path"])),
                )
            except (TypeError, ValueError) as exc:
                raise WireError(f"register_routes: {exc}") from None
            built.append(route)
        numbers = {route.name: item["handler"] for route, item in zip(built, routes, strict=True)}
        if len(numbers) != len(built):
            raise WireError("register_routes: two routes have the same name")
        self.route_numbers = numbers  # only once the whole answer is valid
        return built

    def _serve_api(self, api: Any, request: ApiCall, number: int) -> ApiResult | ApiRaise:
        """Run the call's ``number``-th API request on the plugin's real API; the answer."""
        call_id, method = request.call_id, request.method
        if api is None or type(method) is not str or method not in self.owner.api_methods:
            error = f"'PluginAPI' object has no attribute {method!r}"
            return ApiRaise(call_id, "AttributeError", error)
        if number > self.policy.max_api_calls:
            error = (
                f"plugin {self.plugin_id!r}: api.{method}() refused: one hook call may make "
                f"{self.policy.max_api_calls} API requests (SandboxPolicy.max_api_calls)"
            )
            return ApiRaise(call_id, "SandboxError", error, {"plugin_id": self.plugin_id})
        try:
            positional = decode(request.args)
            named = decode(request.kwargs)
            if type(positional) is not list or type(named) is not dict:
                raise WireError("api arguments must be a list and an object")
            with call_deadline(self._deadline):  # http_request ends before the call must
                answer = getattr(api, method)(*positional, **named)
            return ApiResult(call_id, encode(answer))
        except Exception as exc:  # noqa: BLE001 - the plugin's call failed: it gets the error
            fields = {  # what a handler reads: PermissionDenied.permission, ...
                key: value
                for key, value in vars(exc).items()
                if not key.startswith("_") and type(value) in (str, int, float, bool)
            }
            return ApiRaise(call_id, type(exc).__name__, str(exc), fields)

    def _answer(
        self, reply: ApiResult | ApiRaise, deadline: float, room: int
    ) -> Generator[Step, Any, int]:
        """The steps sending an API answer by the call's deadline; the bytes sent.

        An answer over what is left of the call's byte budget (``room``), or one that cannot
        be written, is not sent: the API call raises the reason in the worker instead.
        """
        if self.dead:  # a nested call stopped it: the next receive says how
            raise EOFError
        try:
            sent: int = yield ("send", reply.to_frame(), deadline, room)
        except FrameTooLarge as exc:
            error = (
                f"plugin {self.plugin_id!r}: an API answer of {exc.size} bytes is over what is "
                f"left of the call's budget of {self.policy.max_call_bytes} bytes "
                "(SandboxPolicy.max_call_bytes)"
            )
            substitute = ApiRaise(
                reply.call_id, "SandboxError", error, {"plugin_id": self.plugin_id}
            )
        except WireError as exc:  # nothing was written: a string that is not Unicode
            substitute = ApiRaise(reply.call_id, "WireError", str(exc))
        else:
            return sent
        sent = yield ("send", substitute.to_frame(), deadline, None)
        return sent

    def _log(self, line: Log) -> None:
        source, text = line.name, line.text
        extra = None
        if source in ("stdout", "stderr"):  # printed: marked, for commands that show it
            extra = {OUTPUT_ATTRIBUTE: source, "output_text": text}
        self.logger.log(line.level, "[%s] %s", source, text, extra=extra)

    def stop(self) -> None:
        """Ask it to stop; kill it (and its process group) if it does not at once.

        Waits 0.2 s at most for each of the stop frame and the worker's end.
        """
        if self.dead:
            return
        try:
            self.channel.send(Stop().to_frame(), timeout=0.2)
            self.channel.receive(0.2, limit=0, kinds={})  # nothing comes but the end
        except (TimeoutError, EOFError, OSError, WireError):
            pass
        self._end(killed=True)

    def _interrupt(self) -> None:
        """Make a call blocked on this worker's channel fail at once (the host is closing)."""
        if not self.dead:
            with contextlib.suppress(OSError):
                self.channel.sock.shutdown(socket.SHUT_RDWR)

    def _end(self, *, killed: bool = False) -> str:
        """Kill what is left of it, reap it, and say how it ended."""
        if self.dead:
            return "stopped"
        self._kill()
        return self._reap(killed=killed)

    def _kill(self) -> None:
        self.dead = True
        kill_group(self.pid)
        self.channel.close()

    def _reap(self, *, killed: bool) -> str:
        status = self.zygote.wait(self.pid)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return _describe(status, killed=killed)

    def _abandon(self) -> None:
        """A call on the event loop was cancelled midway: kill the worker now, reap it in a
        thread (its channel is out of step; the next call starts a new one)."""
        if self.dead:
            return
        self._kill()
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, functools.partial(self._reap, killed=True))


class _OutputRelay:
    """What a worker printed or logged, passed to its plugin's logger up to ``output_limit``
    characters (one call's, or its import's); the rest is dropped and counted."""

    __slots__ = ("dropped", "used", "worker")

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.used = self.dropped = 0

    def log(self, line: Log) -> None:
        """Pass on one line, or count it as dropped."""
        size = len(line.text)
        if self.used + size > self.worker.policy.output_limit:
            self.dropped += size
        else:
            self.used += size
            self.worker._log(line)

    def report(self, when: str) -> None:
        """Say how much was dropped, if anything was."""
        if self.dropped:
            self.worker.logger.warning(
                "%d characters of output dropped %s (over %d)",
                self.dropped,
                when,
                self.worker.policy.output_limit,
            )


@functools.lru_cache(maxsize=8)
def _frame_kinds(max_frame: int, output_limit: int, wanted: bool) -> Mapping[bytes, int]:
    """The frames a worker may send during a call, each with its largest body in bytes."""
    return {
        Result.KIND.encode(): max_frame if wanted else IGNORED_RESULT,
        Raise.KIND.encode(): max_frame,
        ApiCall.KIND.encode(): max_frame,
        # At most output_limit characters, each at most 8 bytes in JSON (an escaped surrogate).
        Log.KIND.encode(): min(max_frame, 8 * output_limit + 1024),
    }


SpecArgs = Callable[[str], Sequence[str] | None]


def judged(
    plugin_id: str, hooks: list[dict[str, Any]], spec_args: SpecArgs
) -> list[dict[str, Any]]:
    """Well-formed implementations held against the specifications: exact hook names only.

    Implementations of hooks nobody specified are refused, except optional
    ones (``optionalhook``), which are left out: nothing could call them.

    :raises PackageError: naming every refused hook and argument.
    """
    problems, kept = [], []
    for hook in hooks:
        name = hook["name"]
        spec = spec_args(name)
        if spec is None:
            if not hook["optionalhook"]:
                problems.append(f"{name}: no such hook is specified")
            continue
        unknown = [arg for arg in hook["argnames"] if arg not in spec]
        if unknown:
            problems.append(f"{name}: the hook has no argument {', '.join(map(repr, unknown))}")
            continue
        kept.append(hook)
    if problems:
        raise PackageError("its hooks are refused: " + "; ".join(problems), path=plugin_id)
    return kept


def read_hooks(path: Path) -> list[dict[str, Any]] | None:
    """The implementations a worker reported, as an earlier load wrote them (None: none usable).

    Checked as strictly as a worker's own report: the file is in the plugins
    folder, and what a plugin once reported must not fail every later start.
    """
    try:
        return well_formed_hooks(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, RecursionError) as exc:
        if path.exists():
            _logger.warning("ignoring the kept hooks of a sandboxed plugin in %s: %s", path, exc)
        return None


def write_hooks(path: Path, hooks: list[dict[str, Any]]) -> None:
    """Keep what the worker reported for the next load (atomically; a failure only costs time)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(hooks, stream)
        Path(temporary).replace(path)
    except OSError as exc:
        _logger.warning("cannot keep the hooks of a sandboxed plugin in %s: %s", path, exc)


#: Zygotes and workers of a parent process, kept in a forked child so nothing collects them.


def _describe(status: int | None, *, killed: bool) -> str:
    if status is None:
        return "its exit status is unknown"
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"it exited with code {code}"
    number = -code
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    if number == signal.SIGKILL and killed:
        return "killed by the host"
    hints = {
        signal.SIGKILL: "the kernel's out-of-memory killer, or killed from outside",
        signal.SIGXCPU: "over its CPU time limit",
        signal.SIGXFSZ: "over its file size limit",
        signal.SIGABRT: "it aborted",
        signal.SIGSEGV: "it crashed (segmentation fault)",
        signal.SIGSYS: "a forbidden system call",
    }
    hint = hints.get(signal.Signals(number)) if number in signal.valid_signals() else None
    return f"killed by {name}" + (f": {hint}" if hint else "")


def kill_group(pid: int) -> None:
    """SIGKILL the process group of ``pid`` (or the process, before it made its group)."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
            break
        except (ProcessLookupError, PermissionError):
            continue
