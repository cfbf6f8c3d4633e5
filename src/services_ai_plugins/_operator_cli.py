"""The operator commands of the command line: install, list, show, approve, ..., audit.

They work on a registry in a SQLite file (``--db``, ``$SERVICES_AI_PLUGINS_DB``,
default ``services-ai-plugins.db`` here) with plugin code under a plugins folder
(``--plugins-dir``, ``$SERVICES_AI_PLUGINS_DIR``, default ``plugins`` here).
"""

from __future__ import annotations

import argparse
import getpass
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from ._archive import install_archive
from ._dependencies import require_environment
from ._errors import PackageError
from ._kinds import DEFAULT_DB, DEFAULT_PLUGINS_DIR
from ._package import pack_plugin
from ._registry import Registry
from ._sqlite import SQLiteStorage
from ._storage import AuditEvent, PluginRecord, PluginStatus, TenantRecord

__all__ = [
    "DB_ENV",
    "Handler",
    "Result",
    "ResultWithCode",
    "actor_name",
    "add_operator_commands",
    "command_adder",
    "db_path",
    "plugins_path",
    "positive",
]

DB_ENV: Final = "SERVICES_AI_PLUGINS_DB"
DIR_ENV: Final = "SERVICES_AI_PLUGINS_DIR"

#: What a command returns: its JSON fields (``ok`` is added) and its lines for people.
Result = tuple[dict[str, Any], list[str]]


def db_path(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "db", None) or os.environ.get(DB_ENV) or DEFAULT_DB)


def plugins_path(args: argparse.Namespace) -> Path:
    return Path(
        getattr(args, "plugins_dir", None) or os.environ.get(DIR_ENV) or DEFAULT_PLUGINS_DIR
    )


def actor_name(args: argparse.Namespace) -> str:
    if getattr(args, "actor", None):
        return str(args.actor)
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in this environment
        return "cli"


@contextmanager
def _registry(args: argparse.Namespace, *, create: bool = True) -> Iterator[Registry]:
    """The registry in ``--db``; a read (``create=False``) of a missing file creates none.

    Reading a registry that does not exist shows an empty one (no plugins, no
    events) instead of leaving an empty database file behind.
    """
    db = db_path(args)
    if not create and not db.exists():
        from ._memory import MemoryStorage  # noqa: PLC0415 - only for a missing database

        yield Registry(MemoryStorage())
        return
    storage = SQLiteStorage(db)
    try:
        yield Registry(storage)
    finally:
        storage.close()


def _plugin_document(record: PluginRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "version": record.version,
        "status": record.status.value,
        "source": record.source.value,
        "code_hash": record.code_hash,
        "package_path": record.package_path,
        "installed_at": record.installed_at.isoformat(),
        "installed_by": record.installed_by,
        "approved_at": record.approved_at.isoformat() if record.approved_at else None,
        "approved_by": record.approved_by,
        "status_reason": record.status_reason,
        "granted_permissions": list(record.granted_permissions),
        "revision": record.revision,
    }


def _tenant_document(record: TenantRecord) -> dict[str, Any]:
    return {
        "tenant": record.tenant,
        "enabled": record.enabled,
        "optional_grants": list(record.optional_grants),
        "settings": sorted(record.settings),
        "changed_at": record.changed_at.isoformat(),
        "changed_by": record.changed_by,
    }


def _event_document(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "plugin_id": event.plugin_id,
        "tenant": event.tenant,
        "before": event.before,
        "after": event.after,
    }


def _install(args: argparse.Namespace) -> Result:
    source = Path(args.source)
    if not source.exists():
        # Refuse before the database or the plugins folder is created.
        raise PackageError("no such file or folder", path=str(source))
    plugins_dir = plugins_path(args)
    plugins_dir.mkdir(parents=True, exist_ok=True)
    with _registry(args) as registry:
        if source.is_dir():
            # A folder goes through the very same checks as an upload: pack it, install the archive.
            with tempfile.TemporaryDirectory() as scratch:
                archive = pack_plugin(source, Path(scratch) / "upload.zip").path
                record = install_archive(
                    archive.read_bytes(),
                    plugins_dir,
                    registry,
                    actor=actor_name(args),
                    reinstall=args.reinstall,
                    check=require_environment,
                )
        else:
            record = install_archive(
                source,
                plugins_dir,
                registry,
                actor=actor_name(args),
                reinstall=args.reinstall,
                check=require_environment,
            )
    lines = [
        f"installed {record.id} {record.version}: {record.status.value} "
        f"(code {record.code_hash[:16]}..., {record.package_path})",
        f"next: {args.prog} approve {record.id}",
    ]
    return _plugin_document(record), lines


def _list(args: argparse.Namespace) -> Result:
    status = PluginStatus(args.status) if args.status else None
    with _registry(args, create=False) as registry:
        plugins = registry.plugins(status)
    if args.tenant:
        with _registry(args, create=False) as registry:
            enabled = set(registry.enabled_plugins(args.tenant))
        plugins = [p for p in plugins if p.id in enabled]
    lines = [f"{p.id:<30} {p.version:<12} {p.status.value:<12} {p.name}" for p in plugins]
    return {"plugins": [_plugin_document(p) for p in plugins]}, lines or ["no plugins"]


