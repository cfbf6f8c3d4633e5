"""Records to statement parameters and rows back to records, shared by the SQL backends.

Which parameter and column holds which field is the same in every SQL backend;
what differs is how a single value is stored (a datetime as ISO text or as
``timestamptz``, a flag as an int or a bool, a tuple of strings as JSON text or
as an array). Each backend describes that in a :class:`RowCodec`, and the
codec's methods build the parameters of its statements and read its rows.
Rows are read by column name (``sqlite3.Row`` and psycopg's ``DictRow`` both
allow it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol, cast

import attrs

from .._json import JSONValue
from ._protocol import (
    AccessQuery,
    AccessRecord,
    ArtifactInfo,
    AuditEvent,
    AuditQuery,
    FailureRecord,
    HookMetrics,
    KeptVersion,
    MetricsDelta,
    PluginRecord,
    PluginStatus,
    SourceKind,
    StagedVersion,
    TenantRecord,
    VersionRecord,
    staged_from_json,
    staged_to_json,
)

__all__ = ["Params", "Row", "RowCodec"]

#: The named parameters of one statement.
Params = dict[str, object]


class Row(Protocol):
    """A fetched row whose columns are read by name."""

    def __getitem__(self, key: str, /) -> Any: ...


@attrs.frozen
class RowCodec:
    """How one backend stores single values; its methods convert whole records."""

    # Writing: a field's value to a statement parameter.

    #: An aware datetime (StorageError for a naive one).
    moment: Callable[[datetime], object]
    #: A JSON object; the second argument names it in the StorageError for what cannot be stored.
    json: Callable[[Mapping[str, JSONValue], str], object]
    #: A tuple of strings, named by the second argument as for :attr:`json`.
    strings: Callable[[tuple[str, ...], str], object]
    flag: Callable[[bool], object]
    #: A duration in seconds.
    number: Callable[[float], object]

    # Reading: a column's value to a field's value.

    read_time: Callable[[Any], datetime]
    read_object: Callable[[Any], dict[str, JSONValue]]
    read_strings: Callable[[Any], tuple[str, ...]]

    #: The driver's positional parameter marker (``?``, ``%s``).
    marker: str = "?"

    # Filters: the WHERE conditions (joined with AND) and their parameters.

    def audit_filter(self, query: AuditQuery) -> tuple[list[str], list[object]]:
        """The conditions of an :class:`AuditQuery`: every given field must match."""
        return self._matching(
            (
                ("plugin_id", query.plugin_id),
                ("tenant", query.tenant),
                ("actor", query.actor),
                ("action", query.action),
            ),
            query.since,
            query.until,
        )

    def access_filter(self, query: AccessQuery, holds_id: str) -> tuple[list[str], list[object]]:
        """The conditions of an :class:`AccessQuery`: every given field must match.

        ``holds_id`` is the backend's condition that ``record_ids`` holds one id, with
        one parameter marker for it (a JSON array in SQLite, a text array elsewhere).
        """
        where, params = self._matching(
            (
                ("plugin_id", query.plugin_id),
                ("tenant", query.tenant),
                ("method", query.method),
                ("record_type", query.record_type),
            ),
            query.since,
            query.until,
        )
        if query.record_id is not None:
            where.append(holds_id)
            params.append(query.record_id)
        return where, params

    def _matching(
        self,
        equal: tuple[tuple[str, str | None], ...],
        since: datetime | None,
        until: datetime | None,
    ) -> tuple[list[str], list[object]]:
        """Each given column equal to its value, and ``at`` within [since, until)."""
        where: list[str] = []
        params: list[object] = []
        for column, value in equal:
            if value is not None:
                where.append(f"{column} = {self.marker}")
                params.append(value)
        if since is not None:
            where.append(f"at >= {self.marker}")
            params.append(self.moment(since))
        if until is not None:
            where.append(f"at < {self.marker}")
            params.append(self.moment(until))
        return where, params

    def failure_filter(
        self, plugin_id: str | None, resolved: bool | None
    ) -> tuple[list[str], list[object]]:
        """The conditions of ``Storage.failures(plugin_id, resolved=...)``."""
        where: list[str] = []
        params: list[object] = []
        if plugin_id is not None:
            where.append(f"plugin_id = {self.marker}")
            params.append(plugin_id)
        if resolved is not None:
            where.append(f"resolved = {self.marker}")
            params.append(self.flag(resolved))
        return where, params

    def plugin_params(self, record: PluginRecord) -> Params:
        return {
            "id": record.id,
            "name": record.name,
            "version": record.version,
            "status": PluginStatus(record.status).value,
            "manifest": self.json(record.manifest, f"the manifest of plugin {record.id!r}"),
            "code_hash": record.code_hash,
            "source": SourceKind(record.source).value,
            "package_path": record.package_path,
            "installed_at": self.moment(record.installed_at),
            "installed_by": record.installed_by,
            "approved_at": None if record.approved_at is None else self.moment(record.approved_at),
            "approved_by": record.approved_by,
            "status_reason": record.status_reason,
            "granted_permissions": self.strings(
                record.granted_permissions, f"the permissions of plugin {record.id!r}"
            ),
            "revision": record.revision,
            "artifact": record.artifact,
            "staged": None
            if record.staged is None
            else self.json(
                staged_to_json(record.staged), f"the staged version of plugin {record.id!r}"
            ),
        }

    def tenant_params(self, record: TenantRecord) -> Params:
        where = f"plugin {record.plugin_id!r} for tenant {record.tenant!r}"
        return {
            "plugin_id": record.plugin_id,
            "tenant": record.tenant,
            "enabled": self.flag(record.enabled),
            "suspended_reason": record.suspended_reason,
            "optional_grants": self.strings(record.optional_grants, f"the grants of {where}"),
            "settings": self.json(dict(record.settings), f"the settings of {where}"),
            "changed_at": self.moment(record.changed_at),
            "changed_by": record.changed_by,
            "revision": record.revision,
        }

    def version_params(self, record: VersionRecord) -> Params:
        return {
            "plugin_id": record.plugin_id,
            "version": record.version,
            "code_hash": record.code_hash,
            "changelog": record.changelog,
            "installed_at": self.moment(record.installed_at),
            "installed_by": record.installed_by,
        }

    def kept_params(self, record: KeptVersion) -> Params:
        where = f"kept version {record.version!r} of plugin {record.plugin_id!r}"
        return {
            "plugin_id": record.plugin_id,
            "version": record.version,
            "manifest": self.json(record.manifest, f"the manifest of {where}"),
            "code_hash": record.code_hash,
            "source": SourceKind(record.source).value,
            "package_path": record.package_path,
            "artifact": record.artifact,
            "granted_permissions": self.strings(
                record.granted_permissions, f"the permissions of {where}"
            ),
            "tenants": self.json(
                {tenant: dict(state) for tenant, state in record.tenants.items()},
                f"the tenants of {where}",
            ),
            "kept_at": self.moment(record.kept_at),
        }

    def audit_params(self, event: AuditEvent) -> Params:
        return {
            "at": self.moment(event.at),
            "actor": event.actor,
            "action": event.action,
            "plugin_id": event.plugin_id,
            "tenant": event.tenant,
            "before_json": self._optional_json(event.before, "an audit event's 'before'"),
            "after_json": self._optional_json(event.after, "an audit event's 'after'"),
        }

    def failure_params(self, failure: FailureRecord) -> Params:
        return {
            "plugin_id": failure.plugin_id,
            "tenant": failure.tenant,
            "hook": failure.hook,
            "exc_type": failure.exc_type,
            "message": failure.message,
            "traceback": failure.traceback,
            "at": self.moment(failure.at),
            "resolved": self.flag(failure.resolved),
        }

    def access_params(self, record: AccessRecord) -> Params:
        return {
            "plugin_id": record.plugin_id,
            "tenant": record.tenant,
            "method": record.method,
            "permission": record.permission,
            "record_type": record.record_type,
            "record_ids": self.strings(record.record_ids, "record ids"),
            "count": record.count,
            "at": self.moment(record.at),
        }

    def metrics_params(self, delta: MetricsDelta) -> Params:
        return {
            "plugin_id": delta.plugin_id,
            "hook": delta.hook,
            "calls": delta.calls,
            "errors": delta.errors,
            "total_duration": self.number(delta.total_duration),
            "max_duration": self.number(delta.max_duration),
            "last_call": self.moment(delta.last_call),
        }

    def plugin(self, row: Row) -> PluginRecord:
        approved_at = row["approved_at"]
        return PluginRecord(
            id=row["id"],
            name=row["name"],
            version=row["version"],
            status=PluginStatus(row["status"]),
            manifest=self.read_object(row["manifest"]),
            code_hash=row["code_hash"],
            source=SourceKind(row["source"]),
            package_path=row["package_path"],
            installed_at=self.read_time(row["installed_at"]),
            installed_by=row["installed_by"],
            approved_at=None if approved_at is None else self.read_time(approved_at),
            approved_by=row["approved_by"],
            status_reason=row["status_reason"],
            granted_permissions=self.read_strings(row["granted_permissions"]),
            revision=row["revision"],
            artifact=row["artifact"],
            staged=self._staged(row["staged"], row["id"]),
        )

    def tenant(self, row: Row) -> TenantRecord:
        return TenantRecord(
            plugin_id=row["plugin_id"],
            tenant=row["tenant"],
            enabled=bool(row["enabled"]),
            suspended_reason=row["suspended_reason"],
            optional_grants=self.read_strings(row["optional_grants"]),
            settings=self.read_object(row["settings"]),
            changed_at=self.read_time(row["changed_at"]),
            changed_by=row["changed_by"],
            revision=row["revision"],
        )

    def version(self, row: Row) -> VersionRecord:
        return VersionRecord(
            plugin_id=row["plugin_id"],
            version=row["version"],
            code_hash=row["code_hash"],
            changelog=row["changelog"],
            installed_at=self.read_time(row["installed_at"]),
            installed_by=row["installed_by"],
        )

    def kept(self, row: Row) -> KeptVersion:
        tenants = self.read_object(row["tenants"])
        for tenant, state in tenants.items():
            if not isinstance(state, dict):
                raise ValueError(
                    f"kept version {row['version']!r} of plugin {row['plugin_id']!r}: the state "
                    f"of tenant {tenant!r} is not a JSON object"
                )
        return KeptVersion(
            plugin_id=row["plugin_id"],
            version=row["version"],
            manifest=self.read_object(row["manifest"]),
            code_hash=row["code_hash"],
            source=SourceKind(row["source"]),
            package_path=row["package_path"],
            artifact=row["artifact"],
            granted_permissions=self.read_strings(row["granted_permissions"]),
            tenants=cast("dict[str, Mapping[str, JSONValue]]", tenants),
            kept_at=self.read_time(row["kept_at"]),
        )

    def artifact(self, row: Row) -> ArtifactInfo:
        return ArtifactInfo(
            sha256=row["sha256"], size=int(row["size"]), stored_at=self.read_time(row["stored_at"])
        )

    def audit(self, row: Row) -> AuditEvent:
        return AuditEvent(
            id=row["id"],
            at=self.read_time(row["at"]),
            actor=row["actor"],
            action=row["action"],
            plugin_id=row["plugin_id"],
            tenant=row["tenant"],
            before=self._optional_object(row["before_json"]),
            after=self._optional_object(row["after_json"]),
        )

    def failure(self, row: Row) -> FailureRecord:
        return FailureRecord(
            id=row["id"],
            plugin_id=row["plugin_id"],
            tenant=row["tenant"],
            hook=row["hook"],
            exc_type=row["exc_type"],
            message=row["message"],
            traceback=row["traceback"],
            at=self.read_time(row["at"]),
            resolved=bool(row["resolved"]),
        )

    def access(self, row: Row) -> AccessRecord:
        return AccessRecord(
            id=row["id"],
            plugin_id=row["plugin_id"],
            tenant=row["tenant"],
            method=row["method"],
            permission=row["permission"],
            record_type=row["record_type"],
            record_ids=self.read_strings(row["record_ids"]),
            count=row["count"],
            at=self.read_time(row["at"]),
        )

    def metrics(self, row: Row) -> HookMetrics:
        return HookMetrics(
            plugin_id=row["plugin_id"],
            hook=row["hook"],
            calls=row["calls"],
            errors=row["errors"],
            total_duration=row["total_duration"],
            max_duration=row["max_duration"],
            last_call=self.read_time(row["last_call"]),
        )

    def _staged(self, value: object, plugin_id: str) -> StagedVersion | None:
        if value is None:
            return None
        try:
            return staged_from_json(self.read_object(value))
        except (KeyError, TypeError) as exc:
            # ValueError, like the other damage a backend translates at its seam.
            raise ValueError(
                f"the staged version of plugin {plugin_id!r} is damaged: {exc!r}"
            ) from exc

    def _optional_json(self, value: Mapping[str, JSONValue] | None, what: str) -> object:
        return None if value is None else self.json(dict(value), what)

    def _optional_object(self, value: object) -> dict[str, JSONValue] | None:
        return None if value is None else self.read_object(value)
