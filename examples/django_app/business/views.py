"""The CRM's own pages (stub)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse


def dashboard(request: HttpRequest) -> HttpResponse:
    return HttpResponse("dashboard")


def new_lead(request: HttpRequest) -> HttpResponse:
    return HttpResponse("new lead")
