"""The process sandbox, host side: the pool of worker processes and their zygote.

One :class:`Sandbox` per host. Workers are forked by a zygote (see
:mod:`._worker`), up to ``workers_per_plugin`` per (plugin, tenant): a plugin's
module globals and scratch folder never hold two tenants' data, and hooks bound
to no tenant (``register_routes``, plugin-level lifecycle) get workers of their
own. A worker starts when a call needs one (the first load of a plugin's code
starts a tenant-less one to learn its implementations), is reused for the calls
of its tenant, and the workers are bounded in number (the least recently used
idle one makes room). A call waits at most ``wait_timeout`` seconds for a free
worker (:class:`WorkerBusy`), then at most ``timeout`` seconds: a worker that
overruns is killed with its whole process group, and one that dies is reaped
and its cause recorded; either way the next call starts a new one (see
:mod:`._channel`). While a call runs, the worker may send API requests: the
host runs them on the plugin's real :class:`PluginAPI` for the call's tenant,
so grants are never decided in the worker.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from time import monotonic
from typing import Any, Final, final

import attrs
from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .._manifest import Manifest
from .._sources._loader import IntegrityError
from ..errors import (
    SandboxError,
)
from ._channel import WorkerProcess, judged, kill_group, read_hooks, write_hooks
from ._confine import Capabilities
from ._messages import (
    Exit,
    Fork,
    Forked,
    Status,
    Unexpected,
    Wait,
    read_hello,
    read_zygote_answer,
)
from ._policy import SandboxPolicy, WorkerInfo
from ._stand_in import PluginWorkers
from ._wire import Channel, WireError
from ._worker import SDK_MODULES

__all__ = ["Sandbox"]

_logger = logging.getLogger("services_ai_plugins.sandbox")

#: How deep hook calls may nest through one worker (a hook whose API call fires a hook).
#: Seconds the host gives the zygote to take a request, and again to answer it.
_ZYGOTE_TIMEOUT: Final = 30.0


@final
class Sandbox:
    """The host's worker processes: started lazily, reused, bounded, killed on overrun.

    One per :class:`PluginHost` (``host.sandbox``). Thread-safe: calls into
    different plugins and tenants run in parallel, and calls into one plugin for
    one tenant in up to ``workers_per_plugin`` workers.
    """

    def __init__(self, policy: SandboxPolicy, *, api_methods: Iterable[str]) -> None:
        self.policy: Final = policy
        self._api_methods: Final = frozenset(api_methods)
        self._lock = threading.Lock()
        self._zygote: _Zygote | None = None
        self._plugins: dict[str, PluginWorkers] = {}
        #: Live workers (of every plugin and tenant), oldest first.
        self._live: dict[WorkerProcess, None] = {}
        # Per plugin: (calls that waited for a free worker, seconds waited), since start.
        self._waits: dict[str, tuple[int, float]] = {}
        #: Workers still starting (not live yet): closing cuts their start short too.
        self._starting: set[WorkerProcess] = set()
        self._notes: set[str] = set()
        self._closed = False
        #: Called (plugin id, error) when a worker is not started because the plugin's code
        #: no longer matches its recorded hash; the host records and suspends it.
        self.on_integrity_error: Callable[[str, IntegrityError], None] | None = None
        # A web server that forks after the host was made (gunicorn --preload): each child
        # must start its own zygote and workers, never talk over its parent's sockets.
        method = weakref.WeakMethod(self._forked)
        os.register_at_fork(after_in_child=lambda: _call_if_alive(method))

    def _forked(self) -> None:
        """In a forked child: forget the parent's zygote and workers (they stay the parent's)."""
        self._lock = threading.Lock()
        inherited: list[object] = [self._zygote, *self._live]
        self._zygote = None
        self._live = {}
        self._starting = set()
        for sandboxed in self._plugins.values():
            sandboxed.pools = {}  # the parent's slots and their locks stay the parent's
            sandboxed.recent = None
        for thing in inherited:  # close this process's copies of their descriptors only
            channel = getattr(thing, "channel", None)
            if channel is not None:
                with contextlib.suppress(OSError):
                    channel.close()
        _INHERITED.extend(inherited)  # their Popen objects must not be waited for here

    @property
    def capabilities(self) -> Capabilities:
        """What this machine offers the workers (probed by the zygote; starts it if needed)."""
        return self._ensure_zygote().capabilities

    def load(
        self,
        plugin_id: str,
        manifest: Manifest,
        *,
        folder: Path | None,
        spec_args: Callable[[str], Sequence[str] | None],
        ignored: frozenset[str] = frozenset(),
        module: str | None = None,
        attribute: str | None = None,
        hooks_file: Path | None = None,
        code_hash: str | None = None,
    ) -> object:
        """Return the plugin's stand-in for pluggy, from its implementations.

        The implementations are what its worker reported once it imported the
        plugin: read from ``hooks_file`` when an earlier load wrote it (the
        worker then starts on the first call), else reported by a worker
        started now, and written there (a file per code hash: the host's
        restarts and its other processes start no worker they do not use).
        ``spec_args(hook)`` gives the argument names of a hook's specification
        (None for a hook nobody specified); ``ignored`` names the hooks whose
        results the host ignores. Entry-point plugins name their
        ``module`` (and ``attribute``) instead of a ``folder``. With
        ``code_hash``, the code is checked against it before each worker
        starts (see :meth:`PluginWorkers.start`).

        :raises PackageError: when the worker cannot start, the plugin cannot
            be imported there (the message holds its error and traceback), or
            its worker's report of its implementations is not valid.
        """
        self.unload(plugin_id)
        config = {
            "plugin_id": plugin_id,
            # None (an entry point: code in site-packages): its scratch folder stands in.
            "folder": str(folder) if folder is not None else None,
            "manifest": manifest.to_dict(),
            "module": module,
            "attribute": attribute,
            "api_methods": sorted(self._api_methods),
            "limits": attrs.asdict(self.policy.limits),
            "output_limit": self.policy.output_limit,
            "max_frame": self.policy.max_frame,
            "readable": list(self.policy.readable),
            # The declared distributions and all they require: what the plugin may import.
            "distributions": (distributions := _dependency_closure(manifest.dependencies)),
            "modules": (modules := _distribution_modules(distributions)),
            # Where those are, when not where the SDK is (the zygote's sys.path has only those).
            "paths": _module_holders(modules),
            # The worker hashes its folder again, confined, right before the import.
            "code_hash": code_hash,
        }
        sandboxed = PluginWorkers(self, plugin_id, config)
        hooks = read_hooks(hooks_file) if hooks_file is not None else None
        if hooks is None:
            worker = sandboxed.start(None)  # the tenant-less worker tells the implementations
            sandboxed.adopt(worker)
            hooks = worker.hooks
            if hooks_file is not None:  # well-formed: kept even if judged below (check reads it)
                write_hooks(hooks_file, hooks)
        sandboxed.hooks = hooks
        self._plugins[plugin_id] = sandboxed
        return sandboxed.stand_in(judged(plugin_id, hooks, spec_args), spec_args, ignored)

    def start(self, plugin_id: str, tenant: str | None) -> bool:
        """Start the plugin's workers for ``tenant`` now, unless they run already.

        ``workers_per_plugin`` of them (a slot busy with a call is left as it is).
        An app may start a tenant's workers before its first request; the first
        calls then pay no start. False when the plugin is not sandboxed here.

        :raises PluginError: when a worker cannot start (as the call would).
        """
        sandboxed = self._plugins.get(plugin_id)
        if sandboxed is None:
            return False
        sandboxed.fill(tenant)
        return True

    def unload(self, plugin_id: str) -> None:
        """Stop the plugin's workers and forget it (its stand-in then fails every call)."""
        sandboxed = self._plugins.pop(plugin_id, None)
        if sandboxed is not None:
            sandboxed.closed = True
            sandboxed.stop()

    def workers(self) -> list[WorkerInfo]:
        """The live workers, by plugin id and tenant (the tenant-less one first)."""
        with self._lock:
            live = list(self._live)
        now = monotonic()
        return sorted(
            (
                WorkerInfo(
                    plugin_id=w.plugin_id,
                    tenant=w.tenant,
                    pid=w.pid,
                    calls=w.calls,
                    age=now - w.started,
                    start_time=w.start_time,
                    rss=_rss(w.pid),
                    layers=w.layers,
                )
                for w in live
            ),
            key=lambda info: (info.plugin_id, info.tenant is not None, info.tenant or ""),
        )

    def close(self) -> None:
        """Stop every worker and the zygote, without waiting for any of them.

        A call still running is cut short: it fails with :class:`SandboxError`.
        """
        self._closed = True
        with self._lock:
            live = [*self._live, *self._starting]
        for worker in live:  # a call blocked on its worker now fails at once, and lets go
            worker._interrupt()
        for plugin_id in list(self._plugins):
            self.unload(plugin_id)
        with self._lock:
            zygote, self._zygote = self._zygote, None
        if zygote is not None:
            zygote.close()

    # -- for the workers -------------------------------------------------------------------------

    def _ensure_zygote(self) -> _Zygote:
        with self._lock:
            if self._closed:
                raise SandboxError("sandbox", "the host is closed")
            zygote = self._zygote
            if zygote is None or not zygote.alive():
                if zygote is not None:
                    _logger.warning("the sandbox's zygote died; starting a new one")
                    zygote.close()
                zygote = self._zygote = _Zygote(self.policy)
                for layer in zygote.capabilities.layers():
                    if not layer.available:  # degraded: say so, once per process
                        self._note(f"the {layer.name} layer is missing here: {layer.missing}")
            return zygote

    def _note(self, note: str) -> None:
        """Log what the workers could not get, once per sandbox."""
        if note not in self._notes:
            self._notes.add(note)
            _logger.warning("sandbox: %s", note)

    def _admit(self, worker: WorkerProcess) -> None:
        """Count a new worker; stop the least recently used idle ones beyond the bound."""
        with self._lock:
            self._live[worker] = None
            excess = len(self._live) - self.policy.max_workers
            victims = []
            for other in sorted(self._live, key=lambda w: w.last_used):
                if excess <= 0:
                    break
                # A busy one (a call in progress, or further up this context's stack) stays.
                if other is worker or other.depth or not other.owner.evict(other):
                    continue
                del self._live[other]
                victims.append(other)
                excess -= 1
        for victim in victims:
            victim.stop()

    def _gone(self, worker: WorkerProcess) -> None:
        with self._lock:
            self._live.pop(worker, None)

    def waited(self, plugin_id: str, seconds: float) -> None:
        """Count a call of the plugin that waited ``seconds`` for a free worker (got one or not)."""
        with self._lock:
            count, total = self._waits.get(plugin_id, (0, 0.0))
            self._waits[plugin_id] = (count + 1, total + seconds)

    def waits(self) -> dict[str, tuple[int, float]]:
        """Per plugin: the calls that waited for a free worker, and the seconds they waited."""
        with self._lock:
            return dict(self._waits)


