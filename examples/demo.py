"""The services-ai-plugins demo: what the SDK does with a plugin, end to end.

Run it with ``bash scripts/demo.sh`` (or ``python examples/demo.py`` where the SDK
is installed). It grows as the SDK does: today it validates the bundled example
plugin, checks tenant settings against its schema, packs it reproducibly and
validates the archive an admin would upload.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from services_ai_plugins import (
    HOST_API_VERSION,
    PluginError,
    SettingsError,
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
    return 0 if same == "identical" else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PluginError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        sys.exit(1)
