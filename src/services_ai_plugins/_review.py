"""What a reviewer sees of a plugin, for every admin (the neutral one and Django's).

The facts of its record and manifest, what it asks for, its settings schema, its
requirements and whether this host meets them, and where it will run: plain values the
admin pages put in their templates.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._dependencies import check_environment
from ._json import JSONValue
from ._manifest import Isolation, Manifest
from ._permissions import PermissionCatalogue
from ._sandbox._policy import isolation_of
from ._settings import SettingSpec, SettingType
from ._sources._materialise import version_code
from ._storage._protocol import (
    AuditEvent,
    KeptVersion,
    PluginRecord,
    PluginStatus,
    SourceKind,
    StagedVersion,
    TenantRecord,
)
from ._versions import VersionDiff
from .errors import PackageError, PluginError, ProblemsError

if TYPE_CHECKING:
    from ._host import PluginHost
    from ._registry import Registry

__all__ = [
    "audit_line",
    "code_to_check",
    "diff_view",
    "json_text",
    "kept_rows",
    "optional_permissions",
    "plugin_facts",
    "requested",
    "requirements",
    "schema_row",
    "setting_help",
    "setting_unchanged",
    "staged_facts",
    "staged_state",
    "upgrade_view",
    "upload_error",
    "upload_note",
    "where_it_runs",
]


def plugin_facts(record: PluginRecord, manifest: Manifest | None) -> list[tuple[str, object]]:
    facts: list[tuple[str, object]] = [
        ("Id", record.id),
        ("Name", record.name),
        ("Version", record.version),
        ("Status", record.status.value),
    ]
    if record.status_reason:
        facts.append(("Reason", record.status_reason))
    if manifest is not None:
        email = f"<{manifest.email}>" if manifest.email else ""
        author = " ".join(part for part in (manifest.author or "", email) if part)
        facts += [
            ("Description", manifest.description),
            ("Author", author),
            ("Homepage", manifest.homepage),
            ("License", manifest.license),
            ("Changelog", manifest.changelog),
            # The hosts api.http_request may reach (the http_requests permission): approved with it.
            ("Network", ", ".join(manifest.network)),
        ]
    facts += [
        ("Source", record.source.value),
        ("Installed", f"{record.installed_at:%Y-%m-%d %H:%M:%S} by {record.installed_by}"),
        (
            "Approved",
            f"{record.approved_at:%Y-%m-%d %H:%M:%S} by {record.approved_by}"
            if record.approved_at
            else None,
        ),
        ("Code hash", record.code_hash),
        ("Code folder", record.package_path),
    ]
    return [(label, value) for label, value in facts if value]


def code_to_check(host: PluginHost, record: PluginRecord) -> Path:
    """The folder of the version a reviewer checks, on this machine: the staged version when
    there is one, else the running one; materialised from its archive when this machine has
    no copy (the host that installed it may be another).

    :raises PackageError: an entry-point plugin (no folder), or code that cannot be found
        or does not match its hash (the message says which).
    """
    version = record.staged if record.staged is not None else record
    if version.source is SourceKind.ENTRY_POINT:
        raise PackageError(
            f"{record.id} was not installed from a folder or an archive (it is an "
            f"{version.source.value} plugin): there is no code to check here",
            path=record.id,
        )
    return version_code(
        record.id, version, plugins_dir=host.plugins_dir, artifacts=host.registry.artifacts
    )


def json_text(value: Mapping[str, JSONValue] | None) -> str:
    return "" if value is None else json.dumps(value, indent=1, sort_keys=True)


def upload_error(error: PluginError, name: str) -> str:
    """An install's refusal, naming the uploaded file instead of ``<upload>``."""
    text = str(error)
    if isinstance(error, PackageError) and error.path == "<upload>":
        return f"{name}{text.removeprefix(error.path)}"
    if isinstance(error, ProblemsError) and error.source and error.source.startswith("<upload>"):
        return f"{name}{text.removeprefix('<upload>')}"
    return f"{name}: {text}"


def upload_note(record: PluginRecord, name: str) -> str:
    """The note after an upload: installed pending approval, or staged beside the running
    version (and maybe approved at once by the upgrade policy)."""
    staged = record.staged
    if staged is not None and record.status is not PluginStatus.PENDING:
        if staged.approved_at is not None:
            return (
                f"Staged {record.id} {staged.version} from {name} beside {record.version}; "
                "approved by the upgrade policy (it asks for nothing new): the hosts switch "
                "at their next refresh."
            )
        return (
            f"Staged {record.id} {staged.version} from {name} beside {record.version}, "
            "which runs on. Review the changes, then approve or reject it."
        )
    return (
        f"Installed {record.id} {record.version} from {name}: {record.status.value}. "
        "Review it, then approve or reject it."
    )


