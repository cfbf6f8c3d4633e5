"""The framework-neutral plugin admin: server-rendered pages as a WSGI app and an ASGI app.

Install the ``admin`` extra (Jinja2, python-multipart). An adapter, or the app itself,
mounts :attr:`AdminApp.wsgi` or :attr:`AdminApp.asgi` under a prefix, behind the app's
own authentication::

    from services_ai_plugins.admin import AdminApp


    def who(request):  # an AdminRequest: method, path, headers, cookies, query
        user = my_app.user_from_cookie(request.cookies.get("session"))
        return user.name if user is not None and user.is_admin else None  # None: 403


    admin = AdminApp(get_host, authenticate=who, secret=SECRET_KEY, upload_limit=10 * 2**20)

The pages: upload, review (the manifest, the permissions and their risk, hooks, settings,
requirements, where it runs, the ``check`` report), approve or reject, enable and disable
per tenant with optional grants and settings, failures with metrics and suspensions
(resolve, resume), and the audit trail. Every POST carries a CSRF token and is audited
with the admin's name as the actor. See docs/admin.md.
"""

from __future__ import annotations

from ._app import DEFAULT_UPLOAD_LIMIT, AdminApp, Authenticate, HostOrGetter
from ._request import AdminRequest

__all__ = ["DEFAULT_UPLOAD_LIMIT", "AdminApp", "AdminRequest", "Authenticate", "HostOrGetter"]
