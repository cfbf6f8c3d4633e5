"""DjangoStorage: the storage contract on every database alias, and what only Django shows.

Every test runs once per alias of the test settings: ``default`` (SQLite) and
``postgres`` (the run's PostgreSQL server). Without a ``postgres`` alias the PostgreSQL
tests skip, saying why, except in CI (``CI`` set), where that is a failure; in the run
whose ``default`` is PostgreSQL (``SAP_DJANGO_DB=postgres``) the ``default`` tests cover it.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import queue
import textwrap
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
from django.conf import settings
from django.db import connections, transaction
from django.db.migrations.executor import MigrationExecutor

from services_ai_plugins import (
    BreakerPolicy,
    HostServices,
    PluginHost,
    PluginStatus,
    SandboxPolicy,
    StorageError,
    pack_plugin,
)
from services_ai_plugins.django.models import Generation, RecordJSONEncoder
from services_ai_plugins.django.storage import _CODEC as ROW_CODEC
from services_ai_plugins.django.storage import DjangoStorage
from services_ai_plugins.events import Context
from services_ai_plugins.storage import Change, Storage
from services_ai_plugins.types import ApiLimits
from services_ai_plugins_testing.fakes import FakeHostServices
from services_ai_plugins_testing.storage_contract import (
    StorageContract,
    make_audit,
    make_plugin,
    make_staged,
    make_tenant,
    make_version,
)

#: Long enough for a worker process to start, or another writer to let go, on a busy machine.
WAIT = 120.0


def _alias_params() -> list[Any]:
    """Each alias, marked for a transactional test database of its own (when it exists)."""
    params = []
    for alias in ("default", "postgres"):
        marks = (
            [pytest.mark.django_db(transaction=True, databases=[alias])]
            if alias in settings.DATABASES
            else []
        )
        params.append(pytest.param(alias, marks=marks, id=alias))
    return params


def _is_postgres(alias: str) -> bool:
    return "postgresql" in settings.DATABASES[alias]["ENGINE"]


@pytest.fixture(params=_alias_params())
def alias(request: pytest.FixtureRequest) -> str:
    """A database alias of the test settings, its test database empty (flushed after)."""
    name: str = request.param
    if name not in settings.DATABASES:
        if _is_postgres("default"):
            pytest.skip("this run's default database is PostgreSQL: the 'default' tests cover it")
        reason = (
            f"no {name!r} database in the test settings: set $SERVICES_AI_PLUGINS_PG_URL to "
            "a PostgreSQL server"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    # Never the project's own database: the test database pytest-django set up.
    assert connections[name].settings_dict["NAME"] == settings.DATABASES[name]["TEST"]["NAME"]
    return name


@pytest.fixture
def storage(alias: str) -> Iterator[DjangoStorage]:
    store = DjangoStorage(alias)
    yield store
    store.close()


class TestDjangoStorageContract(StorageContract):
    """DjangoStorage passes the contract every storage passes, on SQLite and on PostgreSQL."""

    @pytest.fixture
    def storage(self, alias: str) -> Iterator[Storage]:
        store = DjangoStorage(alias)
        yield store
        store.close()


# -- one process, several storages and threads -------------------------------------------------


def _install(storage: Storage, plugin_id: str = "example-plugin") -> int:
    plugin = make_plugin(plugin_id)
    return storage.commit(
        Change(
            plugin_id=plugin_id,
            plugin=plugin,
            version=make_version(plugin_id),
            audit=make_audit(plugin_id),
        )
    )


def _in_thread(task: Callable[[], Any]) -> Any:
    """``task()`` in a new thread (a connection of its own); its result, or its exception."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(task())
        except BaseException as exc:  # noqa: BLE001 - raised again in the test's thread
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), "the thread is stuck (a lock never released?)"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def test_another_storage_in_another_thread_sees_the_generation_move(
    storage: DjangoStorage, alias: str
) -> None:
    """A second DjangoStorage, used from another thread (its own connection), reads the
    change counter a commit moved, and the committed records."""
    other = DjangoStorage(alias)
    assert _in_thread(other.generation) == 0
    assert _install(storage) == 1
    assert _in_thread(other.generation) == 1
    assert _in_thread(lambda: other.get_plugin("example-plugin")) == make_plugin()
    assert (
        _in_thread(
            lambda: other.commit(
                Change(
                    plugin_id="example-plugin",
                    plugin_revision=1,
                    tenant=make_tenant(enabled=True),
                    audit=make_audit(action="enable", tenant="acme"),
                )
            )
        )
        == 2
    )
    assert storage.generation() == 2
    assert storage.get_tenant("example-plugin", "acme") == make_tenant(enabled=True)


