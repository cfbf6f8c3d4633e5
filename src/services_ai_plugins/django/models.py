"""The registry's tables in the project's own database (the storage protocol's records).

One model per record kind of :mod:`services_ai_plugins.storage`; :class:`DjangoStorage`
(``services_ai_plugins.django.storage``) reads and writes them, and nothing else should:
the registry's rules (revisions, the audit trail, the change counter) live there. JSON
documents are kept as ``JSONField`` values written by :class:`RecordJSONEncoder` (so they
read back exactly); times as datetimes in UTC (aware with ``USE_TZ``, naive UTC without).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.db import models

from .._json import exact_json_text

__all__ = [
    "AccessEntry",
    "AuditEntry",
    "Failure",
    "Generation",
    "HookMetric",
    "Plugin",
    "PluginArtifact",
    "PluginKeptVersion",
    "PluginTenant",
    "PluginVersion",
    "RecordJSONEncoder",
    "StoreSize",
    "StoreTotal",
    "StoreValue",
]


class RecordJSONEncoder(json.JSONEncoder):
    """JSON text that reads back as written, on every database: a float stays a float.

    PostgreSQL's ``jsonb`` keeps a number's digits, so ``1e+20`` (Python's text for
    ``1e20``) would come back as the int 100000000000000000000; floats are written with
    a decimal point and no exponent instead. NaN and infinities are refused (ValueError),
    as are values JSON has no type for (TypeError).
    """

    def encode(self, o: Any) -> str:
        return "".join(self.iterencode(o))

    def iterencode(self, o: Any, _one_shot: bool = False) -> Iterator[str]:
        return iter((exact_json_text(o),))


def _json(**options: Any) -> Any:
    return models.JSONField(encoder=RecordJSONEncoder, **options)


class Generation(models.Model):
    """The change counter: one row, moved by every registry change (other processes poll it)."""

    key = models.CharField(max_length=32, primary_key=True)
    value = models.BigIntegerField(default=0)

    class Meta:
        db_table = "services_ai_plugins_generation"


class Plugin(models.Model):
    """One installed plugin (the original system's ``Plugin`` model, and more)."""

    id = models.CharField(max_length=64, primary_key=True)
    name = models.CharField(max_length=200)
    # PEP 440 sets no length: as long as the manifest says.
    version = models.TextField()
    status = models.CharField(max_length=16, db_index=True)
    manifest = _json()
    code_hash = models.CharField(max_length=64)
    source = models.CharField(max_length=16)
    package_path = models.TextField(null=True, blank=True)
    installed_at = models.DateTimeField()
    installed_by = models.CharField(max_length=200)
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.CharField(max_length=200, null=True, blank=True)
    status_reason = models.TextField(null=True, blank=True)
    granted_permissions = _json(default=list)
    revision = models.BigIntegerField()
    #: SHA-256 of the uploaded archive the code is materialised from (PluginArtifact).
    artifact = models.CharField(max_length=64, null=True, blank=True)
    #: A new version installed beside this one (``staged_to_json``), or None.
    staged = _json(null=True, blank=True)

    class Meta:
        db_table = "services_ai_plugins_plugin"
        ordering = ["id"]
        verbose_name = "plugin"
        # Reaching the plugin admin pages; superusers hold it implicitly.
        permissions = [("manage_plugins", "Can review, approve, enable and configure plugins")]

    def __str__(self) -> str:
        return f"{self.id} {self.version} ({self.status})"


class PluginTenant(models.Model):
    """One plugin for one tenant: activation, suspension, optional grants and settings."""

    plugin = models.ForeignKey(Plugin, on_delete=models.CASCADE, related_name="tenants")
    tenant = models.CharField(max_length=200)
    enabled = models.BooleanField(default=False)
    suspended_reason = models.TextField(null=True, blank=True)
    optional_grants = _json(default=list)
    settings = _json(default=dict)
    changed_at = models.DateTimeField()
    changed_by = models.CharField(max_length=200)
    revision = models.BigIntegerField()

    class Meta:
        db_table = "services_ai_plugins_tenant"
        constraints = [
            models.UniqueConstraint(fields=["plugin", "tenant"], name="sap_tenant_unique"),
        ]
        indexes = [models.Index(fields=["tenant", "enabled"], name="sap_tenant_enabled")]


class PluginVersion(models.Model):
    """One install of one version (history: it outlives the plugin's row, so no foreign key)."""

    plugin_id = models.CharField(max_length=64)
    version = models.TextField()
    code_hash = models.CharField(max_length=64)
    changelog = models.TextField(null=True, blank=True)
    installed_at = models.DateTimeField()
    installed_by = models.CharField(max_length=200)

    class Meta:
        db_table = "services_ai_plugins_version"
        indexes = [models.Index(fields=["plugin_id", "id"], name="sap_version_plugin")]


class PluginKeptVersion(models.Model):
    """A version that ran before, kept for a rollback: one per (plugin, version), with each
    tenant's state when it stopped running (history: no foreign key)."""

    plugin_id = models.CharField(max_length=64)
    version = models.TextField()
    manifest = _json()
    code_hash = models.CharField(max_length=64)
    source = models.CharField(max_length=16)
    package_path = models.TextField(null=True, blank=True)
    artifact = models.CharField(max_length=64, null=True, blank=True)
    granted_permissions = _json(default=list)
    tenants = _json(default=dict)
    kept_at = models.DateTimeField()

    class Meta:
        db_table = "services_ai_plugins_kept_version"
        constraints = [
            models.UniqueConstraint(fields=["plugin_id", "version"], name="sap_kept_unique"),
        ]


class PluginArtifact(models.Model):
    """An uploaded plugin archive, by the SHA-256 (lowercase hex) of its bytes."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    data = models.BinaryField()
    size = models.BigIntegerField()
    stored_at = models.DateTimeField()

    class Meta:
        db_table = "services_ai_plugins_artifact"


class AuditEntry(models.Model):
    """One audit event: who did what, to which plugin and tenant, and what changed."""

    at = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=64)
    plugin_id = models.CharField(max_length=64)
    tenant = models.CharField(max_length=200, null=True, blank=True)
    before_json = _json(null=True, blank=True)
    after_json = _json(null=True, blank=True)

    class Meta:
        db_table = "services_ai_plugins_audit"
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["plugin_id", "id"], name="sap_audit_plugin"),
            models.Index(fields=["tenant", "id"], name="sap_audit_tenant"),
            models.Index(fields=["actor", "id"], name="sap_audit_actor"),
        ]


class Failure(models.Model):
    """One exception a plugin raised in one hook call (texts bounded by ``storable``)."""

    plugin_id = models.CharField(max_length=200)
    tenant = models.CharField(max_length=200, null=True, blank=True)
    hook = models.CharField(max_length=200)
    exc_type = models.CharField(max_length=200)
    message = models.TextField()
    traceback = models.TextField()
    at = models.DateTimeField()
    resolved = models.BooleanField(default=False)

    class Meta:
        db_table = "services_ai_plugins_failure"
        indexes = [models.Index(fields=["plugin_id", "resolved", "id"], name="sap_failure_plugin")]


class AccessEntry(models.Model):
    """One granted API call of a plugin on tenant data (the data-access log).

    ``record_ids`` holds the ids the call returned (at most ``MAX_ACCESS_IDS``) as the JSON
    texts of the ids, each followed by a comma, after a leading comma
    (``,"lead-1","lead-2",``): a substring search finds an id exactly on every database.
    """

    plugin_id = models.CharField(max_length=200)
    tenant = models.CharField(max_length=200)
    method = models.CharField(max_length=200)
    permission = models.CharField(max_length=200)
    record_type = models.CharField(max_length=200, null=True, blank=True)
    record_ids = models.TextField()
    count = models.IntegerField()
    at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "services_ai_plugins_access"
        verbose_name_plural = "access entries"
        indexes = [
            models.Index(fields=["plugin_id", "tenant", "at"], name="sap_access_plugin"),
            models.Index(fields=["tenant", "at"], name="sap_access_tenant"),
        ]


class HookMetric(models.Model):
    """The running totals for one (plugin, hook)."""

    plugin_id = models.CharField(max_length=64)
    hook = models.CharField(max_length=200)
    calls = models.BigIntegerField()
    errors = models.BigIntegerField()
    total_duration = models.FloatField()
    max_duration = models.FloatField()
    last_call = models.DateTimeField()

    class Meta:
        db_table = "services_ai_plugins_metric"
        constraints = [
            models.UniqueConstraint(fields=["plugin_id", "hook"], name="sap_metric_unique"),
        ]


class StoreTotal(models.Model):
    """What one plugin keeps in its key-value store for one tenant, in all."""

    plugin_id = models.CharField(max_length=64)
    tenant = models.CharField(max_length=200)
    keys = models.BigIntegerField()
    bytes = models.BigIntegerField()

    class Meta:
        db_table = "services_ai_plugins_store_total"
        constraints = [
            models.UniqueConstraint(fields=["plugin_id", "tenant"], name="sap_store_total_unique"),
        ]


class StoreSize(models.Model):
    """The size charged for one key of one plugin's store for one tenant."""

    plugin_id = models.CharField(max_length=64)
    tenant = models.CharField(max_length=200)
    key = models.CharField(max_length=255)
    bytes = models.BigIntegerField()

    class Meta:
        db_table = "services_ai_plugins_store_size"
        constraints = [
            models.UniqueConstraint(
                fields=["plugin_id", "tenant", "key"], name="sap_store_size_unique"
            ),
        ]


class StoreValue(models.Model):
    """One value of a plugin's key-value store kept by the SDK (JSON text, as given)."""

    plugin_id = models.CharField(max_length=64)
    tenant = models.CharField(max_length=200)
    key = models.CharField(max_length=255)
    value = models.TextField()

    class Meta:
        db_table = "services_ai_plugins_store_value"
        constraints = [
            models.UniqueConstraint(
                fields=["plugin_id", "tenant", "key"], name="sap_store_value_unique"
            ),
        ]
