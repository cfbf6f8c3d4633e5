"""The settings and grants commands: ``settings get|set``, ``grant``, ``revoke``.

Secret settings are write-only here: shown as ``<set>`` or ``<not set>``, never their value.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from .._manifest import Manifest
from .._registry import Registry
from .._settings import SettingType
from ..errors import Problem, SettingsError
from ._common import Result, actor_name, command_adder, open_registry

__all__ = ["add_settings_commands"]


#: How a secret setting is shown: whether it is set, never its value.
_SECRET_SET: Final = "<set>"  # noqa: S105 - a placeholder shown instead of a secret


_SECRET_UNSET: Final = "<not set>"  # noqa: S105 - the same


def _settings_result(registry: Registry, plugin_id: str, tenant: str) -> Result:
    """Every setting of the plugin's schema for the tenant; secrets as set or not, never shown."""
    manifest = registry.manifest(plugin_id)
    values = registry.get_settings(plugin_id, tenant)
    record = registry.tenant(plugin_id, tenant)
    stored = record.settings if record is not None else {}
    documents = []
    lines = []
    for spec in manifest.settings:
        secret = spec.type is SettingType.SECRET
        is_set = stored.get(spec.name) is not None
        value = (_SECRET_SET if is_set else _SECRET_UNSET) if secret else values.get(spec.name)
        documents.append(
            {
                "name": spec.name,
                "type": spec.type.value,
                "secret": secret,
                "set": is_set,
                "value": value,
            }
        )
        shown = value if secret else json.dumps(value)
        origin = "" if is_set or secret else " (default)"
        lines.append(f"{spec.name:<24} {spec.type.value:<8} {shown}{origin}")
    document = {"plugin_id": plugin_id, "tenant": tenant, "settings": documents}
    return document, lines or [f"{plugin_id} has no settings"]


def _setting_pair(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        # Not repeated: it may be a secret given without its name.
        raise argparse.ArgumentTypeError("must be NAME=VALUE (a setting's name, '=', its value)")
    return name.strip(), value


def _setting_values(manifest: Manifest, given: Mapping[str, str]) -> dict[str, object]:
    """The text of each ``--set``, as a form sends it; a ``json`` setting's is parsed as JSON.

    :raises SettingsError: naming each ``json`` setting whose text is not JSON.
    """
    kinds: dict[str, SettingType] = {str(spec.name): spec.type for spec in manifest.settings}
    values: dict[str, object] = {}
    problems: list[Problem] = []
    for name, text in given.items():
        if kinds.get(name) is not SettingType.JSON:
            values[name] = text
            continue
        try:
            values[name] = json.loads(text)
        except ValueError as error:
            problems.append(Problem(name, f"must be JSON text on the command line ({error})"))
    if problems:
        raise SettingsError(problems)
    return values


def _settings_get(args: argparse.Namespace) -> Result:
    with open_registry(args, create=False) as registry:
        return _settings_result(registry, args.name, args.tenant)


def _settings_set(args: argparse.Namespace) -> Result:
    given: dict[str, str] = dict(args.values or ())
    if not given and not args.reset:
        raise ValueError("settings set: give at least one --set NAME=VALUE or --reset NAME")
    with open_registry(args) as registry:
        values = _setting_values(registry.manifest(args.name), given)
        values.update(dict.fromkeys(args.reset or ()))
        registry.set_settings(args.name, args.tenant, values, actor=actor_name(args))
        document, lines = _settings_result(registry, args.name, args.tenant)
    changed = ", ".join(sorted(values))
    return document, [f"set {changed} of {args.name} for tenant {args.tenant}", *lines]


def _grant_step(grant: bool) -> Callable[[argparse.Namespace], Result]:
    def handler(args: argparse.Namespace) -> Result:
        with open_registry(args) as registry:
            step = registry.grant if grant else registry.revoke
            record = step(args.name, args.tenant, args.permission, actor=actor_name(args))
            held = sorted(registry.grants(args.name, args.tenant))
        document = {
            "plugin_id": args.name,
            "tenant": args.tenant,
            "permission": args.permission,
            "optional_grants": list(record.optional_grants),
            "grants": held,
        }
        verb = "granted" if grant else "revoked"
        lines = [
            f"{verb} {args.permission} to {args.name} for tenant {args.tenant}"
            if grant
            else f"revoked {args.permission} from {args.name} for tenant {args.tenant}",
            f"  holds: {', '.join(held) or 'nothing'}",
        ]
        return document, lines

    return handler


def add_settings_commands(commands: Any, common: argparse.ArgumentParser, prog: str) -> None:
    """Add ``settings get|set``, ``grant`` and ``revoke`` to the CLI's sub-command parser."""
    add = command_adder(commands, common, prog)
    settings = commands.add_parser(
        "settings",
        help="show or change a plugin's settings for one tenant",
        description="show (get) or change (set) a plugin's settings for one tenant; "
        "secret settings are write-only: shown as <set> or <not set>, never their value",
    )
    actions = settings.add_subparsers(dest="settings_command", metavar="ACTION", required=True)
    add_setting = command_adder(actions, common, prog)
    get = add_setting("get", "show every setting for the tenant (secrets masked)", _settings_get)
    get.add_argument("name")
    get.add_argument("--tenant", required=True)
    put = add_setting("set", "check and store setting values for the tenant", _settings_set)
    put.add_argument("name")
    put.add_argument("--tenant", required=True)
    put.add_argument(
        "--set",
        dest="values",
        action="append",
        type=_setting_pair,
        metavar="NAME=VALUE",
        help="a value to store, as a form sends it (repeatable)",
    )
    put.add_argument(
        "--reset", action="append", metavar="NAME", help="back to its default (repeatable)"
    )
    for verb, grant, what in (
        ("grant", True, "grant an optional permission for one tenant"),
        ("revoke", False, "take back an optional permission for one tenant"),
    ):
        sub = add(verb, what, _grant_step(grant))
        sub.add_argument("name")
        sub.add_argument("permission")
        sub.add_argument("--tenant", required=True)
