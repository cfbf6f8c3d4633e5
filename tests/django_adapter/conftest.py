"""Django for the tests in this folder: the example CRM with the test databases.

Configured when pytest collects this folder (pytest-django then sets up the test
databases for the tests that ask for them); the rest of the suite never imports Django.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("django", reason="the django extra is not installed")
pytest.importorskip("pytest_django", reason="pytest-django is not installed")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django_app"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

if not settings.configured:
    import sap_django_settings as test_settings  # noqa: PLC0415

    settings.configure(
        **{name: getattr(test_settings, name) for name in dir(test_settings) if name.isupper()}
    )
    django.setup()
