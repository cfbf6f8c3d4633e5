"""Helpers of the admin's tests (not a conftest: the root conftest's names stay its own).

A real host over a SQLite registry in the test's folder (uploads sandboxed, as the host's
default SandboxPolicy runs them), real plugin ZIPs, and the admin app in front of it, driven
through werkzeug's test Client (WSGI) or httpx's ASGITransport (ASGI).
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from services_ai_plugins import BreakerPolicy, PluginHost, SQLiteStorage, pack_plugin
from services_ai_plugins.admin import AdminApp, AdminRequest

SECRET = "test-secret-of-the-admin-0123456789"
#: The header of the admin, as the app's own authentication would read it.
WHO = "x-test-admin"

TOUR_MANIFEST: dict[str, Any] = {
    "id": "lead-tour",
    "name": "Lead Tour",
    "version": "1.2.0",
    "description": "Greets new leads.",
    "author": "Ada",
    "entry_point": "main.py",
    "plugin_class": "Plugin",
    "permissions": ["read_leads"],
    "optional_permissions": ["send_email"],
    "hooks": ["lead_created"],
    "requires_python": ">=3.10",
    "settings": [
        {"name": "greeting", "type": "string", "default": "Hello", "label": "Greeting"},
        {"name": "limit", "type": "integer", "default": 5, "min": 1, "max": 10},
        {"name": "loud", "type": "boolean", "default": False},
        {"name": "channel", "type": "choice", "choices": ["mail", "sms"], "default": "mail"},
        {"name": "api_key", "type": "secret", "description": "The mail service's key."},
    ],
}

TOUR_CODE = """
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead, api):
        api.list_leads(limit=1)
"""

FAILING_CODE = """
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead, api):
        raise RuntimeError("the mail server is down")
"""


def authenticate(request: AdminRequest) -> str | None:
    """The app's own authentication, in the tests: a header names the admin."""
    return request.headers.get(WHO) or None


def make_host(root: Path, services: Any) -> PluginHost:
    from cryptography.fernet import Fernet

    return PluginHost(
        services,
        storage=SQLiteStorage(root / "registry.sqlite3"),
        plugins_dir=root / "plugins",
        entry_points=False,
        secret_keys=[Fernet.generate_key().decode()],
        breaker=BreakerPolicy(consecutive_failures=2, failure_rate=0),
    )


@pytest.fixture
def host(tmp_path: Path, services: Any) -> Iterator[PluginHost]:
    made = make_host(tmp_path, services)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def admin(host: PluginHost) -> AdminApp:
    return AdminApp(lambda: host, authenticate=authenticate, secret=SECRET, upload_limit=200_000)


def plugin_zip(
    root: Path, manifest: Mapping[str, Any] = TOUR_MANIFEST, code: str = TOUR_CODE, **changes: Any
) -> bytes:
    """A plugin folder from a manifest and code, packed into a ZIP; its bytes."""
    document = {**manifest, **changes}
    folder = root / "src" / f"{document['id']}-{document['version']}"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(document))
    (folder / "main.py").write_text(textwrap.dedent(code))
    return pack_plugin(folder, root / f"{folder.name}.zip").path.read_bytes()


_TOKEN = re.compile(r'name="csrf_token" value="([^"]*)"')
_NOTE = re.compile(r'<li class="note-(\w+)">(.*?)</li>', re.S)


def token_of(html: str) -> str:
    found = _TOKEN.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


def notes_of(html: str) -> list[tuple[str, str]]:
    return [(level, text) for level, text in _NOTE.findall(html)]


def actors(host: PluginHost, plugin_id: str, action: str) -> list[str]:
    return [e.actor for e in host.registry.audit_log(plugin_id=plugin_id, action=action)]


# -- driving the app through its framework's test client ------------------------------------------

#: Where the tests mount the admin (every link and form must stay under it).
PREFIX = "/ops/plugins"


class Answer:
    """A response, whichever client got it."""

    def __init__(self, status: int, text: str, headers: Mapping[str, str], url: str) -> None:
        self.status = status
        self.text = text
        self.headers = headers
        self.url = url

    @property
    def notes(self) -> list[tuple[str, str]]:
        return notes_of(self.text)

    def errors(self) -> list[str]:
        return [text for level, text in self.notes if level == "error"]