def test_connections_opened_in_a_thread_are_closed_after_each_call(
    storage: DjangoStorage, alias: str
) -> None:
    """A thread Django does not manage keeps no connection once a call returns; a connection
    the thread opened itself is left to it, open."""

    def ours() -> bool:
        _install(storage)
        storage.list_plugins()
        storage.record_failures([])
        storage.store_write("example-plugin", "acme", "k", [1, 2])
        return connections[alias].connection is None

    assert _in_thread(ours)

    def theirs() -> bool:
        connection = connections[alias]
        connection.ensure_connection()
        try:
            storage.generation()
            storage.store_write("example-plugin", "acme", "k", 3)
            return connection.connection is not None
        finally:
            connection.close()

    assert _in_thread(theirs)
    assert storage.store_read("example-plugin", "acme", "k") == 3


def test_commit_inside_the_callers_transaction_never_joins_it(
    storage: DjangoStorage, alias: str
) -> None:
    """A registry change commits on its own, never in the caller's transaction (a rollback
    must never undo a change the host acts on). On PostgreSQL it commits on a connection of
    its own and survives the caller's rollback; on SQLite, whose one writer may be the
    caller, it raises StorageError saying so and writes nothing."""

    class Undo(Exception):
        pass

    def install_in_a_transaction() -> None:
        with transaction.atomic(using=alias):
            Generation.objects.using(alias).filter(key="none").exists()  # the caller reads
            _install(storage)
            raise Undo

    if connections[alias].features.has_select_for_update:
        with pytest.raises(Undo):
            install_in_a_transaction()
        assert storage.generation() == 1
        assert storage.get_plugin("example-plugin") == make_plugin()
        assert [event.action for event in storage.audit(make_query())] == [make_audit().action]
        return
    with pytest.raises(StorageError, match=r"inside the caller's transaction\.atomic\(\)"):
        install_in_a_transaction()
    assert storage.generation() == 0
    assert storage.list_plugins() == []
    assert storage.audit(make_query()) == []


def test_archive_writes_inside_the_callers_transaction_never_join_it(
    storage: DjangoStorage, alias: str
) -> None:
    """Storing or deleting an archive commits on its own, as a change does: a committed change
    may name the archive, so the caller's rollback must not undo it. On PostgreSQL both
    survive the caller's rollback; on SQLite they raise StorageError and write nothing."""
    data = b"PK archive"
    sha256 = hashlib.sha256(data).hexdigest()

    class Undo(Exception):
        pass

    def in_a_transaction(write: Callable[[], object]) -> None:
        with transaction.atomic(using=alias):
            Generation.objects.using(alias).filter(key="none").exists()  # the caller reads
            write()
            raise Undo

    if connections[alias].features.has_select_for_update:
        with pytest.raises(Undo):
            in_a_transaction(lambda: storage.put_artifact(sha256, data))
        assert storage.get_artifact(sha256) == data
        with pytest.raises(Undo):
            in_a_transaction(lambda: storage.delete_artifact(sha256))
        assert storage.artifacts() == []
        return
    with pytest.raises(StorageError, match=r"inside the caller's transaction\.atomic\(\)"):
        in_a_transaction(lambda: storage.put_artifact(sha256, data))
    assert storage.artifacts() == []
    storage.put_artifact(sha256, data)
    with pytest.raises(StorageError, match=r"inside the caller's transaction\.atomic\(\)"):
        in_a_transaction(lambda: storage.delete_artifact(sha256))
    assert storage.get_artifact(sha256) == data


