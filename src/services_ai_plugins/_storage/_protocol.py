"""The storage seam: the records the registry keeps, and the protocol a backend implements.

A backend stores six kinds of record and applies every lifecycle change as one
:class:`Change` in one transaction. It never decides anything: the registry
computes the new records, the backend checks their revisions and writes them
with their audit event, or raises :class:`ConflictError` and writes nothing.

The revision rule is the same for every versioned record: a record written with
revision ``r`` requires the stored one to have revision ``r - 1`` (``r == 1``:
that there is none).
"""

from __future__ import annotations

import hashlib
import json
import re
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from types import EllipsisType, TracebackType
from typing import Any, Final, Protocol, runtime_checkable

import attrs

from .._json import JSONValue, check_json
from .._kinds import PluginStatus, SourceKind
from ..errors import ConflictError, QuotaExceeded, RemoteError

__all__ = [
    "MAX_ACCESS_IDS",
    "AccessQuery",
    "AccessRecord",
    "AccessStorage",
    "ArtifactInfo",
    "ArtifactStore",
    "AuditEvent",
    "AuditQuery",
    "Change",
    "ChangeFeed",
    "FailureRecord",
    "HookMetrics",
    "KeptVersion",
    "MetricsDelta",
    "PluginRecord",
    "PluginStatus",
    "SourceKind",
    "StagedVersion",
    "Storage",
    "StorageArtifacts",
    "StoreUsage",
    "TenantRecord",
    "VersionRecord",
    "check_artifact",
    "failure_of",
    "make_failure",
    "staged_from_json",
    "staged_to_json",
    "storable",
]


