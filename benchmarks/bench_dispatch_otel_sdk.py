"""Question "dispatch_10_otel_sdk": dispatch at 10 plugins with tracing on (an SDK tracer
provider, no span processor), against OpenTelemetry off. What a span per plugin call costs;
no target (set-up in ``bench_dispatch_otel.py``)."""

from bench_dispatch_otel import main

if __name__ == "__main__":
    main(provided=True)
