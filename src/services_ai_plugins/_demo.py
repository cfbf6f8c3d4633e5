"""``services-ai-plugins demo``: the SDK end to end, in a folder of its own.

It packs the example plugins bundled with the SDK (``_demo_plugins/``) into
ZIP archives, installs them through a :class:`PluginHost` over a SQLite
registry, approves them and enables them for two tenants, then fires events
through the host and shows what each plugin did through its API. A plugin
that always fails is isolated (the others still run) and then suspended by
the circuit breaker. Last comes what an admin sees: settings, metrics,
failures and the audit trail.

The host's services are the demo's own (:class:`_DemoServices`): an app
without data of its own (the events bring their payloads), whose channels and
plugin stores are kept in memory and whose every call is recorded, so the demo
can show what each plugin did. The core never imports its test kit.
Log records of the SDK are shown as one line each, without tracebacks: the
demo command configures that for its own run only (the library never
configures logging).

The host, its hook specifications and the event payloads are imported when the
demo runs, not when the command line starts, so the other commands do not pay
for them.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._logs import sdk_log_handler
from ._manifest import Manifest
from ._markers import hookimpl
from ._sources._package import pack_plugin
from ._storage._sqlite import SQLiteStorage
from ._version import HOST_API_VERSION, __version__

if TYPE_CHECKING:
    from ._dispatch import BreakerPolicy, HookTrace
    from ._host import PluginHost
    from ._json import JSONValue
    from .events import Booking, Context, Email, Invoice, Lead, Notification, Sms, User

__all__ = ["add_demo_command", "run_demo"]

#: The bundled example plugins: plain plugin folders, packed by the demo.
PLUGINS_DIR: Final = Path(__file__).with_name("_demo_plugins")

#: Which plugins each tenant turns on: not all for both, so isolation shows.
ENABLED: Final[Mapping[str, tuple[str, ...]]] = {
    "acme": ("flaky", "lead-notifier", "revenue-widget"),
    "initech": ("branding", "lead-notifier", "revenue-widget"),
}

#: Who does what, for the audit trail.
VENDOR: Final = "ops@demo"
ADMIN: Final = "admin@demo"

_INDENT: Final = "   "
_MORE: Final = "      "

Write = Callable[[str], None]


def add_demo_command(commands: Any) -> None:
    """Add ``demo`` to the CLI's sub-command parser."""
    demo = commands.add_parser(
        "demo",
        help="run the SDK end to end on bundled example plugins",
        description=(
            "Pack the bundled example plugins, install them into a plugin host over a "
            "SQLite registry, enable them for two tenants, fire events and show what each "
            "plugin did, how a failing plugin is isolated and suspended, and what an "
            "admin sees afterwards."
        ),
    )
    demo.add_argument(
        "--keep",
        metavar="DIR",
        help="work in DIR (new or empty) and keep it, to look inside afterwards",
    )
    demo.set_defaults(handler=_command, json=False)


def _command(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    lines: list[str] = []
    if args.keep is None:
        with tempfile.TemporaryDirectory(prefix="services-ai-plugins-demo-") as scratch:
            run_demo(Path(scratch), lines.append)
        lines.append("")
        lines.append("The folder is gone again; `services-ai-plugins demo --keep DIR` keeps it.")
        return {}, lines
    folder = Path(args.keep)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"--keep {folder}: give a folder that is new or empty")
    folder.mkdir(parents=True, exist_ok=True)
    run_demo(folder, lines.append)
    db, plugins = folder / "plugins.db", folder / "plugins"
    lines.append("")
    lines.append(f"Kept {folder}: plugins.db, plugins/ and archives/. Look inside with:")
    lines.append(f"  services-ai-plugins list --db {db} --plugins-dir {plugins}")
    lines.append(f"  services-ai-plugins audit --db {db}")
    return {}, lines


