"""Shared fixtures: the bundled example plugin and a writer of plugin folders."""

from __future__ import annotations

import io
import json
import os
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PLUGIN = ROOT / "examples" / "hello-plugin"

#: Hypothesis budgets come from a profile, chosen by $HYPOTHESIS_PROFILE (or pytest's
#: --hypothesis-profile): `dev`, the default, tries every property a few times for quick feedback;
#: `ci` (the default when $CI is set; .ci/run sets it) runs the full budgets: Hypothesis' 100
#: examples, or the larger number a test sets with @settings(max_examples=...).
DEV_MAX_EXAMPLES = 10
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=DEV_MAX_EXAMPLES)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under the `dev` profile, cap the budgets that tests set themselves at the profile's.

    A test's own ``@settings(max_examples=3000)`` is its full budget, run in CI; Hypothesis lets it
    override any profile, so without this cap a developer's run would pay it too.
    """
    if settings.get_current_profile_name() != "dev":
        return
    cap = settings.default.max_examples
    for item in items:
        cls = getattr(item, "cls", None)  # doctest items have none
        if cls is not None and isinstance(getattr(cls, "settings", None), settings):
            # A RuleBasedStateMachine's TestCase: its settings are a public class attribute.
            if cls.settings.max_examples > cap:
                cls.settings = settings(cls.settings, max_examples=cap)
            continue
        test = getattr(item, "obj", None)
        test = getattr(test, "__func__", test)  # a test method: its function holds the settings
        # Where @given keeps the test's settings; no public way to change them after decoration.
        own = getattr(test, "_hypothesis_internal_use_settings", None)
        if isinstance(own, settings) and own.max_examples > cap:
            test._hypothesis_internal_use_settings = settings(own, max_examples=cap)


#: The example manifest of the original system the SDK grows out of: no id,
#: a display name, the original permissions and settings.
ORIGINAL_MANIFEST: dict[str, Any] = {
    "name": "Plugin Name",
    "version": "1.0.0",
    "description": "Plugin description",
    "author": "Author Name",
    "email": "author@example.com",
    "entry_point": "main.py",
    "plugin_class": "PluginClass",
    "permissions": ["read_leads", "send_notifications"],
    "settings": [
        {"name": "api_key", "type": "string", "required": True, "description": "API key"},
        {"name": "enabled", "type": "boolean", "default": True},
    ],
}

#: The smallest valid plugin manifest whose entry module defines MyPlugin.
MINIMAL_PLUGIN: dict[str, Any] = {
    "id": "my-plugin",
    "name": "My Plugin",
    "version": "1.0.0",
    "entry_point": "main.py",
    "plugin_class": "MyPlugin",
}

PluginWriter = Callable[..., Path]


@pytest.fixture(autouse=True)
def _own_data_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test writes a default registry into the real home (HostConfig's per-user data
    folder): each gets an empty one of its own, and no registry variables."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("data-home")))
    monkeypatch.delenv("SERVICES_AI_PLUGINS_DB", raising=False)
    monkeypatch.delenv("SERVICES_AI_PLUGINS_DIR", raising=False)


@pytest.fixture
def example_plugin() -> Path:
    """The bundled example plugin folder (read-only: copy it before changing it)."""
    return EXAMPLE_PLUGIN


@pytest.fixture
def write_plugin(tmp_path: Path) -> PluginWriter:
    """Write a plugin folder: a manifest (dict or raw text) and extra files."""

    def write(
        manifest: Mapping[str, Any] | str,
        files: Mapping[str, str | bytes] | None = None,
        *,
        name: str = "plugin",
    ) -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True)
        text = manifest if isinstance(manifest, str) else json.dumps(manifest, indent=2)
        (folder / "manifest.json").write_text(text, encoding="utf-8")
        for relative, content in (files or {}).items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        return folder

    return write


def plugin_folder(
    root: Path,
    plugin_id: str,
    source: str,
    *,
    permissions: Sequence[str] = ("read_leads",),
    settings: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write ``root/src/<plugin_id>/``: ``main.py`` and a manifest naming its class ``Plugin``."""
    folder = root / "src" / plugin_id
    folder.mkdir(parents=True)
    manifest = {
        "id": plugin_id,
        "name": plugin_id.title(),
        "version": "1.0.0",
        "entry_point": "main.py",
        "plugin_class": "Plugin",
        "permissions": list(permissions),
        "settings": [dict(setting) for setting in settings],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(source)
    return folder


class Installer:
    """Writes plugin folders (``header`` + an indented ``body``), packs and installs them.

    Approves each (its manifest's permissions granted) and enables it for ``tenants``.
    """

    def __init__(self, root: Path, header: str) -> None:
        self.root = root
        self.header = header

    def __call__(
        self,
        host: Any,
        plugin_id: str,
        body: str,
        *,
        permissions: Sequence[str] = ("read_leads",),
        tenants: Sequence[str] = ("acme",),
        settings: Sequence[dict[str, Any]] = (),
        approve: bool = True,
        manifest: Mapping[str, Any] | None = None,
    ) -> None:
        from services_ai_plugins import pack_plugin

        source = self.header + textwrap.indent(textwrap.dedent(body), "    ")
        folder = plugin_folder(
            self.root, plugin_id, source, permissions=permissions, settings=settings
        )
        if manifest:
            document = json.loads((folder / "manifest.json").read_text())
            (folder / "manifest.json").write_text(json.dumps({**document, **manifest}))
        archive = pack_plugin(folder, self.root / f"{plugin_id}.zip").path
        host.install(archive, actor="ops")
        if approve:
            host.registry.approve(plugin_id, actor="admin")
            for tenant in tenants:
                host.registry.enable(plugin_id, tenant, actor="admin")


#: ``Hosts(breaker=...)``: the host's default breaker.
DEFAULT_BREAKER: Any = object()


class Hosts:
    """Makes the tests' ``PluginHost`` objects and closes every one at the end of the test.

    Memory storage unless given, no entry points, plugins under ``root/plugins``,
    and a breaker that never trips (the tests look at each failure; pass
    ``breaker=`` to test suspensions, ``DEFAULT_BREAKER`` for the host's own).
    """

    def __init__(self, root: Path, services: Any) -> None:
        self.root = root
        self.services = services
        self.made: list[Any] = []

    def __call__(
        self,
        *,
        storage: Any = None,
        breaker: Any = None,
        plugins_dir: Path | None = None,
        **options: Any,
    ) -> Any:
        from services_ai_plugins import BreakerPolicy, MemoryStorage, PluginHost

        if breaker is None:
            breaker = BreakerPolicy(consecutive_failures=0, failure_rate=0)
        host = PluginHost(
            self.services,
            storage=storage if storage is not None else MemoryStorage(),
            plugins_dir=plugins_dir or self.root / "plugins",
            entry_points=False,
            **({} if breaker is DEFAULT_BREAKER else {"breaker": breaker}),
            **options,
        )
        self.made.append(host)
        return host

    def close(self) -> None:
        for host in self.made:
            host.close()


@pytest.fixture
def services() -> Any:
    """The fake host services of the app the plugins run in."""
    from services_ai_plugins_testing.fakes import FakeHostServices

    return FakeHostServices()


@pytest.fixture
def hosts(tmp_path: Path, services: Any) -> Iterator[Hosts]:
    """A maker of hosts over ``services`` (see :class:`Hosts`), closed after the test."""
    made = Hosts(tmp_path, services)
    yield made
    made.close()


class CliRunner:
    """Runs the command line in-process against one database and plugins folder under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = root / "registry.db"
        self.plugins = root / "plugins"

    def __call__(self, *args: str | Path) -> tuple[int, str, str]:
        """Run one command with ``--db``, ``--plugins-dir``, ``--actor``: (code, stdout, stderr)."""
        from services_ai_plugins._cli._main import main

        out, err = io.StringIO(), io.StringIO()
        options = ["--db", str(self.db), "--plugins-dir", str(self.plugins), "--actor", "ops@test"]
        # Last: a command of two words (``settings get``) takes them after both.
        code = main([*map(str, args), *options], stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server for the tests: ``$SERVICES_AI_PLUGINS_PG_URL``, else a throwaway one.

    Outside CI the tests that need it skip, saying why, when no server can be
    had (psycopg missing, PostgreSQL not installed); in CI (``CI=true``) that
    is a failure.
    """
    import pg_cluster

    given = os.environ.get(pg_cluster.URL_ENV)
    if given:
        yield given
        return
    import tempfile

    # Not under pytest's temporary folder: its parents are closed to the postgres user.
    folder = tempfile.mkdtemp(prefix="services-ai-plugins-pg-")
    try:
        import psycopg  # noqa: F401

        url = pg_cluster.start(folder)
    except (ImportError, pg_cluster.ClusterError) as error:
        pg_cluster.stop(folder)
        reason = f"no PostgreSQL server for the tests: {error} (set ${pg_cluster.URL_ENV})"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield url
    finally:
        pg_cluster.stop(folder)


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """Nested in-process test sessions run without pytest-django.

    The Django tests (tests/django_adapter) set Django up once per test process; a nested
    session in that process would set up Django's test environment a second time.
    """
    inline_run = pytester.inline_run

    def without_django(*args: Any, **kwargs: Any) -> Any:
        return inline_run("-p", "no:django", *args, **kwargs)

    monkeypatch.setattr(pytester, "inline_run", without_django)
    return pytester
