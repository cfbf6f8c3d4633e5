"""Set-up of the ``dispatch_<n>`` questions: one hook call through the host against bare pluggy.

The host has ``n`` archive plugins enabled for tenant ``acme`` and five more
enabled only for ``globex`` (so the tenant filter has work to do). Each plugin
implements ``lead_created(self, lead, api)`` and counts its calls. SDK:
``host.hook.lead_created(lead=..., context=...)`` with the tenant filter,
per-plugin ``api`` injection, isolation, timing and metrics all on (SQLite
storage; metrics are flushed in batches, as in production). Baseline: the same
``n`` plugin objects registered with a bare pluggy manager of the same
specifications, called as ``pm.hook.lead_created(...)`` with one shared
``api``. Targets: at most 1.2x at 1 plugin, at most 1.0x at 10 and 50.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _harness import Contender, compare, install_plugin
from services_ai_plugins import MetricsPolicy, PluginAPI, PluginHost, SandboxPolicy, SQLiteStorage
from services_ai_plugins.events import Context, Lead
from services_ai_plugins.hookspecs import plugin_manager
from services_ai_plugins.storage import SourceKind, Storage
from services_ai_plugins.tooling import example
from services_ai_plugins.types import Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

EXTRA: int = 5

PLUGIN = """\
from services_ai_plugins import hookimpl


class Plugin:
    def __init__(self):
        self.calls = 0

    @hookimpl
    def lead_created(self, lead, api):
        self.calls += 1
"""


def make_host(
    count: int, root: Path, storage: Storage | None = None, metrics: MetricsPolicy | None = None
) -> PluginHost:
    """A host with ``count`` plugins enabled for acme and five more for globex."""
    host = PluginHost(
        FakeHostServices(),
        storage=storage if storage is not None else SQLiteStorage(root / "registry.db"),
        plugins_dir=root / "plugins",
        entry_points=False,
        # The in-process call loop is the question here (bench_sandbox.py times workers).
        sandbox=SandboxPolicy(isolation=dict.fromkeys(SourceKind, Isolation.INPROCESS)),
        metrics=metrics,
    )
    for number in range(count + EXTRA):
        tenant = "acme" if number < count else "globex"
        install_plugin(host, root, f"bench-{number:03d}", PLUGIN, tenants=(tenant,))
    host.refresh()
    return host


def main(count: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="services-ai-plugins-bench-dispatch-"))
    host = make_host(count, root)
    lead = example(Lead)
    context = Context(tenant=lead.tenant)
    enabled = [p for pid, p in sorted(host.plugins().items()) if int(pid[-3:]) < count]
    pm = plugin_manager()
    for number, plugin in enumerate(enabled):
        pm.register(plugin, name=f"bench-{number:03d}")
    api = PluginAPI("bench", FakeHostServices(), tenant="acme", grants=frozenset())
    settings: dict[str, object] = {}
    before = sum(p.calls for p in enabled)  # type: ignore[attr-defined]
    host.hook.lead_created(lead=lead, context=context)
    pm.hook.lead_created(lead=lead, context=context, api=api, settings=settings)
    assert sum(p.calls for p in enabled) == before + 2 * count  # type: ignore[attr-defined]
    hook = host.hook.lead_created
    bare = pm.hook.lead_created
    compare(
        f"dispatch_{count}",
        sdk=Contender(
            "host.hook.lead_created",
            f"{count} plugins of {count + EXTRA}: tenant filter, own api, isolation, metrics",
            lambda: hook(lead=lead, context=context),
        ),
        baseline=Contender(
            "pluggy pm.hook.lead_created",
            f"the same {count} implementations, bare pluggy",
            lambda: bare(lead=lead, context=context, api=api, settings=settings),
        ),
    )
