"""A plugin's requirements hold on every path, async hooks are handled, requirements run first.

* ``requires_api``, ``requires_python`` and the PEP 508 ``dependencies`` are
  checked by every install path (the command line, ``PluginHost.install``,
  ``install_object``, folder and entry-point discovery) with the same check,
  and again when the host loads the plugin (the loading machine may differ).
* An ``async def`` implementation runs to completion on the sync path in the
  host's process, and is refused at load in a worker; an async generator is
  refused everywhere.
* A plugin's implementations run after those of the plugins it requires, in
  every kind of hook chain, in process and sandboxed.

Every plugin is a real folder packed into a real archive and installed
through the host (or a real distribution on ``sys.path`` for entry points).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from conftest import CliRunner, Hosts, Installer, plugin_folder
from services_ai_plugins import (
    MemoryStorage,
    PluginHost,
    Registry,
    RequirementsError,
    SandboxPolicy,
)
from services_ai_plugins._sandbox._stand_in import SandboxedPlugin
from services_ai_plugins.events import Context, Email
from services_ai_plugins.tooling import discover_folders, register_discovered
from services_ai_plugins_testing.fakes import FakeHostServices

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

HEADER = (
    "import os\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import Widget\n\n\n"
    "class Plugin:\n"
)

ACME = Context(tenant="acme")

QUIET = """
@hookimpl
def lead_created(self, lead, api):
    api.store_set("ran", True)
