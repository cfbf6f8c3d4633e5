"""What the admin pages' browser tests share (the neutral admin's and Django's): Chromium
found or the test skipped (failed under CI), where screenshots go, and the plugin they upload.

Chromium is ``$SAP_CHROMIUM``, else ``chromium`` on the PATH (Debian's package); Playwright
drives it with ``executable_path`` (it cannot download its own browsers here).
Screenshots go to ``docs/images/`` only with ``SAP_WRITE_SCREENSHOTS=1``, so that a normal
run leaves the checkout as it was.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
ON_CI = os.environ.get("CI", "").lower() == "true"

#: The plugin the admins are photographed with: every kind of setting, an optional permission.
MANIFEST: dict[str, Any] = {
    "id": "lead-greeter",
    "name": "Lead Greeter",
    "version": "1.0.0",
    "description": "Greets every new lead by e-mail, in the tenant's own words.",
    "author": "Ada Lovelace",
    "email": "ada@example.com",
    "entry_point": "main.py",
    "plugin_class": "Plugin",
    "permissions": ["read_leads"],
    "optional_permissions": ["send_email"],
    "hooks": ["lead_created"],
    "requires_python": ">=3.10",
    "settings": [
        {"name": "greeting", "type": "string", "default": "Hello", "label": "Greeting",
         "description": "The first word of each mail."},
        {"name": "delay", "type": "integer", "default": 5, "min": 0, "max": 60,
         "description": "Minutes to wait before mailing."},
        {"name": "channel", "type": "choice", "choices": ["mail", "sms"], "default": "mail"},
        {"name": "api_key", "type": "secret", "description": "The mail service's key."},
    ],
}  # fmt: skip

CODE = """
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead, api):
        return None
"""


def chromium() -> str:
    """Chromium's path; the test skips without it or Playwright, and fails so under CI."""
    found = os.environ.get("SAP_CHROMIUM") or shutil.which("chromium")
    missing = None
    if not found:
        missing = "chromium is not installed (set $SAP_CHROMIUM or install Debian's chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401 - only to know it is there
        except ImportError:
            missing = "playwright is not installed"
    if missing is not None:
        if ON_CI:
            pytest.fail(f"the admin's browser test must run under CI: {missing}")
        pytest.skip(missing)
    assert found is not None
    return found


def screenshot_folder(tmp_path: Path) -> Path:
    """``docs/images/`` with ``SAP_WRITE_SCREENSHOTS=1``, else a folder in ``tmp_path``."""
    if os.environ.get("SAP_WRITE_SCREENSHOTS") == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        return IMAGES
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder


def expect(target: Any) -> Any:
    """Playwright's ``expect`` (imported once Playwright is known to be there)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)