def run_demo(folder: Path, write: Write) -> None:
    """Run the demo in ``folder`` (which it fills), writing what happens line by line."""
    # Imported here so that the CLI's other commands start without them (see the docstring).
    from ._dispatch import BreakerPolicy  # noqa: PLC0415
    from ._host import PluginHost  # noqa: PLC0415

    logs: list[str] = []
    storage = SQLiteStorage(folder / "plugins.db")
    services = _DemoServices()
    breaker = BreakerPolicy()  # the defaults, spelled out: 5 failures in a row suspend
    try:
        with (
            _one_line_logs(logs),
            PluginHost(
                services,
                storage=storage,
                plugins_dir=folder / "plugins",
                breaker=breaker,
                entry_points=False,  # only the bundled plugins, not what this environment has
            ) as host,
        ):
            host.add_listener(_Alerts(logs), name="alerts")
            demo = _Demo(host, services, breaker, write, logs)
            write(
                f"services-ai-plugins {__version__} (host API {HOST_API_VERSION}): "
                f"the demo, in {folder}"
            )
            demo.install(folder / "archives")
            demo.approve_and_enable()
            demo.events()
            demo.breaker()
            demo.admin()
            demo.show_logs()
    finally:
        storage.close()


class _Demo:
    """The stages of the demo, sharing one host."""

    def __init__(
        self,
        host: PluginHost,
        services: _DemoServices,
        breaker: BreakerPolicy,
        write: Write,
        logs: list[str],
    ) -> None:
        self.host = host
        self.breaker_policy = breaker
        self.services = services
        self.write = write
        self.logs = logs
        self.scenario = _scenario()
        #: The plugins that ran for each tenant's events.
        self.reached: dict[str, set[str]] = {tenant: set() for tenant in ENABLED}

    def heading(self, text: str) -> None:
        self.show_logs()
        self.write("")
        self.write(text)

    def show_logs(self) -> None:
        """Write the log lines (and the host listener's) gathered since the last call."""
        for line in self.logs:
            self.write(f"{_MORE}{line}")
        self.logs.clear()

    def install(self, archives: Path) -> None:
        self.heading(
            "1. Pack the bundled plugins into ZIP archives and install them (host.install)"
        )
        folders = sorted(p for p in PLUGINS_DIR.iterdir() if (p / "manifest.json").is_file())
        for source in folders:
            manifest = Manifest.from_file(source / "manifest.json")
            packed = pack_plugin(source, archives / f"{manifest.id}-{manifest.version}.zip")
            record = self.host.install(packed.path, actor=VENDOR)
            self.write(
                f"{_INDENT}{packed.path.name:<25} -> {record.id:<15} code hash "
                f"{record.code_hash[:12]}..., {record.status.value}"
            )
        count = len(self.host.registry.plugins())
        self.write(f"{_INDENT}installed {count} plugins, extracted under plugins/<id>/<version>/")

    def approve_and_enable(self) -> None:
        self.heading("2. Approve them, enable them per tenant, set a tenant's setting")
        registry = self.host.registry
        for record in registry.plugins():
            approved = registry.approve(record.id, actor=ADMIN)
            granted = ", ".join(approved.granted_permissions) or "nothing"
            self.write(f"{_INDENT}approved {record.id:<15} granted: {granted}")
        for tenant, plugin_ids in ENABLED.items():
            for plugin_id in plugin_ids:
                registry.enable(plugin_id, tenant, actor=f"owner@{tenant}")
        for tenant in ENABLED:
            running = ", ".join(registry.enabled_plugins(tenant))
            self.write(f"{_INDENT}{tenant:<8} runs {running}")
        form = {"greeting": "Hot lead", "min_value": "1000"}  # as a settings form posts them
        values = registry.set_settings("lead-notifier", "acme", form, actor="owner@acme")
        self.write(f"{_INDENT}acme sets lead-notifier's settings to {_pairs(values)}")
        defaults = registry.get_settings("lead-notifier", "initech")
        self.write(f"{_INDENT}initech keeps the defaults: {_pairs(defaults)}")

    def events(self) -> None:
        self.heading("3. Fire events through the host for each tenant, and see what plugins did")
        self.write(
            f"{_INDENT}(host.trace_hook: a call as host.hook.<name>(...) makes, "
            "reporting each plugin's part)"
        )
        scenario = self.scenario
        for tenant in ENABLED:
            lead = scenario.leads[tenant]
            self.fire("lead_created", tenant, _lead(lead), lead=lead)
            booking = scenario.bookings[tenant]
            self.fire(
                "booking_confirmed",
                tenant,
                f"{booking.customer_name}, {booking.service}",
                booking=booking,
            )
            invoice = scenario.invoices[tenant]
            self.fire(
                "invoice_paid",
                tenant,
                f"invoice {invoice.number}, {invoice.total} {invoice.currency}",
                invoice=invoice,
            )
            widgets = self.fire("dashboard_widget", tenant, "the dashboard is shown").result
            for widget in widgets:
                self.write(f"{_MORE}-> widget {widget.title!r}: {widget.html}")
            email = scenario.emails[tenant]
            final = self.fire("filter_email", tenant, f"e-mail {email.subject!r}", email=email)
            self.services.send_email(tenant, final.result)  # the app sends what the chain returns
            if final.result == email:
                self.write(f"{_MORE}-> the app sends it unchanged")
            else:
                ending = final.result.body.rsplit("\n", 1)[-1]
                self.write(f"{_MORE}-> the app sends it signed, ending {ending!r}")
            fragments = self.fire("inject_head", tenant, "a page is rendered").result
            for fragment in fragments:
                self.write(f"{_MORE}-> in <head>: {fragment.html}")
        self.write("")
        self.write(f"{_INDENT}What the host services received, per tenant:")
        for tenant in ENABLED:
            self.write(f"{_INDENT}  {tenant:<8} {self.received(tenant)}")
        self.write(f"{_INDENT}Tenant isolation:")
        installed = {record.id for record in self.host.registry.plugins()}
        for tenant, reached in self.reached.items():
            never = ", ".join(sorted(installed - reached)) or "none"
            self.write(
                f"{_INDENT}  {tenant}'s events reached {', '.join(sorted(reached))}; never {never}"
            )

    def breaker(self) -> None:
        self.heading("4. A failing plugin is isolated, then suspended by the circuit breaker")
        self.write(
            f"{_INDENT}flaky raises in lead_created; the breaker suspends a plugin for a tenant "
            f"after {self.breaker_policy.consecutive_failures} failures in a row there"
        )
        self.write(
            f"{_INDENT}(lead-notifier announces only the leads worth acme's min_value of 1000)"
        )
        *failing, last = self.scenario.more_leads
        for lead in failing:
            self.fire("lead_created", "acme", _lead(lead), lead=lead)
        for suspension in self.host.suspensions():
            where = f"tenant {suspension.tenant}" if suspension.tenant else "every tenant"
            self.write(
                f"{_INDENT}suspended: {suspension.plugin_id} for {where} by {suspension.by}: "
                f"{suspension.reason}"
            )
        running = ", ".join(self.host.registry.enabled_plugins("acme"))
        self.write(f"{_INDENT}acme now runs {running}; an admin's host.resume() lets flaky back in")
        self.fire("lead_created", "acme", _lead(last), lead=last)

    def admin(self) -> None:
        self.heading("5. What an admin sees")
        registry = self.host.registry
        self.write(
            f"{_INDENT}Settings per tenant (registry.get_settings: set values, else defaults):"
        )
        for tenant, plugin_ids in ENABLED.items():
            for plugin_id in plugin_ids:
                values = registry.get_settings(plugin_id, tenant)
                self.write(f"{_INDENT}  {tenant:<8} {plugin_id:<15} {_pairs(values) or '-'}")
        self.write(f"{_INDENT}Metrics per plugin and hook (host.metrics()):")
        self.write(
            f"{_INDENT}  {'plugin':<15} {'hook':<18} {'calls':>5} {'errors':>6} {'avg ms':>7}"
        )
        for row in self.host.metrics():
            average = row.total_duration / row.calls * 1000 if row.calls else 0.0
            self.write(
                f"{_INDENT}  {row.plugin_id:<15} {row.hook:<18} "
                f"{row.calls:>5} {row.errors:>6} {average:>7.3f}"
            )
        workers = self.host.sandbox.workers()
        self.write(
            f"{_INDENT}Sandbox workers (host.sandbox.workers(): uploaded archives run in "
            f"a worker process per tenant, this host is pid {os.getpid()}):"
        )
        for worker in workers:
            memory = f"{worker.rss / 2**20:.0f} MiB" if worker.rss else "?"
            tenant = worker.tenant or "(none)"
            self.write(
                f"{_INDENT}  {worker.plugin_id:<15} {tenant:<8} pid {worker.pid:<7} "
                f"{worker.calls:>3} calls  RSS {memory:<7} {', '.join(worker.layers)}"
            )
        failures = self.host.failures()
        self.write(f"{_INDENT}Failures (host.failures(), newest first): {len(failures)} recorded")
        for failure in failures[:3]:
            self.write(
                f"{_INDENT}  {failure.at:%H:%M:%S} {failure.plugin_id} {failure.hook} "
                f"[{failure.tenant}] {failure.exc_type}: {failure.message}"
            )
        if len(failures) > 3:
            self.write(f"{_INDENT}  ... and {len(failures) - 3} more, each with its traceback")
        events = registry.audit_log()
        shown = events[:6]
        self.write(f"{_INDENT}Audit trail (the newest {len(shown)} of {len(events)} events):")
        for event in shown:
            where = f" [{event.tenant}]" if event.tenant else ""
            self.write(
                f"{_INDENT}  {event.at:%H:%M:%S} {event.actor:<15} {event.action:<12} "
                f"{event.plugin_id}{where}"
            )

    # -- helpers ---------------------------------------------------------------------------------

    def fire(self, hook: str, tenant: str, what: str, **payload: Any) -> HookTrace:
        """Call the hook for the tenant; show who ran, the log lines and what they did."""
        calls = len(self.services.calls)
        trace = self.host.trace_hook(hook, context=self.scenario.contexts[tenant], **payload)
        self.reached[tenant].update(outcome.plugin_id for outcome in trace.outcomes)
        ran = ", ".join(
            f"{outcome.plugin_id} {'FAILED' if outcome.failure else 'ok'}"
            for outcome in trace.outcomes
        )
        self.write(f"{_INDENT}{tenant:<8} {hook:<17} {what}")
        self.write(f"{_MORE}ran: {ran or f'no plugin enabled for {tenant} implements it'}")
        self.show_logs()
        for method, _tenant, arguments in self.services.calls[calls:]:
            effect = _effect(method, arguments)
            if effect is not None:
                self.write(f"{_MORE}-> {effect}")
        return trace

    def received(self, tenant: str) -> str:
        services = self.services
        notifications = sum(1 for n in services.sent_notifications if n.tenant == tenant)
        emails = sum(1 for e in services.sent_emails if e.tenant == tenant)
        store = ", ".join(
            f"{plugin_id}.{key}={json.dumps(value)}"
            for (owner, plugin_id, key), value in sorted(services.store.items())
            if owner == tenant
        )
        return f"{notifications} notifications, {emails} e-mail; store: {store or 'empty'}"


