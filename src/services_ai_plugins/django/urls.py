"""Plugin routes: ``path("plugins/", include("services_ai_plugins.django.urls"))``."""

from __future__ import annotations

app_name = "plugins"
urlpatterns: list[object] = []
