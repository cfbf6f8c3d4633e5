"""The host commands of the command line: call, failures, metrics, suspend, resume, resolve.

``call`` fires one hook through a :class:`PluginHost` built on the registry
(``--db``) and the plugins folder (``--plugins-dir``) of the operator commands
(at a site, ``manage.py plugins``, through the site's own host), and reports
what each plugin returned or how it failed. The others read or change what the
host keeps there: failures, metrics per (plugin, hook) and suspensions.

The host, the hook specifications and the payloads are imported only when
``call`` runs, so the other commands start as fast as before.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import json
import logging
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, NamedTuple, NoReturn, final

from .._json import json_type_name
from .._logs import plugin_output, sdk_log_handler
from .._registry import Registry, Suspension
from .._storage._protocol import AccessRecord, FailureRecord, HookMetrics, PluginStatus, Storage
from ..errors import HookCallError, NoHostServices, Problem, TransitionError
from ._common import (
    Result,
    ResultWithCode,
    actor_name,
    command_adder,
    current_site,
    duration,
    open_registry,
    open_storage,
    plugins_path,
    positive,
    suspension_document,
)

if TYPE_CHECKING:
    from .._dispatch import HookTrace, PluginOutcome
    from .._host import PluginHost
    from .._json import JSONValue
    from ..events import Booking, Email, Invoice, Lead, Notification, Sms, User
    from ..hookspecs import HookInfo

__all__ = ["HookCallError", "NoHostServices", "add_host_commands"]

_EXIT_OK: Final = 0
_EXIT_FAILED: Final = 1


@final
class _CommandLineServices:
    """The :class:`HostServices` of ``call``: no host application behind it.

    Every data and channel call raises :class:`NoHostServices`, so a plugin
    that needs them fails visibly, as a failure of the call. A plugin's
    settings come from the registry (a :class:`PluginHost` hands them to the
    API itself), and its own store lives in memory for the command's run.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry: Final = registry
        self._store: dict[tuple[str, str, str], JSONValue] = {}

    @staticmethod
    def _refuse(method: str) -> NoReturn:
        raise NoHostServices(method)

    def get_lead(self, tenant: str, lead_id: str) -> Lead | None:
        self._refuse("get_lead")

    def list_leads(self, tenant: str, *, limit: int) -> Sequence[Lead]:
        self._refuse("list_leads")

    def update_lead(self, tenant: str, lead_id: str, changes: Mapping[str, JSONValue]) -> Lead:
        self._refuse("update_lead")

    def get_booking(self, tenant: str, booking_id: str) -> Booking | None:
        self._refuse("get_booking")

    def list_bookings(self, tenant: str, *, limit: int) -> Sequence[Booking]:
        self._refuse("list_bookings")

    def update_booking(
        self, tenant: str, booking_id: str, changes: Mapping[str, JSONValue]
    ) -> Booking:
        self._refuse("update_booking")

    def get_invoice(self, tenant: str, invoice_id: str) -> Invoice | None:
        self._refuse("get_invoice")

    def list_invoices(self, tenant: str, *, limit: int) -> Sequence[Invoice]:
        self._refuse("list_invoices")

    def get_user(self, tenant: str, user_id: str) -> User | None:
        self._refuse("get_user")

    def send_notification(self, tenant: str, notification: Notification) -> None:
        self._refuse("send_notification")

    def send_email(self, tenant: str, email: Email) -> None:
        self._refuse("send_email")

    def send_sms(self, tenant: str, sms: Sms) -> None:
        self._refuse("send_sms")

    def get_settings(self, tenant: str, plugin_id: str) -> Mapping[str, JSONValue]:
        return self._registry.get_settings(plugin_id, tenant)

    def store_get(self, tenant: str, plugin_id: str, key: str) -> JSONValue:
        return copy.deepcopy(self._store.get((tenant, plugin_id, key)))

    def store_set(self, tenant: str, plugin_id: str, key: str, value: JSONValue) -> None:
        self._store[tenant, plugin_id, key] = copy.deepcopy(value)

    def store_delete(self, tenant: str, plugin_id: str, key: str) -> None:
        self._store.pop((tenant, plugin_id, key), None)


