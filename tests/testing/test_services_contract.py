"""The host services contract, run against FakeHostServices, and the contract's own behaviour:
it collects for subclasses, explains missing fixtures, and catches broken adapters readably."""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import pytest

from services_ai_plugins import HostServices
from services_ai_plugins.events import Booking, Invoice, Lead, User
from services_ai_plugins.types import JSONValue
from services_ai_plugins_testing.fakes import FakeHostServices
from services_ai_plugins_testing.services_contract import HostServicesContract, Seed

pytest_plugins = ["pytester"]


class FakeSeed:
    """Makes records through the fake's own factories: what an adapter's seed does over its ORM."""

    def __init__(self, services: FakeHostServices) -> None:
        self.services = services

    def lead(self, tenant: str, **fields: Any) -> Lead:
        return self.services.make_lead(tenant, **fields)

    def booking(self, tenant: str, **fields: Any) -> Booking:
        return self.services.make_booking(tenant, **fields)

    def invoice(self, tenant: str, **fields: Any) -> Invoice:
        return self.services.make_invoice(tenant, **fields)

    def user(self, tenant: str, **fields: Any) -> User:
        return self.services.make_user(tenant, **fields)


class TestFakeHostServices(HostServicesContract):
    """The fake that plugin authors test against passes the contract adapters must pass."""

    @pytest.fixture
    def services(self) -> FakeHostServices:
        return FakeHostServices()

    @pytest.fixture
    def seed(self, services: FakeHostServices) -> Seed:
        return FakeSeed(services)


class TestOtherNames(TestFakeHostServices):
    """The tenants and plugin ids are class attributes that an adapter's test may change."""

    tenant = "tenant-7"
    other_tenant = "tenant-8"
    plugin_id = "crm-sync"
    other_plugin_id = "lead-stats"


# -- broken adapters ---------------------------------------------------------------------------


class TenantBlind(FakeHostServices):
    """get_lead finds a lead by its id alone, whatever the tenant."""

    def get_lead(self, tenant: str, lead_id: str) -> Lead | None:
        for (kind, _, record_id), row in self._rows.items():
            if kind is Lead and record_id == lead_id:
                return Lead(**row)
        return None


class LimitThenFilter(FakeHostServices):
    """list_leads cuts to ``limit`` among every tenant's leads, then keeps the tenant's."""

    def list_leads(self, tenant: str, *, limit: int) -> Sequence[Lead]:
        rows = [row for (kind, _, _), row in self._rows.items() if kind is Lead][-limit:]
        return [Lead(**row) for row in reversed(rows) if row["tenant"] == tenant]


class OldestFirst(FakeHostServices):
    """list_invoices returns the oldest invoices first."""

    def list_invoices(self, tenant: str, *, limit: int) -> Sequence[Invoice]:
        return list(reversed(super().list_invoices(tenant, limit=1000)))[:limit]


class ByCreation(FakeHostServices):
    """list_bookings returns the most recently made bookings first, not the soonest."""

    def list_bookings(self, tenant: str, *, limit: int) -> Sequence[Booking]:
        rows = [row for (k, t, _), row in self._rows.items() if k is Booking and t == tenant]
        return [Booking(**row) for row in rows[::-1][:limit]]


class UpdatesAnyTenant(FakeHostServices):
    """update_lead finds the lead by its id alone and updates it, whatever the tenant."""

    def update_lead(self, tenant: str, lead_id: str, changes: Mapping[str, JSONValue]) -> Lead:
        for owner in {t for (_, t, _) in self._rows}:
            if (Lead, owner, lead_id) in self._rows:
                return super().update_lead(owner, lead_id, changes)
        raise LookupError(lead_id)


class MovesRecords(FakeHostServices):
    """update_booking lets a change of 'tenant' through: the booking moves to another tenant."""

    def update_booking(
        self, tenant: str, booking_id: str, changes: Mapping[str, JSONValue]
    ) -> Booking:
        row = self._rows.pop((Booking, tenant, booking_id))
        moved = Booking(**{**row, **changes})
        self._rows[(Booking, moved.tenant, moved.id)] = attrs.asdict(moved, recurse=False)
        return moved


class TextOnlyUpdates(FakeHostServices):
    """update_lead applies changes of text fields and silently drops the typed ones."""

    def update_lead(self, tenant: str, lead_id: str, changes: Mapping[str, JSONValue]) -> Lead:
        typed = {"value", "created_at", "data"}
        kept = {name: value for name, value in changes.items() if name not in typed}
        return super().update_lead(tenant, lead_id, kept)