class _DemoServices:
    """The demo app's :class:`~services_ai_plugins.HostServices`: no records, every call kept.

    It has no leads, bookings, invoices or users (reads find none, updates
    raise :class:`LookupError`); the notifications, e-mails and text messages
    plugins send are kept in order, each plugin's store lives in memory, and
    :attr:`calls` records every call as (method, tenant, the other arguments).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, tuple[Any, ...]]] = []
        self.sent_notifications: list[Notification] = []
        self.sent_emails: list[Email] = []
        self.sent_sms: list[Sms] = []
        #: Each plugin's key-value store, by (tenant, plugin id, key).
        self.store: dict[tuple[str, str, str], JSONValue] = {}

    def _record(self, method: str, tenant: str, *arguments: Any) -> None:
        self.calls.append((method, tenant, arguments))

    def _missing(self, method: str, tenant: str, record_id: str) -> LookupError:
        self._record(method, tenant, record_id)
        return LookupError(f"the demo app has no records: tenant {tenant!r} has no {record_id!r}")

    def get_lead(self, tenant: str, lead_id: str) -> Lead | None:
        self._record("get_lead", tenant, lead_id)
        return None

    def list_leads(self, tenant: str, *, limit: int) -> Sequence[Lead]:
        self._record("list_leads", tenant, limit)
        return []

    def update_lead(self, tenant: str, lead_id: str, changes: Mapping[str, JSONValue]) -> Lead:
        raise self._missing("update_lead", tenant, lead_id)

    def get_booking(self, tenant: str, booking_id: str) -> Booking | None:
        self._record("get_booking", tenant, booking_id)
        return None

    def list_bookings(self, tenant: str, *, limit: int) -> Sequence[Booking]:
        self._record("list_bookings", tenant, limit)
        return []

    def update_booking(
        self, tenant: str, booking_id: str, changes: Mapping[str, JSONValue]
    ) -> Booking:
        raise self._missing("update_booking", tenant, booking_id)

    def get_invoice(self, tenant: str, invoice_id: str) -> Invoice | None:
        self._record("get_invoice", tenant, invoice_id)
        return None

    def list_invoices(self, tenant: str, *, limit: int) -> Sequence[Invoice]:
        self._record("list_invoices", tenant, limit)
        return []

    def get_user(self, tenant: str, user_id: str) -> User | None:
        self._record("get_user", tenant, user_id)
        return None

    def send_notification(self, tenant: str, notification: Notification) -> None:
        self._record("send_notification", tenant, notification)
        self.sent_notifications.append(notification)

    def send_email(self, tenant: str, email: Email) -> None:
        self._record("send_email", tenant, email)
        self.sent_emails.append(email)

    def send_sms(self, tenant: str, sms: Sms) -> None:
        self._record("send_sms", tenant, sms)
        self.sent_sms.append(sms)

    def get_settings(self, tenant: str, plugin_id: str) -> Mapping[str, JSONValue]:
        # The host hands each plugin its settings from the registry; the app keeps none.
        self._record("get_settings", tenant, plugin_id)
        return {}

    def store_get(self, tenant: str, plugin_id: str, key: str) -> JSONValue:
        self._record("store_get", tenant, plugin_id, key)
        return copy.deepcopy(self.store.get((tenant, plugin_id, key)))

    def store_set(self, tenant: str, plugin_id: str, key: str, value: JSONValue) -> None:
        self._record("store_set", tenant, plugin_id, key, value)
        self.store[(tenant, plugin_id, key)] = copy.deepcopy(value)

    def store_delete(self, tenant: str, plugin_id: str, key: str) -> None:
        self._record("store_delete", tenant, plugin_id, key)
        self.store.pop((tenant, plugin_id, key), None)


@attrs.frozen
class _Scenario:
    """The events' payloads: a day at two tenants, built from ``events.example``."""

    contexts: Mapping[str, Context]
    leads: Mapping[str, Lead]
    bookings: Mapping[str, Booking]
    invoices: Mapping[str, Invoice]
    emails: Mapping[str, Email]
    #: acme's next leads, for the circuit breaker's stage.
    more_leads: tuple[Lead, ...]


