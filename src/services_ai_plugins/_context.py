"""The context of the tenant-scoped hook call running now, as ``api.context`` reads it.

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

from contextvars import ContextVar
from typing import Final

from .events import Context

__all__ = ["CURRENT_CONTEXT", "context_for", "current_request_context"]

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


#: The context of the web request (or job) being handled, as the app set it.
REQUEST_CONTEXT: Final[ContextVar[Context | None]] = ContextVar(
    "services_ai_plugins.request_context", default=None
)


def current_request_context() -> Context | None:
    """The context the app set for the request being handled (``host.request_context``), if any."""
    return REQUEST_CONTEXT.get()
