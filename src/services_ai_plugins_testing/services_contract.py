"""The host services contract: one pytest suite that every host adapter passes.

Write a :class:`~services_ai_plugins.HostServices` adapter over your
application's models, then subclass
:class:`HostServicesContract` in a test module and give it two fixtures:

``services``
    Your :class:`~services_ai_plugins.HostServices`, over a database that holds
    no leads, bookings, invoices, users or store entries of the contract's two
    tenants when the test starts (a transaction rolled back after each test, a
    fresh test database, ...). Return or yield it.

``seed``
    An object that creates rows in the database ``services`` reads, with four
    methods (see :class:`Seed`): ``lead(tenant, **fields)``,
    ``booking(tenant, **fields)``, ``invoice(tenant, **fields)`` and
    ``user(tenant, **fields)``. Each creates one record of that tenant and
    returns it as the services would (read it back through them if in doubt).
    Fields not given are the seed's choice; ids are the database's. The contract
    gives ``name``, ``email`` and ``created_at`` to ``lead``;
    ``customer_name``, ``starts_at`` and ``ends_at`` to ``booking`` (it checks
    that they are kept); ``number`` and ``issued_on`` to ``invoice``; ``name``
    and ``email`` to ``user``.

For example, over Django models::

    import pytest

    from services_ai_plugins_testing.services_contract import HostServicesContract

    from myapp.plugins import DjangoHostServices
    from myapp.tests import factories


    class Seed:
        def lead(self, tenant, **fields):
            return to_lead(factories.LeadFactory(account__slug=tenant, **fields))

        ...  # booking, invoice and user alike


    @pytest.mark.django_db
    class TestDjangoHostServices(HostServicesContract):
        @pytest.fixture
        def services(self):
            return DjangoHostServices()

        @pytest.fixture
        def seed(self):
            return Seed()

Every ``test_*`` method then runs against your adapter; each states in its
docstring the behaviour it checks, and each failure says what the call
returned and what the contract expects. The contract uses the tenants
``acme`` and ``globex`` and the plugin ids ``contract-plugin`` and
``other-plugin``: set the class attributes :attr:`~HostServicesContract.tenant`,
:attr:`~HostServicesContract.other_tenant`,
:attr:`~HostServicesContract.plugin_id` and
:attr:`~HostServicesContract.other_plugin_id` to names your database knows.

What the contract asks of an adapter, beyond the protocol's signatures:

* tenant isolation: ``get_*`` return None for an id of another tenant's record,
  as for an unknown id (malformed ones too, such as ``"no-such-id"`` where
  ids are numbers); ``list_*`` return the tenant's records only; ``update_*``
  of another tenant's record raises :class:`LookupError` and changes nothing;
  the store of one (tenant, plugin) is never another's;
* order and size: ``list_leads`` and ``list_invoices`` return the most recent
  first, ``list_bookings`` the soonest first (the contract seeds only future
  bookings: whether a past one is still listed is the adapter's choice); each
  returns ``min(limit, n)`` records;
* updates: ``update_*`` applies ``changes`` and returns the record as stored
  (``get_*`` returns the same). Changes are JSON, so a typed field comes in
  its wire form (:func:`~services_ai_plugins.events.to_wire`): a Decimal as
  ``"5200.00"``, a datetime as ISO 8601 text with its offset. A change of
  ``id`` or ``tenant`` raises :class:`ValueError` and changes nothing;
* messages: ``send_notification``, ``send_email`` and ``send_sms`` accept a
  record of the tenant (addressed to reserved example domains and fictional
  numbers: point your adapter at a test outbox);
* settings and store (when the adapter provides them): ``get_settings``
  returns a mapping of JSON values; ``store_get`` returns what ``store_set``
  kept (every JSON type, exactly: a boolean stays a boolean; keys of any
  text up to 200 characters, as
  :class:`~services_ai_plugins.PluginAPI` lets through), or None for a key
  never set; ``store_delete`` forgets a key, and
  ignores one that is absent; a stored value is a copy, never shared with the
  caller; the three store methods are overridden together or not at all.

An app implements only what it has: a method it does not override (it
inherits :class:`~services_ai_plugins.HostServices`' default, which raises
:class:`~services_ai_plugins.errors.NotSupported`), or one that raises
``NotSupported`` itself, is reported as a skipped test ("not provided by this
app"), never as a failure. Without its own store methods the SDK keeps the
plugins' stores (on the host's storage, tested by the storage contract), and
``get_settings`` is deprecated: neither is tested here then.

:class:`~services_ai_plugins_testing.fakes.FakeHostServices` passes the same suite.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar, Final, Protocol

import attrs
import pytest

from services_ai_plugins import HostServices
from services_ai_plugins._api import STORE_METHODS, provides
from services_ai_plugins._json import check_json
from services_ai_plugins.errors import NotSupported
from services_ai_plugins.events import (
    Booking,
    Email,
    Invoice,
    Lead,
    Notification,
    Sms,
    User,
)
from services_ai_plugins.tooling import example
from services_ai_plugins.types import JSONValue
from services_ai_plugins_testing._diff import describe, differences, expect_same

__all__ = ["HostServicesContract", "Seed"]


class Seed(Protocol):
    """What the ``seed`` fixture returns: a maker of records in the adapter's database.

    Each method creates one record of ``tenant`` with the given fields (the
    others are its own choice, the id the database's) and returns it as the
    services under test would return it.
    """

    def lead(self, tenant: str, **fields: Any) -> Lead:
        """Create a lead of ``tenant`` and return it."""
        ...

    def booking(self, tenant: str, **fields: Any) -> Booking:
        """Create a booking of ``tenant`` and return it."""
        ...

    def invoice(self, tenant: str, **fields: Any) -> Invoice:
        """Create an invoice of ``tenant`` and return it."""
        ...

    def user(self, tenant: str, **fields: Any) -> User:
        """Create a user account of ``tenant`` and return it."""
        ...


#: When the seeded leads were created: one hour apart from here (whole seconds, UTC).
_CREATED: Final = datetime(2024, 5, 6, 9, 0, tzinfo=timezone.utc)
#: When the seeded invoices were issued: one day apart from here.
_ISSUED: Final = date(2024, 5, 1)
#: In how many days the n-th seeded booking starts: not in the order they are made.
_BOOKING_DAYS: Final = (3, 1, 2, 5, 4)
#: Ids that no record has: one that looks like a serial number, one that is not one.
_UNKNOWN_IDS: Final = ("999999999", "no-such-id")


@functools.cache
def _tomorrow() -> datetime:
    """Midnight UTC after the first test asked: a base for bookings in the future."""
    now = datetime.now(timezone.utc)
    return datetime(now.year, now.month, now.day, tzinfo=timezone.utc) + timedelta(days=1)


def _lead_fields(tenant: str, n: int) -> dict[str, Any]:
    return {
        "name": f"Lead {n} of {tenant}",
        "email": f"lead{n}@example.com",
        "created_at": _CREATED + timedelta(hours=n),
    }


def _booking_fields(tenant: str, n: int) -> dict[str, Any]:
    starts_at = _tomorrow() + timedelta(days=_BOOKING_DAYS[n % len(_BOOKING_DAYS)], hours=9)
    return {
        "customer_name": f"Customer {n} of {tenant}",
        "starts_at": starts_at,
        "ends_at": starts_at + timedelta(hours=1),
    }


def _invoice_fields(tenant: str, n: int) -> dict[str, Any]:
    return {"number": f"C-{n:04d}", "issued_on": _ISSUED + timedelta(days=n)}


def _user_fields(tenant: str, n: int) -> dict[str, Any]:
    return {"name": f"User {n} of {tenant}", "email": f"user{n}@example.com"}


@attrs.frozen
class _Kind:
    """A kind of record the services serve, and how the contract makes and lists them."""

    #: The noun in method names: ``lead`` for ``get_lead``, ``seed.lead``, ...
    name: str
    record: type
    fields: Callable[[str, int], dict[str, Any]]
    #: The fields the seed must keep as given (the contract's expectations rely on them).
    kept: tuple[str, ...] = ()
    #: How ``list_*`` orders: "newest" first or "soonest" first; None: no list method.
    order: str | None = None

    @property
    def get(self) -> str:
        return f"get_{self.name}"

    @property
    def list(self) -> str:
        return f"list_{self.name}s"

    @property
    def update(self) -> str:
        return f"update_{self.name}"


_KINDS: Final = {
    "lead": _Kind("lead", Lead, _lead_fields, order="newest"),
    "booking": _Kind(
        "booking", Booking, _booking_fields, kept=("starts_at", "ends_at"), order="soonest"
    ),
    "invoice": _Kind("invoice", Invoice, _invoice_fields, order="newest"),
    "user": _Kind("user", User, _user_fields),
}
_ALL: Final = list(_KINDS)
_LISTED: Final = [name for name, kind in _KINDS.items() if kind.order is not None]
_UPDATED: Final = ["lead", "booking"]

#: Changes of text fields, by kind (the values are the fields' own).
_TEXT_CHANGES: Final[Mapping[str, Mapping[str, str]]] = {
    "lead": {"status": "contacted", "company": "Initech"},
    "booking": {"status": "confirmed", "notes": "Bring the signed contract."},
}

#: Values of every JSON type, and keys at the edges of what PluginAPI lets through.
_STORE_VALUES: Final[Mapping[str, JSONValue]] = {
    "text": "Zoë — ünïcødé ✓ 插件",
    "empty text": "",
    "int": 42,
    "negative": -7,
    "large int": 2**53,
    "float": 0.5,
    "true": True,
    "false": False,
    "list": [1, "two", None, [3.5, False]],
    "object": {"nested": {"list": [1, 2], "flag": False}, "null": None},
    "empty list": [],
    "empty object": {},
    "ключ with spaces/and:colons": "any text is a key",
    "k" * 200: "the longest key PluginAPI allows",
}


class HostServicesContract:
    """The behaviour every :class:`~services_ai_plugins.HostServices` adapter must have.

    Subclass it in a test module (its name starting with ``Test``) and
    override the ``services`` and ``seed`` fixtures; see the module docstring.
    Each test gets its own fixtures, and expects the contract's tenants to have
    no records and no store entries when it starts.

    This base class is never collected on its own, even when imported under a
    ``Test*`` name: subclasses are collected unless they set ``__test__ = False``
    themselves (an abstract intermediate class, say).
    """

    __test__: ClassVar[bool] = False

    #: The tenant whose data the tests read and write.
    tenant: ClassVar[str] = "acme"
    #: Another tenant, whose data the services must never hand to ``tenant``.
    other_tenant: ClassVar[str] = "globex"
    #: The plugin whose settings and store the tests use.
    plugin_id: ClassVar[str] = "contract-plugin"
    #: Another plugin, whose store must stay apart from ``plugin_id``'s.
    other_plugin_id: ClassVar[str] = "other-plugin"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__test__" not in cls.__dict__:
            cls.__test__ = True

    @pytest.fixture
    def services(self) -> HostServices:
        """The adapter under test: override this fixture to return (or yield) it."""
        pytest.fail(
            f"{type(self).__name__} runs the host services contract but does not define the "
            "`services` fixture: override it in the class to return your HostServices, over a "
            "database without records of the contract's tenants, e.g.\n\n"
            "    @pytest.fixture\n"
            "    def services(self) -> HostServices:\n"
            "        return MyHostServices()",
            pytrace=False,
        )

    @pytest.fixture
    def seed(self) -> Seed:
        """What creates the records: override this fixture to return it (see :class:`Seed`)."""
        pytest.fail(
            f"{type(self).__name__} runs the host services contract but does not define the "
            "`seed` fixture: override it in the class to return an object whose lead(), "
            "booking(), invoice() and user() methods create a record of the tenant they are "
            "given, in the database the services read, and return it, e.g.\n\n"
            "    @pytest.fixture\n"
            "    def seed(self, services) -> Seed:\n"
            "        return MySeed(services)",
            pytrace=False,
        )

    # -- the protocol ----------------------------------------------------------------------

    def test_is_host_services(self, services: HostServices) -> None:
        """The adapter satisfies the runtime-checkable HostServices protocol."""
        assert isinstance(services, HostServices), (
            f"{type(services).__name__} lacks a method of the HostServices protocol: "
            f"{', '.join(_missing_methods(services))} (subclass HostServices: it has a default, "
            "raising NotSupported, for each method your app does not provide)"
        )

    # -- get_* -----------------------------------------------------------------------------

    @pytest.mark.parametrize("kind", _ALL)
    def test_get_returns_the_tenants_record(
        self, services: HostServices, seed: Seed, kind: str
    ) -> None:
        """get_<kind>(tenant, id) returns the record the seed made for the tenant, every field."""
        _require(services, _KINDS[kind].get)
        made = _seed(seed, _KINDS[kind], self.tenant, 0)
        call = _call(_KINDS[kind].get, self.tenant, made.id)
        got = _ask(services, _KINDS[kind].get, self.tenant, made.id, expect="return the record")
        expect_same(got, made, f"{call} must return the {kind} seed.{kind}() made")

    @pytest.mark.parametrize("kind", _ALL)
    def test_get_of_an_unknown_id_is_none(
        self, services: HostServices, seed: Seed, kind: str
    ) -> None:
        """get_<kind>(tenant, id) returns None for ids no record has, malformed ones included."""
        _require(services, _KINDS[kind].get)
        _seed(seed, _KINDS[kind], self.tenant, 0)
        for unknown in _UNKNOWN_IDS:
            call = _call(_KINDS[kind].get, self.tenant, unknown)
            got = _ask(services, _KINDS[kind].get, self.tenant, unknown, expect="return None")
            expect_same(got, None, f"{call} must return None: the tenant has no such {kind}")

    @pytest.mark.parametrize("kind", _ALL)
    def test_get_of_another_tenants_record_is_none(
        self, services: HostServices, seed: Seed, kind: str
    ) -> None:
        """get_<kind>(tenant, id) returns None when the id is another tenant's record."""
        _require(services, _KINDS[kind].get)
        theirs = _seed(seed, _KINDS[kind], self.other_tenant, 0)
        call = _call(_KINDS[kind].get, self.tenant, theirs.id)
        got = _ask(services, _KINDS[kind].get, self.tenant, theirs.id, expect="return None")
        expect_same(
            got,
            None,
            f"{call} must return None: {theirs.id!r} is a {kind} of tenant "
            f"{self.other_tenant!r}, and a tenant never sees another tenant's data",
        )

    # -- list_* ----------------------------------------------------------------------------

    @pytest.mark.parametrize("kind", _LISTED)
    def test_list_returns_only_the_tenants_records_in_order(
        self, services: HostServices, seed: Seed, kind: str
    ) -> None:
        """list_<kind>s(tenant, limit=...) lists the tenant's records only: leads and invoices
        newest first, bookings soonest first."""
        spec = _KINDS[kind]
        _require(services, spec.list)
        for tenant in (self.tenant, self.other_tenant):
            expect_same(
                _listed(services, spec, tenant, 10),
                [],
                f"{_call(spec.list, tenant, limit=10)} before any {kind} was seeded must return "
                "[]: the contract needs a database without records of its tenants",
            )
        mine: list[Any] = []
        theirs: list[Any] = []
        for n in range(3):  # interleaved, so that a list must filter before it cuts
            mine.append(_seed(seed, spec, self.tenant, n))
            if n < 2:
                theirs.append(_seed(seed, spec, self.other_tenant, n))
        for tenant, made in ((self.tenant, mine), (self.other_tenant, theirs)):
            expected = _in_order(spec, made)
            got = _listed(services, spec, tenant, 10)
            call = _call(spec.list, tenant, limit=10)
            expect_same(
                _ids(got),
                _ids(expected),
                f"ids of {call}: the {len(expected)} {kind}s of tenant {tenant!r}, "
                f"{spec.order} first",
            )
            expect_same(got, expected, f"{call}: the records seed.{kind}() made")

    @pytest.mark.parametrize("kind", _LISTED)
    def test_list_returns_at_most_limit_records(
        self, services: HostServices, seed: Seed, kind: str
    ) -> None:
        """list_<kind>s(tenant, limit=n) returns the first min(n, count) of the tenant's records,
        however many other tenants have."""
        spec = _KINDS[kind]
        _require(services, spec.list)
        mine = []
        for n in range(3):  # interleaved, so that a list must filter by tenant before it cuts
            mine.append(_seed(seed, spec, self.tenant, n))
            _seed(seed, spec, self.other_tenant, n)
        expected = _in_order(spec, mine)
        for limit in (1, 2, 3, 1000):
            expect_same(
                _ids(_listed(services, spec, self.tenant, limit)),
                _ids(expected[:limit]),
                f"ids of {_call(spec.list, self.tenant, limit=limit)}: the first "
                f"{min(limit, 3)} of the tenant's 3 {kind}s, {spec.order} first",
            )

    # -- update_* --------------------------------------------------------------------------

    @pytest.mark.parametrize("kind", _UPDATED)
    def test_update_applies_changes_and_returns_the_stored_record(
        self, services: HostServices, seed: Seed, kind: str
    ) -> None:
        """update_<kind>(tenant, id, changes) changes those fields only, and returns the record
        that get_<kind>() then returns."""
        spec = _KINDS[kind]
        _require(services, spec.update, spec.get)
        made = _seed(seed, spec, self.tenant, 0)
        changes = _TEXT_CHANGES[kind]
        _expect_update(services, spec, self.tenant, made, changes=dict(changes), fields=changes)

    @pytest.mark.parametrize("kind", _UPDATED)
    def test_update_reads_typed_values_in_wire_form(
        self, services: HostServices, seed: Seed, kind: str
    ) -> None:
        """update_<kind>() reads a Decimal from text such as '5200.00' and a datetime from
        ISO 8601 text, as to_wire() writes them."""
        spec = _KINDS[kind]
        _require(services, spec.update, spec.get)
        made = _seed(seed, spec, self.tenant, 0)
        if kind == "lead":
            changes: dict[str, JSONValue] = {"value": "5200.00"}
            fields: dict[str, Any] = {"value": Decimal("5200.00")}
        else:  # a booking, moved a day later and in another zone
            zone = timezone(timedelta(hours=2))
            starts_at = (made.starts_at + timedelta(days=1)).astimezone(zone)
            ends_at = starts_at + timedelta(minutes=90)
            changes = {"starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat()}
            fields = {"starts_at": starts_at, "ends_at": ends_at}
        _expect_update(services, spec, self.tenant, made, changes=changes, fields=fields)

    @pytest.mark.parametrize("kind", _UPDATED)
    def test_update_of_another_tenants_record_raises_lookup_error(
        self, services: HostServices, seed: Seed, kind: str
    ) -> None:
        """update_<kind>() of another tenant's record, or of an unknown id, raises LookupError
        and changes nothing."""
        spec = _KINDS[kind]
        _require(services, spec.update, spec.get)
        theirs = _seed(seed, spec, self.other_tenant, 0)
        changes = dict(_TEXT_CHANGES[kind])
        update = getattr(services, spec.update)
        _expect_raises(
            LookupError,
            lambda: update(self.tenant, theirs.id, changes),
            _call(spec.update, self.tenant, theirs.id, changes),
            f"{theirs.id!r} is a {kind} of tenant {self.other_tenant!r}",
        )
        expect_same(
            _ask(services, spec.get, self.other_tenant, theirs.id, expect="return the record"),
            theirs,
            f"{_call(spec.get, self.other_tenant, theirs.id)} after tenant {self.tenant!r} "
            "tried to update it: it must be unchanged",
        )
        for unknown in _UNKNOWN_IDS:
            _expect_raises(
                LookupError,
                functools.partial(update, self.tenant, unknown, changes),
                _call(spec.update, self.tenant, unknown, changes),
                f"the tenant has no {kind} {unknown!r}",
            )

    @pytest.mark.parametrize("kind", _UPDATED)
    def test_update_refuses_to_change_the_id_or_the_tenant(
        self, services: HostServices, seed: Seed, kind: str
    ) -> None:
        """update_<kind>() with 'tenant' or 'id' among the changes raises ValueError and changes
        nothing: a plugin cannot move a record to another tenant."""
        spec = _KINDS[kind]
        _require(services, spec.update, spec.get)
        made = _seed(seed, spec, self.tenant, 0)
        update = getattr(services, spec.update)
        refused: list[dict[str, JSONValue]] = [
            {"tenant": self.other_tenant},
            {"id": f"{made.id}-moved"},
        ]
        for changes in refused:
            _expect_raises(
                ValueError,
                functools.partial(update, self.tenant, made.id, changes),
                _call(spec.update, self.tenant, made.id, changes),
                f"a {kind}'s id and tenant are not for plugins to change",
            )
        after = "after refused changes of its id and tenant"
        expect_same(
            _ask(services, spec.get, self.tenant, made.id, expect="return the record"),
            made,
            f"{_call(spec.get, self.tenant, made.id)} {after}: it must be unchanged",
        )
        expect_same(
            _ask(services, spec.get, self.other_tenant, made.id, expect="return None"),
            None,
            f"{_call(spec.get, self.other_tenant, made.id)} {after}: it must still be None",
        )

    # -- messages --------------------------------------------------------------------------

    def test_send_notification_accepts_a_record_of_the_tenant(self, services: HostServices) -> None:
        """send_notification(tenant, notification) takes a notification of the tenant."""
        notification = Notification(
            tenant=self.tenant, message="Host services contract check", level="info"
        )
        _ask(
            services,
            "send_notification",
            self.tenant,
            notification,
            expect="deliver or queue it and return",
        )

    def test_send_email_accepts_a_record_of_the_tenant(self, services: HostServices) -> None:
        """send_email(tenant, email) takes an e-mail of the tenant (to an example domain)."""
        email = attrs.evolve(example(Email), tenant=self.tenant, to=("contract@example.com",))
        _ask(services, "send_email", self.tenant, email, expect="send or queue it and return")

    def test_send_sms_accepts_a_record_of_the_tenant(self, services: HostServices) -> None:
        """send_sms(tenant, sms) takes a text message of the tenant (to a fictional number)."""
        sms = Sms(tenant=self.tenant, to="+15550100", text="Host services contract check")
        _ask(services, "send_sms", self.tenant, sms, expect="send or queue it and return")

    # -- settings --------------------------------------------------------------------------

    def test_get_settings_returns_a_mapping_of_json_values(self, services: HostServices) -> None:
        """get_settings(tenant, plugin_id) returns a mapping of names to JSON values (when the
        adapter still provides this deprecated method)."""
        _require(services, "get_settings")
        call = _call("get_settings", self.tenant, self.plugin_id)
        got = _ask(services, "get_settings", self.tenant, self.plugin_id, expect="return them")
        if not isinstance(got, Mapping):
            pytest.fail(f"{call} returned {describe(got)}; it must return a mapping", pytrace=False)
        problems = [
            f"{key!r}: {problem}"
            for key, value in got.items()
            if (problem := _json_problem(key, value))
        ]
        if problems:
            pytest.fail(
                f"{call} must map setting names (strings) to JSON values, yet:\n  "
                + "\n  ".join(problems),
                pytrace=False,
            )

    # -- the plugin's store ----------------------------------------------------------------

    def test_store_methods_are_overridden_together(self, services: HostServices) -> None:
        """store_get, store_set and store_delete are the adapter's own all three, or none of
        them (then the SDK keeps the plugins' stores): a store half the app's and half the
        SDK's would lose values."""
        own = [method for method in STORE_METHODS if provides(services, method)]
        if own and len(own) < len(STORE_METHODS):
            missing = [method for method in STORE_METHODS if method not in own]
            pytest.fail(
                f"{type(services).__name__} overrides {', '.join(own)} but not "
                f"{', '.join(missing)}: override all three store methods, or none of them to "
                "let the SDK keep the plugins' stores",
                pytrace=False,
            )

    def test_store_get_of_a_missing_key_is_none(self, services: HostServices) -> None:
        """store_get() of a key never set returns None."""
        _require(services, *STORE_METHODS)
        call = _call("store_get", self.tenant, self.plugin_id, "never-set")
        got = _ask(
            services, "store_get", self.tenant, self.plugin_id, "never-set", expect="return None"
        )
        expect_same(got, None, f"{call} must return None for a key never set")

    def test_store_keeps_every_json_value_exactly(self, services: HostServices) -> None:
        """store_get() returns what store_set() kept: every JSON type, booleans as booleans."""
        _require(services, *STORE_METHODS)
        for key, value in _STORE_VALUES.items():
            _ask(services, "store_set", self.tenant, self.plugin_id, key, value, expect="keep it")
        for key, value in _STORE_VALUES.items():
            expect_same(
                _ask(services, "store_get", self.tenant, self.plugin_id, key, expect="return it"),
                value,
                f"{_call('store_get', self.tenant, self.plugin_id, key)} after store_set() of "
                f"{value!r}",
            )

    def test_store_set_replaces_the_value(self, services: HostServices) -> None:
        """A second store_set() of a key replaces its value, whatever the JSON type."""
        _require(services, *STORE_METHODS)
        tenant, plugin = self.tenant, self.plugin_id
        _ask(services, "store_set", tenant, plugin, "cursor", {"page": 1}, expect="keep it")
        _ask(services, "store_set", tenant, plugin, "cursor", [2, 3], expect="replace it")
        expect_same(
            _ask(services, "store_get", tenant, plugin, "cursor", expect="return it"),
            [2, 3],
            f"{_call('store_get', tenant, plugin, 'cursor')} after store_set() of "
            "{'page': 1} and then of [2, 3]",
        )

    def test_store_delete_forgets_the_key_and_ignores_a_missing_one(
        self, services: HostServices
    ) -> None:
        """store_delete() makes store_get() return None; deleting a missing key is no error."""
        _require(services, *STORE_METHODS)
        tenant, plugin = self.tenant, self.plugin_id
        _ask(services, "store_set", tenant, plugin, "cursor", 7, expect="keep it")
        _ask(services, "store_set", tenant, plugin, "other", 8, expect="keep it")
        _ask(services, "store_delete", tenant, plugin, "cursor", expect="forget it")
        expect_same(
            _ask(services, "store_get", tenant, plugin, "cursor", expect="return None"),
            None,
            f"{_call('store_get', tenant, plugin, 'cursor')} after store_delete() of it",
        )
        expect_same(
            _ask(services, "store_get", tenant, plugin, "other", expect="return it"),
            8,
            f"{_call('store_get', tenant, plugin, 'other')} after store_delete() of another key",
        )
        _ask(
            services,
            "store_delete",
            tenant,
            plugin,
            "cursor",
            expect="do nothing: deleting a key that is absent is no error",
        )

    def test_store_is_per_tenant(self, services: HostServices) -> None:
        """One plugin's key holds a value per tenant; deleting one tenant's keeps the other's."""
        _require(services, *STORE_METHODS)
        _expect_apart(services, (self.tenant, self.plugin_id), (self.other_tenant, self.plugin_id))

    def test_store_is_per_plugin(self, services: HostServices) -> None:
        """One tenant's key holds a value per plugin; deleting one plugin's keeps the other's."""
        _require(services, *STORE_METHODS)
        _expect_apart(services, (self.tenant, self.plugin_id), (self.tenant, self.other_plugin_id))

    def test_stored_values_are_copies(self, services: HostServices) -> None:
        """Changing a value after store_set(), or the one store_get() returned, changes nothing
        stored."""
        _require(services, *STORE_METHODS)
        tenant, plugin = self.tenant, self.plugin_id
        value: dict[str, JSONValue] = {"seen": ["lead-1"]}
        _ask(services, "store_set", tenant, plugin, "seen", value, expect="keep a copy")
        seen = value["seen"]
        assert isinstance(seen, list)
        seen.append("changed by the caller after store_set()")
        got = _ask(services, "store_get", tenant, plugin, "seen", expect="return it")
        expect_same(
            got,
            {"seen": ["lead-1"]},
            f"{_call('store_get', tenant, plugin, 'seen')} after the caller changed the dict it "
            "had given to store_set(): the store must keep a copy",
        )
        returned = got.get("seen") if isinstance(got, dict) else None
        if isinstance(returned, list):
            returned.append("changed by the caller after store_get()")
        expect_same(
            _ask(services, "store_get", tenant, plugin, "seen", expect="return it"),
            {"seen": ["lead-1"]},
            f"{_call('store_get', tenant, plugin, 'seen')} after the caller changed what an "
            "earlier store_get() returned: each call must return a copy",
        )


# -- helpers -------------------------------------------------------------------------------


def _call(method: str, *arguments: object, **keywords: object) -> str:
    """A call as it reads in a message: ``get_lead('acme', 'lead-1')``."""
    shown = [repr(argument) for argument in arguments]
    shown += [f"{name}={value!r}" for name, value in keywords.items()]
    return f"{method}({', '.join(shown)})"


def _require(services: HostServices, *methods: str) -> None:
    """Skip the test, saying so, when the adapter does not provide one of ``methods``."""
    missing = [method for method in methods if not provides(services, method)]
    if missing:
        pytest.skip(
            f"not provided by this app: HostServices.{', HostServices.'.join(missing)} "
            "(the default raises NotSupported)"
        )


def _ask(services: HostServices, method: str, *arguments: Any, expect: str, **keywords: Any) -> Any:
    """Call a method of the services; an exception fails the test, saying what was expected.

    NotSupported skips the test instead: the app does not provide that method.
    """
    __tracebackhide__ = True  # pytest shows the test and the adapter's frames, not this one
    try:
        return getattr(services, method)(*arguments, **keywords)
    except NotSupported as exc:
        pytest.skip(f"not provided by this app: {_call(method, *arguments, **keywords)}: {exc}")
    except Exception as exc:
        raise AssertionError(
            f"{_call(method, *arguments, **keywords)} raised {type(exc).__name__}: {exc}\n"
            f"  but it must {expect} (the adapter's traceback follows)"
        ) from exc


def _seed(seed: Seed, kind: _Kind, tenant: str, n: int) -> Any:
    """The n-th record of ``kind`` for ``tenant``, made by the seed and checked."""
    fields = kind.fields(tenant, n)
    call = f"seed.{kind.name}({tenant!r}, {', '.join(f'{k}={v!r}' for k, v in fields.items())})"
    made: Any = getattr(seed, kind.name)(tenant, **fields)
    if type(made) is not kind.record:
        pytest.fail(
            f"{call} returned {describe(made)}; the seed fixture must return the "
            f"{kind.record.__name__} it created",
            pytrace=False,
        )
    made_for = getattr(made, "tenant", None)
    if made_for != tenant:
        pytest.fail(
            f"{call} returned a {kind.name} of tenant {made_for!r}; the seed fixture must "
            "create the record for the tenant it is given",
            pytrace=False,
        )
    for name in kind.kept:
        problems = differences(getattr(made, name), fields[name], name)
        if problems:
            pytest.fail(
                f"{call} did not keep {name}: {'; '.join(problems)}. The contract's "
                "expectations rely on it: the seed must create the record with it",
                pytrace=False,
            )
    return made


def _listed(services: HostServices, kind: _Kind, tenant: str, limit: int) -> list[Any]:
    call = _call(kind.list, tenant, limit=limit)
    got = _ask(services, kind.list, tenant, limit=limit, expect="return a list of records")
    if not isinstance(got, Sequence) or isinstance(got, (str, bytes)):
        pytest.fail(
            f"{call} returned {describe(got)}; it must return a sequence of "
            f"{kind.record.__name__} records (a list or a tuple)",
            pytrace=False,
        )
    return list(got)


def _in_order(kind: _Kind, made: Sequence[Any]) -> list[Any]:
    """The records as ``list_*`` must return them, given them in the order they were made."""
    if kind.order == "soonest":
        return sorted(made, key=_start)
    return list(reversed(made))


def _start(booking: Booking) -> datetime:
    return booking.starts_at


def _ids(records: Sequence[Any]) -> list[Any]:
    return [getattr(record, "id", record) for record in records]


def _expect_update(
    services: HostServices,
    kind: _Kind,
    tenant: str,
    made: Any,
    *,
    changes: Mapping[str, JSONValue],
    fields: Mapping[str, Any],
) -> None:
    call = _call(kind.update, tenant, made.id, changes)
    expected = attrs.evolve(made, **fields)
    got = _ask(
        services,
        kind.update,
        tenant,
        made.id,
        copy.deepcopy(dict(changes)),
        expect=f"apply the changes and return the {kind.name} as stored",
    )
    expect_same(got, expected, f"{call} must return the {kind.name} with the changes applied")
    expect_same(
        _ask(services, kind.get, tenant, made.id, expect="return the record"),
        expected,
        f"{_call(kind.get, tenant, made.id)} after {call} must return the changed {kind.name}",
    )


def _expect_raises(
    error: type[Exception], action: Callable[[], object], call: str, why: str
) -> None:
    try:
        result = action()
    except error:
        return
    except Exception as exc:  # noqa: BLE001 - any other exception is the failure to report
        pytest.fail(
            f"{call} raised {type(exc).__name__}({exc}); {why}, so it must raise "
            f"{error.__name__} (or a subclass)",
            pytrace=False,
        )
    pytest.fail(
        f"{call} returned {describe(result)}; {why}, so it must raise {error.__name__} "
        "(or a subclass) and change nothing",
        pytrace=False,
    )


def _expect_apart(services: HostServices, first: tuple[str, str], second: tuple[str, str]) -> None:
    """The stores of two (tenant, plugin) pairs hold a key apart, and delete it apart."""
    values: dict[tuple[str, str], JSONValue] = {first: "first", second: {"second": True}}
    for (tenant, plugin), value in values.items():
        _ask(services, "store_set", tenant, plugin, "shared-key", value, expect="keep it")
    for (tenant, plugin), value in values.items():
        expect_same(
            _ask(services, "store_get", tenant, plugin, "shared-key", expect="return it"),
            value,
            f"{_call('store_get', tenant, plugin, 'shared-key')} after store_set() of "
            f"{values[first]!r} for {first} and of {values[second]!r} for {second}",
        )
    _ask(services, "store_delete", *first, "shared-key", expect="forget it")
    expect_same(
        _ask(services, "store_get", *second, "shared-key", expect="return it"),
        values[second],
        f"{_call('store_get', *second, 'shared-key')} after store_delete() of the same key "
        f"for {first}",
    )
    expect_same(
        _ask(services, "store_get", *first, "shared-key", expect="return None"),
        None,
        f"{_call('store_get', *first, 'shared-key')} after store_delete() of it",
    )


def _json_problem(key: object, value: object) -> str:
    """What is wrong with one setting, or ``""``."""
    if not isinstance(key, str):
        return f"the name is a {type(key).__name__}, not a string"
    try:
        check_json(value)
    except ValueError as exc:
        return f"the value {exc}"
    return ""


def _missing_methods(services: object) -> list[str]:
    wanted = [
        name
        for name in dir(HostServices)
        if not name.startswith("_") and callable(getattr(HostServices, name, None))
    ]
    return [name for name in wanted if not callable(getattr(services, name, None))]
