"""The CRM's pages, its admin, and every plugin route under /plugins/."""

from __future__ import annotations

from business import views
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("plugins/", include("services_ai_plugins.django.urls")),
    path("", views.dashboard, name="dashboard"),
    path("leads/new/", views.new_lead, name="new-lead"),
]
