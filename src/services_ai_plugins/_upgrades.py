"""The switch to an approved new version, made by a host: migrate, or roll back.

The registry stages a new version of a running plugin beside it and records its
approval (:meth:`Registry.install`, :meth:`Registry.approve`); the first host
that refreshes afterwards makes the switch here, while the running version goes
on serving every call from the host's snapshot:

1. :meth:`Registry.prepare_upgrade` reads the plugin at one revision and
   migrates each tenant's settings to the new schema (a refusal rolls back);
2. the new code is found or materialised here and checked against its hash,
   its requirements are checked, and it is loaded beside the running version
   under a name of its own (in its sandbox when it runs sandboxed);
3. its ``plugin_upgraded`` runs once per tenant it runs for, with a time limit;
   the settings it returns are kept for the switch;
4. :meth:`Registry.complete_upgrade` commits the switch in one transaction,
   revision-checked: if another host (or an admin) changed the plugin
   meanwhile, nothing is written and the next refresh looks again. Any
   failure before is rolled back with :meth:`Registry.fail_upgrade`: the
   previous version keeps serving with its settings untouched, and the
   failure is in the plugin's failure log and the audit trail.

The candidate is unloaded in every case; the host's next rebuild loads the new
version as it loads any approved plugin.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, final

from ._context import CURRENT_CONTEXT
from ._dependencies import check_environment
from ._kinds import SourceKind
from ._loading import PluginSet
from ._manifest import Isolation, Manifest
from ._registry import Registry, UpgradePlan, switch_holder
from ._sandbox._pool import Sandbox
from ._sources._loader import check_code, import_plugin, unload_plugin
from ._sources._materialise import version_code
from ._storage._protocol import PluginRecord, PluginStatus
from .errors import (
    ConflictError,
    IntegrityError,
    PluginError,
    RequirementsError,
    SandboxTimeout,
    StorageError,
    UpgradeError,
)
from .events import Context

__all__ = ["Upgrader"]

_logger = logging.getLogger("services_ai_plugins.host")

#: Builds the api a migration receives: (plugin id, tenant, grants, settings).
ApiFactory = Callable[[str, str, frozenset[str], Mapping[str, Any]], object]

#: Appended to a plugin's id to load its new version beside the running one: plugin ids end
#: in a letter or digit, so no plugin's own name (nor its modules' namespace) ends so.
_CANDIDATE: Final = "_upgrade"
#: How long past its sandbox's time limit a sandboxed migration is waited for.
_GRACE: Final = 5.0
#: Seconds a switch claim holds beyond its migrations' time limits (loading the new code).
_MARGIN: Final = 60.0


@final
class Upgrader:
    """Makes the switches a host's refresh finds due (see the module docstring)."""

    def __init__(
        self,
        *,
        registry: Registry,
        loading: PluginSet,
        sandbox: Sandbox,
        make_api: ApiFactory,
        plugins_dir: Path,
        actor: str,
        check_requirements: Callable[[], bool],
    ) -> None:
        self._registry: Final = registry
        self._loading: Final = loading
        self._sandbox: Final = sandbox
        self._make_api: Final = make_api
        self._plugins_dir: Final = plugins_dir
        self._actor: Final = actor
        self._check_requirements: Final = check_requirements
        # One switch at a time in this host; a refresh that finds it busy goes on.
        self._lock: Final = threading.Lock()
        #: This host's name in the claims it makes (Registry.claim_upgrade).
        self.holder: Final = switch_holder()

    def run_due(self, approved: list[PluginRecord]) -> bool:
        """Switch every approved plugin whose staged version is approved; whether any switched.

        Never blocks: when another thread of this host is switching, it returns False.
        """
        due = [
            r.id
            for r in approved
            if r.status is PluginStatus.APPROVED
            and r.staged is not None
            and r.staged.approved_at is not None
        ]
        if not due or not self._lock.acquire(blocking=False):
            return False
        try:
            switched = False
            for plugin_id in due:
                switched = self.upgrade(plugin_id) or switched
            return switched
        finally:
            self._lock.release()

    def upgrade(self, plugin_id: str) -> bool:
        """Make one switch, or roll it back; whether the new version now runs."""
        plan = self._registry.prepare_upgrade(plugin_id)
        if plan is None:
            return False
        if plan.problem is not None:
            return self._fail(plan, plan.problem)
        try:  # one host runs the migrations: the others wait for its switch
            plan = self._registry.claim_upgrade(
                plan, actor=self._actor, holder=self.holder, lease=self._lease(plan)
            )
        except ConflictError:
            return False
        candidate: object = None
        key = plugin_id + _CANDIDATE
        sandboxed = False
        try:
            folder = self._code(plan)
            sandboxed = (
                self._sandbox.policy.isolation_for(
                    plan.staged.source, plan.manifest.isolation, plugin_id
                )
                is Isolation.PROCESS
            )
            candidate = self._load(plan, key, folder, sandboxed)
            changes = self._migrate(plan, candidate, sandboxed)
            self._registry.complete_upgrade(plan, changes, actor=self._actor)
        except UpgradeError as error:
            return self._fail(plan, error)
        except ConflictError:
            _logger.info("plugin %r changed during its upgrade; the next refresh looks again",
                         plugin_id)  # fmt: skip
            return False
        except StorageError:
            _logger.exception("cannot switch plugin %r to its new version", plugin_id)
            return False
        finally:
            if candidate is not None or sandboxed:
                if sandboxed:
                    self._sandbox.unload(key)
                else:
                    unload_plugin(key)
        _logger.info(
            "plugin %r upgraded from %s to %s", plugin_id, plan.from_version, plan.to_version
        )
        return True

    def _lease(self, plan: UpgradePlan) -> timedelta:
        """How long a claim holds: every tenant's migration at its time limit, and a margin."""
        each = max(self._registry.upgrades.migration_timeout, self._sandbox.policy.timeout)
        return timedelta(seconds=each * (len(plan.running) + 1) + _MARGIN)

    def _fail(self, plan: UpgradePlan, error: UpgradeError) -> bool:
        _logger.error("%s", error)
        try:
            self._registry.fail_upgrade(plan, error, actor=self._actor)
        except StorageError:
            _logger.exception("cannot record the failed upgrade of %r", plan.plugin_id)
        return False

    def _code(self, plan: UpgradePlan) -> Path | None:
        """The new version's folder here, verified (None for an entry-point plugin)."""
        staged = plan.staged
        if staged.source is SourceKind.ENTRY_POINT:
            return None
        try:
            folder = version_code(
                plan.plugin_id,
                staged,
                plugins_dir=self._plugins_dir,
                artifacts=self._registry.artifacts,
            )
            check_code(plan.plugin_id, folder, staged.code_hash)
        except IntegrityError as error:
            raise _refusal(plan, "integrity", error) from error
        except PluginError as error:
            raise _refusal(plan, "load", error) from error
        if self._check_requirements():
            unmet = check_environment(plan.manifest)
            if unmet:
                refused = RequirementsError(plan.plugin_id, unmet)
                raise _refusal(plan, "load", refused) from refused
        return folder

    def _load(self, plan: UpgradePlan, key: str, folder: Path | None, sandboxed: bool) -> object:
        """Load the new version beside the running one, under ``key``."""
        manifest: Manifest = plan.manifest
        try:
            if sandboxed:
                module = attribute = None
                if plan.staged.source is SourceKind.ENTRY_POINT:
                    module, attribute = self._loading.entry_point_target(plan.plugin_id)
                return self._sandbox.load(
                    key,
                    manifest,
                    folder=folder,
                    spec_args=self._loading.spec_args,
                    # Its migration's result is the point: sent back, unlike other notices'.
                    ignored=self._loading.notify_hooks() - {"plugin_upgraded"},
                    module=module,
                    attribute=attribute,
                    code_hash=plan.staged.code_hash,
                )
            if folder is None:
                found = self._loading.entry_points.get(plan.plugin_id)
                if found is None:
                    raise PluginError("its entry point is not installed in this environment")
                return found.plugin
            return import_plugin(key, folder, manifest).plugin
        except Exception as error:
            raise _refusal(plan, "load", error) from error

    def _migrate(
        self, plan: UpgradePlan, candidate: object, sandboxed: bool
    ) -> dict[str, Mapping[str, object]]:
        """Run ``plugin_upgraded`` for each tenant it runs for; the settings each returned."""
        impl = self._loading.implementation(candidate, plan.plugin_id, "plugin_upgraded")
        changes: dict[str, Mapping[str, object]] = {}
        if impl is None:
            return changes
        declared = frozenset(plan.manifest.permissions)
        optional = frozenset(plan.manifest.optional_permissions)
        timeout = self._registry.upgrades.migration_timeout
        if sandboxed:  # its sandbox stops it at its own time limit first
            timeout = self._sandbox.policy.timeout + _GRACE
        for tenant in plan.running:
            settings = self._registry.upgrade_settings(plan, tenant)
            held = frozenset(plan.tenants[tenant].optional_grants) & optional
            api = self._make_api(plan.plugin_id, tenant, declared | held, settings)
            context = Context(tenant=tenant)
            values: dict[str, Any] = {
                "plugin_id": plan.plugin_id,
                "from_version": plan.from_version,
                "to_version": plan.to_version,
                "context": context,
                "api": api,
                "settings": settings,
            }
            args = [values.get(name) for name in impl.argnames]
            result = _call(
                impl.function, args, context=context, timeout=timeout, plan=plan, tenant=tenant
            )
            if result is None:
                continue
            if not isinstance(result, Mapping) or not all(isinstance(k, str) for k in result):
                raise UpgradeError(
                    plan.plugin_id,
                    plan.from_version,
                    plan.to_version,
                    "migration",
                    f"plugin_upgraded returned {type(result).__name__}, "
                    "not None or a mapping of settings",
                    tenant=tenant,
                )
            changes[tenant] = dict(result)
        return changes


