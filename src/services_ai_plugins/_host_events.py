"""What happened to the host itself, as opposed to a plugin's failure: the host's events.

Some things go wrong around a plugin without being its fault: a call found every
worker of the plugin busy and gave up waiting, a deferred call found the queue
full. They must be visible (an operator sizes pools and queues from them) but
must never count against the plugin (no failure record, no breaker count). Each
is recorded here as a :class:`HostEvent`: logged on ``services_ai_plugins.host``,
kept in a bounded list (the newest :data:`MAX_EVENTS`), and counted per kind for
the life of the process. ``PluginHost.host_events()`` reads them.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from datetime import datetime, timezone
from typing import Final, final

import attrs

__all__ = ["MAX_EVENTS", "HostEvent", "HostEvents"]

#: The most events a host keeps (the oldest are dropped; the counts keep counting).
MAX_EVENTS: Final = 1000

_logger = logging.getLogger("services_ai_plugins.host")


@attrs.frozen(kw_only=True)
class HostEvent:
    """One event of the host (not a plugin's failure): what, where, when."""

    #: What happened, a short kebab-case word: ``"worker-busy"``, ``"defer-queue-full"``, ...
    kind: str
    #: What happened, for a person.
    message: str
    #: The plugin it concerns, if any.
    plugin_id: str | None = None
    #: The tenant it concerns, if any.
    tenant: str | None = None
    #: The hook (or ``route:<name>``) it concerns, if any.
    hook: str | None = None
    #: When it happened (UTC).
    at: datetime = attrs.field(factory=lambda: datetime.now(timezone.utc))


@final
class HostEvents:
    """The host's events of this process: the newest kept, all counted, each logged.

    Thread-safe; recording costs a lock and a log call, so it is for rare events.
    """

    def __init__(self, *, keep: int = MAX_EVENTS) -> None:
        self._lock = threading.Lock()
        self._events: deque[HostEvent] = deque(maxlen=keep)
        self._counts: Counter[str] = Counter()

    def record(
        self,
        kind: str,
        message: str,
        *,
        plugin_id: str | None = None,
        tenant: str | None = None,
        hook: str | None = None,
        level: int = logging.WARNING,
    ) -> HostEvent:
        """Keep, count and log one event; return it."""
        event = HostEvent(kind=kind, message=message, plugin_id=plugin_id, tenant=tenant, hook=hook)
        with self._lock:
            self._events.append(event)
            self._counts[kind] += 1
        _logger.log(level, "host event %s: %s", kind, message)
        return event

    def recent(self, kind: str | None = None) -> list[HostEvent]:
        """The events kept, oldest first (only those of ``kind``, if given)."""
        with self._lock:
            events = list(self._events)
        return events if kind is None else [event for event in events if event.kind == kind]

    def counts(self) -> dict[str, int]:
        """How many events of each kind happened in this process (dropped ones included)."""
        with self._lock:
            return dict(self._counts)