"""

#: No host offers this API, no Python is this version.
UNMET = {"requires_api": ">=5", "requires_python": ">=4"}

#: The distribution a plugin depends on: installed on the installing machine only.
FAKE_DIST = "sai-envcheck-fake-dist"

ISOLATIONS = ["inprocess", "process"]


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def make_host(hosts: Hosts) -> Callable[..., PluginHost]:
    def make(isolation: str = "process") -> PluginHost:
        sandbox = SandboxPolicy(timeout=30.0, isolation={"archive": isolation})
        return cast("PluginHost", hosts(sandbox=sandbox))

    return make


def fire(host: PluginHost, services: FakeHostServices) -> None:
    host.hook.lead_created(lead=services.make_lead("acme", name="Ada"), context=ACME)


def paths(error: RequirementsError) -> list[str]:
    return [problem.path for problem in error.problems]


# -- every install path refuses unmet requirements ------------------------------------------------


def test_host_install_refuses_what_the_command_line_refuses(
    make_host: Callable[..., PluginHost], install: Installer, tmp_path: Path
) -> None:
    """The same archive: the same typed refusal, naming each requirement; nothing is written."""
    host = make_host()
    with pytest.raises(RequirementsError) as refused:
        install(host, "future", QUIET, manifest=UNMET)
    error = refused.value
    assert error.plugin_id == "future"
    assert paths(error) == ["requires_api", "requires_python"]
    assert "requires host API >=5" in str(error)
    assert "requires Python >=4" in str(error)
    assert host.registry.plugins() == []
    assert not (host.plugins_dir / "future").exists()

    cli = CliRunner(tmp_path / "cli")
    code, _, err = cli("install", tmp_path / "future.zip")
    assert code != 0
    assert str(error).splitlines()[0] in err


def test_install_object_refuses_unmet_requirements(make_host: Callable[..., PluginHost]) -> None:
    host = make_host()

    class Future:
        pass

    with pytest.raises(RequirementsError) as refused:
        host.install_object(
            Future, actor="ops", manifest={"name": "Future", "version": "1.0", **UNMET}
        )
    assert refused.value.plugin_id == "future"
    assert paths(refused.value) == ["requires_api", "requires_python"]
    assert host.registry.plugins() == []


def test_folder_discovery_refuses_unmet_requirements_and_records_none(tmp_path: Path) -> None:
    """A folder needing a distribution that is not installed: refused, and its neighbour waits."""
    plugins = tmp_path / "plugins"
    source = HEADER + textwrap.indent(QUIET, "    ")
    plugin_folder(plugins, "fine", source)
    needy = plugin_folder(plugins, "needy", source)
    document = json.loads((needy / "manifest.json").read_text())
    document["dependencies"] = [f"{FAKE_DIST}>=1"]
    (needy / "manifest.json").write_text(json.dumps(document))
    for folder in ("fine", "needy"):  # plugin_folder writes root/src/<id>: move them up
        shutil.move(str(plugins / "src" / folder), str(plugins / folder))
    (plugins / "src").rmdir()
    found = discover_folders(plugins).found
    assert sorted(p.plugin_id for p in found) == ["fine", "needy"]
    registry = Registry(MemoryStorage())
    with pytest.raises(RequirementsError) as refused:
        register_discovered(registry, found, actor="ops")
    assert refused.value.plugin_id == "needy"
    assert paths(refused.value) == ["dependencies[0]"]
    assert f"distribution {FAKE_DIST!r} is not installed" in str(refused.value)
    assert registry.plugins() == []
    # Discovered one at a time (as the host does for entry points), the other goes in.
    [record] = register_discovered(
        registry, [p for p in found if p.plugin_id == "fine"], actor="ops"
    )
    assert record.id == "fine"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in [m for m in sys.modules if m.startswith("sai_envcheck")]:
        del sys.modules[name]


def test_entry_point_discovery_refuses_unmet_requirements(
    site: Path, hosts: Hosts, services: FakeHostServices
) -> None:
    """A pip-installed plugin needing a newer host: refused at discovery, even if auto-approved."""
    info = site / "sai_envcheck_future-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: sai-envcheck-future\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[services_ai.plugins]\nsai-envcheck-future = sai_envcheck_future:Future\n"
    )
    (site / "sai_envcheck_future.py").write_text(
        "from services_ai_plugins import hookimpl\n\n\n"
        "class Future:\n"
        "    manifest = {'name': 'Sai Envcheck Future', 'requires_api': '>=5'}\n\n"
        "    @hookimpl\n"
        "    def lead_created(self, lead, api):\n"
        "        api.store_set('ran', True)\n"
    )
    host = PluginHost(
        services,
        storage=MemoryStorage(),
        plugins_dir=site.parent / "plugins",
        entry_points=True,
        approve_entry_points=True,
    )
    hosts.made.append(host)
    refused = {e.plugin_id: e for _, e in host.refused if isinstance(e, RequirementsError)}
    error = refused["sai-envcheck-future"]
    assert paths(error) == ["requires_api"]
    assert "sai-envcheck-future" not in {p.id for p in host.registry.plugins()}
    assert "sai-envcheck-future" not in host.plugins()


# -- loading checks again --------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_requirement_unmet_where_it_loads_is_a_recorded_load_failure(  # noqa: PLR0917 - fixtures
    isolation: str,
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Installed where its distribution was present, loaded where it is not: refused, recorded."""
    site = tmp_path / "installing-machine"
    info = site / "sai_envcheck_fake_dist-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {FAKE_DIST}\nVersion: 1.0\n")
    host = make_host(isolation)
    with monkeypatch.context() as installing:
        installing.syspath_prepend(str(site))
        install(
            host,
            "needy",
            QUIET,
            manifest={"dependencies": [f"{FAKE_DIST}>=1"]},
            approve=False,
        )
    assert host.registry.plugin("needy").status.value == "pending"
    install(host, "healthy", QUIET)  # loads fine beside it
    host.registry.approve("needy", actor="admin")
    host.registry.enable("needy", "acme", actor="admin")
    fire(host, services)
    assert "needy" not in host.plugins()
    assert services.stored("acme", "needy") == {}
    assert services.stored("acme", "healthy") == {"ran": True}
    [failure] = host.failures("needy")
    assert failure.hook == "load"
    assert failure.exc_type == "RequirementsError"
    assert "dependencies[0]" in failure.message
    assert f"distribution {FAKE_DIST!r} is not installed" in failure.message
    host.refresh(force=True)  # not retried (nor recorded again) at every refresh
    assert len(host.failures("needy")) == 1


# -- async def implementations ---------------------------------------------------------------------


def test_an_async_implementation_runs_to_completion_in_process_on_the_sync_path(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
) -> None:
    """In the host's process an ``async def`` hook is awaited to its end on the sync path
    (``host.ahook`` awaits it on the caller's loop); an async generator is refused at load."""
    host = make_host("inprocess")
    install(
        host,
        "eager",
        """
        @hookimpl
        async def lead_created(self, lead, api):
            import asyncio

            await asyncio.sleep(0)
            api.store_set("ran", True)
        """,
    )
    install(
        host,
        "streamer",
        """
        @hookimpl
        async def lead_created(self, lead, api):
            yield api.store_set("ran", True)
        """,
    )
    fire(host, services)
    assert services.stored("acme", "eager") == {"ran": True}
    assert "streamer" not in host.plugins()
    [failure] = host.failures("streamer")
    assert failure.hook == "load"
    assert "lead_created: async generator implementations are not supported" in failure.message