_INHERITED: list[object] = []


def _call_if_alive(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    bound = method()
    if bound is not None:
        bound()


class _Zygote:
    """The clean ``python -I`` process that forks the workers."""

    def __init__(self, policy: SandboxPolicy) -> None:
        ours, theirs = socket.socketpair()
        paths = _sdk_paths()
        code = (
            f"import sys; sys.path[:0] = {paths!r}; "
            "from services_ai_plugins._sandbox._worker import zygote_main; "
            f"zygote_main({theirs.fileno()})"
        )
        # A file, not a pipe: nobody reads it after the start, and a pipe could fill up.
        with tempfile.TemporaryFile() as errors:
            try:
                self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and code
                    [policy.python, "-I", "-c", code],
                    env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                    start_new_session=True,
                    cwd="/",
                )
            except OSError as exc:
                ours.close()
                raise SandboxError(
                    "sandbox", f"cannot start its zygote ({policy.python}): {exc}"
                ) from None
            finally:
                theirs.close()
            self.channel = Channel(ours)
            self._lock = threading.Lock()
            #: The number of the last request (answers repeat it).
            self._requests = 0
            #: Workers of forks answered too late: killed, to be reaped.
            self._orphans: list[int] = []
            try:
                hello = read_hello(self.channel.receive(policy.start_timeout))
            except (TimeoutError, EOFError, OSError, WireError) as exc:
                self.process.kill()
                self.process.wait()
                self.channel.close()
                errors.seek(0)
                lines = errors.read().decode(errors="replace").strip().splitlines()
                detail = lines[-1] if lines else repr(exc)
                raise SandboxError("sandbox", f"its zygote did not start: {detail}") from None
        self.pid: Final = self.process.pid
        # Capabilities turn the lists JSON made of its tuples back into tuples.
        self.capabilities: Final = Capabilities(**hello.capabilities)

    def alive(self) -> bool:
        return self.process.poll() is None

    def fork(self, config: dict[str, Any], fd: int) -> int:
        """A new worker's pid, forked with ``fd`` as its channel.

        :raises SandboxError: when the zygote does not answer within its time.
        """
        try:
            with self._lock:
                self._reap_orphans()
                answer = self._exchange(functools.partial(Fork, config=config), (fd,))
        except (TimeoutError, EOFError, OSError, WireError) as exc:
            raise SandboxError(
                "sandbox", f"its zygote did not fork a worker: {str(exc) or type(exc).__name__}"
            ) from None
        if not isinstance(answer, Forked):
            frame = answer.frame if isinstance(answer, Unexpected) else answer.to_frame()
            raise SandboxError("sandbox", f"its zygote answered a fork with {frame!r}")
        return answer.pid

    def wait(self, pid: int) -> int | None:
        """Reap the worker ``pid`` (killed already): its wait status (None: unknown)."""
        try:
            with self._lock:
                self._reap_orphans()
                answer = self._exchange(functools.partial(Wait, pid=pid))
        except (TimeoutError, EOFError, OSError, WireError):
            return None
        return answer.status if isinstance(answer, Status) else None

    def _exchange(
        self, request: Callable[[int], Fork | Wait], fds: Sequence[int] = ()
    ) -> Forked | Status | Unexpected:
        """Send a request under a new number; the answer with that number (the lock held).

        An answer to an earlier request that the host gave up waiting for is dropped, so a
        slow answer never passes for another's: a late ``forked`` names a worker nobody
        knows, which is killed (the zygote reaps a worker only when asked to, so its pid is
        still its own) and reaped with the next request.
        """
        self._requests += 1
        number = self._requests
        deadline = monotonic() + _ZYGOTE_TIMEOUT
        try:
            self.channel.send(request(number).to_frame(), fds=fds, timeout=_ZYGOTE_TIMEOUT)
        except TimeoutError:
            self.process.kill()  # part of the request may be written: its channel is lost
            raise
        while True:
            try:
                message = self.channel.receive(deadline - monotonic())
            except WireError:
                self.process.kill()  # out of step: a new zygote starts on the next call
                raise
            answered, answer = read_zygote_answer(message)
            if answered == number:
                return answer
            if isinstance(answer, Forked):
                kill_group(answer.pid)
                self._orphans.append(answer.pid)

    def _reap_orphans(self) -> None:
        """Reap the workers of forks answered too late (the lock held)."""
        while self._orphans:
            orphan = self._orphans.pop()
            self._exchange(functools.partial(Wait, pid=orphan))

    def close(self) -> None:
        """Ask the zygote to exit (it kills the workers it forked); kill it if it does not."""
        if self._lock.acquire(timeout=2.0):
            try:
                with contextlib.suppress(OSError, WireError):
                    self.channel.send(Exit().to_frame(), timeout=2.0)
            finally:
                self._lock.release()
        try:
            self.process.wait(2.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.channel.close()


def _sdk_paths() -> list[str]:
    """The folders holding the SDK and its run-time dependencies, for the zygote's ``sys.path``.

    The same modules the worker's import guard lets plugins import besides the standard
    library (:data:`._worker.SDK_MODULES`).
    """
    found: dict[str, None] = {}
    for name in sorted(SDK_MODULES):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:  # a package or module installed here
            origin = Path(spec.origin).resolve()
            # A package's origin is its __init__.py: the folder holding it is one more up.
            holder = origin.parent.parent if spec.submodule_search_locations else origin.parent
            found[str(holder)] = None
    return list(found)


def _dependency_closure(requirements: Iterable[Requirement]) -> list[str]:
    """The installed distributions ``requirements`` name, and all they require in turn.

    Each requirement's marker is judged for this interpreter (a requirement for
    another platform or Python version is left out), and the extras a requirement
    names are followed (``jsonschema[format]`` brings what its ``format`` extra
    requires; plain ``jsonschema`` does not). Distributions that are not installed
    are left out: the plugin cannot import them anyway. Canonical names, sorted.
    """
    import importlib.metadata  # noqa: PLC0415

    found: dict[str, set[str]] = {}  # distribution: the extras followed
    pending = [(requirement, "") for requirement in requirements]
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker is not None:
            try:
                if not requirement.marker.evaluate({"extra": extra}):
                    continue
            except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
                continue
        name = canonicalize_name(requirement.name)
        extras = {canonicalize_name(e) for e in requirement.extras} | {""}
        if name in found and extras <= found[name]:
            continue
        try:
            texts = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        new = extras - found.get(name, set())
        found.setdefault(name, set()).update(extras)
        for text in texts:
            try:
                required = Requirement(text)
            except InvalidRequirement:
                continue
            pending.extend((required, wanted) for wanted in new)
    return sorted(found)


def _module_holders(modules: Iterable[str]) -> list[str]:
    """The entries of this process's ``sys.path`` holding ``modules``, but for the SDK's.

    A worker's ``sys.path`` starts with the SDK's folders (:func:`_sdk_paths`); a
    declared dependency installed elsewhere on the host's path (a ``dist-packages``,
    a user's site folder) is found through these. They are only searched: the
    worker may read the modules' own folders and files, nothing else there.
    """
    entries = {os.path.realpath(entry): entry for entry in sys.path if entry}
    known = set(_sdk_paths())
    found: dict[str, None] = {}
    for name in modules:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        places = list(spec.submodule_search_locations or ())
        if not places and spec.origin and os.path.isabs(spec.origin):  # noqa: PTH117 - a str
            places = [spec.origin]
        for place in places:
            holder = os.path.dirname(os.path.realpath(place))  # noqa: PTH120 - a str
            if holder in entries and holder not in known:
                found[holder] = None
    return list(found)


def _distribution_modules(requirements: Sequence[str]) -> list[str]:
    """The top-level modules the installed distributions named in ``requirements`` provide."""
    import importlib.metadata  # noqa: PLC0415

    wanted = {canonicalize_name(name) for name in requirements}
    if not wanted:
        return []
    return sorted(
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if any(canonicalize_name(d) in wanted for d in distributions)
    )


def _rss(pid: int) -> int | None:
    try:
        statm = Path(f"/proc/{pid}/statm").read_bytes()
        return int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