# -- call ----------------------------------------------------------------------------------------


class _Request(NamedTuple):
    """A checked ``call``: the hook, its tenant, its keyword arguments and notes for people."""

    info: HookInfo
    tenant: str | None
    kwargs: dict[str, Any]
    notes: list[str]


def _storage(args: argparse.Namespace) -> contextlib.AbstractContextManager[Storage]:
    """The registry's storage; a SQLite file that does not exist is refused (nothing is created)."""
    return open_storage(args, must_exist=True)


def _request(args: argparse.Namespace) -> _Request:
    """Check the hook, the tenant and the arguments before anything runs or is written."""
    # The hook arguments of --sample are built as ``check`` builds them.
    from .._examples import (  # noqa: PLC0415 - the payloads load only when call runs
        FILLED,
        example_values,
        parameter_types,
    )
    from ..events import Context  # noqa: PLC0415 - as above
    from ..hookspecs import hook_info, plugin_manager  # noqa: PLC0415 - as above

    name: str = args.hook
    pm = plugin_manager()
    try:
        info = hook_info(name, pm)
    except KeyError as error:
        raise HookCallError([Problem("", str(error.args[0]))], source=name) from None
    if info.host_only:
        problem = Problem("", "only the host receives this hook, never plugins: nothing to call")
        raise HookCallError([problem], source=name)
    spec = getattr(pm.hook, name).spec
    assert spec is not None
    problems: list[Problem] = []
    notes: list[str] = []
    tenant: str | None = args.tenant
    kwargs: dict[str, Any] = {}
    if info.tenant_scoped:
        if tenant is None:
            problems.append(Problem("--tenant", f"is required: {name} runs for one tenant"))
        else:
            try:
                kwargs["context"] = Context(tenant=tenant)
            except (TypeError, ValueError) as error:
                problems.append(Problem("--tenant", str(error)))
                tenant = None
    else:
        if tenant is not None:
            notes.append(f"{name} runs without a tenant: --tenant {tenant} is ignored")
        tenant = None
        if "context" in spec.argnames:  # pragma: no cover - only host-only built-in hooks
            kwargs["context"] = None
    wanted = [arg for arg in spec.argnames if arg not in FILLED]
    kinds = parameter_types(spec.function, wanted)
    if args.sample:
        values, found = example_values(name, kinds, tenant)
    else:
        values, found = _given(name, args.data, kinds)
    problems += found
    if tenant is not None:
        problems += _foreign_tenants(values, tenant)
    if problems:
        raise HookCallError(problems, source=name)
    kwargs.update(values)
    return _Request(info, tenant, kwargs, notes)


