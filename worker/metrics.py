"""The worker's logs, metrics and traces, wired to Celery's signals (imported by `worker.celery_app`).

Logs: Celery leaves logging to us (`setup_logging` has a receiver, `worker_hijack_root_logger` is off),
so its own lines, the tasks' and the job code's go through `core.observability.logs` in
`UNLEARN_LOG_FORMAT`; each task's lines carry its Celery `task_id`, each job's its ids (`core.jobs.loop`).

Metrics (`UNLEARN_WORKER_METRICS_PORT`, 0 = off): the worker's main process serves them itself rather
than a separate exporter, because what only a worker knows is here: the duration and outcome of the jobs
it ran (recorded by the pool processes, summed through prometheus-client's multiprocess files, which
`unlearn worker` sets up) and its own heartbeat (Celery's event heartbeat, every 2 s, from the consumer
loop). One fewer service to deploy, and the scrape target disappears with the worker it describes. The
cluster-wide figures (jobs and requests by status, overdue requests, the oldest queued request, audit
failures, queue lengths: `core.observability.collector`) are computed at scrape time from the database
and the broker; every worker reports the same values, so dashboards and alerts take their max.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from contextvars import Token
from typing import Any

from celery.signals import (
    heartbeat_sent,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from prometheus_client import Gauge

from core.observability.logs import LOG_CONTEXT, bind, configure_logging
from core.settings import get_settings

WORKER_HEARTBEAT = Gauge(
    "unlearn_worker_heartbeat_timestamp_seconds",
    "Unix time of the worker's last heartbeat (its consumer loop is alive). Defined here, not with the "
    "job metrics, so that API processes (which import those) do not export a heartbeat of 0.",
    multiprocess_mode="max",
)

log = logging.getLogger(__name__)

_task_context: dict[str, Token[Mapping[str, Any]]] = {}


@setup_logging.connect
def _configure_logging(loglevel: int | str | None = None, **_: Any) -> None:
    configure_logging(get_settings(), "worker", level=loglevel or None)


@task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task_id is not None:
        _task_context[task_id] = bind(task_id=task_id, task=getattr(task, "name", None))


@task_postrun.connect
def _unbind_task(task_id: str | None = None, **_: Any) -> None:
    token = _task_context.pop(task_id or "", None)
    if token is not None:
        LOG_CONTEXT.reset(token)


def serve_metrics(port: int, queue_names: Sequence[str], addr: str = "0.0.0.0") -> Any:
    """Start the metrics HTTP server of this process (a daemon thread); returns the registry it serves."""
    from prometheus_client import REGISTRY, start_http_server

    from core.observability.collector import ServiceStateCollector
    from core.observability.metrics import scrape_registry

    settings = get_settings()
    registry = scrape_registry(REGISTRY)
    if registry is REGISTRY:
        log.warning(
            "worker metrics without PROMETHEUS_MULTIPROC_DIR: the pool processes' job figures are not "
            "served (start the worker with `unlearn worker`, which sets it up)"
        )
    registry.register(ServiceStateCollector(settings.database_url, settings.broker_url, queue_names))
    start_http_server(port, addr=addr, registry=registry)
    log.info("worker metrics on :%d/metrics", port)
    return registry


@worker_init.connect
def _start_metrics(sender: Any = None, **_: Any) -> None:
    settings = get_settings()
    if settings.otel_enabled:  # refuse to start, in the main process, rather than fail in every child
        from core.observability.tracing import check_installed, instrumentor

        check_installed()
        instrumentor("opentelemetry.instrumentation.celery", "CeleryInstrumentor")
    if settings.worker_metrics_port:
        from core.tasks import CALLBACKS_QUEUE
        from worker.celery_app import DEVICE_QUEUES

        serve_metrics(settings.worker_metrics_port, [*DEVICE_QUEUES, settings.queue_name, CALLBACKS_QUEUE])


@worker_ready.connect
@heartbeat_sent.connect
def _beat(**_: Any) -> None:
    if get_settings().worker_metrics_port:
        WORKER_HEARTBEAT.set_to_current_time()


@worker_process_init.connect
def _start_tracing(**_: Any) -> None:
    """In each pool process (a tracer's export thread does not survive a fork)."""
    from core.observability.tracing import instrumentor, start_tracing

    if start_tracing(get_settings(), "worker"):
        celery = instrumentor("opentelemetry.instrumentation.celery", "CeleryInstrumentor")()
        if not celery.is_instrumented_by_opentelemetry:
            celery.instrument()


@worker_process_shutdown.connect
def _pool_process_exited(pid: int | None = None, **_: Any) -> None:
    from core.observability.metrics import process_exited

    process_exited(pid or os.getpid())


@worker_shutdown.connect
def _worker_exited(**_: Any) -> None:
    from core.observability.metrics import process_exited

    process_exited()
