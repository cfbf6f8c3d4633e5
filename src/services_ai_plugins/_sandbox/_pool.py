"""The process sandbox, host side: plugins that run in worker processes.

A sandboxed plugin is registered with pluggy as a *stand-in*: an object whose
hook implementations have the plugin's names, argument names and ordering
options, and whose bodies send the call to the plugin's worker and wait for
the answer. The call loop cannot tell the difference, so isolation, metrics,
failures and the breaker work as for in-process plugins.

Workers are forked by a zygote (see :mod:`._worker`), one per (plugin,
tenant): a plugin's module globals and scratch folder never hold two tenants'
data, and hooks bound to no tenant (``register_routes``, plugin-level
lifecycle) get a worker of their own. A worker starts when a call needs one
(the first load of a plugin's code starts the tenant-less one to learn its
implementations), is reused for every call of its tenant, and the workers are
bounded in number (the least recently used idle one makes room). A call
waits at most ``timeout`` seconds: a worker that overruns is killed with its
whole process group, and one that dies is reaped and its cause recorded;
either way the next call starts a new one. While a call runs, the worker may
send API requests: the host runs them on the plugin's real :class:`PluginAPI`
for the call's tenant, so grants are never decided in the worker.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import itertools
import json
import keyword
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from time import monotonic, perf_counter
from typing import Any, Final, final

import attrs
from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .._kinds import SourceKind
from .._logs import OUTPUT_ATTRIBUTE
from .._manifest import Isolation, Manifest
from .._markers import PROJECT_NAME
from .._sources._discovery import source_hash
from .._sources._loader import IntegrityError, check_code
from ..errors import (
    PackageError,
    RemoteError,
    SandboxError,
    SandboxTimeout,
    WorkerCrashed,
)
from ..events import ApiRequest, ApiResponse, Route
from ._confine import Capabilities, Limits, scratch_parent
from ._wire import IGNORED_RESULT, MAX_FRAME, Channel, FrameTooLarge, WireError, decode, encode
from ._worker import SDK_MODULES

__all__ = ["Sandbox", "SandboxPolicy", "WorkerInfo"]

_logger = logging.getLogger("services_ai_plugins.sandbox")

#: How deep hook calls may nest through one worker (a hook whose API call fires a hook).
MAX_DEPTH: Final = 8
#: Every how many calls the host looks at a worker's CPU time (one read of /proc).
_CPU_CHECK_EVERY: Final = 256
#: The share of its lifetime CPU limit after which a worker is replaced between calls.
_CPU_RETIRE_AT: Final = 0.8
#: The ids of hook calls, unique in the host: every frame of a call carries its id.
_CALL_IDS: Final = itertools.count(1)
#: Seconds the host gives the zygote to take a request, and again to answer it.
_ZYGOTE_TIMEOUT: Final = 30.0

_DEFAULT_ISOLATION: Final[Mapping[SourceKind, Isolation]] = {
    SourceKind.ARCHIVE: Isolation.PROCESS,
    SourceKind.FOLDER: Isolation.INPROCESS,
    SourceKind.ENTRY_POINT: Isolation.INPROCESS,
}


def _isolation_map(
    value: Mapping[SourceKind | str, Isolation | str],
) -> Mapping[SourceKind, Isolation]:
    merged = dict(_DEFAULT_ISOLATION)
    merged.update({SourceKind(k): Isolation(v) for k, v in value.items()})
    return merged


def _limits(value: Limits | Mapping[str, int | None]) -> Limits:
    return value if isinstance(value, Limits) else Limits(**value)


@attrs.frozen(kw_only=True)
class SandboxPolicy:
    """Which plugins run in a worker process, and within which limits.

    ``isolation`` maps where a plugin came from to where it runs; uploaded
    archives run in a worker by default, entry points and folders (placed by
    an operator) in the host's process. A manifest asking for ``"process"``
    always gets it; one asking for ``"inprocess"`` cannot loosen the policy.

    >>> SandboxPolicy(timeout=2.0).isolation_for(SourceKind.ARCHIVE, None)
    <Isolation.PROCESS: 'process'>
    """

    isolation: Mapping[SourceKind, Isolation] = attrs.field(
        factory=lambda: dict(_DEFAULT_ISOLATION), converter=_isolation_map
    )
    #: Seconds a hook call (API callbacks included) may take before its worker is killed.
    timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    #: Seconds a worker may take to start and import its plugin.
    start_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    #: The operating-system limits of each worker.
    limits: Limits = attrs.field(factory=Limits, converter=_limits)
    #: The most workers alive at once (one per plugin; idle ones make room).
    max_workers: int = attrs.field(default=16, validator=attrs.validators.ge(1))
    #: The most characters of printed output and log messages a call may send.
    output_limit: int = attrs.field(default=64 * 1024, validator=attrs.validators.ge(0))
    #: The largest message a worker may send, in bytes.
    max_frame: int = attrs.field(default=MAX_FRAME, validator=attrs.validators.ge(1024))
    #: The most values (array items, object members, containers) one message of a worker may
    #: hold; a message with more is refused before it is read (it would cost the host far more
    #: memory than its bytes: 16 MiB of nested empty lists take some 800 MiB).
    max_values: int = attrs.field(default=250_000, validator=attrs.validators.ge(1000))
    #: The most API requests one hook call may make; the next ones raise SandboxError in the
    #: worker, and the call goes on.
    max_api_calls: int = attrs.field(default=10_000, validator=attrs.validators.ge(0))
    #: The most bytes one hook call may move through its worker's channel: the API requests
    #: and their answers, log lines, and the result. An API answer over it is refused (the API
    #: call raises SandboxError); a frame of the worker over it stops the worker.
    max_call_bytes: int = attrs.field(default=64 * 2**20, validator=attrs.validators.ge(1024))
    #: The interpreter workers run on (started with ``-I``).
    python: str = sys.executable
    #: More paths workers may read (besides the interpreter's, the SDK's and the plugin's).
    readable: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    def isolation_for(self, source: SourceKind, asked: Isolation | None) -> Isolation:
        """Where a plugin from ``source`` whose manifest asks for ``asked`` runs."""
        if asked is Isolation.PROCESS:
            return Isolation.PROCESS
        return self.isolation.get(source, Isolation.PROCESS)


@attrs.frozen(kw_only=True)
class WorkerInfo:
    """One live worker, for an operator's page (:meth:`Sandbox.workers`)."""

    plugin_id: str
    #: The tenant whose calls it serves (None: the hooks bound to no tenant).
    tenant: str | None
    pid: int
    #: Hook calls it answered.
    calls: int
    #: Seconds since it started.
    age: float
    #: Seconds it took to start and import its plugin.
    start_time: float
    #: Its resident memory in bytes (None where ``/proc`` cannot tell).
    rss: int | None
    #: The confinement layers applied to it.
    layers: tuple[str, ...]


