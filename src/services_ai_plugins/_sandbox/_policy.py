"""The sandbox's policy: which plugins run in a worker process, and within which limits."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Final

import attrs

from .._kinds import SourceKind
from .._manifest import Isolation, Manifest
from ._confine import Limits
from ._wire import MAX_FRAME

__all__ = ["SandboxPolicy", "WorkerInfo", "isolation_of"]

_DEFAULT_ISOLATION: Final[Mapping[SourceKind, Isolation]] = {
    SourceKind.ARCHIVE: Isolation.PROCESS,
    SourceKind.FOLDER: Isolation.INPROCESS,
    SourceKind.ENTRY_POINT: Isolation.INPROCESS,
}


def _isolation_map(
    value: Mapping[SourceKind | str, Isolation | str],
) -> Mapping[SourceKind, Isolation]:
    merged = dict(_DEFAULT_ISOLATION)
    merged.update({SourceKind(k): Isolation(v) for k, v in value.items()})
    return merged


def _limits(value: Limits | Mapping[str, int | None]) -> Limits:
    return value if isinstance(value, Limits) else Limits(**value)


@attrs.frozen(kw_only=True)
class SandboxPolicy:
    """Which plugins run in a worker process, and within which limits.

    ``isolation`` maps where a plugin came from to where it runs; uploaded
    archives run in a worker by default, entry points and folders (placed by
    an operator) in the host's process. A manifest asking for ``"process"``
    always gets it; one asking for ``"inprocess"`` cannot loosen the policy.
    ``trusted`` names plugins the operator lets run in the host's process
    wherever they came from (an uploaded plugin of the original system that
    ships framework-native views); they still need an admin's approval, and
    their manifest may still ask for a worker.

    >>> SandboxPolicy(timeout=2.0).isolation_for(SourceKind.ARCHIVE, None)
    <Isolation.PROCESS: 'process'>
    """

    isolation: Mapping[SourceKind, Isolation] = attrs.field(
        factory=lambda: dict(_DEFAULT_ISOLATION), converter=_isolation_map
    )
    #: Plugin ids that run in the host's process whatever their source (the operator's
    #: choice, for trusted code only: in process, a plugin can do anything the app can).
    trusted: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)
    #: Seconds a hook call (API callbacks included) may take before its worker is killed.
    timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    #: Seconds a worker may take to start and import its plugin.
    start_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    #: The operating-system limits of each worker.
    limits: Limits = attrs.field(factory=Limits, converter=_limits)
    #: The most workers alive at once (of every plugin and tenant; idle ones make room).
    max_workers: int = attrs.field(default=16, validator=attrs.validators.ge(1))
    #: The most workers of one plugin for one tenant (and for the hooks bound to no tenant):
    #: calls for a (plugin, tenant) run in parallel in up to this many workers.
    workers_per_plugin: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    #: Seconds a call may wait for a free worker of its (plugin, tenant) before it gives up
    #: with WorkerBusy (the host's capacity, not the plugin's failure); ``timeout`` starts
    #: only once the call is sent.
    wait_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    #: The most characters of printed output and log messages a call may send.
    output_limit: int = attrs.field(default=64 * 1024, validator=attrs.validators.ge(0))
    #: The largest message a worker may send, in bytes.
    max_frame: int = attrs.field(default=MAX_FRAME, validator=attrs.validators.ge(1024))
    #: The most values (array items, object members, containers) one message of a worker may
    #: hold; a message with more is refused before it is read (it would cost the host far more
    #: memory than its bytes: 16 MiB of nested empty lists take some 800 MiB).
    max_values: int = attrs.field(default=250_000, validator=attrs.validators.ge(1000))
    #: The most API requests one hook call may make; the next ones raise SandboxError in the
    #: worker, and the call goes on.
    max_api_calls: int = attrs.field(default=10_000, validator=attrs.validators.ge(0))
    #: The most bytes one hook call may move through its worker's channel: the API requests
    #: and their answers, log lines, and the result. An API answer over it is refused (the API
    #: call raises SandboxError); a frame of the worker over it stops the worker.
    max_call_bytes: int = attrs.field(default=64 * 2**20, validator=attrs.validators.ge(1024))
    #: The interpreter workers run on (started with ``-I``).
    python: str = sys.executable
    #: More paths workers may read (besides the interpreter's, the SDK's and the plugin's).
    readable: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    def isolation_for(
        self, source: SourceKind, asked: Isolation | None, plugin_id: str | None = None
    ) -> Isolation:
        """Where a plugin from ``source`` whose manifest asks for ``asked`` runs."""
        if asked is Isolation.PROCESS:
            return Isolation.PROCESS
        if plugin_id is not None and plugin_id in self.trusted:
            return Isolation.INPROCESS
        return self.isolation.get(source, Isolation.PROCESS)


@attrs.frozen(kw_only=True)
class WorkerInfo:
    """One live worker, for an operator's page (:meth:`Sandbox.workers`)."""

    plugin_id: str
    #: The tenant whose calls it serves (None: the hooks bound to no tenant).
    tenant: str | None
    pid: int
    #: Hook calls it answered.
    calls: int
    #: Seconds since it started.
    age: float
    #: Seconds it took to start and import its plugin.
    start_time: float
    #: Its resident memory in bytes (None where ``/proc`` cannot tell).
    rss: int | None
    #: The confinement layers applied to it.
    layers: tuple[str, ...]


def isolation_of(
    record_source: SourceKind, manifest: Manifest | None, policy: SandboxPolicy
) -> Isolation:
    """Where a plugin runs under ``policy`` (the manifest may only make it stricter)."""
    if manifest is None:
        return policy.isolation_for(record_source, None)
    return policy.isolation_for(record_source, manifest.isolation, manifest.id)
