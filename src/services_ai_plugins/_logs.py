"""The commands' own log set-up: a handler on the SDK's logger for the length of a command.

The library never installs handlers; the command line (``check``, ``call``,
``demo``) does, for its own run only, and leaves the logger as it found it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Final

__all__ = ["SDK_LOGGER", "sdk_log_handler"]

#: The parent of every logger of the SDK and its plugins.
SDK_LOGGER: Final = "services_ai_plugins"


@contextlib.contextmanager
def sdk_log_handler(handler: logging.Handler, *, alone: bool = False) -> Iterator[None]:
    """Send the SDK's log records to ``handler`` while the block runs.

    With ``alone=True`` they go to it only (not on to the application's
    handlers), from WARNING up; the logger's level and propagation are
    restored afterwards.
    """
    logger = logging.getLogger(SDK_LOGGER)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    if alone:
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