def _given(
    hook: str, data: str | None, kinds: Mapping[str, Any]
) -> tuple[dict[str, Any], list[Problem]]:
    """Structure ``--data`` into the parameters' types; every problem, by argument."""
    from cattrs.errors import (  # noqa: PLC0415 - the payloads load only when call runs
        ClassValidationError,
        IterableValidationError,
        StructureHandlerNotFoundError,
    )

    from .._examples import FILLED, OPTIONAL, type_name  # noqa: PLC0415 - as above
    from .._payload_codec import converter, located_problems  # noqa: PLC0415 - as above

    document: object = {}
    if data is not None:
        try:
            document = json.loads(data)
        except ValueError as error:
            return {}, [Problem("--data", f"is not valid JSON: {error}")]
    if not isinstance(document, dict):
        got = json_type_name(document)
        return {}, [Problem("--data", f"must be a JSON object of {hook}'s arguments (got {got})")]
    problems: list[Problem] = []
    values: dict[str, Any] = {}
    for key in document:
        if key in kinds:
            continue
        if key in FILLED:
            why = "from --tenant" if key == "context" else "by the host, for each plugin its own"
            problems.append(Problem(key, f"is not given in --data: it is filled {why}"))
            continue
        near = difflib.get_close_matches(key, list(kinds), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        known = ", ".join(kinds) or "none"
        problems.append(Problem(key, f"unknown argument (its arguments: {known}){hint}"))
    for name, kind in kinds.items():
        if name not in document:
            if name not in OPTIONAL:
                how = "" if data is not None else ": give it with --data, or use --sample"
                problems.append(Problem(name, f"is required ({type_name(kind)}){how}"))
            continue
        try:
            values[name] = converter().structure(document[name], kind)
        except StructureHandlerNotFoundError:
            problems.append(
                Problem(name, f"cannot be given on the command line ({type_name(kind)})")
            )
        except (ClassValidationError, IterableValidationError, ValueError, TypeError) as error:
            problems += dict.fromkeys(located_problems(error, name, kind))
    return values, problems


def _foreign_tenants(values: Mapping[str, Any], tenant: str) -> list[Problem]:
    """A problem per record in the arguments that belongs to another tenant."""
    import attrs  # noqa: PLC0415 - only when call runs

    problems: list[Problem] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, tuple):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")
        elif attrs.has(type(value)):
            for field in attrs.fields(type(value)):
                current = getattr(value, field.name)
                if field.name == "tenant" and isinstance(current, str) and current != tenant:
                    problems.append(
                        Problem(
                            f"{path}.tenant",
                            f"is {current!r}, but the call is for tenant {tenant!r} (--tenant)",
                        )
                    )
                else:
                    walk(current, f"{path}.{field.name}")

    for name, value in values.items():
        walk(value, name)
    return problems


class _OneLine(logging.Formatter):
    """``log: <message>``: no traceback (the outcome shows the failure; ``failures`` keeps it)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"log: {record.getMessage()}"


@contextlib.contextmanager
def _log_to_stderr() -> Iterator[None]:
    """Show the host's warnings and errors (a plugin that cannot load, say) on standard error."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_OneLine())
    with sdk_log_handler(handler), plugin_output(sys.stderr):
        yield


@contextlib.contextmanager
def _plugin_host(args: argparse.Namespace) -> Iterator[PluginHost]:
    """The host ``call`` fires hooks through: the site's, else one of its own, closed after.

    The site's host is brought up to date with the registry first (this command's
    storage is not the host's), and writes its failures and metrics at the end, where
    ``failures`` and ``metrics`` read them; it stays open, the site's to close.
    """
    site = current_site()
    if site is not None:
        host = site.host()
        host.refresh()
        try:
            yield host
        finally:
            host.flush()
        return
    from .._api import ApiLimits  # noqa: PLC0415 - as the host
    from .._egress import NetworkPolicy  # noqa: PLC0415 - as the host
    from .._host import PluginHost  # noqa: PLC0415 - the host loads only when call runs

    with _storage(args) as storage:
        services = _CommandLineServices(Registry(storage))
        host = PluginHost(
            services,
            storage=storage,
            plugins_dir=plugins_path(args),
            actor=actor_name(args),
            limits=ApiLimits(network=NetworkPolicy.from_env()),
        )
        try:
            yield host
        finally:
            host.close()


def _call(args: argparse.Namespace) -> ResultWithCode:
    request = _request(args)
    traces: list[HookTrace] = []
    # A plugin's print() must not spoil the command's output (or its JSON).
    with _log_to_stderr(), contextlib.redirect_stdout(sys.stderr), _plugin_host(args) as host:
        before = {(s.plugin_id, s.tenant) for s in host.suspensions()}
        for _ in range(args.repeat):
            kwargs = copy.deepcopy(request.kwargs)
            traces.append(host.trace_hook(request.info.name, **kwargs))
        suspended = [s for s in host.suspensions() if (s.plugin_id, s.tenant) not in before]
        not_loaded = _not_loaded(host.registry, request.tenant, host.plugins())
    failed = bool(not_loaded) or any(
        o.failure is not None for trace in traces for o in trace.outcomes
    )
    if args.repeat == 1:
        document, lines = _one_call(request, traces[0])
    else:
        document, lines = _many_calls(request, traces)
    document["suspended"] = [suspension_document(s) for s in suspended]
    document["not_loaded"] = not_loaded
    document["notes"] = request.notes
    lines += [
        f"suspended {s.plugin_id} {_where(s.tenant)} by {s.by}: {s.reason}" for s in suspended
    ]
    lines += [
        f"not loaded: {plugin_id} (it should run here; the log on standard error says why)"
        for plugin_id in not_loaded
    ]
    lines += [f"note: {note}" for note in request.notes]
    return document, lines, _EXIT_FAILED if failed else _EXIT_OK