def _show(args: argparse.Namespace) -> Result:
    with _registry(args, create=False) as registry:
        record = registry.plugin(args.name)
        tenants = registry.storage.list_tenants(args.name)
        history = registry.history(args.name)
    document = _plugin_document(record)
    document["tenants"] = [_tenant_document(t) for t in tenants]
    document["history"] = [
        {"version": v.version, "code_hash": v.code_hash, "installed_at": v.installed_at.isoformat()}
        for v in history
    ]
    lines = [
        f"{record.id} {record.version} ({record.name}): {record.status.value}",
        f"  installed by {record.installed_by} at {record.installed_at:%Y-%m-%d %H:%M}",
        f"  code hash {record.code_hash}",
        f"  permissions: {', '.join(record.granted_permissions) or 'none granted'}",
    ]
    if record.status_reason:
        lines.append(f"  reason: {record.status_reason}")
    lines += [f"  tenant {t.tenant}: {'enabled' if t.enabled else 'disabled'}" for t in tenants]
    lines += [f"  version {v.version} installed {v.installed_at:%Y-%m-%d %H:%M}" for v in history]
    return document, lines


def _step(
    action: Callable[[Registry, argparse.Namespace, str], PluginRecord | TenantRecord],
    verb: str,
) -> Callable[[argparse.Namespace], Result]:
    def handler(args: argparse.Namespace) -> Result:
        with _registry(args) as registry:
            action(registry, args, actor_name(args))
            record = registry.plugin(args.name)
        where = f" for tenant {args.tenant}" if getattr(args, "tenant", None) else ""
        return _plugin_document(record), [f"{verb} {record.id}{where}: {record.status.value}"]

    return handler


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number (got {text!r})")
    return value


def _enable(registry: Registry, args: argparse.Namespace, actor: str) -> TenantRecord:
    return registry.enable(args.name, args.tenant, actor=actor)


def _disable(registry: Registry, args: argparse.Namespace, actor: str) -> TenantRecord:
    return registry.disable(args.name, args.tenant, actor=actor)


def _audit(args: argparse.Namespace) -> Result:
    with _registry(args, create=False) as registry:
        events = registry.audit_log(
            plugin_id=args.plugin, tenant=args.tenant, actor=args.by, limit=args.limit
        )
    lines = [
        f"{e.at:%Y-%m-%d %H:%M:%S} {e.actor:<20} {e.action:<13} {e.plugin_id}"
        + (f" [{e.tenant}]" if e.tenant else "")
        for e in events
    ]
    return {"events": [_event_document(e) for e in events]}, lines or ["no events"]


#: What a command returns when its exit code is not always 0: its Result and the code.
ResultWithCode = tuple[dict[str, Any], list[str], int]
#: A command: its JSON fields and its lines for people (and its exit code, if not always 0).
Handler = Callable[[argparse.Namespace], Result | ResultWithCode]
#: Adds one command that takes the registry options: ``add(name, help, handler)``.
CommandAdder = Callable[[str, str, Handler], Any]


def command_adder(commands: Any, common: argparse.ArgumentParser, prog: str) -> CommandAdder:
    """A function that adds commands taking ``--db``, ``--plugins-dir`` and ``--actor``."""
    registry_options = argparse.ArgumentParser(add_help=False)
    registry_options.add_argument(
        "--db",
        default=argparse.SUPPRESS,
        help=f"the SQLite registry (${DB_ENV}; default {DEFAULT_DB})",
    )
    registry_options.add_argument(
        "--plugins-dir",
        default=argparse.SUPPRESS,
        help=f"where plugin code is kept (${DIR_ENV}; default {DEFAULT_PLUGINS_DIR})",
    )
    registry_options.add_argument(
        "--actor", default=argparse.SUPPRESS, help="who is acting, for the audit trail"
    )
    parents = [common, registry_options]

    def add(name: str, help_text: str, handler: Handler) -> Any:
        sub = commands.add_parser(name, parents=parents, help=help_text)
        sub.set_defaults(handler=handler, prog=prog)
        return sub

    return add


def add_operator_commands(commands: Any, common: argparse.ArgumentParser, prog: str) -> None:
    """Add the operator commands to the CLI's sub-command parser."""
    add = command_adder(commands, common, prog)

    install = add("install", "install a plugin ZIP or folder (pending approval)", _install)
    install.add_argument("source", help="a plugin .zip or folder")
    install.add_argument("--reinstall", action="store_true", help="replace an installed version")

    listing = add("list", "list installed plugins", _list)
    listing.add_argument("--status", choices=[s.value for s in PluginStatus])
    listing.add_argument("--tenant", help="only the plugins running for this tenant")

    add("show", "show one plugin, its tenants and versions", _show).add_argument("name")
    add(
        "approve",
        "approve a pending plugin",
        _step(lambda r, a, actor: r.approve(a.name, actor=actor), "approved"),
    ).add_argument("name")
    reject = add(
        "reject",
        "reject a pending plugin",
        _step(lambda r, a, actor: r.reject(a.name, actor=actor, reason=a.reason), "rejected"),
    )
    reject.add_argument("name")
    reject.add_argument("--reason", required=True)
    for verb, step in (("enable", _enable), ("disable", _disable)):
        sub = add(verb, f"{verb} a plugin for one tenant", _step(step, f"{verb}d"))
        sub.add_argument("name")
        sub.add_argument("--tenant", required=True)
    add(
        "uninstall",
        "uninstall a plugin (its history and audit trail are kept)",
        _step(lambda r, a, actor: r.uninstall(a.name, actor=actor), "uninstalled"),
    ).add_argument("name")
    audit = add("audit", "show the audit trail, newest first", _audit)
    audit.add_argument("--plugin")
    audit.add_argument("--tenant")
    audit.add_argument("--by", help="only events by this actor")
    audit.add_argument("--limit", type=positive, default=50, help="at most this many (default 50)")