class Driver:
    """A browser of the mounted admin: keeps its cookies and the last CSRF token it saw."""

    def __init__(self, kind: str, admin: AdminApp) -> None:
        self.kind = kind
        self.token = ""
        if kind == "wsgi":
            from werkzeug.exceptions import NotFound
            from werkzeug.middleware.dispatcher import DispatcherMiddleware
            from werkzeug.test import Client

            self._wsgi = Client(DispatcherMiddleware(NotFound(), {PREFIX: admin.wsgi}))
        else:
            import asyncio

            import httpx
            from starlette.applications import Starlette
            from starlette.routing import Mount

            app = Starlette(routes=[Mount(PREFIX, app=admin.asgi)])
            self._loop = asyncio.new_event_loop()
            self._asgi = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver"
            )

    def close(self) -> None:
        if self.kind == "asgi":
            self._loop.run_until_complete(self._asgi.aclose())
            self._loop.close()

    def _run(self, request: Any) -> Any:
        return self._loop.run_until_complete(request)

    def _answer(self, response: Any) -> Answer:
        if self.kind == "wsgi":
            text = response.get_data(as_text=True)
            answer = Answer(
                response.status_code, text, dict(response.headers), response.request.path
            )
        else:
            answer = Answer(
                response.status_code, response.text, dict(response.headers), response.url.path
            )
        found = _TOKEN.search(answer.text)
        if found is not None:
            self.token = found.group(1)
        return answer

    def get(self, path: str, *, who: str | None = "ada", follow: bool = True) -> Answer:
        headers = {WHO: who} if who else {}
        if self.kind == "wsgi":
            return self._answer(
                self._wsgi.get(PREFIX + path, headers=headers, follow_redirects=follow)
            )
        return self._answer(
            self._run(self._asgi.get(PREFIX + path, headers=headers, follow_redirects=follow))
        )

    def post(
        self,
        path: str,
        data: Mapping[str, str] | None = None,
        *,
        files: Mapping[str, tuple[str, bytes]] | None = None,
        who: str | None = "ada",
        token: str | None = None,
        follow: bool = True,
    ) -> Answer:
        """POST a form; the CSRF token of the last page seen unless ``token`` is given."""
        if token is None:
            if not self.token:
                self.get("/", who=who)
            token = self.token
        fields = dict(data or {})
        if token:
            fields["csrf_token"] = token
        headers = {WHO: who} if who else {}
        if self.kind == "wsgi":
            import io

            sent: dict[str, Any] = dict(fields)
            for name, (filename, content) in (files or {}).items():
                sent[name] = (io.BytesIO(content), filename)
            from werkzeug.test import EnvironBuilder

            # Built here to be closed here: werkzeug spools a large form into a temporary
            # file, which an app that refuses the body unread never closes.
            builder = EnvironBuilder(PREFIX + path, method="POST", data=sent, headers=headers)
            try:
                environ = builder.get_environ()
                response = self._wsgi.open(environ, follow_redirects=follow)
            finally:
                environ["wsgi.input"].close()
                builder.close()
        else:
            response = self._run(
                self._asgi.post(
                    PREFIX + path,
                    data=fields,
                    files={k: (n, c, "application/zip") for k, (n, c) in (files or {}).items()}
                    or None,
                    headers=headers,
                    follow_redirects=follow,
                )
            )
        return self._answer(response)


@pytest.fixture(params=["wsgi", "asgi"])
def browser(request: pytest.FixtureRequest, admin: AdminApp) -> Iterator[Driver]:
    """The admin under PREFIX, through its WSGI app or its ASGI app."""
    driver = Driver(request.param, admin)
    try:
        yield driver
    finally:
        driver.close()


@pytest.fixture
def installed(host: PluginHost, tmp_path: Path, browser: Driver) -> str:
    """lead-tour, uploaded through the admin (pending)."""
    answer = browser.post("/", files={"archive": ("lead-tour.zip", plugin_zip(tmp_path))})
    assert answer.status == 200, answer.notes
    return "lead-tour"


@pytest.fixture
def approved(host: PluginHost, installed: str) -> str:
    host.registry.approve(installed, actor="someone-else")
    return installed
