"""The pytest plugin for plugin authors, run as an author runs it: pytest in a plugin folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ROOT
from services_ai_plugins import check_plugin
from services_ai_plugins.tooling import scaffold_plugin

pytest_plugins = ["pytester"]

GUIDE = ROOT / "docs" / "testing.md"
FILE_BLOCK = re.compile(
    r'^```\w+ title="(?P<path>[^"]+)"\n(?P<body>.*?)^```$', re.MULTILINE | re.DOTALL
)


def guide_files() -> dict[str, str]:
    """The files docs/testing.md shows, by the path its code fences name."""
    files = {m["path"]: m["body"] for m in FILE_BLOCK.finditer(GUIDE.read_text())}
    assert {"manifest.json", "main.py", "tests/test_unit.py", "tests/test_host.py"} <= set(files)
    return files


def write(pytester: pytest.Pytester, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = pytester.path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.slow
def test_the_guides_plugin_and_tests_pass_as_written(pytester: pytest.Pytester) -> None:
    """Every test in "Testing your plugin" passes when the files are laid out as it shows."""
    files = guide_files()
    write(pytester, files)
    tests = [text for path, text in files.items() if path.startswith("tests/")]
    expected = sum(len(re.findall(r"^def test_", text, re.MULTILINE)) for text in tests)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=expected)


def test_a_failing_test_says_what_the_plugin_did_instead(pytester: pytest.Pytester) -> None:
    """assert_called fails with the call expected and the calls made, not a bare assert."""
    write(pytester, {k: v for k, v in guide_files().items() if not k.startswith("tests/")})
    pytester.makepyfile(
        test_wrong="""
        from main import Greeter

        def test_wrong_greeting(fake_services, mock_api):
            lead = fake_services.make_lead(name="Ada")
            Greeter().lead_created(lead=lead, api=mock_api, settings={"greeting": "Hello"})
            mock_api.assert_called("send_notification", "Goodbye, Ada!")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*expected a call send_notification('Goodbye, Ada!'); the calls made were:*",
            "*send_notification('Hello, Ada!')*",
        ]
    )
    assert "harness.py" not in result.stdout.str()


def test_a_plugin_without_its_permission_is_refused_as_in_production(
    pytester: pytest.Pytester,
) -> None:
    """Declaring no send_notifications: mock_api raises PermissionDenied; in the host it fails."""
    files = {k: v for k, v in guide_files().items() if not k.startswith("tests/")}
    files["manifest.json"] = files["manifest.json"].replace(
        '["read_leads", "send_notifications"]', '["read_leads"]'
    )
    write(pytester, files)
    pytester.makepyfile(
        test_denied="""
        import pytest
        from main import Greeter
        from services_ai_plugins import PermissionDenied

        def test_unit_is_refused(fake_services, mock_api):
            lead = fake_services.make_lead(name="Ada")
            with pytest.raises(PermissionDenied, match="send_notifications"):
                Greeter().lead_created(lead=lead, api=mock_api, settings={"greeting": "Hi"})
            [denied] = mock_api.denied
            assert (denied.method, denied.permission) == ("send_notification", "send_notifications")

        def test_in_the_host(plugin_host):
            plugin_host.add()
            plugin_host.fire("lead_created").assert_ok()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*1 of 1 plugins failed in lead_created:*",
            "*- greeter: PermissionDenied:*send_notifications*",
        ]
    )


def test_the_marker_chooses_the_plugin_folder_and_the_tenant(pytester: pytest.Pytester) -> None:
    """services_ai_plugin(path=..., tenant=...) points the fixtures elsewhere."""
    plugin = {k: v for k, v in guide_files().items() if not k.startswith("tests/")}
    write(pytester, {f"plugins/greeter/{k}": v for k, v in plugin.items()})
    pytester.makepyfile(
        test_marked="""
        import pytest

        pytestmark = pytest.mark.services_ai_plugin(path="plugins/greeter", tenant="globex")

        def test_host(plugin_host):
            assert plugin_host.add() == "greeter"
            assert plugin_host.fire("lead_created").ran == ("greeter",)
            assert plugin_host.services.notifications("globex")

        def test_api(mock_api):
            assert (mock_api.plugin_id, mock_api.tenant) == ("greeter", "globex")
            assert mock_api.grants == {"read_leads", "send_notifications"}
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


@pytest.mark.slow
def test_a_scaffolded_plugin_passes_its_own_tests(pytester: pytest.Pytester) -> None:
    """`new` writes tests that use the fixtures; pytest in the new folder passes; so does check."""
    folder = scaffold_plugin("Lead Notifier", pytester.path).path
    test_file = (folder / "tests" / "test_plugin.py").read_text()
    for fixture in ("fake_services", "mock_api", "plugin_host"):
        assert fixture in test_file
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", folder)
    result.assert_outcomes(passed=4)
    report = check_plugin(folder)
    assert report.ok, report.problems
    assert [p for p in report.problems if p.severity == "warning"] == []


def test_the_plugin_loads_nothing_of_the_sdk_until_a_fixture_is_used() -> None:
    """pytest starts every run with the plugin loaded: it must import pytest and nothing heavy."""
    import subprocess
    import sys

    code = (
        "import sys, services_ai_plugins_testing.plugin; "
        "print(sorted(m for m in sys.modules if m.startswith('services_ai')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "['services_ai_plugins_testing', 'services_ai_plugins_testing.plugin']"
    assert (
        Path(ROOT / "pyproject.toml").read_text().count("services_ai_plugins_testing.plugin") == 1
    )


def test_the_marker_runs_the_plugin_in_a_sandbox_worker(pytester: pytest.Pytester) -> None:
    """services_ai_plugin(sandbox=True): the plugin runs as a host runs uploads, in a worker."""
    write(pytester, {k: v for k, v in guide_files().items() if not k.startswith("tests/")})
    pytester.makepyfile(
        test_sandboxed="""
        import os

        import pytest

        @pytest.mark.services_ai_plugin(sandbox=True)
        def test_in_a_worker(plugin_host):
            plugin_host.add()
            plugin_host.fire("lead_created").assert_ok()
            assert plugin_host.services.notifications("acme")
            assert plugin_host.plugin("greeter").pid not in (None, os.getpid())

        def test_in_this_process(plugin_host):
            plugin_host.add()
            assert not hasattr(plugin_host.plugin("greeter"), "pid")

        @pytest.mark.services_ai_plugin(sandbox="yes")
        def test_refused(plugin_host):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*sandbox= takes True or False*"])
