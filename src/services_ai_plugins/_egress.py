"""Outbound HTTP for plugins, made by the host: the manifest's ``network`` rules and the guards.

A plugin never opens a socket (a sandboxed worker has no network at all): it asks the
host with ``api.http_request``. The host lets the request out only to a host the
approved manifest declares (:func:`parse_rule`), resolves the name itself, refuses
private, loopback, link-local, multicast and reserved addresses (and the IPv6 forms that
embed them), and connects to the very address it checked, with the ``Host`` header and
TLS SNI set to the name, so DNS cannot change the answer between check and connect.
Redirects are followed here, each hop checked again; bodies are capped both ways and
the whole exchange has one deadline. Every refusal raises :class:`EgressRefused`.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import json as jsonlib
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias
from urllib.parse import urljoin, urlsplit

import attrs

from .errors import EgressRefused, ExtraNotInstalled

if TYPE_CHECKING:
    import httpx

__all__ = [
    "ALLOW_PRIVATE_ENV",
    "DNS_LOOKUPS",
    "DNS_LOOKUPS_PER_PLUGIN",
    "HostRule",
    "HttpResponse",
    "NetworkPolicy",
    "Resolver",
    "call_deadline",
    "fetch",
    "is_default",
    "parse_rule",
    "rule_problem",
]

#: Resolves ``(host, port)`` to IP address strings (the default: ``socket.getaddrinfo``).
Resolver: TypeAlias = Callable[[str, int], Sequence[str]]

#: The environment variable that lets the command line's host reach private addresses.
ALLOW_PRIVATE_ENV: Final = "SERVICES_AI_PLUGINS_NETWORK_ALLOW_PRIVATE"
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}
_LABEL: Final = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
# A DNS name of two labels or more whose last label is not all digits (so that "2130706433"
# or "0177.0.0.1" is never taken for a name: getaddrinfo would read them as addresses).
_NAME: Final = re.compile(rf"^(?:{_LABEL}\.)+(?!\d+$){_LABEL}$")
# One label less: ``localhost`` is a name too (refused by the address rule unless relaxed).
_SINGLE: Final = re.compile(rf"^(?!\d+$){_LABEL}$")
_RULE: Final = re.compile(
    r"^(?:(?P<scheme>[a-z]+)://)?(?P<host>\[[^\]]*\]|[^:/\[\]]+)(?::(?P<port>\d{1,5}))?$"
)
#: Request headers a plugin may not set: the host writes them.
_FORBIDDEN_HEADERS: Final = frozenset(
    {
        "host",
        "connection",
        "content-length",
        "transfer-encoding",
        "te",
        "upgrade",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "trailer",
    }
)
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
#: Request headers dropped on a redirect to another origin (scheme, host, port), as browsers
#: and httpx do: the credentials were meant for the first origin only.
_CREDENTIAL_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "cookie"})
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")


@attrs.frozen
class HostRule:
    """One entry of the manifest's ``network``: a scheme, a host (or ``*.`` domain) and a port."""

    scheme: str
    #: The host name (lowercase), IP literal (IPv6 without brackets) or, for a wildcard, the
    #: domain under ``*.``.
    host: str
    port: int
    #: ``*.example.com``: one or more labels in front of ``example.com`` (never the domain itself).
    wildcard: bool = False

    def matches(self, scheme: str, host: str, port: int) -> bool:
        """Whether a request's scheme, normalised host and port fall under this rule."""
        if scheme != self.scheme or port != self.port:
            return False
        if self.wildcard:
            return host.endswith("." + self.host) and _NAME.match(host) is not None
        return host == self.host


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _host_problem(host: str) -> str | None:
    if host.startswith("["):
        inner = host[1:-1]
        address = _ip(inner)
        if not isinstance(address, ipaddress.IPv6Address) or "%" in inner:
            return f"has an invalid IPv6 literal {host!r}"
        return None
    if _ip(host) is not None:
        return None if ":" not in host else "must write an IPv6 literal in brackets"
    if host == "*" or (host.startswith("*") and not host.startswith("*.")):
        return "must not be a bare '*': write '*.example.com' to allow a domain's hosts"
    if "*" in host[1:]:
        return "may use '*' only as the whole first label ('*.example.com')"
    name = host[2:] if host.startswith("*.") else host
    if host.startswith("*.") and (_ip(name) is not None or re.fullmatch(r"[\d.]+", name)):
        return "must not wildcard an IP address"
    if host.startswith("*.") and _NAME.match(name) is None:
        return f"must wildcard a domain of two labels or more (got {host!r})"
    if _NAME.match(name) is None and _SINGLE.match(name) is None:
        return (
            f"has an invalid host {host!r}: write a lowercase DNS name (letters, digits, '-'), "
            "or an IP address as written"
        )
    return None