class StoreByTenantOnly(FakeHostServices):
    """The store forgets the plugin id: every plugin of a tenant shares one store."""

    def store_get(self, tenant: str, plugin_id: str, key: str) -> JSONValue:
        return super().store_get(tenant, "*", key)

    def store_set(self, tenant: str, plugin_id: str, key: str, value: JSONValue) -> None:
        super().store_set(tenant, "*", key, value)

    def store_delete(self, tenant: str, plugin_id: str, key: str) -> None:
        super().store_delete(tenant, "*", key)


class SharedValues(FakeHostServices):
    """The store keeps and returns the caller's own objects instead of copies."""

    def store_get(self, tenant: str, plugin_id: str, key: str) -> JSONValue:
        return self.store.get((tenant, plugin_id, key))

    def store_set(self, tenant: str, plugin_id: str, key: str, value: JSONValue) -> None:
        self.store[(tenant, plugin_id, key)] = value


class BooleansAsIntegers(FakeHostServices):
    """The store hands booleans back as 1 and 0, as some database columns do."""

    def store_get(self, tenant: str, plugin_id: str, key: str) -> JSONValue:
        value = super().store_get(tenant, plugin_id, key)
        return int(value) if isinstance(value, bool) else value


class RaisesForUnknownIds(FakeHostServices):
    """get_user parses ids as numbers, so a malformed one raises ValueError."""

    def get_user(self, tenant: str, user_id: str) -> User | None:
        int(user_id)
        return super().get_user(tenant, user_id)


def _contract_test(name: str, **params: str) -> Callable[[FakeHostServices], None]:
    """Run one contract test method against ``services``, as pytest would."""

    def run(services: FakeHostServices) -> None:
        test = getattr(HostServicesContract(), name)
        arguments: dict[str, Any] = {"services": services, **params}
        if "seed" in inspect.signature(test).parameters:
            arguments["seed"] = FakeSeed(services)
        test(**arguments)

    return run


BROKEN: list[tuple[type[FakeHostServices], Callable[[FakeHostServices], None], str]] = [
    (
        TenantBlind,
        _contract_test("test_get_of_another_tenants_record_is_none", kind="lead"),
        r"get_lead\('acme', 'lead-1'\) must return None: 'lead-1' is a lead of tenant "
        r"'globex'.*\n  expected None, got Lead\(id='lead-1', tenant='globex'",
    ),
    (
        LimitThenFilter,
        _contract_test("test_list_returns_at_most_limit_records", kind="lead"),
        r"ids of list_leads\('acme', limit=1\): the first 1 of the tenant's 3 leads, newest "
        r"first:\n  expected 1 item\(s\), got 0:\n    expected: \['lead-5'\]\n"
        r"    got:      \[\]",
    ),
    (
        OldestFirst,
        _contract_test("test_list_returns_at_most_limit_records", kind="invoice"),
        r"ids of list_invoices\('acme', limit=1\): the first 1 of the tenant's 3 invoices, "
        r"newest first:\n  \[0\]: expected 'invoice-5', got 'invoice-1' \(str\)",
    ),
    (
        ByCreation,
        _contract_test("test_list_returns_only_the_tenants_records_in_order", kind="booking"),
        r"ids of list_bookings\('acme', limit=10\): the 3 bookings of tenant 'acme', soonest "
        r"first:\n  \[0\]: expected 'booking-3', got 'booking-5'",
    ),
    (
        UpdatesAnyTenant,
        _contract_test("test_update_of_another_tenants_record_raises_lookup_error", kind="lead"),
        r"update_lead\('acme', 'lead-1', \{.*\}\) returned Lead\(.*\); 'lead-1' is a lead of "
        r"tenant 'globex', so it must raise LookupError \(or a subclass\) and change nothing",
    ),
    (
        MovesRecords,
        _contract_test("test_update_refuses_to_change_the_id_or_the_tenant", kind="booking"),
        r"update_booking\('acme', 'booking-1', \{'tenant': 'globex'\}\) returned Booking\(.*"
        r"tenant='globex'.*\); a booking's id and tenant are not for plugins to change, so it "
        r"must raise ValueError",
    ),
    (
        TextOnlyUpdates,
        _contract_test("test_update_reads_typed_values_in_wire_form", kind="lead"),
        r"update_lead\('acme', 'lead-1', \{'value': '5200.00'\}\) must return the lead with the "
        r"changes applied:\n  value: expected Decimal\('5200.00'\), got Decimal\('4800.00'\)",
    ),
    (
        StoreByTenantOnly,
        _contract_test("test_store_is_per_plugin"),
        r"store_get\('acme', 'contract-plugin', 'shared-key'\) after store_set\(\) of 'first' "
        r"for \('acme', 'contract-plugin'\) and of \{'second': True\} for \('acme', "
        r"'other-plugin'\):\n  expected 'first', got \{'second': True\} \(dict\)",
    ),
    (
        SharedValues,
        _contract_test("test_stored_values_are_copies"),
        r"after the caller changed the dict it had given to store_set\(\): the store must keep "
        r"a copy:\n  \['seen'\]: expected 1 item\(s\), got 2",
    ),
    (
        BooleansAsIntegers,
        _contract_test("test_store_keeps_every_json_value_exactly"),
        r"store_get\('acme', 'contract-plugin', 'true'\) after store_set\(\) of True:\n"
        r"  expected True, got 1 \(int\)",
    ),
]


