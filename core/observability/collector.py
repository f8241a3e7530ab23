"""The state of the whole service as Prometheus figures, read from the database and the broker at scrape
time: jobs and deletion requests in progress, overdue requests, the oldest waiting request, audit-policy
failures, and the length of the Celery queues.

Overdue: a request not succeeded nor cancelled whose `due_at` (received_at + one month, GDPR's "without
undue delay and in any event within one month") has passed: the same rule as the API's `overdue` field
and `GET /v1/deletion-requests?overdue=true` (`core.resources.is_overdue`). A failed or audit_failed
request past its due date stays overdue: nothing was forgotten for it.

Every query is on an indexed column and reads only unfinished (or rare) rows: statuses queued/running,
failed/audit_failed (index `ix_deletion_requests_status`, `ix_jobs_status`) and `job.escalated` events
(`ix_audit_events_event`). These figures describe the cluster, not one worker: every worker that serves
metrics reports the same values, so dashboards and alerts take their `max`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from core.db.audit import AuditEventType
from core.db.models import (
    AuditEvent,
    DeletionRequest,
    Job,
    JobKind,
    JobStatus,
    RequestStatus,
    utcnow,
)
from core.tasks import redis_client

log = logging.getLogger(__name__)

ACTIVE_JOB_STATUSES = (JobStatus.queued, JobStatus.running)
ACTIVE_REQUEST_STATUSES = (RequestStatus.queued, RequestStatus.running)
OVERDUE_STATUSES = tuple(
    status for status in RequestStatus if status not in (RequestStatus.succeeded, RequestStatus.cancelled)
)
"""The statuses `core.resources.is_overdue` counts once `due_at` has passed."""
KOMBU_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
"""Kombu's Redis transport keeps one list per priority step: QUEUE, then QUEUE + sep + 3|6|9."""

METRIC_NAMES = (
    "unlearn_jobs",
    "unlearn_deletion_requests",
    "unlearn_deletion_requests_overdue",
    "unlearn_deletion_request_oldest_queued_age_seconds",
    "unlearn_deletion_requests_audit_failed_total",
    "unlearn_job_escalations_total",
    "unlearn_queue_length",
    "unlearn_state_source_up",
)
"""The sample names this collector exports (checked against the dashboards and alert rules)."""


class ServiceStateCollector(Collector):
    """A custom collector: computed at each scrape, nothing stored in between."""

    def __init__(self, database_url: str, broker_url: str, queue_names: Sequence[str]) -> None:
        self.database_url = database_url
        self.broker_url = broker_url
        self.queue_names = list(dict.fromkeys(queue_names))
        self._engine: Engine | None = None

    def engine(self) -> Engine:
        # NullPool: no idle connection for a forked Celery pool child to inherit.
        if self._engine is None:
            options: dict[str, Any] = (
                {"timeout": 5.0}
                if self.database_url.startswith("sqlite")
                else {"connect_timeout": 3, "options": "-c statement_timeout=5000"}
            )
            self._engine = create_engine(self.database_url, poolclass=NullPool, connect_args=options)
        return self._engine

    def describe(self) -> Iterable[Any]:
        return []  # computed at scrape time only; registering must not query the database

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily(
            "unlearn_state_source_up",
            "1 when the last scrape could read the source (database, broker), else 0.",
            labels=["source"],
        )
        try:
            yield from self._database(utcnow())
            up.add_metric(["database"], 1)
        except Exception as error:
            log.warning("metrics: cannot read the database: %s", error)
            up.add_metric(["database"], 0)
        try:
            yield self._queues()
            up.add_metric(["broker"], 1)
        except Exception as error:
            log.warning("metrics: cannot read the broker queues: %s", error)
            up.add_metric(["broker"], 0)
        yield up

    def _database(self, now: datetime) -> list[Any]:
        with Session(self.engine()) as session:
            jobs = dict.fromkeys(((k.value, s.value) for k in JobKind for s in ACTIVE_JOB_STATUSES), 0)
            for kind, status, count in session.execute(
                select(Job.kind, Job.status, func.count())
                .where(Job.status.in_([s.value for s in ACTIVE_JOB_STATUSES]))
                .group_by(Job.kind, Job.status)
            ):
                jobs[(kind, status)] = count
            requests = _counts_by_status(session, ACTIVE_REQUEST_STATUSES)
            overdue = _counts_by_status(session, OVERDUE_STATUSES, DeletionRequest.due_at < now)
            oldest = session.scalar(
                select(func.min(DeletionRequest.received_at)).where(
                    DeletionRequest.status == RequestStatus.queued.value
                )
            )
            audit_failed = session.scalar(
                select(func.count()).where(DeletionRequest.status == RequestStatus.audit_failed.value)
            )
            escalations = session.scalar(
                select(func.count()).where(AuditEvent.event == AuditEventType.job_escalated.value)
            )
        job_gauge = GaugeMetricFamily(
            "unlearn_jobs", "Jobs queued or running now, by kind (database).", labels=["kind", "status"]
        )
        for (kind, status), count in jobs.items():
            job_gauge.add_metric([kind, status], count)
        request_gauge = GaugeMetricFamily(
            "unlearn_deletion_requests",
            "Deletion requests queued or running now (database).",
            labels=["status"],
        )
        for status, count in requests.items():
            request_gauge.add_metric([status], count)
        overdue_gauge = GaugeMetricFamily(
            "unlearn_deletion_requests_overdue",
            "Deletion requests past their due date (received + 1 month) and not succeeded nor cancelled.",
            labels=["status"],
        )
        for status, count in overdue.items():
            overdue_gauge.add_metric([status], count)
        age = 0.0 if oldest is None else max((now - _aware(oldest)).total_seconds(), 0.0)
        return [
            job_gauge,
            request_gauge,
            overdue_gauge,
            GaugeMetricFamily(
                "unlearn_deletion_request_oldest_queued_age_seconds",
                "Age of the oldest deletion request still queued (0 when none is).",
                value=age,
            ),
            CounterMetricFamily(
                "unlearn_deletion_requests_audit_failed",
                "Deletion requests that ended audit_failed: the audit never passed the acceptance policy.",
                value=audit_failed or 0,
            ),
            CounterMetricFamily(
                "unlearn_job_escalations",
                "Rungs climbed on the acceptance ladder (job.escalated events): a method's audit failed.",
                value=escalations or 0,
            ),
        ]

    def _queues(self) -> GaugeMetricFamily:
        client: Any = redis_client(self.broker_url)
        gauge = GaugeMetricFamily(
            "unlearn_queue_length", "Messages waiting in the Celery queue (broker).", labels=["queue"]
        )
        if client is None:
            raise RuntimeError(f"not a Redis broker: {self.broker_url.split(':', 1)[0]}")
        pipe = client.pipeline(transaction=False)
        for name in self.queue_names:
            for suffix in KOMBU_PRIORITY_SUFFIXES:
                pipe.llen(name + suffix)
        lengths = pipe.execute()
        step = len(KOMBU_PRIORITY_SUFFIXES)
        for index, name in enumerate(self.queue_names):
            gauge.add_metric([name], sum(lengths[index * step : (index + 1) * step]))
        return gauge


def _counts_by_status(session: Session, statuses: Sequence[RequestStatus], *where: Any) -> dict[str, int]:
    counts = dict.fromkeys((status.value for status in statuses), 0)
    query = (
        select(DeletionRequest.status, func.count())
        .where(DeletionRequest.status.in_(list(counts)), *where)
        .group_by(DeletionRequest.status)
    )
    for status, count in session.execute(query):
        counts[status] = count
    return counts


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
