"""The plugin admin in ``django.contrib.admin`` (found by the admin's autodiscovery).

The ``Plugin`` model is registered with :class:`PluginAdmin`, whose list and change
pages are the SDK's own (see :mod:`services_ai_plugins.django.admin_views`): they read
and change the registry through the process's host, never through the models. Only
users holding ``services_ai_plugins.manage_plugins`` (superusers do) reach them.

A project with its own admin site registers it there::

    from services_ai_plugins.django.admin import PluginAdmin
    from services_ai_plugins.django.models import Plugin

    my_site.register(Plugin, PluginAdmin)
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import URLPattern

from .admin_views import PluginPages, may_manage
from .models import Plugin

__all__ = ["PluginAdmin"]


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


admin.site.register(Plugin, PluginAdmin)