def rule_problem(text: str) -> str | None:
    """Why ``text`` is not a valid ``network`` entry, or None."""
    match = _RULE.match(text)
    if match is None:
        return (
            f"must be a host with an optional scheme and port, such as 'api.example.com', "
            f"'*.hooks.example.com' or 'http://localhost:8080' (got {text!r})"
        )
    scheme = match["scheme"] or "https"
    if scheme not in _DEFAULT_PORTS:
        return f"must use the scheme https or http (got {scheme!r})"
    if match["port"] is not None and not 0 < int(match["port"]) < 65536:
        return f"must have a port from 1 to 65535 (got {match['port']})"
    return _host_problem(match["host"])


def parse_rule(text: str) -> HostRule:
    """The :class:`HostRule` an entry of ``network`` stands for.

    >>> parse_rule("*.hooks.example.com")
    HostRule(scheme='https', host='hooks.example.com', port=443, wildcard=True)
    >>> parse_rule("http://localhost:8080").port
    8080

    :raises ValueError: naming what is wrong with the entry.
    """
    problem = rule_problem(text)
    if problem is not None:
        raise ValueError(problem)
    match = _RULE.match(text)
    assert match is not None
    scheme = match["scheme"] or "https"
    port = int(match["port"]) if match["port"] else _DEFAULT_PORTS[scheme]
    host = match["host"]
    if host.startswith("["):
        host = str(ipaddress.ip_address(host[1:-1]))
    wildcard = host.startswith("*.")
    return HostRule(scheme, host[2:] if wildcard else host, port, wildcard)


#: When the hook call the request is made in must end (``time.monotonic()``; a sandboxed
#: plugin's call: set by the sandbox while it runs the worker's API request).
_CALL_DEADLINE: Final[contextvars.ContextVar[float | None]] = contextvars.ContextVar(
    "services_ai_plugins_call_deadline", default=None
)
#: The share of what is left of the call a request may use: the rest is the plugin's, to
#: handle the answer (or the refusal) and return before the sandbox's limit.
_CALL_SHARE: Final = 0.75


@contextlib.contextmanager
def call_deadline(deadline: float | None) -> Iterator[None]:
    """Requests made inside end well before ``deadline`` (``time.monotonic()``; None: none)."""
    token = _CALL_DEADLINE.set(deadline)
    try:
        yield
    finally:
        _CALL_DEADLINE.reset(token)