def requested(manifest: Manifest | None) -> list[dict[str, Any]]:
    """What the plugin asks for, with the catalogue's description and risk (as ``show``)."""
    if manifest is None:
        return []
    return PermissionCatalogue().requested(manifest.permissions, manifest.optional_permissions)


def requirements(host: PluginHost, manifest: Manifest) -> list[dict[str, Any]]:
    """Each requirement, and whether this host meets it (as install and load check)."""
    problems = {problem.path: problem.message for problem in check_environment(manifest)}
    rows: list[dict[str, Any]] = []

    def row(kind: str, what: str, path_: str) -> None:
        rows.append({"kind": kind, "what": what, "problem": problems.get(path_)})

    if manifest.requires_api is not None:
        row("Host API", str(manifest.requires_api), "requires_api")
    if manifest.requires_python is not None:
        row("Python", str(manifest.requires_python), "requires_python")
    for index, requirement in enumerate(manifest.dependencies):
        row("Package", str(requirement), f"dependencies[{index}]")
    storage = host.registry.storage
    for required, specifier in manifest.requires_plugins.items():
        found = storage.get_plugin(required)
        problem = None
        if found is None or found.status is PluginStatus.UNINSTALLED:
            problem = f"{required} is not installed"
        elif not specifier.contains(found.version, prereleases=True):
            problem = f"{required} is version {found.version}, not {specifier}"
        elif found.status is not PluginStatus.APPROVED:
            problem = f"{required} is {found.status.value}"
        rows.append(
            {"kind": "Plugin", "what": f"{required} {specifier}".strip(), "problem": problem}
        )
    return rows


def schema_row(spec: SettingSpec) -> dict[str, Any]:
    limits = []
    if spec.choices is not None:
        limits.append("one of " + ", ".join(json.dumps(c) for c in spec.choices))
    if spec.min is not None:
        limits.append(f"at least {spec.min}")
    if spec.max is not None:
        limits.append(f"at most {spec.max}")
    if spec.max_length is not None:
        limits.append(f"at most {spec.max_length} characters")
    return {
        "spec": spec,
        "default": "" if spec.default is None else json.dumps(spec.default),
        "limits": "; ".join(limits),
    }


def where_it_runs(host: PluginHost, record: PluginRecord, manifest: Manifest | None) -> str:
    policy = host.sandbox.policy
    if isolation_of(record.source, manifest, policy) is Isolation.PROCESS:
        why = (
            "its manifest asks for it"
            if manifest is not None and manifest.isolation is Isolation.PROCESS
            else f"the host's SandboxPolicy for {record.source.value} plugins"
        )
        return f"In a sandboxed worker process (each hook call at most {policy.timeout:g} s; {why})"
    why = (
        "the host's SandboxPolicy names it trusted"
        if record.id in policy.trusted
        else f"the host's SandboxPolicy runs {record.source.value} plugins there"
    )
    return f"In the web server's process, with the app's rights ({why})"


def setting_unchanged(spec: SettingSpec, new: JSONValue, old: JSONValue) -> bool:
    """Whether a settings form's value is the one the plugin sees already (a form saves
    only what an admin changed)."""
    if spec.type is SettingType.NUMBER:
        return isinstance(old, (int, float)) and not isinstance(old, bool) and new == old
    # JSON text tells 1 from true and 1.0, which == does not.
    return json.dumps(new, sort_keys=True) == json.dumps(old, sort_keys=True)


def setting_help(spec: SettingSpec, *, stored: bool) -> str:
    """A settings form field's help: the description, whether a secret is stored (never its
    value), the default and the bounds."""
    parts = [spec.description] if spec.description else []
    if spec.type is SettingType.SECRET:
        parts.append(
            "Write-only: a value is stored; leave blank to keep it."
            if stored
            else "Write-only: no value is stored."
        )
    elif spec.default is not None:
        default = spec.default
        parts.append(f"Default: {default if isinstance(default, str) else json.dumps(default)}.")
    if spec.min is not None or spec.max is not None:
        low = spec.min if spec.min is not None else "-∞"
        high = spec.max if spec.max is not None else "∞"
        parts.append(f"From {low} to {high}.")
    return " ".join(parts)