def _aware(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError(f"{attribute.name} must be timezone-aware (got {value!r})")


def check_limit(limit: object) -> int:
    """Return ``limit`` if it is a non-negative ``int`` (not a ``bool``); backends call it.

    :raises ValueError: naming ``limit`` otherwise.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative int (got {limit!r})")
    return limit


def check_ids(ids: Sequence[int]) -> list[int]:
    """The distinct failure ids of ``ids``, sorted; backends call it.

    :raises ValueError: naming ``ids`` when one is not an ``int`` (or is a ``bool``).
    """
    if isinstance(ids, (str, bytes)):
        raise ValueError(f"ids must be a sequence of int failure ids (got {ids!r})")
    wrong = [i for i in ids if isinstance(i, bool) or not isinstance(i, int)]
    if wrong:
        raise ValueError(f"ids must be int failure ids (got {wrong[0]!r})")
    return sorted(set(ids))


@attrs.frozen(kw_only=True)
class StoreUsage:
    """How much one plugin keeps in its key-value store for one tenant.

    ``bytes`` counts each key's UTF-8 length plus its value's JSON text, as
    :meth:`Storage.charge_store` was told.
    """

    keys: int = 0
    bytes: int = 0


def check_size(size: object) -> int | None:
    """Return ``size`` if it is None or a non-negative ``int`` (not a ``bool``); backends call it.

    :raises ValueError: naming ``size`` otherwise.
    """
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ValueError(f"size must be None or a non-negative int (got {size!r})")
    return size


def store_size(key: str, text: str) -> int:
    """What a store charges for ``key`` holding the JSON text ``text``: both in UTF-8 bytes."""
    return len(key.encode("utf-8", "surrogatepass")) + len(text.encode("utf-8", "surrogatepass"))


def store_value(key: str, value: object) -> tuple[str, int]:
    """The text a backend keeps for ``value`` under ``key``, and the size it charges; backends
    call it in :meth:`Storage.store_write`.

    The text is ASCII JSON (any string survives every database); the size is
    :func:`store_size` of the value's UTF-8 JSON, as a
    :class:`~services_ai_plugins.PluginAPI` charges it.

    :raises ValueError: naming ``key`` when ``value`` is not JSON.
    """
    try:
        checked = check_json(value)
    except ValueError as exc:
        raise ValueError(f"the value for store key {key!r} {exc}") from None
    size = store_size(key, json.dumps(checked, ensure_ascii=False))
    return json.dumps(checked, ensure_ascii=True, allow_nan=False), size


def stored_value(text: str) -> JSONValue:
    """The value a backend kept as ``text`` (by :func:`store_value`): a new copy each time."""
    value: JSONValue = json.loads(text)
    return value


def charge(
    plugin_id: str,
    tenant: str,
    usage: StoreUsage,
    previous: int | None,
    size: int | None,
    *,
    max_keys: int | None,
    max_bytes: int | None,
) -> StoreUsage:
    """The store's usage once ``key`` holds ``size`` bytes instead of ``previous``; backends call it
    inside their transaction, with the usage and ``previous`` they read there.

    A change may leave a store over a limit only if it does not grow what that
    limit counts (a store over its limits, since they were lowered, can still
    shrink).

    :raises QuotaExceeded: when the change grows the keys past ``max_keys`` or
        the bytes past ``max_bytes``; the backend then writes nothing.
    """
    keys = usage.keys + (size is not None) - (previous is not None)
    total = usage.bytes + (size or 0) - (previous or 0)
    if max_keys is not None and keys > max_keys and keys > usage.keys:
        raise QuotaExceeded(plugin_id, tenant, "store_keys", max_keys, keys)
    if max_bytes is not None and total > max_bytes and total > usage.bytes:
        raise QuotaExceeded(plugin_id, tenant, "store_bytes", max_bytes, total)
    return StoreUsage(keys=keys, bytes=total)


@attrs.frozen(kw_only=True)
class StagedVersion:
    """A new version of a running plugin, installed beside it.

    The running version keeps serving every tenant while this one waits for
    approval (``approved_at`` None), then for the switch a host makes at its
    next refresh (approved). ``approved_by`` is who approved it: an admin, or
    the registry's upgrade policy (``auto_approved``) for a version that asks
    for nothing new.
    """

    version: str
    #: The manifest document (``Manifest.to_dict()``).
    manifest: Mapping[str, JSONValue] = attrs.field(repr=False)
    code_hash: str
    source: SourceKind
    package_path: str | None = None
    #: SHA-256 (hex) of the uploaded archive in the artifact store, or None.
    artifact: str | None = None
    installed_at: datetime = attrs.field(validator=_aware)
    installed_by: str
    approved_at: datetime | None = attrs.field(default=None, validator=_aware)
    approved_by: str | None = None
    auto_approved: bool = False
    #: The host making the switch (it claimed it), and until when its claim holds.
    switching_by: str | None = None
    switching_until: datetime | None = attrs.field(default=None, validator=_aware)


def staged_to_json(staged: StagedVersion) -> dict[str, JSONValue]:
    """The staged version as one JSON object (how the SQL backends store it)."""
    return {
        "version": staged.version,
        "manifest": dict(staged.manifest),
        "code_hash": staged.code_hash,
        "source": staged.source.value,
        "package_path": staged.package_path,
        "artifact": staged.artifact,
        "installed_at": staged.installed_at.isoformat(),
        "installed_by": staged.installed_by,
        "approved_at": staged.approved_at.isoformat() if staged.approved_at else None,
        "approved_by": staged.approved_by,
        "auto_approved": staged.auto_approved,
        "switching_by": staged.switching_by,
        "switching_until": staged.switching_until.isoformat() if staged.switching_until else None,
    }


def staged_from_json(data: Mapping[str, Any]) -> StagedVersion:
    """The staged version stored by :func:`staged_to_json`."""
    approved_at = data.get("approved_at")
    until = data.get("switching_until")
    return StagedVersion(
        version=str(data["version"]),
        manifest=dict(data["manifest"]),
        code_hash=str(data["code_hash"]),
        source=SourceKind(data["source"]),
        package_path=data.get("package_path"),
        artifact=data.get("artifact"),
        installed_at=datetime.fromisoformat(str(data["installed_at"])),
        installed_by=str(data["installed_by"]),
        approved_at=datetime.fromisoformat(str(approved_at)) if approved_at else None,
        approved_by=data.get("approved_by"),
        auto_approved=bool(data.get("auto_approved", False)),
        switching_by=data.get("switching_by"),
        switching_until=datetime.fromisoformat(str(until)) if until else None,
    )


@attrs.frozen(kw_only=True)
class PluginRecord:
    """One installed plugin: what the original system's ``Plugin`` model held, and more."""

    #: The plugin id (the manifest's ``id``).
    id: str
    #: The display name.
    name: str
    #: The installed version, normalised (PEP 440).
    version: str
    status: PluginStatus
    #: The manifest document (``Manifest.to_dict()``).
    manifest: Mapping[str, JSONValue] = attrs.field(repr=False)
    #: SHA-256 of the plugin's code (hex), checked before every import.
    code_hash: str
    source: SourceKind
    #: Where the code lives (a folder), or None for entry-point plugins.
    package_path: str | None = None
    installed_at: datetime = attrs.field(validator=_aware)
    installed_by: str
    approved_at: datetime | None = attrs.field(default=None, validator=_aware)
    approved_by: str | None = None
    #: Why an admin rejected or suspended it.
    status_reason: str | None = None
    #: The permissions granted at approval (the manifest's ``permissions``).
    granted_permissions: tuple[str, ...] = ()
    #: Grows by one with every change to this record; see the module docstring.
    revision: int = 1
    #: SHA-256 (hex) of the uploaded archive in the artifact store, from which
    #: every host materialises the code; None for folder and entry-point plugins.
    artifact: str | None = None
    #: A new version installed beside this one, waiting for approval or its switch.
    staged: StagedVersion | None = None


def _mask_settings(settings: Mapping[str, JSONValue]) -> str:
    return "{" + ", ".join(f"{key!r}: ..." for key in settings) + "}"


@attrs.frozen(kw_only=True)
class TenantRecord:
    """One plugin for one tenant: activation, suspension, optional grants and settings."""

    plugin_id: str
    tenant: str
    enabled: bool = False
    #: Why the plugin is suspended for this tenant, or None when it is not: a
    #: suspended plugin does not run for the tenant, even while enabled there.
    suspended_reason: str | None = None
    #: Optional permissions an admin granted for this tenant.
    optional_grants: tuple[str, ...] = ()
    #: Setting values (already validated); shown as keys only, never values.
    settings: Mapping[str, JSONValue] = attrs.field(factory=dict, repr=_mask_settings)
    changed_at: datetime = attrs.field(validator=_aware)
    changed_by: str
    revision: int = 1


@attrs.frozen(kw_only=True)
class VersionRecord:
    """One install of one version: every version ever installed is kept."""

    plugin_id: str
    version: str
    code_hash: str
    changelog: str | None
    installed_at: datetime = attrs.field(validator=_aware)
    installed_by: str


@attrs.frozen(kw_only=True)
class KeptVersion:
    """A version that ran before, kept so :meth:`Registry.rollback` can return to it.

    It holds the code's place (hash, folder, archive) and, per tenant, the
    state the tenant had when the version stopped running: ``tenants`` maps a
    tenant to ``{"settings": {...}, "optional_grants": [...]}`` (secret values
    sealed as they are stored). One per (plugin, version): keeping a version
    again replaces the earlier copy.
    """

    plugin_id: str
    version: str
    manifest: Mapping[str, JSONValue] = attrs.field(repr=False)
    code_hash: str
    source: SourceKind
    package_path: str | None = None
    artifact: str | None = None
    granted_permissions: tuple[str, ...] = ()
    tenants: Mapping[str, Mapping[str, JSONValue]] = attrs.field(factory=dict, repr=False)
    #: When it stopped running.
    kept_at: datetime = attrs.field(validator=_aware)


@attrs.frozen(kw_only=True)
class ArtifactInfo:
    """One archive in an artifact store."""

    sha256: str
    size: int
    stored_at: datetime = attrs.field(validator=_aware)


_SHA256: Final = re.compile(r"[0-9a-f]{64}")


def check_artifact(sha256: object, data: bytes | None = None) -> str:
    """Check an artifact key (64 lowercase hex digits), and that it is the SHA-256 of ``data``.

    :raises ValueError: naming the key and what is wrong.
    """
    if not isinstance(sha256, str) or _SHA256.fullmatch(sha256) is None:
        raise ValueError(f"artifact key {sha256!r} is not a SHA-256 in lowercase hex")
    if data is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ValueError(f"artifact {sha256} does not match its data (SHA-256 {actual})")
    return sha256


@attrs.frozen(kw_only=True)
class AuditEvent:
    """One state change: who did what, to which plugin and tenant, and what changed.

    ``before`` and ``after`` hold the changed fields (secret settings masked).
    ``id`` is given by the storage and grows with every event.
    """

    at: datetime = attrs.field(validator=_aware)
    actor: str
    action: str
    plugin_id: str
    tenant: str | None = None
    before: Mapping[str, JSONValue] | None = None
    after: Mapping[str, JSONValue] | None = None
    id: int | None = None


@attrs.frozen(kw_only=True)
class AuditQuery:
    """Which audit events to list: every given field must match (newest first)."""

    plugin_id: str | None = None
    tenant: str | None = None
    actor: str | None = None
    action: str | None = None
    #: Events at or after this moment.
    since: datetime | None = None
    #: Events before this moment.
    until: datetime | None = None
    limit: int = attrs.field(default=1000, validator=attrs.validators.ge(0))


#: How many record ids one access record keeps (a list call's first ids; ``count`` says how many
#: records the call returned in all).
MAX_ACCESS_IDS: Final = 20


def _access_ids(value: object) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)):
        raise ValueError(f"record_ids must be a sequence of str ids (got {value!r})")
    ids = tuple(str(i) for i in value)  # type: ignore[attr-defined]
    return ids[:MAX_ACCESS_IDS]


