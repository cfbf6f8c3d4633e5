"""The registry in the project's own database: :class:`DjangoStorage`, over the app's models.

Every write is one ``transaction.atomic(using=alias)`` block that takes its lock
first: on PostgreSQL (and every database with ``SELECT ... FOR UPDATE``) the row
of the change counter for a commit, the store's totals row for a store write, and
``select_for_update()`` on the records it checks; on SQLite, which has no row
locks, a first statement that writes, so the transaction holds SQLite's write
lock before it reads anything (a deferred transaction that reads first cannot
take the lock later without "database is locked"). Writers of every thread and
process queue on that lock, and the revision check of a :class:`Change` runs
while it is held.

Keys are sorted in Python, by code points, whatever the database's collation.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from datetime import datetime, timezone
from typing import Any, Final, TypeVar, final

from django.conf import settings as django_settings
from django.core.exceptions import SynchronousOnlyOperation
from django.db import Error as DjangoDatabaseError
from django.db import connections, transaction
from django.db.models import Count, Exists, F, OuterRef, Sum

from .._json import JSONValue
from .._storage._protocol import (
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
    storable,
    store_value,
    stored_value,
)
from .._storage._rows import RowCodec
from ..errors import StorageError
from .models import (
    AccessEntry,
    AuditEntry,
    Failure,
    Generation,
    HookMetric,
    Plugin,
    PluginArtifact,
    PluginKeptVersion,
    PluginTenant,
    PluginVersion,
    RecordJSONEncoder,
    StoreSize,
    StoreTotal,
    StoreValue,
)

__all__ = ["DjangoStorage"]

_logger = logging.getLogger("services_ai_plugins.storage")

#: The key of the change counter's one row.
_GENERATION: Final = "generation"

#: What the database (or the conversions around it) raises; these become StorageError at
#: this seam. ValueError covers text that cannot be encoded, bad JSON and unknown enum
#: values in a damaged database; SynchronousOnlyOperation a call from an event loop.
_DRIVER_ERRORS: Final = (DjangoDatabaseError, ValueError, OverflowError, SynchronousOnlyOperation)

#: How many failure ids one UPDATE names (SQLite allows 999 parameters before 3.32).
_IDS_PER_STATEMENT: Final = 500

_BIGINT: Final = range(-(2**63), 2**63)

_T = TypeVar("_T")


@final
class DjangoStorage:
    """The registry's storage in a database of the Django project (``DATABASES[using]``).

    The records live in the tables of the ``services_ai_plugins`` app's models (run
    ``manage.py migrate``), read and written through the ORM, in the connection
    Django gives the calling thread. A connection that a call of this storage
    opened (in a thread of the host's own, say) is closed when the call returns,
    unless a transaction of the caller is still open: nothing is left open in
    threads Django does not manage.

    :meth:`commit` runs in a transaction of its own, never the caller's: a registry
    change that the caller's rollback undid would leave this process's host running
    what the database no longer says. So do :meth:`put_artifact` and
    :meth:`delete_artifact`: an archive a committed change names must not vanish with
    the caller's rollback. Called inside the caller's
    ``transaction.atomic()`` (a view under ``ATOMIC_REQUESTS``, a breaker trip
    during such a request), it commits on a connection of its own, from a thread
    that it waits for, on PostgreSQL; on SQLite, whose one writer may be the
    caller's own transaction, it refuses (StorageError): mark views that change
    plugins ``@transaction.non_atomic_requests``. Django's test cases are the
    exception, as for ``atomic(durable=True)``. The other writes (failures,
    metrics, the plugins' key-value stores) join the caller's transaction.

    On SQLite every write transaction writes first, so it takes SQLite's write
    lock at once and waits for it up to ``OPTIONS["timeout"]`` seconds (Python's
    default: 5); with ``ATOMIC_REQUESTS`` on SQLite, set ``OPTIONS
    ["transaction_mode"] = "IMMEDIATE"`` (Django 5.1+) so that request transactions do
    the same.

    Records come back sorted by code points, whatever the database's collation. It is
    not a :class:`~services_ai_plugins.ChangeFeed`: a host sees other processes'
    changes by polling :meth:`generation` (its ``refresh_interval``).

    The project's setting picks it (``"STORAGE": "django"``, or ``"django:<alias>"``
    for another database); to build a host by hand::

        from services_ai_plugins import PluginHost
        from services_ai_plugins.django.storage import DjangoStorage

        host = PluginHost(services, storage=DjangoStorage("default"))

    :raises StorageError: when ``using`` names no database of ``DATABASES``. Every
        method raises it for a database failure (Django's error is its
        ``__cause__``; missing tables are named with a hint to migrate) and once
        the storage is closed.

    .. versionadded:: 0.1.0
    """

    def __init__(self, using: str = "default") -> None:
        if using not in connections.settings:
            raise StorageError(
                f"DjangoStorage(using={using!r}): DATABASES has no such alias "
                f"(it has {sorted(connections.settings)})"
            )
        self._alias: Final = using
        self._closed = False

    def __repr__(self) -> str:
        return f"DjangoStorage(using={self._alias!r})"

    # -- Storage ---------------------------------------------------------------------------

    def generation(self) -> int:
        with self._using("read the change counter"):
            value = (
                Generation.objects.using(self._alias)
                .filter(key=_GENERATION)
                .values_list("value", flat=True)
                .first()
            )
            return 0 if value is None else int(value)

    def commit(self, change: Change) -> int:
        return self._on_its_own(self._commit, change)

    def _on_its_own(self, write: Callable[..., _T], *args: Any) -> _T:
        """Run ``write`` (which makes a durable transaction) outside the caller's transaction:
        on a connection of its own (a thread's) when the caller is in one, this thread
        waiting for it."""
        connection = connections[self._alias]
        if not (
            connection.in_atomic_block
            and connection.features.has_select_for_update
            and not any(getattr(a, "_from_testcase", False) for a in connection.atomic_blocks)
        ):
            return write(*args)
        outcome: list[_T | BaseException] = []

        def run() -> None:
            try:
                outcome.append(write(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                outcome.append(exc)

        worker = threading.Thread(target=run, name="services-ai-plugins-commit", daemon=True)
        worker.start()
        worker.join()
        found = outcome[0]
        if isinstance(found, BaseException):
            raise found
        return found

    def _commit(self, change: Change) -> int:
        plugin = _CODEC.plugin_params(change.plugin) if change.plugin is not None else None
        written = change.written_tenants()
        tenants = [_CODEC.tenant_params(record) for record in written]
        version = _CODEC.version_params(change.version) if change.version is not None else None
        keep = _CODEC.kept_params(change.keep) if change.keep is not None else None
        audit = _CODEC.audit_params(change.audit)
        plugin_id = change.plugin_id
        with self._transaction(f"commit a change of plugin {plugin_id!r}", durable=True):
            generation = self._lock_generation()
            change.check_plugin(self._revision(Plugin, id=plugin_id))
            stored: list[int] = []
            for record in written:
                stored.append(
                    self._revision(PluginTenant, plugin_id=plugin_id, tenant=record.tenant)
                )
                change.check_tenant(record, stored[-1])
            if change.clear_tenants:
                PluginTenant.objects.using(self._alias).filter(plugin_id=plugin_id).delete()
                self._drop_store(plugin_id, None)
            if plugin is not None:
                self._put(Plugin, plugin, created=plugin["revision"] == 1, id=plugin_id)
            for record, fields, revision in zip(written, tenants, stored, strict=True):
                self._put(
                    PluginTenant,
                    fields,
                    created=change.clear_tenants or revision == 0,
                    plugin_id=plugin_id,
                    tenant=record.tenant,
                )
            if version is not None:
                PluginVersion.objects.using(self._alias).create(**version)
            # Forget before keep, so a change may forget a version and keep it anew.
            if change.forget:
                PluginKeptVersion.objects.using(self._alias).filter(
                    plugin_id=plugin_id, version__in=change.forget
                ).delete()
            if keep is not None:
                kept = PluginKeptVersion.objects.using(self._alias)
                if not kept.filter(plugin_id=plugin_id, version=keep["version"]).update(**keep):
                    kept.create(**keep)
            AuditEntry.objects.using(self._alias).create(**audit)
            Generation.objects.using(self._alias).filter(key=_GENERATION).update(
                value=F("value") + 1
            )
            return generation + 1

    def get_plugin(self, plugin_id: str) -> PluginRecord | None:
        with self._using(f"read plugin {plugin_id!r}"):
            row = Plugin.objects.using(self._alias).filter(id=plugin_id).values().first()
            return None if row is None else _CODEC.plugin(row)

    def list_plugins(self, status: PluginStatus | None = None) -> list[PluginRecord]:
        rows = Plugin.objects.using(self._alias).all()
        if status is not None:
            rows = rows.filter(status=PluginStatus(status).value)
        with self._using("list the plugins"):
            return sorted(map(_CODEC.plugin, rows.values()), key=lambda record: record.id)

    def get_tenant(self, plugin_id: str, tenant: str) -> TenantRecord | None:
        with self._using(f"read plugin {plugin_id!r} for tenant {tenant!r}"):
            row = (
                PluginTenant.objects.using(self._alias)
                .filter(plugin_id=plugin_id, tenant=tenant)
                .values()
                .first()
            )
            return None if row is None else _CODEC.tenant(row)

    def list_tenants(self, plugin_id: str) -> list[TenantRecord]:
        with self._using(f"list the tenants of plugin {plugin_id!r}"):
            rows = PluginTenant.objects.using(self._alias).filter(plugin_id=plugin_id)
            return sorted(map(_CODEC.tenant, rows.values()), key=lambda record: record.tenant)

    def enabled_plugins(self, tenant: str) -> list[str]:
        with self._using(f"list the plugins enabled for tenant {tenant!r}"):
            ids = (
                PluginTenant.objects.using(self._alias)
                .filter(
                    tenant=tenant,
                    enabled=True,
                    suspended_reason__isnull=True,
                    plugin__status=PluginStatus.APPROVED.value,
                )
                .values_list("plugin_id", flat=True)
            )
            return sorted(str(plugin_id) for plugin_id in ids)

    def versions(self, plugin_id: str) -> list[VersionRecord]:
        with self._using(f"list the versions of plugin {plugin_id!r}"):
            rows = PluginVersion.objects.using(self._alias).filter(plugin_id=plugin_id)
            return [_CODEC.version(row) for row in rows.order_by("id").values()]

    def kept_versions(self, plugin_id: str) -> list[KeptVersion]:
        with self._using(f"list the kept versions of plugin {plugin_id!r}"):
            rows = PluginKeptVersion.objects.using(self._alias).filter(plugin_id=plugin_id)
            return [_CODEC.kept(row) for row in rows.order_by("kept_at", "id").values()]

    def put_artifact(self, sha256: str, data: bytes) -> None:
        check_artifact(sha256, data)
        self._on_its_own(self._put_artifact, sha256, bytes(data))

    def _put_artifact(self, sha256: str, data: bytes) -> None:
        row = PluginArtifact(
            sha256=sha256,
            data=data,
            size=len(data),
            stored_at=_moment(datetime.now(timezone.utc)),
        )
        with self._transaction(f"store the archive {sha256}", durable=True):
            # A hash already kept keeps its first copy (the bytes are the same): racing
            # puts both pass.
            PluginArtifact.objects.using(self._alias).bulk_create([row], ignore_conflicts=True)

    def get_artifact(self, sha256: str) -> bytes | None:
        with self._using(f"read the archive {sha256}"):
            data = (
                PluginArtifact.objects.using(self._alias)
                .filter(sha256=sha256)
                .values_list("data", flat=True)
                .first()
            )
            return None if data is None else bytes(data)

    def delete_artifact(self, sha256: str) -> bool:
        return self._on_its_own(self._delete_artifact, sha256)

    def _delete_artifact(self, sha256: str) -> bool:
        with self._transaction(f"delete the archive {sha256}", durable=True):
            gone, _ = PluginArtifact.objects.using(self._alias).filter(sha256=sha256).delete()
            return bool(gone)

    def artifacts(self) -> list[ArtifactInfo]:
        with self._using("list the archives"):
            rows = PluginArtifact.objects.using(self._alias).values("sha256", "size", "stored_at")
            return sorted(map(_CODEC.artifact, rows), key=lambda info: info.sha256)

    def audit(self, query: AuditQuery) -> list[AuditEvent]:
        rows = AuditEntry.objects.using(self._alias).all()
        for field in ("plugin_id", "tenant", "actor", "action"):
            value = getattr(query, field)
            if value is not None:
                rows = rows.filter(**{field: value})
        if query.since is not None:
            rows = rows.filter(at__gte=_moment(query.since))
        if query.until is not None:
            rows = rows.filter(at__lt=_moment(query.until))
        with self._using("read the audit trail"):
            return [_CODEC.audit(row) for row in rows.order_by("-id").values()[: query.limit]]

    def record_failures(self, failures: Sequence[FailureRecord]) -> None:
        rows = [Failure(**_CODEC.failure_params(storable(failure))) for failure in failures]
        if not rows:
            self._check_open()
            return
        with self._transaction(f"store {len(rows)} plugin failures"):
            Failure.objects.using(self._alias).bulk_create(rows)

    def failures(
        self, plugin_id: str | None = None, *, resolved: bool | None = None, limit: int = 1000
    ) -> list[FailureRecord]:
        check_limit(limit)
        rows = Failure.objects.using(self._alias).all()
        if plugin_id is not None:
            rows = rows.filter(plugin_id=plugin_id)
        if resolved is not None:
            rows = rows.filter(resolved=resolved)
        with self._using("list the plugin failures"):
            return [_CODEC.failure(row) for row in rows.order_by("-id").values()[:limit]]

    def resolve_failures(
        self, plugin_id: str, tenant: str | None = None, *, ids: Sequence[int] | None = None
    ) -> int:
        rows = Failure.objects.using(self._alias).filter(plugin_id=plugin_id, resolved=False)
        if tenant is not None:
            rows = rows.filter(tenant=tenant)
        what = f"resolve failures of plugin {plugin_id!r}"
        if ids is None:
            with self._transaction(what):
                return int(rows.update(resolved=True))
        # An id outside bigint names no failure: leave it out rather than fail the query.
        wanted = [i for i in check_ids(ids) if i in _BIGINT]
        if not wanted:
            self._check_open()
            return 0
        count = 0
        with self._transaction(what):
            # In chunks: SQLite limits the number of parameters of one statement.
            for start in range(0, len(wanted), _IDS_PER_STATEMENT):
                chunk = wanted[start : start + _IDS_PER_STATEMENT]
                count += rows.filter(id__in=chunk).update(resolved=True)
        return count

    def record_metrics(self, deltas: Sequence[MetricsDelta]) -> None:
        # In key order, so that concurrent batches lock their rows in one order and never
        # deadlock; a stable sort keeps a key's deltas in batch order.
        ordered = sorted(deltas, key=lambda d: (d.plugin_id, d.hook))
        fields = [_CODEC.metrics_params(delta) for delta in ordered]
        if not fields:
            self._check_open()
            return
        rows = HookMetric.objects.using(self._alias).select_for_update()
        with self._transaction(f"store the metrics of {len(fields)} hook calls"):
            for delta, values in zip(ordered, fields, strict=True):
                row, created = rows.get_or_create(
                    plugin_id=delta.plugin_id, hook=delta.hook, defaults=values
                )
                if created:
                    continue
                HookMetric.objects.using(self._alias).filter(pk=row.pk).update(
                    calls=row.calls + delta.calls,
                    errors=row.errors + delta.errors,
                    total_duration=row.total_duration + delta.total_duration,
                    max_duration=max(row.max_duration, delta.max_duration),
                    last_call=max(row.last_call, values["last_call"]),
                )

    def record_access(self, records: Sequence[AccessRecord]) -> None:
        rows = [
            AccessEntry(
                plugin_id=r.plugin_id,
                tenant=r.tenant,
                method=r.method,
                permission=r.permission,
                record_type=r.record_type,
                record_ids=_access_ids(r.record_ids),
                count=r.count,
                at=_moment(r.at),
            )
            for r in records
        ]
        if not rows:
            self._check_open()
            return
        with self._transaction(f"store {len(rows)} data-access records"):
            AccessEntry.objects.using(self._alias).bulk_create(rows)

    def access_log(self, query: AccessQuery) -> list[AccessRecord]:
        check_limit(query.limit)
        rows = AccessEntry.objects.using(self._alias).all()
        for field in ("plugin_id", "tenant", "method", "record_type"):
            value = getattr(query, field)
            if value is not None:
                rows = rows.filter(**{field: value})
        wanted = None
        if query.record_id is not None:
            wanted = _access_ids([query.record_id])
            rows = rows.filter(record_ids__contains=wanted)
        if query.since is not None:
            rows = rows.filter(at__gte=_moment(query.since))
        if query.until is not None:
            rows = rows.filter(at__lt=_moment(query.until))
        found: list[AccessRecord] = []
        if query.limit == 0:
            self._check_open()
            return found
        with self._using("read the data-access log"):
            for row in rows.order_by("-at", "-id").values().iterator():
                # LIKE may ignore case (SQLite, MySQL): the exact id is checked here.
                if wanted is not None and wanted not in row["record_ids"]:
                    continue
                found.append(_access_record(row))
                if len(found) >= query.limit:
                    break
        return found

    def prune_access(self, before: datetime) -> int:
        rows = AccessEntry.objects.using(self._alias).filter(at__lt=_moment(before))
        with self._transaction("prune the data-access log"):
            deleted, _ = rows.delete()
            return int(deleted)

    def metrics(self, plugin_id: str | None = None) -> list[HookMetrics]:
        rows = HookMetric.objects.using(self._alias).all()
        if plugin_id is not None:
            rows = rows.filter(plugin_id=plugin_id)
        with self._using("read the hook metrics"):
            return sorted(map(_CODEC.metrics, rows.values()), key=lambda m: (m.plugin_id, m.hook))

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
        if size is not None and size not in _BIGINT:
            raise StorageError(f"cannot store a size of {size} bytes: it is not a bigint")
        with self._transaction(f"charge the store of plugin {plugin_id!r} for {tenant!r}"):
            return self._charge(
                plugin_id, tenant, key, size, max_keys=max_keys, max_bytes=max_bytes
            )

    def store_usage(self, plugin_id: str, tenant: str) -> StoreUsage:
        with self._using(f"read the store usage of plugin {plugin_id!r} for {tenant!r}"):
            row = (
                StoreTotal.objects.using(self._alias)
                .filter(plugin_id=plugin_id, tenant=tenant)
                .values_list("keys", "bytes")
                .first()
            )
            return StoreUsage() if row is None else StoreUsage(keys=int(row[0]), bytes=int(row[1]))

    def store_read(self, plugin_id: str, tenant: str, key: str) -> JSONValue:
        with self._using(f"read store key {key!r} of plugin {plugin_id!r} for {tenant!r}"):
            text = (
                StoreValue.objects.using(self._alias)
                .filter(plugin_id=plugin_id, tenant=tenant, key=key)
                .values_list("value", flat=True)
                .first()
            )
            return None if text is None else stored_value(str(text))

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
        # The charge and the value in one transaction, under the store's lock: a refused
        # charge writes neither.
        with self._transaction(f"write store key {key!r} of plugin {plugin_id!r} for {tenant!r}"):
            self._charge(plugin_id, tenant, key, size, max_keys=max_keys, max_bytes=max_bytes)
            values = StoreValue.objects.using(self._alias)
            if not values.filter(plugin_id=plugin_id, tenant=tenant, key=key).update(value=text):
                values.create(plugin_id=plugin_id, tenant=tenant, key=key, value=text)

    def store_remove(self, plugin_id: str, tenant: str, key: str) -> bool:
        with self._transaction(f"remove store key {key!r} of plugin {plugin_id!r} for {tenant!r}"):
            # Lock the store first, as a write does, then forget the value and its charge.
            self._lock_store(plugin_id, tenant)
            gone, _ = (
                StoreValue.objects.using(self._alias)
                .filter(plugin_id=plugin_id, tenant=tenant, key=key)
                .delete()
            )
            if gone:
                self._charge(plugin_id, tenant, key, None, max_keys=None, max_bytes=None)
            else:
                StoreTotal.objects.using(self._alias).filter(
                    plugin_id=plugin_id, tenant=tenant, keys=0
                ).delete()
            return bool(gone)

    def drop_store(self, plugin_id: str, tenant: str | None = None) -> int:
        with self._transaction(f"drop the store of plugin {plugin_id!r}"):
            return self._drop_store(plugin_id, tenant)

    def close(self) -> None:
        """Refuse every later call; closing twice is harmless.

        The storage keeps no connection of its own: each call returns the ones it opened.
        """
        self._closed = True

    # -- the writes' steps, inside a transaction of :meth:`_transaction` -----------------------

    def _lock_generation(self) -> int:
        """Lock the change counter's row (making it if need be); its value."""
        row, _ = (
            Generation.objects.using(self._alias)
            .select_for_update()
            .get_or_create(key=_GENERATION, defaults={"value": 0})
        )
        return int(row.value)

    def _revision(self, model: Any, **where: str) -> int:
        """The stored revision of a record (its row locked), or 0 when there is none."""
        revision = (
            model.objects.using(self._alias)
            .select_for_update()
            .filter(**where)
            .values_list("revision", flat=True)
            .first()
        )
        return 0 if revision is None else int(revision)

    def _put(self, model: Any, fields: dict[str, Any], *, created: bool, **key: str) -> None:
        """Insert the record (``created``) or update its row: the revision check said which."""
        rows = model.objects.using(self._alias)
        if created:
            rows.create(**fields)
        else:
            rows.filter(**key).update(**fields)

    def _lock_store(self, plugin_id: str, tenant: str) -> StoreUsage:
        """Lock the store's totals row (making it if need be): charges of one store queue."""
        row, _ = (
            StoreTotal.objects.using(self._alias)
            .select_for_update()
            .get_or_create(plugin_id=plugin_id, tenant=tenant, defaults={"keys": 0, "bytes": 0})
        )
        return StoreUsage(keys=int(row.keys), bytes=int(row.bytes))

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
        """charge_store inside the caller's transaction; the size recorded before."""
        usage = self._lock_store(plugin_id, tenant)
        sizes = StoreSize.objects.using(self._alias).filter(
            plugin_id=plugin_id, tenant=tenant, key=key
        )
        found = sizes.values_list("bytes", flat=True).first()
        previous = None if found is None else int(found)
        after = charge(
            plugin_id, tenant, usage, previous, size, max_keys=max_keys, max_bytes=max_bytes
        )
        if size is None:
            sizes.delete()
        elif previous is None:
            StoreSize.objects.using(self._alias).create(
                plugin_id=plugin_id, tenant=tenant, key=key, bytes=size
            )
        else:
            sizes.update(bytes=size)
        totals = StoreTotal.objects.using(self._alias).filter(plugin_id=plugin_id, tenant=tenant)
        if after.keys:
            totals.update(keys=after.keys, bytes=after.bytes)
        else:
            totals.delete()
        return previous

    def _drop_store(self, plugin_id: str, tenant: str | None) -> int:
        """drop_store inside the caller's transaction: the values, their charges, the totals
        recounted from the charges left (those of values the host services keep)."""
        where: dict[str, str] = {"plugin_id": plugin_id}
        if tenant is not None:
            where["tenant"] = tenant
        totals = StoreTotal.objects.using(self._alias).filter(**where)
        # Lock the stores' totals rows in order, as charges lock them one each.
        locked = list(
            totals.select_for_update().order_by("tenant").values_list("tenant", flat=True)
        )
        values = StoreValue.objects.using(self._alias).filter(**where)
        StoreSize.objects.using(self._alias).filter(**where).filter(
            Exists(
                StoreValue.objects.using(self._alias).filter(
                    plugin_id=OuterRef("plugin_id"), tenant=OuterRef("tenant"), key=OuterRef("key")
                )
            )
        ).delete()
        left = {
            row["tenant"]: (int(row["keys"]), int(row["total"]))
            for row in StoreSize.objects.using(self._alias)
            .filter(**where)
            .values("tenant")
            .annotate(keys=Count("id"), total=Sum("bytes"))
        }
        for name in locked:
            keys, size = left.get(name, (0, 0))
            store = totals.filter(tenant=name)
            if keys:
                store.update(keys=keys, bytes=size)
            else:
                store.delete()
        dropped, _ = values.delete()
        return int(dropped)

    # -- plumbing ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self!r} is closed")

    @contextmanager
    def _using(self, what: str) -> Iterator[Any]:
        """The calling thread's connection; database errors become StorageError naming
        ``what``; a connection this call opened is closed when it returns (outside a
        transaction)."""
        self._check_open()
        connection = connections[self._alias]
        opened = connection.connection is None
        try:
            yield connection
        except _DRIVER_ERRORS as exc:
            if not connection.in_atomic_block:
                # A broken connection the thread keeps (a restarted server) is replaced.
                with suppress(DjangoDatabaseError):
                    connection.close_if_unusable_or_obsolete()
            raise StorageError(f"{self!r}: cannot {what}: {exc}{_hint(exc)}") from exc
        finally:
            if opened and not connection.in_atomic_block:
                try:
                    connection.close()
                except DjangoDatabaseError as exc:  # what it did stands: only the close failed
                    _logger.warning("%r: cannot close a database connection: %s", self, exc)

    @contextmanager
    def _transaction(self, what: str, *, durable: bool = False) -> Iterator[Any]:
        """One transaction holding its lock from the start: committed if the block returns,
        rolled back if it raises."""
        with self._using(what) as connection, ExitStack() as stack:
            try:
                stack.enter_context(transaction.atomic(using=self._alias, durable=durable))
            except RuntimeError as exc:  # durable=True inside the caller's transaction
                raise StorageError(
                    f"{self!r}: cannot {what} inside the caller's transaction.atomic(): a "
                    "registry change commits on its own, so that no rollback undoes what "
                    "the host already acts on; call it outside the atomic block (with "
                    "ATOMIC_REQUESTS, mark the view @transaction.non_atomic_requests)"
                ) from exc
            if not connection.features.has_select_for_update:
                # SQLite: a write first, so that this transaction holds the write lock before
                # it reads (a zero-row UPDATE takes it too).
                Generation.objects.using(self._alias).filter(key=_GENERATION).update(
                    value=F("value")
                )
            yield connection


def _hint(error: BaseException) -> str:
    text = str(error)
    if "no such table" in text or ("relation" in text and "does not exist" in text):
        return " (are the services_ai_plugins migrations applied? run manage.py migrate)"
    if "database is locked" in text:
        return (
            " (another writer held SQLite's write lock longer than the database's "
            "OPTIONS['timeout'] seconds)"
        )
    if isinstance(error, SynchronousOnlyOperation):
        return " (call the storage from a thread, e.g. through asgiref's sync_to_async)"
    return ""


# -- records to model fields -----------------------------------------------------------------


def _moment(value: datetime) -> datetime:
    """An aware datetime as the project stores it: aware UTC with USE_TZ, naive UTC without."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise StorageError(
            f"cannot store the naive datetime {value.isoformat()}: "
            "records carry timezone-aware UTC datetimes"
        )
    try:
        moment = value.astimezone(timezone.utc)
    except OverflowError as exc:
        raise StorageError(f"cannot store the datetime {value.isoformat()}: {exc}") from exc
    return moment if django_settings.USE_TZ else moment.replace(tzinfo=None)


def _json(value: object, what: str) -> Any:
    """A JSON document as given (a copy), once it is known to encode."""
    try:
        text = RecordJSONEncoder().encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StorageError(f"cannot store {what} as JSON: {exc}") from exc
    return json.loads(text)


# -- model rows to records -------------------------------------------------------------------


def _access_ids(ids: Sequence[str]) -> str:
    """``,"a","b",``: each id's JSON text followed by a comma, after a leading comma. An
    unescaped quote after a comma starts an id, so ``,"a",`` is found only for the id ``a``."""
    return "," + "".join(json.dumps(i, ensure_ascii=False) + "," for i in ids)


def _access_record(row: dict[str, Any]) -> AccessRecord:
    text = row["record_ids"]
    ids = json.loads("[" + text[1:-1] + "]") if len(text) > 1 else []
    return AccessRecord(
        id=row["id"],
        plugin_id=row["plugin_id"],
        tenant=row["tenant"],
        method=row["method"],
        permission=row["permission"],
        record_type=row["record_type"],
        record_ids=tuple(ids),
        count=row["count"],
        at=_time(row["at"]),
    )


def _time(value: datetime) -> datetime:
    """The instant in UTC, aware (a naive value, without USE_TZ, is UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _object(value: object) -> dict[str, JSONValue]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, found {type(value).__name__}")
    return value


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"expected a JSON list of strings, found {value!r}")
    return tuple(value)


#: The records as the app's models keep them: the shared SQL row codec, with Django's
#: values (JSON documents as Python values, aware or naive datetimes as USE_TZ says).
_CODEC: Final = RowCodec(
    moment=_moment,
    json=lambda value, what: _json(dict(value), what),
    strings=lambda value, what: _json(list(value), what),
    flag=bool,
    number=float,
    read_time=_time,
    read_object=_object,
    read_strings=_strings,
)