def optional_permissions(
    registry: Registry, record: PluginRecord, stored: TenantRecord | None
) -> list[dict[str, Any]]:
    """The plugin's optional permissions for one tenant (``stored``: its record there), each
    as :func:`requested` gives it with ``granted``; and those granted for an earlier version
    that no longer declares them, so that they can be revoked."""
    try:
        manifest: Manifest | None = registry.manifest_of(record)
    except PluginError:
        manifest = None
    granted = set(stored.optional_grants) if stored is not None else set()
    optional = [
        {**permission, "granted": permission["name"] in granted}
        for permission in requested(manifest)
        if permission["optional"]
    ]
    declared = {p["name"] for p in optional}
    optional += [
        {"name": name, "optional": True, "description": None, "risk": None, "granted": True}
        for name in sorted(granted - declared)
    ]
    return optional


# -- staged versions, diffs, rollback (issue 21) ---------------------------------------------------


def staged_state(record: PluginRecord) -> str | None:
    """What the plugin list says of a staged new version (None: none staged)."""
    staged = record.staged
    if staged is None:
        return None
    if staged.approved_at is None:
        return f"{staged.version} waiting for approval"
    return f"{staged.version} approved, switching at the next refresh"


def staged_facts(staged: StagedVersion, manifest: Manifest | None) -> list[tuple[str, object]]:
    """The review facts of a staged version (as :func:`plugin_facts` for the running one)."""
    facts: list[tuple[str, object]] = [("Version", staged.version)]
    if manifest is not None:
        email = f"<{manifest.email}>" if manifest.email else ""
        author = " ".join(part for part in (manifest.author or "", email) if part)
        facts += [
            ("Name", manifest.name),
            ("Description", manifest.description),
            ("Author", author),
            ("Homepage", manifest.homepage),
            ("License", manifest.license),
        ]
    facts += [
        ("Source", staged.source.value),
        ("Installed", f"{staged.installed_at:%Y-%m-%d %H:%M:%S} by {staged.installed_by}"),
        (
            "Approved",
            f"{staged.approved_at:%Y-%m-%d %H:%M:%S} by {staged.approved_by}"
            + (" (the upgrade policy: it asks for nothing new)" if staged.auto_approved else "")
            if staged.approved_at
            else None,
        ),
        ("Code hash", staged.code_hash),
        ("Archive", staged.artifact),
    ]
    return [(label, value) for label, value in facts if value]


def diff_view(diff: VersionDiff) -> dict[str, Any]:
    """What both admins show of a :class:`~services_ai_plugins._versions.VersionDiff`: plain
    rows for their templates (each section empty when nothing changed in it)."""
    permissions = [
        {
            "change": change,
            "name": p.name,
            "optional": p.optional,
            "description": p.description,
            "risk": p.risk,
        }
        for change, found in (
            ("added", diff.permissions_added),
            ("removed", diff.permissions_removed),
            ("added", diff.optional_added),
            ("removed", diff.optional_removed),
        )
        for p in found
    ]
    hooks = [{"change": "added", "name": h} for h in diff.hooks_added]
    hooks += [{"change": "removed", "name": h} for h in diff.hooks_removed]
    hooks_note = None
    if diff.hooks_listed == (True, False):
        hooks_note = "The new version no longer lists its hooks: it may implement any."
    elif diff.hooks_listed == (False, True):
        hooks_note = "The running version did not list its hooks."
    settings = [
        {"change": "added", "name": str(spec.name), "text": _setting_text(spec)}
        for spec in diff.settings_added
    ]
    settings += [{"change": "removed", "name": name, "text": ""} for name in diff.settings_removed]
    settings += [
        {
            "change": "changed",
            "name": change.name,
            "text": "; ".join(
                f"{attribute} {_value_text(before)} → {_value_text(after)}"
                for attribute, before, after in change.changes
            ),
        }
        for change in diff.settings_changed
    ]
    files: dict[str, Any] | None = None
    if diff.files_known:
        rows = [
            {
                "change": change,
                "path": f.path,
                "before": f.before.size if f.before is not None else None,
                "after": f.after.size if f.after is not None else None,
            }
            for change, found in (
                ("added", diff.files_added),
                ("removed", diff.files_removed),
                ("changed", diff.files_changed),
            )
            for f in found
        ]
        files = {
            "rows": rows,
            "notes": list(diff.files_notes),
            "counts": f"{len(diff.files_added)} added, {len(diff.files_removed)} removed, "
            f"{len(diff.files_changed)} changed",
        }
    return {
        "from": diff.old_version,
        "to": diff.new_version,
        "code_hash": (diff.old_code_hash, diff.new_code_hash),
        "same_code": diff.old_code_hash == diff.new_code_hash,
        "reasons": list(diff.reasons),
        "permissions": permissions,
        "hooks": hooks,
        "hooks_note": hooks_note,
        "settings": settings,
        "requirements": [
            {"name": r.name, "before": r.before, "after": r.after, "sentence": r.sentence()}
            for r in diff.requirements
        ],
        "files": files,
        "changelog": diff.changelog,
    }


