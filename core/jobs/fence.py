"""Fencing: every write of a running job checks that the job row still carries its claim.

A claim is identified by (job id, attempt, worker id). If the reaper handed the job to another worker
(because this one's heartbeat went stale), the old worker's writes match no row and it stops without
writing anything. Checkpoints are keyed by job id *and* attempt for the same reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from core.db import DeletionRequest, Job, JobStatus, Model, RequestStatus
from core.jobs.claim import JobClaim, lock_model
from core.lifecycle import STAGE_MAX_CHARS


class LostClaim(Exception):
    """Another worker owns the job now (this one's heartbeat went stale); write nothing."""


def _owned_by(claim: JobClaim) -> tuple[ColumnElement[bool], ...]:
    """The fence: the job row is running and still carries this claim's attempt and worker."""
    return (
        Job.id == claim.job_id,
        Job.status == JobStatus.running,
        Job.attempts == claim.attempt,
        Job.worker_id == claim.worker_id,
    )


def _lost(claim: JobClaim) -> LostClaim:
    return LostClaim(f"job {claim.job_id} attempt {claim.attempt} is no longer owned by {claim.worker_id}")


def owned_job(session: Session, claim: JobClaim) -> Job:
    """The job row, locked, if this claim still owns it; else LostClaim."""
    job = session.execute(select(Job).where(*_owned_by(claim)).with_for_update()).scalar_one_or_none()
    if job is None:
        raise _lost(claim)
    return job


def owned_model_and_job(session: Session, claim: JobClaim) -> tuple[Model, Job]:
    """The model row then the job row, locked in the order every writer takes them; else LostClaim."""
    model = lock_model(session, claim.model_id)
    job = owned_job(session, claim)
    if model is None:
        raise _lost(claim)
    return model, job


def _touch(session: Session, claim: JobClaim, **values: Any) -> bool:
    """Write `values` on the job if the claim still owns it; False when it was lost."""
    result = session.execute(update(Job).where(*_owned_by(claim)).values(**values))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record_heartbeat(session: Session, claim: JobClaim, now: datetime) -> bool:
    """Refresh the heartbeat; False when the claim was lost (another worker took the job over)."""
    return _touch(session, claim, heartbeat_at=now)


def record_progress(session: Session, claim: JobClaim, *, fraction: float, stage: str, now: datetime) -> bool:
    """Heartbeat plus progress/stage on the job and on every running request it serves."""
    fraction = min(max(float(fraction), 0.0), 1.0)
    stage = stage[:STAGE_MAX_CHARS]
    if not _touch(session, claim, heartbeat_at=now, progress=fraction, stage=stage):
        return False
    session.execute(
        update(DeletionRequest)
        .where(DeletionRequest.job_id == claim.job_id, DeletionRequest.status == RequestStatus.running)
        .values(progress=fraction, stage=stage)
    )
    return True


def cancel_requested(session: Session, claim: JobClaim) -> bool:
    """True when any request the job serves asked to be cancelled."""
    return (
        session.execute(
            select(DeletionRequest.id)
            .where(
                DeletionRequest.job_id == claim.job_id,
                DeletionRequest.cancel_requested.is_(True),
                DeletionRequest.status == RequestStatus.running,
            )
            .limit(1)
        ).first()
        is not None
    )