def test_a_database_at_migration_0001_upgrades_in_place(alias: str) -> None:
    """A database migrated to 0001 holding a plugin migrates to the latest schema in place:
    the plugin reads back with no archive and nothing staged, then takes both."""
    app = "services_ai_plugins"
    connection = connections[alias]
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes(app)
    record = make_plugin(status=PluginStatus.APPROVED, revision=2)
    executor = MigrationExecutor(connection)
    executor.migrate([(app, "0001_initial")])
    try:
        executor.loader.build_graph()
        old = executor.loader.project_state([(app, "0001_initial")]).apps.get_model(app, "Plugin")
        old.objects.using(alias).create(
            **{
                name: value
                for name, value in ROW_CODEC.plugin_params(record).items()
                if name not in ("artifact", "staged")
            }
        )
        assert "services_ai_plugins_artifact" not in connection.introspection.table_names()
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(latest)
    storage = DjangoStorage(alias)
    found = storage.get_plugin(record.id)
    assert found == record
    assert found is not None
    assert (found.artifact, found.staged) == (None, None)
    data = b"PK archive of 2.0.0"
    sha256 = hashlib.sha256(data).hexdigest()
    storage.put_artifact(sha256, data)
    upgraded = attrs.evolve(
        record, artifact=sha256, staged=make_staged(artifact=sha256), revision=3
    )
    storage.commit(Change(plugin_id=record.id, plugin=upgraded, audit=make_audit(action="stage")))
    assert storage.get_plugin(record.id) == upgraded
    assert storage.get_artifact(sha256) == data


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.django_db(databases=[name]), id=name)
        for name in ("default", "postgres")
        if name in settings.DATABASES
    ],
)
def test_commits_work_in_a_django_test_case(name: str) -> None:
    """Inside the transaction of a Django test case (pytest-django's ``db``), commits work,
    as Django's own durable blocks do there."""
    storage = DjangoStorage(name)
    assert connections[name].in_atomic_block
    assert _install(storage) == 1
    assert storage.get_plugin("example-plugin") == make_plugin()


def make_query() -> Any:
    from services_ai_plugins.storage import AuditQuery

    return AuditQuery()


def test_store_writes_join_the_callers_transaction(storage: DjangoStorage, alias: str) -> None:
    """A plugin's store write inside the caller's transaction is undone with it, value and
    charge together."""
    _install(storage)

    class Undo(Exception):
        pass

    def write_then_roll_back() -> None:
        with transaction.atomic(using=alias):
            storage.store_write("example-plugin", "acme", "k", "v")
            assert storage.store_read("example-plugin", "acme", "k") == "v"
            raise Undo

    with pytest.raises(Undo):
        write_then_roll_back()
    assert storage.store_read("example-plugin", "acme", "k") is None
    assert storage.store_usage("example-plugin", "acme").keys == 0


def test_refused_writes_are_storage_errors_naming_what_failed(
    storage: DjangoStorage, alias: str
) -> None:
    """A change the database cannot keep is a StorageError naming what was written, and
    writes nothing; an unknown alias and a closed storage are StorageErrors too."""
    _install(storage)
    enable = Change(
        plugin_id="example-plugin",
        plugin_revision=1,
        tenant=make_tenant(settings={"ratio": float("nan")}),
        audit=make_audit(action="configure", tenant="acme"),
    )
    with pytest.raises(StorageError, match=r"settings of plugin 'example-plugin'.*acme"):
        storage.commit(enable)
    if _is_postgres(alias):  # SQLite keeps text of any length
        from django.db import Error as DjangoError

        enable = Change(
            plugin_id="example-plugin",
            plugin_revision=1,
            tenant=make_tenant(changed_by="x" * 201),
            audit=make_audit(action="enable", tenant="acme"),
        )
        with pytest.raises(StorageError, match="change of plugin 'example-plugin'") as caught:
            storage.commit(enable)
        assert isinstance(caught.value.__cause__, DjangoError)
    assert storage.get_tenant("example-plugin", "acme") is None
    assert storage.generation() == 1
    assert len(storage.audit(make_query())) == 1

    with pytest.raises(StorageError, match="nowhere"):
        DjangoStorage("nowhere")
    storage.close()
    with pytest.raises(StorageError, match="closed"):
        storage.generation()


