"""kill -9 at every step of an install, an upgrade's switch and a rollback leaves the previous
state intact, on SQLite and on PostgreSQL.

Each test prepares a registry and a plugins folder here, then runs ONE operation in a
subprocess (tests/upgrades/crash_step.py) that SIGKILLs itself at a named point.
Then it checks the registry (the plugin's records are exactly those before the
operation, or for a point after the commit those after it), the files (every
version folder where code is looked for holds its whole code: a half-written one
may only be left under ``.staging``), that a NEW host on the same registry and
folder serves the expected version, and that a retry of the operation succeeds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from hashlib import sha256
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
from upgrade_kit import version_archive

from conftest import Hosts
from services_ai_plugins import PluginHost, SandboxPolicy, SQLiteStorage
from services_ai_plugins._registry import Registry
from services_ai_plugins._sources._archive import extract_plugin
from services_ai_plugins._sources._loader import check_code
from services_ai_plugins._storage._protocol import AuditQuery
from services_ai_plugins._versions import UpgradePolicy
from services_ai_plugins.events import Context

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")

SCRIPT = Path(__file__).with_name("crash_step.py")
SRC = Path(__file__).resolve().parents[2] / "src"
PLUGIN = "crm-sync"
TENANTS = ("acme", "globex")

#: A migration that appends to each tenant's label; the process dies in its Nth call when
#: $CRASH_MIGRATION says so (only the killed subprocess has it set).
MIGRATION = """
CALLS = []

@hookimpl
def plugin_upgraded(self, plugin_id, from_version, to_version, context, api, settings):
    self.CALLS.append(context.tenant)
    api.store_set("migrating", context.tenant)
    if os.environ.get("CRASH_MIGRATION") == str(len(self.CALLS)):
        os.kill(os.getpid(), 9)
    return {"label": settings["label"] + " migrated"}
