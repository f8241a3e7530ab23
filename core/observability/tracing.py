"""OpenTelemetry tracing, off unless `otel_enabled` (UNLEARN_OTEL_ENABLED=true).

The packages are an optional extra (`pip install 'unlearn-service[otel]'`) and are imported here only
when tracing is on: a default process loads none of them. The exporter is OTLP over HTTP, configured by
the standard variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ...). This
module sets up the process's tracer provider and the SQLAlchemy spans; the API adds FastAPI's
instrumentation (`app.main`), the worker Celery's (`worker.metrics`), each in the process that serves.
"""

from __future__ import annotations

import os
from typing import Any

from core.settings import Settings

EXTRA_HINT = "pip install 'unlearn-service[otel]'"


class TracingUnavailable(RuntimeError):
    """Tracing is enabled but the OpenTelemetry packages are not installed."""


def check_installed() -> None:
    """Raise TracingUnavailable, saying what to install, unless the SDK and exporter import."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
        import opentelemetry.instrumentation.sqlalchemy  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as error:
        raise TracingUnavailable(
            f"UNLEARN_OTEL_ENABLED is true but OpenTelemetry is not installed ({error.name} is missing): "
            f"{EXTRA_HINT}, or set UNLEARN_OTEL_ENABLED=false"
        ) from None


def start_tracing(settings: Settings, service: str) -> bool:
    """Install the tracer provider of this process once (not when one is already set, e.g. by a test);
    True when tracing is on. Raises TracingUnavailable when enabled but not installed."""
    if not settings.otel_enabled:
        return False
    check_installed()
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        name = os.environ.get("OTEL_SERVICE_NAME") or f"unlearn-{service}"
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    instrumentor = SQLAlchemyInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(enable_commenter=False)
    return True


def instrumentor(module: str, name: str) -> Any:
    """The class `name` of the OpenTelemetry instrumentation `module`; TracingUnavailable when missing."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        raise TracingUnavailable(f"{module} is not installed: {EXTRA_HINT}") from None
