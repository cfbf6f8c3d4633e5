"""Egress gaps of issue 22: ``PluginHost(network=...)``, the DNS lookup's time limit and its
bounded threads, and credentials dropped on a redirect to another origin.

Every plugin is a real archive installed on a real ``PluginHost`` and, unless a test says
otherwise, runs sandboxed (a hostile upload): it makes its requests from a hook, catches each
refusal as ``EgressRefused`` and stores what came of it. The servers are real, on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from egress_server import serve

from conftest import Hosts, Installer
from services_ai_plugins import SandboxPolicy
from services_ai_plugins._egress import _LOOKUPS, DNS_LOOKUPS_PER_PLUGIN, NetworkPolicy
from services_ai_plugins.errors import ConfigError
from services_ai_plugins.events import Context
from services_ai_plugins.types import ApiLimits, Rate
from services_ai_plugins_testing.fakes import FakeHostServices

HEADER = (
    "import json\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.errors import EgressRefused, PluginError\n\n\n"
    "class Plugin:\n"
)

#: Makes each request of PLAN in turn and keeps what came of it under its label.
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
            outcome = {"status": reply.status, "text": reply.text, "url": reply.url}
        api.store_set(label, outcome)
"""

Plan = Sequence[tuple[str, str, str, dict[str, Any]]]
LOCAL = NetworkPolicy(allow_private=True, timeout=20.0)


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


def _plugin(
    install: Installer, host: Any, plugin_id: str, network: Sequence[str], plan: Plan
) -> None:
    body = BODY.replace("PLAN", repr(json.dumps(plan)))
    install(
        host,
        plugin_id,
        body,
        permissions=("http_requests", "read_leads"),
        manifest={"network": list(network)},
    )


def _fire(host: Any, services: FakeHostServices) -> None:
    host.hook.lead_created(
        lead=services.make_lead("acme", name="Ada"), context=Context(tenant="acme")
    )


# -- PluginHost(network=...) -----------------------------------------------------------------