def _call(
    function: Callable[..., object],
    args: list[object],
    *,
    context: Context,
    timeout: float,
    plan: UpgradePlan,
    tenant: str,
) -> object:
    """Call one migration; a sandboxed one is timed by its sandbox, an in-process one here.

    An in-process migration that outlives ``timeout`` cannot be stopped: it is
    left to finish in its thread, and the upgrade is rolled back.
    """
    outcome: dict[str, object] = {}

    def run() -> None:
        token = CURRENT_CONTEXT.set(context)
        try:
            outcome["result"] = function(*args)
        except BaseException as exc:  # noqa: BLE001 - the plugin's failure, reported below
            outcome["error"] = exc
        finally:
            CURRENT_CONTEXT.reset(token)

    worker = threading.Thread(
        target=run, name=f"plugin_upgraded {plan.plugin_id} {tenant}", daemon=True
    )
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise UpgradeError(
            plan.plugin_id,
            plan.from_version,
            plan.to_version,
            "timeout",
            f"plugin_upgraded did not return within {timeout:g} s",
            tenant=tenant,
        )
    error = outcome.get("error")
    if error is not None:
        assert isinstance(error, BaseException)
        step = "timeout" if isinstance(error, SandboxTimeout) else "migration"
        raise _refusal(plan, step, error, tenant=tenant) from error
    return outcome.get("result")


def _refusal(
    plan: UpgradePlan, step: str, error: BaseException, *, tenant: str | None = None
) -> UpgradeError:
    """The :class:`UpgradeError` of ``step`` failing with ``error`` (its cause)."""
    refusal = UpgradeError(
        plan.plugin_id,
        plan.from_version,
        plan.to_version,
        step,
        f"{type(error).__name__}: {error}",
        tenant=tenant,
    )
    refusal.__cause__ = error
    return refusal
