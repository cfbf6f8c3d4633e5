"""The process sandbox: sandboxed plugins work like in-process ones, and hostile ones are contained.

Every plugin here is a real folder packed into a real archive, installed,
approved and enabled; sandboxed ones run in real worker processes.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import socket
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import (
    BreakerPolicy,
    MemoryStorage,
    PluginHost,
    SandboxError,
    SandboxPolicy,
)
from services_ai_plugins._api import DeniedCall
from services_ai_plugins._sandbox import _stand_in
from services_ai_plugins._sandbox._confine import PRIVATE_MOUNTS, UNPRIVILEGED_USER, probe
from services_ai_plugins.events import ApiRequest, Context, Lead, Widget
from services_ai_plugins.storage import SourceKind
from services_ai_plugins.types import Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

HEADER = (
    "import gc, json, os, socket, subprocess, sys, time\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import Widget\n\n\n"
    "class Plugin:\n"
)

ACME = Context(tenant="acme")

#: A well-behaved plugin installed beside each hostile one: it must keep working.
HEALTHY = """
@hookimpl
def lead_created(self, lead, api):
    api.store_set("seen", (api.store_get("seen") or 0) + 1)
"""


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.fixture
def denied() -> list[DeniedCall]:
    return []


@pytest.fixture
def make_host(hosts: Hosts, denied: list[DeniedCall]) -> Callable[..., PluginHost]:
    def make(**policy: Any) -> PluginHost:
        sandbox = SandboxPolicy(**{"timeout": 3.0} | policy)
        return cast("PluginHost", hosts(sandbox=sandbox, on_denied=denied.append))

    return make


def alive(pid: int) -> bool:
    """Whether the process still exists (a little patience: it may be dying)."""
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.02)
    return True


def fire(host: PluginHost, services: FakeHostServices) -> Lead:
    lead = services.make_lead("acme", name="Ada")
    host.hook.lead_created(lead=lead, context=ACME)
    return lead


def failures(host: PluginHost, plugin_id: str) -> list[Any]:
    return host.failures(plugin_id)


# -- sandboxed plugins work like in-process ones --------------------------------------------------


def test_an_uploaded_plugin_runs_in_a_worker_process_with_its_own_api(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """The worker is another process; the plugin's api calls are run by the host, for its tenant."""
    host = make_host()
    install(
        host,
        "where",
        """
        @hookimpl
        def lead_created(self, lead, api, context):
            api.store_set("pid", os.getpid())
            api.store_set("lead", [lead.id, lead.name, lead.tenant, api.tenant, context.tenant])
            api.store_set("api", [api.plugin_id, repr(api), api.context.tenant])
        """,
    )
    lead = fire(host, services)
    stored = services.stored("acme", "where")
    assert stored["pid"] != os.getpid()
    assert stored["pid"] == host.plugins()["where"].pid  # type: ignore[attr-defined]
    assert stored["lead"] == [lead.id, "Ada", "acme", "acme", "acme"]
    assert stored["api"][0] == "where"
    assert stored["api"][2] == "acme"
    assert failures(host, "where") == []