@attrs.frozen(kw_only=True)
class AccessRecord:
    """One granted API call of a plugin that read or wrote tenant data (the data-access log).

    Refused calls are not here: they are :class:`~services_ai_plugins.DeniedCall` reports.
    """

    plugin_id: str
    tenant: str
    #: The API method called (``get_lead``, ``update_booking``, ...).
    method: str
    #: The permission the call was granted under.
    permission: str
    #: The kind of the records the call returned (``lead``, ``booking``, ...), or None.
    record_type: str | None = None
    #: Their ids: at most :data:`MAX_ACCESS_IDS` (a list call's first ones).
    record_ids: tuple[str, ...] = attrs.field(default=(), converter=_access_ids)
    #: How many records the call returned in all (``len(record_ids)`` or more).
    count: int = 0
    at: datetime = attrs.field(validator=_aware)
    #: Set by the storage.
    id: int | None = None


@attrs.frozen(kw_only=True)
class AccessQuery:
    """Which access records to list: every given field must match (newest first)."""

    plugin_id: str | None = None
    tenant: str | None = None
    method: str | None = None
    record_type: str | None = None
    #: Records whose ``record_ids`` hold this id.
    record_id: str | None = None
    #: Records at or after this moment.
    since: datetime | None = attrs.field(default=None, validator=_aware)
    #: Records before this moment.
    until: datetime | None = attrs.field(default=None, validator=_aware)
    limit: int = attrs.field(default=1000, validator=attrs.validators.ge(0))


