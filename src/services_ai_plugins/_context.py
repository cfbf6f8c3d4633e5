"""The context of the hook call running now, and of the request being served.

Two variables, for two owners:

- :data:`CURRENT_CONTEXT` is the running tenant-scoped hook call's, as
  ``api.context`` reads it (below).
- :data:`REQUEST_SCOPE` is the adapter's: ``host.request_context(context)``
  enters a :class:`RequestScope` for the request being served, so code deep in
  the app (model signals, helpers) fires hooks for the request's tenant and
  user without passing the context along (:func:`current_request_context`),
  and holds the request's deferred calls (``host.defer``) until it ends.

The host's call loop (and, in a sandbox worker, the worker's call) sets
:data:`CURRENT_CONTEXT` once per tenant-scoped call and resets it when the call
returns. Being a :class:`contextvars.ContextVar`, it follows the call into the
threads a plugin starts with ``contextvars.copy_context().run`` and into the
asyncio tasks it creates, and nested calls see their own.

A plugin can find the variable and set it itself: that gains it nothing. An
``api`` acts for the tenant it was built for, never for the variable's, and
:func:`context_for` hands an ``api`` the variable's context only when it is a
:class:`Context` of that same tenant.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Final, Literal, Protocol, final

from .events import Context

__all__ = [
    "CURRENT_CONTEXT",
    "REQUEST_SCOPE",
    "DeferMode",
    "Held",
    "RequestScope",
    "context_for",
    "current_request_context",
    "current_request_scope",
]

#: The context of the tenant-scoped hook call running now (None outside one).
CURRENT_CONTEXT: Final[ContextVar[Context | None]] = ContextVar(
    "services_ai_plugins.context", default=None
)


def context_for(tenant: str | None) -> Context | None:
    """The running call's context if it is one of ``tenant`` (an ``api``'s own), else None."""
    current = CURRENT_CONTEXT.get()
    if isinstance(current, Context) and tenant is not None:
        owner = current.tenant
        if type(owner) is str and owner == tenant:
            return current
    return None


#: The request scope entered now (None outside ``host.request_context(...)``).
REQUEST_SCOPE: Final[ContextVar[RequestScope | None]] = ContextVar(
    "services_ai_plugins.request", default=None
)

#: When a request scope hands its deferred calls over: ``"exit"`` when its block exits
#: without an exception, ``"manual"`` when the adapter calls :meth:`RequestScope.submit`.
DeferMode = Literal["exit", "manual"]

_MODES: Final = ("exit", "manual")


class Held(Protocol):
    """A deferred call held by a request scope until the request ends (see ``host.defer``)."""

    def submit(self) -> None:
        """Hand the call to its executor (it runs in the background)."""

    def drop(self, reason: str) -> None:
        """Give the call up, recording why (it never runs)."""


def current_request_scope() -> RequestScope | None:
    """The request scope entered now, if any."""
    return REQUEST_SCOPE.get()


def current_request_context() -> Context | None:
    """The context of the request scope entered now (``host.request_context``), else None.

    A tenant-scoped hook called without ``context=`` uses it.
    """
    scope = REQUEST_SCOPE.get()
    return scope.context if scope is not None else None


@final
class RequestScope:
    """One request's context, and the deferred calls it holds; entered once, with ``with``
    or ``async with``.

    Inside the block :func:`current_request_context` (``host.current_context()``)
    is ``context``, in this thread or task and in the threads and tasks started
    from it (a :class:`~contextvars.ContextVar`: threads started with
    ``contextvars.copy_context().run``, asyncio tasks). Blocks nest: the inner
    one's context applies until it exits.

    Deferred calls made inside (``host.defer.<hook>(...)``) are held here, and
    handed to the host's executor when the request is over:

    - ``defer="exit"`` (the default): when the block exits without an
      exception. A nested block hands them to the enclosing block instead, so
      they wait for the whole request.
    - ``defer="manual"``: when the adapter calls :meth:`submit` (from its
      framework's "after commit" hook, say); calls deferred after a
      :meth:`submit` are held again until the next one. Calls still held when
      the block exits wait for :meth:`submit` or :meth:`discard`.

    An exception leaving the block drops every call held (as a rolled-back
    transaction would), each recorded as a ``"defer-dropped"`` host event.

    :raises TypeError: when ``context`` is not a :class:`Context`.
    :raises ValueError: when ``defer`` is neither ``"exit"`` nor ``"manual"``.
    """

    __slots__ = ("_closed", "_entered", "_held", "_lock", "_parent", "_token", "context", "defer")

    def __init__(self, context: Context, *, defer: DeferMode = "exit") -> None:
        if not isinstance(context, Context):
            raise TypeError(f"request_context() takes a Context, got {type(context).__qualname__}")
        if defer not in _MODES:
            raise ValueError(f"defer must be 'exit' or 'manual', got {defer!r}")
        #: The request's context: its tenant and user.
        self.context: Final = context
        #: When the held calls are handed over (see the class).
        self.defer: Final[DeferMode] = defer
        self._lock = threading.Lock()
        self._held: list[Held] = []
        self._entered = False
        self._closed = False
        self._parent: RequestScope | None = None
        self._token: Token[RequestScope | None] | None = None

    # -- entering and leaving --------------------------------------------------------------------

    def __enter__(self) -> RequestScope:
        if self._entered:
            raise RuntimeError("a request scope is entered once: make a new one per request")
        self._entered = True
        self._parent = REQUEST_SCOPE.get()
        self._token = REQUEST_SCOPE.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        token, self._token = self._token, None
        if token is not None:
            REQUEST_SCOPE.reset(token)
        with self._lock:
            self._closed = True
        if exc_type is not None:
            self.discard(f"the request failed ({exc_type.__qualname__})")
        elif self.defer == "exit":
            parent = self._parent
            if parent is not None and parent._hold_all(self._take()):
                return
            self.submit()

    async def __aenter__(self) -> RequestScope:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)

    # -- the held calls --------------------------------------------------------------------------

    @property
    def held(self) -> int:
        """How many deferred calls wait here now."""
        with self._lock:
            return len(self._held)

    def hold(self, call: Held) -> None:
        """Keep a deferred call until the request is over (see the class).

        After an ``"exit"`` block exited (a thread of the request outlived
        it) the request is over: the call is submitted at once.
        """
        with self._lock:
            if not (self._closed and self.defer == "exit"):
                self._held.append(call)
                return
        call.submit()

    def submit(self) -> int:
        """Hand every call held now to its executor, in the order deferred; return how many.

        For ``defer="manual"``: call it once the request's changes are committed.
        """
        calls = self._take()
        for call in calls:
            call.submit()
        return len(calls)

    def discard(self, reason: str = "discarded by the adapter") -> int:
        """Drop every call held now, each recorded as dropped with ``reason``; return how many.

        For ``defer="manual"``: call it when the request's changes were rolled back.
        """
        calls = self._take()
        for call in calls:
            call.drop(reason)
        return len(calls)

    def _take(self) -> list[Held]:
        with self._lock:
            calls, self._held = self._held, []
        return calls

    def _hold_all(self, calls: list[Held]) -> bool:
        """Take a nested block's calls; False when this block is over (the caller submits)."""
        with self._lock:
            if self._closed and self.defer == "exit":
                return False
            self._held.extend(calls)
            return True

    def __repr__(self) -> str:
        return (
            f"<RequestScope tenant={self.context.tenant!r} defer={self.defer!r} held={self.held}>"
        )