def test_network_is_the_plain_way_to_set_the_hosts_egress_policy(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """``PluginHost(network=...)`` is what a sandboxed plugin's requests go out under: the
    loopback server is reached with ``allow_private``, and refused by a host without it."""
    with serve() as (port, seen):
        base = f"http://127.0.0.1:{port}"
        plan = [("get", "GET", f"{base}/ok", {})]
        relaxed = hosts(sandbox=SandboxPolicy(timeout=60.0), network=LOCAL)
        _plugin(install, relaxed, "caller", [base], plan)
        _fire(relaxed, services)
        assert services.stored("acme", "caller")["get"]["status"] == 200
        assert len(seen) == 1

        strict = hosts(sandbox=SandboxPolicy(timeout=60.0), network=NetworkPolicy(timeout=20.0))
        _plugin(install, strict, "other", [base], plan)
        _fire(strict, services)
        assert services.stored("acme", "other")["get"]["refused"] == "address"
        assert len(seen) == 1


def test_network_and_limits_combine_unless_both_set_a_network_policy(hosts: Hosts) -> None:
    """``limits`` without a network policy of its own keeps its rates and takes ``network``;
    a ``limits`` that has one and ``network`` as well is ambiguous and refused, naming both."""
    rates = {"http_request": Rate(3, per=60.0)}
    host = hosts(limits=ApiLimits(rates=rates), network=LOCAL)
    assert host.meter.limits.network is LOCAL
    assert host.meter.limits.rates == rates
    assert hosts(limits=ApiLimits(network=LOCAL)).meter.limits.network is LOCAL

    with pytest.raises(TypeError, match=r"network=.*limits=ApiLimits\(network="):
        hosts(limits=ApiLimits(network=LOCAL), network=NetworkPolicy(timeout=3.0))
    custom_resolver = NetworkPolicy(resolver=lambda host, port: ["203.0.113.7"])
    with pytest.raises(TypeError, match="in one place"):
        hosts(limits=ApiLimits(network=custom_resolver), network=LOCAL)
    with pytest.raises(TypeError, match="takes a NetworkPolicy"):
        hosts(network={"allow_private": True})


def test_an_adapters_network_setting_reaches_its_host(tmp_path: Path) -> None:
    """``NETWORK`` holds NetworkPolicy's keyword arguments, as ``SANDBOX`` holds
    SandboxPolicy's; a wrong one, or one given twice (with ``HOST['network']``), is a
    ConfigError naming the key, before any host is built."""
    import flask

    from services_ai_plugins.flask import PluginsExtension

    base = {
        "STORAGE": str(tmp_path / "registry.db"),
        "PLUGINS_DIR": str(tmp_path / "plugins"),
        "HOST": {"entry_points": False},
    }
    ext = PluginsExtension(settings={**base, "NETWORK": {"allow_private": True, "timeout": 3.0}})
    try:
        assert ext.host.meter.limits.network == NetworkPolicy(allow_private=True, timeout=3.0)
    finally:
        ext.close()
    ext = PluginsExtension(settings=base)
    try:
        assert ext.host.meter.limits.network == NetworkPolicy()
    finally:
        ext.close()
    for wrong in (
        {"NETWORK": {"timeout": 0}},
        {"NETWORK": {"colour": "red"}},
        {"NETWORK": 5},
        {"NETWORK": {}, "HOST": {"network": LOCAL}},
    ):
        with pytest.raises(ConfigError) as caught:
            PluginsExtension(flask.Flask("crm"), settings={**base, **wrong})
        assert caught.value.key == "NETWORK"


# -- DNS: a time limit and bounded threads ---------------------------------------------------


class HangingResolver:
    """``slow.example.test`` never answers until released; ``fast.example.test`` is 127.0.0.1."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.slow_lookups = 0
        self._lock = threading.Lock()

    def __call__(self, host: str, port: int) -> list[str]:
        if host == "slow.example.test":
            with self._lock:
                self.slow_lookups += 1
            self.release.wait(120)
        return ["127.0.0.1"]


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < end, what
        time.sleep(0.05)


def test_a_hanging_dns_lookup_is_cut_off_and_a_flood_of_them_cannot_take_the_hosts_threads(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """A hostile plugin whose name never resolves gets ``timeout`` within its request's limit;
    its next lookups, while those hang, are refused (``dns``) without a thread of their own,
    so the resolver runs at most DNS_LOOKUPS_PER_PLUGIN times; another plugin's lookups still
    run. Released, the hung lookups end and give their slots back."""
    resolver = HangingResolver()
    with serve() as (port, seen):
        try:
            host = hosts(
                sandbox=SandboxPolicy(timeout=120.0),
                network=NetworkPolicy(allow_private=True, timeout=20.0, resolver=resolver),
            )
            slow = f"http://slow.example.test:{port}"
            fast = f"http://fast.example.test:{port}"
            flood = [(f"n{i}", "GET", f"{slow}/ok", {"timeout": 0.5}) for i in range(10)]
            _plugin(install, host, "hostile", [slow], flood)
            _plugin(install, host, "neighbour", [fast], [("get", "GET", f"{fast}/ok", {})])
            _fire(host, services)
            got = services.stored("acme", "hostile")
            reasons = [got[f"n{i}"]["refused"] for i in range(10)]
            assert reasons == ["timeout"] * DNS_LOOKUPS_PER_PLUGIN + ["dns"] * (
                10 - DNS_LOOKUPS_PER_PLUGIN
            )
            assert resolver.slow_lookups == DNS_LOOKUPS_PER_PLUGIN
            assert _LOOKUPS.in_progress("hostile") == DNS_LOOKUPS_PER_PLUGIN
            # Again, while the hostile plugin's lookups hang: all of its own are refused at
            # once, and the neighbour's name still resolves.
            _fire(host, services)
            got = services.stored("acme", "hostile")
            assert [got[f"n{i}"]["refused"] for i in range(10)] == ["dns"] * 10
            assert resolver.slow_lookups == DNS_LOOKUPS_PER_PLUGIN
            neighbour = services.stored("acme", "neighbour")["get"]
            assert neighbour["status"] == 200
            assert json.loads(neighbour["text"])["host"] == f"fast.example.test:{port}"
            assert [entry[2] for entry in seen] == [f"fast.example.test:{port}"] * 2
        finally:
            resolver.release.set()
        _wait_until(lambda: _LOOKUPS.in_progress() == 0, "the released lookups never ended")


def test_a_failing_lookup_is_still_a_dns_refusal(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """The lookup now runs in a thread of its own: a name that does not resolve is still
    ``dns``, as before."""

    def unknown(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    host = hosts(
        sandbox=SandboxPolicy(timeout=60.0),
        network=NetworkPolicy(allow_private=True, resolver=unknown),
    )
    url = "https://nowhere.example.test/"
    _plugin(install, host, "caller", ["nowhere.example.test"], [("x", "GET", url, {})])
    _fire(host, services)
    assert services.stored("acme", "caller") == {"x": {"refused": "dns", "url": url}}


# -- credentials on redirects ----------------------------------------------------------------

SECRETS = {"Authorization": "Bearer s3cret", "Cookie": "sid=42", "X-Trace": "keep-me"}


def test_credentials_are_dropped_on_a_redirect_to_another_origin_and_kept_on_the_same(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """Two local servers (two ports: two origins). A redirect within the first keeps
    ``Authorization`` and ``Cookie``; one to the second drops them (other headers go on), and
    they stay dropped when a later hop comes back to the first origin."""
    with serve() as (port_a, seen_a), serve() as (port_b, seen_b):
        a, b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
        plan = [
            ("same", "GET", f"{a}/to//headers", {"headers": SECRETS}),
            ("other", "GET", f"{a}/to/{b}/headers", {"headers": SECRETS}),
            ("back", "GET", f"{a}/to/{b}/to/{a}/headers", {"headers": SECRETS}),
        ]
        host = hosts(sandbox=SandboxPolicy(timeout=60.0), network=LOCAL)
        _plugin(install, host, "caller", [a, b], plan)
        _fire(host, services)
    got = services.stored("acme", "caller")
    same = json.loads(got["same"]["text"])
    assert (same["authorization"], same["cookie"], same["x-trace"]) == (
        "Bearer s3cret",
        "sid=42",
        "keep-me",
    )
    other = json.loads(got["other"]["text"])
    assert got["other"]["url"] == f"{b}/headers"
    assert "authorization" not in other
    assert "cookie" not in other
    assert other["x-trace"] == "keep-me"
    back = json.loads(got["back"]["text"])
    assert got["back"]["url"] == f"{a}/headers"
    assert "authorization" not in back
    assert "cookie" not in back
    assert [entry[1] for entry in seen_b] == ["/headers", f"/to/{a}/headers"]
    assert len(seen_a) == 5


# -- await api.ahttp_request in a sandboxed plugin -------------------------------------------

#: An async hook that awaits a slow request while a task of its own keeps ticking, then one
#: refused request; it also uses a plain (blocking) API method from the same hook.
ASYNC_BODY = """
@hookimpl
async def lead_created(self, lead, api):
    import asyncio

    state = {"in_flight": False, "done": False, "ticks": 0}

    async def request():
        state["in_flight"] = True
        try:
            return await api.ahttp_request("GET", "BASE/slow", timeout=30.0)
        finally:
            state["in_flight"] = False
            state["done"] = True

    async def ticker():
        while not state["done"]:
            if state["in_flight"]:
                state["ticks"] += 1
            await asyncio.sleep(0.01)

    reply, _ = await asyncio.gather(request(), ticker())
    kind = type(reply).__name__
    api.store_set("slow", {"status": reply.status, "text": reply.text, "type": kind})
    api.store_set("ticks_while_waiting", state["ticks"])
    try:
        await api.ahttp_request("GET", "https://evil.example.org/")
    except EgressRefused as refused:
        api.store_set("refused", {"reason": refused.reason, "url": refused.url})
"""


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_sandboxed_async_hook_awaits_ahttp_request_without_blocking_its_loop(
    hosts: Hosts, install: Installer, services: FakeHostServices, path: str
) -> None:
    """``await api.ahttp_request(...)`` in a sandboxed ``async def`` hook, fired on the host's
    sync path and on its async path: the host makes the request (the worker has no network),
    the hook's other task runs while it waits, and a refusal arrives as EgressRefused."""
    import asyncio

    with serve(slow=1.0) as (port, seen):
        base = f"http://127.0.0.1:{port}"
        host = hosts(sandbox=SandboxPolicy(timeout=60.0), network=LOCAL)
        install(
            host,
            "caller",
            ASYNC_BODY.replace("BASE", base),
            permissions=("http_requests", "read_leads"),
            manifest={"network": [base]},
        )
        lead = services.make_lead("acme", name="Ada")
        if path == "sync":
            host.hook.lead_created(lead=lead, context=Context(tenant="acme"))
        else:
            asyncio.run(host.ahook.lead_created(lead=lead, context=Context(tenant="acme")))
        assert [entry[:2] for entry in seen] == [("GET", "/slow")]
        assert {worker.plugin_id for worker in host.sandbox.workers()} == {"caller"}
    got = services.stored("acme", "caller")
    assert got["slow"] == {"status": 200, "text": "late", "type": "HttpResponse"}
    assert got["ticks_while_waiting"] > 0
    assert got["refused"] == {"reason": "host", "url": "https://evil.example.org/"}
    assert host.failures("caller") == []


NESTED_BODY = """
@hookimpl
async def lead_created(self, lead, api):
    import asyncio, os

    await asyncio.sleep(0)
    api.update_lead(lead.id, {"status": "contacted"})  # fires lead_updated, nested, here
    await asyncio.sleep(0)  # this hook's own loop runs again afterwards
    reply = await api.ahttp_request("GET", "BASE/ok")
    api.store_set("outer", [os.getpid(), reply.status])

@hookimpl
async def lead_updated(self, lead, api):
    import asyncio, os

    await asyncio.sleep(0)
    reply = await api.ahttp_request("GET", "BASE/ok")
    api.store_set("inner", [os.getpid(), lead.status, reply.status])
"""


def test_an_async_hook_nested_in_an_async_hooks_api_request_runs_in_the_same_worker(
    tmp_path: Path, install: Installer
) -> None:
    """A host service that fires a hook while it serves an async hook's (blocking) API
    request: the nested ``async def`` hook runs in the same worker, on a loop of its own, and
    the outer hook's loop goes on afterwards."""
    from services_ai_plugins import MemoryStorage, PluginHost
    from services_ai_plugins.events import Lead

    class Firing(FakeHostServices):
        host: PluginHost

        def update_lead(self, tenant: str, lead_id: str, changes: Any) -> Lead:
            lead = super().update_lead(tenant, lead_id, changes)
            self.host.hook.lead_updated(lead=lead, changes={}, context=Context(tenant=tenant))
            return lead

    services = Firing()
    with (
        serve() as (port, seen),
        PluginHost(
            services,
            storage=MemoryStorage(),
            plugins_dir=tmp_path / "plugins",
            entry_points=False,
            sandbox=SandboxPolicy(timeout=60.0),
            network=LOCAL,
        ) as host,
    ):
        services.host = host
        base = f"http://127.0.0.1:{port}"
        install(
            host,
            "echo",
            NESTED_BODY.replace("BASE", base),
            permissions=("read_leads", "write_leads", "http_requests"),
            manifest={"network": [base]},
        )
        _fire(host, services)
        stored = services.stored("acme", "echo")
        assert stored["inner"] == [stored["outer"][0], "contacted", 200]
        assert stored["outer"][1] == 200
        assert host.failures("echo") == []
        assert len(seen) == 2


STALE_BODY = """
KEPT = []

@hookimpl
async def lead_created(self, lead, api):
    if self.KEPT:  # a later call: the api kept from the first one
        try:
            await self.KEPT[0].ahttp_request("GET", "BASE/ok")
        except RuntimeError as error:
            api.store_set("stale", str(error))
        return
    self.KEPT.append(api)
"""


def test_an_api_kept_from_an_earlier_call_cannot_send_an_async_request(
    hosts: Hosts, install: Installer, services: FakeHostServices
) -> None:
    """``ahttp_request`` obeys the rule of every sandboxed API method: only during the call
    that received the api; nothing reaches the server."""
    with serve() as (port, seen):
        base = f"http://127.0.0.1:{port}"
        host = hosts(sandbox=SandboxPolicy(timeout=60.0), network=LOCAL)
        install(
            host,
            "caller",
            STALE_BODY.replace("BASE", base),
            permissions=("http_requests", "read_leads"),
            manifest={"network": [base]},
        )
        _fire(host, services)
        _fire(host, services)
        assert seen == []
    stale = services.stored("acme", "caller")["stale"]
    assert "only during the hook call that received this api" in stale
