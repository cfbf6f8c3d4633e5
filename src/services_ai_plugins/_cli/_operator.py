"""The operator commands of the command line: install, list, show, approve, ..., audit.

They work on a registry (``--db``, ``$SERVICES_AI_PLUGINS_DB``, default
``services-ai-plugins.db`` here: a SQLite file, or a ``postgresql://`` URL)
with plugin code under a plugins folder (``--plugins-dir``,
``$SERVICES_AI_PLUGINS_DIR``, default ``plugins`` here).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from .._dependencies import require_environment
from .._kinds import DEFAULT_DB, DEFAULT_PLUGINS_DIR
from .._manifest import Manifest
from .._permissions import Permission, PermissionCatalogue
from .._registry import Registry, Suspension
from .._settings import SettingType
from .._sources._archive import ArchiveError, install_archive
from .._sources._package import pack_plugin
from .._storage._protocol import (
    AuditEvent,
    FailureRecord,
    PluginRecord,
    PluginStatus,
    Storage,
    TenantRecord,
)
from .._storage._sqlite import SQLiteStorage
from ..errors import (
    PackageError,
    Problem,
    SettingsError,
    StorageError,
    TransitionError,
)

__all__ = [
    "DB_ENV",
    "Handler",
    "Result",
    "ResultWithCode",
    "actor_name",
    "add_operator_commands",
    "command_adder",
    "db_path",
    "db_value",
    "is_database_url",
    "open_storage",
    "plugins_path",
    "positive",
]

DB_ENV: Final = "SERVICES_AI_PLUGINS_DB"
DIR_ENV: Final = "SERVICES_AI_PLUGINS_DIR"

#: What a command returns: its JSON fields (``ok`` is added) and its lines for people.
Result = tuple[dict[str, Any], list[str]]


#: The URL schemes ``--db`` takes for a PostgreSQL database (libpq's own two).
_POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")


def db_value(args: argparse.Namespace) -> str:
    """What ``--db`` (else ``$SERVICES_AI_PLUGINS_DB``, else the default) names."""
    return str(getattr(args, "db", None) or os.environ.get(DB_ENV) or DEFAULT_DB)


def is_database_url(value: str) -> bool:
    """Whether a ``--db`` value is a PostgreSQL URL rather than a SQLite file."""
    return value.lower().startswith(_POSTGRES_SCHEMES)


def db_path(args: argparse.Namespace) -> Path:
    """The SQLite file ``--db`` names (meaningless for a URL: see :func:`is_database_url`)."""
    return Path(db_value(args))


def _redacted(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, _, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{location}"


@contextmanager
def open_storage(args: argparse.Namespace, *, must_exist: bool = False) -> Iterator[Storage]:
    """The storage ``--db`` names: a ``PostgresStorage`` for a ``postgresql://`` URL,
    else a ``SQLiteStorage`` file; closed on leaving.

    ``must_exist`` refuses a SQLite file that does not exist (with a
    ``StorageError`` naming it) instead of creating it. A PostgreSQL database
    always exists: opening it creates the registry's tables if missing.
    psycopg is imported only for a URL; without the ``postgres`` extra the
    URL is refused with a ``StorageError`` saying what to install.
    """
    value = db_value(args)
    storage: Storage
    if is_database_url(value):
        try:
            from .._storage._postgres._storage import PostgresStorage  # noqa: PLC0415 - optional: only for a URL

            storage = PostgresStorage(value)
        except ImportError as exc:
            raise StorageError(f"{_redacted(value)}: {exc}") from exc
    else:
        db = Path(value)
        if must_exist and not db.is_file():
            raise StorageError(
                f"{db}: no such registry database; install a plugin first, or name the "
                f"database with --db or ${DB_ENV}"
            )
        storage = SQLiteStorage(db)
    try:
        yield storage
    finally:
        storage.close()


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

    Reading a SQLite registry that does not exist shows an empty one (no
    plugins, no events) instead of leaving an empty database file behind.
    """
    value = db_value(args)
    if not create and not is_database_url(value) and not Path(value).exists():
        from .._storage._memory import MemoryStorage  # noqa: PLC0415 - only for a missing database

        yield Registry(MemoryStorage())
        return
    with open_storage(args) as storage:
        yield Registry(storage)


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
    with _registry(args) as registry, _cli_flags(source):
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


_PYTHON_FLAG: Final = "pass reinstall=True"


@contextmanager
def _cli_flags(source: Path) -> Iterator[None]:
    """Refusals that name the Python argument ``reinstall=True`` name ``--reinstall`` instead."""
    try:
        yield
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


def _suspension_document(suspension: Suspension) -> dict[str, Any]:
    return {
        "tenant": suspension.tenant,
        "reason": suspension.reason,
        "since": suspension.since.isoformat(),
        "by": suspension.by,
    }


