"""The per-plugin stand-in the host registers with pluggy, and the plugin's workers.

A sandboxed plugin is registered with pluggy as a *stand-in*
(:class:`SandboxedPlugin`): an object whose hook implementations have the
plugin's names, argument names and ordering options, and whose bodies send the
call to the plugin's worker and wait for the answer. The call loop cannot tell
the difference, so isolation, metrics, failures and the breaker work as for
in-process plugins.

Behind the stand-in, :class:`PluginWorkers` keeps the plugin's workers, one
per tenant (hooks bound to no tenant get one of their own), each started when a
call needs it, its code verified first, and the locks its calls take turns on.
"""

from __future__ import annotations

import keyword
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from time import monotonic, perf_counter
from typing import Any, Final, Protocol

from .._markers import PROJECT_NAME
from .._sources._discovery import source_hash
from .._sources._loader import IntegrityError, check_code
from ..errors import (
    PackageError,
    RemoteError,
    SandboxError,
)
from ..events import ApiRequest, ApiResponse
from ._channel import (
    Reaper,
    WorkerProcess,
)
from ._confine import Capabilities, scratch_parent
from ._messages import HOOK_OPTIONS, Failed, Ready
from ._policy import SandboxPolicy
from ._wire import Channel, WireError, encode

_logger = logging.getLogger("services_ai_plugins.sandbox")

#: Every how many calls the host looks at a worker's CPU time (one read of /proc).
_CPU_CHECK_EVERY: Final = 256
#: The share of its lifetime CPU limit after which a worker is replaced between calls.
_CPU_RETIRE_AT: Final = 0.8

Invoke = Callable[[str, tuple[str, ...], tuple[Any, ...]], Any]


class Forker(Reaper, Protocol):
    """What forks the workers: the pool's zygote."""

    @property
    def capabilities(self) -> Capabilities: ...

    def fork(self, config: dict[str, Any], fd: int) -> int:
        """A new worker's pid, forked with ``fd`` as its channel."""


class WorkerPool(Protocol):
    """What the stand-in needs of the pool it belongs to (:class:`._pool.Sandbox`).

    The pool's own bookkeeping, under the names it keeps them by.
    """

    @property
    def policy(self) -> SandboxPolicy: ...

    @property
    def _api_methods(self) -> frozenset[str]: ...

    #: Guards the pool's bookkeeping (``_starting``, its live workers).
    _lock: threading.Lock
    #: Workers still starting: closing the pool cuts their start short.
    _starting: set[WorkerProcess]
    _closed: bool
    on_integrity_error: Callable[[str, IntegrityError], None] | None

    def _ensure_zygote(self) -> Forker: ...

    def _admit(self, worker: WorkerProcess) -> None: ...

    def _gone(self, worker: WorkerProcess) -> None: ...

    def _note(self, note: str) -> None: ...


