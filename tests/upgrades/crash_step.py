"""One operation against a registry, killed (SIGKILL, by itself) at a named point.

Run by tests/upgrades/test_crash.py as::

    python crash_step.py <storage> <plugins_dir> <operation> <point> [archive]

``storage`` is ``sqlite:<path>`` or ``postgres:<schema>:<url>``; ``operation`` is
``install`` (``archive`` as a new version, ``reinstall=True``), ``install-fresh``
(``archive``, no reinstall), ``switch`` (a host's refresh after approval, the
plugin in process), ``switch-sandboxed`` (the same, the plugin in its worker),
``rollback`` or ``materialise`` (a host starting on an empty plugins folder).
The script sets up nothing: it wraps functions and the storage's connection so
that the process kills itself at ``point``, then performs the operation. It
exits 0 when the point was never reached (a test treats that as a failure).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any

from services_ai_plugins import PluginHost, SandboxPolicy, SQLiteStorage
from services_ai_plugins._registry import Registry
from services_ai_plugins._sources import _archive
from services_ai_plugins._versions import UpgradePolicy
from services_ai_plugins_testing.fakes import FakeHostServices

#: A registry commit dies before its audit event is inserted, once this many statements ran
#: (the revision check, and the plugin's row or its tenants' rows at least).
MIN_STATEMENTS = 3


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def after(owner: Any, name: str, *, nth: int = 1) -> None:
    """Kill the process when the ``nth`` call of ``owner.name`` has returned."""
    original = getattr(owner, name)
    calls = [0]

    @wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        calls[0] += 1
        if calls[0] == nth:
            die()
        return result

    setattr(owner, name, wrapper)


def before(owner: Any, name: str, *, nth: int = 1) -> None:
    """Kill the process when ``owner.name`` is called the ``nth`` time (before it runs)."""
    original = getattr(owner, name)
    calls = [0]

    @wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == nth:
            die()
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


class _Connection:
    """A storage connection that kills the process on a statement of an armed commit."""

    def __init__(self, conn: Any, state: dict[str, int]) -> None:
        self._conn = conn
        self._state = state

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        if self._state["armed"]:
            self._state["count"] += 1
            # The audit event is written last: every other row of the change is written by now.
            if "INSERT INTO" in str(query) and "audit_events" in str(query):
                if self._state["count"] < MIN_STATEMENTS:
                    raise SystemExit(f"only {self._state['count']} statements before the audit")
                die()
        return self._conn.execute(query, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def kill_inside_commit(storage: Any, method: str) -> None:
    """Kill inside the storage transaction that ``Registry.method`` commits, before its audit
    event is inserted: the change's other rows are written, not committed."""
    state = {"armed": 0, "count": 0}
    transaction = storage._transaction

    @contextmanager
    def wrapped() -> Iterator[Any]:
        with transaction() as conn:
            yield _Connection(conn, state)

    storage._transaction = wrapped
    original = storage.commit

    def commit(change: Any) -> int:
        state["armed"] += inside[0]
        try:
            return int(original(change))
        finally:
            state["armed"] = 0

    storage.commit = commit
    inside = [0]
    registry_method = getattr(Registry, method)

    @wraps(registry_method)
    def marked(*args: Any, **kwargs: Any) -> Any:
        inside[0] = 1
        try:
            return registry_method(*args, **kwargs)
        finally:
            inside[0] = 0

    setattr(Registry, method, marked)


def open_storage(spec: str) -> Any:
    kind, _, rest = spec.partition(":")
    if kind == "sqlite":
        return SQLiteStorage(rest)
    from services_ai_plugins.storage import PostgresStorage

    schema, _, url = rest.partition(":")
    return PostgresStorage(url, schema=schema)


def make_host(storage: Any, plugins_dir: str, sandboxed: bool) -> PluginHost:
    policy = SandboxPolicy(timeout=30.0) if sandboxed else SandboxPolicy(trusted=["crm-sync"])
    return PluginHost(
        FakeHostServices(),
        storage=storage,
        plugins_dir=plugins_dir,
        entry_points=False,
        sandbox=policy,
        upgrades=UpgradePolicy(migration_timeout=30.0),
    )


#: How each install point is injected (install and install-fresh).
INSTALL_POINTS: dict[str, Callable[[Any], None]] = {
    "read": lambda storage: after(_archive, "_read_archive"),
    "extracting": lambda storage: before(_archive, "_write_member", nth=2),
    "placed": lambda storage: after(_archive, "_move"),
    "stored": lambda storage: after(storage, "put_artifact"),
    "commit": lambda storage: kill_inside_commit(storage, "install"),
    "committed": lambda storage: after(Registry, "install"),
}

SWITCH_POINTS: dict[str, Callable[[Any], None]] = {
    # The migration itself kills the process (the plugin reads CRASH_MIGRATION): nothing here.
    "migration": lambda storage: None,
    "between-tenants": lambda storage: None,
    "commit": lambda storage: kill_inside_commit(storage, "complete_upgrade"),
    "committed": lambda storage: after(Registry, "complete_upgrade"),
}

ROLLBACK_POINTS: dict[str, Callable[[Any], None]] = {
    "commit": lambda storage: kill_inside_commit(storage, "rollback"),
    "committed": lambda storage: after(Registry, "rollback"),
}


def main(argv: list[str]) -> int:
    spec, plugins_dir, operation, point, *rest = argv
    storage = open_storage(spec)
    if operation in ("install", "install-fresh"):
        INSTALL_POINTS[point](storage)
        host = make_host(storage, plugins_dir, sandboxed=False)
        host.install(rest[0], actor="ops", reinstall=operation == "install")
    elif operation == "switch":
        SWITCH_POINTS[point](storage)
        host = make_host(storage, plugins_dir, sandboxed=False)
        host.refresh()
    elif operation == "switch-sandboxed":
        # The host dies while its worker runs the migration: when the migration, in the
        # worker, asks the host's API for something (the worker waits for the answer).
        from services_ai_plugins._sandbox._channel import WorkerProcess

        before(WorkerProcess, "_serve_api")
        host = make_host(storage, plugins_dir, sandboxed=True)
        host.refresh()
    elif operation == "rollback":
        ROLLBACK_POINTS[point](storage)
        Registry(storage).rollback("crm-sync", actor="admin")
    elif operation == "materialise":
        before(_archive, "_write_member", nth=2)
        host = make_host(storage, plugins_dir, sandboxed=False)
        host.refresh()
    else:
        raise SystemExit(f"unknown operation {operation!r}")
    sys.stdout.write("not killed\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
