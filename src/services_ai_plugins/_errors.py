"""The exception tree of services-ai-plugins.

Everything the SDK raises on purpose derives from one root, so a host can catch
``PluginError`` at its outermost seam::

    PluginError
    ├── ManifestError      (also ValueError) a manifest was refused: every problem, by JSON path
    ├── SettingsError      (also ValueError) setting values were refused; every problem, per field
    └── PackageError       a plugin folder or archive cannot be read, validated or packed

Each exception carries the fields a handler needs, not only a message.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

__all__ = ["ManifestError", "PackageError", "PluginError", "Problem", "SettingsError"]


@attrs.frozen
class Problem:
    """One thing wrong with an input, located by its path.

    ``path`` uses JSON-path-like notation without the leading ``$``:
    ``settings[2].type``, ``requires_plugins.crm-sync``,
    ``requires_plugins['Bad Id']``; the empty string
    means the document itself.
    """

    #: Where the problem is (``""`` for the whole document).
    path: str
    #: What is wrong, in words a plugin author can act on.
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class PluginError(Exception):
    """The root of every exception services-ai-plugins raises on purpose."""


class _ProblemsError(PluginError, ValueError):
    """Shared shape of the errors that report several problems at once."""

    #: What kind of thing was refused, for the message ("manifest", "settings").
    _what = "input"

    def __init__(self, problems: Iterable[Problem], *, source: str | None = None) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        #: The file, folder or archive the input came from, when there was one.
        self.source = source
        super().__init__(self._format())

    def _format(self) -> str:
        where = f"{self.source}: " if self.source else ""
        count = len(self.problems)
        if count == 1:
            return f"{where}invalid {self._what}: {self.problems[0]}"
        lines = "\n".join(f"  {p}" for p in self.problems)
        return f"{where}invalid {self._what} ({count} problems):\n{lines}"


class ManifestError(_ProblemsError):
    """A plugin manifest was refused.

    ``problems`` lists every problem found, each with its JSON path
    (``settings[2].type: must be one of …``); ``source`` names the file, folder
    or archive when the manifest was read from one.
    """

    _what = "manifest"


class SettingsError(_ProblemsError):
    """Setting values were refused by a plugin's settings schema.

    ``problems`` has one entry per offending setting, its ``path`` being the
    setting's name.
    """

    _what = "settings"


class PackageError(PluginError):
    """A plugin folder or archive cannot be read, validated or packed.

    ``path`` is the file or folder at fault; ``member`` names the file inside
    it when one is to blame.
    """

    def __init__(self, message: str, *, path: str, member: str | None = None) -> None:
        self.path = path
        self.member = member
        where = f"{path}!{member}" if member else path
        super().__init__(f"{where}: {message}")
