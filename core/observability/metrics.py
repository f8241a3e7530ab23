"""Prometheus metrics the job code records, and prometheus-client's multiprocess mode.

Multiprocess mode: one figure is served by several processes (`unlearn api --workers N`, a Celery
prefork pool). Each process writes its values to files under PROMETHEUS_MULTIPROC_DIR, and a scrape of
any of them sums the files of all (`MultiProcessCollector`), so one scrape counts every process's
traffic. prometheus-client picks its value store when first imported, so the directory must be named
before that, in the process that starts the others: `unlearn api` (with --workers > 1) and
`unlearn worker` call `core.observability.multiproc.prepare_multiproc_dir`. A process that ends calls
`process_exited`, so its live gauges leave the sums (counters and histograms of ended ones stay).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess

from core.observability.multiproc import multiproc_dir

JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
"""Seconds: from a tiny CPU job to a GPU run with a retrain reference."""

JOB_DURATION = Histogram(
    "unlearn_job_duration_seconds",
    "Wall time of the jobs a worker finished, by kind, requested method and stage (load, method, save, "
    "reference_retrain, audit as the job records them; total = claim to last write).",
    ["kind", "method", "stage"],
    buckets=JOB_BUCKETS,
)
JOBS_FINISHED = Counter(
    "unlearn_jobs_finished",
    "Job attempts a worker finished, by outcome (succeeded, cancelled, retry, failed, lost, duplicate).",
    ["kind", "method", "outcome"],
)


def scrape_registry(single_process: CollectorRegistry = REGISTRY) -> CollectorRegistry:
    """What a scrape renders: the files of every process in multiprocess mode, else `single_process`."""
    if multiproc_dir() is None:
        return single_process
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def process_exited(pid: int | None = None) -> None:
    """Drop the live gauges of an ended process (this one by default) from the sums."""
    if multiproc_dir() is not None:
        multiprocess.mark_process_dead(pid or os.getpid())


def record_job(kind: str, method: str, outcome: str, total_s: float, stages: Mapping[str, float]) -> None:
    """One finished job attempt: its outcome, and its durations when it succeeded."""
    JOBS_FINISHED.labels(kind, method, outcome).inc()
    if outcome != "succeeded":
        return
    for stage, seconds in stages.items():
        JOB_DURATION.labels(kind, method, stage).observe(float(seconds))
    JOB_DURATION.labels(kind, method, "total").observe(total_s)
