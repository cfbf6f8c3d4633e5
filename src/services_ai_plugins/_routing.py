"""The host's route table: every approved plugin's routes, under its prefix, matched per request.

``register_routes`` results become :class:`PluginRoute` records under the
plugin's own prefix (``/<plugin_id>/...``). The path syntax is a sequence of
``/``-separated segments, each either literal text or a whole-segment
parameter: ``{name}`` matches one non-empty segment, ``{name:path}`` (last
segment only) the rest of the path, slashes included. A trailing slash is part
of the path (``/stats/`` and ``/stats`` are two paths). A request path is
matched within its plugin's routes: literal paths first (a dictionary
lookup), then the routes with parameters in the order the plugin returned
them; the first that matches the path and allows the method is served. A
path that matches only with other methods is a 405 (``HEAD`` is allowed
wherever ``GET`` is).

A plugin's routes are refused together, at load, when one is malformed (an
unknown converter, a parameter that is not a whole segment, ``{name:path}``
before the end, a name twice) or when two of them clash (the same path
pattern, parameters aside, with a method in common): the refusal is recorded
as the plugin's load failure and none of its routes is served.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, NamedTuple, final
from urllib.parse import quote

import attrs

from ._dispatch import RouteGuard
from .errors import PackageError
from .events import Route, RouteHandler

__all__ = ["PluginRoute", "RouteMatch", "RouteTable", "compile_routes", "guard_of"]

_PARAMETER: Final = re.compile(r"\{([^{}:]*)(?::([^{}]*))?\}")
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: Methods a route allowing GET also answers.
_IMPLIED: Final = {"HEAD": "GET"}


@attrs.frozen(kw_only=True)
class PluginRoute:
    """One route of the host's table (``PluginHost.routes()``)."""

    #: The plugin serving it.
    plugin_id: str
    #: Its name, unique within the plugin (``PluginHost.url_for(plugin_id, name)``).
    name: str
    #: Its path pattern below the adapter's mount point: ``/<plugin_id>`` + :attr:`route_path`.
    path: str
    #: Its path pattern as the plugin declared it (``/hello/{name}``).
    route_path: str
    #: The HTTP methods it serves, upper-case.
    methods: tuple[str, ...]
    #: True: a framework-native view, which the adapter calls (``serve(..., native=...)``).
    native: bool
    #: The guarded handler (the host's): it admits the request's tenant, injects the
    #: plugin's ``api``, ``settings`` and ``context``, and records failures and metrics.
    handler: RouteHandler = attrs.field(eq=False, repr=False)


class RouteMatch(NamedTuple):
    """A route found for a request: the route and the values of its path parameters."""

    route: PluginRoute
    params: dict[str, str]


class _Compiled(NamedTuple):
    route: PluginRoute
    #: None: a literal path (matched by a lookup).
    pattern: re.Pattern[str] | None
    #: The path's segments: literal text, or (name, is_path) for a parameter.
    segments: tuple[str | tuple[str, bool], ...]


def _parse(route: Route) -> tuple[tuple[str | tuple[str, bool], ...], str]:
    """The segments of a route's path and the key two clashing routes share.

    :raises ValueError: naming the route and what is wrong with its path.
    """
    parts = route.path[1:].split("/")
    segments: list[str | tuple[str, bool]] = []
    names: set[str] = set()
    key: list[str] = []
    for index, part in enumerate(parts):
        found = _PARAMETER.fullmatch(part)
        if found is None:
            if "{" in part or "}" in part:
                raise ValueError(
                    f"route {route.name!r}: path {route.path!r}: a parameter must be a whole "
                    f"segment such as {{name}} (got {part!r})"
                )
            segments.append(part)
            key.append(part)
            continue
        name, converter = found.group(1), found.group(2)
        if not _NAME.match(name):
            raise ValueError(
                f"route {route.name!r}: path {route.path!r}: {name!r} is not a parameter name "
                "(letters, digits and _, not starting with a digit)"
            )
        if converter not in (None, "path"):
            raise ValueError(
                f"route {route.name!r}: path {route.path!r}: unknown converter {converter!r} "
                "in {" + f"{name}:{converter}" + "}: use {name} or {name:path}"
            )
        is_path = converter == "path"
        if is_path and index != len(parts) - 1:
            raise ValueError(
                f"route {route.name!r}: path {route.path!r}: "
                f"{{{name}:path}} must be the last segment"
            )
        if name in names:
            raise ValueError(
                f"route {route.name!r}: path {route.path!r}: parameter {name!r} appears twice"
            )
        names.add(name)
        segments.append((name, is_path))
        key.append("{path}" if is_path else "{}")
    return tuple(segments), "/" + "/".join(key)


def _regex(segments: Sequence[str | tuple[str, bool]]) -> re.Pattern[str]:
    pieces = []
    for segment in segments:
        if isinstance(segment, str):
            pieces.append(re.escape(segment))
        else:
            name, is_path = segment
            pieces.append(f"(?P<{name}>.+)" if is_path else f"(?P<{name}>[^/]+)")
    return re.compile("/" + "/".join(pieces) + r"\Z")


