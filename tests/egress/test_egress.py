"""Outbound HTTP for plugins: ``api.http_request`` goes out only where the approved manifest says.

Every plugin here is a real archive installed, approved and enabled on a real ``PluginHost``
(trusted to run in the host's process; test_egress_gaps.py and test_egress_cli.py drive
sandboxed ones); it makes its requests from a hook and records what it got, catching each
refusal as ``EgressRefused``.
The servers are real, on 127.0.0.1; the private-address rule is relaxed only where a test
says so, with ``NetworkPolicy(allow_private=True)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from egress_server import certificates, serve

from conftest import Hosts, Installer
from services_ai_plugins import Manifest, ManifestError, SandboxPolicy
from services_ai_plugins._egress import HttpResponse, NetworkPolicy, parse_rule
from services_ai_plugins.errors import EgressRefused
from services_ai_plugins.events import Context
from services_ai_plugins.types import ApiLimits, Rate
from services_ai_plugins_testing.fakes import FakeHostServices

HEADER = (
    "import json\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.errors import EgressRefused, PluginError\n\n\n"
    "class Plugin:\n"
)

#: The plugin: makes each request of PLAN in turn and keeps what came of it under its label.
BODY = """
@hookimpl
def lead_created(self, lead, api):
    for label, method, url, options in json.loads(PLAN):
        try:
            reply = api.http_request(method, url, **options)
        except EgressRefused as refused:
            outcome = {"refused": refused.reason, "url": refused.url}
        except PluginError as error:
            outcome = {"error": type(error).__name__}
        else:
            outcome = {"status": reply.status, "text": reply.text, "type": type(reply).__name__}
        api.store_set(label, outcome)
"""

Plan = Sequence[tuple[str, str, str, dict[str, Any]]]


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def run(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> Callable[..., dict[str, Any]]:
    """Install a plugin with ``network`` and PLAN, fire its hook once; what it stored."""

    def go(
        network: Sequence[str],
        plan: Plan,
        *,
        policy: NetworkPolicy | None = None,
        rates: dict[str, Rate] | None = None,
        permissions: Sequence[str] = ("http_requests", "read_leads"),
        sandboxed: bool = False,
        sandbox_timeout: float = 60.0,
    ) -> dict[str, Any]:
        limits = ApiLimits(network=policy or NetworkPolicy(), rates=rates or ApiLimits().rates)
        host = hosts(
            sandbox=(
                SandboxPolicy(timeout=sandbox_timeout)
                if sandboxed
                else SandboxPolicy(trusted=frozenset({"caller"}))
            ),
            limits=limits,
        )
        body = BODY.replace("PLAN", repr(json.dumps(plan)))
        install(host, "caller", body, permissions=permissions, manifest={"network": list(network)})
        host.hook.lead_created(
            lead=services.make_lead("acme", name="Ada"), context=Context(tenant="acme")
        )
        stored: dict[str, Any] = services.stored("acme", "caller")
        return stored

    return go


LOCAL = NetworkPolicy(allow_private=True, timeout=20.0)


def test_a_declared_host_answers_and_the_plugin_gets_an_http_response(
    run: Callable[..., dict[str, Any]],
) -> None:
    """GET and POST (JSON) reach a declared local server; the plugin reads status and body."""
    with serve() as (port, seen):
        got = run(
            [f"http://127.0.0.1:{port}"],
            [
                ("get", "GET", f"http://127.0.0.1:{port}/ok", {}),
                ("post", "POST", f"http://127.0.0.1:{port}/ok", {"json": {"n": 1}}),
                ("hop", "GET", f"http://127.0.0.1:{port}/to//ok", {}),
            ],
            policy=LOCAL,
        )
    assert got["get"]["status"] == 200
    assert got["get"]["type"] == "HttpResponse"
    assert json.loads(got["get"]["text"])["hello"] == "plugin"
    assert json.loads(got["post"]["text"])["got"] == '{"n": 1}'
    assert got["hop"]["status"] == 200  # a redirect to the same declared host is followed
    assert [entry[:2] for entry in seen] == [
        ("GET", "/ok"),
        ("POST", "/ok"),
        ("GET", "/to//ok"),
        ("GET", "/ok"),
    ]


def test_a_sandboxed_plugin_reaches_a_declared_host_through_the_host(
    run: Callable[..., dict[str, Any]],
) -> None:
    """A plugin in a worker (no network of its own) gets the host's HttpResponse, and the
    host's refusals arrive in the worker as EgressRefused with their reason."""
    with serve() as (port, seen):
        base = f"http://127.0.0.1:{port}"
        got = run(
            [base],
            [
                ("get", "GET", f"{base}/ok", {"headers": {"X-Plugin": "yes"}}),
                ("out", "GET", "https://evil.example.org/", {}),
                ("smuggle", "GET", f"{base}/ok", {"headers": {"Host": "evil.example.org"}}),
            ],
            policy=LOCAL,
            sandboxed=True,
        )
    assert got["get"]["status"] == 200
    assert got["get"]["type"] == "HttpResponse"
    assert json.loads(got["get"]["text"])["host"] == f"127.0.0.1:{port}"
    assert got["out"] == {"refused": "host", "url": "https://evil.example.org/"}
    assert got["smuggle"]["refused"] == "header"
    assert len(seen) == 1


