"""Optional OpenTelemetry tracing (CAREPATH_OTEL=on, with the `otel` extra installed): the
SDK's TracingInterceptor gives each workflow run, activity, signal, query and update a span.
Spans go to an OTLP collector named by the standard OTEL_EXPORTER_OTLP_ENDPOINT (and the
other OTEL_* variables). Span attributes are Temporal's: workflow and run IDs and types,
which carry opaque patient IDs only, never payloads."""

from __future__ import annotations

import os
from typing import Any

from infra.settings import Settings, SettingsError

NOT_INSTALLED = (
    "CAREPATH_OTEL is on but OpenTelemetry is not installed: pip install 'carepath[otel]'"
)


def tracing_interceptors(settings: Settings) -> list[Any]:
    """The worker's interceptors: the tracing one when tracing is on."""
    if not settings.otel:
        return []
    try:
        from temporalio.contrib.opentelemetry import TracingInterceptor
    except ImportError:
        raise SettingsError(NOT_INSTALLED) from None
    # Journeys are started by the CLI, whose client is not traced: without this, a workflow
    # makes spans only under a client's span.
    return [TracingInterceptor(always_create_workflow_spans=True)]


def start_exporting(service_name: str = "carepath-worker") -> Any:
    """Send spans to the OTLP collector, unless the process already set a tracer provider
    (e.g. under `opentelemetry-instrument`); returns the provider to shut down (flush) at
    exit, or None."""
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise SettingsError(NOT_INSTALLED) from None
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)}
        )
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider
