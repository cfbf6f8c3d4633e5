"""``check_plugin``: a plugin tried out before it is installed (``services-ai-plugins check``).

The check validates a plugin folder or ZIP, installs it into a throwaway
:class:`~services_ai_plugins.PluginHost` (in memory, with
:class:`~services_ai_plugins_testing.fakes.FakeHostServices`, in a temporary
plugins folder), approves it and enables it for one tenant, then calls every
hook it implements through the host's own call loop and permission layer: with
the documented example payloads, and with argument sets that
:func:`services_ai_plugins_testing.strategies.hook_arguments` generates. It
reports what a host would run into: crashes, API calls without the permission
they need, hooks the plugin can never receive, slow hooks, refused results and
permissions it declares but does not need.

This is the engine of the test kit, and it needs the kit's dependencies
(hypothesis: the SDK's ``testing`` extra). The SDK's own
``services_ai_plugins.check_plugin`` and the ``check`` command import it only
when a check runs, and say which extra to install when it cannot be imported.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import os
import re
import tempfile
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs
import pluggy
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings

from services_ai_plugins._api import PluginAPI
from services_ai_plugins._check import DEFAULT_EXAMPLES, DEFAULT_SLOW_MS, DEFAULT_TENANT
from services_ai_plugins._dependencies import check_environment
from services_ai_plugins._dispatch import BreakerPolicy
from services_ai_plugins._examples import (
    FILLED,
    OPTIONAL,
    at_tenant,
    example,
    example_values,
    parameter_types,
)
from services_ai_plugins._host import PluginHost
from services_ai_plugins._secrets import throwaway_keys
from services_ai_plugins._sources._package import pack_plugin, validate_plugin
from services_ai_plugins._storage._memory import MemoryStorage
from services_ai_plugins.errors import ManifestError, PackageError, PluginError, RequirementsError
from services_ai_plugins.events import Booking, Context, Invoice, Lead, User
from services_ai_plugins.hookspecs import HOOKS, hook_info, plugin_manager

from . import strategies
from .fakes import FakeHostServices

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

    from services_ai_plugins._api import DeniedCall
    from services_ai_plugins._manifest import Manifest
    from services_ai_plugins._storage._protocol import FailureRecord, PluginRecord
    from services_ai_plugins.hookspecs import HookInfo
    from services_ai_plugins.types import JSONValue

__all__ = [
    "DEFAULT_EXAMPLES",
    "DEFAULT_SLOW_MS",
    "DEFAULT_TENANT",
    "KINDS",
    "CheckProblem",
    "CheckReport",
    "HookSummary",
    "check_plugin",
]

#: Who does what in the throwaway host's audit trail.
_ACTOR: Final = "check"

#: What a check gives the version arguments of the lifecycle hooks, which have no example.
_VERSION_ARGUMENTS: Final = ("version", "to_version")
_EARLIER_VERSION: Final = "0.0.0"

Severity = Literal["error", "warning"]

#: Every :attr:`CheckProblem.kind`, with what it means.
KINDS: Final[Mapping[str, str]] = types.MappingProxyType(
    {
        "invalid": "the manifest, a file or the archive broke a rule (as validate and install)",
        "requirements": "requires_api, requires_python, dependencies or requires_plugins not met",
        "load": "the plugin's code could not be imported, or its plugin object not created",
        "unknown-hook": "it implements a hook nobody specified (a warning if optionalhook=True)",
        "unknown-argument": "an implementation takes an argument its specification does not have",
        "ignored-argument": "an argument has a default, so the host never passes it (a warning)",
        "hook-wrapper": "an implementation is a hook wrapper: plugins may not wrap others' calls",
        "host-only-hook": "it implements a hook that only the host's own listeners receive",
        "unreceivable-hook": "it implements a hook whose permissions its manifest does not declare",
        "manifest-hooks": "the manifest's hooks list differs from the hooks it implements",
        "crash": "a hook raised an exception",
        "permission-denied": "a hook called an API method without the permission it needs",
        "no-tenant": "a hook without a tenant called an API method that needs one",
        "refused-result": "the host refused a hook's result (another tenant's record, a filter "
        "that changed its value's type)",
        "slow-hook": "a call took longer than the limit (a warning)",
        "unused-permission": "a declared permission no hook it implements requires and no API "
        "call it made needed (a warning)",
    }
)


def _lines(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen(kw_only=True)
class CheckProblem:
    """One thing :func:`check_plugin` found wrong with a plugin.

    ``kind`` is one of :data:`KINDS`; the fields that do not apply are None.
    """

    #: ``"error"`` (the plugin fails the check) or ``"warning"``.
    severity: Severity
    #: What went wrong, a key of :data:`KINDS` (``"crash"``, ``"permission-denied"``, ...).
    kind: str
    #: What happened, in words a plugin author can act on.
    message: str
    #: The hook concerned (``"load"`` for the import), or None.
    hook: str | None = None
    #: The permission to declare (or that is not needed), or None.
    permission: str | None = None
    #: The implementation's argument at fault, or None.
    argument: str | None = None
    #: Where in the manifest (``permissions[1]``) or the archive (a member) the problem is.
    path: str | None = None
    #: More lines: the plugin's traceback, the signatures concerned, the arguments of the call.
    detail: tuple[str, ...] = attrs.field(default=(), converter=_lines)

    def __str__(self) -> str:
        where = f"{self.hook}: " if self.hook else f"{self.path}: " if self.path else ""
        return f"{self.severity}: {self.kind}: {where}{self.message}"

    def to_dict(self) -> dict[str, Any]:
        """The problem as a JSON object (every field; ``detail`` a list)."""
        return {
            "severity": self.severity,
            "kind": self.kind,
            "hook": self.hook,
            "message": self.message,
            "permission": self.permission,
            "argument": self.argument,
            "path": self.path,
            "detail": list(self.detail),
        }


@attrs.frozen(kw_only=True)
class HookSummary:
    """What one implemented hook did during a check."""

    hook: str
    #: The hook's kind (``notify``, ``collect``, ``first_result``, ``filter``).
    kind: str
    #: False when the manifest lacks a permission the hook requires: the host never calls it.
    receivable: bool
    #: How many times the plugin's implementation ran.
    calls: int
    #: How many of those failed (an exception, or a refused result).
    failed: int
    #: Seconds, all calls together.
    total_duration: float
    #: Seconds, the slowest call (a call over ``slow_ms`` is timed again: the faster counts).
    max_duration: float

    def to_dict(self) -> dict[str, Any]:
        """The summary as a JSON object."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class CheckReport:
    """What :func:`check_plugin` found: problems, and what each hook did.

    ``ok`` is true when no problem is an error (warnings are allowed).
    """

    #: The folder or ZIP that was checked.
    source: str
    #: The tenant the plugin was enabled for.
    tenant: str
    #: The plugin's id, or None when its manifest could not be read.
    plugin_id: str | None
    #: The plugin's version, or None when its manifest could not be read.
    version: str | None
    #: Every problem, in the order of the steps that found them.
    problems: tuple[CheckProblem, ...]
    #: One per hook the plugin implements, in the order of the hook specifications.
    hooks: tuple[HookSummary, ...]
    #: How many generated argument sets each hook was offered (0: the documented examples only).
    generated: int
    #: True when the plugin was imported and its hooks were called (False: an earlier step failed).
    loaded: bool = False
    #: What the check could not do, and why (no generated arguments, a setting without value).
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no problem is an error."""
        return not self.errors

    @property
    def errors(self) -> tuple[CheckProblem, ...]:
        """The problems that fail the check."""
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[CheckProblem, ...]:
        """The problems that do not fail it."""
        return tuple(p for p in self.problems if p.severity == "warning")

    def to_dict(self) -> dict[str, Any]:
        """The report as one JSON object, as ``services-ai-plugins check --json`` prints it."""
        return {
            "ok": self.ok,
            "plugin_id": self.plugin_id,
            "version": self.version,
            "source": self.source,
            "tenant": self.tenant,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "problems": [p.to_dict() for p in self.problems],
            "hooks": [h.to_dict() for h in self.hooks],
            "generated": self.generated,
            "loaded": self.loaded,
            "notes": list(self.notes),
        }


def check_plugin(
    path: str | os.PathLike[str],
    *,
    tenant: str = DEFAULT_TENANT,
    slow_ms: float = DEFAULT_SLOW_MS,
    examples: int = DEFAULT_EXAMPLES,
    settings: Mapping[str, JSONValue] | None = None,
) -> CheckReport:
    """Validate a plugin folder or ZIP, run every hook it implements, and report its problems.

    In order, stopping early only where a later step cannot run:

    1. validates it as :func:`validate_plugin` does, and checks its
       requirements (``requires_api``, ``requires_python``, ``dependencies``)
       against this environment;
    2. installs it (a folder is packed first) into a throwaway
       :class:`PluginHost` in memory, with
       :class:`~services_ai_plugins_testing.fakes.FakeHostServices` holding an
       example lead, booking, invoice and user for ``tenant``; approves it,
       grants its optional permissions and enables it for ``tenant``. The host
       verifies its code hash, imports it under its own namespace and refuses
       implementations that do not fit a specification; each such refusal is
       a problem naming the hook and the argument;
    3. calls each hook it implements through the host's call loop: once with the
       documented example payloads (at ``tenant``) and with up to ``examples``
       argument sets that ``services_ai_plugins_testing.strategies.hook_arguments``
       generates;
    4. reports crashes (with the plugin's traceback), API calls refused for a
       missing permission (naming the permission to declare), hooks it can
       never receive, slow calls (over ``slow_ms`` milliseconds), refused
       results and declared permissions it did not need.

    The plugin's code runs in this process, as in a host: check only code
    you would run. A bad plugin is reported, never raised; the breaker is off,
    so every call runs.

    :param settings: setting values for ``tenant`` (default: the manifest's defaults).
    :raises ValueError: for an empty ``tenant``, a negative ``slow_ms`` or ``examples``.
    :raises SettingsError: when ``settings`` do not fit the plugin's settings schema.

    Example::

        report = check_plugin("plugins/welcome-mailer", tenant="acme")
        report.ok  # False
        [str(p) for p in report.errors]
        # ["error: permission-denied: lead_created: called send_email() without the
        #   'send_email' permission: declare it in the manifest's permissions (in 11 of 11 calls)"]
    """
    if not tenant.strip():
        raise ValueError(f"tenant must be a non-empty string (got {tenant!r})")
    if slow_ms < 0:
        raise ValueError(f"slow_ms must be >= 0 (got {slow_ms!r})")
    if examples < 0:
        raise ValueError(f"examples must be a whole number >= 0 (got {examples!r})")
    return _Check(Path(path), tenant, slow_ms, examples, dict(settings or {})).run()


# -- the check -------------------------------------------------------------------------------------


@attrs.define
class _Run:
    """One hook's calls during a check, grouped for the report."""

    info: HookInfo
    #: The permissions the hook needs that the manifest does not declare (it never runs).
    missing: tuple[str, ...] = ()
    calls: int = 0
    failed: int = 0
    total: float = 0.0
    slowest: float = 0.0
    slow: int = 0
    #: Crashes by exception type: (count, the first failure, which arguments it had).
    crashes: dict[str, tuple[int, FailureRecord, str]] = attrs.Factory(dict)
    #: Refusals of the API by (method, permission): (calls refused, the first refusal).
    denials: dict[tuple[str, str | None], tuple[int, DeniedCall]] = attrs.Factory(dict)
    #: Refused results: (count, the first failure).
    refused: tuple[int, FailureRecord] | None = None

    def summary(self) -> HookSummary:
        return HookSummary(
            hook=self.info.name,
            kind=self.info.kind.value,
            receivable=not self.missing,
            calls=self.calls,
            failed=self.failed,
            total_duration=self.total,
            max_duration=self.slowest,
        )


class _Check:
    """The state of one :func:`check_plugin` run."""

    def __init__(
        self,
        source: Path,
        tenant: str,
        slow_ms: float,
        examples: int,
        settings: dict[str, JSONValue],
    ) -> None:
        self.source = source
        self.tenant = tenant
        self.slow_ms = slow_ms
        self.examples = examples
        self.settings = settings
        self.problems: list[CheckProblem] = []
        self.notes: list[str] = []
        self.manifest: Manifest | None = None
        self.runs: dict[str, _Run] = {}
        self.generated = 0
        self.loaded = False
        #: The hook being called, so a refused API call is put down to it.
        self.current: _Run | None = None
        #: The refusals of the API in the running call, by (method, permission).
        self.denied_in_call: dict[tuple[str, str | None], DeniedCall] = {}
        #: The installed plugin folder (with a trailing separator), cut from tracebacks.
        self.folder = ""
        self.services: FakeHostServices | None = None

    def error(self, kind: str, message: str, **fields: Any) -> None:
        self.problems.append(CheckProblem(severity="error", kind=kind, message=message, **fields))

    def warning(self, kind: str, message: str, **fields: Any) -> None:
        self.problems.append(CheckProblem(severity="warning", kind=kind, message=message, **fields))

    def note(self, text: str) -> None:
        if text not in self.notes:  # generated calls would repeat it
            self.notes.append(text)

    def run(self) -> CheckReport:
        manifest = self.validate()
        if manifest is not None:
            self.manifest = manifest
            with tempfile.TemporaryDirectory(prefix="services-ai-plugins-check-") as scratch:
                self.exercise(manifest, Path(scratch))
        manifest = self.manifest
        return CheckReport(
            source=str(self.source),
            tenant=self.tenant,
            plugin_id=manifest.id if manifest is not None else None,
            version=str(manifest.version) if manifest is not None else None,
            problems=tuple(self.problems),
            hooks=tuple(run.summary() for run in self.runs.values()),
            generated=self.generated,
            loaded=self.loaded,
            notes=tuple(self.notes),
        )

    # -- 1. validate -------------------------------------------------------------------------------

    def validate(self) -> Manifest | None:

        try:
            checked = validate_plugin(self.source)
        except (ManifestError, PackageError) as error:
            self.invalid(error)
            return None
        if checked.kind == "manifest":
            self.error(
                "invalid",
                "a manifest alone cannot be checked: give the plugin's folder or ZIP",
                path=str(self.source),
            )
            return None
        for problem in check_environment(checked.manifest):
            self.error("requirements", problem.message, path=problem.path)
        return checked.manifest

    def invalid(self, error: ManifestError | PackageError) -> None:
        if isinstance(error, ManifestError):
            for problem in error.problems:
                self.error("invalid", problem.message, path=problem.path or None)
        else:
            self.error("invalid", str(error), path=error.member)

    # -- 2. install and import ---------------------------------------------------------------------

    def exercise(self, manifest: Manifest, scratch: Path) -> None:

        services = FakeHostServices()
        host = PluginHost(
            services,
            storage=MemoryStorage(),
            plugins_dir=scratch / "plugins",
            # Every call must run: a plugin that keeps failing is what the check is looking for.
            breaker=BreakerPolicy(consecutive_failures=0, failure_rate=0.0),
            entry_points=False,
            on_denied=self.denied,
            actor=_ACTOR,
            secret_keys=throwaway_keys(),  # nothing outlives the check: a key of its own
        )
        host._check_requirements = False  # reported by validate(): the hooks still run
        try:
            record = self.install(host, manifest, scratch)
            if record is None:
                return
            if record.package_path:
                self.folder = f"{Path(record.package_path)}{os.sep}"
            plugin = self.load(host, record)
            if plugin is None:
                return
            self.loaded = True
            self.seed(services)
            self.run_hooks(host, plugin, manifest)
            self.unused_permissions(manifest, services)
        finally:
            host.close()

    def install(self, host: PluginHost, manifest: Manifest, scratch: Path) -> PluginRecord | None:

        try:
            if self.source.is_dir():
                archive = pack_plugin(self.source, scratch / "upload.zip").path
            else:
                archive = self.source
            record = host.install(archive, actor=_ACTOR)
        except (ManifestError, PackageError) as error:
            self.invalid(error)
            return None
        registry = host.registry
        registry.approve(record.id, actor=_ACTOR)
        for permission in manifest.optional_permissions:
            registry.grant(record.id, self.tenant, permission, actor=_ACTOR)
        if self.settings:
            registry.set_settings(record.id, self.tenant, self.settings, actor=_ACTOR)
        try:
            registry.enable(record.id, self.tenant, actor=_ACTOR)
        except RequirementsError as error:
            for problem in error.problems:
                self.error(
                    "requirements",
                    f"{problem.message}: it cannot be checked without the plugins it requires",
                    path=problem.path,
                )
            return None
        values = registry.get_settings(record.id, self.tenant)
        for spec in manifest.settings:
            if spec.required and values.get(spec.name) is None:
                self.note(
                    f"setting {spec.name!r} is required and has no default: its hooks got "
                    "None for it (give settings= to check_plugin)"
                )
        return registry.plugin(record.id)

    def load(self, host: PluginHost, record: PluginRecord) -> object | None:
        host.refresh(force=True)  # the loader records an import's failure (SystemExit too)
        plugin = host.plugins().get(record.id)
        reported = _reported_hooks(host, record)
        if plugin is not None:
            # Its worker for the tenant starts now: a call's time is the plugin's, not a start's.
            with contextlib.suppress(PluginError):
                host.sandbox.start(record.id, self.tenant)
            self.problems += _implementation_problems(
                _implementations(plugin)
                if reported is None
                else _reported_implementations(reported)
            )
            return plugin
        failures = [f for f in host.failures(record.id) if f.hook == "load"]
        if not self.diagnose(reported, failures):
            for failure in reversed(failures):  # oldest first
                self.error(
                    "load",
                    f"{failure.exc_type}: {failure.message}",
                    hook="load",
                    detail=self.frames(failure.traceback),
                )
        return None

    def diagnose(
        self, reported: Sequence[Mapping[str, Any]] | None, failures: Sequence[FailureRecord]
    ) -> bool:
        """Name each hook and argument the host refused; False when that was not the reason.

        The host refuses a plugin at the first implementation that does not fit
        (pluggy stops there). The implementations are judged again, all of them,
        from what the plugin's sandbox worker reported once it had imported it:
        the plugin is never imported here (uploaded code runs in workers only).
        Without a report (its import failed in the worker), the failures say why.
        """
        if reported is None or not failures:
            return False
        found = _implementation_problems(_reported_implementations(reported))
        self.problems += found
        return any(p.severity == "error" for p in found)

    # -- 3. run the hooks --------------------------------------------------------------------------

    def seed(self, services: FakeHostServices) -> None:
        """Give the host services the example records, at the tenant, so API reads find them."""

        self.services = services
        for kind in (Lead, Booking, Invoice, User):
            self.keep(services, at_tenant(example(kind), self.tenant))

    def keep(self, services: FakeHostServices, value: Any) -> None:
        """Store every lead, booking, invoice and user of ``value`` (nested too) at the tenant."""

        adders: dict[type, Callable[..., object]] = {
            Lead: services.add_lead,
            Booking: services.add_booking,
            Invoice: services.add_invoice,
            User: services.add_user,
        }
        if isinstance(value, (tuple, list)):
            for item in value:
                self.keep(services, item)
        elif isinstance(value, Mapping):
            for item in value.values():
                self.keep(services, item)
        elif attrs.has(type(value)):
            add = adders.get(type(value))
            if add is not None and getattr(value, "tenant", None) == self.tenant:
                fields = attrs.asdict(value, recurse=False)
                del fields["tenant"]
                add(self.tenant, **fields)
            for field in attrs.fields(type(value)):
                current = getattr(value, field.name)
                if attrs.has(type(current)) or isinstance(current, tuple):
                    self.keep(services, current)

    def run_hooks(self, host: PluginHost, plugin: object, manifest: Manifest) -> None:

        possible = set(manifest.permissions) | set(manifest.optional_permissions)
        order = {name: index for index, name in enumerate(HOOKS)}
        callers = [c for c in host.pm.get_hookcallers(plugin) or () if c.spec is not None]
        callers.sort(key=lambda c: (order.get(c.name, len(order)), c.name))
        factory = self.strategies()
        for caller in callers:
            info = hook_info(caller.name, host.pm)
            run = self.runs[info.name] = _Run(info)
            run.missing = tuple(p for p in info.permissions if p not in possible)
            if run.missing:
                continue  # the host never calls it
            assert caller.spec is not None
            arguments = self.example_arguments(info, caller.spec, manifest)
            if arguments is None:
                continue
            self.call(host, run, arguments, "the documented example")
            if factory is not None:
                self.generate(host, run, factory, arguments)
        for run in self.runs.values():
            self.hook_problems(run)
        self.manifest_hooks(manifest, [c.name for c in callers])

    def example_arguments(
        self, info: HookInfo, spec: Any, manifest: Manifest
    ) -> dict[str, Any] | None:

        tenant = self.tenant if info.tenant_scoped else None
        wanted = [name for name in spec.argnames if name not in FILLED]
        kinds = parameter_types(spec.function, wanted)
        preset: dict[str, Any] = {}
        for name in kinds:
            if name in _VERSION_ARGUMENTS:
                preset[name] = str(manifest.version)
            elif name == "from_version":
                preset[name] = _EARLIER_VERSION
        rest = {name: kind for name, kind in kinds.items() if name not in preset}
        values, problems = example_values(info.name, rest, tenant)
        if problems:
            listed = "; ".join(str(p) for p in problems)
            self.note(f"{info.name}: not called, its arguments have no example: {listed}")
            return None
        arguments = {**values, **preset}
        if info.tenant_scoped:
            arguments["context"] = Context(tenant=self.tenant)
        elif "context" in spec.argnames:  # pragma: no cover - only host-only built-in hooks
            arguments["context"] = None
        return arguments

    def strategies(self) -> Callable[..., Any] | None:
        """``strategies.hook_arguments``, or None (with a note) when there is none to use."""
        if self.examples == 0:
            return None
        # Looked up on every check, so that a test can put a strategy of its own in its place.
        factory = getattr(strategies, "hook_arguments", None)
        if not callable(factory):
            self.note(
                "services_ai_plugins_testing.strategies has no hook_arguments(): "
                "only the documented examples ran"
            )
            return None
        self.generated = self.examples
        return typing.cast("Callable[..., Any]", factory)

    def generate(
        self,
        host: PluginHost,
        run: _Run,
        factory: Callable[..., Any],
        base: Mapping[str, Any],
    ) -> None:
        """Call the hook with up to ``examples`` argument sets drawn from ``factory``.

        Hypothesis draws them in a ``@given`` function run in place, with the
        database off, a fixed seed (the same plugin gets the same arguments on
        every check) and the generate phase only: nothing is shrunk or replayed,
        and the body never raises, because a plugin's failures are outcomes here.
        """
        info = run.info
        try:
            strategy: SearchStrategy[Any] = factory(info.name, tenant=self.tenant)
        except Exception as error:  # noqa: BLE001 - a strategy we do not own: note it, go on
            self.note(f"{info.name}: no generated arguments: {type(error).__name__}: {error}")
            return
        names = (set(base) | OPTIONAL) - FILLED  # our context keeps the call at the tenant

        def exercise(drawn: Any) -> None:
            try:
                given_arguments = {
                    name: value for name, value in dict(drawn).items() if name in names
                }
                arguments = {**base, **given_arguments}
                if self.services is not None:
                    self.keep(self.services, arguments)
                self.call(host, run, arguments, "generated arguments")
            except Exception as error:  # noqa: BLE001 - never let hypothesis see a failure
                self.note(
                    f"{info.name}: generated arguments could not be used: "
                    f"{type(error).__name__}: {error}"
                )

        try:
            runner: Callable[[], None] = hypothesis_settings(
                max_examples=self.examples,
                database=None,
                derandomize=True,
                deadline=None,
                phases=(Phase.generate,),
                suppress_health_check=list(HealthCheck),
            )(given(strategy)(exercise))
            runner()
        except Exception as error:  # noqa: BLE001 - Unsatisfiable, InvalidArgument, ...: a note
            self.note(f"{info.name}: generating arguments failed: {type(error).__name__}: {error}")

    def call(self, host: PluginHost, run: _Run, arguments: Mapping[str, Any], label: str) -> None:
        self.current = run
        self.denied_in_call = {}
        try:
            trace = host.trace_hook(run.info.name, **copy.deepcopy(dict(arguments)))
        except (TypeError, KeyError, ValueError) as error:  # arguments that do not fit the spec
            self.note(f"{run.info.name}: could not be called with {label}: {error}")
            return
        finally:
            self.current = None
        for key, denial in self.denied_in_call.items():
            refusals, first_refusal = run.denials.get(key, (0, denial))
            run.denials[key] = (refusals + 1, first_refusal)
        for outcome in trace.outcomes:
            run.calls += 1
            run.total += outcome.duration
            duration = outcome.duration
            if duration * 1000 > self.slow_ms and outcome.failure is None:
                duration = self.retime(host, run, arguments, duration)
            run.slowest = max(run.slowest, duration)
            if duration * 1000 > self.slow_ms:
                run.slow += 1
            failure = outcome.failure
            if failure is None:
                continue
            run.failed += 1
            if failure.exc_type == "ResultRefused":
                count, first = run.refused or (0, failure)
                run.refused = (count + 1, first)
            elif failure.exc_type in ("PermissionDenied", "TenantScopeError") and (
                self.denied_in_call
            ):
                continue  # the refusal itself is the problem (on_denied saw it)
            else:
                count, first_failure, first_label = run.crashes.get(
                    failure.exc_type, (0, failure, label)
                )
                run.crashes[failure.exc_type] = (count + 1, first_failure, first_label)

    def retime(
        self, host: PluginHost, run: _Run, arguments: Mapping[str, Any], first: float
    ) -> float:
        """A slow call's time, confirmed by calling it again with the same arguments.

        A single call's time is not the plugin's alone: the first call of a hook
        also builds the SDK's codecs (in the host and the sandbox's worker), and a
        busy machine can stall any one call. So a call over the limit is repeated
        once and the faster of the two counts, as ``timeit`` takes the best of its
        repeats: a hook that is slow every time is reported, a one-time cost is a
        note. The repeat's refusals and failures are not counted again, and a call
        that failed is never repeated (its time is the time it took to fail).
        """
        try:
            trace = host.trace_hook(run.info.name, **copy.deepcopy(dict(arguments)))
        except (TypeError, KeyError, ValueError):  # pragma: no cover - the first call fitted
            return first
        repeats = [o.duration for o in trace.outcomes if o.failure is None]
        if not repeats:
            return first
        again = min(repeats)
        if again * 1000 <= self.slow_ms:
            self.note(
                f"{run.info.name}: one call took {first * 1000:.1f} ms, then "
                f"{again * 1000:.1f} ms when repeated: a one-time cost (an import, a cache "
                "filled, a busy machine), not a slow hook"
            )
        return min(first, again)

    def denied(self, call: DeniedCall) -> None:
        """The host's ``on_denied``: a refused API call, put down to the hook being called."""
        run = self.current
        if run is None:  # a repeat that only retimes a call: its refusals were counted
            return
        self.denied_in_call.setdefault((call.method, call.permission), call)

    # -- 4. report ---------------------------------------------------------------------------------

    def hook_problems(self, run: _Run) -> None:
        hook = run.info.name
        calls = run.calls
        if run.missing:
            listed = ", ".join(repr(p) for p in run.missing)
            self.error(
                "unreceivable-hook",
                f"implemented, but never called: the hook needs {listed}, which the "
                "manifest does not declare; add it to permissions (or drop the hook)",
                hook=hook,
                permission=run.missing[0],
            )
        for exc_type, (count, failure, label) in run.crashes.items():
            frames = self.frames(failure.traceback)
            where = _innermost(frames)
            at = f"at {where}, " if where else ""
            self.error(
                "crash",
                f"{exc_type}: {failure.message} ({at}{_share(count, calls)})",
                hook=hook,
                detail=(*frames, f"first raised with {label}"),
            )
        for (method, permission), (count, call) in run.denials.items():
            if permission is None:
                self.error(
                    "no-tenant",
                    f"called {method}(), which works for a tenant only: {call.reason} "
                    f"({_share(count, calls)})",
                    hook=hook,
                )
                continue
            self.error(
                "permission-denied",
                f"called {method}() without the {permission!r} permission: declare it in the "
                f"manifest's permissions ({_share(count, calls)})",
                hook=hook,
                permission=permission,
            )
        if run.refused is not None:
            count, failure = run.refused
            self.error("refused-result", f"{failure.message} ({_share(count, calls)})", hook=hook)
        if run.slow:
            self.warning(
                "slow-hook",
                f"slowest call took {run.slowest * 1000:.1f} ms, over the limit of "
                f"{self.slow_ms:g} ms ({_share(run.slow, calls)})",
                hook=hook,
            )

    def manifest_hooks(self, manifest: Manifest, implemented: Sequence[str]) -> None:
        if manifest.hooks is None:
            return
        declared = list(manifest.hooks)
        for index, name in enumerate(declared):
            if name not in implemented:
                self.warning(
                    "manifest-hooks",
                    f"the manifest lists {name!r}, which the plugin does not implement",
                    path=f"hooks[{index}]",
                )
        for hook in implemented:
            if hook not in declared:
                self.warning(
                    "manifest-hooks",
                    "implemented, but missing from the manifest's hooks list",
                    hook=hook,
                    path="hooks",
                )

    def unused_permissions(self, manifest: Manifest, services: FakeHostServices) -> None:

        table = PluginAPI.permissions()
        # Calls the API refused count too: the method was called, and needs its permission.
        called = [method for method, _, _ in services.calls]
        called += [method for run in self.runs.values() for method, _ in run.denials]
        used = {table.get(method) for method in called} - {None}
        needed = {p for run in self.runs.values() for p in run.info.permissions}
        for index, permission in enumerate(manifest.permissions):
            if permission not in needed and permission not in used:
                self.warning(
                    "unused-permission",
                    f"{permission!r} is declared, but no hook the plugin implements requires "
                    "it and no API call it made during the check needed it; drop it unless "
                    "code the check did not reach uses it",
                    permission=permission,
                    path=f"permissions[{index}]",
                )

    def frames(self, text: str) -> tuple[str, ...]:
        """A traceback's lines without the SDK's frames, with paths relative to the plugin."""
        folder = self.folder
        if not folder:
            return tuple(text.rstrip().splitlines())
        kept: list[str] = []
        keep = True
        for line in text.rstrip().splitlines():
            if line.startswith('  File "'):
                keep = line[len('  File "') :].startswith(folder)
            elif not line.startswith("    "):
                keep = True  # the header, the exception, "During handling of ..."
            if keep:
                kept.append(line.replace(folder, ""))
        return tuple(kept)


def _share(count: int, calls: int) -> str:
    return f"in {count} of {calls} call{'s' if calls != 1 else ''}"


_FRAME: Final = re.compile(r'^  File "([^"]+)", line (\d+)')


def _innermost(frames: Sequence[str]) -> str | None:
    """``main.py:20``: where the last frame of a traceback is."""
    for line in reversed(frames):
        found = _FRAME.match(line)
        if found:
            return f"{found.group(1)}:{found.group(2)}"
    return None


@attrs.frozen
class _Implementation:
    """One hook implementation of a plugin, as pluggy reads it."""

    #: The hook it implements.
    name: str
    #: Its ``hookimpl`` options (``optionalhook``, ``hookwrapper``, ``wrapper``, ...).
    options: Mapping[str, Any]
    #: The arguments the host passes it.
    argnames: tuple[str, ...]
    #: The arguments with defaults, which the host never passes.
    kwargnames: tuple[str, ...]


#: The options a sandbox worker reports of each implementation.
_REPORTED_OPTIONS: Final = ("tryfirst", "trylast", "optionalhook", "hookwrapper", "wrapper")


def _reported_hooks(host: PluginHost, record: PluginRecord) -> list[dict[str, Any]] | None:
    """What the plugin's sandbox worker reported of its implementations (None: no report).

    The host keeps each report in a file per code hash; a report is there once
    a worker imported the plugin, even when the host then refused its hooks.
    """
    from services_ai_plugins._sandbox._channel import read_hooks  # noqa: PLC0415 - see below

    # The report is read through the sandbox room's helper and the host's private name of
    # the file: the host offers no public way yet (a seam to draw when the sandbox grows a
    # public face for it).
    return read_hooks(host._hooks_file(record))


def _reported_implementations(hooks: Iterable[Mapping[str, Any]]) -> list[_Implementation]:
    """The implementations a sandbox worker reported (its words: it only judges itself)."""
    found = []
    for hook in hooks:
        defaults = hook.get("kwargnames")
        found.append(
            _Implementation(
                name=str(hook["name"]),
                options={option: bool(hook.get(option)) for option in _REPORTED_OPTIONS},
                argnames=tuple(str(name) for name in hook["argnames"]),
                kwargnames=tuple(
                    name
                    for name in (defaults if isinstance(defaults, list) else ())
                    if isinstance(name, str)
                ),
            )
        )
    return sorted(found, key=lambda implementation: implementation.name)


def _implementations(plugin: object) -> list[_Implementation]:
    """The implementations of a plugin the host loaded (in its process, or a sandbox's stand-in)."""

    pm = plugin_manager()
    found = []
    for name in sorted(dir(plugin)):
        try:
            opts = pm.parse_hookimpl_opts(plugin, name)
            if opts is None:
                continue
            impl = pluggy.HookImpl(plugin, "checked", getattr(plugin, name), opts)
        except Exception:  # noqa: BLE001, S112 - an attribute that cannot be read is no hook
            continue
        found.append(
            _Implementation(
                name=opts.get("specname") or name,
                options=dict(opts),
                argnames=tuple(impl.argnames),
                kwargnames=tuple(impl.kwargnames),
            )
        )
    return found


def _implementation_problems(implementations: Iterable[_Implementation]) -> list[CheckProblem]:
    """Every implementation that does not fit the built-in specifications.

    The host's own check, but complete: pluggy stops at the first refusal.
    Errors where the host refuses the plugin; warnings for what it accepts
    but never uses (an ``optionalhook`` nobody specified, an argument with a
    default, which pluggy never passes).
    """

    pm = plugin_manager()
    problems: list[CheckProblem] = []
    for implementation in implementations:
        name, opts = implementation.name, implementation.options
        caller: pluggy.HookCaller | None = getattr(pm.hook, name, None)
        spec = caller.spec if caller is not None else None
        if spec is None:
            specified = [n for n, c in vars(pm.hook).items() if getattr(c, "spec", None)]
            optional = bool(opts.get("optionalhook"))
            problems.append(
                CheckProblem(
                    severity="warning" if optional else "error",
                    kind="unknown-hook",
                    hook=name,
                    message="no such hook is specified"
                    + _did_you_mean(name, specified)
                    + (
                        ": marked optionalhook=True, so it is accepted and never called"
                        if optional
                        else ": the host refuses the plugin"
                    ),
                )
            )
            continue
        if opts.get("hookwrapper") or opts.get("wrapper"):
            problems.append(
                CheckProblem(
                    severity="error",
                    kind="hook-wrapper",
                    hook=name,
                    message="a hook wrapper: plugins may not see or change the other "
                    "plugins' results; drop hookwrapper=/wrapper=",
                )
            )
            continue
        if hook_info(name, pm).host_only:
            problems.append(
                CheckProblem(
                    severity="error",
                    kind="host-only-hook",
                    hook=name,
                    message="only the host's own listeners receive this hook, never plugins",
                )
            )
            continue
        known = (*spec.argnames, *spec.kwargnames)
        argnames, kwargnames = implementation.argnames, implementation.kwargnames
        detail = (
            f"specification: {name}({', '.join(spec.argnames)})",
            f"implementation: {name}({', '.join((*argnames, *kwargnames))})",
        )
        for argument in argnames:
            if argument not in known:
                problems.append(
                    CheckProblem(
                        severity="error",
                        kind="unknown-argument",
                        hook=name,
                        argument=argument,
                        message=f"takes {argument!r}, which the specification does not have"
                        + _did_you_mean(argument, spec.argnames)
                        + ": the host refuses the plugin",
                        detail=detail,
                    )
                )
        for argument in kwargnames:
            problems.append(
                CheckProblem(
                    severity="warning",
                    kind="ignored-argument",
                    hook=name,
                    argument=argument,
                    message=f"{argument!r} has a default, so the host never passes it and it "
                    "always gets the default (only arguments without defaults are passed)",
                    detail=detail,
                )
            )
    return problems


def _did_you_mean(name: str, known: Sequence[str]) -> str:

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
