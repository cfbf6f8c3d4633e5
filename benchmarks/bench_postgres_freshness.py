"""Question "postgres_freshness": what keeping a host fresh on PostgreSQL costs each hook call.

SDK: ``host.hook.lead_created(...)`` with 10 plugins on a host over
``PostgresStorage`` (its snapshot kept fresh by ``LISTEN/NOTIFY`` and a
counter read at most once a second). Baseline: the same call on a host over
``MemoryStorage``, where reading the counter costs nothing. Nothing changes
while timed, so the target is no query per call: a ratio of 1.0.
"""

from __future__ import annotations

import atexit
import tempfile
from pathlib import Path

from _dispatch_bench import make_host
from _harness import Contender, compare
from _postgres_bench import fresh_schema, postgres_url
from services_ai_plugins import MemoryStorage, PostgresStorage
from services_ai_plugins._examples import example
from services_ai_plugins.events import Context, Lead

PLUGINS = 10


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="services-ai-plugins-bench-fresh-"))
    url = postgres_url()
    storage = PostgresStorage(url, schema=fresh_schema(url, "bench_freshness"))
    postgres = make_host(PLUGINS, root / "pg", storage)
    atexit.register(storage.close)  # before the throwaway server stops (atexit runs last first)
    atexit.register(postgres.close)
    memory = make_host(PLUGINS, root / "memory", MemoryStorage())
    lead = example(Lead)
    context = Context(tenant=lead.tenant)
    on_postgres, on_memory = postgres.hook.lead_created, memory.hook.lead_created
    assert on_postgres(lead=lead, context=context) is None
    assert on_memory(lead=lead, context=context) is None
    compare(
        "postgres_freshness",
        sdk=Contender(
            "hook call, PostgresStorage host",
            f"{PLUGINS} plugins; freshness by LISTEN/NOTIFY and a counter read per second",
            lambda: on_postgres(lead=lead, context=context),
        ),
        baseline=Contender(
            "hook call, MemoryStorage host",
            f"the same {PLUGINS} plugins on a host over memory storage",
            lambda: on_memory(lead=lead, context=context),
        ),
    )


if __name__ == "__main__":
    main()