"""


class Backend:
    """Where the registry lives: ``spec`` for the script, ``open()`` for this process."""

    def __init__(self, spec: str, opener: Callable[[], Any]) -> None:
        self.spec = spec
        self._opener = opener
        self.opened: list[Any] = []

    def open(self) -> Any:
        storage = self._opener()
        self.opened.append(storage)
        return storage


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        db = tmp_path / "registry.db"
        made = Backend(f"sqlite:{db}", lambda: SQLiteStorage(db))
        yield made
        for storage in made.opened:
            storage.close()
        return
    url = cast("str", request.getfixturevalue("postgres_url"))
    from services_ai_plugins.storage import PostgresStorage

    schema = f"test_{uuid.uuid4().hex[:16]}"
    made = Backend(f"postgres:{schema}:{url}", lambda: PostgresStorage(url, schema=schema))
    try:
        yield made
    finally:
        for storage in made.opened:
            storage.close()
        import psycopg
        from psycopg import sql

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


class World:
    """One registry and plugins folder, the archives of v1 and v2, and what to check."""

    def __init__(self, root: Path, backend: Backend, hosts: Hosts) -> None:
        self.root = root
        self.backend = backend
        self.hosts = hosts
        self.storage = backend.open()
        self.plugins = root / "plugins"
        self.plugins.mkdir()
        self.v1 = version_archive(root, "1.0.0")
        self.v2 = version_archive(root, "2.0.0", MIGRATION)
        #: Each version's code hash, from a reference extraction elsewhere.
        self.code = {
            version: extract_plugin(archive, self._ref(version)).code_hash
            for version, archive in (("1.0.0", self.v1), ("2.0.0", self.v2))
        }

    def _ref(self, version: str) -> Path:
        folder = self.root / "reference" / version
        folder.mkdir(parents=True)
        return folder

    def host(self, plugins: Path | None = None) -> PluginHost:
        return cast(
            "PluginHost",
            self.hosts(
                storage=self.storage,
                plugins_dir=plugins or self.plugins,
                sandbox=SandboxPolicy(trusted=[PLUGIN]),
                upgrades=UpgradePolicy(migration_timeout=30.0),
            ),
        )

    @property
    def registry(self) -> Registry:
        return Registry(self.storage)

    def state(self) -> tuple[Any, ...]:
        """Everything the registry holds about the plugin (archives aside: unused ones may stay)."""
        s = self.storage
        return (
            s.get_plugin(PLUGIN),
            s.list_tenants(PLUGIN),
            s.versions(PLUGIN),
            s.kept_versions(PLUGIN),
            s.audit(AuditQuery(plugin_id=PLUGIN, limit=1000)),
        )

    def running_v1(self) -> None:
        """v1 installed, approved and enabled for two tenants with a label each."""
        host = self.host()
        host.install(self.v1, actor="ops")
        registry = self.registry
        registry.approve(PLUGIN, actor="admin")
        for tenant in TENANTS:
            registry.enable(PLUGIN, tenant, actor="admin")
            registry.set_settings(PLUGIN, tenant, {"label": tenant.title()}, actor="admin")

    def approved_v2(self) -> None:
        """v1 runs; v2 staged and approved, not yet switched to (no host refreshed)."""
        self.running_v1()
        self.host().install(self.v2, actor="ops", reinstall=True)
        self.registry.approve(PLUGIN, actor="admin")

    def running_v2(self) -> None:
        self.approved_v2()
        assert self.serves() == "2.0.0"

    def kill(self, operation: str, point: str, *args: Path, **env: str) -> None:
        """Run the operation in a subprocess; it must die of SIGKILL."""
        result = subprocess.run(
            [sys.executable, str(SCRIPT), self.backend.spec, str(self.plugins), operation, point]
            + [str(arg) for arg in args],
            env={**os.environ, "PYTHONPATH": str(SRC), **env},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == -signal.SIGKILL, (
            result.returncode,
            result.stdout,
            result.stderr,
        )

    def serves(self, plugins: Path | None = None) -> str:
        """The version a new host answers with for each tenant (the same for all of them)."""
        host = self.host(plugins)
        titles = {
            tenant: [w.title for w in host.hook.dashboard_widget(context=Context(tenant=tenant))]
            for tenant in TENANTS
        }
        versions = {title.split()[0][1:] for found in titles.values() for title in found}
        assert all(len(found) == 1 for found in titles.values()), titles
        assert len(versions) == 1, titles
        return str(versions.pop())

    def claimed(self, before: tuple[Any, ...]) -> None:
        """The registry holds exactly ``before`` and the switch's claim (Registry.claim_upgrade,
        its own committed step): the staged version names its host, one ``upgrade started``
        event; the version, tenants, settings, history and kept versions are untouched."""
        record, tenants, versions, kept, audit = self.state()
        old = before[0]
        assert record.staged is not None
        assert record.staged.switching_by is not None
        claim = attrs.evolve(
            old.staged,
            switching_by=record.staged.switching_by,
            switching_until=record.staged.switching_until,
        )
        assert record == attrs.evolve(old, staged=claim, revision=old.revision + 1)
        assert (tenants, versions, kept) == before[1:4]
        assert audit[1:] == before[4]
        assert audit[0].action == "upgrade started"

    def labels(self) -> dict[str, object]:
        return {t: self.registry.get_settings(PLUGIN, t)["label"] for t in TENANTS}

    def check_files(self, plugins: Path | None = None) -> None:
        """Every version folder where code is looked for holds that version's whole code, and
        the versions the registry names are there (a half-written copy may be under .staging)."""
        folder = (plugins or self.plugins) / PLUGIN
        for version in folder.iterdir() if folder.exists() else ():
            check_code(PLUGIN, version, self.code[version.name])
        record = self.storage.get_plugin(PLUGIN)
        if record is None or plugins is not None:
            return
        check_code(PLUGIN, Path(cast("str", record.package_path)), record.code_hash)
        if record.staged is not None:
            staged = record.staged
            check_code(PLUGIN, Path(cast("str", staged.package_path)), staged.code_hash)


@pytest.fixture
def world(tmp_path: Path, backend: Backend, hosts: Hosts) -> World:
    return World(tmp_path, backend, hosts)


BEFORE_COMMIT = ["read", "extracting", "placed", "stored", "commit"]


@pytest.mark.parametrize("point", [*BEFORE_COMMIT, "committed"])
def test_a_killed_first_install_leaves_nothing_or_the_pending_plugin(
    world: World, point: str
) -> None:
    world.kill("install-fresh", point, world.v1)
    record = world.storage.get_plugin(PLUGIN)
    folder = world.plugins / PLUGIN / "1.0.0"
    if point in BEFORE_COMMIT:
        assert world.state() == (None, [], [], [], [])
        stored = [info.sha256 for info in world.storage.artifacts()]
        if point in ("stored", "commit"):
            # At most an unused archive stays, which the collection removes.
            assert stored == [sha256(world.v1.read_bytes()).hexdigest()]
            assert world.registry.collect_artifacts(older_than=timedelta(0)) == stored
        else:
            assert stored == []
        if point in ("read", "extracting"):
            assert not folder.exists()
        if point == "extracting":
            # The half-written copy is a leftover under .staging, where no code is looked for.
            assert [p.name for p in (world.plugins / ".staging").iterdir()] != []
    else:
        assert record is not None
        assert str(record.version) == "1.0.0"
        assert [e.action for e in world.storage.audit(AuditQuery(plugin_id=PLUGIN))] == ["install"]
    world.check_files()
    if point in BEFORE_COMMIT:
        # The retry: the same upload again, as it was (a folder left in place is replaced).
        world.host().install(world.v1, actor="ops")
    world.registry.approve(PLUGIN, actor="admin")
    world.registry.enable(PLUGIN, "acme", actor="admin")
    world.registry.enable(PLUGIN, "globex", actor="admin")
    assert world.serves() == "1.0.0"
    world.check_files()


@pytest.mark.parametrize("point", [*BEFORE_COMMIT, "committed"])
def test_a_killed_upgrade_install_leaves_v1_serving(world: World, point: str) -> None:
    world.running_v1()
    before = world.state()
    world.kill("install", point, world.v2)
    record = world.storage.get_plugin(PLUGIN)
    if point in BEFORE_COMMIT:
        assert world.state() == before
    else:
        assert record is not None
        assert record.staged is not None
        assert str(record.staged.version) == "2.0.0"
        assert str(record.version) == "1.0.0"
        assert world.storage.versions(PLUGIN)[-1:] != before[2][-1:]  # the staged version's row
        assert world.storage.audit(AuditQuery(plugin_id=PLUGIN, limit=1))[0].action == "stage"
    world.check_files()
    assert world.serves() == "1.0.0"
    if point in BEFORE_COMMIT:
        world.host().install(world.v2, actor="ops", reinstall=True)
    world.registry.approve(PLUGIN, actor="admin")
    assert world.serves() == "2.0.0"
    assert world.labels() == {"acme": "Acme migrated", "globex": "Globex migrated"}
    world.check_files()


SWITCH_POINTS = {
    "migration": {"CRASH_MIGRATION": "1"},
    "between-tenants": {"CRASH_MIGRATION": "2"},
    "commit": {},
    "committed": {},
}


@pytest.mark.parametrize("point", list(SWITCH_POINTS))
def test_a_killed_switch_is_made_at_the_next_refresh(world: World, point: str) -> None:
    world.approved_v2()
    before = world.state()
    world.kill("switch", point, **SWITCH_POINTS[point])
    record = world.storage.get_plugin(PLUGIN)
    assert record is not None
    if point != "committed":
        world.claimed(before)
        assert world.labels() == {"acme": "Acme", "globex": "Globex"}
    else:
        assert str(record.version) == "2.0.0"
        assert record.staged is None
        assert world.labels() == {"acme": "Acme migrated", "globex": "Globex migrated"}
    world.check_files()
    # A new host makes the switch (again, or for the first time) at its first refresh: the
    # claim of the killed host does not hold (its process is gone).
    assert world.serves() == "2.0.0"
    assert world.labels() == {"acme": "Acme migrated", "globex": "Globex migrated"}
    world.check_files()


def test_a_host_killed_while_its_worker_migrates_switches_at_the_next_refresh(
    world: World,
) -> None:
    """The plugin is sandboxed: the host dies while the worker runs ``plugin_upgraded``."""
    world.approved_v2()
    before = world.state()
    world.kill("switch-sandboxed", "migration")
    world.claimed(before)
    assert world.labels() == {"acme": "Acme", "globex": "Globex"}
    world.check_files()
    assert world.serves() == "2.0.0"
    assert world.labels() == {"acme": "Acme migrated", "globex": "Globex migrated"}


@pytest.mark.parametrize("point", ["commit", "committed"])
def test_a_killed_rollback_leaves_one_version_or_the_other(world: World, point: str) -> None:
    world.running_v2()
    before = world.state()
    world.kill("rollback", point)
    record = world.storage.get_plugin(PLUGIN)
    assert record is not None
    if point == "commit":
        assert world.state() == before
        assert world.serves() == "2.0.0"
        world.registry.rollback(PLUGIN, actor="admin")
    else:
        assert str(record.version) == "1.0.0"
        assert world.storage.audit(AuditQuery(plugin_id=PLUGIN, limit=1))[0].action == "rollback"
    world.check_files()
    assert world.serves() == "1.0.0"
    assert world.labels() == {"acme": "Acme", "globex": "Globex"}


def test_a_host_killed_while_materialising_an_archive_materialises_it_at_its_next_start(
    world: World,
) -> None:
    world.running_v1()
    # A second machine: its own empty plugins folder, and the first machine's folder is not there.
    record = world.storage.get_plugin(PLUGIN)
    assert record is not None
    installed = Path(cast("str", record.package_path))
    installed.rename(world.root / "elsewhere")
    second = world.root / "second"
    second.mkdir()
    before = world.state()
    world.plugins = second
    world.kill("materialise", "extracting")
    assert world.state() == before
    world.check_files(second)
    assert not (second / PLUGIN / "1.0.0").exists()  # only a .staging leftover, if anything
    assert world.serves(second) == "1.0.0"
    world.check_files(second)