def test_an_async_implementation_runs_in_a_worker_and_an_async_generator_is_refused(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
) -> None:
    """A worker runs an ``async def`` hook to its end on an event loop of its own (made
    without a socket: the worker may make none); an async generator is refused, saying why."""
    host = make_host("process")
    install(
        host,
        "eager",
        """
        @hookimpl
        async def lead_created(self, lead, api):
            import asyncio

            await asyncio.sleep(0)
            api.store_set("ran", True)
        """,
    )
    install(
        host,
        "streamer",
        """
        @hookimpl
        def dashboard_widget(self, context):
            return Widget(tenant=context.tenant, title="ok", html="ok")

        @hookimpl
        async def lead_created(self, lead, api):
            yield api.store_set("ran", True)
        """,
        permissions=("read_leads", "dashboard_widgets"),
    )
    install(host, "healthy", QUIET)
    fire(host, services)
    assert services.stored("acme", "healthy") == {"ran": True}
    assert services.stored("acme", "eager") == {"ran": True}
    assert "streamer" not in host.plugins()
    assert services.stored("acme", "streamer") == {}
    [failure] = host.failures("streamer")
    assert failure.hook == "load"
    assert "lead_created: async generator implementations are not supported" in failure.message
    assert host.hook.dashboard_widget(context=ACME) == []  # none of its hooks run


# -- requirements run first ------------------------------------------------------------------------

#: ``alpha-app`` requires ``zulu-base``: by id it would come first, by requirement it comes last.
ORDERED = """
@hookimpl
def lead_created(self, lead, api):
    api.send_notification("{tag}")

@hookimpl
def dashboard_widget(self, context):
    return Widget(tenant=context.tenant, title="{tag}", html="{tag}")

@hookimpl
def filter_email(self, email):
    return email.__class__(
        tenant=email.tenant, to=email.to, subject=email.subject + " {tag}", body=email.body
    )
"""

EARLY = """
@hookimpl(tryfirst=True)
def dashboard_widget(self, context):
    return Widget(tenant=context.tenant, title="early", html="early")
"""

LATE = """
@hookimpl(trylast=True)
def dashboard_widget(self, context):
    return Widget(tenant=context.tenant, title="late", html="late")
"""

PERMISSIONS = ("read_leads", "dashboard_widgets", "send_email", "send_notifications")


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_plugin_runs_after_the_plugins_it_requires_in_every_chain(
    isolation: str,
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
) -> None:
    """Notify, collect and filter chains run zulu-base before alpha-app; tryfirst/trylast hold."""
    host = make_host(isolation)
    install(host, "zulu-base", ORDERED.format(tag="zulu"), permissions=PERMISSIONS)
    install(
        host,
        "alpha-app",
        ORDERED.format(tag="alpha"),
        permissions=PERMISSIONS,
        manifest={"requires_plugins": {"zulu-base": ">=1"}},
    )
    install(host, "mid-early", EARLY, permissions=("dashboard_widgets",))
    install(host, "aaa-late", LATE, permissions=("dashboard_widgets",))
    loaded = host.plugins()
    assert isinstance(loaded["alpha-app"], SandboxedPlugin) is (isolation == "process")

    notified = host.trace_hook(
        "lead_created", lead=services.make_lead("acme", name="Ada"), context=ACME
    )
    assert [o.plugin_id for o in notified.outcomes] == ["zulu-base", "alpha-app"]
    assert [n.message for n in services.notifications("acme")] == ["zulu", "alpha"]

    widgets = host.hook.dashboard_widget(context=ACME)
    assert [w.title for w in widgets] == ["early", "zulu", "alpha", "late"]

    email = Email(tenant="acme", to=("a@example.com",), subject="Hi", body="")
    filtered = host.hook.filter_email(email=email, context=ACME)
    assert filtered.subject == "Hi zulu alpha"


def test_a_plugin_whose_required_plugin_is_not_approved_here_does_not_load_until_it_is(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """requires_plugins is checked at load too: not loaded (one recorded failure) while the plugin
    it requires is not approved in a version it accepts; loaded once it is."""
    host = make_host("inprocess")
    install(host, "base", QUIET, approve=False)
    install(
        host,
        "dependant",
        QUIET,
        approve=False,
        manifest={"requires_plugins": {"base": ">=1"}},
    )
    host.registry.approve("dependant", actor="admin")  # approved before what it requires
    host.refresh(force=True)
    assert "dependant" not in host.plugins()
    [failure] = [f for f in host.failures("dependant") if f.hook == "load"]
    assert failure.exc_type == "RequirementsError"
    assert "base" in failure.message
    host.refresh(force=True)  # nothing changed for it: not tried (nor recorded) again
    assert len([f for f in host.failures("dependant") if f.hook == "load"]) == 1
    host.registry.approve("base", actor="admin")
    host.refresh(force=True)
    assert {"base", "dependant"} <= set(host.plugins())