def _scenario() -> _Scenario:
    # Imported here so that the CLI's other commands start without them (see the docstring).
    from decimal import Decimal  # noqa: PLC0415

    from ._examples import example  # noqa: PLC0415
    from .events import (  # noqa: PLC0415
        Booking,
        Context,
        Email,
        Invoice,
        InvoiceLine,
        Lead,
        Report,
        User,
    )

    lead = example(Lead)  # Hank Scorpio of Globex, a lead at acme
    booking = example(Booking)
    invoice = attrs.evolve(example(Invoice), status="paid", paid_at=example(Report).generated_at)
    email = example(Email)
    peter = "Peter Gibbons"
    initech = "initech"
    fargo = [
        ("Marge Gunderson", "Brainerd PD", "12000"),
        ("Jerry Lundegaard", "Gustafson Motors", "300"),
        ("Carl Showalter", None, "2500"),
        ("Wade Gustafson", "Gustafson Motors", "7000"),
        ("Norm Gunderson", None, "1500"),
    ]
    return _Scenario(
        contexts={
            "acme": example(Context),  # Ada Lovelace, a sales manager at acme
            initech: Context(
                tenant=initech,
                user=User(
                    id="u-7",
                    tenant=initech,
                    email="bill@initech.example",
                    name="Bill Lumbergh",
                    roles=("manager",),
                ),
                request_id="req-1999",
                locale="en-US",
            ),
        },
        leads={
            "acme": lead,
            initech: attrs.evolve(
                lead,
                id="lead-88",
                tenant=initech,
                name=peter,
                email="peter@initrode.example",
                company="Initrode",
                source="referral",
                value=Decimal("950.00"),
                data={},
            ),
        },
        bookings={
            "acme": booking,
            initech: attrs.evolve(
                booking,
                id="bk-12",
                tenant=initech,
                customer_name=peter,
                customer_email="peter@initrode.example",
                service="TPS report review",
            ),
        },
        invoices={
            "acme": invoice,
            initech: attrs.evolve(
                invoice,
                id="inv-7",
                tenant=initech,
                number="INI-0007",
                customer_name="Initrode",
                currency="USD",
                lines=(
                    InvoiceLine(
                        description="Printer maintenance", quantity=3, unit_price=Decimal("120.00")
                    ),
                ),
                customer_email="billing@initrode.example",
            ),
        },
        emails={
            "acme": email,
            initech: attrs.evolve(
                email,
                tenant=initech,
                to=("peter@initrode.example",),
                subject="Your TPS report review",
                body="Hello Peter,\n\nsee you on Friday at 9.\n\nBill",
                html=None,
                reply_to="bill@initech.example",
            ),
        },
        more_leads=tuple(
            attrs.evolve(
                lead,
                id=f"lead-{number}",
                name=name,
                email=None,
                company=company,
                value=Decimal(value),
                data={},
            )
            for number, (name, company, value) in enumerate(fargo, start=2042)
        ),
    )