def test_a_sandboxed_request_ends_within_what_is_left_of_the_sandbox_timeout(
    run: Callable[..., dict[str, Any]],
) -> None:
    """A slow server cannot make the host overrun the hook call's sandbox timeout (and kill the
    worker): the request is cut off first, and the plugin catches the refusal and goes on."""
    with serve(slow=60.0) as (port, _):
        base = f"http://127.0.0.1:{port}"
        got = run(
            [base],
            [("slow", "GET", f"{base}/slow", {})],
            policy=NetworkPolicy(allow_private=True, timeout=600.0),
            sandboxed=True,
            sandbox_timeout=8.0,
        )
    assert got == {"slow": {"refused": "timeout", "url": f"{base}/slow"}}


def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(
    run: Callable[..., dict[str, Any]],
) -> None:
    """A name is resolved once by the host, and that very address is dialled: the server
    sees the declared name in ``Host`` (no real DNS knows ``crm.example.test``)."""
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    with serve() as (port, seen):
        got = run(
            [f"http://crm.example.test:{port}"],
            [("get", "GET", f"http://crm.example.test:{port}/ok", {})],
            policy=NetworkPolicy(allow_private=True, resolver=resolver),
        )
    assert got["get"]["status"] == 200
    assert asked == ["crm.example.test"]
    assert seen[0][2] == f"crm.example.test:{port}"


