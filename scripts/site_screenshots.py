"""Take the documentation site's screenshots in docs/images/ (home, hook reference, a guide).

Builds the site (``mkdocs build --strict``) into a temporary folder, serves it on 127.0.0.1 and
photographs three pages in headless Chromium through Playwright (``$CHROMIUM`` or
``/usr/bin/chromium``: Playwright's own browser download is not needed)::

    python scripts/site_screenshots.py
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
#: The file each page is photographed into, and the page's path on the site.
PAGES = {
    "site-home.png": "",
    "site-hook-reference.png": "reference/hooks/",
    "site-guide-first-plugin.png": "guides/first-plugin/",
}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="services-ai-plugins-site-") as folder:
        subprocess.run(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", folder],
            cwd=ROOT,
            check=True,
            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        )
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=folder)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium")
                )
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                for name, path in PAGES.items():
                    page.goto(base + path)
                    page.wait_for_load_state("networkidle")
                    page.screenshot(path=str(IMAGES / name))
                    sys.stdout.write(f"wrote docs/images/{name} ({page.title()})\n")
                browser.close()
        finally:
            server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
