"""The change feed of PostgresStorage: a thread that LISTENs and calls the watchers back."""

from __future__ import annotations

import itertools
import json
import logging
import random
import selectors
import socket
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import psycopg

__all__ = ["CHANNEL", "Listener"]

#: The reconnection jitter's own generator: a library's background thread must not draw
#: from (and so move) the app's global ``random`` state, which an app or its tests may seed.
_JITTER: Final = random.Random()  # noqa: S311 - jitter, not secrecy

_logger = logging.getLogger("services_ai_plugins.storage")

#: The channel every commit notifies; the payload is JSON naming the schema and
#: the new generation: ``{"schema": "services_ai_plugins", "generation": 42}``.
CHANNEL: Final = "services_ai_plugins_changes"

#: How long the change feed waits before reconnecting: doubled after each
#: failed attempt, up to the maximum (seconds, with jitter).
_RETRY_FIRST: Final = 0.1
_RETRY_MAX: Final = 10.0

#: How long close() waits for the change feed's thread to end (seconds).
_STOP_TIMEOUT: Final = 5.0


class Listener:
    """A daemon thread that LISTENs on a connection of its own and calls the watchers back."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        driver_error: type[Exception],
        schema: str,
        name: str,
    ) -> None:
        self._connect = connect
        self._driver_error = driver_error
        self._schema = schema
        self._lock = threading.Lock()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._keys = itertools.count()
        self._stopping = threading.Event()
        #: Set once the first attempt to listen is over, whether it worked or not.
        self._ready = threading.Event()
        #: A write to one end wakes the thread from waiting on the server.
        self._wake_reader, self._wake_writer = socket.socketpair()
        #: Whether the watchers may have missed changes: a connection was lost
        #: or could not be made since they were last called.
        self._missed = False
        self._listening = False
        #: The server process of the listening connection, None while there is none.
        self.backend_pid: int | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def add(self, callback: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            key = next(self._keys)
            self._callbacks[key] = callback

        def stop() -> None:
            with self._lock:
                self._callbacks.pop(key, None)

        return stop

    def wait_ready(self, timeout: float) -> None:
        self._ready.wait(timeout)

    def stop(self) -> None:
        self._stopping.set()
        with suppress(OSError):
            self._wake_writer.send(b"\0")
        if threading.current_thread() is not self._thread:
            self._thread.join(_STOP_TIMEOUT)
        if not self._thread.is_alive():
            self._wake_reader.close()
            self._wake_writer.close()

    def _run(self) -> None:
        delay = _RETRY_FIRST
        while not self._stopping.is_set():
            try:
                self._session()
            except Exception as exc:
                if self._stopping.is_set():
                    break
                expected = isinstance(exc, self._driver_error)
                if self._listening:
                    self._listening = False
                    self._missed = True
                    delay = _RETRY_FIRST
                    _logger.warning(
                        "change feed of schema %s lost its connection (%s): reconnecting",
                        self._schema,
                        exc,
                        exc_info=not expected,
                    )
                    self._call_back()
                else:
                    # One warning per outage; the retries that follow are debug noise.
                    _logger.log(
                        logging.DEBUG if self._missed else logging.WARNING,
                        "change feed of schema %s cannot listen (%s): retrying in %.1f s",
                        self._schema,
                        exc,
                        delay,
                        exc_info=not expected,
                    )
                    self._missed = True
            finally:
                self.backend_pid = None
                self._ready.set()
            # Jitter: processes that lost the server together do not come back in step.
            if self._stopping.wait(delay * _JITTER.uniform(0.5, 1.0)):
                break
            delay = min(delay * 2, _RETRY_MAX)

    def _session(self) -> None:
        """Connect, listen and dispatch until close() or an error."""
        with self._connect() as conn:
            if self._stopping.is_set():
                return
            conn.execute("LISTEN " + CHANNEL)
            self.backend_pid = conn.info.backend_pid
            self._listening = True
            self._ready.set()
            if self._missed:
                self._missed = False
                _logger.info("change feed of schema %s listens again", self._schema)
                self._call_back()
            with selectors.DefaultSelector() as selector:
                selector.register(conn.fileno(), selectors.EVENT_READ)
                selector.register(self._wake_reader, selectors.EVENT_READ)
                while not self._stopping.is_set():
                    # Whatever has arrived, without waiting; a lost connection raises here.
                    for notify in conn.notifies(timeout=0):
                        if self._concerns_us(notify.payload):
                            self._call_back()
                    selector.select()
        self._listening = False

    def _concerns_us(self, payload: str) -> bool:
        try:
            schema = json.loads(payload)["schema"]
        except (ValueError, TypeError, KeyError):
            return True  # not our format: refreshing is the safe side
        return bool(schema == self._schema)

    def _call_back(self) -> None:
        with self._lock:
            callbacks = list(self._callbacks.values())
        for callback in callbacks:
            try:
                callback()
            except Exception:
                _logger.exception("a change feed callback of schema %s raised", self._schema)
