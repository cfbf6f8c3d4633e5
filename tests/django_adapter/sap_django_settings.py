"""The Django settings of the Django tests (``tests/django_adapter/conftest.py`` configures them).

Two databases: ``default`` is SQLite; ``postgres`` is the PostgreSQL server of the run
(``$SERVICES_AI_PLUGINS_PG_URL``, started by ``.ci/run``), present only when one is given.
Tests that run on both take the alias as a parameter. With ``SAP_DJANGO_DB=postgres``
(the second Django run of ``nox -s tests``), ``default`` is the PostgreSQL server: the
whole project, its business data and the registry, runs on it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

HERE = Path(__file__).parent
SCRATCH = Path(tempfile.mkdtemp(prefix="sap-django-"))

PG_URL = os.environ.get("SERVICES_AI_PLUGINS_PG_URL", "")


def _postgres(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/") or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        # One test database per test process: runs side by side never drop each other's.
        "TEST": {"NAME": f"test_sap_django_{os.getpid()}"},
    }


TEST_DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(SCRATCH / "default.sqlite3"),
        # A file, not memory: the host's threads use their own connections.
        "TEST": {"NAME": str(SCRATCH / "test-default.sqlite3")},
        "OPTIONS": {"timeout": 30},
    },
}
if os.environ.get("SAP_DJANGO_DB") == "postgres":
    if not PG_URL:
        raise RuntimeError("SAP_DJANGO_DB=postgres needs $SERVICES_AI_PLUGINS_PG_URL")
    TEST_DATABASES = {"default": _postgres(PG_URL)}
elif PG_URL:
    TEST_DATABASES["postgres"] = _postgres(PG_URL)

# The example CRM (examples/django_app) is the project under test, with the test databases.
from crm.settings import *  # noqa: E402, F403

DATABASES = TEST_DATABASES
SECRET_KEY = "tests-only-not-secret"
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins
SERVICES_AI_PLUGINS = {
    **SERVICES_AI_PLUGINS,  # noqa: F405
    "PLUGINS_DIR": str(SCRATCH / "plugins"),
    # Tests see every change at once, and find no plugin installed in the test environment.
    "HOST": {"entry_points": False, "refresh_interval": 0.0},
}
