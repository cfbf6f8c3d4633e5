"""Loading: which plugins are loaded, the snapshot the call loop reads, its views and plans.

:class:`PluginSet` loads the approved and verified plugins of one host
(in-process, or as :class:`SandboxedPlugin` stand-ins), keeps them registered
with pluggy in load order, and takes a :class:`Snapshot` of them whenever the
storage's change counter moves. The call loop (:class:`HostHook`,
:class:`RouteGuard`) reads it through the public members named by
:class:`~._dispatch.Planner`: :attr:`PluginSet.due`, :meth:`PluginSet.tick`,
:attr:`PluginSet.snapshot`, :meth:`PluginSet.plan`, :meth:`PluginSet.injected` and
:meth:`PluginSet.timeout`. A plan is what runs for one (hook, tenant), prepared
from the tenant's view (:meth:`Registry.tenant_view`: who runs there, with
which grants and settings, and each plugin's own ``api``); views are kept per
snapshot in a bounded least-recently-used cache.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import types
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any, Final, NamedTuple, final

import attrs
import pluggy

from ._api import ApiMeter, DeniedHook, HostServices, PluginAPI
from ._dependencies import check_environment, check_plugins, load_order
from ._dispatch import INJECTED, Dispatcher, Entry, Plan, entry, run_to_completion
from ._manifest import Isolation, Manifest
from ._registry import Registry
from ._sandbox._pool import Sandbox
from ._sandbox._stand_in import SandboxedPlugin
from ._sources._discovery import DiscoveredPlugin
from ._sources._loader import load_failure, load_plugin, unload_plugin, verify_plugin
from ._sources._materialise import version_code
from ._storage._protocol import PluginRecord, PluginStatus, SourceKind, Storage
from ._telemetry import Telemetry
from ._version import __version__
from .errors import PackageError, PluginError, Problem, RequirementsError, StorageError
from .hookspecs import HookInfo, HookKind

__all__ = ["Loaded", "PluginSet", "Snapshot", "TenantPlugins"]

#: Why an async generator implementation is refused at load (a hook returns one result).
ASYNC_GENERATOR_REFUSAL: Final = (
    "async generator implementations are not supported: a hook returns one result; "
    "make it an async def that returns it (or a plain def)"
)

#: Where the host keeps what sandbox workers reported of their plugins (inside plugins_dir).
HOOKS_FOLDER: Final = ".sandbox-hooks"

#: The most tenant views a snapshot keeps, least recently used dropped first: a host serving
#: this many tenants in turn reads each tenant's activations once per snapshot.
MAX_VIEWS: Final = 16_384

_logger = logging.getLogger("services_ai_plugins.host")


class Loaded(NamedTuple):
    """One loaded plugin: its record as loaded, and the object registered with pluggy."""

    record: PluginRecord
    plugin: object


class TenantPlugins(NamedTuple):
    """What one tenant's calls need: who runs there, with which grants, settings and API."""

    active: frozenset[str]
    grants: Mapping[str, frozenset[str]]
    #: Per active plugin, the values injected into its implementations (api, settings, id).
    values: Mapping[str, Mapping[str, Any]]


class Snapshot:
    """The loaded plugins at one generation, with the tenants' views built from it on demand."""

    __slots__ = ("generation", "plugins", "views")

    def __init__(self, generation: int, plugins: Mapping[str, Loaded]) -> None:
        #: The storage's change counter it was taken at.
        self.generation = generation
        self.plugins = plugins
        self.views: OrderedDict[str | None, TenantPlugins] = OrderedDict()


