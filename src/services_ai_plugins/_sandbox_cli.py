"""The sandbox commands of the command line: sandbox-info.

``sandbox-info`` shows which layers of the plugin sandbox this machine
offers (the module :mod:`services_ai_plugins._confine` says what each one
stops and what it does not), and the level they add up to. It reads no
registry: it only probes the machine.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ._confine import probe, unreadable_by
from ._kinds import DEFAULT_PLUGINS_DIR
from ._operator_cli import Result

__all__ = ["add_sandbox_commands"]


def _sandbox_info(args: argparse.Namespace) -> Result:
    capabilities = probe()
    layers = capabilities.layers()
    document: dict[str, Any] = {
        "system": capabilities.system,
        "root": capabilities.root,
        "unprivileged": list(capabilities.unprivileged) if capabilities.unprivileged else None,
        "user_namespaces": capabilities.user_namespaces,
        "landlock_abi": capabilities.landlock_abi,
        "level": capabilities.level,
        "report": capabilities.report,
        "layers": [
            {
                "name": layer.name,
                "available": layer.available,
                "stops": layer.stops,
                "missing": layer.missing,
            }
            for layer in layers
        ],
    }
    user = "root" if capabilities.root else "not root"
    lines = [f"sandbox layers on {capabilities.system or 'an unknown system'} ({user}):"]
    width = max(len(layer.name) for layer in layers)
    for layer in layers:
        if layer.available:
            lines.append(f"  available  {layer.name:<{width}}  stops {layer.stops}")
        else:
            lines.append(f"  missing    {layer.name:<{width}}  {layer.missing}")
            lines.append(f"             {'':<{width}}  (would stop {layer.stops})")
    if capabilities.unprivileged is not None:
        blocked = unreadable_by(capabilities.unprivileged, _worker_reads(args.plugins_dir))
        uid = capabilities.unprivileged[0]
        reads = [Path(os.path.realpath(path)) for path in _worker_reads(args.plugins_dir)]
        if blocked is None:
            user_line = f"workers drop to uid {uid}"
        elif all(blocked != path for path in reads) and capabilities.root:
            user_line = (
                f"workers drop to uid {uid}; {blocked} shuts that user out, so each worker "
                "sees, in a mount namespace of its own, only what it needs of it"
            )
        else:
            user_line = (
                f"workers stay uid 0 without capabilities: {blocked} is not readable by uid "
                f"{uid} (keep Python and the plugins folder where that user can read them)"
            )
        document["worker_user"] = user_line
        lines.append(f"user: {user_line}")
    lines.append(f"level: {capabilities.report}")
    return document, lines


def _worker_reads(plugins_dir: str) -> list[Path]:
    """What a worker must read: the plugins folder, and what it needs of the interpreter."""
    from ._worker import python_paths  # noqa: PLC0415 - the worker's own list, loaded here only

    return [Path(plugins_dir), *python_paths()]


def add_sandbox_commands(commands: Any, common: argparse.ArgumentParser, prog: str) -> None:
    """Add the sandbox commands (sandbox-info) to the CLI's sub-command parser.

    ``sandbox-info`` takes only the common options (``--json``): it reads no
    registry, so it has no ``--db``, ``--plugins-dir`` or ``--actor``.
    """
    info = commands.add_parser(
        "sandbox-info", parents=[common], help="show which sandbox layers this machine offers"
    )
    info.add_argument(
        "--plugins-dir",
        default=DEFAULT_PLUGINS_DIR,
        help=f"the plugins folder workers read (default: {DEFAULT_PLUGINS_DIR})",
    )
    info.set_defaults(handler=_sandbox_info, prog=prog)
