"""Question "async_dispatch_10": one hook call awaited through ``host.ahook`` against ``host.hook``.

The host of ``dispatch_10`` (10 in-process archive plugins enabled for ``acme``, five
more for ``globex``). SDK: ``await host.ahook.lead_created(...)``, the async call
loop (the same plan, isolation, metrics and breaker; each implementation run inline on
the loop, as a plain in-process one is). Baseline: the sync ``host.hook.lead_created``
call. Both sides make 100 calls per timed call, the async side inside one
``loop.run_until_complete``, so the loop's own start-up is spread over them as an app's
request handler would. Target: at most 1.2x.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from _dispatch_bench import make_host
from _harness import Contender, compare
from services_ai_plugins.events import Context, Lead
from services_ai_plugins.tooling import example

#: Calls per timed call.
CALLS = 100


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="services-ai-plugins-bench-async-"))
    host = make_host(10, root)
    lead = example(Lead)
    context = Context(tenant=lead.tenant)
    hook = host.hook.lead_created
    ahook = host.ahook.lead_created
    loop = asyncio.new_event_loop()

    async def awaited() -> None:
        for _ in range(CALLS):
            await ahook(lead=lead, context=context)

    def synced() -> None:
        for _ in range(CALLS):
            hook(lead=lead, context=context)

    loop.run_until_complete(awaited())
    synced()
    compare(
        "async_dispatch_10",
        sdk=Contender(
            "await host.ahook.lead_created x100",
            "10 plugins of 15, the async loop, inside one run_until_complete",
            lambda: loop.run_until_complete(awaited()),
        ),
        baseline=Contender(
            "host.hook.lead_created x100",
            "the same 10 plugins, the sync loop",
            synced,
        ),
    )


if __name__ == "__main__":
    main()