def _not_loaded(registry: Registry, tenant: str | None, loaded: Mapping[str, object]) -> list[str]:
    """The plugins that should run for ``tenant`` (or, without one, everywhere) but did not load."""
    if tenant is not None:
        expected = set(registry.enabled_plugins(tenant))
    else:
        expected = {record.id for record in registry.plugins(PluginStatus.APPROVED)}
    return sorted(expected - set(loaded))


def _where(tenant: str | None) -> str:
    return f"for tenant {tenant}" if tenant is not None else "everywhere"


def _headline(request: _Request) -> str:
    tenant = request.tenant
    return f"{request.info.name} for tenant {tenant}" if tenant else f"{request.info.name}"


def _one_call(request: _Request, trace: HookTrace) -> Result:
    from ..hookspecs import HookKind  # noqa: PLC0415 - only when call runs

    outcomes = trace.outcomes
    failed = sum(o.failure is not None for o in outcomes)
    if outcomes:
        ran = f"{len(outcomes)} plugin{'s' if len(outcomes) != 1 else ''} ran, {failed} failed"
    else:
        needs = request.info.permissions
        holds = f" and holds {', '.join(needs)}" if needs else ""
        where = f"for tenant {request.tenant}" if request.tenant else "here"
        ran = f"no plugin ran (none running {where} implements it{holds})"
    lines = [f"called {_headline(request)}: {ran}"]
    width = max((len(o.plugin_id) for o in outcomes), default=0)
    for outcome in outcomes:
        if outcome.failure is None:
            what = f"returned {_text(outcome.result)}"
            state = "ok"
        else:
            what = f"{outcome.failure.exc_type}: {outcome.failure.message}"
            state = "failed"
        lines.append(
            f"  {state:<6}  {outcome.plugin_id:<{width}}  {duration(outcome.duration):>9}  {what}"
        )
    if request.info.kind is not HookKind.NOTIFY:
        lines.append(f"result: {_text(trace.result)}")
    document = {
        "hook": trace.hook,
        "kind": request.info.kind.value,
        "tenant": trace.tenant,
        "result": _jsonable(trace.result),
        "outcomes": [_outcome_document(o) for o in outcomes],
    }
    return document, lines


def _many_calls(request: _Request, traces: Sequence[HookTrace]) -> Result:
    totals: dict[str, dict[str, Any]] = {}
    for trace in traces:
        for outcome in trace.outcomes:
            row = totals.setdefault(
                outcome.plugin_id,
                {
                    "plugin_id": outcome.plugin_id,
                    "calls": 0,
                    "ok": 0,
                    "failed": 0,
                    "total_duration": 0.0,
                    "max_duration": 0.0,
                },
            )
            row["calls"] += 1
            row["ok" if outcome.failure is None else "failed"] += 1
            row["total_duration"] += outcome.duration
            row["max_duration"] = max(row["max_duration"], outcome.duration)
    rows = [totals[plugin_id] for plugin_id in sorted(totals)]
    failed = sum(row["failed"] for row in rows)
    lines = [
        f"called {_headline(request)} {len(traces)} times: "
        f"{len(rows)} plugin{'s' if len(rows) != 1 else ''} ran, {failed} failed calls"
    ]
    if rows:
        width = max(len("plugin"), *(len(row["plugin_id"]) for row in rows))
        lines.append(
            f"  {'plugin':<{width}}  {'calls':>5}  {'ok':>5}  {'failed':>6}  "
            f"{'total':>9}  {'max':>9}"
        )
        lines += [
            f"  {row['plugin_id']:<{width}}  {row['calls']:>5}  {row['ok']:>5}  "
            f"{row['failed']:>6}  {duration(row['total_duration']):>9}  "
            f"{duration(row['max_duration']):>9}"
            for row in rows
        ]
    document = {
        "hook": request.info.name,
        "kind": request.info.kind.value,
        "tenant": request.tenant,
        "repeat": len(traces),
        "plugins": rows,
    }
    return document, lines


