"""The host's change signal: callbacks told that the plugins' snapshot changed.

``PluginHost.add_change_listener(callback)`` registers a callable taking no
arguments; :meth:`ChangeListeners.notify` calls each one after the host took a
new snapshot (a plugin approved, enabled, disabled, suspended, resumed or
uninstalled, here or in another process). A listener's exception is logged and
stops nothing. Notices coalesce: a change noticed while the listeners are being
told (in any thread) makes one more round, in the thread telling them, rather
than a second round at the same time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final, final

__all__ = ["ChangeListener", "ChangeListeners"]

#: A change listener: called with no arguments once the host's snapshot changed.
ChangeListener = Callable[[], None]

_logger: Final = logging.getLogger("services_ai_plugins.host")


@final
class ChangeListeners:
    """The change listeners of one host, in the order added; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[int, ChangeListener] = {}
        self._next = 0
        self._telling = False
        self._again = False

    def add(self, callback: ChangeListener) -> Callable[[], None]:
        """Register ``callback``; return the function that unregisters it (idempotent).

        :raises TypeError: when ``callback`` is not callable.
        """
        if not callable(callback):
            raise TypeError(
                f"a change listener must be callable, got {type(callback).__qualname__}"
            )
        with self._lock:
            key = self._next
            self._next += 1
            self._listeners[key] = callback

        def unsubscribe() -> None:
            with self._lock:
                self._listeners.pop(key, None)

        return unsubscribe

    def __len__(self) -> int:
        with self._lock:
            return len(self._listeners)

    def notify(self) -> None:
        """Call every listener (again, once, if another change is noticed meanwhile)."""
        with self._lock:
            if not self._listeners:
                return
            if self._telling:
                self._again = True
                return
            self._telling = True
        try:
            while True:
                with self._lock:
                    self._again = False
                    listeners = list(self._listeners.values())
                for listener in listeners:
                    try:
                        listener()
                    except Exception:  # the app's listener: never the host's trouble
                        _logger.exception("change listener %r failed", listener)
                with self._lock:
                    if not self._again:
                        return
        finally:
            with self._lock:
                self._telling = False
