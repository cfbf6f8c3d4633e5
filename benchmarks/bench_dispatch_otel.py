"""Question "dispatch_10_otel": dispatch at 10 plugins with OpenTelemetry installed, no exporter.

An app that has the OpenTelemetry API and SDK installed (imported here) but has
configured no tracer or meter provider (so nothing would export a span) calls a
hook with 10 plugins. SDK: the host of ``dispatch_10`` with the default
``MetricsPolicy()`` (OpenTelemetry on, used once a provider is configured).
Baseline: the same host with ``MetricsPolicy(opentelemetry=False)``, in the same
process. Target: at most 1.2x. ``bench_dispatch_otel_sdk.py`` gives the SDK side
an SDK ``TracerProvider`` with no span processor (spans are made and dropped):
what tracing costs once it is on, no target.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import opentelemetry.metrics
import opentelemetry.sdk.trace
import opentelemetry.trace

from _dispatch_bench import make_host
from _harness import Contender, compare
from services_ai_plugins import MetricsPolicy
from services_ai_plugins.events import Context, Lead
from services_ai_plugins.tooling import example

COUNT = 10


def main(*, provided: bool = False) -> None:
    policy = (
        MetricsPolicy(tracer_provider=opentelemetry.sdk.trace.TracerProvider())
        if provided
        else MetricsPolicy()
    )
    with_otel = make_host(COUNT, Path(tempfile.mkdtemp(prefix="bench-otel-")), metrics=policy)
    without = make_host(
        COUNT,
        Path(tempfile.mkdtemp(prefix="bench-otel-off-")),
        metrics=MetricsPolicy(opentelemetry=False),
    )
    assert "opentelemetry.trace" in sys.modules
    assert "opentelemetry.metrics" in sys.modules
    lead = example(Lead)
    context = Context(tenant=lead.tenant)
    on, off = with_otel.hook.lead_created, without.hook.lead_created
    on(lead=lead, context=context)
    off(lead=lead, context=context)
    question = "dispatch_10_otel_sdk" if provided else "dispatch_10_otel"
    compare(
        question,
        sdk=Contender(
            "host.hook.lead_created, OpenTelemetry on",
            "10 plugins; OpenTelemetry installed, "
            + ("an SDK tracer provider, no exporter" if provided else "no provider configured"),
            lambda: on(lead=lead, context=context),
        ),
        baseline=Contender(
            "host.hook.lead_created, OpenTelemetry off",
            "the same host with MetricsPolicy(opentelemetry=False)",
            lambda: off(lead=lead, context=context),
        ),
    )


if __name__ == "__main__":
    main()