@attrs.frozen(kw_only=True)
class FailureRecord:
    """One exception a plugin raised in one hook call."""

    plugin_id: str
    tenant: str | None
    hook: str
    exc_type: str
    message: str
    traceback: str
    at: datetime = attrs.field(validator=_aware)
    resolved: bool = False
    id: int | None = None


#: The most characters a failure record keeps of an exception's type name.
MAX_EXC_TYPE: Final = 200
#: The most characters a failure record keeps of an exception's message (its start).
MAX_MESSAGE: Final = 8 * 1024
#: The most characters a failure record keeps of a traceback (its end: the innermost frames).
MAX_TRACEBACK: Final = 32 * 1024


def failure_of(
    plugin_id: str,
    error: BaseException,
    *,
    hook: str,
    tenant: str | None,
    frames: TracebackType | EllipsisType | None = ...,
) -> FailureRecord:
    """The failure record of ``error``, now; ``frames``: the traceback to show (``...``: all).

    An error raised in a sandbox worker (:class:`RemoteError`) is recorded with
    the plugin's own exception type, message and traceback. Every text is
    bounded (:data:`MAX_EXC_TYPE`, :data:`MAX_MESSAGE`, :data:`MAX_TRACEBACK`;
    what is left out is marked ``… [cut N characters]``) and storable (lone
    surrogates and NUL characters are replaced), whatever the plugin raised.
    """
    if isinstance(error, RemoteError):
        exc_type, message, text = error.remote_type, error.remote_message, error.remote_traceback
    else:
        exc_type, message = type(error).__name__, _message(error)
        shown = error.__traceback__ if frames is ... else frames
        text = "".join(traceback.format_exception(type(error), error, shown))
    return make_failure(
        plugin_id, hook=hook, tenant=tenant, exc_type=exc_type, message=message, traceback=text
    )