def _outcome_document(outcome: PluginOutcome) -> dict[str, Any]:
    failure = outcome.failure
    return {
        "plugin_id": outcome.plugin_id,
        "ok": failure is None,
        "duration": outcome.duration,
        "result": _jsonable(outcome.result),
        "failure": None
        if failure is None
        else {
            "exc_type": failure.exc_type,
            "message": failure.message,
            "traceback": failure.traceback,
        },
    }


def _jsonable(value: Any) -> Any:
    """A result in its JSON form: payloads as on the wire, anything else JSON can't hold as repr."""
    from .._payload_codec import to_wire  # noqa: PLC0415 - only when call runs
    from ..events import PAYLOAD_TYPES  # noqa: PLC0415 - as above

    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if type(value) in PAYLOAD_TYPES:
        try:
            return to_wire(value)
        except (TypeError, ValueError):  # pragma: no cover - records check themselves when built
            return repr(value)
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return repr(value)


def _text(value: Any) -> str:
    return "None" if value is None else json.dumps(_jsonable(value), ensure_ascii=False)


# -- failures, metrics ---------------------------------------------------------------------------


def _failure_document(failure: FailureRecord) -> dict[str, Any]:
    return {
        "id": failure.id,
        "plugin_id": failure.plugin_id,
        "tenant": failure.tenant,
        "hook": failure.hook,
        "exc_type": failure.exc_type,
        "message": failure.message,
        "at": failure.at.isoformat(),
        "resolved": failure.resolved,
        "traceback": failure.traceback,
    }


def _failures(args: argparse.Namespace) -> Result:
    resolved = True if args.resolved else False if args.unresolved else None
    with _storage(args) as storage:
        failures = storage.failures(args.name, resolved=resolved, limit=args.limit)
    lines = [
        f"{f.at:%Y-%m-%d %H:%M:%S} #{f.id:<5} {f.plugin_id}"
        + (f" [{f.tenant}]" if f.tenant else "")
        + f" {f.hook}: {f.exc_type}: {f.message}"
        + (" (resolved)" if f.resolved else "")
        for f in failures
    ]
    return {"failures": [_failure_document(f) for f in failures]}, lines or ["no failures"]


def _metrics_document(row: HookMetrics) -> dict[str, Any]:
    return {
        "plugin_id": row.plugin_id,
        "hook": row.hook,
        "calls": row.calls,
        "errors": row.errors,
        "error_rate": row.errors / row.calls if row.calls else 0.0,
        "total_duration": row.total_duration,
        "mean_duration": row.total_duration / row.calls if row.calls else 0.0,
        "max_duration": row.max_duration,
        "last_call": row.last_call.isoformat(),
    }


def _metrics(args: argparse.Namespace) -> Result:
    with _storage(args) as storage:
        rows = storage.metrics(args.name)
    documents = [_metrics_document(row) for row in rows]
    if not rows:
        return {"metrics": []}, ["no metrics"]
    plugin = max(len("plugin"), *(len(row.plugin_id) for row in rows))
    hook = max(len("hook"), *(len(row.hook) for row in rows))
    lines = [
        f"{'plugin':<{plugin}}  {'hook':<{hook}}  {'calls':>7}  {'errors':>7}  {'rate':>5}  "
        f"{'total':>9}  {'mean':>9}  {'max':>9}  last call"
    ]
    lines += [
        f"{d['plugin_id']:<{plugin}}  {d['hook']:<{hook}}  {d['calls']:>7}  {d['errors']:>7}  "
        f"{d['error_rate']:>5.0%}  {duration(d['total_duration']):>9}  "
        f"{duration(d['mean_duration']):>9}  {duration(d['max_duration']):>9}  "
        f"{row.last_call:%Y-%m-%d %H:%M:%S}"
        for d, row in zip(documents, rows, strict=True)
    ]
    return {"metrics": documents}, lines


