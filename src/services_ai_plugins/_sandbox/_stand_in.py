"""The per-plugin stand-in the host registers with pluggy, and the plugin's workers.

A sandboxed plugin is registered with pluggy as a *stand-in*
(:class:`SandboxedPlugin`): an object whose hook implementations have the
plugin's names, argument names and ordering options, and whose bodies send the
call to the plugin's worker and wait for the answer. The call loop cannot tell
the difference, so isolation, metrics, failures and the breaker work as for
in-process plugins.

Behind the stand-in, :class:`PluginWorkers` keeps the plugin's workers: a
:class:`TenantPool` of up to ``workers_per_plugin`` per tenant (hooks bound to
no tenant get a pool of their own), each worker started when a call needs it,
its code verified first. A call takes a free worker of its tenant's pool, starts
one in a free slot, or waits for one at most ``wait_timeout`` seconds
(:class:`WorkerBusy` then). A call nested in another (an API request of the
plugin made the host fire a hook or a route of the same plugin and tenant) runs
in the worker of the call it is nested in: a context variable holds the slots
the running context is inside, so the nesting is found in the threads and tasks
the host's services use too (``asyncio.to_thread``, ``copy_context().run``).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import keyword
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
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
    WorkerBusy,
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
AsyncInvoke = Callable[[str, tuple[str, ...], tuple[Any, ...]], Coroutine[Any, Any, Any]]


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

    def waited(self, plugin_id: str, seconds: float) -> None: ...

    def _note(self, note: str) -> None: ...


class Slot:
    """A place for one worker in a :class:`TenantPool`: held by one call at a time."""

    __slots__ = ("busy", "loop", "pool", "worker")

    def __init__(self, pool: TenantPool) -> None:
        self.pool: Final = pool
        #: Its worker (None: none yet, or it was stopped; the call holding the slot starts one).
        self.worker: WorkerProcess | None = None
        #: Held by a call (and the calls nested in it).
        self.busy = False
        #: The event loop of the call holding it, when that call is awaited there.
        self.loop: asyncio.AbstractEventLoop | None = None


#: The slots the running context holds (innermost last): a nested call of the same plugin
#: and tenant runs in its slot's worker. A context variable, not the thread: it follows
#: into ``asyncio.to_thread`` and ``copy_context().run``, where the host's services may
#: serve a worker's API request.
_INSIDE: Final[contextvars.ContextVar[tuple[Slot, ...]]] = contextvars.ContextVar(
    "services_ai_plugins_sandbox_inside", default=()
)


class TenantPool:
    """The workers of one plugin for one tenant: ``size`` slots and the calls waiting for one.

    Thread-safe: ``cond`` guards the slots; a call releasing its slot wakes every
    thread waiting for one, and the event-loop task that has waited longest (they
    look again). One task, not all: with many tasks waiting, waking each at every
    release would keep the event loop busy with them (quadratic in the queue).
    """

    __slots__ = ("cond", "size", "sleepers", "slots", "tenant", "waiters")

    def __init__(self, tenant: str | None, size: int) -> None:
        self.tenant = tenant
        self.size = size
        self.cond: Final = threading.Condition(threading.Lock())
        self.slots: Final = tuple(Slot(self) for _ in range(size))
        #: Event-loop tasks waiting for a slot, oldest first: each woken once, through its
        #: loop; a waker answers False when its task no longer waits (woken in vain).
        self.waiters: list[Callable[[], bool]] = []
        #: Threads waiting on ``cond`` (none, the usual case: nobody to notify).
        self.sleepers = 0

    def sleep(self, seconds: float | None) -> None:
        """Wait on ``cond`` (held) until a slot is given back, at most ``seconds``."""
        self.sleepers += 1
        try:
            self.cond.wait(seconds)
        finally:
            self.sleepers -= 1

    def take(self) -> Slot | None:
        """A free slot, now, marked busy (``cond`` held): its worker alive if one is.

        The free slot whose worker served last is preferred (it is warm; the
        others stay idle, and the pool's bound takes the idlest first).
        """
        warm: Slot | None = None
        used = 0.0
        empty: Slot | None = None  # no worker, or a dead one: the call starts one
        for slot in self.slots:
            if slot.busy:
                continue
            worker = slot.worker
            if worker is not None and not worker.dead:
                if warm is None or worker.last_used > used:
                    warm, used = slot, worker.last_used
            elif empty is None:
                empty = slot
        chosen = warm or empty
        if chosen is not None:
            chosen.busy = True
        return chosen

    def give_back(self, slot: Slot) -> None:
        """Free ``slot`` and wake the calls waiting for one."""
        with self.cond:
            slot.busy = False
            slot.loop = None
            if self.sleepers:  # every one: one may be unloading the plugin, the others give up
                self.cond.notify_all()
            waiting = bool(self.waiters)
        if waiting:
            self.wake_one()

    def wake_one(self) -> None:
        """Wake the event-loop task that has waited longest and still waits, if any."""
        while True:
            with self.cond:
                if not self.waiters:
                    return
                wake = self.waiters.pop(0)
            if wake():
                return

    def live(self) -> list[WorkerProcess]:
        """Its live workers, in slot order."""
        return [
            worker for slot in self.slots if (worker := slot.worker) is not None and not worker.dead
        ]


class PluginWorkers:
    """One sandboxed plugin: its configuration and its workers (a pool per tenant).

    Calls for one tenant share that tenant's pool (up to ``workers_per_plugin``
    workers; one call at a time in each); calls for different tenants, and hooks
    bound to no tenant (key ``None``), run in workers of their own, so nothing a
    plugin keeps in memory or in its scratch folder while serving one tenant is
    there when it serves another.
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
        #: The pools of workers, by tenant (None: the hooks bound to no tenant; made on
        #: first use, never removed).
        self.pools: dict[str | None, TenantPool] = {}
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

    def pool_for(self, tenant: str | None) -> TenantPool:
        pool = self.pools.get(tenant)
        if pool is None:  # setdefault: two threads asking at once get the same pool
            size = self.sandbox.policy.workers_per_plugin
            pool = self.pools.setdefault(tenant, TenantPool(tenant, size))
        return pool

    def adopt(self, worker: WorkerProcess) -> None:
        """Put a worker started outside a call (the loader's) in a free slot of its pool."""
        pool = self.pool_for(worker.tenant)
        with pool.cond:
            for slot in pool.slots:
                if not slot.busy and slot.worker is None:
                    slot.worker = worker
                    return
        self.sandbox._gone(worker)  # no room: not kept
        worker.stop()

    def fill(self, tenant: str | None) -> None:
        """Start a worker in every free slot of ``tenant``'s pool that has none alive."""
        pool = self.pool_for(tenant)
        for slot in pool.slots:
            with pool.cond:
                if slot.busy or (slot.worker is not None and not slot.worker.dead):
                    continue
                slot.busy = True
            # Inside the slot: a start that fails may make the host unload the plugin now.
            token = _INSIDE.set((*_INSIDE.get(), slot))
            try:
                if self.closed:
                    raise SandboxError(self.plugin_id, "it was unloaded")
                slot.worker = self.start(tenant)
            finally:
                _INSIDE.reset(token)
                pool.give_back(slot)

    def evict(self, worker: WorkerProcess) -> bool:
        """Take an idle ``worker`` out of its slot (the pool's bound); False when it is busy."""
        pool = self.pools.get(worker.tenant)
        if pool is None:
            return True
        with pool.cond:
            for slot in pool.slots:
                if slot.worker is worker:
                    if slot.busy:
                        return False
                    slot.worker = None
        return True

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
        """Stop every worker of the plugin (a call in progress first ends, but one this
        context is inside: that one is cut short)."""
        inside = _INSIDE.get()
        # A call awaited on this thread's running loop cannot end while this waits: cut short.
        loop = _running_loop()
        for pool in list(self.pools.values()):
            for slot in pool.slots:
                with pool.cond:
                    while (
                        slot.busy and slot not in inside and (loop is None or slot.loop is not loop)
                    ):
                        pool.sleep(None)
                    worker, slot.worker = slot.worker, None
                if worker is not None:
                    self.sandbox._gone(worker)
                    worker.stop()
            with pool.cond:  # calls waiting for a slot give up now: it was unloaded
                if pool.sleepers:
                    pool.cond.notify_all()
                waiters, pool.waiters = pool.waiters, []
            for wake in waiters:
                wake()

    def _forget(self, worker: WorkerProcess) -> None:
        """Take ``worker`` out of its slot and the sandbox's live workers."""
        pool = self.pools.get(worker.tenant)
        if pool is not None:
            with pool.cond:
                for slot in pool.slots:
                    if slot.worker is worker:
                        slot.worker = None
        self.sandbox._gone(worker)

    def _acquire(self, pool: TenantPool, hook: str) -> tuple[Slot, bool]:
        """A slot for a call of ``hook``, and whether the call is nested in one holding it.

        A nested call (this context holds a slot of the pool) takes that slot, never
        another: its worker is waiting for the API answer that this call is part of.
        Otherwise a free slot, or one freed within ``wait_timeout`` seconds.

        :raises WorkerBusy: when none is free in time.
        :raises SandboxError: when the plugin was unloaded.
        """
        slot = self._nested(pool)
        if slot is not None:
            return slot, True
        began = deadline = 0.0
        with pool.cond:
            while True:
                if self.closed:
                    raise SandboxError(self.plugin_id, "it was unloaded")
                slot = pool.take()
                if slot is not None:
                    if deadline:
                        self.sandbox.waited(self.plugin_id, monotonic() - began)
                    return slot, False
                now = monotonic()
                if not deadline:  # the clock is read only once the call must wait
                    began, deadline = now, now + self.sandbox.policy.wait_timeout
                if now >= deadline:
                    self.sandbox.waited(self.plugin_id, now - began)
                    raise self._busy(pool, hook, now - began)
                pool.sleep(deadline - now)

    async def _aacquire(self, pool: TenantPool, hook: str) -> tuple[Slot, bool]:
        """:meth:`_acquire` from an event loop: a free slot now, else one freed within
        ``wait_timeout``, waited for in the loop (a release wakes each waiting task)."""
        slot = self._nested(pool)
        if slot is not None:
            return slot, True
        loop = asyncio.get_running_loop()
        began = monotonic()
        deadline = began + self.sandbox.policy.wait_timeout
        waited = False
        while True:
            with pool.cond:  # held by others only for a few operations, never across a wait
                if self.closed:
                    raise SandboxError(self.plugin_id, "it was unloaded")
                slot = pool.take()
                if slot is not None:
                    slot.loop = loop
                    if waited:
                        self.sandbox.waited(self.plugin_id, monotonic() - began)
                    return slot, False
                freed: asyncio.Future[None] = loop.create_future()
                pool.waiters.append(functools.partial(_wake_soon, loop, freed, pool))
            waited = True
            remaining = deadline - monotonic()
            if remaining <= 0:
                freed.cancel()  # no longer waiting: a release wakes the next task instead
                self.sandbox.waited(self.plugin_id, monotonic() - began)
                raise self._busy(pool, hook, monotonic() - began)
            try:
                await asyncio.wait_for(freed, remaining)
            except asyncio.TimeoutError:
                pass
            except asyncio.CancelledError:
                if freed.done() and not freed.cancelled():  # woken, but leaving: pass it on
                    pool.wake_one()
                raise

    def _nested(self, pool: TenantPool) -> Slot | None:
        """The slot of ``pool`` this context holds, if its worker can take a nested call now.

        It can when every call in progress on it waits for an API answer (a thread of
        the host's services calling in parallel with the one serving it cannot: it
        takes a slot of its own, as any call).
        """
        for slot in reversed(_INSIDE.get()):
            if slot.pool is pool:
                worker = slot.worker
                if worker is None or worker.dead or worker.depth == worker.serving:
                    return slot
                return None
        return None

    def _busy(self, pool: TenantPool, hook: str, waited: float) -> WorkerBusy:
        policy = self.sandbox.policy
        return WorkerBusy(
            self.plugin_id,
            pool.tenant,
            hook,
            waited,
            workers=pool.size,
            wait_timeout=policy.wait_timeout,
        )

    def invoke(self, hook: str, names: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        """Run ``hook`` in a worker with the stand-in's arguments (in ``names`` order)."""
        tenant, kwargs, api = self._hook_call(hook, names, args)
        return self._run(
            "call", hook, hook, f"{hook}()", tenant, kwargs, api, hook not in self.ignored
        )

    async def ainvoke(self, hook: str, names: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        """:meth:`invoke` from an event loop, which it never blocks (see :meth:`_arun`)."""
        tenant, kwargs, api = self._hook_call(hook, names, args)
        return await self._arun(
            "call", hook, hook, f"{hook}()", tenant, kwargs, api, hook not in self.ignored
        )

    def _hook_call(
        self, hook: str, names: tuple[str, ...], args: tuple[Any, ...]
    ) -> tuple[str | None, dict[str, Any], Any]:
        """The tenant, the arguments to send and the API of a hook call."""
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
        return tenant, kwargs, api

    def route(
        self,
        name: str,
        path: str,
        request: ApiRequest,
        *,
        api: Any = None,
        settings: Mapping[str, Any] | None = None,
        context: Any = None,
    ) -> ApiResponse:
        """Serve a request with a handler the plugin returned from ``register_routes``.

        It runs in a worker of the request's tenant, which asks the plugin for
        its handlers (``register_routes``, bound to no tenant) before its first
        request. ``api`` serves the worker's API requests during the call;
        ``settings`` and ``context`` travel to the handler, which gets those it
        names (see :class:`._channel.SandboxedRoute`).
        """
        what = f"route {path}"
        kwargs = self._route_call(what, request, api, settings, context)
        response = self._run(
            "route", name, f"route:{name}", what, request.tenant, kwargs, api, True
        )
        return self._response(what, response)

    async def aroute(
        self,
        name: str,
        path: str,
        request: ApiRequest,
        *,
        api: Any = None,
        settings: Mapping[str, Any] | None = None,
        context: Any = None,
    ) -> ApiResponse:
        """:meth:`route` from an event loop, which it never blocks (see :meth:`_arun`)."""
        what = f"route {path}"
        kwargs = self._route_call(what, request, api, settings, context)
        response = await self._arun(
            "route", name, f"route:{name}", what, request.tenant, kwargs, api, True
        )
        return self._response(what, response)

    def _route_call(
        self,
        what: str,
        request: ApiRequest,
        api: Any,
        settings: Mapping[str, Any] | None,
        context: Any,
    ) -> dict[str, Any]:
        """The arguments a route call sends: never an api or context of another tenant."""
        tenant = request.tenant
        for name, given in (("api", api), ("context", context)):
            bound = getattr(given, "tenant", tenant)
            if given is not None and bound != tenant:
                raise SandboxError(
                    self.plugin_id,
                    f"{what}: its {name} is for tenant {bound!r}, the request for {tenant!r}",
                )
        kwargs: dict[str, Any] = {"request": request}
        if settings is not None:
            kwargs["settings"] = settings
        if context is not None:
            kwargs["context"] = context
        return kwargs

    def _response(self, what: str, response: object) -> ApiResponse:
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
        label: str,
        what: str,
        tenant: str | None,
        kwargs: dict[str, Any],
        api: Any,
        wanted: bool,
    ) -> Any:
        payload = self._payload(what, kwargs)
        policy = self.sandbox.policy
        pool = self.pool_for(tenant)
        slot, nested = self._acquire(pool, label)
        token = None if nested else _INSIDE.set((*_INSIDE.get(), slot))
        try:
            if self.closed:
                raise SandboxError(self.plugin_id, "it was unloaded")
            worker = slot.worker
            if worker is None or worker.dead:
                worker = slot.worker = self.start(tenant)
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
            if token is not None:
                _INSIDE.reset(token)
            if not nested:
                pool.give_back(slot)

    async def _arun(  # noqa: PLR0917 - private; one call site per kind
        self,
        kind: str,
        name: str,
        label: str,
        what: str,
        tenant: str | None,
        kwargs: dict[str, Any],
        api: Any,
        wanted: bool,
    ) -> Any:
        """:meth:`_run` from an event loop, which it never blocks.

        The slot is taken at once or waited for in the loop (:meth:`_aacquire`); a
        worker is started, and one near its CPU limit retired, in a thread; the call
        itself is the worker's :meth:`WorkerProcess.acall` (non-blocking I/O on the
        loop, the deadline kept by the loop).
        """
        payload = self._payload(what, kwargs)
        policy = self.sandbox.policy
        pool = self.pool_for(tenant)
        slot, nested = await self._aacquire(pool, label)
        token = None if nested else _INSIDE.set((*_INSIDE.get(), slot))
        try:
            if self.closed:
                raise SandboxError(self.plugin_id, "it was unloaded")
            worker = slot.worker
            if worker is None or worker.dead:
                # In a thread that carries this context (the slot): see fill().
                worker = slot.worker = await asyncio.to_thread(self.start, tenant)
            self.recent = worker
            try:
                target: str | int = name
                if kind == "route":
                    if worker.route_numbers is None:
                        await worker.acall(**self._routes_call())
                    target = self._number(worker, name, what)
                result = await worker.acall(
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
                await asyncio.to_thread(self._retire_if_spent, worker)
            return result
        finally:
            if token is not None:
                _INSIDE.reset(token)
            if not nested:
                pool.give_back(slot)

    def _payload(self, what: str, kwargs: dict[str, Any]) -> Any:
        try:
            return encode(kwargs)
        except WireError as exc:
            raise SandboxError(
                self.plugin_id, f"cannot send the arguments of {what}: {exc}"
            ) from None

    def _handler(self, worker: WorkerProcess, name: str, what: str) -> int:
        """The number ``worker`` knows the route ``name`` by (its handlers built on first use)."""
        if worker.route_numbers is None:
            worker.call(**self._routes_call())
        return self._number(worker, name, what)

    def _routes_call(self) -> dict[str, Any]:
        """The call of ``register_routes`` that has a worker build the plugin's handlers."""
        if not self.routes_asked:
            raise SandboxError(self.plugin_id, "a route: register_routes was never called")
        return {
            "target": "register_routes",
            "tenant": None,
            "arguments": encode({"plugin_id": self.plugin_id}),
            "wanted": True,
            "what": "register_routes()",
            "api": self.routes_api,
            "timeout": self.sandbox.policy.timeout,
        }

    def _number(self, worker: WorkerProcess, name: str, what: str) -> int:
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
            function = _proxy(self.plugin_id, name, tuple(argnames), self.invoke, self.ainvoke)
            setattr(
                function,
                f"{PROJECT_NAME}_impl",
                {option: hook[option] for option in HOOK_OPTIONS} | {"specname": None},
            )
            functions[name] = function
        return SandboxedPlugin(self, functions)


class SandboxedPlugin:
    """The stand-in pluggy holds for a plugin that runs in worker processes (a pool per tenant)."""

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
        """A live worker's process id per tenant (None: the hooks bound to no tenant).

        With ``workers_per_plugin`` above 1, the worker in the tenant's first slot
        that has one; :meth:`all_pids` lists them all.
        """
        return {tenant: pids[0] for tenant, pids in self.all_pids().items()}

    def all_pids(self) -> dict[str | None, tuple[int, ...]]:
        """Every live worker's process id, by tenant (in slot order; tenants with none left out)."""
        found = {}
        for tenant, pool in list(self._owner.pools.items()):
            pids = tuple(worker.pid for worker in pool.live())
            if pids:
                found[tenant] = pids
        return found

    def __repr__(self) -> str:
        count = sum(len(pids) for pids in self.all_pids().values())
        return f"<sandboxed plugin {self.plugin_id!r}, {count} live workers>"


def _proxy(
    plugin_id: str, hook: str, argnames: tuple[str, ...], invoke: Invoke, ainvoke: AsyncInvoke
) -> Callable[..., Any]:
    """A function named ``hook`` taking ``argnames`` that hands them to ``invoke``.

    Its ``aio`` attribute is an ``async def`` taking the same arguments that awaits
    ``ainvoke`` with them: what the host's async call loop awaits.
    """
    for name in (hook, *argnames):
        if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
            raise PackageError(
                f"its worker reported an invalid hook or argument name {name!r}", path=plugin_id
            )
    params = ", ".join(argnames)
    packed = f"({params}{',' if argnames else ''})"
    source = (
        f"def {hook}({params}):\n    return _invoke({hook!r}, _names, {packed})\n"
        f"async def _aio({params}):\n    return await _ainvoke({hook!r}, _names, {packed})\n"
    )
    namespace: dict[str, Any] = {"_invoke": invoke, "_ainvoke": ainvoke, "_names": argnames}
    exec(source, namespace)  # noqa: S102 - names checked above: identifiers only
    function: Callable[..., Any] = namespace[hook]
    function.__qualname__ = f"<sandboxed {plugin_id}>.{hook}"
    aio = namespace["_aio"]
    aio.__name__ = hook
    aio.__qualname__ = f"<sandboxed {plugin_id}>.{hook}.aio"
    function.aio = aio  # type: ignore[attr-defined]  # what the async call loop awaits
    return function


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if one is."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _wake_soon(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], pool: TenantPool
) -> bool:
    """Wake a task waiting for a slot, from any thread; False when it no longer waits
    (it gave up, or its loop is closed)."""
    if future.done():
        return False
    try:
        loop.call_soon_threadsafe(_set_done, future, pool)
    except RuntimeError:
        return False
    return True


def _set_done(future: asyncio.Future[None], pool: TenantPool) -> None:
    if future.done():  # it gave up since it was picked: the next waiting task looks instead
        pool.wake_one()
    else:
        future.set_result(None)


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
