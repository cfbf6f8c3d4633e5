"""Deferred hook calls: ``host.defer.<hook>(...)`` runs a NOTIFY hook after the request.

A deferred call is checked at once (a NOTIFY hook, its arguments those of the
specification, a :class:`Context` where the hook takes one: the request's by
default), held by the request scope it was made in (``host.request_context``,
see :class:`~._context.RequestScope`) and handed, when the request is over, to
the host's :class:`DeferredExecutor`, which runs ``host.call_hook(...)`` in
the background: isolation, metrics and the breaker apply as to any call.

The executor is a small protocol so that an app's own queue can take its place;
the default, :class:`BoundedExecutor`, has a few daemon threads and a bounded
queue. A full queue refuses the call: it is dropped and recorded as a host event
(``"defer-queue-full"``), never kept in an unbounded memory, never waited for by
the request.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable
from time import monotonic
from typing import Any, Final, Protocol, final, runtime_checkable

from ._context import CURRENT_CONTEXT, REQUEST_SCOPE, current_request_context, current_request_scope
from ._dispatch import INJECTED
from ._host_events import HostEvents
from .events import Context
from .hookspecs import HookInfo, HookKind

__all__ = ["DRAIN_TIMEOUT", "BoundedExecutor", "DeferredExecutor", "Deferrer", "HookSpecOf"]

#: How long ``PluginHost.close()`` waits for the deferred calls queued to run (seconds).
DRAIN_TIMEOUT: Final = 5.0

#: What the deferred calls need of the host: the hook's description and its arguments
#: (``KeyError`` for a hook nobody specified).
HookSpecOf = Callable[[str], tuple[HookInfo, tuple[str, ...]]]

_INJECTED: Final = frozenset(INJECTED)
_logger = logging.getLogger("services_ai_plugins.host")


@runtime_checkable
class DeferredExecutor(Protocol):
    """Runs deferred calls in the background: the seam for an app's own task queue.

    ``submit`` must never block the request: it returns False when the call
    cannot be taken (a full queue), and the host records that as a
    ``"defer-queue-full"`` host event. ``shutdown`` is called once, by
    ``PluginHost.close()``: it runs what was taken for up to ``timeout``
    seconds, then stops. The calls are plain closures over the host (they run
    in this process); each catches and logs its own exceptions.
    """

    def submit(self, call: Callable[[], None]) -> bool:
        """Take ``call`` to run later; False when it cannot (full): the call is dropped."""

    def shutdown(self, timeout: float) -> None:
        """Run the calls taken for up to ``timeout`` seconds, then stop; later submits fail."""


_STOP: Final = object()


@final
class BoundedExecutor:
    """The default :class:`DeferredExecutor`: ``workers`` daemon threads and a queue of at most
    ``max_queue`` calls waiting.

    The threads start at the first :meth:`submit` (again in a forked child:
    the parent's threads do not survive a fork). A call finding ``max_queue``
    calls waiting is refused at once (:meth:`submit` returns False), so memory
    stays bounded and the caller never waits. An exception escaping a call is
    logged on ``services_ai_plugins.host``; the thread goes on with the next.

    :raises ValueError: when ``workers`` or ``max_queue`` is not a whole number >= 1.
    """

    def __init__(self, *, workers: int = 2, max_queue: int = 1000) -> None:
        for name, value in (("workers", workers), ("max_queue", max_queue)):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1 (got {value!r})")
        #: How many threads run the calls.
        self.workers: Final = workers
        #: The most calls that wait for a thread; more are refused.
        self.max_queue: Final = max_queue
        self._lock = threading.Lock()
        self._queue: queue.Queue[object] | None = None
        self._threads: list[threading.Thread] = []
        self._waiting = 0
        self._pid: int | None = None
        self._shut = False
        if hasattr(os, "register_at_fork"):
            # A forked child has none of the parent's threads, and the lock may have been
            # held by one of them at the fork: the child starts afresh on its first submit.
            method = weakref.WeakMethod(self._forked)
            os.register_at_fork(after_in_child=lambda: _call_if_alive(method))

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._queue = None
        self._threads = []
        self._waiting = 0
        self._pid = None

    @property
    def pending(self) -> int:
        """How many calls wait for a thread now (at most :attr:`max_queue`)."""
        with self._lock:
            return self._waiting

    def submit(self, call: Callable[[], None]) -> bool:
        """Queue ``call``; False, at once, when :attr:`max_queue` calls already wait.

        :raises RuntimeError: after :meth:`shutdown`.
        """
        with self._lock:
            if self._shut:
                raise RuntimeError("the deferred calls' executor is shut down")
            if self._pid != os.getpid():
                self._start()
            if self._waiting >= self.max_queue:
                return False
            self._waiting += 1
            assert self._queue is not None
            self._queue.put_nowait(call)
            return True

    def _start(self) -> None:
        """Start the threads (first use, or first use in a forked child); the caller locks."""
        self._pid = os.getpid()
        self._queue = queue.Queue()  # bounded by _waiting, so the stop marks always fit
        self._waiting = 0
        self._threads = [
            threading.Thread(
                target=self._work,
                args=(self._queue,),
                name=f"services-ai-plugins-defer-{index}",
                daemon=True,
            )
            for index in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self, calls: queue.Queue[object]) -> None:
        while True:
            call = calls.get()
            try:
                if call is _STOP:
                    return
                with self._lock:
                    self._waiting -= 1
                assert callable(call)
                call()
            except BaseException:  # a call's escape never ends the thread
                _logger.exception("a deferred call failed")
            finally:
                calls.task_done()

    def shutdown(self, timeout: float) -> None:
        """Let the queued calls run for up to ``timeout`` seconds, drop the rest, stop the threads.

        A call still running when the time is up goes on in its daemon thread
        (a thread cannot be stopped); nothing waits for it.
        """
        with self._lock:
            if self._shut:
                return
            self._shut = True
            calls, threads = self._queue, list(self._threads)
            if self._pid != os.getpid():
                return  # never started in this process: nothing to drain
        assert calls is not None
        deadline = monotonic() + max(timeout, 0.0)
        with calls.all_tasks_done:
            while calls.unfinished_tasks:
                left = deadline - monotonic()
                if left <= 0:
                    break
                calls.all_tasks_done.wait(left)
        dropped = 0
        while True:
            try:
                calls.get_nowait()
            except queue.Empty:
                break
            calls.task_done()
            dropped += 1
        if dropped:
            with self._lock:
                self._waiting = 0
            _logger.warning("%d deferred calls were dropped: the executor shut down", dropped)
        for _ in threads:
            calls.put_nowait(_STOP)
        current = threading.current_thread()
        for thread in threads:
            if thread is not current:
                thread.join(max(deadline - monotonic(), 0.0))

    def __repr__(self) -> str:
        return f"<BoundedExecutor workers={self.workers} max_queue={self.max_queue}>"


def _call_if_alive(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    bound = method()
    if bound is not None:
        bound()


@final
class _Call:
    """One deferred call, checked: held by a request scope, then submitted (a ``Held``)."""

    __slots__ = ("_context", "_deferrer", "kwargs", "name", "tenant")

    def __init__(self, deferrer: Deferrer, name: str, kwargs: dict[str, Any]) -> None:
        self._deferrer = deferrer
        self.name = name
        self.kwargs = kwargs
        context = kwargs.get("context")
        self.tenant = context.tenant if isinstance(context, Context) else None
        # The caller's context variables (an app's request id, a tracing span), without the
        # request scope: the request is over when this runs, and a call deferred from inside
        # it runs at once rather than join a scope nobody submits any more.
        self._context = contextvars.copy_context()
        self._context.run(_leave_scopes)

    def submit(self) -> None:
        self._deferrer._submit(self)

    def drop(self, reason: str) -> None:
        self._deferrer._drop(self, reason)

    def run(self) -> None:
        """Run the hook call in the background (the executor calls this)."""
        self._context.run(self._deferrer._run, self)


def _leave_scopes() -> None:
    REQUEST_SCOPE.set(None)
    CURRENT_CONTEXT.set(None)


@final
class DeferredHook:
    """``host.defer.<name>``: defers one NOTIFY hook's calls (see :class:`Deferrer`)."""

    __slots__ = ("_argnames", "_deferrer", "_info", "_required")

    def __init__(self, deferrer: Deferrer, info: HookInfo, argnames: tuple[str, ...]) -> None:
        self._deferrer = deferrer
        self._info = info
        self._argnames = frozenset(argnames)
        self._required = self._argnames - _INJECTED

    def __call__(self, **kwargs: Any) -> None:
        name = self._info.name
        if "context" in self._argnames and "context" not in kwargs:
            context = current_request_context()
            if context is None:
                raise TypeError(
                    f"defer.{name}() needs context=Context(...), or a request context "
                    "(host.request_context(context)) around the call"
                )
            kwargs["context"] = context
        given = frozenset(kwargs)
        missing = self._required - given
        unknown = given - self._required - _INJECTED
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(sorted(missing))}")
            if unknown:
                parts.append(f"unknown {', '.join(sorted(unknown))}")
            raise TypeError(f"defer.{name}(): {'; '.join(parts)} argument(s)")
        if self._info.tenant_scoped and not isinstance(kwargs["context"], Context):
            raise TypeError(
                f"defer.{name}() needs context=Context(tenant=...), got "
                f"{type(kwargs['context']).__qualname__}"
            )
        self._deferrer._defer(_Call(self._deferrer, name, kwargs))

    def __repr__(self) -> str:
        return f"<DeferredHook {self._info.name}>"