@pytest.mark.parametrize(
    ("broken", "run", "message"), BROKEN, ids=[case[0].__name__ for case in BROKEN]
)
def test_the_contract_catches_a_broken_adapter(
    broken: type[FakeHostServices], run: Callable[[FakeHostServices], None], message: str
) -> None:
    """Each broken adapter fails the contract test for its fault, with a message that says
    what the call returned and what the contract expects."""
    run(FakeHostServices())  # the same test passes against the fake: the fault is the cause
    with pytest.raises(pytest.fail.Exception, match=message):
        run(broken())


def test_an_adapter_that_raises_fails_with_the_expectation_and_its_traceback() -> None:
    """An exception from the adapter fails the test with the call and what it must do, and
    keeps the adapter's exception as the cause."""
    run = _contract_test("test_get_of_an_unknown_id_is_none", kind="user")
    with pytest.raises(AssertionError) as caught:
        run(RaisesForUnknownIds())
    assert str(caught.value) == (
        "get_user('acme', 'no-such-id') raised ValueError: invalid literal for int() with "
        "base 10: 'no-such-id'\n  but it must return None (the adapter's traceback follows)"
    )
    assert isinstance(caught.value.__cause__, ValueError)


def test_a_seed_that_ignores_the_tenant_is_reported() -> None:
    """A seed that makes records for the wrong tenant is named as the fault, not the adapter."""

    class WrongTenantSeed(FakeSeed):
        def lead(self, tenant: str, **fields: Any) -> Lead:
            return self.services.make_lead("acme", **fields)

    services = FakeHostServices()
    test = HostServicesContract().test_get_of_another_tenants_record_is_none
    with pytest.raises(pytest.fail.Exception, match=r"seed\.lead\('globex', .*\) returned a "):
        test(services=services, seed=WrongTenantSeed(services), kind="lead")


def test_a_seed_that_drops_booking_times_is_reported() -> None:
    """A seed must keep a booking's starts_at and ends_at: the expected order depends on them."""

    class DefaultTimesSeed(FakeSeed):
        def booking(self, tenant: str, **fields: Any) -> Booking:
            fields.pop("starts_at")
            fields.pop("ends_at")
            return self.services.make_booking(tenant, **fields)

    services = FakeHostServices()
    test = HostServicesContract().test_list_returns_at_most_limit_records
    with pytest.raises(pytest.fail.Exception, match=r"did not keep starts_at: starts_at: expected"):
        test(services=services, seed=DefaultTimesSeed(services), kind="booking")


def test_base_class_is_not_collected_and_subclasses_are() -> None:
    """HostServicesContract is not a test class itself; its subclasses are, unless they opt out."""

    class TestSubclass(HostServicesContract):
        pass

    class Abstract(HostServicesContract):
        __test__ = False

    class TestConcrete(Abstract):
        pass

    assert HostServicesContract.__test__ is False
    assert TestSubclass.__test__ is True
    assert Abstract.__test__ is False
    assert TestConcrete.__test__ is True


def test_the_fake_is_host_services() -> None:
    """FakeHostServices satisfies the protocol the contract is about."""
    assert isinstance(FakeHostServices(), HostServices)


