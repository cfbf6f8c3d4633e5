"""Two PluginHosts in two processes on one PostgreSQL registry: a change in one reaches both."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import plugin_folder
from services_ai_plugins import PluginHost, pack_plugin
from services_ai_plugins._examples import example
from services_ai_plugins.events import Context, Lead
from services_ai_plugins_testing.fakes import FakeHostServices

COUNTING = """\
from services_ai_plugins import hookimpl


class Plugin:
    def __init__(self):
        self.calls = 0

    @hookimpl
    def lead_created(self, lead):
        self.calls += 1
"""

# The other process: a host of its own on the same database, acting as an admin would.
OTHER = textwrap.dedent(
    """
    import sys
    from services_ai_plugins import PluginHost, PostgresStorage
    from services_ai_plugins_testing.fakes import FakeHostServices

    url, schema, plugins, steps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    storage = PostgresStorage(url, schema=schema, max_size=2)
    host = PluginHost(FakeHostServices(), storage=storage, plugins_dir=plugins, entry_points=False)
    for step in steps:
        action, _, tenant = step.partition(":")
        if action == "approve":
            host.registry.approve("counter", actor="other-process")
        elif action == "enable":
            host.registry.enable("counter", tenant, actor="other-process")
        elif action == "suspend":
            host.suspend("counter", actor="other-process", reason="maintenance", tenant=tenant)
    host.close()
    storage.close()
    """
)


@pytest.fixture
def schema(postgres_url: str) -> Iterator[str]:
    """A schema of its own for this test, dropped afterwards."""
    import psycopg

    name = f"host_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def other_process(url: str, schema: str, plugins: Path, *steps: str) -> None:
    subprocess.run(
        [sys.executable, "-c", OTHER, url, schema, str(plugins), *steps],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )


def calls_within(host: PluginHost, seconds: float, *, want: bool) -> float:
    """Fire lead_created every 20 ms until the plugin runs (or stops running); the time it took."""
    lead = example(Lead)
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        trace = host.trace_hook("lead_created", lead=lead, context=Context(tenant="acme"))
        if ("counter" in trace.ran) is want:
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"no change seen within {seconds} s")


def test_an_approval_enable_and_suspension_in_one_process_reach_the_other_within_a_second(
    postgres_url: str, schema: str, tmp_path: Path
) -> None:
    """Host A installs; process B approves, enables, then suspends; A's next calls follow."""
    from services_ai_plugins import PostgresStorage

    plugins = tmp_path / "plugins"
    storage = PostgresStorage(postgres_url, schema=schema, max_size=2)
    # A polls the counter only every 10 s: what it sees sooner comes through LISTEN/NOTIFY.
    host = PluginHost(
        FakeHostServices(),
        storage=storage,
        plugins_dir=plugins,
        entry_points=False,
        refresh_interval=10,
    )
    try:
        folder = plugin_folder(tmp_path, "counter", COUNTING)
        host.install(pack_plugin(folder, tmp_path / "counter.zip").path, actor="ops")
        assert (
            host.trace_hook("lead_created", lead=example(Lead), context=Context(tenant="acme")).ran
            == ()
        )

        other_process(postgres_url, schema, plugins, "approve", "enable:acme")
        assert calls_within(host, 1.0, want=True) < 1.0

        other_process(postgres_url, schema, plugins, "suspend:acme")
        assert calls_within(host, 1.0, want=False) < 1.0
        [suspension] = host.suspensions()
        assert (suspension.tenant, suspension.by) == ("acme", "other-process")
    finally:
        host.close()
        storage.close()