def test_driver_errors_are_wrapped_with_their_cause(storage: DjangoStorage, alias: str) -> None:
    """An error of the database itself (here: a missing table) is a StorageError naming the
    call and hinting at the migrations, its cause Django's own error."""
    from django.db import Error as DjangoError

    with connections[alias].cursor() as cursor:
        cursor.execute(f"DROP TABLE {Generation._meta.db_table}")
    try:
        with pytest.raises(StorageError, match=r"(?s)change counter.*migrate") as caught:
            storage.generation()
        assert isinstance(caught.value.__cause__, DjangoError)
    finally:
        with connections[alias].schema_editor() as editor:
            editor.create_model(Generation)


def test_json_numbers_keep_their_type(storage: DjangoStorage) -> None:
    """Settings and audit snapshots read back with floats as floats (even 1e20) and ints as
    ints (even beyond 64 bits), as PostgresStorage keeps them."""
    values: dict[str, Any] = {
        "big_float": 1e20,
        "huge_float": -1.5e300,
        "tiny_float": 5e-324,
        "whole_float": 1.0,
        "big_int": 2**70,
        "mixed": [1, 1.0, 1e16, True, None, "ü 🚀"],
    }
    _install(storage)
    storage.commit(
        Change(
            plugin_id="example-plugin",
            plugin_revision=1,
            tenant=make_tenant(settings=values),
            audit=make_audit(action="configure", tenant="acme", after=values),
        )
    )
    stored = storage.get_tenant("example-plugin", "acme")
    assert stored is not None
    assert _types(stored.settings) == _types(values)
    assert stored.settings == values
    after = storage.audit(make_query())[0].after
    assert after == values
    assert _types(after) == _types(values)
    assert RecordJSONEncoder().encode({"f": 1e20}) == '{"f":100000000000000000000.0}'