Invoke = Callable[[str, tuple[str, ...], tuple[Any, ...]], Any]


@final
class Sandbox:
    """The host's worker processes: started lazily, reused, bounded, killed on overrun.

    One per :class:`PluginHost` (``host.sandbox``). Thread-safe: calls into
    different plugins run in parallel; calls into one plugin take turns.
    """

    def __init__(self, policy: SandboxPolicy, *, api_methods: Iterable[str]) -> None:
        self.policy: Final = policy
        self._api_methods: Final = frozenset(api_methods)
        self._lock = threading.Lock()
        self._zygote: _Zygote | None = None
        self._plugins: dict[str, _Sandboxed] = {}
        #: Live workers, by plugin id and tenant.
        self._live: dict[tuple[str, str | None], _Worker] = {}
        #: Workers still starting (not live yet): closing cuts their start short too.
        self._starting: set[_Worker] = set()
        self._notes: set[str] = set()
        self._closed = False
        #: Called (plugin id, error) when a worker is not started because the plugin's code
        #: no longer matches its recorded hash; the host records and suspends it.
        self.on_integrity_error: Callable[[str, IntegrityError], None] | None = None
        # A web server that forks after the host was made (gunicorn --preload): each child
        # must start its own zygote and workers, never talk over its parent's sockets.
        method = weakref.WeakMethod(self._forked)
        os.register_at_fork(after_in_child=lambda: _call_if_alive(method))

    def _forked(self) -> None:
        """In a forked child: forget the parent's zygote and workers (they stay the parent's)."""
        self._lock = threading.Lock()
        inherited: list[object] = [self._zygote, *self._live.values()]
        self._zygote = None
        self._live = {}
        self._starting = set()
        for sandboxed in self._plugins.values():
            sandboxed.locks = {}
            sandboxed.workers = {}
            sandboxed.recent = None
        for thing in inherited:  # close this process's copies of their descriptors only
            channel = getattr(thing, "channel", None)
            if channel is not None:
                with contextlib.suppress(OSError):
                    channel.close()
        _INHERITED.extend(inherited)  # their Popen objects must not be waited for here

    @property
    def capabilities(self) -> Capabilities:
        """What this machine offers the workers (probed by the zygote; starts it if needed)."""
        return self._ensure_zygote().capabilities

    def load(
        self,
        plugin_id: str,
        manifest: Manifest,
        *,
        folder: Path | None,
        spec_args: Callable[[str], Sequence[str] | None],
        ignored: frozenset[str] = frozenset(),
        module: str | None = None,
        attribute: str | None = None,
        hooks_file: Path | None = None,
        code_hash: str | None = None,
    ) -> object:
        """Return the plugin's stand-in for pluggy, from its implementations.

        The implementations are what its worker reported once it imported the
        plugin: read from ``hooks_file`` when an earlier load wrote it (the
        worker then starts on the first call), else reported by a worker
        started now, and written there (a file per code hash: the host's
        restarts and its other processes start no worker they do not use).
        ``spec_args(hook)`` gives the argument names of a hook's specification
        (None for a hook nobody specified); ``ignored`` names the hooks whose
        results the host ignores. Entry-point plugins name their
        ``module`` (and ``attribute``) instead of a ``folder``. With
        ``code_hash``, the code is checked against it before each worker
        starts (see :meth:`_Sandboxed.start`).

        :raises PackageError: when the worker cannot start, the plugin cannot
            be imported there (the message holds its error and traceback), or
            its worker's report of its implementations is not valid.
        """
        self.unload(plugin_id)
        config = {
            "plugin_id": plugin_id,
            # None (an entry point: code in site-packages): its scratch folder stands in.
            "folder": str(folder) if folder is not None else None,
            "manifest": manifest.to_dict(),
            "module": module,
            "attribute": attribute,
            "api_methods": sorted(self._api_methods),
            "limits": attrs.asdict(self.policy.limits),
            "output_limit": self.policy.output_limit,
            "max_frame": self.policy.max_frame,
            "readable": list(self.policy.readable),
            # The declared distributions and all they require: what the plugin may import.
            "distributions": (distributions := _dependency_closure(manifest.dependencies)),
            "modules": (modules := _distribution_modules(distributions)),
            # Where those are, when not where the SDK is (the zygote's sys.path has only those).
            "paths": _module_holders(modules),
            # The worker hashes its folder again, confined, right before the import.
            "code_hash": code_hash,
        }
        sandboxed = _Sandboxed(self, plugin_id, config)
        hooks = _read_hooks(hooks_file) if hooks_file is not None else None
        if hooks is None:
            worker = sandboxed.start(None)  # the tenant-less worker tells the implementations
            sandboxed.workers[None] = worker
            hooks = worker.hooks
            if hooks_file is not None:  # well-formed: kept even if judged below (check reads it)
                _write_hooks(hooks_file, hooks)
        sandboxed.hooks = hooks
        self._plugins[plugin_id] = sandboxed
        return sandboxed.stand_in(_judged(plugin_id, hooks, spec_args), spec_args, ignored)

    def start(self, plugin_id: str, tenant: str | None) -> bool:
        """Start the plugin's worker for ``tenant`` now, unless it runs already.

        An app may start a tenant's workers before its first request; the first
        call then pays no start. False when the plugin is not sandboxed here.

        :raises PluginError: when the worker cannot start (as the call would).
        """
        sandboxed = self._plugins.get(plugin_id)
        if sandboxed is None:
            return False
        with sandboxed.lock_for(tenant):
            worker = sandboxed.workers.get(tenant)
            if worker is None or worker.dead:
                sandboxed.workers[tenant] = sandboxed.start(tenant)
        return True

    def unload(self, plugin_id: str) -> None:
        """Stop the plugin's workers and forget it (its stand-in then fails every call)."""
        sandboxed = self._plugins.pop(plugin_id, None)
        if sandboxed is not None:
            sandboxed.closed = True
            sandboxed.stop()

    def workers(self) -> list[WorkerInfo]:
        """The live workers, by plugin id and tenant (the tenant-less one first)."""
        with self._lock:
            live = list(self._live.values())
        now = monotonic()
        return sorted(
            (
                WorkerInfo(
                    plugin_id=w.plugin_id,
                    tenant=w.tenant,
                    pid=w.pid,
                    calls=w.calls,
                    age=now - w.started,
                    start_time=w.start_time,
                    rss=_rss(w.pid),
                    layers=w.layers,
                )
                for w in live
            ),
            key=lambda info: (info.plugin_id, info.tenant is not None, info.tenant or ""),
        )

    def close(self) -> None:
        """Stop every worker and the zygote, without waiting for any of them.

        A call still running is cut short: it fails with :class:`SandboxError`.
        """
        self._closed = True
        with self._lock:
            live = [*self._live.values(), *self._starting]
        for worker in live:  # a call blocked on its worker now fails at once, and lets go
            worker._interrupt()
        for plugin_id in list(self._plugins):
            self.unload(plugin_id)
        with self._lock:
            zygote, self._zygote = self._zygote, None
        if zygote is not None:
            zygote.close()

    # -- for the workers -------------------------------------------------------------------------

    def _ensure_zygote(self) -> _Zygote:
        with self._lock:
            if self._closed:
                raise SandboxError("sandbox", "the host is closed")
            zygote = self._zygote
            if zygote is None or not zygote.alive():
                if zygote is not None:
                    _logger.warning("the sandbox's zygote died; starting a new one")
                    zygote.close()
                zygote = self._zygote = _Zygote(self.policy)
                for layer in zygote.capabilities.layers():
                    if not layer.available:  # degraded: say so, once per process
                        self._note(f"the {layer.name} layer is missing here: {layer.missing}")
            return zygote

    def _note(self, note: str) -> None:
        """Log what the workers could not get, once per sandbox."""
        if note not in self._notes:
            self._notes.add(note)
            _logger.warning("sandbox: %s", note)

    def _admit(self, worker: _Worker) -> None:
        """Count a new worker; stop the least recently used idle ones beyond the bound."""
        with self._lock:
            self._live[worker.key] = worker
            excess = len(self._live) - self.policy.max_workers
            victims = []
            for other in sorted(self._live.values(), key=lambda w: w.last_used):
                if excess <= 0:
                    break
                lock = other.owner.lock_for(other.tenant)
                if other is worker or not lock.acquire(blocking=False):
                    continue  # taken by another thread's call
                try:
                    if other.depth:  # a call in progress further up this thread's stack
                        continue
                    if other.owner.workers.get(other.tenant) is other:
                        del other.owner.workers[other.tenant]
                finally:
                    lock.release()
                del self._live[other.key]
                victims.append(other)
                excess -= 1
        for victim in victims:
            victim.stop()

    def _gone(self, worker: _Worker) -> None:
        with self._lock:
            if self._live.get(worker.key) is worker:
                del self._live[worker.key]


