"""Which models need a (re)delivery, read from the database alone: the reaper's plan.

- `worker.process_model` for models with `queued` requests older than `grace_s` and no live job, or an
  unlearn job that needs a worker (`core.jobs.claim.job_needs_a_worker`: a stale heartbeat, or a retry
  whose backoff has passed);
- `worker.train_base_model` for models still `training` with no live job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import DeletionRequest, Job, JobKind, Model, ModelStatus, RequestStatus
from core.jobs.claim import job_is_live, job_needs_a_worker


@dataclass(frozen=True)
class ReapPlan:
    process_models: frozenset[str] = frozenset()
    train_models: frozenset[str] = frozenset()


def plan_reaping(session: Session, *, now: datetime, heartbeat_stale_s: float, grace_s: float) -> ReapPlan:
    grace_before = now - timedelta(seconds=grace_s)
    live_jobs = select(Job.model_id).where(job_is_live(now, heartbeat_stale_s))
    waiting_requests = select(DeletionRequest.model_id).where(
        DeletionRequest.status == RequestStatus.queued,
        DeletionRequest.job_id.is_(None),
        DeletionRequest.received_at < grace_before,
        DeletionRequest.model_id.not_in(live_jobs),
    )
    orphaned_jobs = select(Job.model_id).where(
        Job.kind == JobKind.unlearn, job_needs_a_worker(now, heartbeat_stale_s, grace_s)
    )
    process = set(session.execute(waiting_requests).scalars()) | set(session.execute(orphaned_jobs).scalars())
    training = select(Model.id).where(
        Model.status == ModelStatus.training,
        Model.created_at < grace_before,
        Model.id.not_in(live_jobs),
    )
    return ReapPlan(frozenset(process), frozenset(session.execute(training).scalars()))