# -- suspend, resume, resolve --------------------------------------------------------------------


def _suspend(args: argparse.Namespace) -> Result:
    tenant: str | None = args.tenant
    with _storage(args) as storage:
        registry = Registry(storage)
        earlier = _suspension(registry, args.name, tenant)
        registry.suspend(args.name, actor=actor_name(args), reason=args.reason, tenant=tenant)
        now = registry.suspensions(args.name)
        record = registry.plugin(args.name)
    current = next(s for s in now if s.tenant == tenant)
    if earlier is None:
        line = f"suspended {args.name} {_where(tenant)}: {current.reason}"
    else:
        line = f"{args.name} was already suspended {_where(tenant)}: {earlier.reason}"
    document = {
        "plugin_id": args.name,
        "tenant": tenant,
        "status": record.status.value,
        "changed": earlier is None,
        "suspensions": [suspension_document(s) for s in now],
    }
    return document, [line]


def _resume(args: argparse.Namespace) -> Result:
    tenant: str | None = args.tenant
    with _storage(args) as storage:
        registry = Registry(storage)
        earlier = _suspension(registry, args.name, tenant)
        try:
            registry.resume(args.name, actor=actor_name(args), tenant=tenant)
        except TransitionError as error:
            tenants = [s.tenant for s in registry.suspensions(args.name) if s.tenant]
            if tenant is not None or not tenants:
                raise
            hint = f"suspended for tenant {', '.join(tenants)} only; resume with --tenant"
            raise TransitionError(
                error.plugin_id, error.action, error.status, error.allowed, reason=hint
            ) from error
        now = registry.suspensions(args.name)
        record = registry.plugin(args.name)
    if earlier is None:
        line = f"{args.name} was not suspended {_where(tenant)}: nothing changed"
    else:
        line = f"resumed {args.name} {_where(tenant)}: {record.status.value}"
    document = {
        "plugin_id": args.name,
        "tenant": tenant,
        "status": record.status.value,
        "changed": earlier is not None,
        "suspensions": [suspension_document(s) for s in now],
    }
    return document, [line]


def _suspension(registry: Registry, plugin_id: str, tenant: str | None) -> Suspension | None:
    return next((s for s in registry.suspensions(plugin_id) if s.tenant == tenant), None)


def _resolve(args: argparse.Namespace) -> Result:
    ids: list[int] | None = args.ids
    with _storage(args) as storage:
        registry = Registry(storage)
        count = registry.resolve_failures(
            args.name, actor=actor_name(args), tenant=args.tenant, ids=ids
        )
    where = f" of tenant {args.tenant}" if args.tenant else ""
    document = {"plugin_id": args.name, "tenant": args.tenant, "ids": ids, "resolved": count}
    return document, [f"resolved {count} failure{'s' if count != 1 else ''} of {args.name}{where}"]


# -- the data-access log -------------------------------------------------------------------------

_AGO: Final = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def moment(text: str) -> datetime:
    """A moment of ``--since``/``--until``: ISO 8601 (a naive one is UTC), or ``7d``, ``12h``,
    ``30m``, ``2w`` ago."""
    unit = _AGO.get(text[-1:])
    if unit is not None and text[:-1].isdigit():
        return datetime.now(timezone.utc) - timedelta(**{unit: int(text[:-1])})
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an ISO 8601 date or time (2026-01-31, 2026-01-31T09:00) or an age such as "
            f"7d, 12h, 30m, 2w (got {text!r})"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _access_document(record: AccessRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "at": record.at.isoformat(),
        "plugin_id": record.plugin_id,
        "tenant": record.tenant,
        "method": record.method,
        "permission": record.permission,
        "record_type": record.record_type,
        "record_ids": list(record.record_ids),
        "count": record.count,
    }


