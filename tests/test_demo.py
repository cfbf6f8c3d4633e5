"""``services-ai-plugins demo``: the README's first command shows what it says it shows."""

from __future__ import annotations

import importlib.util
import io
import itertools
import logging
import os
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT
from services_ai_plugins import Registry, SQLiteStorage, validate_plugin
from services_ai_plugins._cli._main import EXIT_OK, EXIT_REFUSED, main
from services_ai_plugins._demo import ENABLED, PLUGINS_DIR
from services_ai_plugins.hookspecs import hook_info, plugin_manager

BUNDLED = sorted(path.name for path in PLUGINS_DIR.iterdir() if path.is_dir())


def demo(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["demo", *args], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def output() -> str:
    """The demo's output, run in-process once for the module."""
    code, out, err = demo()
    assert (code, err) == (EXIT_OK, ""), err
    return out


def test_the_demo_exits_0_without_tracebacks(output: str) -> None:
    """The demo succeeds, and plugin failures show as log lines, never as tracebacks."""
    assert "Traceback" not in output
    failures = [line for line in output.splitlines() if "log ERROR" in line]
    assert len(failures) == 5
    assert all(
        line.strip().startswith("log ERROR services_ai_plugins.plugins.flaky: hook lead_created")
        for line in failures
    )


def test_it_packs_and_installs_every_bundled_plugin(output: str) -> None:
    """Stage 1: each bundled plugin is packed, installed from its archive and left pending."""
    assert BUNDLED == ["branding", "flaky", "lead-notifier", "revenue-widget"]
    for plugin_id in BUNDLED:
        assert re.search(
            rf"{plugin_id}-[\d.]+\.zip +-> {plugin_id} +code hash [0-9a-f]{{12}}", output
        )
    assert "installed 4 plugins" in output
    assert output.count(", pending") == 4


def test_it_enables_plugins_per_tenant_and_configures_one(output: str) -> None:
    """Stage 2: approved with their permissions, enabled per tenant, acme's setting changed."""
    assert (
        "approved lead-notifier   granted: read_leads, read_bookings, send_notifications" in output
    )
    assert "acme     runs flaky, lead-notifier, revenue-widget" in output
    assert "initech  runs branding, lead-notifier, revenue-widget" in output
    assert "acme sets lead-notifier's settings to greeting='Hot lead', min_value=1000" in output
    assert "initech keeps the defaults: greeting='New lead', min_value=0" in output


def test_events_run_each_tenants_plugins_with_their_own_settings_and_store(output: str) -> None:
    """Stage 3: what each plugin did through its API, with the tenant's settings and store."""
    assert "-> notification: Hot lead: Hank Scorpio (Globex), worth 4800.00" in output
    assert "-> notification: New lead: Peter Gibbons (Initrode), worth 950.00" in output
    assert "-> widget 'Revenue from paid invoices': <p><strong>1950.00 EUR</strong></p>" in output
    assert "-> widget 'Revenue from paid invoices': <p><strong>360.00 USD</strong></p>" in output
    assert "-> the app sends it unchanged" in output  # acme has no branding
    assert "-> the app sends it signed, ending 'Sent with care by our team'" in output
    assert '-> in <head>: <meta name="theme-color" content="#0a7cff">' in output
    assert (
        "acme     2 notifications, 1 e-mail; store: lead-notifier.leads_seen=1, "
        'revenue-widget.revenue={"EUR": "1950.00"}'
    ) in output
    assert (
        "initech  2 notifications, 1 e-mail; store: lead-notifier.leads_seen=1, "
        'revenue-widget.revenue={"USD": "360.00"}'
    ) in output


def test_no_event_reaches_a_plugin_its_tenant_did_not_enable(output: str) -> None:
    """Stage 3: acme's events never reach branding; initech's never reach flaky."""
    assert "acme's events reached flaky, lead-notifier, revenue-widget; never branding" in output
    assert "initech's events reached branding, lead-notifier, revenue-widget; never flaky" in output
    lines = output.splitlines()
    events = 0
    for header, ran in itertools.pairwise(lines):
        event = re.match(r" {3}(acme|initech) +[a-z_]+ ", header)
        if event is None or "ran: " not in ran:
            continue
        events += 1
        for plugin_id in re.findall(r"([a-z-]+) (?:ok|FAILED)", ran):
            assert plugin_id in ENABLED[event[1]], (header, ran)
    assert events == 6 * 2 + 5  # six events for each tenant, then acme's five more leads


def test_a_failing_plugin_is_isolated_then_suspended_by_the_breaker(output: str) -> None:
    """Stage 4: the others run beside flaky; after 5 failures in a row it is suspended for acme."""
    assert output.count("ran: flaky FAILED, lead-notifier ok") == 5  # call order: by id
    assert (
        "suspended: flaky for tenant acme by circuit-breaker: lead_created: 5 consecutive failures"
        in output
    )
    assert "host listener: plugin_suspended: flaky for tenant 'acme'" in output
    assert "acme now runs lead-notifier, revenue-widget" in output
    after = output.split("acme now runs", 1)[1]
    assert "ran: lead-notifier ok\n" in after
    assert "flaky FAILED" not in after.split("5. What an admin sees")[0]


def test_an_admin_sees_settings_metrics_failures_and_the_audit_trail(output: str) -> None:
    """Stage 5: settings per tenant, metrics per plugin and hook, failures, the audit tail."""
    admin = output.split("5. What an admin sees", 1)[1]
    assert "acme     lead-notifier   greeting='Hot lead', min_value=1000" in admin
    assert "initech  branding        signature='Sent with care by our team', colour='blue'" in admin
    assert re.search(r"flaky +lead_created +5 +5 ", admin)
    assert re.search(r"lead-notifier +lead_created +7 +0 ", admin)
    assert re.search(r"revenue-widget +invoice_paid +2 +0 ", admin)
    assert "Failures (host.failures(), newest first): 5 recorded" in admin
    assert "flaky lead_created [acme] ConnectionError: crm.example did not answer" in admin
    assert re.search(r"circuit-breaker +suspend +flaky \[acme\]", admin)


def test_the_demo_leaves_logging_as_it_found_it() -> None:
    """Its one-line log handler is only there while it runs (the library configures nothing)."""
    logger = logging.getLogger("services_ai_plugins")
    before = (list(logger.handlers), logger.level, logger.propagate)
    assert demo()[0] == EXIT_OK
    assert (list(logger.handlers), logger.level, logger.propagate) == before


def test_python_m_services_ai_plugins_demo(tmp_path: Path) -> None:
    """As a command, in a subprocess: exit 0, no traceback, nothing written where it runs."""
    result = subprocess.run(
        [sys.executable, "-m", "services_ai_plugins", "demo"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "Traceback" not in result.stdout
    assert "installed 4 plugins" in result.stdout
    assert "suspended: flaky for tenant acme by circuit-breaker" in result.stdout
    assert "The folder is gone again" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_keep_keeps_the_folder_with_its_registry(tmp_path: Path) -> None:
    """--keep DIR leaves the archives, the installed plugins and the registry to inspect."""
    folder = tmp_path / "demo"
    code, out, _ = demo("--keep", str(folder))
    assert code == EXIT_OK
    assert f"Kept {folder}" in out
    assert sorted(p.name for p in (folder / "archives").iterdir()) == [
        "branding-1.0.0.zip",
        "flaky-0.1.0.zip",
        "lead-notifier-1.0.0.zip",
        "revenue-widget-1.0.0.zip",
    ]
    storage = SQLiteStorage(folder / "plugins.db")
    try:
        registry = Registry(storage)
        assert [(p.id, p.status.value) for p in registry.plugins()] == [
            (plugin_id, "approved") for plugin_id in BUNDLED
        ]
        assert [(s.plugin_id, s.tenant, s.by) for s in registry.suspensions()] == [
            ("flaky", "acme", "circuit-breaker")
        ]
        for record in registry.plugins():
            assert Path(record.package_path or "").parent.parent == folder / "plugins"
    finally:
        storage.close()


def test_keep_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    """The demo never writes into a folder that holds something already (exit 1)."""
    (tmp_path / "notes.txt").write_text("mine")
    code, out, err = demo("--keep", str(tmp_path))
    assert (code, out) == (EXIT_REFUSED, "")
    assert err == f"error: --keep {tmp_path}: give a folder that is new or empty\n"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("plugin_id", BUNDLED)
def test_each_bundled_plugin_validates(plugin_id: str) -> None:
    """`services-ai-plugins validate` accepts every bundled plugin folder."""
    folder = PLUGINS_DIR / plugin_id
    assert validate_plugin(folder).manifest.id == plugin_id
    out, err = io.StringIO(), io.StringIO()
    assert main(["validate", str(folder)], stdout=out, stderr=err) == EXIT_OK, err.getvalue()


@pytest.mark.parametrize("plugin_id", BUNDLED)
def test_each_bundled_plugin_holds_what_its_hooks_need(
    plugin_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It implements the hooks its manifest lists, and holds every permission they need.

    The host does not call a plugin's hook without them, so a missing one would
    silently leave the plugin out of the demo.
    """
    folder = PLUGINS_DIR / plugin_id
    manifest = validate_plugin(folder).manifest
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # nothing written into the package
    spec = importlib.util.spec_from_file_location(f"_bundled_{plugin_id}", folder / "main.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert manifest.plugin_class is not None
    plugin = getattr(module, manifest.plugin_class)()
    pm = plugin_manager()
    pm.register(plugin, name=plugin_id)
    implemented = sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())
    assert implemented == sorted(manifest.hooks or ())
    for hook in implemented:
        assert set(hook_info(hook).permissions) <= set(manifest.permissions), hook


def test_the_readme_and_scripts_run_the_demo() -> None:
    """The README sets up with exactly two commands; the scripts behind them run the demo."""
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in setup.splitlines()]
    assert commands == ["bash scripts/demo.sh", "bash .ci/run"]
    script = (ROOT / "scripts" / "demo.sh").read_text()
    assert script.rstrip().endswith('exec .venv/bin/services-ai-plugins demo "$@"')


def test_examples_demo_py_still_runs_the_demo() -> None:
    """python examples/demo.py (what `nox -s demo` runs) is the demo command."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "installed 4 plugins" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_the_wheel_ships_the_bundled_plugins(tmp_path: Path) -> None:
    """The built wheel holds every bundled plugin folder, and the demo runs from it.

    The wheel is installed into a folder of its own and put first on the path,
    so its copy of the SDK (not this checkout's) runs the demo, outside the checkout.
    """
    # The test environment may have no pip of its own (nox makes it with uv).
    tools = tmp_path / "tools"
    venv.EnvBuilder(with_pip=True).create(tools)
    pip = [tools / "bin" / "python", "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--quiet", "-w", tmp_path, ROOT],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = tmp_path.glob("services_ai_plugins-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if "/_demo_plugins/" in name}
    expected = {
        f"services_ai_plugins/_demo_plugins/{path.relative_to(PLUGINS_DIR).as_posix()}"
        for path in PLUGINS_DIR.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert shipped == expected
    assert {name.split("/")[2] for name in shipped} == set(BUNDLED)

    site = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--quiet", "--target", site, wheel],
        check=True,
        capture_output=True,
        text=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = "import services_ai_plugins._demo as d; print(d.PLUGINS_DIR)"
    where = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip() == str(site / "services_ai_plugins" / "_demo_plugins")
    result = subprocess.run(
        [sys.executable, "-m", "services_ai_plugins", "demo"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "installed 4 plugins" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
