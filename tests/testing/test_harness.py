"""The harness behind the pytest fixtures: MockAPI and PluginHarness, used directly."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest

from conftest import plugin_folder
from services_ai_plugins import Manifest, PermissionDenied, hookimpl, pack_plugin
from services_ai_plugins.events import Lead
from services_ai_plugins_testing.fakes import FakeHostServices
from services_ai_plugins_testing.harness import MockAPI, PluginHarness, find_plugin_folder

GREETER = """\
from services_ai_plugins import hookimpl


class Plugin:
    def __init__(self):
        self.greeted = []

    @hookimpl
    def lead_created(self, lead, api, settings):
        self.greeted.append(lead.name)
        api.send_notification(settings["greeting"] + " " + lead.name)
"""

GREETING = {"name": "greeting", "type": "string", "default": "Hello"}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return plugin_folder(
        tmp_path,
        "greeter",
        GREETER,
        permissions=["read_leads", "send_notifications"],
        settings=[GREETING],
    )


@pytest.fixture
def harness(tmp_path: Path) -> PluginHarness:
    made = PluginHarness(FakeHostServices(), tmp_path / "harness")
    yield made
    made.close()


# -- MockAPI -------------------------------------------------------------------------------------


def manifest(**fields: object) -> Manifest:
    return Manifest.from_dict({"id": "mocked", "name": "Mocked", "version": "1.0", **fields})


def test_mock_api_holds_the_declared_permissions_and_records_calls() -> None:
    """Declared permissions work; others are refused, recorded in calls and denied."""
    services = FakeHostServices()
    api = MockAPI.for_manifest(services, manifest(permissions=["send_notifications"]))
    api.send_notification("hi")
    with pytest.raises(PermissionDenied, match="send_email"):
        api.send_email("a@example.com", "s", "b")
    assert [(c.method, c.args, type(c.error).__name__) for c in api.calls] == [
        ("send_notification", ("hi",), "NoneType"),
        ("send_email", ("a@example.com", "s", "b"), "PermissionDenied"),
    ]
    assert [(d.method, d.permission) for d in api.denied] == [("send_email", "send_email")]
    assert [n.message for n in services.sent_notifications] == ["hi"]
    assert api.plugin_id == "mocked"
    assert api.context is not None
    assert api.context.tenant == "acme"


def test_mock_api_grants_only_what_an_admin_could() -> None:
    """grant() takes optional permissions only; revoke() takes anything away."""
    api = MockAPI.for_manifest(
        FakeHostServices(), manifest(permissions=["read_leads"], optional_permissions=["send_sms"])
    )
    with pytest.raises(ValueError, match=r"not an optional permission.*send_sms"):
        api.grant("send_email")
    api.grant("send_sms")
    api.send_sms("+100", "hi")
    api.revoke("send_sms")
    with pytest.raises(PermissionDenied):
        api.send_sms("+100", "again")
    assert api.grants == {"read_leads"}
    free = MockAPI(FakeHostServices())
    free.grant("anything_at_all")  # no manifest: the test decides
    assert free.grants == {"anything_at_all"}


def test_mock_api_settings_are_the_manifests_defaults_until_changed() -> None:
    """get_setting answers from the manifest's defaults, then from set_settings()."""
    api = MockAPI.for_manifest(FakeHostServices(), manifest(settings=[GREETING]))
    assert api.get_setting("greeting") == "Hello"
    api.set_settings(greeting="Hi")
    assert api.get_settings() == {"greeting": "Hi"}


def test_assert_called_explains_what_happened_instead() -> None:
    """A missed expectation lists the calls made (or says there were none)."""
    api = MockAPI(FakeHostServices(), permissions={"send_notifications"})
    with pytest.raises(AssertionError, match="made no API call"):
        api.assert_called("send_notification")
    api.send_notification("hello", level="warning")
    assert api.assert_called("send_notification", level="warning").args == ("hello",)
    with pytest.raises(AssertionError) as caught:
        api.assert_called("send_notification", "bye")
    assert "expected a call send_notification('bye')" in str(caught.value)
    assert "send_notification('hello', level='warning')" in str(caught.value)
    api.assert_not_called("send_email")
    with pytest.raises(AssertionError, match="expected no call of send_notification"):
        api.assert_not_called("send_notification")


# -- PluginHarness -------------------------------------------------------------------------------


def test_a_folder_is_packed_installed_approved_and_enabled(
    harness: PluginHarness, folder: Path
) -> None:
    """add(folder): the real install path; fire() runs it with example payloads."""
    assert harness.add(folder, settings={"greeting": "Hi"}) == "greeter"
    trace = harness.fire("lead_created").assert_ok()
    assert trace.ran == ("greeter",)
    assert trace.outcome("greeter").failure is None
    [note] = harness.services.sent_notifications
    assert note.message.startswith("Hi ")
    record = harness.host.registry.plugin("greeter")
    assert record.source.value == "archive"
    assert harness.plugin("greeter").greeted  # type: ignore[attr-defined]


def test_a_zip_and_other_tenants(harness: PluginHarness, folder: Path, tmp_path: Path) -> None:
    """add(zip, tenants=...): enabled there only; fire(tenant=) follows it."""
    archive = pack_plugin(folder, tmp_path / "greeter.zip").path
    harness.add(archive, tenants=["globex"])
    assert harness.fire("lead_created").ran == ()
    assert harness.fire("lead_created", tenant="globex").ran == ("greeter",)
    with pytest.raises(KeyError, match="did not run in lead_created"):
        harness.fire("lead_created").outcome("greeter")


class ClassPlugin:
    manifest: ClassVar = {
        "id": "class-plugin",
        "name": "Class Plugin",
        "version": "1.0",
        "permissions": ["read_leads"],
    }

    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def lead_created(self, lead: Lead) -> None:
        self.seen.append(lead.id)


def test_a_class_or_a_module_is_installed_as_it_is(harness: PluginHarness) -> None:
    """add(cls) and add(module, manifest=...): no folder needed."""
    assert harness.add(ClassPlugin) == "class-plugin"
    module = types.ModuleType("harness_module_plugin")
    module.__file__ = __file__

    @hookimpl
    def lead_created(lead: Lead) -> None:
        raise RuntimeError("module plugin ran")

    module.lead_created = lead_created  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        harness.add(
            module,
            manifest={
                "id": "module-plugin",
                "name": "M",
                "version": "2",
                "permissions": ["read_leads"],
            },
        )
        trace = harness.fire("lead_created", lead=harness.services.add_lead("acme", name="X"))
    finally:
        del sys.modules[module.__name__]
    assert set(trace.ran) == {"class-plugin", "module-plugin"}
    assert [o.plugin_id for o in trace.failed] == ["module-plugin"]
    with pytest.raises(AssertionError, match=r"(?s)1 of 2 plugins failed.*module plugin ran"):
        trace.assert_ok()
    assert [f.plugin_id for f in harness.failures()] == ["module-plugin"]
    assert harness.call("lead_created") is None


def test_without_a_project_add_needs_a_plugin(harness: PluginHarness) -> None:
    """No manifest.json above the test and nothing passed: a clear error."""
    with pytest.raises(ValueError, match=r"no manifest\.json above this test"):
        harness.add()


def test_the_project_folder_is_the_nearest_manifest_above(folder: Path) -> None:
    """find_plugin_folder walks up from a test folder to the plugin's."""
    tests = folder / "tests" / "unit"
    tests.mkdir(parents=True)
    assert find_plugin_folder(tests) == folder
    assert find_plugin_folder(folder / "main.py") == folder
    assert find_plugin_folder(folder.parent) is None