def compile_routes(plugin_id: str, routes: Iterable[Route]) -> list[_Compiled]:
    """A plugin's routes, checked and compiled, in the order it returned them.

    :raises PackageError: when a path is malformed or two routes clash (the
        plugin's load failure: none of its routes is served).
    """
    compiled: list[_Compiled] = []
    seen: dict[str, list[Route]] = {}
    for route in routes:
        handler = guard_of(route)
        try:
            segments, key = _parse(route)
        except ValueError as exc:
            raise PackageError(f"its routes are refused: {exc}", path=plugin_id) from None
        for other in seen.get(key, ()):
            common = sorted(set(other.methods) & set(route.methods))
            if common:
                raise PackageError(
                    f"its routes are refused: routes {other.name!r} ({other.path}) and "
                    f"{route.name!r} ({route.path}) clash: the same path for "
                    f"{', '.join(common)}",
                    path=plugin_id,
                )
        seen.setdefault(key, []).append(route)
        record = PluginRoute(
            plugin_id=plugin_id,
            name=route.name,
            path=f"/{plugin_id}{route.path}",
            route_path=route.path,
            methods=route.methods,
            native=route.native,
            handler=handler,
        )
        literal = all(isinstance(segment, str) for segment in segments)
        compiled.append(_Compiled(record, None if literal else _regex(segments), segments))
    return compiled


@final
class _PluginRoutes:
    """One plugin's compiled routes: literal paths by path, the others in order."""

    __slots__ = ("by_name", "dynamic", "literal")

    def __init__(self, compiled: Sequence[_Compiled]) -> None:
        self.literal: dict[str, list[PluginRoute]] = {}
        self.dynamic: list[_Compiled] = []
        self.by_name: dict[str, _Compiled] = {}
        for item in compiled:
            self.by_name[item.route.name] = item
            if item.pattern is None:
                self.literal.setdefault(item.route.route_path, []).append(item.route)
            else:
                self.dynamic.append(item)


def guard_of(route: PluginRoute | Route) -> RouteGuard:
    """The route's handler as the host made it (the call loop guards every route it hands out)."""
    handler = route.handler
    assert isinstance(handler, RouteGuard)
    return handler


def _allows(route: PluginRoute, method: str) -> bool:
    methods = route.methods
    return method in methods or _IMPLIED.get(method, "") in methods


@final
class RouteTable:
    """Every served route of the host, by plugin; built by the host when its plugins change."""

    __slots__ = ("_plugins", "key", "retry_at", "routes")

    def __init__(
        self,
        compiled: Mapping[str, Sequence[_Compiled]],
        key: object = None,
        *,
        retry_at: int | None = None,
    ) -> None:
        self._plugins = {pid: _PluginRoutes(items) for pid, items in compiled.items()}
        #: Every route, by plugin then in the order each plugin returned them.
        self.routes: tuple[PluginRoute, ...] = tuple(
            item.route for items in compiled.values() for item in items
        )
        #: What it was built from (the host compares it to know when to build again).
        self.key = key
        #: When to build it again although nothing changed (``perf_counter_ns``; None: never):
        #: a plugin's routes are missing for a passing reason.
        self.retry_at = retry_at

    def retry_due(self, now: int) -> bool:
        """Whether it is to be built again now (a plugin's routes went missing for a while)."""
        return self.retry_at is not None and now >= self.retry_at

    def match(self, path: str, method: str) -> RouteMatch | tuple[int, tuple[str, ...]]:
        """The route serving ``method`` on ``path`` (below the mount point), with its parameters.

        Otherwise ``(404, ())``, or ``(405, allowed methods)`` when the path
        exists with other methods.
        """
        plugin_id, _, rest = path[1:].partition("/")
        plugin = self._plugins.get(plugin_id)
        if plugin is None or not path.startswith("/"):
            return 404, ()
        route_path = "/" + rest
        allowed: set[str] = set()
        for route in plugin.literal.get(route_path, ()):
            if _allows(route, method):
                return RouteMatch(route, {})
            allowed.update(route.methods)
        for item in plugin.dynamic:
            assert item.pattern is not None
            found = item.pattern.match(route_path)
            if found is None:
                continue
            if _allows(item.route, method):
                return RouteMatch(item.route, found.groupdict())
            allowed.update(item.route.methods)
        if not allowed:
            return 404, ()
        if "GET" in allowed:
            allowed.add("HEAD")
        return 405, tuple(sorted(allowed))

    def url_for(self, plugin_id: str, name: str, params: Mapping[str, object]) -> str:
        """The path (below the mount point) of the route ``name`` of the plugin, with ``params``.

        :raises LookupError: when the plugin serves no route of that name.
        :raises TypeError: when a parameter of the path is missing, or one is unknown.
        :raises ValueError: when a value is empty, or holds ``/`` outside a
            ``{name:path}`` parameter.
        """
        plugin = self._plugins.get(plugin_id)
        item = plugin.by_name.get(name) if plugin is not None else None
        if item is None:
            known = sorted(plugin.by_name) if plugin is not None else []
            hint = f"; its routes: {', '.join(known)}" if known else "; it serves no routes"
            raise LookupError(f"plugin {plugin_id!r} has no route named {name!r}{hint}")
        wanted = {segment[0] for segment in item.segments if not isinstance(segment, str)}
        missing, unknown = wanted - set(params), set(params) - wanted
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(sorted(missing))}")
            if unknown:
                parts.append(f"unknown {', '.join(sorted(unknown))}")
            raise TypeError(f"url_for({plugin_id!r}, {name!r}): {'; '.join(parts)} parameter(s)")
        pieces = []
        for segment in item.segments:
            if isinstance(segment, str):
                pieces.append(quote(segment, safe=""))
                continue
            key, is_path = segment
            value = str(params[key])
            if not value or (not is_path and "/" in value):
                raise ValueError(
                    f"url_for({plugin_id!r}, {name!r}): parameter {key!r} must be a non-empty "
                    + ("text" if is_path else "segment without '/'")
                    + f" (got {value!r})"
                )
            pieces.append(quote(value, safe="/" if is_path else ""))
        return f"/{quote(plugin_id, safe='')}/" + "/".join(pieces)
