"""The framework-neutral admin, driven through its WSGI app (werkzeug's test Client) and its
ASGI app (Starlette's TestClient), mounted under a prefix, over a real host and a SQLite
registry. Every step is checked in the registry and its audit trail afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
from admin_pages_kit import PREFIX, Driver, admin, approved, browser, host, installed, plugin_zip

from services_ai_plugins import PluginHost, PluginStatus

__all__ = ["admin", "approved", "browser", "host", "installed"]  # the fixtures, imported

PAGES = ["/", "/plugins/lead-tour/", "/plugins/lead-tour/tenants?tenant=acme",
         "/plugins/lead-tour/failures", "/plugins/lead-tour/audit"]  # fmt: skip


@pytest.mark.parametrize("page", PAGES)
def test_every_page_answers_the_admin(installed: str, browser: Driver, page: str) -> None:
    answer = browser.get(page)
    assert answer.status == 200, answer.text
    assert "lead-tour" in answer.text
    assert 'href="/' not in answer.text.replace(f'href="{PREFIX}/', "")  # every link under the mount
    assert 'action="/' not in answer.text.replace(f'action="{PREFIX}/', "")