_SEED = """
from typing import Any

import pytest
from services_ai_plugins.events import Lead
from services_ai_plugins_testing.fakes import FakeHostServices
from services_ai_plugins_testing.services_contract import HostServicesContract
from services_ai_plugins_testing.services_contract import HostServicesContract as TestAlias


class Seed:
    def __init__(self, services):
        self.services = services

    def lead(self, tenant, **fields):
        return self.services.make_lead(tenant, **fields)

    def booking(self, tenant, **fields):
        return self.services.make_booking(tenant, **fields)

    def invoice(self, tenant, **fields):
        return self.services.make_invoice(tenant, **fields)

    def user(self, tenant, **fields):
        return self.services.make_user(tenant, **fields)
"""

_TEST_CLASS = """
class TestMine(HostServicesContract):
    @pytest.fixture
    def services(self):
        return Services()

    @pytest.fixture
    def seed(self, services):
        return Seed(services)
"""


def _adapter_module(services_class: str) -> str:
    """A test module of an adapter author: a seed, the given Services class, the subclass."""
    return _SEED + "\n\n" + textwrap.dedent(services_class).strip() + "\n\n" + _TEST_CLASS


def _contract_size() -> int:
    """How many tests the contract runs: each parametrised one once per parameter."""
    size = 0
    for name in dir(HostServicesContract):
        if name.startswith("test_"):
            marks = getattr(getattr(HostServicesContract, name), "pytestmark", [])
            params = [len(mark.args[1]) for mark in marks if mark.name == "parametrize"]
            size += params[0] if params else 1
    return size


def test_adapter_authors_run_the_whole_suite(pytester: pytest.Pytester) -> None:
    """A subclass with services and seed fixtures collects and passes every contract test."""
    pytester.makepyfile(_adapter_module("class Services(FakeHostServices):\n    pass"))
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    assert result.parseoutcomes() == {"passed": _contract_size()}, result.stdout.str()


def test_a_tenant_blind_adapter_fails_the_cross_tenant_tests_readably(
    pytester: pytest.Pytester,
) -> None:
    """An adapter whose get_lead ignores the tenant fails the two tests that read another
    tenant's lead, each saying what it returned and what was expected, and passes the rest."""
    pytester.makepyfile(
        _adapter_module(
            """
            class Services(FakeHostServices):
                def get_lead(self, tenant, lead_id):
                    rows = self._rows.items()
                    found = [row for (kind, _, i), row in rows if kind is Lead and i == lead_id]
                    return Lead(**found[0]) if found else None
            """
        )
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-rf")
    size = _contract_size()
    assert result.parseoutcomes() == {"failed": 2, "passed": size - 2}, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*get_lead('acme', 'lead-1') must return None: 'lead-1' is a lead of tenant "
            "'globex', and a tenant never sees another tenant's data:",
            "*expected None, got Lead(id='lead-1', tenant='globex'*",
            "*get_lead('globex', 'lead-1') after refused changes of its id and tenant: it must "
            "still be None:",
            "*expected None, got Lead(id='lead-1', tenant='acme'*",
            # CI=true makes pytest print each failure's message after its id
            "FAILED *TestMine::test_get_of_another_tenants_record_is_none[[]lead[]]*",
            "FAILED *TestMine::test_update_refuses_to_change_the_id_or_the_tenant[[]lead[]]*",
        ]
    )


def test_missing_fixtures_explain_themselves(pytester: pytest.Pytester) -> None:
    """A subclass that forgets its fixtures gets errors that say how to write them."""
    pytester.makepyfile(
        textwrap.dedent(
            """
            from services_ai_plugins_testing.services_contract import HostServicesContract


            class TestForgetful(HostServicesContract):
                pass
            """
        )
    )
    result = pytester.runpytest_inprocess(
        "-q", "-p", "no:cacheprovider", "-k", "test_is_host_services or test_get_returns"
    )
    result.assert_outcomes(errors=5)
    result.stdout.fnmatch_lines(
        [
            "*TestForgetful runs the host services contract but does not define the `services` "
            "fixture*",
        ]
    )


def test_a_missing_seed_fixture_explains_itself(pytester: pytest.Pytester) -> None:
    """A subclass with services but no seed gets an error that says what the seed must do."""
    pytester.makepyfile(
        textwrap.dedent(
            """
            import pytest
            from services_ai_plugins_testing.fakes import FakeHostServices
            from services_ai_plugins_testing.services_contract import HostServicesContract


            class TestHalfDone(HostServicesContract):
                @pytest.fixture
                def services(self):
                    return FakeHostServices()
            """
        )
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes["error"] if "error" in outcomes else outcomes["errors"]
    assert outcomes["passed"] > 0  # the tests that need no seed still run
    result.stdout.fnmatch_lines(
        ["*TestHalfDone runs the host services contract but does not define the `seed` fixture*"]
    )
