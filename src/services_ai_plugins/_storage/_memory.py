"""An in-memory storage backend, for tests and for trying things out."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import final

import attrs

from .._json import JSONValue
from ._protocol import (
    AccessQuery,
    AccessRecord,
    ArtifactInfo,
    AuditEvent,
    AuditQuery,
    Change,
    FailureRecord,
    HookMetrics,
    KeptVersion,
    MetricsDelta,
    PluginRecord,
    PluginStatus,
    StoreUsage,
    TenantRecord,
    VersionRecord,
    charge,
    check_artifact,
    check_ids,
    check_limit,
    check_size,
    store_value,
    stored_value,
)

__all__ = ["MemoryStorage"]


@final
class MemoryStorage:
    """Keeps everything in dictionaries, behind one lock; nothing survives the process.

    It follows the same contract as the database backends (revisions,
    conflicts, the change counter), so tests written against it hold for them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._plugins: dict[str, PluginRecord] = {}
        self._tenants: dict[tuple[str, str], TenantRecord] = {}
        self._versions: list[VersionRecord] = []
        self._kept: dict[tuple[str, str], KeptVersion] = {}
        self._artifacts: dict[str, tuple[bytes, datetime]] = {}
        self._audit: list[AuditEvent] = []
        self._failures: list[FailureRecord] = []
        self._metrics: dict[tuple[str, str], HookMetrics] = {}
        self._access: list[AccessRecord] = []
        self._ids = itertools.count(1)
        self._ledger = StoreLedger()

    def generation(self) -> int:
        return self._generation

    def commit(self, change: Change) -> int:
        with self._lock:
            plugin = self._plugins.get(change.plugin_id)
            change.check_plugin(plugin.revision if plugin is not None else 0)
            for record in change.written_tenants():
                stored = self._tenants.get((change.plugin_id, record.tenant))
                change.check_tenant(record, stored.revision if stored is not None else 0)
            if change.clear_tenants:
                for stale in [k for k in self._tenants if k[0] == change.plugin_id]:
                    del self._tenants[stale]
                self._ledger.drop_store(change.plugin_id)
            if change.plugin is not None:
                self._plugins[change.plugin_id] = change.plugin
            for record in change.written_tenants():
                self._tenants[(change.plugin_id, record.tenant)] = record
            if change.version is not None:
                self._versions.append(change.version)
            for version in change.forget:
                self._kept.pop((change.plugin_id, version), None)
            if change.keep is not None:
                self._kept[(change.plugin_id, change.keep.version)] = change.keep
            self._audit.append(attrs.evolve(change.audit, id=next(self._ids)))
            self._generation += 1
            return self._generation

    def get_plugin(self, plugin_id: str) -> PluginRecord | None:
        return self._plugins.get(plugin_id)

    def list_plugins(self, status: PluginStatus | None = None) -> list[PluginRecord]:
        with self._lock:
            plugins = sorted(self._plugins.values(), key=lambda p: p.id)
        return [p for p in plugins if status is None or p.status is status]

    def get_tenant(self, plugin_id: str, tenant: str) -> TenantRecord | None:
        return self._tenants.get((plugin_id, tenant))

    def list_tenants(self, plugin_id: str) -> list[TenantRecord]:
        with self._lock:
            records = [r for (p, _), r in self._tenants.items() if p == plugin_id]
        return sorted(records, key=lambda r: r.tenant)

    def enabled_plugins(self, tenant: str) -> list[str]:
        with self._lock:
            return sorted(
                plugin_id
                for (plugin_id, name), record in self._tenants.items()
                if name == tenant
                and record.enabled
                and record.suspended_reason is None
                and self._plugins[plugin_id].status is PluginStatus.APPROVED
            )

    def versions(self, plugin_id: str) -> list[VersionRecord]:
        with self._lock:
            return [v for v in self._versions if v.plugin_id == plugin_id]

    def kept_versions(self, plugin_id: str) -> list[KeptVersion]:
        with self._lock:
            kept = [k for (p, _), k in self._kept.items() if p == plugin_id]
        return sorted(kept, key=lambda k: k.kept_at)

    def put_artifact(self, sha256: str, data: bytes) -> None:
        check_artifact(sha256, data)
        with self._lock:
            self._artifacts.setdefault(sha256, (bytes(data), datetime.now(timezone.utc)))

    def get_artifact(self, sha256: str) -> bytes | None:
        found = self._artifacts.get(sha256)
        return found[0] if found is not None else None

    def delete_artifact(self, sha256: str) -> bool:
        with self._lock:
            return self._artifacts.pop(sha256, None) is not None

    def artifacts(self) -> list[ArtifactInfo]:
        with self._lock:
            items = sorted(self._artifacts.items())
        return [ArtifactInfo(sha256=k, size=len(v[0]), stored_at=v[1]) for k, v in items]

    def audit(self, query: AuditQuery) -> list[AuditEvent]:
        with self._lock:
            events = list(reversed(self._audit))
        found = [e for e in events if _matches(e, query)]
        return found[: query.limit]

    def record_failures(self, failures: Sequence[FailureRecord]) -> None:
        with self._lock:
            self._failures.extend(attrs.evolve(f, id=next(self._ids)) for f in failures)

    def failures(
        self, plugin_id: str | None = None, *, resolved: bool | None = None, limit: int = 1000
    ) -> list[FailureRecord]:
        check_limit(limit)
        with self._lock:
            found = [
                f
                for f in reversed(self._failures)
                if (plugin_id is None or f.plugin_id == plugin_id)
                and (resolved is None or f.resolved == resolved)
            ]
        return found[:limit]

    def resolve_failures(
        self, plugin_id: str, tenant: str | None = None, *, ids: Sequence[int] | None = None
    ) -> int:
        wanted = set(check_ids(ids)) if ids is not None else None
        with self._lock:
            count = 0
            for index, failure in enumerate(self._failures):
                if (
                    failure.plugin_id == plugin_id
                    and not failure.resolved
                    and (tenant is None or failure.tenant == tenant)
                    and (wanted is None or failure.id in wanted)
                ):
                    self._failures[index] = attrs.evolve(failure, resolved=True)
                    count += 1
            return count

    def record_metrics(self, deltas: Sequence[MetricsDelta]) -> None:
        with self._lock:
            for delta in deltas:
                key = (delta.plugin_id, delta.hook)
                self._metrics[key] = add_metrics(self._metrics.get(key), delta)

    def record_access(self, records: Sequence[AccessRecord]) -> None:
        with self._lock:
            self._access.extend(attrs.evolve(r, id=next(self._ids)) for r in records)

    def access_log(self, query: AccessQuery) -> list[AccessRecord]:
        check_limit(query.limit)
        with self._lock:
            found = [r for r in self._access if _access_matches(r, query)]
        found.sort(key=lambda r: (r.at, r.id or 0), reverse=True)
        return found[: query.limit]

    def prune_access(self, before: datetime) -> int:
        with self._lock:
            kept = [r for r in self._access if r.at >= before]
            pruned = len(self._access) - len(kept)
            self._access = kept
            return pruned

    def metrics(self, plugin_id: str | None = None) -> list[HookMetrics]:
        with self._lock:
            return [
                m
                for key, m in sorted(self._metrics.items())
                if plugin_id is None or key[0] == plugin_id
            ]

    def charge_store(
        self,
        plugin_id: str,
        tenant: str,
        key: str,
        size: int | None,
        *,
        max_keys: int | None = None,
        max_bytes: int | None = None,
    ) -> int | None:
        return self._ledger.charge_store(
            plugin_id, tenant, key, size, max_keys=max_keys, max_bytes=max_bytes
        )

    def store_usage(self, plugin_id: str, tenant: str) -> StoreUsage:
        return self._ledger.store_usage(plugin_id, tenant)

    def store_read(self, plugin_id: str, tenant: str, key: str) -> JSONValue:
        return self._ledger.store_read(plugin_id, tenant, key)

    def store_write(
        self,
        plugin_id: str,
        tenant: str,
        key: str,
        value: JSONValue,
        *,
        max_keys: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self._ledger.store_write(
            plugin_id, tenant, key, value, max_keys=max_keys, max_bytes=max_bytes
        )

    def store_remove(self, plugin_id: str, tenant: str, key: str) -> bool:
        return self._ledger.store_remove(plugin_id, tenant, key)

    def drop_store(self, plugin_id: str, tenant: str | None = None) -> int:
        return self._ledger.drop_store(plugin_id, tenant)

    def close(self) -> None:
        """Nothing to release."""


@final
class StoreLedger:
    """The store-quota ledger of :class:`MemoryStorage` (and of an ``ApiMeter`` without storage),
    and the plugins' key-value stores the SDK keeps there.

    Sizes per (plugin, tenant, key), their totals and the values (as JSON
    text), behind one lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sizes: dict[tuple[str, str], dict[str, int]] = {}
        self._usage: dict[tuple[str, str], StoreUsage] = {}
        self._values: dict[tuple[str, str], dict[str, str]] = {}

    def charge_store(
        self,
        plugin_id: str,
        tenant: str,
        key: str,
        size: int | None,
        *,
        max_keys: int | None = None,
        max_bytes: int | None = None,
    ) -> int | None:
        check_size(size)
        with self._lock:
            return self._charge(
                plugin_id, tenant, key, size, max_keys=max_keys, max_bytes=max_bytes
            )

    def _charge(
        self,
        plugin_id: str,
        tenant: str,
        key: str,
        size: int | None,
        *,
        max_keys: int | None,
        max_bytes: int | None,
    ) -> int | None:
        """charge_store, with the lock held."""
        owner = (plugin_id, tenant)
        sizes = self._sizes.get(owner, {})
        previous = sizes.get(key)
        usage = charge(
            plugin_id,
            tenant,
            self._usage.get(owner, _EMPTY),
            previous,
            size,
            max_keys=max_keys,
            max_bytes=max_bytes,
        )
        if size is None:
            sizes.pop(key, None)
        else:
            sizes[key] = size
        if sizes:
            self._sizes[owner] = sizes
            self._usage[owner] = usage
        else:
            self._sizes.pop(owner, None)
            self._usage.pop(owner, None)
        return previous

    def store_usage(self, plugin_id: str, tenant: str) -> StoreUsage:
        with self._lock:
            return self._usage.get((plugin_id, tenant), _EMPTY)

    def store_read(self, plugin_id: str, tenant: str, key: str) -> JSONValue:
        with self._lock:
            text = self._values.get((plugin_id, tenant), {}).get(key)
        return None if text is None else stored_value(text)

    def store_write(
        self,
        plugin_id: str,
        tenant: str,
        key: str,
        value: JSONValue,
        *,
        max_keys: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        text, size = store_value(key, value)
        with self._lock:
            self._charge(plugin_id, tenant, key, size, max_keys=max_keys, max_bytes=max_bytes)
            self._values.setdefault((plugin_id, tenant), {})[key] = text

    def store_remove(self, plugin_id: str, tenant: str, key: str) -> bool:
        owner = (plugin_id, tenant)
        with self._lock:
            values = self._values.get(owner, {})
            if values.pop(key, None) is None:
                return False
            if not values:
                del self._values[owner]
            self._charge(plugin_id, tenant, key, None, max_keys=None, max_bytes=None)
            return True

    def drop_store(self, plugin_id: str, tenant: str | None = None) -> int:
        with self._lock:
            owners = [
                owner
                for owner in self._values
                if owner[0] == plugin_id and (tenant is None or owner[1] == tenant)
            ]
            dropped = 0
            for owner in owners:
                for key in self._values.pop(owner):
                    self._charge(*owner, key, None, max_keys=None, max_bytes=None)
                    dropped += 1
            return dropped


_EMPTY = StoreUsage()


def add_metrics(total: HookMetrics | None, delta: MetricsDelta) -> HookMetrics:
    """Add one delta to a running total (None: the first)."""
    if total is None:
        return HookMetrics(
            plugin_id=delta.plugin_id,
            hook=delta.hook,
            calls=delta.calls,
            errors=delta.errors,
            total_duration=delta.total_duration,
            max_duration=delta.max_duration,
            last_call=delta.last_call,
        )
    return attrs.evolve(
        total,
        calls=total.calls + delta.calls,
        errors=total.errors + delta.errors,
        total_duration=total.total_duration + delta.total_duration,
        max_duration=max(total.max_duration, delta.max_duration),
        last_call=max(total.last_call, delta.last_call),
    )


def _matches(event: AuditEvent, query: AuditQuery) -> bool:
    return (
        (query.plugin_id is None or event.plugin_id == query.plugin_id)
        and (query.tenant is None or event.tenant == query.tenant)
        and (query.actor is None or event.actor == query.actor)
        and (query.action is None or event.action == query.action)
        and (query.since is None or event.at >= query.since)
        and (query.until is None or event.at < query.until)
    )


def _access_matches(record: AccessRecord, query: AccessQuery) -> bool:
    return (
        (query.plugin_id is None or record.plugin_id == query.plugin_id)
        and (query.tenant is None or record.tenant == query.tenant)
        and (query.method is None or record.method == query.method)
        and (query.record_type is None or record.record_type == query.record_type)
        and (query.record_id is None or query.record_id in record.record_ids)
        and (query.since is None or record.at >= query.since)
        and (query.until is None or record.at < query.until)
    )