def make_failure(
    plugin_id: str, *, hook: str, tenant: str | None, exc_type: str, message: str, traceback: str
) -> FailureRecord:
    """A failure record of now with its texts bounded and made storable (see :func:`failure_of`)."""
    return FailureRecord(
        plugin_id=plugin_id,
        tenant=tenant,
        hook=bounded(hook, MAX_EXC_TYPE),
        exc_type=bounded(exc_type, MAX_EXC_TYPE),
        message=bounded(message, MAX_MESSAGE),
        traceback=bounded(traceback, MAX_TRACEBACK, tail=True),
        at=datetime.now(timezone.utc),
    )


def storable(record: FailureRecord) -> FailureRecord:
    """``record`` with every text bounded and storable (the same record when it already is)."""
    changed = attrs.evolve(
        record,
        hook=bounded(record.hook, MAX_EXC_TYPE),
        exc_type=bounded(record.exc_type, MAX_EXC_TYPE),
        message=bounded(record.message, MAX_MESSAGE),
        traceback=bounded(record.traceback, MAX_TRACEBACK, tail=True),
        plugin_id=bounded(record.plugin_id, MAX_EXC_TYPE),
        tenant=None if record.tenant is None else bounded(record.tenant, MAX_EXC_TYPE),
    )
    return record if changed == record else changed


def bounded(text: object, limit: int, *, tail: bool = False) -> str:
    """``text`` cut to at most ``limit`` characters (its start, or its end with ``tail``), marked.

    Lone surrogates and NUL characters (which no database stores as text) become
    ``?`` and U+FFFD. Returns ``text`` itself when there is nothing to change.
    """
    if type(text) is not str:  # a str subclass may lie about its own contents
        text = str.__str__(text) if isinstance(text, str) else repr(text)
    assert isinstance(text, str)
    if len(text) > limit:
        keep = max(limit - _MARKER_ROOM, 0)
        marker = f"… [cut {len(text) - keep} characters]"
        text = f"{marker}\n{text[-keep:]}" if tail else f"{text[:keep]} {marker}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: one '?' each, so lengths stay
        text = text.encode("utf-8", "replace").decode("utf-8")
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text


#: Room kept for the marker of a cut text (`` … [cut N characters]`` and a newline).
_MARKER_ROOM: Final = 48