def _default_resolver(host: str, port: int) -> Sequence[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _positive(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(
            f"NetworkPolicy.{attribute.name} must be a positive number (got {value!r})"
        )


@attrs.frozen(kw_only=True)
class NetworkPolicy:
    """How a host lets plugins' ``http_request`` calls out.

    ::

        PluginHost(services, network=NetworkPolicy(timeout=5.0))

    (the same as ``limits=ApiLimits(network=...)``; a host given both refuses them).

    ``allow_private`` lets requests reach private, loopback and link-local addresses:
    only for tests and trusted networks, never by default.
    """

    #: Reach private, loopback, link-local and reserved addresses too (tests only).
    allow_private: bool = False
    #: The most seconds one ``http_request`` may take, redirects included.
    timeout: float = attrs.field(default=10.0, validator=_positive)
    #: The largest request body, in bytes.
    max_request_bytes: int = attrs.field(default=1 << 20, validator=_positive)
    #: The largest response body, in bytes (the read stops there).
    max_response_bytes: int = attrs.field(default=5 << 20, validator=_positive)
    #: The most redirects followed for one request.
    max_redirects: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    #: How TLS certificates are checked: True (the system's and certifi's authorities, as
    #: httpx does), or an ``ssl.SSLContext`` (a company's own authority). Always against the
    #: declared name, never the address.
    verify: ssl.SSLContext | bool = attrs.field(default=True, eq=False, repr=False)
    #: Resolves a host name to addresses (tests replace it).
    resolver: Resolver = attrs.field(default=_default_resolver, eq=False, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NetworkPolicy:
        """The policy the command line uses: the default, but with
        ``SERVICES_AI_PLUGINS_NETWORK_ALLOW_PRIVATE=1`` it allows private addresses."""
        values = os.environ if environ is None else environ
        flag = values.get(ALLOW_PRIVATE_ENV, "").strip().lower()
        return cls(allow_private=flag in ("1", "true", "yes", "on"))


def is_default(policy: NetworkPolicy) -> bool:
    """Whether ``policy`` is ``NetworkPolicy()``, its TLS check and resolver included."""
    return (
        policy == NetworkPolicy() and policy.verify is True and policy.resolver is _default_resolver
    )


@attrs.frozen
class HttpResponse:
    """What ``api.http_request`` got back.

    ``headers`` keeps every header as ``(name, value)`` with the name in lowercase;
    ``url`` is the address of the last hop (after redirects).
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = attrs.field(repr=lambda body: f"<{len(body)} bytes>")
    url: str

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` when it is not)."""
        return jsonlib.loads(self.body)

    def header(self, name: str) -> str | None:
        """The first value of a header, by case-insensitive name."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)


def _refused(plugin_id: str, reason: str, url: str, detail: str) -> EgressRefused:
    return EgressRefused(
        plugin_id, reason, url, f"plugin {plugin_id!r}: request to {url!r} refused: {detail}"
    )


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if address.teredo is not None:
            return False
        if address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not _public(embedded):
            return False
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )


@attrs.frozen
class _Target:
    url: str
    scheme: str
    host: str
    port: int
    #: The path and query to send.
    target: str


def _check_url(plugin_id: str, url: str, rules: Sequence[HostRule]) -> _Target:
    if any(ord(char) <= 32 or ord(char) == 127 or char == "\\" for char in url):
        raise _refused(plugin_id, "url", url, "the URL has spaces, control characters or '\\'")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise _refused(plugin_id, "scheme", url, f"scheme {scheme!r}: only https and http")
    if "@" in parts.netloc:
        raise _refused(plugin_id, "url", url, "a URL with user info ('user@host') is not allowed")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
        raw_host = parts.hostname or ""
    except ValueError as exc:
        raise _refused(plugin_id, "url", url, f"invalid host or port ({exc})") from None
    host = raw_host.lower().rstrip(".") if not raw_host.endswith("..") else ""
    address = _ip(host)
    if address is not None:
        host = str(address)
    elif _NAME.match(host) is None and _SINGLE.match(host) is None:
        raise _refused(plugin_id, "url", url, f"{raw_host!r} is not a DNS name or an IP address")
    if not any(rule.matches(scheme, host, port) for rule in rules):
        other_scheme = [rule for rule in rules if rule.scheme != scheme]
        if any(rule.matches(rule.scheme, host, rule.port) for rule in other_scheme):
            raise _refused(
                plugin_id, "scheme", url, f"{scheme}://{host}:{port} is not declared in network"
            )
        raise _refused(
            plugin_id,
            "host",
            url,
            f"{scheme}://{host}:{port} is not declared in the manifest's network",
        )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(url, scheme, host, port, target)


#: DNS lookups in progress at once, in the whole process, and for one plugin: a lookup that
#: hangs keeps its slot until it ends (a thread cannot be stopped), so a flood of slow
#: lookups is refused (``reason="dns"``) rather than left to take the host's threads.
DNS_LOOKUPS: Final = 32
DNS_LOOKUPS_PER_PLUGIN: Final = 4


class _Lookups:
    """The lookups in progress, each in a daemon thread of its own, bounded in number."""

    def __init__(self, total: int, per_plugin: int) -> None:
        self.total = total
        self.per_plugin = per_plugin
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}

    def in_progress(self, plugin_id: str | None = None) -> int:
        """Lookups running now (for one plugin, or all)."""
        with self._lock:
            if plugin_id is not None:
                return self._running.get(plugin_id, 0)
            return sum(self._running.values())

    def _take(self, plugin_id: str) -> str | None:
        with self._lock:
            if sum(self._running.values()) >= self.total:
                return f"{self.total} DNS lookups are in progress on this host"
            if self._running.get(plugin_id, 0) >= self.per_plugin:
                return f"{self.per_plugin} of the plugin's DNS lookups are in progress"
            self._running[plugin_id] = self._running.get(plugin_id, 0) + 1
            return None

    def _give(self, plugin_id: str) -> None:
        with self._lock:
            left = self._running[plugin_id] - 1
            if left:
                self._running[plugin_id] = left
            else:
                del self._running[plugin_id]

    def resolve(
        self, plugin_id: str, target: _Target, resolver: Resolver, deadline: float, limit: float
    ) -> list[str]:
        """``resolver(host, port)``, given until ``deadline`` (``time.monotonic()``)."""
        full = self._take(plugin_id)
        if full is not None:
            raise _refused(plugin_id, "dns", target.url, f"{full}: try again later")
        done = threading.Event()
        outcome: list[Any] = []

        def lookup() -> None:
            try:
                outcome.append(list(resolver(target.host, target.port)))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                outcome.append(exc)
            finally:
                self._give(plugin_id)
                done.set()

        try:
            threading.Thread(target=lookup, name="services-ai-plugins-dns", daemon=True).start()
        except RuntimeError:  # no thread could be started
            self._give(plugin_id)
            raise _refused(plugin_id, "dns", target.url, "no thread for the DNS lookup") from None
        if not done.wait(max(0.0, deadline - time.monotonic())):
            raise _refused(
                plugin_id,
                "timeout",
                target.url,
                f"the DNS lookup of {target.host!r} took longer than the request's {limit:g} s",
            )
        result = outcome[0]
        if isinstance(result, OSError):
            raise _refused(
                plugin_id, "dns", target.url, f"{target.host!r} does not resolve ({result})"
            ) from None
        if isinstance(result, BaseException):
            raise result
        return list(result)


_LOOKUPS: Final = _Lookups(DNS_LOOKUPS, DNS_LOOKUPS_PER_PLUGIN)


def _address(
    plugin_id: str, target: _Target, policy: NetworkPolicy, deadline: float, limit: float
) -> str:
    literal = _ip(target.host)
    if literal is not None:
        found: Sequence[str] = [str(literal)]
    else:
        found = _LOOKUPS.resolve(plugin_id, target, policy.resolver, deadline, limit)
    addresses = [address for address in (_ip(text.split("%")[0]) for text in found) if address]
    if not addresses:
        raise _refused(plugin_id, "dns", target.url, f"{target.host!r} has no address")
    if not policy.allow_private:
        for address in addresses:
            if not _public(address):
                raise _refused(
                    plugin_id,
                    "address",
                    target.url,
                    f"{target.host!r} is the non-public address {address}"
                    if literal is not None
                    else f"{target.host!r} resolves to the non-public address {address}",
                )
    return str(addresses[0])


def _headers(plugin_id: str, url: str, headers: Mapping[Any, Any] | None) -> list[tuple[str, str]]:
    checked = []
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("http_request() headers must map strings to strings")
        if name.lower() in _FORBIDDEN_HEADERS or not re.fullmatch(
            r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name
        ):
            raise _refused(
                plugin_id, "header", url, f"the header {name!r} may not be set by a plugin"
            )
        if any(char in value for char in "\r\n\x00"):
            raise _refused(plugin_id, "header", url, f"the header {name!r} has a line break")
        checked.append((name, value))
    return checked


def _httpx() -> Any:
    try:
        import httpx  # noqa: PLC0415 - an optional dependency, loaded on first use
    except ImportError as exc:
        raise ExtraNotInstalled(feature="api.http_request", extra="egress", module="httpx") from exc
    return httpx


def _time_limit(plugin_id: str, url: str, policy: NetworkPolicy, timeout: float | None) -> float:
    """The seconds a request may take: the policy's, the plugin's ``timeout`` if shorter, and
    a share of what is left of the hook call when the sandbox set its deadline."""
    if timeout is not None and not timeout > 0:  # also NaN
        raise ValueError(f"http_request() timeout must be a positive number (got {timeout!r})")
    limit = policy.timeout if timeout is None else min(timeout, policy.timeout)
    outer = _CALL_DEADLINE.get()
    if outer is not None:  # within what is left of the sandbox's timeout for the call
        limit = min(limit, (outer - time.monotonic()) * _CALL_SHARE)
        if limit <= 0:
            raise _refused(plugin_id, "timeout", url, "no time is left in the hook call")
    return limit


def fetch(
    plugin_id: str,
    rules: Sequence[HostRule],
    policy: NetworkPolicy,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float | None = None,
) -> HttpResponse:
    """Make one plugin's request under ``rules`` and ``policy``; the response.

    :raises EgressRefused: for any refusal, its ``reason`` saying which guard refused.
    """
    httpx = _httpx()
    method = method.upper()
    if not re.fullmatch(r"[A-Z]{1,16}", method):
        raise _refused(plugin_id, "method", url, f"invalid method {method!r}")
    limit = _time_limit(plugin_id, url, policy, timeout)
    deadline = time.monotonic() + limit
    extra = _headers(plugin_id, url, headers)
    if body is not None and len(body) > policy.max_request_bytes:
        raise _refused(
            plugin_id,
            "too_large",
            url,
            f"a body of {len(body)} bytes is over the limit of {policy.max_request_bytes}",
        )
    origin: tuple[str, str, int] | None = None
    for _hop in range(policy.max_redirects + 1):
        target = _check_url(plugin_id, url, rules)
        if origin is not None and origin != (target.scheme, target.host, target.port):
            extra = [(k, v) for k, v in extra if k.lower() not in _CREDENTIAL_HEADERS]
        origin = (target.scheme, target.host, target.port)
        address = _address(plugin_id, target, policy, deadline, limit)
        netloc = f"[{address}]" if ":" in address else address
        default = target.port == _DEFAULT_PORTS[target.scheme]
        host_header = target.host if ":" not in target.host else f"[{target.host}]"
        if not default:
            host_header += f":{target.port}"
        left = deadline - time.monotonic()
        if left <= 0:
            raise _refused(plugin_id, "timeout", url, f"no answer within {limit:g} s")
        with httpx.Client(
            follow_redirects=False, trust_env=False, timeout=left, verify=policy.verify
        ) as client:
            request = client.build_request(
                method,
                f"{target.scheme}://{netloc}:{target.port}{target.target}",
                headers=[("Host", host_header), *extra],
                content=body,
                extensions={"sni_hostname": target.host} if _ip(target.host) is None else {},
            )
            try:
                response = client.send(request, stream=True)
                try:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        location = response.headers["location"]
                    else:
                        location = None
                        data = _read(
                            plugin_id, url, response, policy=policy, deadline=deadline, limit=limit
                        )
                finally:
                    response.close()
            except httpx.TimeoutException:
                raise _refused(plugin_id, "timeout", url, f"no answer within {limit:g} s") from None
            except httpx.HTTPError as exc:
                raise _refused(plugin_id, "connect", url, f"the request failed ({exc})") from None
        if location is None:
            pairs = tuple((key.lower(), value) for key, value in response.headers.multi_items())
            return HttpResponse(response.status_code, pairs, data, url)
        url = urljoin(url, location)
        if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
            method, body = ("GET" if method != "HEAD" else "HEAD"), None
            extra = [(k, v) for k, v in extra if k.lower() not in ("content-type",)]
    raise _refused(
        plugin_id, "redirect", url, f"more than {policy.max_redirects} redirects (max_redirects)"
    )


def _read(
    plugin_id: str,
    url: str,
    response: httpx.Response,
    *,
    policy: NetworkPolicy,
    deadline: float,
    limit: float,
) -> bytes:
    cap = policy.max_response_bytes
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _refused(
            plugin_id,
            "too_large",
            url,
            f"a response of {declared} bytes is over the limit of {cap}",
        )
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > cap:
            raise _refused(
                plugin_id, "too_large", url, f"the response is over the limit of {cap} bytes"
            )
        if time.monotonic() > deadline:
            raise _refused(plugin_id, "timeout", url, f"no answer within {limit:g} s")
        chunks.append(chunk)
    return b"".join(chunks)
