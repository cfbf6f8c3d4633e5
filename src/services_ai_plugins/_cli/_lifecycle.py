"""The lifecycle commands of the command line: install, upgrade, list, show, approve, reject,
enable, disable, uninstall, rollback, diff, audit.

They work on a registry (``--db``, ``$SERVICES_AI_PLUGINS_DB``, default
``services-ai-plugins.db`` here: a SQLite file, or a ``postgresql://`` URL)
with plugin code under a plugins folder (``--plugins-dir``,
``$SERVICES_AI_PLUGINS_DIR``, default ``plugins`` here).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from .._dependencies import require_environment
from .._manifest import Manifest
from .._permissions import PermissionCatalogue
from .._registry import Registry, Suspension
from .._sources._archive import ArchiveError, install_archive
from .._sources._package import pack_plugin
from .._storage._protocol import (
    AuditEvent,
    FailureRecord,
    KeptVersion,
    PluginRecord,
    PluginStatus,
    StagedVersion,
    TenantRecord,
)
from .._versions import VersionDiff
from ..errors import (
    PackageError,
    PluginNotFound,
    TransitionError,
    VersionError,
)
from ._common import (
    Result,
    actor_name,
    command_adder,
    open_registry,
    plugins_path,
    positive,
    suspension_document,
)

__all__ = ["add_lifecycle_commands"]


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
        "staged": _staged_document(record.staged) if record.staged is not None else None,
    }


def _staged_document(staged: StagedVersion) -> dict[str, Any]:
    """A staged version as JSON: where it stands, not its manifest (``diff`` shows that)."""
    return {
        "version": staged.version,
        "code_hash": staged.code_hash,
        "package_path": staged.package_path,
        "artifact": staged.artifact,
        "installed_at": staged.installed_at.isoformat(),
        "installed_by": staged.installed_by,
        "approved": staged.approved_at is not None,
        "approved_at": staged.approved_at.isoformat() if staged.approved_at else None,
        "approved_by": staged.approved_by,
        "auto_approved": staged.auto_approved,
    }


def _kept_document(kept: KeptVersion) -> dict[str, Any]:
    """A kept version as JSON: its tenants by name only (their stored settings hold secrets)."""
    return {
        "version": kept.version,
        "code_hash": kept.code_hash,
        "kept_at": kept.kept_at.isoformat(),
        "granted_permissions": list(kept.granted_permissions),
        "tenants": sorted(kept.tenants),
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
    record, diff = _put(args, reinstall=args.reinstall, downgrade=args.downgrade, upgrade=False)
    if record.staged is not None:
        document = _plugin_document(record)
        document["diff"] = diff.to_dict() if diff is not None else None
        return document, _staged_lines(args, record, diff)
    lines = [
        f"installed {record.id} {record.version}: {record.status.value} "
        f"(code {record.code_hash[:16]}..., {record.package_path})",
        f"next: {args.prog} approve {record.id}",
    ]
    return {**_plugin_document(record), "diff": None}, lines


def _upgrade(args: argparse.Namespace) -> Result:
    record, diff = _put(args, reinstall=True, downgrade=args.downgrade, upgrade=True)
    staged = record.staged
    document = {
        "plugin": _plugin_document(record),
        "staged": _staged_document(staged) if staged is not None else None,
        "auto_approved": staged is not None and staged.auto_approved,
        "diff": diff.to_dict() if diff is not None else None,
    }
    if staged is not None:
        return document, _staged_lines(args, record, diff)
    # A pending plugin is replaced: nothing runs yet to compare it with.
    lines = [
        f"replaced pending {record.id} with {record.version}: {record.status.value} "
        f"(code {record.code_hash[:16]}..., {record.package_path})",
        f"next: {args.prog} approve {record.id}",
    ]
    return document, lines


def _put(
    args: argparse.Namespace, *, reinstall: bool, downgrade: bool, upgrade: bool
) -> tuple[PluginRecord, VersionDiff | None]:
    """Install the ZIP or folder ``args.source`` names; the record, and for a version staged
    beside a running one its diff against it."""
    source = Path(args.source)
    if not source.exists():
        # Refuse before the database or the plugins folder is created.
        raise PackageError("no such file or folder", path=str(source))
    plugins_dir = plugins_path(args)
    plugins_dir.mkdir(parents=True, exist_ok=True)
    with open_registry(args) as registry, _cli_flags(source):

        def check(manifest: Manifest) -> None:
            if upgrade:
                _require_installed(registry, manifest.id)
            require_environment(manifest)

        if source.is_dir():
            # A folder goes through the very same checks as an upload: pack it, install the archive.
            with tempfile.TemporaryDirectory() as scratch:
                archive = pack_plugin(source, Path(scratch) / "upload.zip").path
                record = install_archive(
                    archive.read_bytes(),
                    plugins_dir,
                    registry,
                    actor=actor_name(args),
                    reinstall=reinstall,
                    downgrade=downgrade,
                    check=check,
                )
        else:
            record = install_archive(
                source,
                plugins_dir,
                registry,
                actor=actor_name(args),
                reinstall=reinstall,
                downgrade=downgrade,
                check=check,
            )
        diff = None
        if record.staged is not None:
            try:
                diff = registry.diff(record.id, record.version, record.staged.version)
            except VersionError:  # changed meanwhile (switched, replaced): the install stands
                diff = None
    return record, diff


def _require_installed(registry: Registry, plugin_id: str) -> None:
    """``upgrade`` needs an installed plugin: a new one (or one rejected or uninstalled) is
    ``install``'s; refused before anything is extracted."""
    current = registry.storage.get_plugin(plugin_id)
    if current is None:
        raise PluginNotFound(plugin_id)
    if current.status in (PluginStatus.REJECTED, PluginStatus.UNINSTALLED):
        raise TransitionError(
            plugin_id,
            "upgrade",
            current.status.value,
            ("install",),
            reason="there is no installed version to upgrade; install it instead",
        )


