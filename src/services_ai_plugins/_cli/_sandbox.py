"""The sandbox commands of the command line: sandbox-info.

``sandbox-info`` shows which layers of the plugin sandbox this machine
offers (the module :mod:`services_ai_plugins._sandbox._confine` says what each one
stops and what it does not), the level they add up to, which user workers
run as, and what a worker may read (``--json`` lists every path, for the
plugins folder given and a plugin without dependencies), and whether the
workers' users reach the plugins folder and a folder for their scratch
folders (the host's temporary folder, or where the host puts them instead).
It reads no registry: it only probes the machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from .._kinds import DEFAULT_PLUGINS_DIR
from .._sandbox._confine import (
    Capabilities,
    probe,
    scratch_parent,
    unreadable_by,
    unsearchable_by,
)
from ._common import DIR_ENV, Result, plugins_path

__all__ = ["add_sandbox_commands"]


def _sandbox_info(args: argparse.Namespace) -> Result:
    capabilities = probe()
    layers = capabilities.layers()
    args.plugins_dir = str(plugins_path(args))  # the folder a host with defaults would use
    readable, hidden = _worker_reads(args.plugins_dir)
    document: dict[str, Any] = {
        "system": capabilities.system,
        "root": capabilities.root,
        "unprivileged": list(capabilities.unprivileged) if capabilities.unprivileged else None,
        "worker_uids": list(capabilities.worker_uids) if capabilities.worker_uids else None,
        "uid_scheme": capabilities.uid_scheme,
        "user_namespaces": capabilities.user_namespaces,
        "landlock_abi": capabilities.landlock_abi,
        "memory_cgroup": capabilities.memory_cgroup,
        "cgroup_version": capabilities.cgroup_version,
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
        "readable": [str(path) for path in readable],
        "hidden": [str(path) for path in hidden],
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
    ids = capabilities.worker_ids(os.getpid())
    lines.append(f"users: {capabilities.uid_scheme}")
    if ids is not None:
        blocked = unreadable_by(ids, readable)
        reads = {os.path.realpath(path) for path in readable}
        if blocked is None:
            user_line = "workers drop to their users"
        elif str(blocked) not in reads and capabilities.mount_namespace:
            user_line = (
                f"workers drop to their users; {blocked} shuts them out, so each worker sees, "
                "in a mount namespace of its own, only what it needs of it"
            )
        else:
            user_line = (
                f"workers stay uid 0 without capabilities: {blocked} is not readable by other "
                "users (keep Python and the plugins folder where every user can read them)"
            )
        document["worker_user"] = user_line
        if blocked is not None:
            lines.append(f"  {user_line}")
    lines.append(
        f"reads ({len(readable)} paths; --json lists them): {args.plugins_dir}, the standard "
        "library, the SDK's packages (and a plugin's declared dependencies'), system libraries"
    )
    if hidden:
        lines.append(f"hides, beneath those: {', '.join(str(path) for path in hidden)}")
    reach = _reach(capabilities, Path(args.plugins_dir).absolute())
    document["reach"] = reach
    lines.append(f"plugins folder: {reach['plugins_dir']['says']}")
    lines.append(f"scratch folders: {reach['scratch']['says']}")
    lines.append(f"level: {capabilities.report}")
    return document, lines


def _reach(capabilities: Capabilities, plugins_dir: Path) -> dict[str, dict[str, Any]]:
    """Whether the workers' users reach the plugins folder and a folder for their scratch."""
    ids = capabilities.worker_ids(os.getpid())
    # The plugins' folders beneath it are what workers read: they need to enter it.
    blocked = unsearchable_by(ids, plugins_dir) if ids is not None else None
    if not plugins_dir.exists():
        plugins = {"ok": False, "says": f"{plugins_dir} does not exist"}
    elif blocked is None:
        plugins = {"ok": True, "says": f"{plugins_dir}: the workers' users reach it"}
    elif capabilities.mount_namespace:
        plugins = {
            "ok": True,
            "says": f"{plugins_dir}: {blocked} shuts the workers' users out, so each worker "
            "mounts back, in a mount namespace of its own, only what it needs of it",
        }
    else:
        plugins = {
            "ok": False,
            "says": f"{plugins_dir}: {blocked} shuts the workers' users out, so workers stay "
            "uid 0 without capabilities (let every user enter it and every folder above it)",
        }
    plugins["blocked"] = str(blocked) if blocked is not None else None
    temporary = tempfile.gettempdir()
    parent, reason = scratch_parent(capabilities, temporary)
    if parent is None:
        says = f"none: {reason}; no worker can start (set TMPDIR to a folder every user may enter)"
    elif reason is None:
        says = f"in {parent}: the workers' users can enter it"
    else:
        says = f"in {parent}: {reason} (set TMPDIR to a folder every user may enter)"
    scratch = {
        "ok": parent is not None,
        "temporary": temporary,
        "folder": str(parent) if parent is not None else None,
        "problem": reason,
        "says": says,
    }
    return {"plugins_dir": plugins, "scratch": scratch}


def _worker_reads(plugins_dir: str) -> tuple[list[Path], list[Path]]:
    """What a worker of a plugin without dependencies may read: the plugins folder, what it
    needs of the interpreter; and the folders beneath those it must not (its own lists)."""
    from .._sandbox._worker import hidden_paths, python_paths  # noqa: PLC0415 - loaded here only

    readable = [Path(plugins_dir).absolute(), *python_paths()]
    return readable, hidden_paths(readable)


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
        default=None,
        help=f"the plugins folder workers read (${DIR_ENV}; default: the host's, "
        f"{DEFAULT_PLUGINS_DIR}/ in the per-user data folder)",
    )
    info.set_defaults(handler=_sandbox_info, prog=prog)