def test_https_goes_to_the_checked_address_with_the_certificate_checked_for_the_name(
    run: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    """Over TLS the host dials the address it checked, sends the declared name as SNI and
    checks the certificate against that name: a certificate for another name is refused."""
    server_tls, client_tls = certificates(tmp_path, "secure.example.test")

    def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    with serve(tls=server_tls) as (port, seen):
        got = run(
            [f"secure.example.test:{port}", f"other.example.test:{port}"],
            [
                ("secure", "GET", f"https://secure.example.test:{port}/ok", {}),
                ("other", "GET", f"https://other.example.test:{port}/ok", {}),
            ],
            policy=NetworkPolicy(allow_private=True, resolver=resolver, verify=client_tls),
        )
    assert got["secure"]["status"] == 200
    assert json.loads(got["secure"]["text"])["host"] == f"secure.example.test:{port}"
    assert got["other"]["refused"] == "connect"
    assert [entry[2] for entry in seen] == [f"secure.example.test:{port}"]


def test_undeclared_hosts_schemes_and_redirects_out_are_refused(
    run: Callable[..., dict[str, Any]],
) -> None:
    """A hostile plugin tries every way past its one declared host; each is refused, typed."""
    with serve() as (port, seen):
        base = f"http://127.0.0.1:{port}"
        got = run(
            [base],
            [
                ("other_port", "GET", f"http://127.0.0.1:{port + 1}/ok", {}),
                ("other_ip", "GET", f"http://127.0.0.2:{port}/ok", {}),
                ("https", "GET", f"https://127.0.0.1:{port}/ok", {}),
                ("redirect_out", "GET", f"{base}/to/http://evil.example.org/", {}),
                ("redirect_file", "GET", f"{base}/to/file:///etc/passwd", {}),
                ("loop", "GET", f"{base}/loop", {}),
                ("userinfo", "GET", f"http://127.0.0.1:{port}@evil.example.org/ok", {}),
                ("userinfo2", "GET", f"http://evil.example.org@127.0.0.1:{port}/ok", {}),
                ("host_header", "GET", f"{base}/ok", {"headers": {"Host": "evil.example.org"}}),
                ("host_header_case", "GET", f"{base}/ok", {"headers": {"hOsT": "evil"}}),
                ("ipv6", "GET", f"http://[::1]:{port}/ok", {}),
                ("mapped", "GET", f"http://[::ffff:127.0.0.1]:{port}/ok", {}),
                ("decimal", "GET", f"http://2130706433:{port}/ok", {}),
                ("octal", "GET", f"http://0177.0.0.1:{port}/ok", {}),
                ("hex", "GET", f"http://0x7f.0.0.1:{port}/ok", {}),
                ("file", "GET", "file:///etc/passwd", {}),
                ("gopher", "GET", f"gopher://127.0.0.1:{port}/_x", {}),
                ("crlf", "GET", f"{base}/ok\r\nX: y", {}),
            ],
            policy=LOCAL,
        )
        hops = [entry[1] for entry in seen]
    reasons = {label: outcome.get("refused") for label, outcome in got.items()}
    assert reasons == {
        "other_port": "host",
        "other_ip": "host",
        "https": "scheme",
        "redirect_out": "host",
        "redirect_file": "scheme",
        "loop": "redirect",
        "userinfo": "url",
        "userinfo2": "url",
        "host_header": "header",
        "host_header_case": "header",
        "ipv6": "host",
        "mapped": "host",
        "decimal": "url",
        "octal": "url",
        "hex": "url",
        "file": "scheme",
        "gopher": "scheme",
        "crlf": "url",
    }
    assert got["redirect_out"]["url"] == "http://evil.example.org/"
    # Only the declared server was reached, and never on a refused hop's target.
    assert all(not hop.startswith("/ok") or hop == "/ok" for hop in hops)
    assert "/ok" not in hops  # no refused request reached the server's /ok


def test_a_name_resolving_to_a_private_address_is_refused_unless_relaxed(
    run: Callable[..., dict[str, Any]],
) -> None:
    """With the default policy, a declared name that resolves to loopback or a private
    network (DNS rebinding, ``localhost``) and a declared private IP literal are refused."""

    def resolver(host: str, port: int) -> list[str]:
        return {"rebound.example.test": ["93.184.216.34", "10.0.0.7"]}.get(host, ["127.0.0.1"])

    with serve() as (port, seen):
        got = run(
            [
                f"http://rebound.example.test:{port}",
                f"http://localhost:{port}",
                f"http://127.0.0.1:{port}",
                f"http://[::ffff:127.0.0.1]:{port}",
                f"http://[64:ff9b::a00:1]:{port}",
            ],
            [
                ("rebound", "GET", f"http://rebound.example.test:{port}/ok", {}),
                ("localhost", "GET", f"http://localhost:{port}/ok", {}),
                ("literal", "GET", f"http://127.0.0.1:{port}/ok", {}),
                ("mapped", "GET", f"http://[::ffff:127.0.0.1]:{port}/ok", {}),
                ("nat64", "GET", f"http://[64:ff9b::a00:1]:{port}/ok", {}),
            ],
            policy=NetworkPolicy(resolver=resolver),
        )
        assert seen == []
    assert {label: outcome.get("refused") for label, outcome in got.items()} == dict.fromkeys(
        ("rebound", "localhost", "literal", "mapped", "nat64"), "address"
    )


def test_oversize_and_slow_responses_are_cut_off(run: Callable[..., dict[str, Any]]) -> None:
    """The response is read up to the cap only (declared length or streamed), a request
    body over its cap is not sent, and a server that does not answer in time is left."""
    with serve(slow=10.0) as (port, seen):
        base = f"http://127.0.0.1:{port}"
        got = run(
            [base],
            [
                ("big", "GET", f"{base}/big", {}),
                ("stream", "GET", f"{base}/stream", {}),
                ("upload", "POST", f"{base}/ok", {"body": "z" * 5000}),
                ("slow", "GET", f"{base}/slow", {}),
                ("fine", "GET", f"{base}/ok", {}),
            ],
            policy=NetworkPolicy(
                allow_private=True, max_response_bytes=1000, max_request_bytes=1000, timeout=1.0
            ),
        )
        posted = [entry for entry in seen if entry[0] == "POST"]
    assert got["big"] == {"refused": "too_large", "url": f"{base}/big"}
    assert got["stream"]["refused"] == "too_large"
    assert got["upload"]["refused"] == "too_large"
    assert posted == []
    assert got["slow"]["refused"] == "timeout"
    assert got["fine"]["status"] == 200  # the plugin goes on after each refusal


def test_over_its_rate_the_plugin_is_refused(run: Callable[..., dict[str, Any]]) -> None:
    """Over its ``http_request`` rate the plugin gets RateLimited, and nothing is sent."""
    with serve() as (port, seen):
        base = f"http://127.0.0.1:{port}"
        plan: Plan = [(f"call{n}", "GET", f"{base}/ok", {}) for n in range(3)]
        got = run([base], plan, policy=LOCAL, rates={"http_request": Rate(2, per=3600.0)})
        assert [got[f"call{n}"].get("status") for n in range(2)] == [200, 200]
        assert got["call2"] == {"error": "RateLimited"}
        assert len(seen) == 2


def test_without_the_permission_nothing_is_sent(run: Callable[..., dict[str, Any]]) -> None:
    with serve() as (port, seen):
        base = f"http://127.0.0.1:{port}"
        got = run(
            [base], [("denied", "GET", f"{base}/ok", {})], policy=LOCAL, permissions=("read_leads",)
        )
        assert got["denied"] == {"error": "PermissionDenied"}
        assert seen == []


# -- the manifest field -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("*", "bare '*'"),
        ("*.10.0.0.1", "must not wildcard an IP address"),
        ("10.0.*.1", "only as the whole first label"),
        ("*.com", "two labels or more"),
        ("ftp://files.example.com", "scheme https or http"),
        ("api.example.com:70000", "port from 1 to 65535"),
        ("API.example.com", "lowercase"),
        ("2130706433", "invalid host"),
        ("0177.0.0.1", "invalid host"),
        ("user@api.example.com", "invalid host"),
        ("api.example.com/path", "must be a host"),
        ("[fe80::1%eth0]", "invalid IPv6"),
    ],
)
def test_bad_network_entries_are_refused_by_json_path(entry: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        Manifest.from_dict(
            {"name": "Caller", "version": "1.0", "network": ["ok.example.com", entry]}
        )
    (problem,) = caught.value.problems
    assert problem.path == "network[1]"
    assert message in problem.message


def test_network_entries_round_trip_and_mean_what_they_say() -> None:
    entries = ["api.example-crm.com", "*.hooks.example.com", "http://localhost:8080", "[::1]:8443"]
    manifest = Manifest.from_dict({"name": "Caller", "version": "1.0", "network": entries})
    assert Manifest.from_json(manifest.to_json()) == manifest
    crm, hooks, local, six = (parse_rule(entry) for entry in manifest.network)
    assert crm.matches("https", "api.example-crm.com", 443)
    assert not crm.matches("http", "api.example-crm.com", 80)
    assert hooks.matches("https", "a.b.hooks.example.com", 443)
    assert not hooks.matches("https", "hooks.example.com", 443)
    assert not hooks.matches("https", "evilhooks.example.com", 443)
    assert local.matches("http", "localhost", 8080)
    assert six.matches("https", "::1", 8443)
    with pytest.raises(ManifestError, match="repeats"):
        Manifest.from_dict(
            {"name": "Caller", "version": "1.0", "network": ["a.example", "a.example"]}
        )


def test_http_response_reads_as_text_json_and_headers() -> None:
    reply = HttpResponse(
        200, (("content-type", "application/json"),), b'{"a": 1}', "https://x.test/"
    )
    assert reply.json() == {"a": 1}
    assert reply.text == '{"a": 1}'
    assert reply.header("Content-Type") == "application/json"
    assert isinstance(EgressRefused("p", "host", "u"), Exception)


# -- approval: what a reviewer and an upgrade diff show -------------------------------------------


def _manifest(version: str, network: list[str]) -> Manifest:
    return Manifest.from_dict(
        {"name": "Caller", "version": version, "permissions": ["http_requests"], "network": network}
    )


def test_a_new_host_is_something_new_to_approve() -> None:
    """An upgrade that adds a host asks for something new (an approval); dropping one does not."""
    from services_ai_plugins._permissions import PermissionCatalogue
    from services_ai_plugins._versions import VersionSide, diff_versions

    old = _manifest("1.0", ["api.example.com", "old.example.com"])
    new = _manifest("1.1", ["api.example.com", "*.hooks.example.com"])

    def side(m: Manifest) -> VersionSide:
        return VersionSide(version=str(m.version), manifest=m, code_hash="a" * 64, files=None)

    diff = diff_versions(side(old), side(new), PermissionCatalogue())
    assert diff.network_added == ("*.hooks.example.com",)
    assert diff.network_removed == ("old.example.com",)
    assert diff.asks_for_nothing_new == ["may reach the host '*.hooks.example.com' (network)"]
    assert diff.to_dict()["network"] == {
        "added": ["*.hooks.example.com"],
        "removed": ["old.example.com"],
    }
    assert "Network:" in diff.lines()
    assert "  + *.hooks.example.com" in diff.lines()
    dropped = diff_versions(
        side(old), side(_manifest("1.2", ["api.example.com"])), PermissionCatalogue()
    )
    assert dropped.asks_for_nothing_new == []


def test_the_reviewer_sees_the_hosts_and_the_permission_risk() -> None:
    """The facts an admin approves from list the hosts; the permission is high risk."""
    from services_ai_plugins import PluginRecord, PluginStatus
    from services_ai_plugins._permissions import PermissionCatalogue
    from services_ai_plugins._review import plugin_facts
    from services_ai_plugins.storage import SourceKind

    manifest = _manifest("1.0", ["api.example.com", "http://localhost:8080"])
    (requested,) = PermissionCatalogue().requested(manifest.permissions)
    assert requested["risk"] == "high"
    assert "network" in requested["description"]
    record = PluginRecord(
        id=manifest.id,
        name=manifest.name,
        version=str(manifest.version),
        status=PluginStatus.PENDING,
        manifest=manifest.to_dict(),
        code_hash="a" * 64,
        source=SourceKind.ARCHIVE,
        installed_at=datetime.now(timezone.utc),
        installed_by="ops",
    )
    assert ("Network", "api.example.com, http://localhost:8080") in plugin_facts(record, manifest)


ASYNC_BODY = """
@hookimpl
async def lead_created(self, lead, api):
    reply = await api.ahttp_request("GET", "BASE/ok")
    try:
        await api.ahttp_request("GET", "https://evil.example.org/")
    except EgressRefused as refused:
        api.store_set("refused", refused.reason)
    api.store_set("status", reply.status)
"""


def test_an_async_hook_awaits_ahttp_request_on_the_async_path(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """``await api.ahttp_request(...)`` in an async hook fired with ``host.ahook``: the same
    guards (the request runs in a thread, off the event loop)."""
    import asyncio

    with serve() as (port, seen):
        host = hosts(
            sandbox=SandboxPolicy(trusted=frozenset({"caller"})), limits=ApiLimits(network=LOCAL)
        )
        base = f"http://127.0.0.1:{port}"
        install(
            host,
            "caller",
            ASYNC_BODY.replace("BASE", base),
            permissions=("http_requests", "read_leads"),
            manifest={"network": [base]},
        )
        lead = services.make_lead("acme", name="Ada")
        asyncio.run(host.ahook.lead_created(lead=lead, context=Context(tenant="acme")))
        assert [entry[:2] for entry in seen] == [("GET", "/ok")]
    assert services.stored("acme", "caller") == {"status": 200, "refused": "host"}


def test_a_worker_cannot_forge_a_malformed_http_response_on_the_wire() -> None:
    """The wire form of an HttpResponse is read strictly: a malformed one is a WireError."""
    from services_ai_plugins._sandbox._wire import decode, encode
    from services_ai_plugins.errors import WireError

    reply = HttpResponse(201, (("x-a", "b"),), b"\x00\xffbody", "https://x.example/")
    assert decode(encode(reply)) == reply
    assert decode(encode({"$http": "escaped"})) == {"$http": "escaped"}
    for forged in (
        {"$http": [200, [["a"]], "", "u"]},
        {"$http": [200, [], "not base64!", "u"]},
        {"$http": ["200", [], "", "u"]},
        {"$http": [200, [], "", "u", "extra"]},
        {"$http": [True, [], "", "u"]},
    ):
        with pytest.raises(WireError):
            decode(forged)
