"""The data-access log's buffer: every granted API call on tenant data, batched (issue 22).

A :class:`~services_ai_plugins.PluginHost` keeps one :class:`AccessLog`; the API's
permission wrapper adds one entry per granted call (no storage write), and the
host's flush takes them all and writes them in one batch
(:meth:`Storage.record_access`). The buffer is bounded: when it is full, the
oldest entries are dropped, counted, and the drop is logged and kept in
:attr:`AccessLog.dropped`, so a plugin that floods calls cannot make its earlier
records vanish unseen.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Final, TypeVar, final

import attrs

from ._storage._protocol import MAX_ACCESS_IDS, AccessRecord

__all__ = ["AccessLog", "AccessPolicy", "AskedFor", "addresses", "asked_for", "carries_no_id"]

_logger: Final = logging.getLogger("services_ai_plugins.host")
_now: Final = time.time

#: The longest asked-for id kept (longer ones are cut): an argument of the plugin's, which
#: may be anything, not an id the host services gave.
MAX_ASKED_ID: Final = 200

#: What a call asked for, read from its arguments: (kind, ids), or None when nothing.
AskedFor = Callable[[tuple[Any, ...], dict[str, Any]], "tuple[str, tuple[str, ...]] | None"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _positive(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"AccessPolicy.{attribute.name} must be an int >= 1 (got {value!r})")


def _positive_delta(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ValueError(
            f"AccessPolicy.{attribute.name} must be a positive timedelta (got {value!r})"
        )


@attrs.frozen(kw_only=True)
class AccessPolicy:
    """What a host keeps of the data-access log.

    :param enabled: record granted API calls on tenant data at all.
    :param retention: how long records are kept; older ones are pruned by the
        host at a flush, at most once per ``prune_interval``.
    :param buffer: how many records wait in memory between two flushes; past it
        the oldest are dropped (counted in :attr:`AccessLog.dropped`, logged).
    :param prune_interval: the least time between two prunes.
    """

    enabled: bool = True
    retention: timedelta = attrs.field(default=timedelta(days=90), validator=_positive_delta)
    buffer: int = attrs.field(default=10_000, validator=_positive)
    prune_interval: timedelta = attrs.field(default=timedelta(hours=1), validator=_positive_delta)


class _Listed(tuple):  # type: ignore[type-arg]
    """What a list call returned, read at the call: (kind, first ids, count)."""

    __slots__ = ()


# (plugin, tenant, method, permission, what the call returned, time.time()): a single record
# is kept as it is (the host services' frozen record) and read at the flush, off the call path;
# a list is read at once (its kind, first ids and length), as the plugin may change it later.
_Entry = tuple[str, str, str, str, object, float]


@final
class AccessLog:
    """The in-memory buffer of a host's access records (thread-safe, bounded).

    :param capacity: how many entries may wait; the oldest are dropped past it.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be an int >= 1 (got {capacity!r})")
        self.capacity: Final = capacity
        self._lock: Final = threading.Lock()
        self._entries: deque[_Entry] = deque()
        self._pending_drops = 0
        #: Every entry dropped so far because the buffer was full (never reset).
        self.dropped = 0

    def __repr__(self) -> str:
        return f"AccessLog(capacity={self.capacity}, waiting={len(self._entries)})"

    def __len__(self) -> int:
        return len(self._entries)

    def add(
        self, plugin_id: str, tenant: str, method: str, permission: str, result: object
    ) -> None:
        """Keep one granted call, with the records it returned (``result``)."""
        if isinstance(result, (list, tuple)):
            result = _Listed(_records_of(result))
        self._append((plugin_id, tenant, method, permission, result, _now()))

    def add_asked(
        self,
        plugin_id: str,
        tenant: str,
        method: str,
        permission: str,
        asked: tuple[str, tuple[str, ...]],
    ) -> None:
        """Keep one granted call that returned no record, with what it asked for: (kind, ids)."""
        self._append((plugin_id, tenant, method, permission, _Listed((*asked, 0)), _now()))

    def _append(self, entry: tuple[str, str, str, str, object, float]) -> None:
        with self._lock:
            entries = self._entries
            if len(entries) >= self.capacity:  # full: the oldest goes, counted
                entries.popleft()
                self.dropped += 1
                self._pending_drops += 1
            entries.append(entry)

    def take(self) -> tuple[list[AccessRecord], int]:
        """Every waiting entry as records, oldest first, and how many were dropped since the
        last take (logged here)."""
        with self._lock:
            entries, self._entries = self._entries, deque()
            dropped, self._pending_drops = self._pending_drops, 0
        if dropped:
            _logger.warning(
                "%d data-access records were dropped: more calls than the access log's buffer "
                "(AccessPolicy.buffer=%d) holds between two flushes",
                dropped,
                self.capacity,
            )
        return [_record(entry) for entry in entries], dropped

    def put_back(self, records: Sequence[AccessRecord]) -> None:
        """Return records a flush could not store, before the newer ones (the bound holds)."""
        with self._lock:
            older = [
                (
                    r.plugin_id,
                    r.tenant,
                    r.method,
                    r.permission,
                    _Listed((r.record_type, r.record_ids, r.count)),
                    r.at.timestamp(),
                )
                for r in records
            ]
            merged = deque([*older, *self._entries])
            while len(merged) > self.capacity:
                merged.popleft()
                self.dropped += 1
                self._pending_drops += 1
            self._entries = merged


