"""The services-ai-plugins demo: what the SDK does with a plugin, end to end.

Run it with ``bash scripts/demo.sh`` (or ``python examples/demo.py`` where the SDK
is installed). It grows as the SDK does: today it validates the bundled example
plugin, checks tenant settings against its schema, packs it reproducibly,
validates the archive an admin would upload, and takes the plugin through its
lifecycle in a registry on the embedded SQLite default: install, approve,
enable for a tenant, configure, suspend, with the audit trail that records it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from services_ai_plugins import (
    HOST_API_VERSION,
    PluginError,
    Registry,
    SettingsError,
    SourceKind,
    SQLiteStorage,
    TransitionError,
    __version__,
    pack_plugin,
    validate_plugin,
)

EXAMPLE = Path(__file__).resolve().parent / "hello-plugin"


def main() -> int:
    """Walk through the example plugin's life before installation."""
    print(f"services-ai-plugins {__version__} (host API {HOST_API_VERSION})\n")

    checked = validate_plugin(EXAMPLE)
    manifest = checked.manifest
    print(f"1. validated {checked.kind} {EXAMPLE.name}: {manifest.id} {manifest.version}")
    print(f"   permissions: {', '.join(manifest.permissions)}")
    print(f"   settings:    {', '.join(spec.name for spec in manifest.settings)}")

    values = manifest.validate_settings({"min_value": "250", "channel": "email"})
    print(f"2. a tenant's form input, coerced: {values}")
    try:
        manifest.validate_settings({"min_value": "-5", "channel": "fax"})
    except SettingsError as exc:
        print("   and refused input, every field at once:")
        for problem in exc.problems:
            print(f"     {problem}")

    with tempfile.TemporaryDirectory() as scratch:
        first = pack_plugin(EXAMPLE, Path(scratch) / "first.zip")
        second = pack_plugin(EXAMPLE, Path(scratch) / "second.zip")
        same = "identical" if first.sha256 == second.sha256 else "DIFFERENT"
        print(f"3. packed twice: {len(first.files)} files, sha256 {first.sha256[:16]}... ({same})")
        uploaded = validate_plugin(first.path).manifest
        print(f"4. the archive validates as an upload: {uploaded.id} {uploaded.version}")

        registry = Registry(SQLiteStorage(Path(scratch) / "plugins.db"))
        registry.install(
            uploaded,
            actor="ada@ops",
            code_hash=first.sha256,
            source=SourceKind.ARCHIVE,
            package_path=str(first.path),
        )
        print(f"5. installed in a SQLite registry: {registry.plugin(uploaded.id).status.value}")
        try:
            registry.enable(uploaded.id, "acme", actor="owner@acme")
        except TransitionError as exc:
            print(f"   enabling before approval is refused: {exc}")
        registry.approve(uploaded.id, actor="grace@admin")
        registry.enable(uploaded.id, "acme", actor="owner@acme")
        registry.set_settings(uploaded.id, "acme", {"min_value": "100"}, actor="owner@acme")
        running = registry.enabled_plugins("acme")
        print(f"6. approved and enabled: plugins running for acme = {running}")
        print(f"   acme's settings: {registry.get_settings(uploaded.id, 'acme')}")
        registry.suspend(uploaded.id, actor="grace@admin", reason="investigating a report")
        print(f"7. suspended: plugins running for acme = {registry.enabled_plugins('acme')}")
        print("8. the audit trail, newest first:")
        for event in registry.audit_log(plugin_id=uploaded.id):
            where = f" for {event.tenant}" if event.tenant else ""
            print(f"     {event.action}{where} by {event.actor}: {event.before} -> {event.after}")
        registry.storage.close()
    return 0 if same == "identical" else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PluginError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        sys.exit(1)
