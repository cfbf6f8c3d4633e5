"""The pytest plugin of services-ai-plugins: fixtures for plugin authors.

pytest loads it by itself once the SDK is installed (the ``pytest11`` entry
point ``services_ai_plugins``). Fixtures:

- ``fake_services``: :class:`~services_ai_plugins_testing.fakes.FakeHostServices`,
  in-memory leads, bookings, invoices, users, messages and stores per tenant;
- ``mock_api``: :class:`~services_ai_plugins_testing.harness.MockAPI`, the real
  permission layer for your plugin over ``fake_services``, recording every call;
- ``plugin_host``: :class:`~services_ai_plugins_testing.harness.PluginHarness`,
  a real host on memory storage and ``fake_services``.

The plugin under test is the one whose ``manifest.json`` is the nearest above
the test file; mark a test (or a module, with ``pytestmark``) to choose another
folder or tenant::

    @pytest.mark.services_ai_plugin(path="plugins/crm-sync", tenant="globex")

Only pytest is imported when pytest starts; the SDK loads when a fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .fakes import FakeHostServices
    from .harness import MockAPI, PluginHarness

__all__ = ["fake_services", "mock_api", "plugin_host"]

_MARKER = "services_ai_plugin"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(path=None, tenant='acme'): the plugin folder (default: the nearest "
        "manifest.json above the test) and the tenant the services-ai-plugins fixtures use",
    )


def _options(request: pytest.FixtureRequest) -> tuple[Path | None, str, bool]:
    """The plugin folder, tenant and sandbox choice for this test: the marker's, else defaults."""
    from .harness import DEFAULT_TENANT, find_plugin_folder  # noqa: PLC0415

    marker = request.node.get_closest_marker(_MARKER)
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    unknown = set(options) - {"path", "tenant", "sandbox"}
    if unknown:
        raise pytest.UsageError(
            f"@pytest.mark.{_MARKER}: unknown option(s) {', '.join(sorted(unknown))} "
            "(it takes path=, tenant= and sandbox=)"
        )
    tenant = str(options.get("tenant") or DEFAULT_TENANT)
    sandbox = options.get("sandbox", False)
    if not isinstance(sandbox, bool):
        raise pytest.UsageError(f"@pytest.mark.{_MARKER}: sandbox= takes True or False")
    path = options.get("path")
    if path is not None:
        folder = Path(path)
        if not folder.is_absolute():
            folder = request.path.parent / folder
        if not folder.is_dir():
            raise pytest.UsageError(f"@pytest.mark.{_MARKER}: no plugin folder at {folder}")
        return folder, tenant, sandbox
    return find_plugin_folder(request.path.parent), tenant, sandbox


@pytest.fixture
def fake_services() -> FakeHostServices:
    """In-memory host services: leads, bookings, invoices, users, messages, stores per tenant."""
    from .fakes import FakeHostServices  # noqa: PLC0415

    return FakeHostServices()


@pytest.fixture
def mock_api(request: pytest.FixtureRequest, fake_services: FakeHostServices) -> MockAPI:
    """The plugin's API over ``fake_services``: its declared permissions, every call recorded.

    The permissions are those of the plugin's manifest (see the module
    docstring); without a manifest it holds none until the test grants some.
    """
    from services_ai_plugins import Manifest  # noqa: PLC0415

    from .harness import MockAPI  # noqa: PLC0415

    folder, tenant, _ = _options(request)
    if folder is None:
        return MockAPI(fake_services, tenant=tenant)
    manifest = Manifest.from_file(folder / "manifest.json")
    return MockAPI.for_manifest(fake_services, manifest, tenant=tenant)


@pytest.fixture
def plugin_host(
    request: pytest.FixtureRequest, fake_services: FakeHostServices, tmp_path: Path
) -> Iterator[PluginHarness]:
    """A real plugin host on memory storage and ``fake_services``; ``add()`` your plugin to it."""
    from .harness import PluginHarness  # noqa: PLC0415

    folder, tenant, sandbox = _options(request)
    harness = PluginHarness(
        fake_services,
        tmp_path / "services-ai-plugins",
        tenant=tenant,
        project=folder,
        sandbox=sandbox,
    )
    yield harness
    harness.close()
