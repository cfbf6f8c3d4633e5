"""The Django app: ``INSTALLED_APPS = [..., "services_ai_plugins.django"]``."""

from __future__ import annotations

from django.apps import AppConfig


class PluginsConfig(AppConfig):
    """The plugin registry's models, admin pages, template tags and management command."""

    name = "services_ai_plugins.django"
    #: The app label: ``services_ai_plugins.manage_plugins`` is its permission.
    label = "services_ai_plugins"
    verbose_name = "Plugins"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import conf  # noqa: PLC0415 - connects the settings-changed receiver

        conf.connect_signals()
