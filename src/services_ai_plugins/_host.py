"""PluginHost: the one object a host adapter holds.

It wires storage, registry, sources, hook specifications, the permission
layer and the call loop together, and does the housekeeping of every call
path (its *tick*): it refreshes the loaded plugins when the storage's change
counter moves (so a decision taken in another process applies here without a
restart), applies the circuit breaker's suspensions, flushes failures and
metrics, and fires the lifecycle hooks. Loading itself (the snapshot, views
and plans) is :class:`~._loading.PluginSet`'s. Hooks are called as
``host.hook.<name>(...)`` or ``host.call_hook("<name>", ...)``.
"""

from __future__ import annotations

import logging
import os
import threading
import types
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from time import perf_counter_ns
from typing import Any, Final, Generic, TypeVar, cast, final

import attrs
import pluggy

from ._access import AccessLog, AccessPolicy
from ._api import ApiLimits, ApiMeter, DeniedHook, HostServices, PluginAPI
from ._changes import ChangeListener, ChangeListeners
from ._config import HostConfig
from ._context import DeferMode, RequestScope, current_request_context
from ._deferred import DRAIN_TIMEOUT, DeferredExecutor, Deferrer
from ._dependencies import require_environment
from ._dispatch import (
    INJECTED,
    ROUTES_HOOK,
    AsyncHostHook,
    BreakerPolicy,
    Dispatcher,
    HookTrace,
    HostHook,
    PluginOutcome,
    native_values,
)
from ._egress import NetworkPolicy, is_default
from ._host_events import HostEvent
from ._loading import Loaded, PluginSet
from ._manifest import Manifest
from ._registry import FAILING, Registry, RegistryEvent, Suspension
from ._routing import PluginRoute, RouteMatch, RouteTable, compile_routes, guard_of
from ._sandbox._policy import SandboxPolicy
from ._sandbox._pool import Sandbox
from ._sandbox._stand_in import SandboxedPlugin
from ._secrets import SecretBox, SecretKeys
from ._sources._archive import ArchiveSource, install_archive
from ._sources._discovery import (
    DiscoveredPlugin,
    discover_entry_points,
    manifest_document,
    module_of,
    register_discovered,
)
from ._sources._loader import (
    IntegrityError,
)
from ._storage._protocol import (
    MAX_EXC_TYPE,
    AccessRecord,
    AccessStorage,
    ArtifactStore,
    AuditEvent,
    AuditQuery,
    ChangeFeed,
    FailureRecord,
    HookMetrics,
    PluginRecord,
    PluginStatus,
    SourceKind,
    Storage,
    bounded,
    storable,
)
from ._telemetry import LiveHookMetrics, LiveMetrics, MetricsPolicy, Telemetry
from ._upgrades import Upgrader
from ._versions import UpgradePolicy
from .errors import (
    ConflictError,
    PackageError,
    PluginError,
    PluginNotFound,
    SandboxTimeout,
    StorageError,
    TransitionError,
    WorkerBusy,
    WorkerCrashed,
)
from .events import ApiRequest, ApiResponse, Context
from .hookspecs import HookInfo, hook_info, plugin_manager

__all__ = ["PluginHealth", "PluginHost"]


#: Seconds after which a route table built while a plugin's ``register_routes`` failed for a
#: passing reason (:data:`_PASSING_FAILURES`) is built again.
ROUTES_RETRY: float = 5.0
#: Failures of a sandboxed plugin's ``register_routes`` that a later call may not repeat.
_PASSING_FAILURES: Final = frozenset({"SandboxTimeout", "WorkerCrashed", "SandboxError"})

#: The actor of the breaker's suspensions in the audit trail.
BREAKER_ACTOR: Final = "circuit-breaker"

#: The registry steps whose lifecycle hooks the host fires (see PluginHost._registry_event).
#: The most failure notices one refresh reads.
_NOTICES_READ: Final = 1000
_LIFECYCLE: Final = frozenset({"approve", "enable", "disable", "set settings", "uninstall"})

_logger = logging.getLogger("services_ai_plugins.host")
_NO_SETTINGS: Final[Mapping[str, Any]] = types.MappingProxyType({})


@attrs.frozen(kw_only=True)
class PluginHealth:
    """One plugin's row on an error dashboard (:meth:`PluginHost.dashboard`)."""

    plugin: PluginRecord
    #: Its newest unresolved failures, newest first.
    failures: tuple[FailureRecord, ...]
    #: How many unresolved failures it has, counted up to 1000 (``failures`` may show fewer).
    unresolved: int
    #: Its counters per hook, all processes together.
    metrics: tuple[HookMetrics, ...]
    #: Where and why it is suspended (empty: it runs wherever it is enabled).
    suspensions: tuple[Suspension, ...]

    @property
    def calls(self) -> int:
        """Calls of all its hooks."""
        return sum(m.calls for m in self.metrics)

    @property
    def errors(self) -> int:
        """Failed calls of all its hooks."""
        return sum(m.errors for m in self.metrics)

    @property
    def error_rate(self) -> float:
        """Failed calls per call (0.0 before the first call)."""
        return self.errors / self.calls if self.calls else 0.0


