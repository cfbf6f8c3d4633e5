"""A small multi-tenant CRM (leads, bookings, invoices) that takes plugins.

The businesses are the tenants: ``acme.localhost:8000`` is Acme's site,
``globex.localhost:8000`` Globex's; ``localhost:8000/admin/`` is the staff admin.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
#: Where the example keeps its database and plugin code (``$CRM_DATA``, else ``./data``).
DATA_DIR = Path(os.environ.get("CRM_DATA", BASE_DIR / "data")).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = os.environ.get("CRM_SECRET_KEY", "example-only-change-me")
DEBUG = os.environ.get("CRM_DEBUG", "1") == "1"
ALLOWED_HOSTS = [".localhost", "localhost", "127.0.0.1", "testserver", ".testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "services_ai_plugins.django",
    "business",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # After authentication: the tenant resolver reads request.user.
    "services_ai_plugins.django.middleware.PluginsMiddleware",
]

ROOT_URLCONF = "crm.urls"
WSGI_APPLICATION = "crm.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(DATA_DIR / "crm.sqlite3"),
        "OPTIONS": {"timeout": 30},
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
LOGIN_URL = "/admin/login/"

# The whole plugin set-up: the rest are the SDK's defaults.
SERVICES_AI_PLUGINS: dict[str, Any] = {
    "SERVICES": "business.plugins.CrmServices",
    "TENANT_RESOLVER": "business.plugins.tenant_of",
    "PLUGINS_DIR": str(DATA_DIR / "plugins"),
    # The original system's plugins ship Django views: they run in the web process, so
    # they are named here. Every other uploaded plugin runs in a sandboxed worker.
    "SANDBOX": {"trusted": ["lead-notes"]},
}
