"""The storage contract suite, run against every bundled backend, and the suite's own behaviour."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from services_ai_plugins import PluginStatus
from services_ai_plugins._storage._memory import MemoryStorage
from services_ai_plugins._storage._postgres._storage import PostgresStorage
from services_ai_plugins._storage._sqlite import SQLiteStorage
from services_ai_plugins.storage import Storage
from services_ai_plugins_testing.storage_contract import (
    BASE_TIME,
    StorageContract,
    make_audit,
    make_failure,
    make_kept,
    make_metrics,
    make_plugin,
    make_staged,
    make_tenant,
    make_version,
)

pytest_plugins = ["pytester"]

BACKENDS = ["memory", "sqlite", "postgres"]


class TestStorageContract(StorageContract):
    """Every backend the SDK ships passes the contract it publishes."""

    @pytest.fixture(params=BACKENDS)
    def storage(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
        if request.param == "postgres":
            yield from _postgres_storage(request.getfixturevalue("postgres_url"))
            return
        store: Storage
        if request.param == "memory":
            store = MemoryStorage()
        else:
            store = SQLiteStorage(tmp_path / "plugins.db")
        yield store
        store.close()


def _postgres_storage(url: str) -> Iterator[Storage]:
    """A PostgresStorage in a schema of its own, dropped afterwards: tests stay independent."""
    from psycopg import connect, sql

    schema = f"contract_{uuid.uuid4().hex[:16]}"
    try:
        store = PostgresStorage(url, schema=schema)
        try:
            yield store
        finally:
            store.close()
    finally:
        with connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_helpers_build_aware_utc_records() -> None:
    """Every datetime the record helpers put in by default is timezone-aware UTC."""
    moments = [
        make_plugin().installed_at,
        make_tenant().changed_at,
        make_audit().at,
        make_version().installed_at,
        make_failure().at,
        make_metrics().last_call,
        make_staged().installed_at,
        make_kept().kept_at,
    ]
    assert all(m == BASE_TIME and m.utcoffset() == timedelta(0) for m in moments)


def test_helpers_take_every_field() -> None:
    """The record helpers accept every field of their record as a keyword."""
    plugin = make_plugin(
        "crm-sync",
        name="CRM",
        status=PluginStatus.APPROVED,
        granted_permissions=["read_leads"],
        revision=3,
    )
    assert (plugin.id, plugin.name, plugin.status, plugin.revision) == (
        "crm-sync",
        "CRM",
        PluginStatus.APPROVED,
        3,
    )
    assert plugin.granted_permissions == ("read_leads",)
    assert plugin.manifest["id"] == "crm-sync"
    assert plugin.code_hash != make_plugin("crm-sync", version="2.0.0").code_hash
    tenant = make_tenant("crm-sync", "globex", enabled=True, optional_grants=["x"], revision=2)
    assert (tenant.tenant, tenant.enabled, tenant.optional_grants) == ("globex", True, ("x",))
    assert make_tenant().settings == {}
    assert make_audit(tenant="acme", after={"a": 1}).id is None
    staged = make_staged("3.0.0", plugin_id="crm-sync", artifact="ab" * 32, auto_approved=True)
    assert (staged.version, staged.artifact, staged.auto_approved) == ("3.0.0", "ab" * 32, True)
    assert staged.manifest["id"] == "crm-sync"
    assert staged.code_hash == make_plugin("crm-sync", version="3.0.0").code_hash
    kept = make_kept(
        "crm-sync", "0.9", tenants={"acme": {"settings": {}}}, granted_permissions=["x"]
    )
    assert (kept.version, kept.granted_permissions, dict(kept.tenants)) == (
        "0.9",
        ("x",),
        {"acme": {"settings": {}}},
    )
    assert make_plugin(artifact="cd" * 32, staged=staged).staged == staged


def test_base_class_is_not_collected_and_subclasses_are() -> None:
    """StorageContract is not a test class itself; its subclasses are, unless they opt out."""

    class TestSubclass(StorageContract):
        pass

    class Abstract(StorageContract):
        __test__ = False

    class TestConcrete(Abstract):
        pass

    assert StorageContract.__test__ is False
    assert TestSubclass.__test__ is True
    assert Abstract.__test__ is False
    assert TestConcrete.__test__ is True


@pytest.fixture
def contract_tests() -> int:
    """How many tests the contract defines."""
    return sum(name.startswith("test_") for name in dir(StorageContract))


def test_adapter_authors_run_the_whole_suite(
    pytester: pytest.Pytester, contract_tests: int
) -> None:
    """A subclass with a storage fixture collects and passes every contract test."""
    pytester.makepyfile(
        textwrap.dedent(
            """
            from collections.abc import Iterator

            import pytest
            from services_ai_plugins import MemoryStorage
            from services_ai_plugins.storage import Storage
            from services_ai_plugins_testing.storage_contract import StorageContract
            from services_ai_plugins_testing.storage_contract import StorageContract as TestAlias


            class TestMine(StorageContract):
                @pytest.fixture
                def storage(self) -> Iterator[Storage]:
                    store = MemoryStorage()
                    yield store
                    store.close()
            """
        )
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=contract_tests)


def test_missing_storage_fixture_explains_itself(pytester: pytest.Pytester) -> None:
    """A subclass that forgets the storage fixture gets an error that says how to write it."""
    pytester.makepyfile(
        textwrap.dedent(
            """
            from services_ai_plugins_testing.storage_contract import StorageContract


            class TestForgetful(StorageContract):
                pass
            """
        )
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-k", "test_is_a_storage")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*TestForgetful runs the storage contract but does not define the `storage` fixture*"]
    )
