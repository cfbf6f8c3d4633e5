"""The plugin admin in ``django.contrib.admin`` (found by the admin's autodiscovery).

The ``Plugin`` model is registered with :class:`PluginAdmin`, whose list and change
pages are the SDK's own (see :mod:`services_ai_plugins.django.admin_views`): they read
and change the registry through the process's host, never through the models. Only
users holding ``services_ai_plugins.manage_plugins`` (superusers do) reach them.

The data-access log's ``AccessEntry`` model is registered with :class:`AccessEntryAdmin`:
read-only (an audit log: no add, change or delete), filtered by plugin, tenant, method and
permission, by date, and searchable by record id, for the same users.

A project with its own admin site registers them there::

    from services_ai_plugins.django.admin import AccessEntryAdmin, PluginAdmin
    from services_ai_plugins.django.models import AccessEntry, Plugin

    my_site.register(Plugin, PluginAdmin)
    my_site.register(AccessEntry, AccessEntryAdmin)
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import URLPattern

from .admin_views import PluginPages, may_manage
from .models import AccessEntry, Plugin

__all__ = ["AccessEntryAdmin", "PluginAdmin"]


class PluginAdmin(admin.ModelAdmin):
    """The plugin admin: upload, review, approve, per-tenant activation, grants and
    settings, failures and metrics, suspensions, the audit trail."""

    def get_urls(self) -> list[URLPattern]:
        return PluginPages(self).urls()

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_manage(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_manage(request)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return may_manage(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # plugins come in as uploads, on the list page

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # uninstalling keeps the plugin's history: not a row to delete


class AccessEntryAdmin(admin.ModelAdmin):
    """The data-access log (what each plugin read or wrote, for which tenant), read-only."""

    list_display = (
        "at",
        "plugin_id",
        "tenant",
        "method",
        "permission",
        "record_type",
        "ids",
        "count",
    )
    list_filter = ("plugin_id", "tenant", "method", "permission")
    date_hierarchy = "at"
    #: "Who read lead X": the ids are kept as ``,"id-1","id-2",`` (see the model).
    search_fields = ("record_ids",)
    ordering = ("-at", "-id")
    fields = list_display
    readonly_fields = list_display

    @admin.display(description="record ids")
    def ids(self, entry: AccessEntry) -> str:
        text = entry.record_ids
        return ", ".join(json.loads("[" + text[1:-1] + "]")) if len(text) > 1 else ""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_manage(request)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return may_manage(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # an audit log: the host writes it

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # pruned by the host's AccessPolicy.retention only


admin.site.register(Plugin, PluginAdmin)
admin.site.register(AccessEntry, AccessEntryAdmin)
