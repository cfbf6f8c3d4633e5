"""The commands' own log set-up: a handler on the SDK's logger for the length of a command.

The library never installs handlers; the command line (``check``, ``call``,
``demo``) does, for its own run only, and leaves the logger as it found it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Final, TextIO

__all__ = ["OUTPUT_ATTRIBUTE", "PLUGINS_LOGGER", "SDK_LOGGER", "plugin_output", "sdk_log_handler"]

#: The parent of every logger of the SDK and its plugins.
SDK_LOGGER: Final = "services_ai_plugins"
#: The parent of the plugins' own loggers (``services_ai_plugins.plugins.<id>``).
PLUGINS_LOGGER: Final = f"{SDK_LOGGER}.plugins"
#: The attribute that marks a log record as a sandboxed plugin's printed output
#: (its value: ``"stdout"`` or ``"stderr"``; the text is in ``output_text``).
OUTPUT_ATTRIBUTE: Final = "plugin_output"


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


@contextlib.contextmanager
def plugin_output(stream: TextIO) -> Iterator[None]:
    """Write what sandboxed plugins print to ``stream`` while the block runs, as printed.

    In-process plugins print to the command's standard streams themselves; a
    sandbox worker's output arrives as log records on the plugin's logger,
    marked with :data:`OUTPUT_ATTRIBUTE`.
    """
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.INFO)
    handler.addFilter(lambda record: hasattr(record, OUTPUT_ATTRIBUTE))
    handler.setFormatter(logging.Formatter("%(output_text)s"))
    plugins = logging.getLogger(PLUGINS_LOGGER)
    level = plugins.level
    plugins.addHandler(handler)
    plugins.setLevel(logging.INFO)
    try:
        yield
    finally:
        plugins.removeHandler(handler)
        plugins.setLevel(level)