def _staged_lines(
    args: argparse.Namespace, record: PluginRecord, diff: VersionDiff | None
) -> list[str]:
    staged = record.staged
    assert staged is not None
    lines = [
        f"staged {record.id} {staged.version} beside the running {record.version} "
        f"(code {staged.code_hash[:16]}..., {staged.package_path}); "
        f"{record.version} keeps serving until the switch",
    ]
    lines += diff.lines() if diff is not None else []
    if staged.auto_approved:
        lines.append(
            f"approved by the upgrade policy (asks for nothing new): hosts switch to "
            f"{staged.version} at their next refresh"
        )
    elif staged.approved_at is not None:
        lines.append(
            f"approved by {staged.approved_by}: hosts switch to {staged.version} "
            "at their next refresh"
        )
    else:
        lines.append(
            f"waits for approval: {args.prog} approve {record.id} "
            f"(or {args.prog} reject {record.id} --reason TEXT)"
        )
    return lines


_PYTHON_FLAG: Final = "pass reinstall=True"


@contextmanager
def _cli_flags(source: Path) -> Iterator[None]:
    """Refusals that name the Python arguments ``reinstall=True`` and ``downgrade=True`` name
    ``--reinstall`` and ``--downgrade`` instead."""
    try:
        yield
    except VersionError as error:
        if _PYTHON_DOWNGRADE not in error.reason:
            raise
        reason = error.reason.replace(_PYTHON_DOWNGRADE, "pass --downgrade")
        raise VersionError(error.plugin_id, error.version, reason) from None
    except ArchiveError as error:
        if error.rule != "already-installed":
            raise
        message = str(error).removesuffix(f" [{error.rule}]").removeprefix(f"{error.path}: ")
        message = message.replace(_PYTHON_FLAG, _CLI_FLAG)
        raise ArchiveError(error.rule, message, path=str(source), member=error.member) from None
    except TransitionError as error:
        if _PYTHON_FLAG not in str(error):
            raise
        raise TransitionError(
            error.plugin_id,
            error.action,
            error.status,
            error.allowed,
            reason=f"it is already installed; {_CLI_FLAG} to replace it",
        ) from None


_CLI_FLAG: Final = "pass --reinstall"

#: How the registry names the downgrade flag (for Python, then the command line).
_PYTHON_DOWNGRADE: Final = "pass downgrade=True (CLI: --downgrade)"


def _suspension_line(suspension: Suspension) -> str:
    where = f"for tenant {suspension.tenant}" if suspension.tenant else "everywhere"
    return (
        f"suspended {where} by {suspension.by} since {suspension.since:%Y-%m-%d %H:%M}: "
        f"{suspension.reason}"
    )


def _load_failure_document(failure: FailureRecord | None) -> dict[str, Any] | None:
    if failure is None:
        return None
    return {
        "id": failure.id,
        "at": failure.at.isoformat(),
        "exc_type": failure.exc_type,
        "message": failure.message,
    }


def _load_failure_line(failure: FailureRecord) -> str:
    return (
        f"cannot load: {failure.exc_type}: {failure.message} "
        f"(failure #{failure.id} at {failure.at:%Y-%m-%d %H:%M})"
    )