@final
class PluginSet:
    """The plugins one host loaded, and the snapshot, views and plans its call loop reads.

    Built by :class:`PluginHost`, which owns the housekeeping (``on_tick``,
    called through :meth:`tick` once :attr:`due` passed) and sets :attr:`due`.
    Every member the call loop uses is public; the rest of the host uses the
    loading methods (:meth:`rebuild`, :meth:`unload`, :meth:`take_out`, ...).
    """

    def __init__(
        self,
        *,
        storage: Storage,
        registry: Registry,
        pm: pluggy.PluginManager,
        sandbox: Sandbox,
        dispatcher: Dispatcher,
        services: HostServices,
        api_class: type[PluginAPI],
        on_denied: DeniedHook | None,
        meter: ApiMeter,
        actor: str,
        plugins_dir: Path,
        listeners: Mapping[str, object],
        info: Callable[[str], HookInfo],
        on_tick: Callable[[], None],
        on_snapshot: Callable[[], None] | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._storage: Final = storage
        self._registry: Final = registry
        self._pm: Final = pm
        self._sandbox: Final = sandbox
        self._dispatcher: Final = dispatcher
        self._services: Final = services
        self._api_class: Final = api_class
        self._on_denied: Final = on_denied
        self._meter: Final = meter
        self._actor: Final = actor
        self._plugins_dir: Final = plugins_dir
        self._listeners: Final = listeners
        self._info: Final = info
        self._on_tick: Final = on_tick
        # Told after rebuild() took a new snapshot (the host's change listeners).
        self._on_snapshot: Final = on_snapshot
        # Wraps the plugins' implementations in the plans when metrics by tenant or
        # OpenTelemetry are on (None, or both off: the plans hold the implementations).
        self._telemetry: Final = telemetry
        #: When the next call must call :meth:`tick` (``perf_counter_ns``); the host sets it.
        self.due = 0
        #: The snapshot the call loop reads; a new object whenever plans must be rebuilt.
        self.snapshot = Snapshot(-1, {})
        #: Held while the loaded plugins change (:meth:`rebuild` needs the caller to hold it).
        self.lock: Final = threading.RLock()
        #: Whether loads refuse unmet requires_api, requires_python and dependencies
        #: (always, except in check_plugin's own host, which reports them itself).
        self.check_requirements = True
        #: The entry-point (and installed-object) plugins known here, by id.
        self.entry_points: MutableMapping[str, DiscoveredPlugin] = {}
        self._loaded: dict[str, Loaded] = {}
        # Uninstalled plugins taken out by a refresh, kept until their plugin_uninstalled
        # ran (or the next rebuild): by id, with the generation they were taken out at.
        self._departing: dict[str, tuple[Loaded, int]] = {}
        # Plugins whose load failed, with what it failed at (see _load_key): not tried again
        # until that changes (a new install or approval, or a plugin it requires).
        self._failed_loads: dict[str, tuple[int, tuple[tuple[str, int | None], ...]]] = {}

    def rebuild(self, *, force: bool = False) -> Mapping[str, PluginRecord] | None:
        """Take a new snapshot if the storage changed since the last (or if ``force``).

        Loads newly approved plugins (verifying their code first), unloads those
        no longer approved or whose code changed, and keeps an uninstalled one
        out of the calls for its ``plugin_uninstalled``. Returns every approved
        plugin's record, or None when nothing changed. The caller holds
        :attr:`lock`.
        """
        generation = self._storage.generation()
        if not force and generation == self.snapshot.generation:
            return None
        approved = {r.id: r for r in self._storage.list_plugins(PluginStatus.APPROVED)}
        changed = False
        self.release_departed(generation)
        for plugin_id, loaded in list(self._loaded.items()):
            record = approved.get(plugin_id)
            if record is None and self._depart(plugin_id, generation):
                changed = True
            elif record is None or _code_changed(loaded.record, record):
                self.unload(plugin_id)
                changed = True
            elif record != loaded.record:
                self._loaded[plugin_id] = loaded._replace(record=record)
        for plugin_id in self._in_load_order(approved):
            if plugin_id not in self._loaded and self._load(approved[plugin_id], approved):
                changed = True
        if changed:
            self._reregister()
        self.snapshot = Snapshot(generation, dict(self._loaded))
        if self._on_snapshot is not None:
            self._on_snapshot()
        return approved

    def tick(self) -> None:
        """The host's housekeeping, on the call path (:attr:`due` passed)."""
        self._on_tick()

    def get(self, plugin_id: str) -> Loaded | None:
        """The plugin loaded under ``plugin_id`` (taken in the calls), if any."""
        return self._loaded.get(plugin_id)

    def loaded(self) -> dict[str, Loaded]:
        """The loaded plugins, by id (a copy)."""
        return dict(self._loaded)

    def invalidate(self) -> None:
        """Take a new snapshot of the same plugins: every plan is built again (a listener came)."""
        with self.lock:
            self.snapshot = Snapshot(self.snapshot.generation, dict(self._loaded))

    def _view(self, snapshot: Snapshot, tenant: str | None) -> TenantPlugins:
        views = snapshot.views
        view = views.get(tenant)
        if view is not None:
            with contextlib.suppress(KeyError):  # another thread evicted it meanwhile
                views.move_to_end(tenant)
            return view
        plugins = snapshot.plugins
        seen = self._registry.tenant_view(tenant, [loaded.record for loaded in plugins.values()])
        grants, settings = seen.grants, seen.settings
        active = seen.active
        values = {
            pid: {
                "api": self._api_class(
                    pid,
                    self._services,
                    tenant=tenant,
                    grants=grants[pid],
                    on_denied=self._on_denied,
                    settings=settings[pid] if tenant is not None else None,
                    meter=self._meter,
                ),
                "settings": settings[pid],
                "plugin_id": pid,
            }
            for pid in active
        }
        view = views[tenant] = TenantPlugins(active, grants, values)
        if len(views) > MAX_VIEWS:
            with contextlib.suppress(KeyError):  # another thread dropped one meanwhile
                views.popitem(last=False)
        return view

    def plan(
        self, snapshot: Snapshot, info: HookInfo, tenant: str | None, provided: frozenset[str]
    ) -> Plan:
        """Which implementations run for (hook, tenant), in pluggy's call order, prepared."""
        caller: pluggy.HookCaller = getattr(self._pm.hook, info.name)
        implementations = list(reversed(caller.get_hookimpls()))
        entries: list[Entry] = []
        if info.host_only:
            for impl in implementations:
                if impl.plugin_name in self._listeners:
                    entries.append(
                        entry(
                            impl.plugin_name,
                            impl.function,
                            impl.argnames,
                            {},
                            self._dispatcher.stats(impl.plugin_name, info.name),
                        )
                    )
        else:
            view = self._view(snapshot, tenant)
            for impl in implementations:
                plugin_id = impl.plugin_name
                if plugin_id not in view.active:
                    continue
                held = view.grants[plugin_id]
                if any(permission not in held for permission in info.permissions):
                    continue
                own = view.values[plugin_id]
                inject: dict[str, Any] = {
                    name: own[name]
                    for name in INJECTED
                    if name in impl.argnames and name not in provided
                }
                function = impl.function
                if inspect.iscoroutinefunction(function):  # awaited on the async path
                    function = run_to_completion(function)
                timeout = self.timeout(plugin_id)
                if self._telemetry is not None:
                    function = self._telemetry.wrap(
                        plugin_id, info.name, tenant, function, sandboxed=timeout is not None
                    )
                entries.append(
                    entry(
                        plugin_id,
                        function,
                        impl.argnames,
                        inject,
                        self._dispatcher.timed(plugin_id, info.name, timeout),
                    )
                )
        return Plan(info, tenant, tuple(entries))

    def timeout(self, plugin_id: str) -> float | None:
        """The time limit of the plugin's calls: its sandbox's, or None in the host's process."""
        loaded = self._loaded.get(plugin_id)
        if loaded is not None and isinstance(loaded.plugin, SandboxedPlugin):
            return self._sandbox.policy.timeout
        return None

    def injected(self, plugin_id: str, tenant: str, permission: str) -> Mapping[str, Any] | None:
        """The plugin's injected values for the tenant, if a route of it may answer there now.

        The plugin must run for the tenant (approved, enabled there, not suspended
        there or everywhere) and hold ``permission`` there; else None. A
        :class:`RouteGuard` asks, per request: no query, the snapshot's view.
        """
        view = self._view(self.snapshot, tenant)
        if plugin_id in view.active and permission in view.grants[plugin_id]:
            return view.values[plugin_id]
        return None

    def active(self, tenant: str) -> frozenset[str]:
        """The plugins that run for the tenant now: approved, loaded, enabled there, not
        suspended there or everywhere (from the snapshot's view: no query once it is built)."""
        return self._view(self.snapshot, tenant).active

    def _load_key(
        self, record: PluginRecord, approved: Mapping[str, PluginRecord]
    ) -> tuple[int, tuple[tuple[str, int | None], ...]]:
        """What a load depends on: its revision, and the revisions of the plugins it requires."""
        manifest = self.manifest(record)
        required = sorted(manifest.requires_plugins) if manifest is not None else []
        return record.revision, tuple(
            (other, approved[other].revision if other in approved else None) for other in required
        )

    def _load(self, record: PluginRecord, approved: Mapping[str, PluginRecord]) -> bool:
        """Import one approved plugin and check its hooks; False (recorded) when it cannot run.

        ``approved`` is every approved plugin: the plugins it requires must be among
        them, in versions it accepts.
        """
        key = self._load_key(record, approved)
        if self._failed_loads.get(record.id) == key:
            return False  # failed so already: wait for a new install or approval, or its needs
        manifest = self.manifest(record)
        # Checked at install, and again here: this machine may not be the one that installed it.
        unmet = (
            [*check_environment(manifest), *self._unmet_plugins(record.id, manifest, approved)]
            if manifest is not None and self.check_requirements
            else []
        )
        if unmet:
            self._failed_loads[record.id] = key
            refused = RequirementsError(record.id, unmet)
            self.record_load_failure(record.id, refused)
            _logger.error("plugin %r not loaded: %s", record.id, refused)
            return False
        sandboxed = (
            self._sandbox.policy.isolation_for(
                record.source, manifest.isolation if manifest is not None else None, record.id
            )
            is Isolation.PROCESS
        )
        plugin: object = None
        folder: Path | None = None
        local = self._local(record, key)
        if local is None:
            return False
        try:
            if record.source is not SourceKind.ENTRY_POINT:
                # Verifies the code hash first; records its own failures (and
                # suspends a plugin whose code changed).
                if sandboxed:
                    folder = verify_plugin(local, registry=self._registry, actor=self._actor)
                else:
                    plugin = load_plugin(local, registry=self._registry, actor=self._actor).plugin
        except PluginError as error:
            self._failed_loads[record.id] = key
            _logger.error("plugin %r not loaded: %s", record.id, error)
            return False
        try:
            if sandboxed:
                if manifest is None:
                    raise PackageError("its manifest cannot be read", path=record.id)
                module = attribute = None
                if record.source is SourceKind.ENTRY_POINT:
                    module, attribute = self.entry_point_target(record.id)
                plugin = self._sandbox.load(
                    record.id,
                    manifest,
                    folder=folder,
                    spec_args=self.spec_args,
                    ignored=self.notify_hooks(),
                    module=module,
                    attribute=attribute,
                    hooks_file=self.hooks_file(record),
                    code_hash=record.code_hash,
                )
            elif record.source is SourceKind.ENTRY_POINT:
                found = self.entry_points.get(record.id)
                if found is None:
                    raise PackageError(
                        "its entry point is not installed in this environment", path=record.id
                    )
                plugin = found.plugin
                if isinstance(plugin, type):  # an entry point naming a class: one instance
                    plugin = _instantiate(record.id, plugin)
            self._check_implementations(record, plugin)
        except Exception as exc:  # noqa: BLE001 - whatever one plugin does fails its own load only
            refusal = (
                exc
                if isinstance(exc, PluginError)
                else PackageError(
                    f"it cannot be loaded: {type(exc).__name__}: {exc}", path=record.id
                )
            )
            self._failed_loads[record.id] = key
            if sandboxed:
                self._sandbox.unload(record.id)
            elif record.source is not SourceKind.ENTRY_POINT:
                unload_plugin(record.id)
            self.record_load_failure(record.id, refusal)
            _logger.error("plugin %r not loaded: %s", record.id, refusal)
            return False
        self._loaded[record.id] = Loaded(record, plugin)
        return True

    def _local(
        self, record: PluginRecord, key: tuple[int, tuple[tuple[str, int | None], ...]]
    ) -> PluginRecord | None:
        """The record with the folder where this host finds its code (see :func:`local_code`),
        materialised from its archive if need be; None (recorded) when it cannot be had.

        A missing or corrupt archive is this host's failure, not the plugin's: it stays
        approved (its code may run elsewhere). Only the load uses the returned record: the
        loaded record stays the registry's, so a refresh compares like with like.
        """
        if record.source is SourceKind.ENTRY_POINT:
            return record
        try:
            folder = version_code(
                record.id, record, plugins_dir=self._plugins_dir, artifacts=self._registry.artifacts
            )
        except PluginError as error:
            self._failed_loads[record.id] = key
            self.record_load_failure(record.id, error)
            _logger.error("plugin %r not loaded: %s", record.id, error)
            return None
        if record.package_path == str(folder):
            return record
        return attrs.evolve(record, package_path=str(folder))

    def _unmet_plugins(
        self, plugin_id: str, manifest: Manifest, approved: Mapping[str, PluginRecord]
    ) -> list[Problem]:
        """The plugins ``manifest`` requires that are not approved here, in a version it accepts."""
        if not manifest.requires_plugins:
            return []
        manifests = {plugin_id: manifest}
        for other in approved.values():
            found = self.manifest(other)
            if found is not None:
                manifests.setdefault(other.id, found)
        statuses = dict.fromkeys(manifests, PluginStatus.APPROVED)
        return check_plugins(manifests, statuses).get(plugin_id, [])

    def hooks_file(self, record: PluginRecord) -> Path:
        """Where the host keeps what a worker reported of this version's implementations."""
        name = f"{record.id}-{record.code_hash[:32]}-{__version__}.json"
        return self._plugins_dir / HOOKS_FOLDER / name

    def entry_point_target(self, plugin_id: str) -> tuple[str, str | None]:
        """The module (and attribute) a worker imports for an entry-point plugin."""
        found = self.entry_points.get(plugin_id)
        if found is None:
            raise PackageError(
                "its entry point is not installed in this environment", path=plugin_id
            )
        plugin = found.plugin
        if isinstance(plugin, types.ModuleType):
            return plugin.__name__, None
        module = getattr(plugin, "__module__", None)
        qualname = getattr(plugin, "__qualname__", None)
        if not module or not qualname or "<" in qualname:
            raise PackageError(
                "it cannot run in a sandbox: its entry point is not an importable module or class",
                path=plugin_id,
            )
        return module, qualname

    def notify_hooks(self) -> frozenset[str]:
        """The specified hooks whose results are ignored (their sandboxed results are not sent)."""
        return frozenset(
            name
            for name, caller in vars(self._pm.hook).items()
            if isinstance(caller, pluggy.HookCaller)
            and caller.spec is not None
            and self._info(name).kind is HookKind.NOTIFY
        )

    def spec_args(self, name: str) -> tuple[str, ...] | None:
        caller = getattr(self._pm.hook, name, None)
        spec = getattr(caller, "spec", None)
        return tuple(spec.argnames) if spec is not None else None

    def _check_implementations(self, record: PluginRecord, plugin: object) -> None:
        """Register with pluggy to check the implementations at the door, then take it out again.

        Refused: arguments a specification does not have (pluggy's check), hooks
        nobody specified, wrappers (a plugin would see and change the others'
        results), and host-only hooks.
        """
        try:
            self._pm.register(plugin, name=record.id)
        except (pluggy.PluginValidationError, ValueError) as error:
            raise PackageError(f"its hooks are refused: {error}", path=record.id) from None
        try:
            problems: list[str] = []
            for caller in self._pm.get_hookcallers(plugin) or ():
                impl = next(i for i in caller.get_hookimpls() if i.plugin is plugin)
                if caller.spec is None:
                    if not impl.optionalhook:
                        problems.append(f"{caller.name}: no such hook is specified")
                elif impl.hookwrapper or impl.wrapper:
                    problems.append(f"{caller.name}: plugins may not wrap other plugins' calls")
                elif self._info(caller.name).host_only:
                    problems.append(f"{caller.name}: only the host receives this hook")
                elif inspect.isasyncgenfunction(impl.function):
                    problems.append(f"{caller.name}: {ASYNC_GENERATOR_REFUSAL}")
            if problems:
                raise PackageError("its hooks are refused: " + "; ".join(problems), path=record.id)
            self._warn_ungranted(record, plugin)
        finally:
            self._pm.unregister(name=record.id)

    def _warn_ungranted(self, record: PluginRecord, plugin: object) -> None:
        """Log the hooks a plugin implements but may never receive (a permission it cannot hold)."""
        manifest = self.manifest(record)
        if manifest is None:
            return
        possible = set(manifest.permissions) | set(manifest.optional_permissions)
        for caller in self._pm.get_hookcallers(plugin) or ():
            missing = [p for p in self._info(caller.name).permissions if p not in possible]
            if missing:
                _logger.warning(
                    "plugin %r implements %s but can never receive it: it needs %s, "
                    "which its manifest does not ask for",
                    record.id,
                    caller.name,
                    ", ".join(missing),
                )

    def manifest(self, record: PluginRecord) -> Manifest | None:
        """The record's manifest, from the registry's cache (parsed once per revision)."""
        try:
            return self._registry.manifest_of(record)
        except PluginError:
            return None

    def record_load_failure(self, plugin_id: str, error: PluginError) -> None:
        try:
            self._storage.record_failures([load_failure(plugin_id, error)])
        except StorageError:
            _logger.exception("cannot record the load failure of plugin %r", plugin_id)

    def unload(self, plugin_id: str) -> None:
        loaded = self._loaded.pop(plugin_id, None)
        if loaded is not None and self._pm.get_plugin(plugin_id) is not None:
            self._pm.unregister(name=plugin_id)
        if isinstance(loaded and loaded.plugin, SandboxedPlugin):
            self._sandbox.unload(plugin_id)
        elif loaded is not None and loaded.record.source is not SourceKind.ENTRY_POINT:
            unload_plugin(plugin_id)

    def _reregister(self) -> None:
        """Register every loaded plugin again: call order follows load order, never history.

        pluggy calls the implementations registered last first, so the plugins are
        registered in reverse load order: a plugin's implementation runs after those
        of the plugins it requires (``tryfirst`` and ``trylast`` still come first
        and last).
        """
        for plugin_id in list(self._loaded):
            if self._pm.get_plugin(plugin_id) is not None:
                self._pm.unregister(name=plugin_id)
        order = self._in_load_order({p: x.record for p, x in self._loaded.items()})
        for plugin_id in reversed(order):
            self._pm.register(self._loaded[plugin_id].plugin, name=plugin_id)

    def _in_load_order(self, records: Mapping[str, PluginRecord]) -> list[str]:
        """Ids with each plugin after those it requires (else by id); a cycle falls back to ids."""
        manifests: dict[str, Manifest] = {}
        for plugin_id, record in records.items():
            manifest = self.manifest(record)
            if manifest is not None:
                manifests[plugin_id] = manifest
        try:
            ordered = load_order(manifests)
        except PluginError:
            ordered = sorted(manifests)
        return ordered + sorted(set(records) - set(ordered))

    def awaits_load(self, plugin_id: str) -> bool:
        """Approved, but not loaded yet: the next refresh loads it (or records why it cannot)."""
        if plugin_id in self._loaded:
            return False
        record = self._storage.get_plugin(plugin_id)
        failed = self._failed_loads.get(plugin_id)
        return (
            record is not None
            and record.status is PluginStatus.APPROVED
            and (failed is None or failed[0] != record.revision)
        )

    def take_out(self, plugin_id: str) -> Loaded | None:
        """Take an uninstalled plugin out of every call, kept loaded for its last hook."""
        with self.lock:
            loaded = self._loaded.pop(plugin_id, None)
            if loaded is not None:
                if self._pm.get_plugin(plugin_id) is not None:
                    self._pm.unregister(name=plugin_id)
                self.snapshot = Snapshot(self.snapshot.generation, dict(self._loaded))
                return loaded
            # A refresh in another thread came first: it kept the plugin for this.
            departed = self._departing.pop(plugin_id, None)
            return departed[0] if departed is not None else None

    def implementation(self, plugin: object, plugin_id: str, hook: str) -> pluggy.HookImpl | None:
        """The plugin object's implementation of ``hook``, if it has one (registered or not)."""
        for attribute in dir(plugin):
            options = self._pm.parse_hookimpl_opts(plugin, attribute)
            if options is not None and (options.get("specname") or attribute) == hook:
                return pluggy.HookImpl(plugin, plugin_id, getattr(plugin, attribute), options)
        return None

    def _depart(self, plugin_id: str, generation: int) -> bool:
        """Take an uninstalled plugin out of the calls but keep it, for its ``plugin_uninstalled``.

        A refresh may see the uninstall before the registry tells this host of
        it; the plugin then waits here until the hook ran, or until the next
        rebuild when the uninstall was another process's. False (nothing
        done) when the plugin is not uninstalled.
        """
        stored = self._storage.get_plugin(plugin_id)
        if stored is None or stored.status is not PluginStatus.UNINSTALLED:
            return False
        loaded = self._loaded.pop(plugin_id)
        if self._pm.get_plugin(plugin_id) is not None:
            self._pm.unregister(name=plugin_id)
        self._departing[plugin_id] = (loaded, generation)
        return True

    def release_departed(self, generation: int | None) -> None:
        """Unload the departed plugins kept since before ``generation`` (None: all of them,
        with those still waiting for their ``plugin_uninstalled``: the host closes)."""
        for plugin_id, (loaded, since) in list(self._departing.items()):
            if generation is None or since < generation:
                del self._departing[plugin_id]
                self.release(plugin_id, loaded)

    def release(self, plugin_id: str, loaded: Loaded) -> None:
        """Unload a plugin already taken out of the calls (its workers, its modules)."""
        with self.lock:
            if plugin_id in self._loaded:
                return  # installed and loaded again meanwhile: that code is in use
            if isinstance(loaded.plugin, SandboxedPlugin):
                self._sandbox.unload(plugin_id)
            elif loaded.record.source is not SourceKind.ENTRY_POINT:
                unload_plugin(plugin_id)


def _code_changed(old: PluginRecord, new: PluginRecord) -> bool:
    return (old.code_hash, old.version, old.package_path) != (
        new.code_hash,
        new.version,
        new.package_path,
    )


def _instantiate(plugin_id: str, plugin_class: type) -> object:
    try:
        return plugin_class()
    except Exception as exc:  # the plugin's own code failed
        raise PackageError(
            f"cannot create its plugin object: {type(exc).__name__}: {exc}", path=plugin_id
        ) from exc