class PluginWorkers:
    """One sandboxed plugin: its configuration, its workers (one per tenant) and their locks.

    Calls for one tenant take turns on that tenant's worker (its lock); calls for
    different tenants, and hooks bound to no tenant (key ``None``), run in
    workers of their own, so nothing a plugin keeps in memory or in its scratch
    folder while serving one tenant is there when it serves another.
    """

    def __init__(
        self,
        sandbox: WorkerPool,
        plugin_id: str,
        config: dict[str, Any],
    ) -> None:
        self.sandbox = sandbox
        self.plugin_id = plugin_id
        self.config = config
        #: The locks calls take turns on, by tenant (made on first use, never removed).
        self.locks: dict[str | None, threading.RLock] = {}
        #: The live workers, by tenant (None: the hooks bound to no tenant).
        self.workers: dict[str | None, WorkerProcess] = {}
        #: The worker that served the latest call.
        self.recent: WorkerProcess | None = None
        #: The implementations its first worker reported (every later worker must agree).
        self.hooks: list[dict[str, Any]] = []
        #: Whether the host asked for its routes, and the API that call received (if its
        #: implementation takes one): a tenant's worker builds its handlers the same way.
        self.routes_asked = False
        self.routes_api: Any = None
        #: Hooks whose results the host ignores (NOTIFY): the worker need not send them.
        self.ignored: frozenset[str] = frozenset()
        self.closed = False

    @property
    def api_methods(self) -> frozenset[str]:
        return self.sandbox._api_methods

    @property
    def host_closed(self) -> bool:
        return self.sandbox._closed

    def lock_for(self, tenant: str | None) -> threading.RLock:
        lock = self.locks.get(tenant)
        if lock is None:  # setdefault: two threads asking at once get the same lock
            lock = self.locks.setdefault(tenant, threading.RLock())
        return lock

    def start(self, tenant: str | None) -> WorkerProcess:
        """Start a worker for ``tenant``, its plugin's code verified first.

        Every start (the first, and each after a time-out, a crash, an eviction
        or a retirement) hashes the code the worker will import and compares
        it with the recorded hash, here and in the worker once it is confined
        (a change between the two is caught there). A mismatch starts no
        worker: :class:`IntegrityError`, also handed to the sandbox's
        ``on_integrity_error``.
        """
        try:
            self._verify()
            zygote = self.sandbox._ensure_zygote()
            try:
                worker = _spawn(self, tenant, zygote, self.sandbox.policy)
            except RemoteError as error:
                if error.remote_type != IntegrityError.__name__:
                    raise
                self._verify()  # the worker found it changed: say what the host finds now
                raise IntegrityError(
                    self.plugin_id,
                    str(self.config["folder"]),
                    str(self.config["code_hash"]),
                    "another, by its worker",
                ) from None
        except IntegrityError as error:
            report = self.sandbox.on_integrity_error
            if report is not None:
                report(self.plugin_id, error)
            raise
        if self.hooks and worker.hooks != self.hooks:
            worker.stop()
            raise SandboxError(
                self.plugin_id,
                "a new worker reported other implementations than its first one "
                "(a plugin must offer the same hooks to every tenant)",
            )
        self.sandbox._admit(worker)
        return worker

    def _verify(self) -> None:
        expected = self.config.get("code_hash")
        if expected is None:
            return
        folder = self.config["folder"]
        if folder is not None:
            check_code(self.plugin_id, Path(folder), expected)
            return
        # An entry point: the module the host imported at discovery names the files.
        module = sys.modules.get(str(self.config["module"]))
        path = getattr(module, "__file__", None)
        if path is None:
            raise PackageError(
                "its entry point's module is not imported in the host", path=self.plugin_id
            )
        actual = source_hash(path, package=hasattr(module, "__path__"))
        if actual != expected:
            raise IntegrityError(self.plugin_id, str(path), expected, actual)

    def stop(self) -> None:
        """Stop every worker of the plugin."""
        for tenant in list(self.workers):
            with self.lock_for(tenant):
                worker = self.workers.get(tenant)
                if worker is not None:
                    self._forget(worker)
            if worker is not None:
                worker.stop()

    def _forget(self, worker: WorkerProcess) -> None:
        """Take ``worker`` out of this plugin's and the sandbox's live workers (with its lock)."""
        if self.workers.get(worker.tenant) is worker:
            del self.workers[worker.tenant]
        self.sandbox._gone(worker)

    def invoke(self, hook: str, names: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        """Run ``hook`` in the worker with the stand-in's arguments (in ``names`` order)."""
        api = None
        kwargs: dict[str, Any] = {}
        for name, value in zip(names, args, strict=True):
            if name == "api":
                api = value
            else:
                kwargs[name] = value
        context = kwargs.get("context")
        tenant = api.tenant if api is not None else getattr(context, "tenant", None)
        if hook == "register_routes" and tenant is None:
            self.routes_asked, self.routes_api = True, api
        return self._run("call", hook, f"{hook}()", tenant, kwargs, api, hook not in self.ignored)

    def route(self, name: str, path: str, request: ApiRequest) -> ApiResponse:
        """Serve a request with a handler the plugin returned from ``register_routes``.

        It runs in the worker of the request's tenant, which asks the plugin for
        its handlers (``register_routes``, bound to no tenant) before its first
        request.
        """
        what = f"route {path}"
        response = self._run("route", name, what, request.tenant, {"request": request}, None, True)
        if not isinstance(response, ApiResponse):
            raise SandboxError(
                self.plugin_id,
                f"{what} returned {type(response).__name__}, not an ApiResponse",
            )
        return response

    def _run(  # noqa: PLR0917 - private; one call site per kind
        self,
        kind: str,
        name: str,
        what: str,
        tenant: str | None,
        kwargs: dict[str, Any],
        api: Any,
        wanted: bool,
    ) -> Any:
        try:
            payload = encode(kwargs)
        except WireError as exc:
            raise SandboxError(
                self.plugin_id, f"cannot send the arguments of {what}: {exc}"
            ) from None
        policy = self.sandbox.policy
        lock = self.lock_for(tenant)
        if not lock.acquire(timeout=policy.timeout):
            raise SandboxError(
                self.plugin_id,
                f"{what} waited {policy.timeout:g} s for its worker, busy with another call",
            )
        try:
            if self.closed:
                raise SandboxError(self.plugin_id, "it was unloaded")
            worker = self.workers.get(tenant)
            if worker is None or worker.dead:
                worker = self.workers[tenant] = self.start(tenant)
            self.recent = worker
            try:
                target: str | int = name
                if kind == "route":
                    target = self._handler(worker, name, what)
                result = worker.call(
                    target,
                    tenant,
                    payload,
                    wanted=wanted,
                    what=what,
                    api=api,
                    timeout=policy.timeout,
                )
            finally:
                worker.last_used = monotonic()
                if worker.dead:
                    self._forget(worker)
            if worker.calls % _CPU_CHECK_EVERY == 0 and worker.depth == 0:
                self._retire_if_spent(worker)
            return result
        finally:
            lock.release()

    def _handler(self, worker: WorkerProcess, name: str, what: str) -> int:
        """The number ``worker`` knows the route ``name`` by (its handlers built on first use)."""
        if worker.route_numbers is None:
            if not self.routes_asked:
                raise SandboxError(self.plugin_id, f"{what}: register_routes was never called")
            worker.call(
                "register_routes",
                None,
                encode({"plugin_id": self.plugin_id}),
                wanted=True,
                what="register_routes()",
                api=self.routes_api,
                timeout=self.sandbox.policy.timeout,
            )
        number = (worker.route_numbers or {}).get(name)
        if number is None:
            raise SandboxError(
                self.plugin_id, f"{what}: its register_routes no longer returns a route {name!r}"
            )
        return number

    def _retire_if_spent(self, worker: WorkerProcess) -> None:
        """Replace a worker near its lifetime CPU limit before the kernel stops it mid-call."""
        limit = self.sandbox.policy.limits.cpu
        used = _cpu_seconds(worker.pid)
        if limit is None or used is None or used < limit * _CPU_RETIRE_AT:
            return
        _logger.info(
            "plugin %r: its worker for %s used %.0f of its %d CPU seconds; starting a fresh one",
            self.plugin_id,
            f"tenant {worker.tenant!r}" if worker.tenant is not None else "no tenant",
            used,
            limit,
        )
        self._forget(worker)
        worker.stop()

    def stand_in(
        self,
        hooks: Sequence[Mapping[str, Any]],
        spec_args: Callable[[str], Sequence[str] | None],
        ignored: frozenset[str],
    ) -> SandboxedPlugin:
        self.ignored = ignored
        functions = {}
        for hook in hooks:
            name = hook["name"]
            argnames = list(hook["argnames"])
            spec = spec_args(name)
            # The call's context always travels: its tenant picks the worker (an implementation
            # not asking for it must not run in a worker shared by every tenant), and the
            # worker's api.context needs it.
            if spec is not None and "context" in spec and "context" not in argnames:
                argnames.append("context")
            function = _proxy(self.plugin_id, name, tuple(argnames), self.invoke)
            setattr(
                function,
                f"{PROJECT_NAME}_impl",
                {option: hook[option] for option in HOOK_OPTIONS} | {"specname": None},
            )
            functions[name] = function
        return SandboxedPlugin(self, functions)


class SandboxedPlugin:
    """The stand-in pluggy holds for a plugin that runs in worker processes (one per tenant)."""

    def __init__(self, owner: PluginWorkers, functions: Mapping[str, Callable[..., Any]]) -> None:
        self._owner = owner
        for name, function in functions.items():
            setattr(self, name, function)

    @property
    def plugin_id(self) -> str:
        """The plugin's id."""
        return self._owner.plugin_id

    @property
    def pid(self) -> int | None:
        """The process id of the worker that served its latest call (None: that one is gone)."""
        worker = self._owner.recent
        return worker.pid if worker is not None and not worker.dead else None

    def pids(self) -> dict[str | None, int]:
        """Its live workers' process ids, by tenant (None: the hooks bound to no tenant)."""
        return {
            tenant: worker.pid
            for tenant, worker in list(self._owner.workers.items())
            if not worker.dead
        }

    def __repr__(self) -> str:
        return f"<sandboxed plugin {self.plugin_id!r}, {len(self.pids())} live workers>"


def _proxy(
    plugin_id: str, hook: str, argnames: tuple[str, ...], invoke: Invoke
) -> Callable[..., Any]:
    """A function named ``hook`` taking ``argnames`` that hands them to ``invoke``."""
    for name in (hook, *argnames):
        if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
            raise PackageError(
                f"its worker reported an invalid hook or argument name {name!r}", path=plugin_id
            )
    params = ", ".join(argnames)
    packed = f"({params}{',' if argnames else ''})"
    source = f"def {hook}({params}):\n    return _invoke({hook!r}, _names, {packed})\n"
    namespace: dict[str, Any] = {"_invoke": invoke, "_names": argnames}
    exec(source, namespace)  # noqa: S102 - names checked above: identifiers only
    function: Callable[..., Any] = namespace[hook]
    function.__qualname__ = f"<sandboxed {plugin_id}>.{hook}"
    return function


def _spawn(
    owner: PluginWorkers, tenant: str | None, zygote: Forker, policy: SandboxPolicy
) -> WorkerProcess:
    """A new worker for ``tenant``, forked by ``zygote``, once it reported itself ready."""
    began = perf_counter()
    scratch = tempfile.mkdtemp(
        prefix=f"services-ai-{owner.plugin_id[:40]}-",
        dir=_scratch_parent(owner.sandbox, zygote.capabilities),
    )
    config = dict(owner.config)
    config["scratch"] = scratch
    config["env"] = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": scratch,
        "TMPDIR": scratch,
    }
    ours, theirs = socket.socketpair()
    try:
        pid = zygote.fork(config, theirs.fileno())
    except BaseException:
        ours.close()
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    finally:
        theirs.close()
    channel = Channel(ours, limit=policy.max_frame, max_values=policy.max_values)
    worker = WorkerProcess(owner, tenant, zygote, pid, channel, policy)
    worker.scratch = scratch
    sandbox = owner.sandbox
    with sandbox._lock:
        sandbox._starting.add(worker)
    try:
        if sandbox._closed:  # closed while it forked: it would not be interrupted
            worker._interrupt()
        message = worker._until_ready(monotonic() + policy.start_timeout)
    except ValueError as exc:  # its ready report is malformed
        worker.stop()
        raise PackageError(
            f"its worker's report of its implementations is refused: {exc}",
            path=owner.plugin_id,
        ) from None
    except TimeoutError:
        worker.stop()
        raise PackageError(
            f"its worker did not start within {policy.start_timeout:g} s", path=owner.plugin_id
        ) from None
    except (EOFError, OSError, WireError) as exc:
        cause = worker._end()
        raise PackageError(
            f"its worker died while starting ({cause}): {exc}", path=owner.plugin_id
        ) from None
    finally:
        with sandbox._lock:
            sandbox._starting.discard(worker)
    if not isinstance(message, Ready):
        worker.stop()
        if isinstance(message, Failed):
            raise RemoteError(
                owner.plugin_id, message.type_name, message.message, message.traceback
            )
        raise PackageError(
            f"its worker sent {message.kind!r} instead of 'ready'", path=owner.plugin_id
        )
    worker.hooks, worker.layers, notes = message.hooks, message.layers, message.notes
    for note in notes:
        owner.sandbox._note(note)
    worker.start_time = perf_counter() - began
    return worker


def _scratch_parent(sandbox: WorkerPool, capabilities: Capabilities) -> Path:
    """Where the workers' scratch folders go: the host's temporary folder if their users can
    enter it, else a folder they can (said once per sandbox).

    :raises SandboxError: when they can enter none: no worker could start.
    """
    parent, reason = scratch_parent(capabilities, tempfile.gettempdir())
    if parent is None:
        raise SandboxError(
            "sandbox",
            f"no folder for the workers' scratch folders: {reason}; set TMPDIR to a folder "
            "every user may enter (mode 0711 or more on it and on every folder above it)",
        )
    if reason is not None:
        sandbox._note(
            f"scratch folders go in {parent}: {reason}; set TMPDIR to a folder every user may "
            "enter to keep them in the host's own"
        )
    return parent


def _cpu_seconds(pid: int) -> float | None:
    """The CPU time a process used so far (user and system), or None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        # The command name (field 2) may hold spaces: count the fields after its ")".
        fields = stat[stat.rindex(b")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
