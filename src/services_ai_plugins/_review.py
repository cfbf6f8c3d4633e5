"""What a reviewer sees of a plugin, for every admin (the neutral one and Django's).

The facts of its record and manifest, what it asks for, its settings schema, its
requirements and whether this host meets them, and where it will run: plain values the
admin pages put in their templates.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._dependencies import check_environment
from ._json import JSONValue
from ._manifest import Isolation, Manifest
from ._permissions import PermissionCatalogue
from ._sandbox._policy import isolation_of
from ._settings import SettingSpec, SettingType
from ._storage._protocol import PluginRecord, PluginStatus, TenantRecord
from .errors import PackageError, PluginError, ProblemsError

if TYPE_CHECKING:
    from ._host import PluginHost
    from ._registry import Registry

__all__ = [
    "json_text",
    "optional_permissions",
    "plugin_facts",
    "requested",
    "requirements",
    "schema_row",
    "setting_help",
    "setting_unchanged",
    "upload_error",
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