def test_collect_and_filter_results_come_back_as_records(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    host = make_host()
    install(
        host,
        "widgets",
        """
        @hookimpl
        def dashboard_widget(self, context, settings):
            return Widget(tenant=context.tenant, title="Pid", html=str(os.getpid()))

        @hookimpl
        def filter_email(self, email):
            return email.__class__(**{**email.__dict__, "subject": email.subject + " [checked]"}) \\
                if hasattr(email, "__dict__") else email
        """,
        permissions=("dashboard_widgets", "send_email"),
    )
    [widget] = host.hook.dashboard_widget(context=ACME)
    assert isinstance(widget, Widget)
    assert widget.plugin_id == "widgets"
    assert int(widget.html) != os.getpid()


def test_a_manifest_asking_for_a_process_gets_one_and_policy_decides_otherwise(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host(isolation={"archive": "inprocess"})
    body = """
    @hookimpl
    def lead_created(self, lead, api):
        api.store_set("pid", os.getpid())
    """
    install(host, "trusted", body)
    install(host, "careful", body, manifest={"isolation": "process"})
    fire(host, services)
    assert services.stored("acme", "trusted")["pid"] == os.getpid()
    assert services.stored("acme", "careful")["pid"] != os.getpid()


def test_workers_are_reused_listed_and_stopped_with_the_host(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host()
    install(host, "healthy", HEALTHY)
    for _ in range(3):
        fire(host, services)
    loader, info = host.sandbox.workers()  # the one its load started, and acme's
    assert (loader.plugin_id, loader.tenant, loader.calls) == ("healthy", None, 0)
    assert (info.plugin_id, info.tenant) == ("healthy", "acme")
    assert info.calls == 3
    assert info.rss is None or info.rss > 1_000_000
    pid = info.pid
    os.kill(pid, 0)  # alive
    host.close()
    assert not alive(pid)


def test_the_number_of_live_workers_is_bounded(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host(max_workers=2)
    for name in ("one", "two", "three"):
        install(host, name, HEALTHY)
    fire(host, services)
    assert len(host.sandbox.workers()) <= 2
    assert all(services.stored("acme", name)["seen"] == 1 for name in ("one", "two", "three"))
    fire(host, services)
    assert all(services.stored("acme", name)["seen"] == 2 for name in ("one", "two", "three"))


def test_a_plugin_that_fails_to_import_is_recorded_as_a_load_failure(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    host = make_host()
    install(host, "broken", "x = 1 / 0\n")
    assert "broken" not in host.plugins()
    [failure] = failures(host, "broken")
    assert failure.hook == "load"
    assert failure.exc_type == "ZeroDivisionError"
    assert failure.message == "division by zero"


def test_imports_outside_the_sdk_and_declared_requirements_are_refused(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host()
    install(
        host,
        "importer",
        """
        @hookimpl
        def lead_created(self, lead, api):
            import psycopg  # installed on the host, not declared
        """,
    )
    fire(host, services)
    [failure] = failures(host, "importer")
    assert failure.exc_type == "ModuleNotFoundError"
    assert "may not import 'psycopg'" in failure.message


def test_what_a_plugin_prints_and_logs_reaches_its_logger(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = make_host()
    install(
        host,
        "talker",
        """
        @hookimpl
        def lead_created(self, lead, api):
            print("hello from", lead.name)
            api.logger.warning("careful: %s", lead.id)
        """,
    )
    with caplog.at_level(logging.INFO, logger="services_ai_plugins.plugins.talker"):
        lead = fire(host, services)
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name.endswith("talker")]
    assert (logging.INFO, "[stdout] hello from Ada") in messages
    assert (logging.WARNING, f"[services_ai_plugins.plugins.talker] careful: {lead.id}") in messages


def test_a_denied_api_call_raises_the_sdk_error_in_the_worker(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    denied: list[DeniedCall],
) -> None:
    host = make_host()
    install(
        host,
        "nosy",
        """
        @hookimpl
        def lead_created(self, lead, api):
            from services_ai_plugins import PermissionDenied
            try:
                api.list_invoices()
            except PermissionDenied as exc:
                api.store_set("denied", [type(exc).__name__, str(exc), exc.permission])
        """,
    )
    fire(host, services)
    name, message, permission = services.stored("acme", "nosy")["denied"]
    assert permission == "read_invoices"
    assert name == "PermissionDenied"
    assert "read_invoices" in message
    assert [(d.plugin_id, d.method, d.permission) for d in denied] == [
        ("nosy", "list_invoices", "read_invoices")
    ]


def test_a_worker_that_dies_is_recorded_and_replaced(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host()
    install(
        host,
        "fragile",
        """
        @hookimpl
        def lead_created(self, lead, api):
            count = (api.store_get("count") or 0) + 1
            api.store_set("count", count)
            api.store_set("pid-%d" % count, os.getpid())
            if count == 1:
                os._exit(3)
        """,
    )
    fire(host, services)
    fire(host, services)
    stored = services.stored("acme", "fragile")
    assert stored["count"] == 2
    assert stored["pid-1"] != stored["pid-2"]
    [failure] = failures(host, "fragile")
    assert failure.exc_type == "WorkerCrashed"
    assert "exited with code 3" in failure.message


def test_the_breaker_suspends_a_sandboxed_plugin_that_keeps_failing(
    tmp_path: Path, install: Installer, services: FakeHostServices
) -> None:
    with PluginHost(
        services,
        storage=MemoryStorage(),
        plugins_dir=tmp_path / "plugins",
        entry_points=False,
        breaker=BreakerPolicy(consecutive_failures=2),
        sandbox=SandboxPolicy(timeout=3.0),
    ) as host:
        install(
            host, "sour", "@hookimpl\ndef lead_created(self, lead):\n    raise ValueError('no')\n"
        )
        for _ in range(3):
            fire(host, services)
        assert [(s.plugin_id, s.tenant) for s in host.suspensions()] == [("sour", "acme")]
        assert len(failures(host, "sour")) == 2


def test_trace_hook_shows_a_sandboxed_plugins_part(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host()
    install(host, "sour", "@hookimpl\ndef lead_created(self, lead):\n    raise ValueError('no')\n")
    trace = host.trace_hook("lead_created", lead=services.make_lead("acme"), context=ACME)
    outcome = trace.outcome("sour")
    assert outcome.failure is not None
    assert outcome.failure.exc_type == "ValueError"
    assert outcome.failure.message == "no"
    assert "main.py" in outcome.failure.traceback
    assert "_worker" not in outcome.failure.traceback


def test_nested_calls_through_the_api_reach_the_same_worker(
    tmp_path: Path, install: Installer
) -> None:
    """An API call whose host service fires another hook of the same plugin does not deadlock."""

    class Firing(FakeHostServices):
        host: PluginHost

        def update_lead(self, tenant: str, lead_id: str, changes: Any) -> Lead:
            lead = super().update_lead(tenant, lead_id, changes)
            self.host.hook.lead_updated(lead=lead, changes={}, context=Context(tenant=tenant))
            return lead

    services = Firing()
    with PluginHost(
        services,
        storage=MemoryStorage(),
        plugins_dir=tmp_path / "plugins",
        entry_points=False,
        sandbox=SandboxPolicy(timeout=5.0),
    ) as host:
        services.host = host
        install(
            host,
            "echo",
            """
            @hookimpl
            def lead_created(self, lead, api):
                api.update_lead(lead.id, {"status": "contacted"})
                api.store_set("outer", os.getpid())

            @hookimpl
            def lead_updated(self, lead, api):
                api.store_set("inner", [os.getpid(), lead.status])
            """,
            permissions=("read_leads", "write_leads"),
        )
        fire(host, services)
        stored = services.stored("acme", "echo")
        assert stored["inner"] == [stored["outer"], "contacted"]
        assert failures(host, "echo") == []


# -- the hostile-plugin suite ------------------------------------------------------------


def hostile_cases(
    marker: Path, port: int
) -> dict[str, tuple[str, Sequence[str], Callable[[Any], None]]]:
    """name: (the hook's body, its permissions, a check of the failure it left)."""

    def failed_with(*kinds: str, text: str = "") -> Callable[[Any], None]:
        def check(failure: Any) -> None:
            assert failure is not None, "a failure should have been recorded"
            assert failure.exc_type in kinds, failure
            assert text in failure.message, failure.message

        return check

    def worked(failure: Any) -> None:
        assert failure is None, failure

    return {
        "raises": ("raise RuntimeError('boom')", (), failed_with("RuntimeError", text="boom")),
        "infinite_loop": (
            "while True:\n    pass",
            (),
            failed_with("SandboxTimeout", text="did not return"),
        ),
        "sleeps_past_timeout": ("time.sleep(60)", (), failed_with("SandboxTimeout")),
        "allocates_without_bound": (
            "hoard = []\nwhile True:\n    hoard.append(bytearray(50 * 2**20))",
            (),
            failed_with("MemoryError", "WorkerCrashed"),
        ),
        "os_exit": ("os._exit(7)", (), failed_with("WorkerCrashed", text="exited with code 7")),
        "os_abort": ("os.abort()", (), failed_with("WorkerCrashed", text="SIGABRT")),
        "floods_stdout": (
            "chunk = 'x' * 2**20 + '\\n'\nfor _ in range(100):\n    sys.stdout.write(chunk)\n"
            "os.write(1, b'y' * 2**20)",
            (),
            worked,  # no failure: the output is capped and the rest dropped
        ),
        "opens_a_socket": (
            f"socket.create_connection(('127.0.0.1', {port}), timeout=1)",
            (),
            failed_with("PermissionError", "OSError", "ConnectionRefusedError"),
        ),
        "runs_a_subprocess": (
            f"subprocess.run(['touch', {str(marker)!r}])",
            (),
            failed_with("PermissionError", "OSError"),
        ),
        "writes_outside_its_folder": (
            f"open({str(marker)!r}, 'w').write('owned')",
            (),
            failed_with("PermissionError", "OSError"),
        ),
        "reads_etc_passwd": (
            "api.store_set('passwd', open('/etc/passwd').read())",
            (),
            failed_with("PermissionError", "OSError"),
        ),
        "ungranted_api_call": (
            "api.send_email(to='x@example.com', subject='spam', body='spam')",
            (),
            failed_with("PermissionDenied", text="send_email"),
        ),
    }


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.1)
    yield server
    server.close()


HOSTILE = list(hostile_cases(Path("/x"), 1))


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_plugin_is_contained(  # noqa: PLR0917 - pytest passes fixtures by name
    case: str,
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    listener: socket.socket,
    tmp_path: Path,
) -> None:
    """The host survives, keeps serving other plugins, records a clear cause; nothing leaks."""
    marker = Path(tempfile.gettempdir()) / f"services-ai-hostile-{os.getpid()}-{case}"
    port = listener.getsockname()[1]
    body, permissions, check = hostile_cases(marker, port)[case]
    host = make_host(timeout=2.0, limits={"memory": 400 * 2**20})
    install(host, "healthy", HEALTHY)
    code = "@hookimpl\ndef lead_created(self, lead, api):\n" + textwrap.indent(body, "    ") + "\n"
    install(host, "hostile", code, permissions=("read_leads", *permissions))
    started = time.monotonic()
    fire(host, services)
    assert time.monotonic() - started < 10
    found = failures(host, "hostile")
    check(found[0] if found else None)
    fire(host, services)  # the host and the other plugin keep working
    assert services.stored("acme", "healthy")["seen"] == 2
    assert not marker.exists()
    assert "passwd" not in services.stored("acme", "hostile")
    assert services.emails() == []
    with pytest.raises(TimeoutError):
        listener.accept()  # nobody connected


def test_a_plugin_digging_for_host_objects_finds_none(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The api proxy, gc and environment hold nothing of the host: no services, grants, secrets."""
    monkeypatch.setenv("HOST_DATABASE_PASSWORD", "hunter2")
    host = make_host()
    install(
        host,
        "digger",
        """
        @hookimpl
        def lead_created(self, lead, api):
            names = {type(o).__name__ for o in gc.get_objects()}
            wanted = {"FakeHostServices", "PluginHost", "Registry", "MemoryStorage", "PluginAPI",
                      "SQLiteStorage", "Sandbox"}
            found = sorted(names & wanted)
            attributes = sorted(a for a in dir(api) if not a.startswith("__"))
            env = dict(os.environ)
            forged = None
            try:  # a frame of its own making: asks for another tenant's leads
                forged = ["api", api._call.id, "list_leads", [], {"tenant": "globex"}]
                api._worker.channel.send(forged)
                while True:
                    answer = api._worker.channel.receive(5)
                    if answer[0] in ("ok", "raise"):
                        forged = answer
                        break
            except Exception as exc:
                forged = repr(exc)
            api.store_set("dig", {"found": found, "attributes": attributes, "env": env,
                                  "forged": forged, "uid": os.getuid()})
        """,
    )
    services.make_lead("globex", name="Secret Corp")
    fire(host, services)
    dig = services.stored("acme", "digger")["dig"]
    assert dig["found"] == []
    assert "hunter2" not in json.dumps(dig["env"])
    assert not {"_services", "_grants", "_settings"} & set(dig["attributes"])
    assert "Secret Corp" not in json.dumps(dig["forged"])
    assert dig["forged"][0] == "raise"  # list_leads() takes no tenant: the host refused it
    capabilities = probe()
    if capabilities.unprivileged is not None and any(
        layer.name == UNPRIVILEGED_USER and layer.available for layer in capabilities.layers()
    ):  # a root host: the plugin runs as its worker's own user, even with Python under /root
        pid = host.plugins()["digger"].pid  # type: ignore[attr-defined]
        assert (dig["uid"], dig["uid"]) == capabilities.worker_ids(pid)


def test_a_plugin_cannot_reach_another_tenants_data_by_id(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host()
    theirs = services.make_lead("globex", name="Globex Lead")
    install(
        host,
        "crosser",
        f"""
        @hookimpl
        def lead_created(self, lead, api):
            api.store_set("got", repr(api.get_lead({theirs.id!r})))
            api.update_lead({theirs.id!r}, {{"name": "pwned"}})
        """,
        permissions=("read_leads", "write_leads"),
    )
    fire(host, services)
    assert services.stored("acme", "crosser")["got"] == "None"
    [failure] = failures(host, "crosser")
    assert failure.exc_type == "LookupError"
    assert services.get_lead("globex", theirs.id).name == "Globex Lead"  # type: ignore[union-attr]


def test_sandbox_layers_reported(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host()
    install(host, "healthy", HEALTHY)
    fire(host, services)
    _, info = host.sandbox.workers()
    capabilities = probe()
    expected = {layer.name for layer in capabilities.layers() if layer.available}
    assert set(info.layers) - {"import_guard", "audit_hook", PRIVATE_MOUNTS} <= expected
    assert {"import_guard", "audit_hook"} <= set(info.layers)
    assert host.sandbox.capabilities == capabilities
    gc.collect()


# -- the protocol's edges ---------------------------------------------------------------------


def test_routes_of_a_sandboxed_plugin_are_served_in_its_worker(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    """register_routes returns Route records whose handlers run in the worker."""
    host = make_host()
    install(
        host,
        "router",
        """
        @hookimpl
        def register_routes(self, plugin_id):
            from services_ai_plugins.events import ApiResponse, Route

            def stats(request):
                body = json.dumps([request.tenant, request.path, os.getpid()]).encode()
                return ApiResponse(tenant=request.tenant, status=200, body=body)

            return [Route(path="/stats/", handler=stats, name="stats")]
        """,
        permissions=("register_routes",),
    )
    [[route]] = host.hook.register_routes()
    assert (route.path, route.name, route.methods) == ("/stats/", "stats", ("GET",))
    response = route.handler(ApiRequest(tenant="acme", method="GET", path="/stats/"))
    tenant, path, pid = json.loads(response.body)
    assert (tenant, path) == ("acme", "/stats/")
    assert pid == host.plugins()["router"].pid  # type: ignore[attr-defined]
    host.sandbox.unload("router")  # the worker holding the handler is gone
    with pytest.raises(SandboxError, match="unloaded"):
        route.handler(ApiRequest(tenant="acme", method="GET", path="/stats/"))


@pytest.mark.parametrize(
    ("frame", "cause"),
    [
        ("struct.pack('>I', 2**30)", "over the limit"),
        ("struct.pack('>I', 5) + b'[1,2]'", "must be a JSON array starting with its kind"),
        ("struct.pack('>I', 8) + b'[\"boom\"]'", "unexpected 'boom' frame"),
        ("struct.pack('>I', 4000) + b'[' * 4000", "nested too deeply"),
    ],
)
def test_a_worker_that_breaks_the_protocol_is_stopped(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    frame: str,
    cause: str,
) -> None:
    host = make_host()
    install(
        host,
        "forger",
        f"""
        @hookimpl
        def lead_created(self, lead, api):
            import struct
            api._worker.channel.sock.sendall({frame})
            time.sleep(1)
        """,
    )
    fire(host, services)
    [failure] = failures(host, "forger")
    assert failure.exc_type == "SandboxError"
    assert cause in failure.message
    # acme's worker is stopped (the next call starts another); the tenant-less one is untouched
    assert [w.tenant for w in host.sandbox.workers()] == [None]


def test_the_api_works_only_during_its_call_and_on_its_thread(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host()
    install(
        host,
        "keeper",
        """
        kept = None

        @hookimpl
        def lead_created(self, lead, api):
            import threading
            outcome = {}

            def other():
                try:
                    api.store_get("x")
                except RuntimeError as exc:
                    outcome["thread"] = str(exc)

            thread = threading.Thread(target=other)
            thread.start()
            thread.join()
            if type(self).kept is not None:
                try:
                    type(self).kept.store_get("x")
                except RuntimeError as exc:
                    outcome["kept"] = str(exc)
            type(self).kept = api
            api.store_set("outcome", outcome)
        """,
    )
    fire(host, services)
    fire(host, services)
    outcome = services.stored("acme", "keeper")["outcome"]
    assert "from the thread running it" in outcome["thread"]
    assert "only during the hook call that received this api" in outcome["kept"]


def test_a_dead_zygote_is_replaced(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    host = make_host()
    install(host, "healthy", HEALTHY)
    fire(host, services)
    zygote = host.sandbox._zygote
    assert zygote is not None
    zygote.process.kill()
    zygote.process.wait()
    host.sandbox._plugins["healthy"].stop()
    fire(host, services)  # a new worker, forked by a new zygote
    assert services.stored("acme", "healthy")["seen"] == 2
    assert host.sandbox._zygote is not zygote


def test_printed_output_is_capped_per_call(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = make_host(output_limit=1000)
    install(
        host,
        "chatty",
        """
        @hookimpl
        def lead_created(self, lead, api):
            for number in range(10_000):
                print("line", number, "x" * 20)
        """,
    )
    with caplog.at_level(logging.INFO, logger="services_ai_plugins.plugins.chatty"):
        fire(host, services)
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("chatty")]
    shown = [line for line in lines if line.startswith("[stdout]")]
    assert 20 < len(shown) < 50
    assert sum(len(line) for line in shown) < 1000 + 50 * len("[stdout] ")
    assert any("characters of output dropped" in line for line in lines)
    assert failures(host, "chatty") == []


def test_policy_isolation_only_ever_gets_stricter() -> None:
    policy = SandboxPolicy(isolation={"archive": "inprocess", "folder": "process"})
    assert policy.isolation_for(SourceKind.ARCHIVE, None) is Isolation.INPROCESS
    assert policy.isolation_for(SourceKind.ARCHIVE, Isolation.PROCESS) is Isolation.PROCESS
    assert policy.isolation_for(SourceKind.FOLDER, Isolation.INPROCESS) is Isolation.PROCESS
    assert SandboxPolicy().isolation_for(SourceKind.ENTRY_POINT, None) is Isolation.INPROCESS
    assert SandboxPolicy(limits={"memory": None}).limits.memory is None
    with pytest.raises(ValueError, match="timeout"):
        SandboxPolicy(timeout=0)
    with pytest.raises(ValueError, match="'thread' is not a valid Isolation"):
        SandboxPolicy(isolation={"archive": "thread"})


def test_policy_trusted_ids_run_in_process_unless_the_manifest_asks_for_a_worker() -> None:
    policy = SandboxPolicy(trusted=["legacy"])
    assert policy.trusted == frozenset({"legacy"})
    assert policy.isolation_for(SourceKind.ARCHIVE, None, "legacy") is Isolation.INPROCESS
    assert policy.isolation_for(SourceKind.ARCHIVE, None, "other") is Isolation.PROCESS
    asked = Isolation.PROCESS
    assert policy.isolation_for(SourceKind.ARCHIVE, asked, "legacy") is Isolation.PROCESS


def test_a_trusted_upload_runs_in_the_host_process_and_the_others_in_workers(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """Only the ids the operator named leave the sandbox; the host says which ran where."""
    host = make_host(trusted=["legacy"])
    body = """
        @hookimpl
        def lead_created(self, lead, api):
            api.store_set("pid", os.getpid())
        """
    install(host, "legacy", body)
    install(host, "stranger", body)
    fire(host, services)
    assert services.stored("acme", "legacy")["pid"] == os.getpid()
    assert services.stored("acme", "stranger")["pid"] != os.getpid()
    assert host.runs_in_process("legacy")
    assert not host.runs_in_process("stranger")
    assert not host.runs_in_process("never-installed")


def test_sandbox_info_on_the_command_line(tmp_path: Path) -> None:
    from services_ai_plugins._cli._main import main

    out, err = io.StringIO(), io.StringIO()
    code = main(["sandbox-info", "--json", "--plugins-dir", str(tmp_path)], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    document = json.loads(out.getvalue())
    assert {layer["name"] for layer in document["layers"]} >= {"rlimits", "landlock", "seccomp"}
    assert document["level"] in ("strong", "partial", "minimal")


def test_an_entry_point_plugin_asking_for_a_process_is_imported_there_by_name(
    make_host: Callable[..., PluginHost], services: FakeHostServices
) -> None:
    """A class installed with the host (as pip installs entry points) runs in a worker."""
    import importlib
    import json as json_module

    module = importlib.import_module("services_ai_plugins._demo_plugins.flaky.main")
    folder = Path(module.__file__ or "").parent
    manifest = json_module.loads((folder / "manifest.json").read_text())
    host = make_host()
    host.install_object(
        module.FlakyCrmSync, actor="ops", manifest={**manifest, "isolation": "process"}
    )
    plugin_id = manifest["id"]
    host.registry.approve(plugin_id, actor="admin")
    host.registry.enable(plugin_id, "acme", actor="admin")
    fire(host, services)
    [failure] = failures(host, plugin_id)
    assert failure.exc_type == "ConnectionError"
    assert host.plugins()[plugin_id].pid not in (None, os.getpid())  # type: ignore[attr-defined]
    # No folder of its own to read: not the temporary folder (other workers' scratch is there).
    assert host.sandbox._plugins[plugin_id].config["folder"] is None

    class Local:  # not importable by name: refused with a reason
        pass

    host.install_object(
        Local, actor="ops", manifest={**manifest, "id": "local", "isolation": "process"}
    )
    host.registry.approve("local", actor="admin")
    host.refresh(force=True)
    [refused] = failures(host, "local")
    assert "not an importable module or class" in refused.message


def test_a_forked_host_starts_its_own_workers(
    make_host: Callable[..., PluginHost], install: Installer, services: FakeHostServices
) -> None:
    """A host made before a web server forks (preloading): each process gets its own workers."""
    host = make_host()
    install(host, "healthy", HEALTHY)
    fire(host, services)
    parent_worker = host.plugins()["healthy"].pid  # type: ignore[attr-defined]
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            fire(host, services)
            pid = host.plugins()["healthy"].pid  # type: ignore[attr-defined]
            os.write(writer, json.dumps([pid, services.stored("acme", "healthy")]).encode())
            host.close()
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    with os.fdopen(reader) as stream:
        report = stream.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, report
    child_worker, stored = json.loads(report)
    assert child_worker not in (None, parent_worker)
    assert stored == {"seen": 2}
    fire(host, services)  # the parent's worker still serves the parent
    assert host.plugins()["healthy"].pid == parent_worker  # type: ignore[attr-defined]


def test_a_zygote_that_cannot_start_is_a_load_failure_that_says_why(
    tmp_path: Path, install: Installer, services: FakeHostServices
) -> None:
    broken_python = tmp_path / "python"
    broken_python.write_text("#!/bin/sh\necho 'no interpreter here' >&2\nexit 3\n")
    broken_python.chmod(0o755)
    with PluginHost(
        services,
        storage=MemoryStorage(),
        plugins_dir=tmp_path / "plugins",
        entry_points=False,
        sandbox=SandboxPolicy(python=str(broken_python)),
    ) as host:
        install(host, "healthy", HEALTHY)
        fire(host, services)
        [failure] = host.failures("healthy")
        assert failure.hook == "load"
        assert "its zygote did not start: no interpreter here" in failure.message


def test_a_worker_starts_on_the_first_call_once_its_hooks_are_known(
    tmp_path: Path, install: Installer, services: FakeHostServices
) -> None:
    """The first load starts a worker to learn the hooks; later hosts start one only when called."""
    storage = MemoryStorage()

    def host() -> PluginHost:
        return PluginHost(
            services,
            storage=storage,
            plugins_dir=tmp_path / "plugins",
            entry_points=False,
            sandbox=SandboxPolicy(timeout=3.0),
        )

    with host() as first:
        install(first, "healthy", HEALTHY)
        first.refresh()
        assert [w.plugin_id for w in first.sandbox.workers()] == ["healthy"]
    [kept] = (tmp_path / "plugins" / ".sandbox-hooks").iterdir()
    assert kept.name.startswith("healthy-")
    with host() as second:
        assert "healthy" in second.plugins()
        assert second.sandbox.workers() == []  # loaded, no worker yet
        fire(second, services)
        assert [w.plugin_id for w in second.sandbox.workers()] == ["healthy"]
        assert services.stored("acme", "healthy")["seen"] == 1
    kept.write_text("{not json")  # unusable: the next load asks a worker again
    with host() as third:
        assert [w.plugin_id for w in third.sandbox.workers()] == ["healthy"]


def test_a_worker_near_its_cpu_limit_is_replaced_between_calls(
    make_host: Callable[..., PluginHost],
    install: Installer,
    services: FakeHostServices,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RLIMIT_CPU counts over a worker's life: the host retires it before the kernel stops it."""
    monkeypatch.setattr(_stand_in, "_CPU_CHECK_EVERY", 1)  # look after every call, not every 256
    # A call uses 0.25 s of CPU against a limit of 3 s, retired past 80% (2.4 s): the margin
    # left (0.6 s) holds a call more than twice over, whatever a loaded machine adds to it.
    host = make_host(limits={"cpu": 3})
    install(
        host,
        "busy",
        """
        @hookimpl
        def lead_created(self, lead, api):
            started = time.process_time()
            while time.process_time() - started < 0.25:  # CPU, not sleep
                pass
            api.store_set("pids", (api.store_get("pids") or []) + [os.getpid()])
        """,
    )
    for _ in range(11):  # 10 x 0.25 s > 80% of 3 s: the eleventh call runs in a fresh worker
        fire(host, services)
    pids = services.stored("acme", "busy")["pids"]
    assert len(pids) == 11  # no call was stopped by the kernel
    assert len(set(pids)) == 2
    assert pids[-1] != pids[0]
    assert failures(host, "busy") == []


def test_a_native_view_in_a_sandboxed_plugin_is_refused_saying_why(
    make_host: Callable[..., PluginHost], install: Installer
) -> None:
    """A (path, view, name) tuple is a framework-native view: it cannot run in a worker."""
    host = make_host()
    install(
        host,
        "native",
        """
        @hookimpl
        def register_routes(self, plugin_id):
            return [("stats/", lambda request: None, "stats")]
        """,
        permissions=("register_routes",),
    )
    assert host.hook.register_routes() == []
    host.flush()
    [failure] = host.failures("native")
    assert failure.hook == "register_routes"
    assert "framework-native view" in failure.message
    assert "Route(path=..., handler=..., name=...)" in failure.message