def _suspension_line(suspension: Suspension) -> str:
    where = f"for tenant {suspension.tenant}" if suspension.tenant else "everywhere"
    return (
        f"suspended {where} by {suspension.by} since {suspension.since:%Y-%m-%d %H:%M}: "
        f"{suspension.reason}"
    )


def _load_failure(registry: Registry, record: PluginRecord) -> FailureRecord | None:
    """Why an approved plugin cannot load: its newest unresolved ``load`` failure since its
    approval, or None.

    A host records one when the plugin's code is missing or changed, or its
    import or plugin object fails. One from before the latest approval (a fixed
    version reinstalled and approved again) no longer counts, nor one marked
    resolved (``resolve``).
    """
    if record.status is not PluginStatus.APPROVED:
        return None
    since = record.approved_at or record.installed_at
    for failure in registry.storage.failures(record.id, resolved=False, limit=_FAILURES_READ):
        if failure.hook == "load" and failure.at >= since:
            return failure
    return None


#: How many of a plugin's newest unresolved failures are searched for a load failure.
_FAILURES_READ: Final = 200


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
    with _registry(args, create=False) as registry:
        plugins = registry.plugins(status)
        if args.tenant:
            enabled = set(registry.enabled_plugins(args.tenant))
            plugins = [p for p in plugins if p.id in enabled]
        suspensions: dict[str, list[Suspension]] = {}
        for suspension in registry.suspensions():
            suspensions.setdefault(suspension.plugin_id, []).append(suspension)
        failures = {p.id: _load_failure(registry, p) for p in plugins}
    documents = []
    lines = []
    for plugin in plugins:
        document = _plugin_document(plugin)
        document["suspensions"] = [_suspension_document(s) for s in suspensions.get(plugin.id, [])]
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


def _requested_permissions(manifest: Manifest) -> list[dict[str, Any]]:
    """What the plugin asks for, each with the catalogue's description and risk."""
    catalogue = PermissionCatalogue()
    requested = []
    for names, optional in ((manifest.permissions, False), (manifest.optional_permissions, True)):
        for name in names:
            try:
                known: Permission | None = catalogue[name]
            except KeyError:
                known = None
            requested.append(
                {
                    "name": name,
                    "optional": optional,
                    "description": known.description if known else None,
                    "risk": known.risk.value if known else None,
                }
            )
    return requested


def _permission_line(permission: Mapping[str, Any]) -> str:
    optional = " (optional, granted per tenant)" if permission["optional"] else ""
    if permission["risk"] is None:
        return f"    {permission['name']}{optional}: not a permission this SDK knows"
    return (
        f"    {permission['name']:<20} {permission['risk']:<6} "
        f"{permission['description']}{optional}"
    )


def _show(args: argparse.Namespace) -> Result:
    with _registry(args, create=False) as registry:
        record = registry.plugin(args.name)
        tenants = registry.storage.list_tenants(args.name)
        history = registry.history(args.name)
        suspensions = registry.suspensions(args.name)
        failure = _load_failure(registry, record)
        requested = _requested_permissions(registry.manifest(args.name))
    document = _plugin_document(record)
    document["requested_permissions"] = requested
    document["suspensions"] = [_suspension_document(s) for s in suspensions]
    document["load_failure"] = _load_failure_document(failure)
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
    if record.status is PluginStatus.PENDING:
        lines.append("  asks for:" if requested else "  asks for no permissions")
        lines += [_permission_line(p) for p in requested]
    lines += [f"  {_suspension_line(s)}" for s in suspensions]
    if failure is not None:
        lines.append(f"  {_load_failure_line(failure)}")
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
    with _registry(args, create=False) as registry:
        return _settings_result(registry, args.name, args.tenant)


def _settings_set(args: argparse.Namespace) -> Result:
    given: dict[str, str] = dict(args.values or ())
    if not given and not args.reset:
        raise ValueError("settings set: give at least one --set NAME=VALUE or --reset NAME")
    with _registry(args) as registry:
        values = _setting_values(registry.manifest(args.name), given)
        values.update(dict.fromkeys(args.reset or ()))
        registry.set_settings(args.name, args.tenant, values, actor=actor_name(args))
        document, lines = _settings_result(registry, args.name, args.tenant)
    changed = ", ".join(sorted(values))
    return document, [f"set {changed} of {args.name} for tenant {args.tenant}", *lines]


def _grant_step(grant: bool) -> Callable[[argparse.Namespace], Result]:
    def handler(args: argparse.Namespace) -> Result:
        with _registry(args) as registry:
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
    audit = add("audit", "show the audit trail, newest first", _audit)
    audit.add_argument("--plugin")
    audit.add_argument("--tenant")
    audit.add_argument("--by", help="only events by this actor")
    audit.add_argument("--limit", type=positive, default=50, help="at most this many (default 50)")