def _record(entry: _Entry) -> AccessRecord:
    plugin_id, tenant, method, permission, result, at = entry
    try:
        record_type, ids, count = result if isinstance(result, _Listed) else _records_of(result)
    except Exception:  # a host's own record whose id cannot be read: the call is still kept
        _logger.exception("cannot read the record %s() returned for the access log", method)
        record_type, ids, count = type(result).__name__.lower(), (), 1
    return AccessRecord(
        plugin_id=plugin_id,
        tenant=tenant,
        method=method,
        permission=permission,
        record_type=record_type,
        record_ids=ids,
        count=count,
        at=datetime.fromtimestamp(at, timezone.utc),
    )


def _records_of(result: object) -> tuple[str | None, tuple[str, ...], int]:
    """The kind, ids (at most MAX_ACCESS_IDS) and number of the records a call returned."""
    if result is None:
        return None, (), 0
    if isinstance(result, (list, tuple)):
        if not result:
            return None, (), 0
        kind = _kind(result[0])
        ids = tuple(str(getattr(r, "id", "")) for r in result[:MAX_ACCESS_IDS])
        return kind, ids, len(result)
    ident = getattr(result, "id", None)
    if ident is None:
        return None, (), 0
    return _kind(result), (str(ident),), 1


def _kind(record: object) -> str | None:
    if getattr(record, "id", None) is None:
        return None
    return type(record).__name__.lower()


def carries_no_id(result: object) -> bool:
    """Whether a call's result identifies no record (None, an empty list, a value without an id)."""
    if result is None:
        return True
    if isinstance(result, (list, tuple)):
        return not result
    return getattr(result, "id", None) is None


def addresses(kind: str, parameter: str) -> Callable[[_F], _F]:
    """Mark an API method whose ``parameter`` names what it addresses, as ids of ``kind`` in the
    access log (``send_email``'s recipients); put it under ``@requires``."""

    def mark(method: _F) -> _F:
        method.__services_ai_addresses__ = (kind, parameter)  # type: ignore[attr-defined]
        return method

    return mark


def asked_for(method: Callable[..., Any]) -> AskedFor | None:
    """How to read, from a call's arguments, the ids a call of ``method`` asked for.

    The parameter marked with :func:`addresses`, else the first one named ``<kind>_id`` (one
    id) or ``<kind>_ids`` (several): ``get_lead(lead_id)`` asks for a ``lead``. None when the
    method has no such parameter.
    """
    marked = getattr(method, "__services_ai_addresses__", None)
    names = list(inspect.signature(method).parameters)[1:]  # after self
    if marked is not None:
        kind, name = marked
    else:
        for name in names:
            if name.endswith("_id") and len(name) > 3:
                kind = name[:-3]
                break
            if name.endswith("_ids") and len(name) > 4:
                kind = name[:-4]
                break
        else:
            return None
    position = names.index(name)

    def asked(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, tuple[str, ...]] | None:
        if name in kwargs:
            value = kwargs[name]
        elif position < len(args):
            value = args[position]
        else:
            return None
        ids = _asked_ids(value)
        return (kind, ids) if ids else None

    return asked


def _asked_ids(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value[:MAX_ASKED_ID],)
    if isinstance(value, (list, tuple)):
        texts = (v[:MAX_ASKED_ID] for v in value if isinstance(v, str))
        return tuple(itertools.islice(texts, MAX_ACCESS_IDS))
    return ()  # anything else (a generator the call consumed, a number): nothing to tell
