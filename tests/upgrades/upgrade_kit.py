"""Versions of one test plugin, written and packed as real archives."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services_ai_plugins import pack_plugin

HEADER = (
    "import os, time\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import Widget\n\n\n"
    "class Plugin:\n"
)

#: Every version answers with its own version in a widget's title, and its settings' label.
WIDGET = """
@hookimpl
def dashboard_widget(self, context, settings):
    return Widget(
        tenant=context.tenant, title=f"v{VERSION} {settings.get('label')}", html="<p>x</p>"
    )
"""

SETTINGS: tuple[Mapping[str, Any], ...] = ({"name": "label", "type": "string", "default": "none"},)


def version_archive(
    root: Path,
    version: str,
    body: str = "",
    *,
    plugin_id: str = "crm-sync",
    permissions: Sequence[str] = ("dashboard_widgets",),
    settings: Sequence[Mapping[str, Any]] = SETTINGS,
    **manifest: Any,
) -> Path:
    """Write ``root/src/<id>-<version>/`` and pack it; the archive's path."""
    folder = root / "src" / f"{plugin_id}-{version}"
    folder.mkdir(parents=True)
    source = (
        f"VERSION = {version!r}\n\n"
        + HEADER
        + textwrap.indent(textwrap.dedent(WIDGET) + textwrap.dedent(body), "    ")
    )
    document = {
        "id": plugin_id,
        "name": "CRM Sync",
        "version": version,
        "entry_point": "main.py",
        "plugin_class": "Plugin",
        "permissions": list(permissions),
        "settings": [dict(s) for s in settings],
        **manifest,
    }
    (folder / "manifest.json").write_text(json.dumps(document))
    (folder / "main.py").write_text(source)
    return pack_plugin(folder, root / f"{plugin_id}-{version}.zip").path
