"""The sandbox: its policy, limits, the layers it applies, and its workers.

For hosts that tune or inspect process isolation. :class:`SandboxPolicy`
(also importable from the top-level package) is what a host passes to
``PluginHost``; :class:`Sandbox` runs the workers and reports its
:class:`Capabilities` (which :class:`Layer` objects this machine offers) and
one :class:`WorkerInfo` per live worker. See docs/sandbox.md.
Names are imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_names

if TYPE_CHECKING:
    from ._sandbox._confine import Capabilities, Layer, Limits
    from ._sandbox._policy import SandboxPolicy, WorkerInfo
    from ._sandbox._pool import Sandbox
    from ._sandbox._stand_in import SandboxedPlugin


# Where each lazily imported name lives.
_LAZY: dict[str, str] = {
    "Capabilities": "._sandbox._confine",
    "Layer": "._sandbox._confine",
    "Limits": "._sandbox._confine",
    "Sandbox": "._sandbox._pool",
    "SandboxPolicy": "._sandbox._policy",
    "SandboxedPlugin": "._sandbox._stand_in",
    "WorkerInfo": "._sandbox._policy",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


__all__ = [
    "Capabilities",
    "Layer",
    "Limits",
    "Sandbox",
    "SandboxPolicy",
    "SandboxedPlugin",
    "WorkerInfo",
]