def _list(args: argparse.Namespace) -> Result:
    status = PluginStatus(args.status) if args.status else None
    with open_registry(args, create=False) as registry:
        plugins = registry.plugins(status)
        if args.tenant:
            enabled = set(registry.enabled_plugins(args.tenant))
            plugins = [p for p in plugins if p.id in enabled]
        suspensions: dict[str, list[Suspension]] = {}
        for suspension in registry.suspensions():
            suspensions.setdefault(suspension.plugin_id, []).append(suspension)
        failures = {p.id: registry.load_failure(p) for p in plugins}
    documents = []
    lines = []
    for plugin in plugins:
        document = _plugin_document(plugin)
        document["suspensions"] = [
            suspension_document(s, plugin=False) for s in suspensions.get(plugin.id, [])
        ]
        document["load_failure"] = _load_failure_document(failures[plugin.id])
        documents.append(document)
        lines.append(
            f"{plugin.id:<30} {plugin.version:<12} {plugin.status.value:<12} {plugin.name}"
        )
        lines += [f"  {_suspension_line(s)}" for s in suspensions.get(plugin.id, []) if s.tenant]
        failure = failures[plugin.id]
        if failure is not None:
            lines.append(f"  {_load_failure_line(failure)}")
    return {"plugins": documents}, lines or ["no plugins"]


def _permission_line(permission: Mapping[str, Any]) -> str:
    optional = " (optional, granted per tenant)" if permission["optional"] else ""
    if permission["risk"] is None:
        return f"    {permission['name']}{optional}: not a permission this SDK knows"
    return (
        f"    {permission['name']:<20} {permission['risk']:<6} "
        f"{permission['description']}{optional}"
    )


def _show(args: argparse.Namespace) -> Result:
    with open_registry(args, create=False) as registry:
        record = registry.plugin(args.name)
        tenants = registry.storage.list_tenants(args.name)
        history = registry.history(args.name)
        suspensions = registry.suspensions(args.name)
        failure = registry.load_failure(record)
        manifest = registry.manifest(args.name)
        requested = PermissionCatalogue().requested(
            manifest.permissions, manifest.optional_permissions
        )
        kept = [k for k in registry.kept_versions(args.name) if k.version != record.version]
        diff = None
        if record.staged is not None:
            diff = registry.diff(args.name, record.version, record.staged.version)
    document = _plugin_document(record)
    document["requested_permissions"] = requested
    document["suspensions"] = [suspension_document(s, plugin=False) for s in suspensions]
    document["load_failure"] = _load_failure_document(failure)
    document["tenants"] = [_tenant_document(t) for t in tenants]
    document["history"] = [
        {"version": v.version, "code_hash": v.code_hash, "installed_at": v.installed_at.isoformat()}
        for v in history
    ]
    document["staged_diff"] = diff.to_dict() if diff is not None else None
    document["kept_versions"] = [_kept_document(k) for k in kept]
    lines = [
        f"{record.id} {record.version} ({record.name}): {record.status.value}",
        f"  installed by {record.installed_by} at {record.installed_at:%Y-%m-%d %H:%M}",
        f"  code hash {record.code_hash}",
        f"  permissions: {', '.join(record.granted_permissions) or 'none granted'}",
    ]
    if record.status_reason:
        lines.append(f"  reason: {record.status_reason}")
    if record.status is PluginStatus.PENDING:
        lines.append("  asks for:" if requested else "  asks for no permissions")
        lines += [_permission_line(p) for p in requested]
    lines += [f"  {_suspension_line(s)}" for s in suspensions]
    if failure is not None:
        lines.append(f"  {_load_failure_line(failure)}")
    lines += [f"  tenant {t.tenant}: {'enabled' if t.enabled else 'disabled'}" for t in tenants]
    lines += [f"  version {v.version} installed {v.installed_at:%Y-%m-%d %H:%M}" for v in history]
    lines += [
        f"  kept for rollback: {k.version} (ran until {k.kept_at:%Y-%m-%d %H:%M})" for k in kept
    ]
    if record.staged is not None:
        lines += _staged_show_lines(record.staged)
    if diff is not None:
        lines += [f"    {line}" for line in diff.lines()]
    return document, lines


def _staged_show_lines(staged: StagedVersion) -> list[str]:
    lines = [
        f"  staged {staged.version}: installed by {staged.installed_by} at "
        f"{staged.installed_at:%Y-%m-%d %H:%M}, code hash {staged.code_hash}"
    ]
    if staged.approved_at is None:
        lines.append("    waits for approval; its diff against the running version:")
    else:
        by = "the upgrade policy (asks for nothing new)" if staged.auto_approved else None
        lines.append(
            f"    approved by {by or staged.approved_by} at {staged.approved_at:%Y-%m-%d %H:%M}; "
            "hosts switch to it at their next refresh; its diff:"
        )
    return lines


