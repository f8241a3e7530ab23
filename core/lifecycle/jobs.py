"""The state changes of a job."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from core.db.audit import AuditEventType, append_audit_event
from core.db.models import (
    Job,
    JobKind,
    JobStatus,
    new_id,
)
from core.lifecycle.tables import (
    JC,
    JF,
    JOB_TRANSITIONS,
    JQ,
    JR,
    JS,
    check,
    stage_text,
)


def _job_to(job: Job, target: JobStatus) -> None:
    check(JOB_TRANSITIONS, "job", job.id, job.status, target)
    job.status = target


def _job_event(
    session: Session, event: AuditEventType, job: Job, actor: str | None, data: dict[str, Any]
) -> None:
    append_audit_event(session, event, actor=actor, model_id=job.model_id, job_id=job.id, data=data)


def job_created(session: Session, model_id: str, kind: JobKind) -> Job:
    job = Job(id=new_id("job"), model_id=model_id, kind=kind, attempts=0, request_ids=[], progress=0.0)
    check(JOB_TRANSITIONS, "job", job.id, None, JQ)
    job.status = JQ
    session.add(job)
    session.flush()
    return job


def job_started(
    session: Session,
    job: Job,
    *,
    worker_id: str,
    now: datetime,
    reason: str,
    request_ids: list[str] = (),  # type: ignore[assignment]
) -> None:
    """The next attempt of `job` runs on `worker_id` (new, a retry, or taken over from a stale worker).

    `request_ids` are the requests this attempt serves, added to the job's record."""
    previous_worker = job.worker_id
    _job_to(job, JR)
    job.request_ids = list(dict.fromkeys([*(job.request_ids or []), *request_ids]))
    job.worker_id = worker_id
    job.heartbeat_at = now
    job.retry_at = None
    job.attempts += 1
    job.started_at = job.started_at or now
    job.stage = "claimed"
    job.progress = 0.0
    if job.attempts > 1:
        _job_event(
            session,
            AuditEventType.job_retried,
            job,
            worker_id,
            {"attempt": job.attempts, "previous_worker": previous_worker, "reason": reason},
        )
    _job_event(
        session,
        AuditEventType.job_started,
        job,
        worker_id,
        {"attempt": job.attempts, "kind": job.kind, "request_ids": list(job.request_ids or [])},
    )


def job_retry_scheduled(
    session: Session,
    job: Job,
    error: dict[str, Any],
    now: datetime,
    *,
    actor: str,
    backoff_s: float,
    max_attempts: int,
) -> None:
    """The attempt failed with a transient error: the job waits `backoff_s`, then runs again."""
    check(JOB_TRANSITIONS, "job", job.id, job.status, JQ)
    _job_event(
        session,
        AuditEventType.job_failed,
        job,
        actor,
        {"attempt": job.attempts, "error": error, "final": False},
    )
    _job_to(job, JQ)
    job.error = error
    job.worker_id = None
    job.retry_at = now + timedelta(seconds=backoff_s)
    job.stage = stage_text(f"retrying (attempt {job.attempts + 1} of {max_attempts})")


def job_succeeded(session: Session, job: Job, now: datetime, *, actor: str, data: dict[str, Any]) -> None:
    _job_to(job, JS)
    job.progress = 1.0
    job.stage = "done"
    job.finished_at = now
    job.error = None
    _job_event(session, AuditEventType.job_finished, job, actor, data)


def job_failed(
    session: Session, job: Job, error: dict[str, Any], now: datetime, *, actor: str | None
) -> None:
    """Failed for good: a permanent error, its attempts used up, or its model unusable."""
    check(JOB_TRANSITIONS, "job", job.id, job.status, JF)
    _job_event(
        session,
        AuditEventType.job_failed,
        job,
        actor,
        {"attempt": job.attempts, "error": error, "final": True},
    )
    _job_to(job, JF)
    job.error = error
    job.stage = "failed"
    job.finished_at = now


def job_cancelled(
    session: Session, job: Job, now: datetime, *, actor: str | None, cancelled: list[str]
) -> None:
    """Stopped (a request it served was cancelled) or left with no request to serve."""
    _job_to(job, JC)
    job.stage = "cancelled"
    job.finished_at = now
    _job_event(
        session,
        AuditEventType.job_finished,
        job,
        actor,
        {"attempt": job.attempts, "outcome": "cancelled", "cancelled": cancelled},
    )