class _Sandboxed:
    """One sandboxed plugin: its configuration, its workers (one per tenant) and their locks.

    Calls for one tenant take turns on that tenant's worker (its lock); calls for
    different tenants, and hooks bound to no tenant (key ``None``), run in
    workers of their own, so nothing a plugin keeps in memory or in its scratch
    folder while serving one tenant is there when it serves another.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        plugin_id: str,
        config: dict[str, Any],
    ) -> None:
        self.sandbox = sandbox
        self.plugin_id = plugin_id
        self.config = config
        #: The locks calls take turns on, by tenant (made on first use, never removed).
        self.locks: dict[str | None, threading.RLock] = {}
        #: The live workers, by tenant (None: the hooks bound to no tenant).
        self.workers: dict[str | None, _Worker] = {}
        #: The worker that served the latest call.
        self.recent: _Worker | None = None
        #: The implementations its first worker reported (every later worker must agree).
        self.hooks: list[dict[str, Any]] = []
        #: Whether the host asked for its routes, and the API that call received (if its
        #: implementation takes one): a tenant's worker builds its handlers the same way.
        self.routes_asked = False
        self.routes_api: Any = None
        #: Hooks whose results the host ignores (NOTIFY): the worker need not send them.
        self.ignored: frozenset[str] = frozenset()
        self.closed = False

    def lock_for(self, tenant: str | None) -> threading.RLock:
        lock = self.locks.get(tenant)
        if lock is None:  # setdefault: two threads asking at once get the same lock
            lock = self.locks.setdefault(tenant, threading.RLock())
        return lock

    def start(self, tenant: str | None) -> _Worker:
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
                worker = _Worker.start(self, tenant, zygote, self.sandbox.policy)
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

    def _forget(self, worker: _Worker) -> None:
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
                if kind == "route":
                    number = self._handler(worker, name, what)
                    request = [kind, number, tenant, payload, wanted]
                else:
                    request = [kind, name, tenant, payload, wanted]
                result = worker.call(request, what, api, policy.timeout)
            finally:
                worker.last_used = monotonic()
                if worker.dead:
                    self._forget(worker)
            if worker.calls % _CPU_CHECK_EVERY == 0 and worker.depth == 0:
                self._retire_if_spent(worker)
            return result
        finally:
            lock.release()

    def _handler(self, worker: _Worker, name: str, what: str) -> int:
        """The number ``worker`` knows the route ``name`` by (its handlers built on first use)."""
        if worker.route_numbers is None:
            if not self.routes_asked:
                raise SandboxError(self.plugin_id, f"{what}: register_routes was never called")
            worker.call(
                ["call", "register_routes", None, encode({"plugin_id": self.plugin_id}), True],
                "register_routes()",
                self.routes_api,
                self.sandbox.policy.timeout,
            )
        number = (worker.route_numbers or {}).get(name)
        if number is None:
            raise SandboxError(
                self.plugin_id, f"{what}: its register_routes no longer returns a route {name!r}"
            )
        return number

    def _retire_if_spent(self, worker: _Worker) -> None:
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
                {option: hook[option] for option in _HOOK_OPTIONS} | {"specname": None},
            )
            functions[name] = function
        return SandboxedPlugin(self, functions)


class SandboxedPlugin:
    """The stand-in pluggy holds for a plugin that runs in worker processes (one per tenant)."""

    def __init__(self, owner: _Sandboxed, functions: Mapping[str, Callable[..., Any]]) -> None:
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


class _Worker:
    """One live worker process and its channel."""

    #: The deadline of the call in progress (None: none): a nested call ends no later.
    _deadline: float | None = None

    def __init__(  # noqa: PLR0917 - private; made by start() only
        self,
        owner: _Sandboxed,
        tenant: str | None,
        zygote: _Zygote,
        pid: int,
        channel: Channel,
        policy: SandboxPolicy,
    ) -> None:
        self.owner = owner
        self.plugin_id = owner.plugin_id
        #: The tenant whose calls it serves (None: the hooks bound to no tenant).
        self.tenant = tenant
        self.key: Final = (owner.plugin_id, tenant)
        #: The numbers it knows the plugin's route handlers by, by route name (None: not built).
        self.route_numbers: dict[str, int] | None = None
        self.zygote = zygote
        self.pid = pid
        self.channel = channel
        self.policy = policy
        self.started = self.last_used = monotonic()
        self.start_time = 0.0
        self.calls = 0
        self.depth = 0
        self.dead = False
        self.hooks: list[dict[str, Any]] = []
        self.layers: tuple[str, ...] = ()
        self.scratch: str | None = None
        self.logger = logging.getLogger(f"services_ai_plugins.plugins.{owner.plugin_id}")

    @classmethod
    def start(
        cls, owner: _Sandboxed, tenant: str | None, zygote: _Zygote, policy: SandboxPolicy
    ) -> _Worker:
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
        worker = cls(owner, tenant, zygote, pid, channel, policy)
        worker.scratch = scratch
        sandbox = owner.sandbox
        with sandbox._lock:
            sandbox._starting.add(worker)
        try:
            if sandbox._closed:  # closed while it forked: it would not be interrupted
                worker._interrupt()
            message = worker._until_ready(monotonic() + policy.start_timeout)
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
        if message[0] != "ready":
            worker.stop()
            if message[0] == "failed" and len(message) == 4 and _texts(message[1:]):
                raise RemoteError(owner.plugin_id, message[1], message[2], message[3])
            raise PackageError(
                f"its worker sent {message[0]!r} instead of 'ready'", path=owner.plugin_id
            )
        try:
            worker.hooks, worker.layers, notes = _ready_report(message)
        except ValueError as exc:
            worker.stop()
            raise PackageError(
                f"its worker's report of its implementations is refused: {exc}",
                path=owner.plugin_id,
            ) from None
        for note in notes:
            owner.sandbox._note(note)
        worker.start_time = perf_counter() - began
        return worker

    def _until_ready(self, deadline: float) -> list[Any]:
        """The first frame after what the plugin printed or logged while it was imported."""
        output = _Output(self)
        try:
            while True:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    raise TimeoutError
                message = self.channel.receive(remaining)
                if message[0] != "log" or len(message) != 4:
                    return message
                output.log(message)
        finally:
            output.report("while importing")

    def call(  # noqa: PLR0915 - one loop serving every frame a call may bring
        self, request: list[Any], what: str, api: Any, timeout: float
    ) -> Any:
        """Send one call (a hook's, or a route handler's) and serve the worker until it answers.

        ``request`` is ``[kind, hook name or route number, tenant, arguments, whether the
        result is wanted]``. The frame sent holds a new call id after its kind; the worker's
        API requests and answer must carry it. Every send and receive ends by the call's
        deadline (a nested call's is no later than the call it is nested in).
        """
        kind, name = request[0], request[1]
        hook = str(name) if kind == "call" else what
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
        kinds = _frame_kinds(policy.max_frame, policy.output_limit, bool(request[4]))
        budget = policy.max_call_bytes
        self.depth += 1
        self.calls += 1
        self._deadline = deadline
        requests = spent = 0
        output = _Output(self)
        try:
            try:
                self.channel.send([kind, call_id, *request[1:]], timeout=deadline - monotonic())
            except WireError as exc:  # nothing was written: a string that is not Unicode
                raise SandboxError(
                    self.plugin_id, f"cannot send the arguments of {what}: {exc}"
                ) from None
            while True:
                message = self.channel.receive(
                    deadline - monotonic(), limit=budget - spent, kinds=kinds
                )
                spent += self.channel.last_size
                answer = message[0]
                if answer == "log" and len(message) == 4:
                    output.log(message)
                    continue
                if len(message) > 1 and (type(message[1]) is not int or message[1] != call_id):
                    raise WireError(
                        f"a {answer!r} frame of call {message[1]!r} came during call {call_id} "
                        "(a thread left running by an earlier call?)"
                    )
                if answer == "api" and len(message) == 5:
                    requests += 1
                    reply = self._serve_api(api, call_id, message, requests)
                    spent += self._answer(reply, deadline, budget - spent)
                    continue
                if answer == "ok" and len(message) == 3:
                    try:
                        if name == "register_routes" and isinstance(message[2], dict):
                            return self._routes(message[2].get("$routes"))
                        return decode(message[2])
                    except WireError as exc:
                        raise SandboxError(
                            self.plugin_id, f"{what} returned a value the host refuses: {exc}"
                        ) from None
                if answer == "raise" and len(message) == 5 and _texts(message[2:]):
                    raise RemoteError(self.plugin_id, message[2], message[3], message[4])
                raise WireError(f"a malformed {answer!r} frame")
        except TimeoutError:
            self._end(killed=True)
            raise SandboxTimeout(self.plugin_id, hook, timeout) from None
        except WireError as exc:
            self._end(killed=True)
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
            if self.owner.sandbox._closed:
                self._end(killed=True)
                raise SandboxError(self.plugin_id, f"{what}: the host closed") from None
            if self.dead and monotonic() >= deadline:  # a nested call ran out of time
                raise SandboxTimeout(self.plugin_id, hook, timeout) from None
            raise WorkerCrashed(self.plugin_id, hook, self._end()) from None
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
                    handler=functools.partial(self.owner.route, data["name"], str(data["path"])),
                )
            except (TypeError, ValueError) as exc:
                raise WireError(f"register_routes: {exc}") from None
            built.append(route)
        numbers = {route.name: item["handler"] for route, item in zip(built, routes, strict=True)}
        if len(numbers) != len(built):
            raise WireError("register_routes: two routes have the same name")
        self.route_numbers = numbers  # only once the whole answer is valid
        return built

    def _serve_api(self, api: Any, call_id: int, message: list[Any], number: int) -> list[Any]:
        """Run the call's ``number``-th API request on the plugin's real API; the answer frame."""
        _, _, method, args, kwargs = message
        if api is None or type(method) is not str or method not in self.owner.sandbox._api_methods:
            error = f"'PluginAPI' object has no attribute {method!r}"
            return ["raise", call_id, "AttributeError", error, {}]
        if number > self.policy.max_api_calls:
            error = (
                f"plugin {self.plugin_id!r}: api.{method}() refused: one hook call may make "
                f"{self.policy.max_api_calls} API requests (SandboxPolicy.max_api_calls)"
            )
            return ["raise", call_id, "SandboxError", error, {"plugin_id": self.plugin_id}]
        try:
            positional = decode(args)
            named = decode(kwargs)
            if type(positional) is not list or type(named) is not dict:
                raise WireError("api arguments must be a list and an object")
            return ["ok", call_id, encode(getattr(api, method)(*positional, **named))]
        except Exception as exc:  # noqa: BLE001 - the plugin's call failed: it gets the error
            fields = {  # what a handler reads: PermissionDenied.permission, ...
                key: value
                for key, value in vars(exc).items()
                if not key.startswith("_") and type(value) in (str, int, float, bool)
            }
            return ["raise", call_id, type(exc).__name__, str(exc), fields]

    def _answer(self, reply: list[Any], deadline: float, room: int) -> int:
        """Send an API answer by the call's deadline; the bytes sent.

        An answer over what is left of the call's byte budget (``room``), or one that cannot
        be written, is not sent: the API call raises the reason in the worker instead.
        """
        if self.dead:  # a nested call stopped it: the next receive says how
            raise EOFError
        try:
            return self.channel.send(reply, timeout=deadline - monotonic(), limit=room)
        except FrameTooLarge as exc:
            error = (
                f"plugin {self.plugin_id!r}: an API answer of {exc.size} bytes is over what is "
                f"left of the call's budget of {self.policy.max_call_bytes} bytes "
                "(SandboxPolicy.max_call_bytes)"
            )
            substitute = ["raise", reply[1], "SandboxError", error, {"plugin_id": self.plugin_id}]
        except WireError as exc:  # nothing was written: a string that is not Unicode
            substitute = ["raise", reply[1], "WireError", str(exc), {}]
        return self.channel.send(substitute, timeout=deadline - monotonic())

    def _log(self, level: object, name: object, text: object) -> None:
        levelno = level if type(level) is int and 0 < level <= logging.CRITICAL else logging.INFO
        source = str(name)[:100]
        extra = None
        if source in ("stdout", "stderr"):  # printed: marked, for commands that show it
            extra = {OUTPUT_ATTRIBUTE: source, "output_text": str(text)}
        self.logger.log(levelno, "[%s] %s", source, str(text), extra=extra)

    def stop(self) -> None:
        """Ask it to stop; kill it (and its process group) if it does not at once.

        Waits 0.2 s at most for each of the stop frame and the worker's end.
        """
        if self.dead:
            return
        try:
            self.channel.send(["stop"], timeout=0.2)
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
        self.dead = True
        _kill_group(self.pid)
        self.channel.close()
        status = self.zygote.wait(self.pid)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return _describe(status, killed=killed)


class _Output:
    """What a worker printed or logged, passed to its plugin's logger up to ``output_limit``
    characters (one call's, or its import's); the rest is dropped and counted."""

    __slots__ = ("dropped", "used", "worker")

    def __init__(self, worker: _Worker) -> None:
        self.worker = worker
        self.used = self.dropped = 0

    def log(self, message: list[Any]) -> None:
        """Pass on one ``["log", level, name, text]`` frame, or count it as dropped."""
        size = len(str(message[3]))
        if self.used + size > self.worker.policy.output_limit:
            self.dropped += size
        else:
            self.used += size
            self.worker._log(message[1], message[2], message[3])

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
        b"ok": max_frame if wanted else IGNORED_RESULT,
        b"raise": max_frame,
        b"api": max_frame,
        # At most output_limit characters, each at most 8 bytes in JSON (an escaped surrogate).
        b"log": min(max_frame, 8 * output_limit + 1024),
    }


#: The options a worker reports of each implementation (pluggy's, all booleans).
_HOOK_OPTIONS: Final = ("tryfirst", "trylast", "optionalhook", "hookwrapper", "wrapper")
_HOOK_FIELDS: Final = frozenset({"name", "argnames", *_HOOK_OPTIONS})
#: The most implementations, arguments, layers and notes a worker's report may hold.
_MAX_HOOKS: Final = 512
_MAX_ARGS: Final = 64
_MAX_NOTES: Final = 16
_MAX_NOTE: Final = 2000

SpecArgs = Callable[[str], Sequence[str] | None]


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


def _well_formed(hooks: object) -> list[dict[str, Any]]:
    """The implementations a worker reported, checked strictly (``ValueError`` says what is wrong).

    Each is a record of exactly a plain name, distinct plain argument names
    (and those with defaults, ``kwargnames``, which the host never passes) and
    boolean options; no name twice. Whether the hooks and arguments are
    specified is :func:`_judged`'s question.
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
        options = {option: hook[option] for option in _HOOK_OPTIONS}
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


def _judged(
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


def _ready_report(message: list[Any]) -> tuple[list[dict[str, Any]], tuple[str, ...], list[str]]:
    """A worker's ``ready`` frame read strictly: its implementations, layers and notes."""
    if len(message) != 2 or type(message[1]) is not dict:
        raise ValueError("its ready frame is not ['ready', {...}]")
    info = message[1]
    if set(info) != {"pid", "hooks", "layers", "notes"}:
        raise ValueError(f"its ready frame has the fields {sorted(info)}")
    layers, notes = info["layers"], info["notes"]
    if type(layers) is not list or len(layers) > _MAX_HOOKS:
        raise ValueError("its layers are not a list")
    if type(notes) is not list or len(notes) > _MAX_NOTES:
        raise ValueError(f"its notes are not a list (of at most {_MAX_NOTES})")
    if not all(type(note) is str and len(note) <= _MAX_NOTE for note in notes):
        raise ValueError(f"a note is not a text of at most {_MAX_NOTE} characters")
    return (
        _well_formed(info["hooks"]),
        tuple(_name(layer, "layer") for layer in layers),
        notes,
    )


def _read_hooks(path: Path) -> list[dict[str, Any]] | None:
    """The implementations a worker reported, as an earlier load wrote them (None: none usable).

    Checked as strictly as a worker's own report: the file is in the plugins
    folder, and what a plugin once reported must not fail every later start.
    """
    try:
        return _well_formed(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, RecursionError) as exc:
        if path.exists():
            _logger.warning("ignoring the kept hooks of a sandboxed plugin in %s: %s", path, exc)
        return None


def _write_hooks(path: Path, hooks: list[dict[str, Any]]) -> None:
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
_INHERITED: list[object] = []


def _call_if_alive(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    bound = method()
    if bound is not None:
        bound()


def _texts(values: Sequence[object]) -> bool:
    return all(type(value) is str for value in values)


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


class _Zygote:
    """The clean ``python -I`` process that forks the workers."""

    def __init__(self, policy: SandboxPolicy) -> None:
        ours, theirs = socket.socketpair()
        paths = _sdk_paths()
        code = (
            f"import sys; sys.path[:0] = {paths!r}; "
            "from services_ai_plugins._sandbox._worker import zygote_main; "
            f"zygote_main({theirs.fileno()})"
        )
        # A file, not a pipe: nobody reads it after the start, and a pipe could fill up.
        with tempfile.TemporaryFile() as errors:
            try:
                self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and code
                    [policy.python, "-I", "-c", code],
                    env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                    start_new_session=True,
                    cwd="/",
                )
            except OSError as exc:
                ours.close()
                raise SandboxError(
                    "sandbox", f"cannot start its zygote ({policy.python}): {exc}"
                ) from None
            finally:
                theirs.close()
            self.channel = Channel(ours)
            self._lock = threading.Lock()
            #: The number of the last request (answers repeat it).
            self._requests = 0
            #: Workers of forks answered too late: killed, to be reaped.
            self._orphans: list[int] = []
            try:
                hello = self.channel.receive(policy.start_timeout)
            except (TimeoutError, EOFError, OSError, WireError) as exc:
                self.process.kill()
                self.process.wait()
                self.channel.close()
                errors.seek(0)
                lines = errors.read().decode(errors="replace").strip().splitlines()
                detail = lines[-1] if lines else repr(exc)
                raise SandboxError("sandbox", f"its zygote did not start: {detail}") from None
        self.pid: Final = self.process.pid
        # Capabilities turn the lists JSON made of its tuples back into tuples.
        self.capabilities: Final = Capabilities(**hello[1]["capabilities"])

    def alive(self) -> bool:
        return self.process.poll() is None

    def fork(self, config: dict[str, Any], fd: int) -> int:
        """A new worker's pid, forked with ``fd`` as its channel.

        :raises SandboxError: when the zygote does not answer within its time.
        """
        try:
            with self._lock:
                self._reap_orphans()
                message = self._exchange("fork", config, (fd,))
        except (TimeoutError, EOFError, OSError, WireError) as exc:
            raise SandboxError(
                "sandbox", f"its zygote did not fork a worker: {str(exc) or type(exc).__name__}"
            ) from None
        pid = message[2] if message[0] == "forked" and len(message) == 3 else None
        if type(pid) is not int or pid <= 0:
            raise SandboxError("sandbox", f"its zygote answered a fork with {message!r}")
        return pid

    def wait(self, pid: int) -> int | None:
        """Reap the worker ``pid`` (killed already): its wait status (None: unknown)."""
        try:
            with self._lock:
                self._reap_orphans()
                message = self._exchange("wait", pid)
        except (TimeoutError, EOFError, OSError, WireError):
            return None
        status = message[3] if message[0] == "status" and len(message) == 4 else None
        return status if type(status) is int else None

    def _exchange(self, kind: str, value: object, fds: Sequence[int] = ()) -> list[Any]:
        """Send a request under a new number; the answer with that number (the lock held).

        An answer to an earlier request that the host gave up waiting for is dropped, so a
        slow answer never passes for another's: a late ``forked`` names a worker nobody
        knows, which is killed (the zygote reaps a worker only when asked to, so its pid is
        still its own) and reaped with the next request.
        """
        self._requests += 1
        number = self._requests
        deadline = monotonic() + _ZYGOTE_TIMEOUT
        try:
            self.channel.send([kind, number, value], fds=fds, timeout=_ZYGOTE_TIMEOUT)
        except TimeoutError:
            self.process.kill()  # part of the request may be written: its channel is lost
            raise
        while True:
            try:
                message = self.channel.receive(deadline - monotonic())
            except WireError:
                self.process.kill()  # out of step: a new zygote starts on the next call
                raise
            if len(message) > 1 and message[1] == number:
                return message
            late = message[2] if message[0] == "forked" and len(message) == 3 else None
            if type(late) is int and late > 0:
                _kill_group(late)
                self._orphans.append(late)

    def _reap_orphans(self) -> None:
        """Reap the workers of forks answered too late (the lock held)."""
        while self._orphans:
            self._exchange("wait", self._orphans.pop())

    def close(self) -> None:
        """Ask the zygote to exit (it kills the workers it forked); kill it if it does not."""
        if self._lock.acquire(timeout=2.0):
            try:
                with contextlib.suppress(OSError, WireError):
                    self.channel.send(["exit"], timeout=2.0)
            finally:
                self._lock.release()
        try:
            self.process.wait(2.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.channel.close()


def _kill_group(pid: int) -> None:
    """SIGKILL the process group of ``pid`` (or the process, before it made its group)."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
            break
        except (ProcessLookupError, PermissionError):
            continue


def _sdk_paths() -> list[str]:
    """The folders holding the SDK and its run-time dependencies, for the zygote's ``sys.path``.

    The same modules the worker's import guard lets plugins import besides the standard
    library (:data:`._worker.SDK_MODULES`).
    """
    found: dict[str, None] = {}
    for name in sorted(SDK_MODULES):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:  # a package or module installed here
            origin = Path(spec.origin).resolve()
            # A package's origin is its __init__.py: the folder holding it is one more up.
            holder = origin.parent.parent if spec.submodule_search_locations else origin.parent
            found[str(holder)] = None
    return list(found)


def _scratch_parent(sandbox: Sandbox, capabilities: Capabilities) -> Path:
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


def _dependency_closure(requirements: Iterable[Requirement]) -> list[str]:
    """The installed distributions ``requirements`` name, and all they require in turn.

    Each requirement's marker is judged for this interpreter (a requirement for
    another platform or Python version is left out), and the extras a requirement
    names are followed (``jsonschema[format]`` brings what its ``format`` extra
    requires; plain ``jsonschema`` does not). Distributions that are not installed
    are left out: the plugin cannot import them anyway. Canonical names, sorted.
    """
    import importlib.metadata  # noqa: PLC0415

    found: dict[str, set[str]] = {}  # distribution: the extras followed
    pending = [(requirement, "") for requirement in requirements]
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker is not None:
            try:
                if not requirement.marker.evaluate({"extra": extra}):
                    continue
            except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
                continue
        name = canonicalize_name(requirement.name)
        extras = {canonicalize_name(e) for e in requirement.extras} | {""}
        if name in found and extras <= found[name]:
            continue
        try:
            texts = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        new = extras - found.get(name, set())
        found.setdefault(name, set()).update(extras)
        for text in texts:
            try:
                required = Requirement(text)
            except InvalidRequirement:
                continue
            pending.extend((required, wanted) for wanted in new)
    return sorted(found)


def _module_holders(modules: Iterable[str]) -> list[str]:
    """The entries of this process's ``sys.path`` holding ``modules``, but for the SDK's.

    A worker's ``sys.path`` starts with the SDK's folders (:func:`_sdk_paths`); a
    declared dependency installed elsewhere on the host's path (a ``dist-packages``,
    a user's site folder) is found through these. They are only searched: the
    worker may read the modules' own folders and files, nothing else there.
    """
    entries = {os.path.realpath(entry): entry for entry in sys.path if entry}
    known = set(_sdk_paths())
    found: dict[str, None] = {}
    for name in modules:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        places = list(spec.submodule_search_locations or ())
        if not places and spec.origin and os.path.isabs(spec.origin):  # noqa: PTH117 - a str
            places = [spec.origin]
        for place in places:
            holder = os.path.dirname(os.path.realpath(place))  # noqa: PTH120 - a str
            if holder in entries and holder not in known:
                found[holder] = None
    return list(found)


def _distribution_modules(requirements: Sequence[str]) -> list[str]:
    """The top-level modules the installed distributions named in ``requirements`` provide."""
    import importlib.metadata  # noqa: PLC0415

    wanted = {canonicalize_name(name) for name in requirements}
    if not wanted:
        return []
    return sorted(
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if any(canonicalize_name(d) in wanted for d in distributions)
    )


def _cpu_seconds(pid: int) -> float | None:
    """The CPU time a process used so far (user and system), or None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        # The command name (field 2) may hold spaces: count the fields after its ")".
        fields = stat[stat.rindex(b")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _rss(pid: int) -> int | None:
    try:
        statm = Path(f"/proc/{pid}/statm").read_bytes()
        return int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def isolation_of(
    record_source: SourceKind, manifest: Manifest | None, policy: SandboxPolicy
) -> Isolation:
    """Where a plugin runs under ``policy`` (the manifest may only make it stricter)."""
    return policy.isolation_for(record_source, manifest.isolation if manifest is not None else None)