def _types(value: object) -> object:
    if isinstance(value, dict):
        return {key: _types(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_types(item) for item in value]
    return type(value)


def test_times_round_trip_without_use_tz(storage: DjangoStorage, settings: Any) -> None:
    """With USE_TZ = False the instants are kept as naive UTC and read back aware, the same."""
    settings.USE_TZ = False
    moment = datetime(2024, 5, 2, 9, 30, 0, 1, tzinfo=timezone.utc)
    plugin = make_plugin(installed_at=moment, approved_at=moment, status=PluginStatus.APPROVED)
    storage.commit(Change(plugin_id=plugin.id, plugin=plugin, audit=make_audit(at=moment)))
    assert storage.get_plugin(plugin.id) == plugin
    assert storage.audit(make_query())[0].at == moment


# -- two processes -------------------------------------------------------------------------------


def _child_databases(alias: str) -> dict[str, dict[str, Any]]:
    """The test database of ``alias`` as a child process configures it (Django needs a
    ``default``: the same database)."""
    given = connections[alias].settings_dict
    database = {
        key: given[key]
        for key in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT", "OPTIONS")
        if key in given
    }
    return {"default": database, alias: database}


def test_two_processes_racing_one_commit_never_both_win(storage: DjangoStorage, alias: str) -> None:
    """Two processes commit the same revision of one plugin at once, five rounds: each round
    exactly one wins and the other gets ConflictError(expected=r-1, actual=r); the counter
    moves once a round, as this process sees it."""
    from django_adapter import storage_racer

    rounds = 5
    start = _install(storage)
    plans = {
        name: [
            Change(
                plugin_id="example-plugin",
                plugin=make_plugin(installed_by=name, version=f"{revision}.0", revision=revision),
                version=make_version(version=f"{revision}.0"),
                audit=make_audit(actor=name, action="upgrade"),
            )
            for revision in range(2, rounds + 2)
        ]
        for name in ("left", "right")
    }
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    racers = [
        context.Process(
            target=storage_racer.race,
            kwargs={
                "databases": _child_databases(alias),
                "alias": alias,
                "changes": plan,
                "barrier": barrier,
                "results": results,
                "name": name,
            },
            daemon=True,
        )
        for name, plan in plans.items()
    ]
    for racer in racers:
        racer.start()
    outcomes: list[tuple[str, int, str, Any]] = []
    try:
        for _ in range(2 * rounds):
            outcomes.append(results.get(timeout=WAIT))
    except queue.Empty:
        pytest.fail(f"the racing processes stopped answering; so far: {outcomes}")
    finally:
        for racer in racers:
            racer.join(WAIT)
            if racer.is_alive():
                racer.kill()
    assert [o for o in outcomes if o[2] == "error"] == []
    winners = []
    for number in range(rounds):
        revision = number + 2
        this_round = sorted((o for o in outcomes if o[1] == number), key=lambda o: o[2])
        assert [o[2] for o in this_round] == ["conflict", "won"], this_round
        assert this_round[0][3] == (revision - 1, revision)
        assert this_round[1][3] == start + number + 1
        winners.append(this_round[1][0])
    assert storage.generation() == start + rounds
    last = plans[winners[-1]][-1].plugin
    assert storage.get_plugin("example-plugin") == last
    assert len(storage.versions("example-plugin")) == 1 + rounds
    assert [e.actor for e in storage.audit(make_query())][:rounds] == winners[::-1]


# -- a host over DjangoStorage -------------------------------------------------------------------


class SdkStoreServices(FakeHostServices):
    """The fake app, its plugins' key-value stores left to the SDK (kept in the storage)."""

    store_get = HostServices.store_get
    store_set = HostServices.store_set
    store_delete = HostServices.store_delete


HEADER = (
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.errors import QuotaExceeded\n\n\n"
    "class Plugin:\n"
)

#: Counts its calls in its store, then tries to fill the store past its limit of keys with 50
#: new ones (the first call keeps 8 beside "seen" and "refused"; later calls none).
FILLER = """
@hookimpl
def lead_created(self, lead, api):
    api.store_set("seen", (api.store_get("seen") or 0) + 1)
    api.store_set("refused", 0)
    refused = 0
    for number in range(50):
        try:
            api.store_set(f"junk-{lead.id}-{number}", "x" * 100)
        except QuotaExceeded:
            refused += 1
    api.store_set("refused", refused)
"""

#: Raises what no database keeps as text: a huge message with NUL characters and lone
#: surrogates, from an exception class with a name far longer than the column.
HOSTILE = """
@hookimpl
def lead_created(self, lead):
    kind = type("E" * 5000, (Exception,), {})
    raise kind("\\x00 boom \\ud800 " * 20000)
"""


def _install_uploaded(
    host: PluginHost, root: Path, plugin_id: str, body: str, tenants: tuple[str, ...]
) -> None:
    """Pack ``HEADER`` + ``body`` as an uploaded archive, install, approve and enable it."""
    folder = root / "src" / plugin_id
    folder.mkdir(parents=True)
    manifest = {
        "id": plugin_id,
        "name": plugin_id.title(),
        "version": "1.0.0",
        "entry_point": "main.py",
        "plugin_class": "Plugin",
        "permissions": ["read_leads"],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(HEADER + textwrap.indent(textwrap.dedent(body), "    "))
    host.install(pack_plugin(folder, root / f"{plugin_id}.zip").path, actor="ops")
    host.registry.approve(plugin_id, actor="admin")
    for tenant in tenants:
        host.registry.enable(plugin_id, tenant, actor="admin")


def _other_connections(alias: str) -> int:
    """How many other sessions have this test's PostgreSQL database open."""
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        row = cursor.fetchone()
    return int(row[0])


def test_a_host_keeps_its_registry_failures_metrics_and_stores_in_the_database(
    alias: str, tmp_path: Path
) -> None:
    """A PluginHost over DjangoStorage installs uploaded plugins, approves and enables them
    and calls them in their sandbox, from threads of its own: the registry, the audit trail,
    the plugins' stores (within their limits, however hard a plugin pushes), its failures
    (bounded and storable, whatever a hostile plugin raised) and its metrics are all in
    the database, and no thread leaves a connection open."""
    storage = DjangoStorage(alias)
    services = SdkStoreServices()
    host = PluginHost(
        services,
        storage=storage,
        plugins_dir=tmp_path / "plugins",
        entry_points=False,
        sandbox=SandboxPolicy(timeout=30.0),
        breaker=BreakerPolicy(consecutive_failures=0, failure_rate=0),
        limits=ApiLimits(store_keys=10),
    )
    try:
        _install_uploaded(host, tmp_path, "filler", FILLER, ("acme", "globex"))
        _install_uploaded(host, tmp_path, "hostile", HOSTILE, ("acme",))
        assert storage.enabled_plugins("acme") == ["filler", "hostile"]
        assert storage.enabled_plugins("globex") == ["filler"]

        def fire(tenant: str) -> None:
            lead = services.make_lead(tenant, name="Ada")
            host.hook.lead_created(lead=lead, context=Context(tenant=tenant))

        # From threads of the host's kind (no request), one after the other and at once.
        _in_thread(lambda: fire("acme"))
        both = [threading.Thread(target=fire, args=(t,), daemon=True) for t in ("acme", "acme")]
        for thread in both:
            thread.start()
        for thread in both:
            thread.join(WAIT)
        _in_thread(lambda: fire("globex"))
        _in_thread(host.flush)

        # Two concurrent calls pushed at the one store of acme: its limit held.
        for tenant in ("acme", "globex"):
            usage = storage.store_usage("filler", tenant)
            assert usage.keys == 10, (tenant, usage)
            assert len(_kept_keys(alias, tenant)) == 10
        assert storage.store_read("filler", "globex", "seen") == 1
        assert storage.store_read("filler", "globex", "refused") == 42
        assert storage.store_read("filler", "acme", "refused") == 50

        _check_failures_and_metrics(storage)
        actions = [(e.plugin_id, e.action, e.tenant) for e in storage.audit(make_query())]
        assert ("filler", "enable", "globex") in actions
        assert ("hostile", "approve", None) in actions

        assert storage.resolve_failures("hostile") == 3
        host.registry.uninstall("filler", actor="admin")
        assert storage.store_read("filler", "acme", "seen") is None
        assert storage.store_usage("filler", "acme").keys == 0
    finally:
        host.close()
    assert storage.get_plugin("filler").status is PluginStatus.UNINSTALLED  # type: ignore[union-attr]
    if _is_postgres(alias):
        assert _other_connections(alias) == 0


def _check_failures_and_metrics(storage: DjangoStorage) -> None:
    """The hostile plugin's three failures are kept, bounded and storable; the metrics count
    every call of both plugins."""
    failures = storage.failures("hostile")
    assert len(failures) == 3
    for failure in failures:
        assert failure.tenant == "acme"
        assert failure.hook == "lead_created"
        assert len(failure.exc_type) <= 200
        assert len(failure.message) <= 8 * 1024
        assert "\x00" not in failure.message
        assert "boom" in failure.message
    assert storage.failures("filler") == []
    metrics = {(m.plugin_id, m.hook): m for m in storage.metrics()}
    assert (metrics["filler", "lead_created"].calls, metrics["filler", "lead_created"].errors) == (
        4,
        0,
    )
    assert metrics["hostile", "lead_created"].calls == 3
    assert metrics["hostile", "lead_created"].errors == 3


def _kept_keys(alias: str, tenant: str) -> list[str]:
    from services_ai_plugins.django.models import StoreValue

    return list(
        StoreValue.objects.using(alias)
        .filter(plugin_id="filler", tenant=tenant)
        .values_list("key", flat=True)
    )