def _setting_text(spec: SettingSpec) -> str:
    row = schema_row(spec)
    parts = [spec.type.value]
    if spec.required:
        parts.append("required")
    if row["default"]:
        parts.append(f"default {row['default']}")
    if row["limits"]:
        parts.append(row["limits"])
    if spec.description:
        parts.append(spec.description)
    return "; ".join(parts)


def _value_text(value: JSONValue) -> str:
    return "(none)" if value is None else json.dumps(value, sort_keys=True)


def upgrade_view(registry: Registry, record: PluginRecord) -> dict[str, Any] | None:
    """The staged version of a running plugin as its review page shows it (None: none
    staged): its facts, what it asks for, its diff against the running version, and
    whether it waits for approval."""
    staged = record.staged
    if staged is None:
        return None
    problems: list[str] = []
    try:
        manifest: Manifest | None = Manifest.from_dict(dict(staged.manifest))
    except PluginError as exc:
        manifest = None
        problems.append(f"The staged manifest cannot be read: {exc}")
    diff = None
    try:
        diff = diff_view(registry.diff(record.id))
    except PluginError as exc:
        problems.append(f"The diff cannot be made: {exc}")
    return {
        "staged": staged,
        "state": staged_state(record),
        "waiting": staged.approved_at is None,
        "facts": staged_facts(staged, manifest),
        "permissions": requested(manifest),
        "diff": diff,
        "problems": problems,
    }


def kept_rows(registry: Registry, record: PluginRecord) -> list[dict[str, Any]]:
    """The earlier versions kept for a rollback, newest first (none for a plugin that is
    not running: only an approved or suspended one rolls back)."""
    if record.status not in (PluginStatus.APPROVED, PluginStatus.SUSPENDED):
        return []
    kept: list[KeptVersion] = registry.kept_versions(record.id)
    return [
        {"version": k.version, "kept_at": k.kept_at, "code_hash": k.code_hash}
        for k in reversed(kept)
        if k.version != record.version
    ]


def audit_line(event: AuditEvent) -> str:
    """A sentence for the audit page saying what an event of a version's life did ("" for
    the other actions, whose before and after say it)."""
    before = event.before or {}
    after = event.after or {}
    action = event.action
    if action == "stage":
        line = f"Staged version {after.get('staged')} beside the running {before.get('version')}"
        if before.get("staged"):
            line += f" (replacing the staged {before.get('staged')})"
        return line + "."
    if action == "approve upgrade":
        line = f"Approved the upgrade from {before.get('version')} to {after.get('staged')}"
        if after.get("auto_approved"):
            line += " (the upgrade policy: it asks for nothing new)"
        return line + "; a host switches at its next refresh."
    if action == "upgrade":
        line = f"Switched from {before.get('version')} to {after.get('version')}"
        migrated = after.get("migrated")
        if isinstance(migrated, list) and migrated:
            line += f", the settings of {', '.join(map(str, migrated))} migrated"
        return line + "."
    if action == "upgrade failed":
        line = f"The switch to {after.get('failed')} failed"
        if after.get("step"):
            line += f" at {after.get('step')}"
        if after.get("tenant"):
            line += f" for tenant {after.get('tenant')}"
        return f"{line}; {after.get('version')} runs on: {after.get('reason')}"
    if action == "rollback":
        return f"Rolled back from {before.get('version')} to {after.get('version')}."
    if action == "reject" and "staged" in before:
        return (
            f"Rejected the staged version {before.get('staged')}; "
            f"{before.get('version')} runs on: {after.get('reason')}"
        )
    return ""