@final
class PluginHost:
    """Loads approved plugins and runs their hooks, safely, for many tenants.

    ::

        host = PluginHost(services=MyServices())  # defaults: HostConfig.from_env()
        host.hook.lead_created(lead=lead, context=Context(tenant="acme"))
        widgets = host.call_hook("dashboard_widget", context=Context(tenant="acme"))

    Only plugins enabled for ``context.tenant`` run (hooks without a tenant run
    for every approved plugin); each implementation gets its own plugin's
    ``api`` and ``settings``. An exception in one implementation is recorded
    as that plugin's failure (and logged on ``services_ai_plugins.plugins.<id>``)
    and the others still run; with ``strict=True`` it is raised once recorded.
    Each call is timed into per-(plugin, hook) metrics, flushed to storage in
    batches. A plugin that keeps failing is suspended by the circuit breaker
    (:class:`BreakerPolicy`) for the tenant, or everywhere, and the host's own
    ``plugin_suspended`` listeners hear of it.

    :param services: the adapter's :class:`HostServices` (its data and channels).
    :param storage: where the registry lives; default: ``config.db`` (a SQLite
        file, or a PostgreSQL URL), opened by the host and closed with it.
    :param plugins_dir: where installed plugin code lives; default ``config.plugins_dir``.
    :param config: the defaults of ``storage`` and ``plugins_dir``, absolute paths
        (default :meth:`HostConfig.from_env`: ``$SERVICES_AI_PLUGINS_DB`` and
        ``$SERVICES_AI_PLUGINS_DIR``, else the per-user data folder, never the
        working folder); read once, when the host is created.
    :param entry_points: discover plugins installed with pip (entry points in
        ``services_ai.plugins``) and record them in the registry.
    :param approve_entry_points: approve newly discovered entry-point plugins at once.
    :param hookspecs: modules or classes of the host's own hook specifications.
    :param refresh_interval: seconds between two looks at the storage's change
        counter (a change made through this host's registry applies at once).
    :param flush_interval: seconds between two writes of metrics and failures.
    :param api_class: the :class:`PluginAPI` subclass plugins receive.
    :param on_denied: called with each refused API call (see :class:`PluginAPI`).
    :param sandbox: which plugins run in worker processes, with which limits
        (default :class:`SandboxPolicy`: uploaded archives do, with a 5 s timeout).
    :param limits: what each plugin may keep in its store and send, per tenant
        (default :class:`ApiLimits`); store usage is kept in ``storage``.
    :param network: how plugins' ``api.http_request`` calls go out (default
        :class:`NetworkPolicy`: public addresses only, 10 s, 1 MiB out, 5 MiB in; see
        docs/network.md). The same as ``limits=ApiLimits(network=...)``: a host given
        both ``network`` and a ``limits`` whose ``network`` is not the default raises
        ``TypeError``.
    :param secret_keys: the Fernet keys that encrypt ``secret`` settings, newest
        first; default: ``$SERVICES_AI_PLUGINS_SECRET_KEYS`` (see :class:`Registry`).
    :param async_threads: on the async path (``host.ahook``), run plain in-process
        implementations in a pool of this many threads instead of inline on the
        event loop (None, the default: inline; a blocking plugin then blocks the loop).
    :param access: what the host keeps of the data-access log (default
        :class:`AccessPolicy`: every granted API call on tenant data, 90 days),
        written at each flush; a storage without an access log
        (:class:`~services_ai_plugins.storage.AccessStorage`) keeps none.
    :param deferred: where ``host.defer`` calls run (a :class:`DeferredExecutor`;
        default :class:`BoundedExecutor`: 2 threads, at most 1000 calls waiting).
        The host shuts it down in :meth:`close`.
    :param notice_interval: at most one ``plugin_failing`` notice per plugin per this
        interval (default 15 minutes; see docs/notifications.md).
    :param metrics: a breakdown of the metrics by tenant, and OpenTelemetry
        spans and metrics around plugin calls (:class:`MetricsPolicy`; see
        docs/metrics.md). By default: no breakdown, and OpenTelemetry once the
        app configures its SDK.
    """

    def __init__(  # noqa: PLR0915 - the one place that wires every part together
        self,
        services: HostServices,
        *,
        storage: Storage | None = None,
        plugins_dir: str | os.PathLike[str] | None = None,
        breaker: BreakerPolicy | None = None,
        strict: bool = False,
        entry_points: bool = True,
        approve_entry_points: bool = False,
        hookspecs: Iterable[types.ModuleType | type] = (),
        refresh_interval: float = 1.0,
        flush_interval: float = 5.0,
        api_class: type[PluginAPI] = PluginAPI,
        on_denied: DeniedHook | None = None,
        actor: str = "host",
        sandbox: SandboxPolicy | None = None,
        limits: ApiLimits | None = None,
        network: NetworkPolicy | None = None,
        secret_keys: SecretKeys | None = None,
        async_threads: int | None = None,
        deferred: DeferredExecutor | None = None,
        config: HostConfig | None = None,
        upgrades: UpgradePolicy | None = None,
        artifacts: ArtifactStore | None = None,
        access: AccessPolicy | None = None,
        notice_interval: timedelta = timedelta(minutes=15),
        metrics: MetricsPolicy | None = None,
    ) -> None:
        if refresh_interval < 0 or flush_interval < 0:
            raise ValueError("refresh_interval and flush_interval must be >= 0 seconds")
        if async_threads is not None and async_threads < 1:
            raise ValueError(f"async_threads must be None or at least 1 (got {async_threads})")
        SecretBox(secret_keys)  # bad keys are refused before anything is opened
        limits = _with_network(limits, network)
        self._owns_storage = storage is None
        if storage is None or plugins_dir is None:
            config = config if config is not None else HostConfig.from_env()
            storage = storage if storage is not None else config.open_storage()
            plugins_dir = plugins_dir if plugins_dir is not None else config.plugins_dir
        self._storage: Final = storage
        #: Where installed plugin code lives.
        self.plugins_dir: Final = Path(plugins_dir)
        self._services: Final = services
        self._api_class: Final = api_class
        self._on_denied: Final = on_denied
        self._actor: Final = actor
        access = access if access is not None else AccessPolicy()
        #: What the host keeps of the data-access log.
        self.access_policy: Final = access
        #: The data-access log's buffer (None: not kept, by policy or because the storage
        #: has no access log).
        self.access_buffer: Final = self._access_buffer(access, storage)
        self._access_storage: Final = cast("AccessStorage", storage)
        self._access_prune_ns: Final = int(access.prune_interval.total_seconds() * 1e9)
        self._next_prune = perf_counter_ns()
        #: The plugins' store quotas and send rates, shared by every API object built here.
        self.meter: Final = ApiMeter(limits, ledger=storage, access=self.access_buffer)
        #: The worker processes sandboxed plugins run in (started on first use).
        self.sandbox: Final = Sandbox(
            sandbox or SandboxPolicy(), api_methods={*api_class.permissions(), "has_permission"}
        )
        self.sandbox.on_integrity_error = self._integrity_failed
        # Lifecycle hooks to fire, in the order of their changes (with the plugin an uninstall
        # took out of the calls); one thread at a time fires them.
        self._lifecycle: list[tuple[RegistryEvent, Loaded | None]] = []
        self._lifecycle_lock = threading.Lock()
        self._firing = threading.Lock()
        self._ready = False
        #: The registry over the host's storage; changes made through it apply here at once.
        self.registry: Final = Registry(
            storage,
            on_change=self._changed,
            on_event=self._registry_event,
            secret_keys=secret_keys,
            upgrades=upgrades,
            artifacts=artifacts,
        )
        #: The pluggy manager (specifications and registered implementations).
        self.pm: Final = plugin_manager()
        for specs in hookspecs:
            self.pm.add_hookspecs(specs)
        self._dispatcher: Final = Dispatcher(
            policy=breaker or BreakerPolicy(), strict=strict, on_trip=self._tripped
        )
        #: ``host.defer.lead_created(...)``: NOTIFY hooks run after the request, in the background.
        self.defer: Final = Deferrer(
            call_hook=self.call_hook,
            spec_of=self._hook_spec,
            events=self._dispatcher.events,
            executor=deferred,
        )
        self._refresh_ns: Final = int(refresh_interval * 1e9)
        self._flush_ns: Final = int(flush_interval * 1e9)
        self._next_refresh = 0
        self._next_flush = perf_counter_ns() + self._flush_ns
        self._tick_lock = threading.Lock()
        self._infos: dict[str, HookInfo] = {}
        self._listeners: dict[str, object] = {}
        self._changes: Final = ChangeListeners()
        # Failure notices (docs/notifications.md): heard from the newest one at startup on.
        self._notice_interval: Final = notice_interval
        self._notice_lock = threading.Lock()
        self._notice_tokens: set[str] = set()  # the notices this process wrote
        self._notice_generation = storage.generation()
        newest = storage.audit(AuditQuery(action=FAILING, limit=1))
        self._notice_cursor = newest[0].id or 0 if newest else 0
        # Suspensions (by anyone): heard from the newest one at startup on.
        suspensions = storage.audit(AuditQuery(action="suspend", limit=1))
        self._suspension_cursor = suspensions[0].id or 0 if suspensions else 0
        # The breaker's suspensions made here, until heard: (plugin, tenant) -> (seq, context).
        self._contexts: dict[tuple[str, str | None], tuple[int, Context | None]] = {}
        self._contexts_seq = 0
        self._contexts_lock = threading.Lock()
        #: What the host measures beyond its per-(plugin, hook) counters.
        self.metrics_policy: Final = metrics if metrics is not None else MetricsPolicy()
        self._telemetry: Final = Telemetry(self.metrics_policy, self.live_metrics)
        # The loaded plugins, the snapshot the call loop reads, its views and plans.
        self._loading: Final = PluginSet(
            storage=storage,
            registry=self.registry,
            pm=self.pm,
            sandbox=self.sandbox,
            dispatcher=self._dispatcher,
            services=services,
            api_class=api_class,
            on_denied=on_denied,
            meter=self.meter,
            actor=actor,
            plugins_dir=self.plugins_dir,
            listeners=self._listeners,
            info=self._info,
            on_tick=self._tick,
            on_snapshot=self._changes.notify,
            telemetry=self._telemetry,
        )
        # Switches to approved new versions, made at a refresh while the old version serves.
        self._upgrader: Final = Upgrader(
            registry=self.registry,
            loading=self._loading,
            sandbox=self.sandbox,
            make_api=self._migration_api,
            plugins_dir=self.plugins_dir,
            actor=actor,
            check_requirements=lambda: self._loading.check_requirements,
        )
        # Other processes' changes: at once from a change feed, else by polling the counter.
        self._unwatch: Callable[[], None] | None = None
        if isinstance(storage, ChangeFeed):
            self._unwatch = storage.watch(self._changed)
        self._closed = False
        #: Entry points that could not be used: (where, error).
        self.refused: list[tuple[str, PluginError]] = []
        if entry_points:
            self._discover(approve_entry_points)
        #: ``host.hook.lead_created(...)``: every hook, called through the host.
        self.hook: Final = _HookRelay(self)
        # The async path's pool for plain in-process implementations (None: they run inline).
        self._threads: Final = (
            ThreadPoolExecutor(async_threads, thread_name_prefix="services-ai-plugins")
            if async_threads is not None
            else None
        )
        #: ``await host.ahook.lead_created(...)``: every hook, awaited through the host.
        self.ahook: Final = _AsyncHookRelay(self)
        self._routes_lock = threading.Lock()
        self._route_table: tuple[object, RouteTable] | None = None
        self.refresh()
        self._ready = True
        self._fire_due()  # the steps taken while it started (entry points approved at once)

    @property
    def breaker(self) -> BreakerPolicy:
        """When the circuit breaker suspends a failing plugin."""
        return self._dispatcher.policy

    @property
    def _check_requirements(self) -> bool:
        """Whether installs and loads refuse unmet requires_api, requires_python and
        dependencies: always, except in check_plugin's own host, which reports them itself
        and still runs the plugin's hooks."""
        return self._loading.check_requirements

    @_check_requirements.setter
    def _check_requirements(self, value: bool) -> None:
        self._loading.check_requirements = value

    def _hooks_file(self, record: PluginRecord) -> Path:
        """Where the host keeps what a worker reported of this version's implementations."""
        return self._loading.hooks_file(record)

    # -- hooks -----------------------------------------------------------------------------------

    def call_hook(self, name: str, /, **kwargs: Any) -> Any:
        """Call the hook ``name`` as ``host.hook.<name>(**kwargs)`` does.

        :raises KeyError: for a hook nobody specified (with a close name, if any).
        :raises TypeError: when arguments of the specification are missing or unknown.
        """
        return self.hook[name](**kwargs)

    async def acall_hook(self, name: str, /, **kwargs: Any) -> Any:
        """Await the hook ``name`` as ``await host.ahook.<name>(**kwargs)`` does.

        :raises KeyError: for a hook nobody specified (with a close name, if any).
        :raises TypeError: when arguments of the specification are missing or unknown.
        """
        return await self.ahook[name](**kwargs)

    # -- routes ----------------------------------------------------------------------------------

    def _table(self) -> RouteTable:
        """The route table of the current snapshot: built again when the routes may differ.

        The routes may differ when the plugins asked for them do (approved,
        upgraded, uninstalled, ``register_routes`` granted or revoked): the
        tenant-less plan of ``register_routes`` is the key. A tenant enabling a
        plugin changes nothing here (each request asks the snapshot). A table
        built while a sandboxed plugin's ``register_routes`` failed for a
        passing reason (its worker timed out, crashed or could not start) is
        built again :data:`ROUTES_RETRY` seconds later, at the next request.
        """
        now = perf_counter_ns()
        if now >= self._loading.due:
            self._tick()
        snapshot = self._loading.snapshot
        held = self._route_table
        if held is not None and held[0] is snapshot and not held[1].retry_due(now):
            return held[1]
        with self._routes_lock:
            held = self._route_table
            if held is not None and held[0] is snapshot and not held[1].retry_due(now):
                return held[1]
            info = self._info(ROUTES_HOOK)
            plan = self._loading.plan(snapshot, info, None, frozenset())
            key = tuple((entry[0], entry[1]) for entry in plan.entries)
            reuse = held is not None and held[1].key == key and not held[1].retry_due(now)
            table = held[1] if held is not None and reuse else self._build_routes(key)
            self._route_table = (snapshot, table)
            return table

    def _build_routes(self, key: object) -> RouteTable:
        outcomes: list[PluginOutcome] = []
        try:
            returned = self.hook.register_routes(_trace=outcomes) or ()
        finally:
            self._dispatcher.end_trace()
        compiled: dict[str, list[Any]] = {}
        for routes in returned:
            if not routes:
                continue
            plugin_id = guard_of(routes[0]).plugin_id
            try:
                compiled[plugin_id] = compile_routes(plugin_id, routes)
            except PackageError as error:
                _logger.error("plugin %r: %s", plugin_id, error)
                self._loading.record_load_failure(plugin_id, error)
        passing = sorted(
            (outcome.plugin_id, outcome.failure.exc_type)
            for outcome in outcomes
            if outcome.failure is not None and outcome.failure.exc_type in _PASSING_FAILURES
        )
        if not passing:
            return RouteTable(compiled, key)
        _logger.warning(
            "routes missing for now, register_routes failed (%s): asked again in %g s",
            ", ".join(f"{plugin_id}: {kind}" for plugin_id, kind in passing),
            ROUTES_RETRY,
        )
        return RouteTable(compiled, key, retry_at=perf_counter_ns() + int(ROUTES_RETRY * 1e9))

    def routes(self) -> tuple[PluginRoute, ...]:
        """The route table: every served route of every approved plugin, under its prefix.

        Built from ``register_routes`` (each plugin holding that permission),
        normalised, paths under ``/<plugin_id>``; a plugin whose routes are
        malformed or clash has none here (its load failure says why). Built
        again when the plugins change; which tenant may reach a route is decided
        per request (:meth:`serve`).
        """
        return self._table().routes

    def url_for(self, plugin_id: str, name: str, /, **params: object) -> str:
        """The path (below the adapter's mount point) of a plugin's route, with ``params``.

        ``host.url_for("crm-sync", "lead", lead_id="L-1")`` -> ``"/crm-sync/leads/L-1"``.

        :raises LookupError: when the plugin serves no route of that name.
        :raises TypeError: when a parameter is missing or unknown.
        :raises ValueError: when a value is empty or holds ``/`` in a one-segment parameter.
        """
        return self._table().url_for(plugin_id, name, params)

    def _route(self, request: ApiRequest) -> tuple[RouteMatch | None, ApiResponse | None]:
        if not isinstance(request, ApiRequest):
            raise TypeError(f"serve() takes an ApiRequest, not a {type(request).__name__}")
        found = self._table().match(request.path, request.method)
        if isinstance(found, RouteMatch):
            return found, None
        status, allowed = found
        if status == 405:
            return None, ApiResponse.json(
                request.tenant,
                {"error": "method not allowed"},
                405,
                headers={"allow": ", ".join(allowed)},
            )
        return None, ApiResponse.json(request.tenant, {"error": "not found"}, 404)

    def serve(
        self,
        request: ApiRequest,
        *,
        native: Callable[[Callable[..., Any], Mapping[str, str]], Any] | None = None,
    ) -> Any:
        """Answer ``request`` with the plugin route its path names (``/<plugin_id>/...``).

        404 when no route has the path, or the request's tenant has not enabled
        the plugin (or it is suspended there: from the snapshot, no query);
        405 with an ``allow`` header for another method. The handler runs
        guarded (:class:`~services_ai_plugins._dispatch.RouteGuard`): its
        ``api``, ``settings`` and ``context`` injected by name, its failures,
        metrics and breaker counts recorded like a hook's. A failure is
        answered, never raised: 504 for a sandbox time-out, 502 for a worker
        that crashed, 503 (with ``retry-after``) when every worker of the
        plugin stayed busy, 500 otherwise (a strict host raises it instead).
        A HEAD request is served by the GET route, and answered with the GET's
        response: the adapter sends no body (``web.write_wsgi(..., head=True)``).

        A framework-native view (:attr:`Route.native`) is the adapter's to call:
        ``native(view, path_params)`` is called (guarded the same way) and its
        return value returned as is; without ``native`` the answer is 501.
        """
        match, answer = self._route(request)
        if match is None:
            assert answer is not None
            return answer
        routed = _routed(request, match)
        guard = guard_of(match.route)
        try:
            if match.route.native:
                if native is None:
                    return _native_refused(request, match)
                params = match.params
                return guard.call_native(routed, lambda view: native(view, params))
            response = guard(routed)
        except Exception as exc:  # noqa: BLE001 - recorded by the guard; answered here
            return self._failed_answer(request, match, exc)
        return response

    async def aserve(self, request: ApiRequest) -> ApiResponse:
        """:meth:`serve` for async adapters: never blocks the event loop on a sandboxed plugin.

        A sandboxed handler is awaited over non-blocking I/O, an ``async def``
        handler awaited, a plain in-process one runs inline. A framework-native
        view is answered 501: async adapters serve ``ApiRequest`` handlers.
        """
        match, answer = self._route(request)
        if match is None:
            assert answer is not None
            return answer
        if match.route.native:
            return _native_refused(request, match)
        try:
            response = await guard_of(match.route).aio(_routed(request, match))
        except Exception as exc:  # noqa: BLE001 - recorded by the guard; answered here
            return self._failed_answer(request, match, exc)
        return response

    def native_values(self) -> Mapping[str, Any] | None:
        """Inside a framework-native view that :meth:`serve` hands to the adapter: the
        view's plugin's ``api`` and ``settings`` for the request's tenant, the call's
        ``context`` and the ``plugin_id``; None anywhere else.

        The adapter passes them on in its framework's way (the Django adapter sets
        ``request.plugin_api``), so that a view written for the original system reads
        the tenant's data through the permission layer.
        """
        return native_values()

    def _failed_answer(self, request: ApiRequest, match: RouteMatch, exc: Exception) -> ApiResponse:
        if self._dispatcher.strict:
            raise exc
        status, error = 500, "the plugin failed"
        headers: dict[str, str] = {}
        if isinstance(exc, SandboxTimeout):
            status, error = 504, "the plugin did not answer in time"
        elif isinstance(exc, WorkerCrashed):
            status, error = 502, "the plugin's worker crashed"
        elif isinstance(exc, WorkerBusy):
            status, error = 503, "the plugin is busy: try again"
            headers["retry-after"] = "1"
        plugin_id = match.route.plugin_id
        return ApiResponse.json(
            request.tenant, {"error": error, "plugin": plugin_id}, status, headers=headers
        )

    def trace_hook(self, name: str, /, **kwargs: Any) -> HookTrace:
        """Call the hook and report what each plugin returned or how it failed.

        The call is a real one (failures are recorded, metrics counted); it is
        how an operator reproduces a report (``services-ai-plugins call``).
        """
        outcomes: list[PluginOutcome] = []
        caller = self.hook[name]
        try:
            result = caller(_trace=outcomes, **kwargs)
        finally:
            self._dispatcher.end_trace()
        tenant = kwargs["context"].tenant if caller.scoped else None
        return HookTrace(hook=name, tenant=tenant, result=result, outcomes=tuple(outcomes))

    def add_listener(self, listener: object, *, name: str | None = None) -> str:
        """Register the host's own implementations of host-only hooks (``plugin_suspended``,
        ``plugin_failing``; see docs/notifications.md).

        Plugins never receive these hooks; listeners receive nothing else.
        Returns the name it is registered under.

        :raises ValueError: when the listener implements a hook that is not host-only.
        """
        registered = self.pm.register(listener, name=f"host:{name or id(listener)}")
        assert registered is not None
        for caller in self.pm.get_hookcallers(listener) or ():
            info = self._info(caller.name)
            if not info.host_only:
                self.pm.unregister(name=registered)
                raise ValueError(
                    f"listener {registered!r} implements {caller.name!r}, which plugins "
                    "receive: a host listener implements host-only hooks only"
                )
        self._listeners[registered] = listener
        self._loading.invalidate()
        return registered

    def install(
        self,
        source: ArchiveSource,
        *,
        actor: str,
        reinstall: bool = False,
        downgrade: bool = False,
    ) -> PluginRecord:
        """Install an uploaded plugin archive into the plugins folder, as pending approval; a
        new version of a running plugin (``reinstall=True``) is staged beside it, and an older
        one needs ``downgrade=True`` (see :meth:`Registry.install`).

        See :func:`install_archive` for the checks and the errors; the plugin's
        ``requires_api``, ``requires_python`` and ``dependencies`` must be met
        here too, as for the command line's ``install``. The plugins folder is
        created if it does not exist yet.

        :raises RequirementsError: naming every unmet requirement (nothing is written).
        """
        self.plugins_dir.mkdir(parents=True, exist_ok=True)
        return install_archive(
            source,
            self.plugins_dir,
            self.registry,
            actor=actor,
            reinstall=reinstall,
            check=require_environment if self._check_requirements else None,
            downgrade=downgrade,
        )

    def install_object(
        self,
        plugin: object,
        *,
        actor: str,
        manifest: Manifest | Mapping[str, Any] | None = None,
    ) -> PluginRecord:
        """Install a plugin that is already imported (a class, an instance or a module), as pending.

        For plugins a host ships in its own code, and for tests. The manifest is
        ``manifest``, else the object's (or its module's) ``manifest`` attribute,
        else a ``manifest.json`` beside its module, as for entry points. It is
        recorded as an entry-point plugin (its code hash from its module's
        sources) and runs once approved, like one. A class is instantiated once
        when it is loaded. Its ``requires_api``, ``requires_python`` and
        ``dependencies`` must be met here, as for an upload.

        :raises ManifestError: when the manifest is missing or invalid.
        :raises RequirementsError: naming every unmet requirement (nothing is recorded).
        """
        where = f"object {getattr(plugin, '__qualname__', type(plugin).__qualname__)}"
        module = module_of(plugin, getattr(plugin, "__module__", "") or "")
        if manifest is None:
            document = manifest_document(plugin, module, where)
        elif isinstance(manifest, Manifest):
            document = manifest.to_dict()
        else:
            document = dict(manifest)
        found = DiscoveredPlugin(
            document,
            SourceKind.ENTRY_POINT,
            where,
            package_path=None,
            plugin=plugin,
            module=module,
        )
        [record] = register_discovered(self.registry, [found], actor=actor)
        self._loading.entry_points[record.id] = found
        return record

    # -- the snapshot ------------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> bool:
        """Rebuild the snapshot if the storage changed since it was built (or if ``force``).

        Loads newly approved plugins (verifying their code first), unloads
        those no longer approved or whose code changed. Returns True when it
        rebuilt. Called by the host itself every ``refresh_interval`` seconds.
        The circuit breaker's suspensions decided since the last tick are
        applied first.
        """
        self._apply_trips()
        if force or self._storage.generation() != self._loading.snapshot.generation:
            # Outside the loading lock: the snapshot in use serves on while a migration runs.
            self._upgrader.run_due(self._storage.list_plugins(PluginStatus.APPROVED))
        with self._loading.lock:
            self._next_refresh = perf_counter_ns() + self._refresh_ns
            self._reschedule()
            approved = self._loading.rebuild(force=force)
            if approved is not None:
                self._reconcile_trips(approved)
        # After the rebuild: the listeners see the new snapshot (a suspension heard is in
        # force), and their calls find no refresh due (none nested in this one).
        self._hear_notices()
        if approved is None:
            return False
        self._fire_due()  # the lifecycle hooks of plugins loaded just now
        return True

    def _migration_api(
        self, plugin_id: str, tenant: str, grants: frozenset[str], settings: Mapping[str, Any]
    ) -> PluginAPI:
        """The api a new version's ``plugin_upgraded`` gets for a tenant (its new grants)."""
        return self._api_class(
            plugin_id,
            self._services,
            tenant=tenant,
            grants=grants,
            on_denied=self._on_denied,
            settings=settings,
            meter=self.meter,
        )

    def _reconcile_trips(self, approved: Mapping[str, PluginRecord]) -> None:
        """Forget the breaker's suspensions that were lifted elsewhere (another process, an admin).

        Only plugins this process suspended are looked at: a query per such tenant.
        """
        for plugin_id, tenants in self._dispatcher.tripped().items():
            for tenant in tenants:
                if tenant is None:
                    lifted = plugin_id in approved
                else:
                    record = self._storage.get_tenant(plugin_id, tenant)
                    lifted = record is None or record.suspended_reason is None
                if lifted:
                    self._dispatcher.forget_trip(plugin_id, tenant)

    def _changed(self) -> None:
        """Something changed (here, or in another process): look at the storage at the next call.

        Called by the registry, and by the storage's change feed from its own thread.
        """
        self._next_refresh = 0
        self._loading.due = 0

    def _reschedule(self) -> None:
        self._loading.due = min(self._next_refresh, self._next_flush)

    def _tick(self) -> None:
        """Housekeeping on the call path, at most one thread at a time and never blocking."""
        if not self._tick_lock.acquire(blocking=False):
            return
        try:
            self._apply_trips()
            if self._telemetry.poll():  # the app configured OpenTelemetry: plans with spans
                self._loading.invalidate()
            now = perf_counter_ns()
            if now >= self._next_refresh:
                try:
                    self.refresh()
                except Exception:  # the caller's call goes on with the snapshot it has
                    _logger.exception("cannot refresh the plugin snapshot; keeping the current one")
                    self._next_refresh = now + self._refresh_ns
            if now >= self._next_flush:
                self.flush()
            self._reschedule()
        finally:
            self._tick_lock.release()

    def _info(self, name: str) -> HookInfo:
        info = self._infos.get(name)
        if info is None:
            info = self._infos[name] = hook_info(name, self.pm)
        return info

    # -- loading ---------------------------------------------------------------------------------

    def _discover(self, approve: bool) -> None:
        discovery = discover_entry_points()
        self.refused.extend(discovery.refused)
        for where, error in discovery.refused:
            _logger.warning("entry point refused: %s: %s", where, error)
        for found in discovery.found:
            try:
                register_discovered(
                    self.registry, [found], actor=self._actor, approve_entry_points=approve
                )
            except PluginError as error:
                self.refused.append((found.location, error))
                _logger.warning("entry point refused: %s: %s", found.location, error)
                continue
            self._loading.entry_points[found.plugin_id] = found

    def _integrity_failed(self, plugin_id: str, error: IntegrityError) -> None:
        """A sandboxed plugin's code changed under the live host: no worker of it started.

        Recorded as its load failure, and it is suspended everywhere with that
        reason (the next refresh unloads it), as a change found at load is.
        """
        _logger.error("plugin %r: %s", plugin_id, error)
        self._loading.record_load_failure(plugin_id, error)
        try:
            self.registry.suspend(plugin_id, actor=self._actor, reason=str(error))
        except (TransitionError, PluginNotFound):
            return  # suspended meanwhile, or no longer approved: nothing more to do
        except (ConflictError, StorageError):
            _logger.exception("cannot suspend plugin %r", plugin_id)
            return
        self._hear()  # plugin_suspended here at once, from its audit event

    # -- lifecycle hooks -------------------------------------------------------------------------

    def _registry_event(self, event: RegistryEvent) -> None:
        """A change made through this host's registry committed: fire its lifecycle hook.

        Called by the registry in the thread that made the change, after the
        commit: other processes see the change through the storage and fire
        nothing. Only the plugin concerned receives the hook, and only while
        its code may run (loaded here, not suspended for the tenant); its
        failure is recorded as the plugin's and undoes nothing. A plugin
        approved just now is loaded by the host's next refresh: its hooks wait
        for it, in order.
        """
        if event.action not in _LIFECYCLE or self._closed:
            return
        held = self._loading.take_out(event.plugin_id) if event.action == "uninstall" else None
        with self._lifecycle_lock:
            self._lifecycle.append((event, held))
        self._fire_due()

    def _fire_due(self) -> None:
        """Fire the queued lifecycle hooks whose plugins are ready, in order; one thread fires."""
        if not self._ready:
            return
        while True:
            with self._lifecycle_lock:
                if self._next_due() is None:
                    return
            if not self._firing.acquire(blocking=False):
                return  # another thread fires them; it looks again once done
            try:
                while True:
                    with self._lifecycle_lock:
                        index = self._next_due()
                        if index is None:
                            break
                        event, held = self._lifecycle.pop(index)
                    self._fire(event, held)
            finally:
                self._firing.release()

    def _next_due(self) -> int | None:
        """The queue's first hook not waiting for its plugin's load (then, in order, its next)."""
        waiting: set[str] = set()
        for index, (event, _) in enumerate(self._lifecycle):
            plugin_id = event.plugin_id
            if plugin_id in waiting:
                continue
            if event.action != "uninstall" and self._loading.awaits_load(plugin_id):
                waiting.add(plugin_id)
                continue
            return index
        return None

    def _fire(self, event: RegistryEvent, held: Loaded | None) -> None:
        try:
            if event.action == "uninstall":
                if held is not None:
                    self._fire_uninstalled(event.plugin_id, held)
            else:
                self._fire_lifecycle(event)
        except Exception:  # the host's own trouble (storage): the change stands
            _logger.exception(
                "cannot fire the lifecycle hook of %r of plugin %r",
                event.action,
                event.plugin_id,
            )

    def _fire_lifecycle(self, event: RegistryEvent) -> None:
        plugin_id, tenant = event.plugin_id, event.tenant
        loaded = self._loading.get(plugin_id)
        record = self._storage.get_plugin(plugin_id)
        if loaded is None or record is None or record.status is not PluginStatus.APPROVED:
            return  # its code does not run here (not approved, or it could not be loaded)
        if event.action == "approve":
            version = record.version
            self._deliver(loaded, record, "plugin_installed", plugin_id=plugin_id, version=version)
            self._settle()  # a breaker trip of that call applies now: none of its hooks follow
            self._deliver(loaded, record, "plugin_approved", plugin_id=plugin_id)
            return
        assert tenant is not None  # the other steps are tenant steps
        stored = self._storage.get_tenant(plugin_id, tenant)
        if stored is None or stored.suspended_reason is not None:
            return  # suspended for the tenant: its code does not run there
        if event.action == "disable":
            if not stored.enabled:
                self._deliver(loaded, record, "plugin_disabled", tenant, plugin_id=plugin_id)
        elif not stored.enabled:
            return  # enabled, then disabled again before this ran; or settings of an idle tenant
        elif event.action == "enable":
            self._deliver(loaded, record, "plugin_enabled", tenant, plugin_id=plugin_id)
        else:
            changed = dict(event.changed)
            self._deliver(
                loaded,
                record,
                "plugin_settings_changed",
                tenant,
                plugin_id=plugin_id,
                changed=changed,
            )

    def _fire_uninstalled(self, plugin_id: str, loaded: Loaded) -> None:
        """Send ``plugin_uninstalled`` to a plugin taken out of the calls, then unload it."""
        try:
            # Its grants as approved: the uninstall revoked them, but its last call may need
            # them (to remove a webhook at another service, say).
            self._deliver(
                loaded, loaded.record, "plugin_uninstalled", held=True, plugin_id=plugin_id
            )
        finally:
            self._loading.release(plugin_id, loaded)

    def _deliver(
        self,
        loaded: Loaded,
        record: PluginRecord,
        hook: str,
        tenant: str | None = None,
        *,
        held: bool = False,
        **arguments: Any,
    ) -> None:
        """Call one plugin's implementation of a lifecycle hook, whatever the tenant's plan says.

        It gets its own ``api`` and ``settings`` (for ``tenant``, or bound to no
        tenant); a failure is recorded and counted like any of its failures.
        Nothing is called once the plugin was unloaded (the breaker suspended
        it, say), unless the caller ``held`` it out of the calls for this.
        """
        plugin_id = record.id
        if not held and self._loading.get(plugin_id) is not loaded:
            return
        impl = self._loading.implementation(loaded.plugin, plugin_id, hook)
        if impl is None:
            return
        seen = self.registry.tenant_view(tenant, [record], running_only=False)
        grants = seen.grants[plugin_id]
        settings: Mapping[str, Any] = seen.settings[plugin_id]
        context = Context(tenant=tenant) if tenant is not None else None
        api = self._api_class(
            plugin_id,
            self._services,
            tenant=tenant,
            grants=grants,
            on_denied=self._on_denied,
            settings=settings if tenant is not None else None,
            meter=self.meter,
        )
        values: dict[str, Any] = {**arguments, "api": api, "settings": settings, "context": context}
        sandboxed = isinstance(loaded.plugin, SandboxedPlugin)
        stats = self._dispatcher.timed(
            plugin_id, hook, self.sandbox.policy.timeout if sandboxed else None
        )
        self._dispatcher.call_one(
            plugin_id,
            stats,
            impl.function,
            [values.get(name) for name in impl.argnames],
            tenant=tenant,
            context=context,
        )

    # -- for adapters: request context, deferred calls, changes ----------------------------------

    def request_context(self, context: Context, *, defer: DeferMode = "exit") -> RequestScope:
        """A block (``with`` or ``async with``) serving one request for ``context``.

        Inside it :meth:`current_context` is ``context`` (in the threads and
        tasks started from it too), so code deep in the app fires hooks for the
        request's tenant and user; blocks nest. It holds the calls deferred
        inside it (``host.defer``) until the request is over: ``defer="exit"``
        hands them over when the block exits without an exception,
        ``defer="manual"`` when the adapter calls ``scope.submit()``; an
        exception leaving the block drops them (see :class:`RequestScope`)::

            with host.request_context(Context(tenant="acme", user=user)):
                save_lead(lead)  # its signal handler calls host.defer.lead_created(lead=lead)

        :raises TypeError: when ``context`` is not a :class:`Context`.
        """
        return RequestScope(context, defer=defer)

    def current_context(self) -> Context | None:
        """The context of the request being served here (:meth:`request_context`), else None."""
        return current_request_context()

    def add_change_listener(self, callback: ChangeListener) -> Callable[[], None]:
        """Call ``callback()`` (no arguments) whenever the host's snapshot of the plugins changed.

        That is after a plugin was approved, enabled or disabled for a tenant,
        suspended (by an admin or the breaker) or resumed, uninstalled, or its
        settings changed, here or in another process: the host takes a new
        snapshot at its next tick after the change (a hook call, :meth:`plugins`,
        :meth:`is_active`, :meth:`refresh`; another process's change once
        ``refresh_interval`` passed), and the listeners are called then, in the
        thread that took it, while the host's loading lock is held: keep them
        short (drop a cache, set a flag), hand slow work to another thread. An
        exception in a listener is logged on ``services_ai_plugins.host`` and
        stops neither the host nor the other listeners. Returns the function
        that removes the listener.

        :raises TypeError: when ``callback`` is not callable.
        """
        return self._changes.add(callback)

    def is_active(self, plugin_id: str, tenant: str) -> bool:
        """Whether the plugin runs for the tenant now: approved, loaded here, enabled for the
        tenant, and suspended neither there nor everywhere.

        Read from the host's snapshot (one storage query per tenant and snapshot,
        shared with the hook calls), after a due refresh.

        :raises TypeError: when ``plugin_id`` or ``tenant`` is not a string.
        """
        if type(plugin_id) is not str or type(tenant) is not str:
            raise TypeError(
                "is_active(plugin_id, tenant) takes two strings, got "
                f"{type(plugin_id).__qualname__} and {type(tenant).__qualname__}"
            )
        if perf_counter_ns() >= self._loading.due:
            self._tick()
        return plugin_id in self._loading.active(tenant)

    def _hook_spec(self, name: str) -> tuple[HookInfo, tuple[str, ...]]:
        """A hook's description and its specification's arguments (``KeyError``: no such hook)."""
        info = self._info(name)
        caller: pluggy.HookCaller = getattr(self.pm.hook, name)
        assert caller.spec is not None
        return info, tuple(caller.spec.argnames)

    # -- the breaker -----------------------------------------------------------------------------

    def _tripped(self) -> None:
        """The breaker tripped in a call: the next call does the housekeeping that applies it."""
        self._loading.due = 0

    def _settle(self) -> None:
        """Apply the breaker's trips now, and the refresh they call for (between two hooks)."""
        self._apply_trips()
        if perf_counter_ns() >= self._next_refresh:
            self.refresh()

    def _apply_trips(self) -> None:
        """Suspend the plugins the breaker tripped on since the last tick, and tell the listeners.

        The failing call only recorded the trip (:meth:`Dispatcher.take_trips`):
        the storage write and the ``plugin_suspended`` hook happen here, at the
        host's next tick, never nested inside that call.
        """
        trips = self._dispatcher.take_trips()
        for trip in trips:
            try:
                self._trip(trip.plugin_id, trip.tenant, trip.reason, trip.context)
            except Exception:  # the host's own trouble: the next trips still apply
                _logger.exception("cannot apply the suspension of plugin %r", trip.plugin_id)
        if trips:
            self._write()  # the failures that tripped it, for the dashboard at once
            self._hear()  # plugin_suspended here at once, with the failing calls' contexts

    def _trip(
        self, plugin_id: str, tenant: str | None, reason: str, context: Context | None
    ) -> None:
        if plugin_id in self._listeners:  # the host's own listener keeps failing: only log it
            _logger.error("host listener %r keeps failing: %s", plugin_id, reason)
            return
        suspended = False
        for attempt in (1, 2):
            try:
                self.registry.suspend(plugin_id, actor=BREAKER_ACTOR, reason=reason, tenant=tenant)
                suspended = True
            except ConflictError:
                if attempt == 1:
                    continue  # another writer came first: read again and retry once
                _logger.exception("cannot suspend plugin %r: storage conflict", plugin_id)
            except (TransitionError, PluginNotFound):
                pass  # suspended meanwhile, or no longer approved: nothing to do
            except StorageError:
                _logger.exception("cannot suspend plugin %r", plugin_id)
            break
        if not suspended:
            return
        _logger.warning(
            "plugin %r suspended%s: %s",
            plugin_id,
            f" for tenant {tenant!r}" if tenant is not None else " everywhere",
            reason,
        )
        with self._contexts_lock:  # plugin_suspended fires when its audit event is heard
            self._contexts_seq += 1
            self._contexts[(plugin_id, tenant)] = (self._contexts_seq, context)

    def suspend(
        self, plugin_id: str, *, actor: str, reason: str, tenant: str | None = None
    ) -> None:
        """Suspend a plugin for one tenant, or everywhere, by an admin's decision.

        The ``plugin_suspended`` listeners of every host hear of it at its next
        refresh (this one's: at its next call), with ``context`` None.
        """
        self.registry.suspend(plugin_id, actor=actor, reason=reason, tenant=tenant)

    def resume(self, plugin_id: str, *, actor: str, tenant: str | None = None) -> None:
        """Let a suspended plugin run again (for one tenant, or everywhere), its counts reset."""
        self.registry.resume(plugin_id, actor=actor, tenant=tenant)
        self._dispatcher.reset(plugin_id, tenant)

    # -- the error dashboard ---------------------------------------------------------------------

    def flush(self) -> None:
        """Write the failures and metrics gathered since the last flush (one batch each).

        The circuit breaker's suspensions decided since the last flush or refresh
        are applied first (written to storage, ``plugin_suspended`` fired).
        """
        self._apply_trips()
        self._write()

    def _write(self) -> None:
        """Write the failures and metrics gathered since the last write (one batch each)."""
        self._next_flush = perf_counter_ns() + self._flush_ns
        self._reschedule()
        failures, dropped = self._dispatcher.take_failures()
        if dropped:
            _logger.warning("%d plugin failures were not kept (more than could wait)", dropped)
        if failures:
            try:
                self._storage.record_failures(failures)
            except StorageError:
                self._store_one_by_one(failures)
            self._write_notices({f.plugin_id for f in failures} - self._listeners.keys())
        deltas = self._dispatcher.take_metrics()
        if deltas:
            try:
                self._storage.record_metrics(deltas)
            except StorageError:
                _logger.exception("cannot store plugin metrics; will retry")
                self._dispatcher.put_back_metrics(deltas)
        if self.access_buffer is not None:
            self._write_access(self.access_buffer)

    # -- failure notices ---------------------------------------------------------------------------

    def _write_notices(self, plugin_ids: set[str]) -> None:
        """Write a ``failing`` notice for each plugin that failed, unless its last is too young.

        Only a host with a ``plugin_failing`` listener writes notices (an app registers the
        same listeners in each of its processes): without one, failures write nothing more.
        """
        if not plugin_ids or not self.pm.hook.plugin_failing.get_hookimpls():
            return
        wrote = False
        for plugin_id in sorted(plugin_ids):
            try:
                event = self.registry.notice_failing(
                    plugin_id, actor=BREAKER_ACTOR, interval=self._notice_interval
                )
            except (PluginError, StorageError):
                _logger.exception("cannot write the failure notice of plugin %r", plugin_id)
                continue
            if event is not None and event.after is not None:
                self._notice_tokens.add(str(event.after.get("token")))
                wrote = True
        if wrote:
            self._hear()  # at once: the e-mail goes out with the write, not at a later refresh

    def _hear_notices(self) -> None:
        """Fire the host's notifications written (by any process) since the last look."""
        if not self._closed:
            self._hear()

    def _hear(self) -> None:
        """Fire ``plugin_failing`` and ``plugin_suspended`` for each notice and suspension
        written (by any process) since the last look, once each; also while closing."""
        if not self._notice_lock.acquire(blocking=False):
            return  # another thread looks now
        try:
            generation = self._storage.generation()
            if generation == self._notice_generation:
                return
            self._notice_generation = generation
            events = self._storage.audit(AuditQuery(action=FAILING, limit=_NOTICES_READ))
            fresh = sorted(
                (e for e in events if (e.id or 0) > self._notice_cursor), key=lambda e: e.id or 0
            )
            for event in fresh:
                self._notice_cursor = event.id or 0
                if self._counts(event):
                    self._fire_notice(event)
            self._hear_suspensions()
        except StorageError:
            _logger.exception("cannot read the failure notices")
        finally:
            self._notice_lock.release()

    def _hear_suspensions(self) -> None:
        """Fire ``plugin_suspended`` for each suspension written since the last look, once.

        Every suspension, whoever made it and where: the breaker's, an admin's
        (:meth:`Registry.suspend`, the CLI, the admin pages), a code change's. A
        breaker's suspension made in this process gets the failing call's
        ``context`` (kept by :meth:`_trip` until heard); every other one has None.
        """
        with self._contexts_lock:
            made = self._contexts_seq  # those kept up to now are committed: the read finds them
        query = AuditQuery(action="suspend", limit=_NOTICES_READ)
        events = self._storage.audit(query)
        fresh = sorted(
            (e for e in events if (e.id or 0) > self._suspension_cursor), key=lambda e: e.id or 0
        )
        for event in fresh:
            self._suspension_cursor = event.id or 0
            context = self._context_of(event.plugin_id, event.tenant, made)
            after = event.after or {}
            reason = after.get("suspended_reason", after.get("reason"))
            try:
                self.hook.plugin_suspended(
                    plugin_id=event.plugin_id,
                    reason=str(reason) if reason is not None else "",
                    tenant=event.tenant,
                    context=context,
                )
            except Exception:  # a host listener's own trouble: the next ones still fire
                _logger.exception("a plugin_suspended listener failed for %r", event.plugin_id)
        with self._contexts_lock:  # those left found the plugin suspended already: no event
            for key in [k for k, (seq, _) in self._contexts.items() if seq <= made]:
                del self._contexts[key]

    def _context_of(self, plugin_id: str, tenant: str | None, made: int) -> Context | None:
        """The context kept for a suspension made here (before the read began), taken once."""
        with self._contexts_lock:
            seq, context = self._contexts.get((plugin_id, tenant), (made + 1, None))
            if seq > made:
                return None  # none kept, or kept after the read began: its own event comes later
            del self._contexts[(plugin_id, tenant)]
            return context

    def _counts(self, event: AuditEvent) -> bool:
        """Whether a notice counts: the plugin's previous notice is older than the interval.

        Every process decides alike (the same events, the same rule), so a notice two
        processes wrote at once counts once: the first.
        """
        query = AuditQuery(plugin_id=event.plugin_id, action=FAILING, limit=_NOTICES_READ)
        before = [e for e in self._storage.audit(query) if (e.id or 0) < (event.id or 0)]
        if not before:
            return True
        previous = max(before, key=lambda e: e.id or 0)  # by id: clocks of processes may differ
        return event.at - previous.at >= self._notice_interval

    def _fire_notice(self, event: AuditEvent) -> None:
        digest = dict(event.after or {})
        token = digest.pop("token", None)
        try:
            self.hook.plugin_failing(
                plugin_id=event.plugin_id,
                digest=digest,
                notice=event.id or 0,
                origin=token in self._notice_tokens,
            )
        except Exception:  # a host listener's own trouble: the next notices still fire
            _logger.exception("a plugin_failing listener failed for %r", event.plugin_id)
        self._notice_tokens.discard(str(token))

    @staticmethod
    def _access_buffer(policy: AccessPolicy, storage: Storage) -> AccessLog | None:
        if not policy.enabled:
            return None
        if not isinstance(storage, AccessStorage):
            _logger.info(
                "%s keeps no data-access log (no record_access/access_log/prune_access): "
                "granted API calls are not recorded",
                type(storage).__name__,
            )
            return None
        return AccessLog(policy.buffer)

    def _write_access(self, log: AccessLog) -> None:
        """Write the access records gathered since the last write (one batch), and prune the
        records past retention, at most once per ``AccessPolicy.prune_interval``."""
        records, _ = log.take()
        if records:
            try:
                self._access_storage.record_access(records)
            except StorageError:
                _logger.exception("cannot store %d data-access records; will retry", len(records))
                log.put_back(records)
        now = perf_counter_ns()
        if now >= self._next_prune:
            self._next_prune = now + self._access_prune_ns
            self.prune_access()

    def prune_access(self) -> int:
        """Forget the access records older than ``AccessPolicy.retention``; return how many."""
        if self.access_buffer is None:
            return 0
        before = datetime.now(timezone.utc) - self.access_policy.retention
        try:
            return self._access_storage.prune_access(before)
        except StorageError:
            _logger.exception("cannot prune the data-access log; will retry at a later flush")
            return 0

    def access_log(
        self,
        *,
        plugin_id: str | None = None,
        tenant: str | None = None,
        method: str | None = None,
        record_type: str | None = None,
        record_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[AccessRecord]:
        """The data-access log, newest first, every process together (this one's flushed
        first): see :meth:`Registry.access_log`."""
        self.flush()
        return self.registry.access_log(
            plugin_id=plugin_id,
            tenant=tenant,
            method=method,
            record_type=record_type,
            record_id=record_id,
            since=since,
            until=until,
            limit=limit,
        )

    def _store_one_by_one(self, failures: list[FailureRecord]) -> None:
        """A batch of failures was refused: store each alone, so one bad record stops no other.

        Each record is made storable first (texts bounded, lone surrogates and NUL
        characters replaced). A record the storage still refuses while others are
        stored is dropped, with a log line; when none can be stored the storage
        itself is failing, and they all wait for the next flush.
        """
        refused: list[tuple[FailureRecord, StorageError]] = []
        stored = 0
        for failure in failures:
            try:
                self._storage.record_failures([storable(failure)])
            except StorageError as exc:
                refused.append((failure, exc))
            else:
                stored += 1
        if not refused:
            return
        if not stored:
            _logger.error(
                "cannot store %d plugin failures; will retry: %s", len(failures), refused[0][1]
            )
            self._dispatcher.put_back_failures(failures)
            return
        for failure, reason in refused:
            _logger.error(
                "a failure of plugin %r in %s was dropped: the storage refuses it: %s",
                bounded(failure.plugin_id, MAX_EXC_TYPE),
                bounded(failure.hook, MAX_EXC_TYPE),
                reason,
            )

    def host_events(self, kind: str | None = None) -> list[HostEvent]:
        """What happened to the host in this process, not a plugin's failure, oldest first.

        Busy workers (``"worker-busy"``), a full queue of deferred calls, ...: kept
        in memory (the newest 1000), logged on ``services_ai_plugins.host``, never
        counted by the breaker. ``kind`` keeps only those of one kind.
        """
        return self._dispatcher.events.recent(kind)

    def failures(
        self, plugin_id: str | None = None, *, resolved: bool | None = None, limit: int = 100
    ) -> list[FailureRecord]:
        """Failures, newest first, of one plugin or all (``resolved``: filter by it)."""
        self.flush()
        return self._storage.failures(plugin_id, resolved=resolved, limit=limit)

    def resolve_failures(
        self,
        plugin_id: str,
        *,
        tenant: str | None = None,
        ids: Iterable[int] | None = None,
        actor: str | None = None,
    ) -> int:
        """Mark the plugin's failures resolved (of one tenant, or only ``ids``); return how many.

        With ``actor`` (an admin's action), it is audited as :meth:`Registry.resolve_failures`
        does; without, it is the host's own housekeeping and only marks them.
        """
        self.flush()
        if actor is not None:
            return self.registry.resolve_failures(plugin_id, actor=actor, tenant=tenant, ids=ids)
        return self._storage.resolve_failures(
            plugin_id, tenant, ids=list(ids) if ids is not None else None
        )

    def live_metrics(self) -> LiveMetrics:
        """This process's metrics now, as a Prometheus collector or a meter reads them.

        Per plugin and hook (and per tenant, as :class:`MetricsPolicy` allows):
        calls, errors and latency histograms since the process started; the
        breaker's suspensions and trips; the live sandbox workers and the calls
        that waited for one; the host's own events. Nothing is read from storage
        (:meth:`metrics` has what every process flushed).
        """
        dispatcher = self._dispatcher
        hooks = tuple(
            LiveHookMetrics(
                live.plugin_id,
                live.hook,
                None,
                live.calls,
                live.errors,
                live.total_duration,
                live.buckets,
            )
            for live in sorted(dispatcher.live())
        )
        workers: dict[str, int] = {}
        for worker in self.sandbox.workers():
            workers[worker.plugin_id] = workers.get(worker.plugin_id, 0) + 1
        waits = self.sandbox.waits()
        return LiveMetrics(
            hooks=hooks,
            tenants=self._telemetry.by_tenant(),
            suspended={p: len(t) for p, t in sorted(dispatcher.tripped().items())},
            trips=dict(sorted(dispatcher.trip_counts.items())),
            workers=dict(sorted(workers.items())),
            queue_waits={p: count for p, (count, _) in sorted(waits.items())},
            queue_wait_seconds={p: seconds for p, (_, seconds) in sorted(waits.items())},
            events=dict(sorted(dispatcher.events.counts().items())),
        )

    def metrics(self, plugin_id: str | None = None) -> list[HookMetrics]:
        """Counters per (plugin, hook), every process together (this one's flushed first)."""
        self.flush()
        return self._storage.metrics(plugin_id)

    def suspensions(self, plugin_id: str | None = None) -> list[Suspension]:
        """Which plugins are suspended, where (a tenant, or everywhere) and why.

        The circuit breaker's suspensions decided since the last tick are applied first.
        """
        self.flush()
        return self.registry.suspensions(plugin_id)

    def dashboard(self, *, failures_per_plugin: int = 10) -> list[PluginHealth]:
        """Everything an admin's error page shows, one row per installed plugin, by id."""
        self.flush()
        metrics: dict[str, list[HookMetrics]] = {}
        for row in self._storage.metrics():
            metrics.setdefault(row.plugin_id, []).append(row)
        suspensions: dict[str, list[Suspension]] = {}
        for suspension in self.registry.suspensions():
            suspensions.setdefault(suspension.plugin_id, []).append(suspension)
        rows = []
        for record in self._storage.list_plugins():
            if record.status is PluginStatus.UNINSTALLED:
                continue
            unresolved = self._storage.failures(record.id, resolved=False, limit=1000)
            rows.append(
                PluginHealth(
                    plugin=record,
                    failures=tuple(unresolved[:failures_per_plugin]),
                    unresolved=len(unresolved),
                    metrics=tuple(metrics.get(record.id, ())),
                    suspensions=tuple(suspensions.get(record.id, ())),
                )
            )
        return rows

    # -- life ------------------------------------------------------------------------------------

    def plugins(self) -> dict[str, object]:
        """The loaded plugins (id to the object registered with pluggy), after a due refresh."""
        if perf_counter_ns() >= self._loading.due:
            self._tick()
        loaded = self._loading.loaded()
        return {plugin_id: found.plugin for plugin_id, found in loaded.items()}

    def runs_in_process(self, plugin_id: str) -> bool:
        """Whether the plugin is loaded in the host's process (trusted code), rather than in
        a sandbox worker or not at all.

        Adapters decide by it what a plugin's HTML may be: inserted as it is (in
        process, where the plugin could do anything anyway) or escaped (a sandboxed
        plugin must not reach the app's pages through markup).
        """
        if perf_counter_ns() >= self._loading.due:
            self._tick()
        found = self._loading.loaded().get(plugin_id)
        return found is not None and not isinstance(found.plugin, SandboxedPlugin)

    def close(self) -> None:
        """Run the deferred calls, flush, unload every plugin and close the storage if the host
        opened it.

        The deferred calls already submitted get up to ``DRAIN_TIMEOUT`` (5 s) to
        run; those left are dropped (one ``"defer-dropped"`` host event), and
        ``host.defer`` refuses new calls from then on.
        """
        if self._closed:
            return
        self._closed = True
        if self._unwatch is not None:
            self._unwatch()
        try:
            self.defer.close(DRAIN_TIMEOUT)  # first: they run while the host still can
            self.flush()
        finally:
            self.sandbox.close()  # first: a call stuck on its worker is cut short, not waited for
            for plugin_id in self._loading.loaded():
                self._loading.unload(plugin_id)
            self._loading.release_departed(None)
            with self._lifecycle_lock:
                queued, self._lifecycle = self._lifecycle, []
            for event, held in queued:
                if held is not None:
                    self._loading.release(event.plugin_id, held)
            if self._threads is not None:
                self._threads.shutdown(wait=False, cancel_futures=True)
            if self._owns_storage:
                self._storage.close()

    def __enter__(self) -> PluginHost:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        count, generation = len(self._loading.loaded()), self._loading.snapshot.generation
        return f"<PluginHost {count} plugins, generation {generation}>"


H = TypeVar("H")


class _Relay(Generic[H]):
    """``host.hook`` / ``host.ahook``: one hook object per specified hook, built on first use
    and kept as an attribute (found without ``__getattr__`` from then on)."""

    def __init__(self, host: PluginHost) -> None:
        self._host = host

    def __getattr__(self, name: str) -> H:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(str(error.args[0])) from None

    def __getitem__(self, name: str) -> H:
        known: H | None = self.__dict__.get(name)
        if known is None:
            known = self._make(name)
            setattr(self, name, known)
        return known

    def _make(self, name: str) -> H:
        raise NotImplementedError

    def __dir__(self) -> list[str]:
        return sorted(
            n for n, c in vars(self._host.pm.hook).items() if isinstance(c, pluggy.HookCaller)
        )


@final
class _HookRelay(_Relay[HostHook]):
    """``host.hook``: one :class:`HostHook` per specified hook."""

    def _make(self, name: str) -> HostHook:
        host = self._host
        info = host._info(name)  # KeyError for a hook nobody specified
        caller: pluggy.HookCaller = getattr(host.pm.hook, name)
        assert caller.spec is not None
        injected = INJECTED if not info.host_only else ()
        return HostHook(host._loading, host._dispatcher, info, caller.spec.argnames, injected)


@final
class _AsyncHookRelay(_Relay[AsyncHostHook]):
    """``host.ahook``: one :class:`AsyncHostHook` per hook, over ``host.hook``'s."""

    def _make(self, name: str) -> AsyncHostHook:
        host = self._host
        synced = host.hook[name]  # KeyError for a hook nobody specified
        caller: pluggy.HookCaller = getattr(host.pm.hook, name)

        def implementations() -> list[Callable[..., Any]]:
            return [impl.function for impl in caller.get_hookimpls()]

        return AsyncHostHook(synced, host._threads, implementations)


#: The fields of a request, copied as they are into the request a route's handler gets.
_REQUEST_FIELDS: Final = tuple(field.name for field in attrs.fields(ApiRequest))


def _routed(request: ApiRequest, match: RouteMatch) -> ApiRequest:
    """The request as the route's handler sees it: its route's own path, its parameters.

    A copy of the checked request with two fields set from the route table (a path the
    table compiled, the strings its pattern matched), without running every field's
    converter again (``attrs.evolve`` would: a third of a route's cost here).
    """
    routed = object.__new__(ApiRequest)
    for name in _REQUEST_FIELDS:
        object.__setattr__(routed, name, getattr(request, name))
    object.__setattr__(routed, "route_path", match.route.route_path)
    object.__setattr__(routed, "path_params", dict(match.params))
    return routed


def _native_refused(request: ApiRequest, match: RouteMatch) -> ApiResponse:
    route = match.route
    _logger.warning(
        "route %r of plugin %r is a framework-native view: its adapter serves it (native=...)",
        route.name,
        route.plugin_id,
    )
    return ApiResponse.json(
        request.tenant, {"error": "served by the adapter", "plugin": route.plugin_id}, 501
    )


def _with_network(limits: ApiLimits | None, network: NetworkPolicy | None) -> ApiLimits | None:
    """``limits`` with ``network`` in it (PluginHost's two ways to give the network policy).

    :raises TypeError: when both give one: which of the two is meant is not clear.
    """
    if network is None:
        return limits
    if not isinstance(network, NetworkPolicy):
        raise TypeError(f"PluginHost(network=...) takes a NetworkPolicy, not {network!r}")
    if limits is None:
        return ApiLimits(network=network)
    if not is_default(limits.network):
        raise TypeError(
            "PluginHost() got both network=NetworkPolicy(...) and limits=ApiLimits(network=...): "
            "give the network policy in one place (network=...)"
        )
    return attrs.evolve(limits, network=network)
