"""The Flask extension: plugin routes, the request context, ``url_for`` and template globals.

::

    app = Flask(__name__)
    app.config["SERVICES_AI_PLUGINS"] = {
        "TENANT_RESOLVER": "crm.plugins.tenant_of",  # request -> tenant | (tenant, User) | None
        "STORAGE": "/var/lib/crm/plugins.db",
        "PLUGINS_DIR": "/var/lib/crm/plugins",
    }
    app.config["SERVICES_AI_PLUGINS_PREFIX"] = "/plugins"  # the default
    plugins = PluginsExtension(app)  # or PluginsExtension(), then plugins.init_app(app)

The settings are every adapter's (``services_ai_plugins._adapters``), checked by
:meth:`PluginsExtension.init_app`. For a request whose tenant the resolver names, the
request context is set (``host.request_context``) from ``before_request`` to
``teardown_request``, and kept as ``flask.g.plugins_context``. One URL rule serves every
plugin route below the prefix through ``host.serve`` (the host decides per request, so
routes follow the registry without a restart); ``url_for("plugins.<plugin_id>.<name>")``
builds their URLs; ``plugins_head()``, ``plugins_footer()``, ``plugins_widgets()`` and
``plugin_url()`` are template globals. See ``docs/flask.md``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

import flask
from markupsafe import Markup
from werkzeug.datastructures import Headers

from . import web
from ._adapters import AdapterSettings, HostHolder, tenant_answer
from .errors import ConfigError, RequestTooLarge
from .events import ApiResponse, Context

if TYPE_CHECKING:
    from ._context import RequestScope
    from ._host import PluginHost

__all__ = ["CONFIG", "ENDPOINT", "PREFIX_CONFIG", "PluginsExtension", "plugin_url"]

#: The ``app.config`` key of the settings, and that of the plugin routes' prefix.
CONFIG: Final = "SERVICES_AI_PLUGINS"
PREFIX_CONFIG: Final = "SERVICES_AI_PLUGINS_PREFIX"
#: The endpoint of the one rule that serves every plugin route.
ENDPOINT: Final = "services_ai_plugins"
_METHODS: Final = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]  # HEAD comes with GET
_PREFIX_AT: Final = f"app.config[{PREFIX_CONFIG!r}]"


class PluginsExtension:
    """Plugins for a Flask app, on one host per extension (built at first use, closed at exit).

    :raises ConfigError: (from :meth:`init_app`) naming the setting that is wrong.
    """

    def __init__(
        self, app: flask.Flask | None = None, *, settings: Mapping[str, Any] | None = None
    ) -> None:
        self._given, self._config = settings, settings
        self._where = "settings" if settings is not None else f"app.config[{CONFIG!r}]"
        self._holder = HostHolder(
            lambda: AdapterSettings.from_mapping(
                self._config, where=self._where, default_actor="flask"
            )
        )
        if app is not None:
            self.init_app(app)

    @property
    def host(self) -> PluginHost:
        """The extension's host, built on first use."""
        return self._holder.get()

    def close(self) -> None:
        """Close the host (if built); the next use builds a new one."""
        self._holder.close()

    def init_app(self, app: flask.Flask) -> None:
        """Check the settings and mount the plugin routes, the request context and the globals."""
        if self._given is None:
            self._config = app.config.get(CONFIG)
        self._holder.settings()  # a wrong value fails now, not at the first request
        prefix = "/" + str(app.config.get(PREFIX_CONFIG, "/plugins")).strip("/")
        if prefix == "/":
            raise ConfigError("", "must be a path below the root: '/plugins'", where=_PREFIX_AT)

        def serve(rest: str) -> flask.Response:
            return self._serve(prefix)

        app.add_url_rule(
            prefix + "/<path:rest>",
            ENDPOINT,
            serve,
            methods=_METHODS,
            provide_automatic_options=False,  # OPTIONS is the plugin's to answer
        )
        app.before_request(self._enter)
        app.teardown_request(self._exit)
        app.url_build_error_handlers.append(self._build_url)
        for render in (web.head_html, web.footer_html, web.widgets_html):
            name = "plugins_" + render.__name__.removesuffix("_html")  # plugins_head, ...
            app.add_template_global(self._html(render), name)
        app.add_template_global(plugin_url)
        app.extensions["services_ai_plugins"] = self

    # -- the request context -----------------------------------------------------------------

    def _enter(self) -> None:
        resolver = self._holder.settings().tenant_resolver
        found = resolver(flask.request) if resolver is not None else flask.g.get("tenant")
        answer = tenant_answer(found, where=self._where)
        if answer is None:
            return
        context = Context(
            tenant=answer[0],
            user=answer[1],
            request_id=flask.request.headers.get("X-Request-Id"),
            ip=flask.request.remote_addr,
        )
        scope = self.host.request_context(context)
        scope.__enter__()
        flask.g.plugins_context, flask.g._plugins_scope = context, scope

    def _exit(self, exc: BaseException | None) -> None:
        scope: RequestScope | None = flask.g.pop("_plugins_scope", None)
        if scope is not None:  # an error leaving the request drops its deferred calls
            scope.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)

    # -- plugin routes -----------------------------------------------------------------------

    def _serve(self, prefix: str) -> flask.Response:
        context: Context | None = flask.g.get("plugins_context")
        if context is None:  # no tenant: no plugin routes
            return _error(404, "not found")
        # The prefix moves from PATH_INFO into SCRIPT_NAME, as a WSGI mount does (PATH_INFO
        # holds bytes as Latin-1: the prefix is as many characters there as it has bytes).
        environ = dict(flask.request.environ)
        path, length = environ.get("PATH_INFO", ""), len(prefix.encode())
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + path[:length]
        environ["PATH_INFO"] = path[length:]
        limit = flask.request.max_content_length or web.DEFAULT_MAX_BODY
        try:
            request = web.request_from_wsgi(
                environ, tenant=context.tenant, user=context.user, max_body=limit
            )
        except RequestTooLarge:
            return _error(413, "request too large")
        except ValueError as exc:  # not UTF-8, a bad Content-Length, ...
            return _error(400, str(exc))
        hook = self.host.hook
        request = hook.api_request(request=request, context=context)
        answer = self.host.serve(request, native=self._native)
        if not isinstance(answer, ApiResponse):  # a native view's own answer
            try:
                return flask.current_app.make_response(answer)
            except TypeError:
                return _error(502, "bad gateway")
        answer = hook.api_response(request=request, response=answer, context=context)
        started: list[Any] = []
        head = flask.request.method == "HEAD"
        try:  # checks the plugin's status and headers, as every adapter does
            web.write_wsgi(answer, lambda *line: started.extend(line), head=head)
        except ValueError:
            return _error(502, "bad gateway")
        response = flask.Response(answer.body, status=started[0])
        response.headers = Headers(started[1])  # the plugin's own, none of Flask's defaults
        return response

    def _native(self, view: Callable[..., Any], params: Mapping[str, str]) -> Any:
        values = self.host.native_values() or {}
        for key in ("api", "settings", "context"):
            setattr(flask.request, f"plugin_{key}", values.get(key))
        return view(flask.request, **params)

    def _build_url(self, error: Exception, endpoint: str, values: dict[str, Any]) -> str:
        plugin_id, dot, name = endpoint.removeprefix("plugins.").partition(".")
        if not endpoint.startswith("plugins.") or not dot:
            raise error  # not a plugin route's: Flask's own BuildError
        params = {key: value for key, value in values.items() if not key.startswith("_")}
        try:
            path = self.host.url_for(plugin_id, name, **params)
        except LookupError:  # no such route: Flask's own BuildError
            raise error from None
        options = {key: value for key, value in values.items() if key.startswith("_")}
        return flask.url_for(ENDPOINT, rest=unquote(path[1:]), **options)

    # -- templates ---------------------------------------------------------------------------

    def _html(self, render: Callable[..., str]) -> Callable[[], Markup]:
        def rendered() -> Markup:
            context = flask.g.get("plugins_context") if flask.has_app_context() else None
            if context is None:
                return Markup("")
            trust = self._holder.settings().trust_sandboxed_html
            # The web module's rules: untrusted HTML escaped, framed or left out there.
            return Markup(render(self.host, context, trust_sandboxed=trust))  # noqa: S704

        return rendered


def plugin_url(plugin_id: str, name: str, **params: Any) -> str:
    """A plugin route's URL: ``url_for("plugins.<plugin_id>.<name>", **params)``."""
    return flask.url_for(f"plugins.{plugin_id}.{name}", **params)


def _error(status: int, message: str) -> flask.Response:
    body = json.dumps({"error": message})
    return flask.Response(body, status=status, mimetype="application/json")