def _message(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:  # noqa: BLE001 - the plugin's __str__ failed: say so, never raise here
        return f"<the message of this {type(error).__name__} could not be read>"


@attrs.frozen(kw_only=True)
class MetricsDelta:
    """Counts gathered in one process since its last flush, for one (plugin, hook)."""

    plugin_id: str
    hook: str
    calls: int
    errors: int
    total_duration: float
    max_duration: float
    last_call: datetime = attrs.field(validator=_aware)


@attrs.frozen(kw_only=True)
class HookMetrics:
    """The running totals for one (plugin, hook)."""

    plugin_id: str
    hook: str
    calls: int
    errors: int
    #: Seconds spent in the hook, all calls together.
    total_duration: float
    #: The slowest single call, in seconds.
    max_duration: float
    last_call: datetime = attrs.field(validator=_aware)


@attrs.frozen(kw_only=True)
class Change:
    """Everything one lifecycle step writes, applied in one transaction.

    ``plugin`` is the plugin's new record (its revision checked as in the module
    docstring). When the step changes only tenant data, ``plugin`` is None and
    ``plugin_revision`` is the revision the step was decided on: the backend
    checks that the plugin is still at it, so a decision never rests on a stale
    status. ``clear_tenants`` removes every tenant record of the plugin first,
    and the plugin's key-value store as :meth:`Storage.drop_store` does
    (uninstall). ``audit`` is always written, and the change counter moves.

    ``tenants`` are more tenant records the same step writes (an upgrade's
    migrated settings, a rollback's restored ones), each checked as ``tenant``
    is (:meth:`check_tenant`). ``keep`` stores a :class:`KeptVersion`
    (replacing the plugin's kept copy of that version); ``forget`` removes the
    kept versions it names.
    """

    plugin_id: str
    audit: AuditEvent
    plugin: PluginRecord | None = None
    plugin_revision: int | None = None
    tenant: TenantRecord | None = None
    version: VersionRecord | None = None
    clear_tenants: bool = False
    tenants: tuple[TenantRecord, ...] = ()
    keep: KeptVersion | None = None
    forget: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        owners = {
            "plugin": self.plugin.id if self.plugin is not None else None,
            "tenant": self.tenant.plugin_id if self.tenant is not None else None,
            "version": self.version.plugin_id if self.version is not None else None,
            "keep": self.keep.plugin_id if self.keep is not None else None,
            "audit": self.audit.plugin_id,
        }
        for record in self.tenants:
            if record.plugin_id != self.plugin_id:
                raise ValueError(
                    f"a change of plugin {self.plugin_id!r} carries a tenant record "
                    f"of plugin {record.plugin_id!r}"
                )
        written = [r.tenant for r in self.written_tenants()]
        if len(written) != len(set(written)):
            raise ValueError(f"a change of plugin {self.plugin_id!r} writes a tenant twice")
        for what, owner in owners.items():
            if owner is not None and owner != self.plugin_id:
                raise ValueError(
                    f"a change of plugin {self.plugin_id!r} carries a {what} record "
                    f"of plugin {owner!r}"
                )
        if self.written_tenants() and self.plugin is None and not self.plugin_revision:
            raise ValueError(
                "a change that writes tenant data must give the plugin's revision "
                "(plugin_revision >= 1) or its record: tenant data needs a stored plugin"
            )

    def check(self, plugin_revision: int, tenant_revision: int) -> None:
        """Check this change against the stored revisions, inside the transaction.

        Backends call it before writing anything, with the stored revision of
        the plugin's record and of the tenant record the change writes (0 for a
        record that does not exist; ``tenant_revision`` is ignored when the
        change writes no tenant record).

        :raises ConflictError: when a revision does not match.
        """
        self.check_plugin(plugin_revision)
        if self.tenant is not None:
            self.check_tenant(self.tenant, tenant_revision)

    def check_plugin(self, plugin_revision: int) -> None:
        """Check the plugin's stored revision (0: none) against this change.

        :raises ConflictError: when it does not match.
        """
        actual = plugin_revision
        expected = self.plugin.revision - 1 if self.plugin is not None else self.plugin_revision
        if expected is not None and actual != expected:
            raise ConflictError(f"plugin {self.plugin_id!r}", expected=expected, actual=actual)

    def written_tenants(self) -> tuple[TenantRecord, ...]:
        """Every tenant record this change writes: ``tenant``, then ``tenants``."""
        if self.tenant is None:
            return self.tenants
        return (self.tenant, *self.tenants)

    def check_tenant(self, record: TenantRecord, stored_revision: int) -> None:
        """Check one written tenant record against its stored revision (0: none).

        :raises ConflictError: when the revision does not match.
        """
        stored = 0 if self.clear_tenants else stored_revision
        if stored != record.revision - 1:
            raise ConflictError(
                f"plugin {self.plugin_id!r} for tenant {record.tenant!r}",
                expected=record.revision - 1,
                actual=stored,
            )


@runtime_checkable
class Storage(Protocol):
    """What the registry needs from a backend.

    Implement it over your own database or ORM; run
    ``services_ai_plugins_testing.storage_contract.StorageContract`` against it.
    Every method may raise :class:`StorageError` (wrapping the driver's error).
    A storage object is used from several threads at once and must be safe
    for that. "Sorted" means by Python's string order (code points), as
    ``COLLATE "C"`` in SQL.
    """

    def generation(self) -> int:
        """The change counter: it grows by exactly one with every committed :class:`Change`.

        One cheap read, so another process can tell whether anything changed.
        """
        ...

    def commit(self, change: Change) -> int:
        """Apply ``change`` atomically and return the new generation.

        :raises ConflictError: when a revision does not match; nothing is written.
        """
        ...

    def get_plugin(self, plugin_id: str) -> PluginRecord | None:
        """The plugin's record, or None."""
        ...

    def list_plugins(self, status: PluginStatus | None = None) -> list[PluginRecord]:
        """Every plugin (or those with ``status``), by id."""
        ...

    def get_tenant(self, plugin_id: str, tenant: str) -> TenantRecord | None:
        """The plugin's record for ``tenant``, or None."""
        ...

    def list_tenants(self, plugin_id: str) -> list[TenantRecord]:
        """The plugin's tenant records, by tenant."""
        ...

    def enabled_plugins(self, tenant: str) -> list[str]:
        """Ids of the plugins that run for ``tenant``, sorted.

        A plugin runs for a tenant when its status is approved, its record for
        the tenant is enabled, and that record is not suspended
        (``suspended_reason`` is None).
        """
        ...

    def versions(self, plugin_id: str) -> list[VersionRecord]:
        """Every install of the plugin, oldest first."""
        ...

    def kept_versions(self, plugin_id: str) -> list[KeptVersion]:
        """The plugin's kept versions (:attr:`Change.keep`), oldest ``kept_at`` first."""
        ...

    def put_artifact(self, sha256: str, data: bytes) -> None:
        """Keep an archive under its SHA-256 (lowercase hex), in its own transaction.

        Storing a hash already kept is harmless and keeps the first copy.

        :raises ValueError: when ``sha256`` is not the SHA-256 of ``data``.
        """
        ...

    def get_artifact(self, sha256: str) -> bytes | None:
        """The archive kept under ``sha256``, or None."""
        ...

    def delete_artifact(self, sha256: str) -> bool:
        """Remove the archive kept under ``sha256``; whether there was one."""
        ...

    def artifacts(self) -> list[ArtifactInfo]:
        """Every kept archive, by hash."""
        ...

    def audit(self, query: AuditQuery) -> list[AuditEvent]:
        """Audit events matching ``query``, newest first (by ``id``)."""
        ...

    def record_failures(self, failures: Sequence[FailureRecord]) -> None:
        """Store a batch of failures in one transaction (does not move the counter)."""
        ...

    def failures(
        self, plugin_id: str | None = None, *, resolved: bool | None = None, limit: int = 1000
    ) -> list[FailureRecord]:
        """At most ``limit`` failures, newest first (by ``id``): the plugin's, or every one.

        ``resolved=None`` lists every failure, ``False`` the unresolved ones only
        and ``True`` the resolved ones only.

        :raises ValueError: naming ``limit`` when it is not a non-negative
            ``int`` (a ``bool`` is refused too).
        """
        ...

    def resolve_failures(
        self, plugin_id: str, tenant: str | None = None, *, ids: Sequence[int] | None = None
    ) -> int:
        """Mark the plugin's unresolved failures resolved; return how many changed.

        Every one of the plugin's failures, or those of one ``tenant``; with
        ``ids``, only the failures with those ids among them (ids of another
        plugin's failures, or of no failure, are ignored; no ids: none).
        Failures already resolved do not count.

        :raises ValueError: when an id is not an ``int`` (or is a ``bool``).
        """
        ...

    def record_metrics(self, deltas: Sequence[MetricsDelta]) -> None:
        """Add a batch of counts to the totals in one transaction (does not move the counter)."""
        ...

    def metrics(self, plugin_id: str | None = None) -> list[HookMetrics]:
        """Totals per (plugin, hook), sorted by plugin then hook."""
        ...

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
        """Record that the plugin's key-value store for ``tenant`` holds ``size`` bytes under
        ``key`` (None: that it no longer holds the key); return the size recorded before
        (None: none).

        The ledger of store quotas: a :class:`~services_ai_plugins.PluginAPI`
        charges every ``store_set`` here before the host keeps the value, so
        that a plugin's store stays within its limits across processes.
        Backends compute the new usage with :func:`charge` from the usage and
        the key's size they read in the same transaction, which must exclude
        other charges of the same (plugin, tenant): two concurrent charges
        never both pass a check that only one of them fits. It does not move
        the change counter.

        :raises QuotaExceeded: when the store would grow past ``max_keys``
            keys or ``max_bytes`` bytes; nothing is written.
        :raises ValueError: for a ``size`` that is not None or a non-negative ``int``.
        """
        ...

    def store_usage(self, plugin_id: str, tenant: str) -> StoreUsage:
        """What :meth:`charge_store` recorded for the plugin's store for ``tenant``."""
        ...

    def store_read(self, plugin_id: str, tenant: str, key: str) -> JSONValue:
        """The value the plugin keeps under ``key`` for ``tenant`` (a new copy), or None.

        The SDK's own plugin key-value store, used by a
        :class:`~services_ai_plugins.PluginHost` whose host services do not
        keep plugins' stores themselves.

        .. versionadded:: 0.1.0
        """
        ...

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
        """Keep the JSON ``value`` under ``key`` for the plugin and ``tenant``, and charge it to
        the store's ledger, in one transaction.

        The charge is :meth:`charge_store`'s, of :func:`store_value`'s size,
        under the same lock: two concurrent writes (of any process) never both
        pass a check that only one of them fits, and a refused write leaves
        neither the value nor its charge. It does not move the change counter.

        :raises QuotaExceeded: when the store would grow past ``max_keys`` keys
            or ``max_bytes`` bytes; nothing is written.
        :raises ValueError: when ``value`` is not JSON (naming the key).

        .. versionadded:: 0.1.0
        """
        ...

    def store_remove(self, plugin_id: str, tenant: str, key: str) -> bool:
        """Forget ``key`` of the plugin's store for ``tenant`` and its charge, in one
        transaction; whether it was there.

        .. versionadded:: 0.1.0
        """
        ...

    def drop_store(self, plugin_id: str, tenant: str | None = None) -> int:
        """Forget every value of the plugin's store (for one ``tenant``, or every tenant), and
        their charges, in one transaction; how many values were dropped.

        A committed :class:`Change` with ``clear_tenants`` (an uninstall) does
        the same for every tenant, in its own transaction. Charges of keys
        this store does not hold (values the host services keep themselves)
        stay as they are.

        .. versionadded:: 0.1.0
        """
        ...

    def close(self) -> None:
        """Release connections; the storage is not used afterwards."""
        ...


@runtime_checkable
class ChangeFeed(Protocol):
    """A storage that reports commits (of every process) as they happen, so caches refresh at once.

    Optional: a backend implements it when its database can push changes
    (``PostgresStorage`` does, with ``LISTEN``/``NOTIFY``). Without it, a
    process learns about other processes' changes by polling
    :meth:`Storage.generation`; with it, it can poll rarely and refresh when
    called. Check with ``isinstance(storage, ChangeFeed)``.

    .. versionadded:: 0.1.0
    """

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (from another thread, with no arguments) soon after a change is
        committed by any process; return a function that stops watching.

        The callback is also called when the feed loses its connection, so the
        watcher refreshes and falls back to polling the change counter
        (:meth:`Storage.generation`) until the feed is back. It may be called
        when nothing changed: it is a hint to compare the change counter, not a
        count of changes. An exception it raises is logged and does not stop
        the feed. Calling the returned function twice is harmless.

        :raises StorageError: when the storage is closed.
        """
        ...


@runtime_checkable
class ArtifactStore(Protocol):
    """Where uploaded plugin archives are kept, by the SHA-256 of their bytes.

    Every host materialises a plugin's code from here into its own plugins
    folder, so no filesystem needs to be shared. The default,
    :class:`StorageArtifacts`, keeps them in the registry's storage; a
    deployment can keep them in an object store instead by giving the
    registry its own implementation. Methods may be called from several
    threads at once.

    .. versionadded:: 0.2.0
    """

    def put(self, sha256: str, data: bytes) -> None:
        """Keep ``data`` under ``sha256``; storing a kept hash again is harmless.

        :raises ValueError: when ``sha256`` is not the SHA-256 of ``data``.
        """
        ...

    def get(self, sha256: str) -> bytes | None:
        """The archive kept under ``sha256``, or None."""
        ...

    def delete(self, sha256: str) -> bool:
        """Remove the archive; whether there was one."""
        ...

    def list(self) -> list[ArtifactInfo]:
        """Every kept archive, by hash."""
        ...


@attrs.frozen
class StorageArtifacts:
    """The default :class:`ArtifactStore`: the archives live in the registry's storage
    (a table in SQLite and PostgreSQL, the app's database with Django).

    .. versionadded:: 0.2.0
    """

    storage: Storage

    def put(self, sha256: str, data: bytes) -> None:
        self.storage.put_artifact(check_artifact(sha256, data), data)

    def get(self, sha256: str) -> bytes | None:
        return self.storage.get_artifact(check_artifact(sha256))

    def delete(self, sha256: str) -> bool:
        return self.storage.delete_artifact(check_artifact(sha256))

    def list(self) -> list[ArtifactInfo]:
        return self.storage.artifacts()


@runtime_checkable
class AccessStorage(Protocol):
    """A storage that keeps the data-access log (memory and SQLite today).

    A :class:`PluginHost` over a storage without these methods keeps no access log.
    """

    def record_access(self, records: Sequence[AccessRecord]) -> None:
        """Store a batch of access records in one transaction (does not move the counter)."""
        ...

    def access_log(self, query: AccessQuery) -> list[AccessRecord]:
        """Access records matching ``query``, newest first (by ``at``, then ``id``)."""
        ...

    def prune_access(self, before: datetime) -> int:
        """Forget the access records older than ``before``; return how many."""
        ...
