"""``services-ai-plugins new``: a plugin folder that validates and tests from the start."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import attrs
from packaging.version import Version

from ._manifest import Manifest, derive_id
from ._version import HOST_API_VERSION
from .errors import PackageError

__all__ = ["ScaffoldResult", "scaffold_plugin"]


@attrs.frozen
class ScaffoldResult:
    """What :func:`scaffold_plugin` created."""

    #: The new plugin folder.
    path: Path
    #: The files written, relative to the folder.
    files: tuple[str, ...]
    #: The new plugin's manifest.
    manifest: Manifest


def _class_name(plugin_id: str) -> str:
    return "".join(part.capitalize() for part in plugin_id.split("-") if part) + "Plugin"


def _display_name(name: str, plugin_id: str) -> str:
    if name == plugin_id:
        return " ".join(part.capitalize() for part in plugin_id.split("-"))
    return " ".join(name.split())


def scaffold_plugin(
    name: str,
    directory: str | os.PathLike[str] = ".",
    *,
    author: str | None = None,
    email: str | None = None,
) -> ScaffoldResult:
    """Create a new plugin folder named after the plugin's id.

    ``name`` is either an id (``lead-notifier``) or a display name (``"Lead
    Notifier"``) from which the id is derived. The folder holds a manifest, a
    plugin module implementing ``lead_created``, a test, a ``pytest.ini`` and a
    ``README.md``;
    it passes ``services-ai-plugins validate`` as created.

    :raises PackageError: when no id can be derived from ``name`` or the folder
        already exists.
    :raises ManifestError: when ``author`` or ``email`` are refused by the manifest rules.
    """
    plugin_id = derive_id(name)
    if plugin_id is None:
        raise PackageError(
            "cannot make a plugin id from this name: use letters, digits and '-'", path=name
        )
    major = Version(HOST_API_VERSION).major
    document: dict[str, object] = {
        "id": plugin_id,
        "name": _display_name(name, plugin_id),
        "version": "0.1.0",
        "description": "Sends a notification when a lead is created.",
        "entry_point": "main.py",
        "plugin_class": _class_name(plugin_id),
        "permissions": ["read_leads", "send_notifications"],
        "settings": [
            {
                "name": "greeting",
                "type": "string",
                "default": "New lead",
                "max_length": 100,
                "description": "The start of each notification.",
            }
        ],
        "requires_api": f">={HOST_API_VERSION},<{major + 1}",
        "hooks": ["lead_created"],
        "isolation": "process",
    }
    if author is not None:
        document["author"] = author
    if email is not None:
        document["email"] = email
    manifest = Manifest.from_dict(document)
    target = Path(directory) / plugin_id
    if target.exists():
        raise PackageError("already exists; choose another name or folder", path=str(target))
    files = {
        "manifest.json": manifest.to_json(),
        "main.py": _MODULE.format(cls=manifest.plugin_class, name=manifest.name),
        "tests/test_plugin.py": _TEST.format(cls=manifest.plugin_class),
        "pytest.ini": _PYTEST_INI,
        "README.md": _README.format(name=manifest.name, id=plugin_id),
    }
    # Build the folder beside its destination and rename it in one step, so a
    # failure never leaves half a plugin behind.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{plugin_id}.", dir=target.parent))
    try:
        for relative, text in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        staging.chmod(0o755)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ScaffoldResult(target, tuple(files), manifest)


_MODULE = '''\
"""{name}: a services-ai-plugins plugin."""

from __future__ import annotations

from typing import Any

from services_ai_plugins import hookimpl


class {cls}:
    """Sends a notification for every new lead."""

    @hookimpl
    def lead_created(self, lead: Any, context: Any, api: Any) -> None:
        """Tell the team about the new lead (needs the send_notifications permission)."""
        greeting = api.get_setting("greeting")
        api.send_notification(f"{{greeting}}: {{lead.name}}")
'''

_TEST = '''\
"""Tests for the plugin: run them with ``pytest`` in the plugin folder.

The fixtures come with services-ai-plugins (its pytest plugin loads by itself):
``fake_services`` holds the host's data and what plugins sent, ``mock_api`` is
the plugin's own API with the permissions its manifest declares, and
``plugin_host`` runs the plugin in a real host, the way an app will.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from services_ai_plugins import PermissionDenied
from services_ai_plugins.events import Lead
from services_ai_plugins_testing.fakes import FakeHostServices
from services_ai_plugins_testing.harness import MockAPI, PluginHarness
from services_ai_plugins_testing.strategies import leads

from main import {cls}


def test_lead_created_sends_a_notification(
    fake_services: FakeHostServices, mock_api: MockAPI
) -> None:
    """A new lead produces one notification that starts with the greeting."""
    lead = fake_services.make_lead(name="Ada Lovelace")

    {cls}().lead_created(lead=lead, context=mock_api.context, api=mock_api)

    mock_api.assert_called("send_notification", "New lead: Ada Lovelace")


def test_without_the_permission_nothing_is_sent(
    fake_services: FakeHostServices, mock_api: MockAPI
) -> None:
    """Without send_notifications the host refuses the call."""
    mock_api.revoke("send_notifications")
    lead = fake_services.make_lead(name="Ada Lovelace")

    with pytest.raises(PermissionDenied):
        {cls}().lead_created(lead=lead, context=mock_api.context, api=mock_api)
    assert fake_services.notifications() == []


def test_the_host_runs_it_for_the_tenant_with_its_settings(plugin_host: PluginHarness) -> None:
    """Installed, approved and enabled like in production, it greets as the tenant set it."""
    plugin_host.add(settings={{"greeting": "Hot lead"}})

    plugin_host.fire("lead_created").assert_ok()

    [notification] = plugin_host.services.notifications("acme")
    assert notification.message.startswith("Hot lead: ")


@given(lead=leads(tenant="acme"))
def test_every_lead_is_announced_by_name(lead: Lead) -> None:
    """Whatever the lead, the notification names it."""
    services = FakeHostServices()
    api = MockAPI(
        services, permissions={{"send_notifications"}}, settings={{"greeting": "New lead"}}
    )

    {cls}().lead_created(lead=lead, context=api.context, api=api)

    assert api.called("send_notification")[0].args == (f"New lead: {{lead.name}}",)
'''

_PYTEST_INI = """\
[pytest]
pythonpath = .
testpaths = tests
"""

_README = """\
# {name}

A plugin for services-ai-plugins hosts.

    services-ai-plugins validate .     # check the manifest and the entry point
    pytest                              # run the plugin's tests
    services-ai-plugins pack .         # write {id}-<version>.zip for upload
"""
