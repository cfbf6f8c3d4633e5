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
    from django_adapter import sap_django_settings as test_settings

    settings.configure(
        **{name: getattr(test_settings, name) for name in dir(test_settings) if name.isupper()}
    )
    django.setup()


import json  # noqa: E402
import shutil  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

from services_ai_plugins import PluginHost, pack_plugin  # noqa: E402

#: The example project's bundled plugins (examples/django_app/plugins).
EXAMPLE_PLUGINS = EXAMPLE / "plugins"


@pytest.fixture
def crm(transactional_db: None, settings: Any, tmp_path: Path) -> Iterator[PluginHost]:
    """The example CRM with its two businesses (acme, globex), a member of each and a fresh
    plugin host over a registry of its own; closed afterwards."""
    from business.models import Business, Member
    from django.contrib.auth.models import User as Account

    from services_ai_plugins.django import conf

    settings.SERVICES_AI_PLUGINS = {
        **settings.SERVICES_AI_PLUGINS,
        "PLUGINS_DIR": str(tmp_path / "plugins"),
        "STORAGE": REGISTRY_STORAGE(tmp_path),
    }
    for slug, name in (("acme", "Acme"), ("globex", "Globex")):
        business = Business.objects.create(slug=slug, name=name)
        account = Account.objects.create_user(f"{slug}-sales", f"sales@{slug}.example", "pw")
        Member.objects.create(user=account, business=business)
    host = conf.get_host()
    try:
        yield host
    finally:
        conf.close_host()


def REGISTRY_STORAGE(tmp_path: Path) -> str:
    """Where the tests' registry lives: the project's own database."""
    return "django"


def packed(tmp_path: Path, name: str, **manifest_changes: Any) -> Path:
    """One of the example plugins packed as an uploaded ZIP (its manifest changed as asked)."""
    folder = tmp_path / "src" / name
    shutil.copytree(EXAMPLE_PLUGINS / name, folder)
    if manifest_changes:
        manifest_file = folder / "manifest.json"
        manifest = json.loads(manifest_file.read_text())
        manifest.update(manifest_changes)
        manifest_file.write_text(json.dumps(manifest))
    return Path(pack_plugin(folder, tmp_path / f"{name}.zip").path)