def _rollback(args: argparse.Namespace) -> Result:
    # Refused (exit 1) with the registry's VersionError, which lists the kept versions.
    with open_registry(args) as registry:
        before = registry.plugin(args.name)
        record = registry.rollback(args.name, args.to, actor=actor_name(args))
        kept = [k for k in registry.kept_versions(args.name) if k.version != record.version]
    document = {
        "plugin": _plugin_document(record),
        "from": before.version,
        "to": record.version,
        "dropped_staged": before.staged.version if before.staged is not None else None,
        "kept_versions": [_kept_document(k) for k in kept],
    }
    lines = [f"rolled back {record.id} from {before.version} to {record.version}"]
    if before.staged is not None:
        lines.append(f"  the staged version {before.staged.version} was dropped")
    lines.append(f"  kept for rollback: {', '.join(k.version for k in kept) or 'none'}")
    lines.append("  hosts load it at their next refresh")
    return document, lines


def _diff(args: argparse.Namespace) -> Result:
    with open_registry(args, create=False) as registry:
        diff = registry.diff(args.name, args.from_version, args.to_version)
    return {"plugin_id": args.name, "diff": diff.to_dict()}, diff.lines()


def _step(
    action: Callable[[Registry, argparse.Namespace, str], PluginRecord | TenantRecord],
    verb: str,
) -> Callable[[argparse.Namespace], Result]:
    def handler(args: argparse.Namespace) -> Result:
        with open_registry(args) as registry:
            action(registry, args, actor_name(args))
            record = registry.plugin(args.name)
        where = f" for tenant {args.tenant}" if getattr(args, "tenant", None) else ""
        return _plugin_document(record), [f"{verb} {record.id}{where}: {record.status.value}"]

    return handler


def _enable(registry: Registry, args: argparse.Namespace, actor: str) -> TenantRecord:
    return registry.enable(args.name, args.tenant, actor=actor)


def _disable(registry: Registry, args: argparse.Namespace, actor: str) -> TenantRecord:
    return registry.disable(args.name, args.tenant, actor=actor)


def _audit(args: argparse.Namespace) -> Result:
    with open_registry(args, create=False) as registry:
        events = registry.audit_log(
            plugin_id=args.plugin, tenant=args.tenant, actor=args.by, limit=args.limit
        )
    lines = [
        f"{e.at:%Y-%m-%d %H:%M:%S} {e.actor:<20} {e.action:<13} {e.plugin_id}"
        + (f" [{e.tenant}]" if e.tenant else "")
        for e in events
    ]
    return {"events": [_event_document(e) for e in events]}, lines or ["no events"]


def add_lifecycle_commands(commands: Any, common: argparse.ArgumentParser, prog: str) -> None:
    """Add the operator commands to the CLI's sub-command parser."""
    add = command_adder(commands, common, prog)

    install = add("install", "install a plugin ZIP or folder (pending approval)", _install)
    install.add_argument("source", help="a plugin .zip or folder")
    install.add_argument(
        "--reinstall",
        action="store_true",
        help="install a new version of an installed plugin (as upgrade does)",
    )
    install.add_argument(
        "--downgrade", action="store_true", help="with --reinstall: allow an older version"
    )
    upgrade = add(
        "upgrade",
        "install a new version of an installed plugin (staged until approved)",
        _upgrade,
    )
    upgrade.add_argument("source", help="a plugin .zip or folder")
    upgrade.add_argument(
        "--downgrade", action="store_true", help="allow a version older than the installed one"
    )

    listing = add("list", "list installed plugins", _list)
    listing.add_argument("--status", choices=[s.value for s in PluginStatus])
    listing.add_argument("--tenant", help="only the plugins running for this tenant")

    add("show", "show one plugin, its tenants and versions", _show).add_argument("name")
    add(
        "approve",
        "approve a pending plugin, or a running one's staged version",
        _step(lambda r, a, actor: r.approve(a.name, actor=actor), "approved"),
    ).add_argument("name")
    reject = add(
        "reject",
        "reject a pending plugin, or a running one's staged version",
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
    rollback = add("rollback", "return a plugin to an earlier kept version", _rollback)
    rollback.add_argument("name")
    rollback.add_argument(
        "--to", metavar="VERSION", help="the kept version (default: the newest kept one)"
    )
    diff = add("diff", "show what changed between two versions of a plugin", _diff)
    diff.add_argument("name")
    diff.add_argument(
        "--from",
        dest="from_version",
        metavar="V",
        help="the older side (default: the running version, or with none staged the newest "
        "kept one)",
    )
    diff.add_argument(
        "--to",
        dest="to_version",
        metavar="V",
        help="the newer side (default: the staged version, else the running one)",
    )
    audit = add("audit", "show the audit trail, newest first", _audit)
    audit.add_argument("--plugin")
    audit.add_argument("--tenant")
    audit.add_argument("--by", help="only events by this actor")
    audit.add_argument("--limit", type=positive, default=50, help="at most this many (default 50)")