@final
class Deferrer:
    """``host.defer``: NOTIFY hooks called after the request, in the background.

    ``host.defer.lead_created(lead=lead)`` (or ``host.defer["lead_created"]``)
    checks the call at once and returns None; the call runs later as
    ``host.call_hook("lead_created", lead=lead, context=...)`` on the host's
    executor. ``context`` defaults to the request context. Inside
    ``host.request_context(...)`` the call waits for the request to end (see
    :class:`~._context.RequestScope`); outside, it is submitted at once.

    :raises AttributeError: (``KeyError`` for ``defer[name]``) for a hook nobody specified.
    :raises TypeError: for a hook that is not a NOTIFY hook (its result would be
        lost: call it with ``host.hook``), a host-only hook, missing or unknown
        arguments, or no context.
    :raises RuntimeError: once the host is closed.
    """

    def __init__(
        self,
        *,
        call_hook: Callable[..., Any],
        spec_of: HookSpecOf,
        events: HostEvents,
        executor: DeferredExecutor | None = None,
    ) -> None:
        self._call_hook: Final = call_hook
        self._spec_of: Final = spec_of
        self._events: Final = events
        #: Where the deferred calls run (the host shuts it down when it closes).
        self.executor: Final[DeferredExecutor] = (
            executor if executor is not None else BoundedExecutor()
        )
        self._hooks: dict[str, DeferredHook] = {}
        self._lock = threading.Lock()
        self._outstanding = 0
        self._closed = False

    def __getattr__(self, name: str) -> DeferredHook:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(str(error.args[0])) from None

    def __getitem__(self, name: str) -> DeferredHook:
        hook = self._hooks.get(name)
        if hook is not None:
            return hook
        info, argnames = self._spec_of(name)
        if info.host_only:
            raise TypeError(f"defer.{name}: only the host itself fires {name!r}")
        if info.kind is not HookKind.NOTIFY:
            raise TypeError(
                f"defer.{name}: defer is for NOTIFY hooks, and {name!r} is a "
                f"{info.kind.name} hook whose results would be lost: use host.hook.{name}(...)"
            )
        hook = self._hooks[name] = DeferredHook(self, info, argnames)
        return hook

    @property
    def outstanding(self) -> int:
        """How many deferred calls were submitted and have not finished yet."""
        with self._lock:
            return self._outstanding

    def _defer(self, call: _Call) -> None:
        if self._closed:
            raise RuntimeError(f"defer.{call.name}(): the host is closed")
        scope = current_request_scope()
        if scope is not None:
            scope.hold(call)
        else:
            self._submit(call)

    def _submit(self, call: _Call) -> None:
        if self._closed:
            self._drop(call, "the host is closed")
            return
        with self._lock:
            self._outstanding += 1
        try:
            taken = self.executor.submit(call.run)
        except Exception as exc:  # an app's executor failing drops this call only
            taken = False
            _logger.exception("the deferred calls' executor refused %s", call.name)
            reason = f"the executor failed: {type(exc).__name__}: {exc}"
        else:
            reason = ""
        if taken:
            return
        with self._lock:
            self._outstanding -= 1
        if reason:
            self._drop(call, reason)
            return
        self._events.record(
            "defer-queue-full",
            f"a deferred call of {call.name} was dropped: the executor's queue is full",
            tenant=call.tenant,
            hook=call.name,
        )

    def _drop(self, call: _Call, reason: str) -> None:
        self._events.record(
            "defer-dropped",
            f"a deferred call of {call.name} was dropped: {reason}",
            tenant=call.tenant,
            hook=call.name,
        )

    def _run(self, call: _Call) -> None:
        try:
            self._call_hook(call.name, **call.kwargs)
        except Exception:  # a strict host's plugin failure (recorded), or the host's own trouble
            _logger.exception("the deferred call of %s failed", call.name)
        finally:
            with self._lock:
                self._outstanding -= 1

    def close(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Refuse new calls, let the submitted ones run for up to ``timeout`` s, then stop.

        The calls that had not finished by then are recorded as one ``"defer-dropped"`` event.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self.executor.shutdown(timeout)
        except Exception:  # an app's executor failing to stop does not stop the host closing
            _logger.exception("the deferred calls' executor failed to shut down")
        left = self.outstanding
        if left:
            self._events.record(
                "defer-dropped",
                f"{left} deferred calls had not finished when the host closed "
                f"(it waited up to {timeout:g} s)",
            )

    def __repr__(self) -> str:
        return f"<Deferrer {self.executor!r}>"
