"""Prometheus metrics: request counts by route template, method and status; latency histograms.

A plain ASGI middleware (Starlette's `BaseHTTPMiddleware` costs a task and two memory streams per
request), outermost but for Starlette's error middleware, so it counts shed and refused requests too.

With several API processes (`unlearn api --workers N`) the figures are kept in prometheus-client's
multiprocess mode (`core.observability.metrics`): a scrape of any process counts every process's
requests. The in-flight gauge is each process's admission state as of its last request boundary (a
scrape is one), summed over the live processes.
"""

import time
from collections.abc import Callable

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.observability.metrics import process_exited, scrape_registry


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "unlearn_http_requests_total",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "unlearn_http_request_duration_seconds",
            "HTTP request latency by route and method.",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.in_flight = Gauge(
            "unlearn_http_requests_in_progress",
            "Requests the API processes work on now (admitted), and those waiting for a turn.",
            ["state"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._admitted = self.in_flight.labels("admitted")
        self._waiting = self.in_flight.labels("waiting")
        self.admission: Callable[[], tuple[float, float]] = lambda: (0.0, 0.0)
        """(admitted, waiting) of this process now; set by the app factory."""

    def note_admission(self) -> None:
        admitted, waiting = self.admission()
        self._admitted.set(admitted)
        self._waiting.set(waiting)

    def render(self) -> Response:
        return Response(generate_latest(scrape_registry(self.registry)), media_type=CONTENT_TYPE_LATEST)

    def process_exited(self) -> None:
        """At shutdown: this process's in-flight figures leave the sum."""
        process_exited()


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        self.metrics.note_admission()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.latency.labels(template, scope["method"]).observe(time.perf_counter() - started)
            self.metrics.note_admission()


def install_metrics(app: FastAPI) -> ApiMetrics:
    metrics = ApiMetrics()
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return metrics
