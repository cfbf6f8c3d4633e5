"""What the tests of kept archives share: plugins, hostile archives, records pointing at them."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs

from services_ai_plugins import Registry
from services_ai_plugins.storage import AuditEvent, Change, Storage

HEADER = (
    "import os\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import Widget\n\n\n"
    "class Plugin:\n"
)


def widget(title: str) -> str:
    """A plugin body: a widget titled ``title``, drawn by the process given in its html."""
    return f"""
@hookimpl
def dashboard_widget(self, context):
    return Widget(tenant=context.tenant, title={title!r}, html=str(os.getpid()))
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def point_at(storage: Storage, plugin_id: str, artifact: str, **changes: Any) -> None:
    """Make the stored record of ``plugin_id`` name ``artifact`` (and ``changes``), as a
    registry row written by hand would: what a forged or damaged registry holds."""
    record = storage.get_plugin(plugin_id)
    assert record is not None
    new = attrs.evolve(record, artifact=artifact, revision=record.revision + 1, **changes)
    audit = AuditEvent(
        at=datetime.now(timezone.utc), actor="test", action="point", plugin_id=plugin_id
    )
    storage.commit(Change(plugin_id=plugin_id, plugin=new, audit=audit))


def recorded_artifact(registry: Registry, plugin_id: str, data: bytes) -> str:
    """The archive the registry recorded for the plugin: the SHA-256 of the uploaded bytes."""
    key = sha256(data)
    assert registry.plugin(plugin_id).artifact == key
    return key


def hostile_zip(plugin_id: str, members: Mapping[str, str | bytes]) -> bytes:
    """A ZIP with a valid manifest for ``plugin_id`` and ``members`` written as named, unchecked."""
    manifest = {
        "id": plugin_id,
        "name": plugin_id.title(),
        "version": "1.0.0",
        "entry_point": "main.py",
        "plugin_class": "Plugin",
        "permissions": [],
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.json", json.dumps(manifest))
        archive.writestr("main.py", HEADER + "    pass\n")
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def files_under(folder: Path) -> set[str]:
    """Every file under ``folder``, relative (empty when it does not exist)."""
    if not folder.exists():
        return set()
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