def _access(args: argparse.Namespace) -> Result:
    with open_registry(args, create=False) as registry:
        records = registry.access_log(
            plugin_id=args.plugin,
            tenant=args.tenant,
            method=args.method,
            record_type=args.type,
            record_id=args.record,
            since=args.since,
            until=args.until,
            limit=args.limit,
        )
    lines = []
    for r in records:
        ids = ", ".join(r.record_ids)
        more = f" (+{r.count - len(r.record_ids)} more)" if r.count > len(r.record_ids) else ""
        what = f" {r.record_type} {ids}{more}" if r.record_type else ""
        lines.append(
            f"{r.at:%Y-%m-%d %H:%M:%S} {r.plugin_id} [{r.tenant}] {r.method} ({r.permission})"
            + what
        )
    return {"access": [_access_document(r) for r in records]}, lines or ["no data access"]


def add_host_commands(commands: Any, common: argparse.ArgumentParser, prog: str) -> None:
    """Add the host commands (call, failures, metrics, access, suspend, resume, resolve)."""
    add = command_adder(commands, common, prog)

    call = add("call", "fire one hook through a plugin host and show each plugin's part", _call)
    call.add_argument("hook", help="the hook's name, e.g. lead_created")
    call.add_argument("--tenant", help="the tenant to call it for (ignored by tenant-less hooks)")
    given = call.add_mutually_exclusive_group()
    given.add_argument("--data", help="the hook's arguments as a JSON object (payloads as JSON)")
    given.add_argument("--sample", action="store_true", help="use the documented example payloads")
    call.add_argument(
        "--repeat", type=positive, default=1, help="call it N times; show a summary per plugin"
    )

    failures = add("failures", "list plugin failures, newest first", _failures)
    failures.add_argument("name", nargs="?", help="only this plugin's")
    state = failures.add_mutually_exclusive_group()
    state.add_argument("--resolved", action="store_true", help="only resolved ones")
    state.add_argument("--unresolved", action="store_true", help="only unresolved ones")
    failures.add_argument(
        "--limit", type=positive, default=50, help="at most this many (default 50)"
    )

    metrics = add("metrics", "show call counts and durations per plugin and hook", _metrics)
    metrics.add_argument("name", nargs="?", help="only this plugin's")

    access = add(
        "access",
        "show the data-access log: granted API calls on tenant data, newest first",
        _access,
    )
    access.add_argument("--plugin", help="only this plugin's calls")
    access.add_argument("--tenant", help="only calls for this tenant")
    access.add_argument("--method", help="only calls of this API method (get_lead, ...)")
    access.add_argument("--type", help="only calls that returned this kind of record (lead, ...)")
    access.add_argument("--record", metavar="ID", help="only calls that returned this record id")
    access.add_argument(
        "--since", type=moment, help="at or after this moment (ISO 8601, or an age: 7d, 12h)"
    )
    access.add_argument("--until", type=moment, help="before this moment (as --since)")
    access.add_argument("--limit", type=positive, default=50, help="at most this many (default 50)")

    suspend = add("suspend", "stop an approved plugin everywhere, or for one tenant", _suspend)
    suspend.add_argument("name")
    suspend.add_argument("--reason", required=True)
    suspend.add_argument("--tenant", help="only for this tenant")

    resume = add("resume", "let a suspended plugin run again", _resume)
    resume.add_argument("name")
    resume.add_argument("--tenant", help="only for this tenant")

    resolve = add("resolve", "mark a plugin's failures resolved", _resolve)
    resolve.add_argument("name")
    resolve.add_argument("--tenant", help="only this tenant's failures")
    resolve.add_argument(
        "--id",
        dest="ids",
        type=positive,
        action="append",
        metavar="N",
        help="only the failure with this id (repeat for more)",
    )