class _Alerts:
    """The host's own listener: hears that the breaker suspended a plugin."""

    def __init__(self, logs: list[str]) -> None:
        self.logs = logs

    @hookimpl
    def plugin_suspended(self, plugin_id: str, reason: str, tenant: str | None) -> None:
        where = f"tenant {tenant!r}" if tenant else "every tenant"
        self.logs.append(f"host listener: plugin_suspended: {plugin_id} for {where}: {reason}")


class _LineHandler(logging.Handler):
    """Keeps each log record as one line: level, logger, message; never a traceback."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(f"log {record.levelname} {record.name}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - a handler reports its own failure, as logging's do
            self.handleError(record)


@contextlib.contextmanager
def _one_line_logs(lines: list[str]) -> Iterator[None]:
    """Send the SDK's log records into ``lines`` (one line each) while the demo runs."""
    with sdk_log_handler(_LineHandler(lines), alone=True):
        yield


def _effect(method: str, arguments: tuple[Any, ...]) -> str | None:
    """What a host-services call did, in words; None for reads."""
    if method == "send_notification":
        return f"notification: {arguments[0].message}"
    if method == "send_email":
        email = arguments[0]
        return f"e-mail to {', '.join(email.to)}: {email.subject!r}"
    if method == "send_sms":
        return f"text message to {arguments[0].to}: {arguments[0].text!r}"
    if method == "store_set":
        plugin_id, key, value = arguments
        return f"{plugin_id} stores {key} = {json.dumps(value)}"
    if method.startswith(("update_", "store_delete")):
        return f"{method}{arguments!r}"
    return None


def _lead(lead: Lead) -> str:
    company = f" ({lead.company})" if lead.company else ""
    return f"lead {lead.name}{company}, worth {lead.value}"


def _pairs(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in values.items())
