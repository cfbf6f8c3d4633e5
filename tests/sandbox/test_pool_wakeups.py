"""Sandbox pools, from an event loop: a freed worker wakes one waiting task, not all of them.

With many async calls queued on a plugin's pool (200 concurrent requests on a web app's
loop), waking every waiting task at each release made each of them look again, one
of them win and the rest queue again: work quadratic in the queue, all of it on the
event loop, which stalled it for tens of milliseconds at a time. Each release now
wakes the task that has waited longest; one that gave up (timed out, cancelled) passes
the wake on, so none is lost. Every call runs through the real host in real workers.
"""

from __future__ import annotations

import asyncio
import functools
import os
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import PluginHost, SandboxPolicy
from services_ai_plugins._sandbox._stand_in import TenantPool, _wake_soon
from services_ai_plugins.events import Context

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

HEADER = (
    "import time\n"
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import Widget\n\n\n"
    "class Plugin:\n"
)

#: A widget that takes 10 ms in its worker.
SLOW = """
@hookimpl
def dashboard_widget(self, context):
    time.sleep(0.01)
    return Widget(tenant=context.tenant, title="w", html="ok")
"""

ACME = Context(tenant="acme")


@pytest.fixture
def host(hosts: Hosts, tmp_path: Path) -> PluginHost:
    made = cast(
        "PluginHost",
        hosts(sandbox=SandboxPolicy(timeout=30.0, workers_per_plugin=1, wait_timeout=120.0)),
    )
    Installer(tmp_path, HEADER)(made, "slow", SLOW, permissions=("dashboard_widgets",))
    made.plugins()
    assert made.sandbox.start("slow", "acme")
    return made


@pytest.fixture
def takes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the looks at a pool for a free slot."""
    counted = [0]
    take = TenantPool.take

    def counting(self: TenantPool) -> Any:
        counted[0] += 1
        return take(self)

    monkeypatch.setattr(TenantPool, "take", counting)
    return counted


def test_each_release_wakes_one_waiting_task(host: PluginHost, takes: list[int]) -> None:
    calls = 40

    async def run() -> list[Any]:
        return await asyncio.gather(
            *(host.ahook.dashboard_widget(context=ACME) for _ in range(calls))
        )

    results = asyncio.run(run())
    assert [[w.html for w in found] for found in results] == [["ok"]] * calls
    # Each call looks once, and once more per wake-up (rarely twice: a call that came
    # later may take the slot first). Waking all at each release looked ~calls**2 / 2 times.
    assert takes[0] <= 3 * calls, takes[0]


def test_tasks_that_give_up_pass_their_wake_on(host: PluginHost) -> None:
    pool = host.plugins()["slow"]._owner.pool_for("acme")

    async def run() -> tuple[list[Any], int]:
        tasks = [
            asyncio.ensure_future(host.ahook.dashboard_widget(context=ACME)) for _ in range(12)
        ]
        deadline = asyncio.get_running_loop().time() + 60
        while len(pool.waiters) < 8:  # most of them queued for the one worker
            assert asyncio.get_running_loop().time() < deadline, "the calls never queued"
            await asyncio.sleep(0.001)
        cancelled = tasks[1::2]
        for task in cancelled:
            task.cancel()
        kept = await asyncio.gather(*tasks[::2])
        done = await asyncio.gather(*cancelled, return_exceptions=True)
        return kept, sum(isinstance(r, asyncio.CancelledError) for r in done)

    kept, gone = asyncio.run(run())
    # Every call that still waited got the worker in turn (a lost wake-up would leave
    # one waiting for wait_timeout, 120 s, and end in WorkerBusy).
    assert [[w.html for w in found] for found in kept] == [["ok"]] * 6
    assert gone >= 1


def test_calls_that_timed_out_leave_no_live_waiter_behind(hosts: Hosts, tmp_path: Path) -> None:
    host = cast(
        "PluginHost",
        hosts(sandbox=SandboxPolicy(timeout=30.0, workers_per_plugin=1, wait_timeout=0.05)),
    )
    slower = SLOW.replace("0.01", "0.5")
    Installer(tmp_path, HEADER)(host, "slow", slower, permissions=("dashboard_widgets",))
    pool = host.plugins()["slow"]._owner.pool_for("acme")

    async def run() -> list[Any]:
        return await asyncio.gather(*(host.ahook.dashboard_widget(context=ACME) for _ in range(3)))

    asyncio.run(run())  # two calls give up waiting (skipped, a host event each)
    assert len(host.host_events("worker-busy")) == 2
    # The release after them found nobody alive in the queue (a waiter left alive
    # there would take the next wake-up from a task that still waits).
    assert pool.waiters == []


def test_a_task_woken_but_gone_before_it_ran_passes_the_wake_on() -> None:
    """The wake reaches a task's loop after the task gave up: the next task is woken."""
    pool = TenantPool("acme", 1)

    async def run() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        first: asyncio.Future[None] = loop.create_future()
        second: asyncio.Future[None] = loop.create_future()
        pool.waiters += [
            functools.partial(_wake_soon, loop, first, pool),
            functools.partial(_wake_soon, loop, second, pool),
        ]
        pool.wake_one()  # picks the first, whose wake is on its way to the loop
        first.cancel()  # ... and it gives up before the loop delivers it
        await asyncio.sleep(0)  # the wake arrives: passed on to the second
        await asyncio.sleep(0)
        return first.cancelled(), second.done() and not second.cancelled()

    assert asyncio.run(run()) == (True, True)
    assert pool.waiters == []
