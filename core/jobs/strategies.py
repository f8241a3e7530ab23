"""The job kinds as strategies of the one job loop (`core.jobs.loop`): what to claim, how to run, what
to commit, and what follows a success. Adding a job kind is a row here plus its three functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import DeletionRequest, JobKind, RequestStatus
from core.jobs.claim import ClaimOutcome, ClaimPolicy, JobClaim, claim_train_job, claim_unlearn_job
from core.jobs.commit import commit_train_success, commit_unlearn_success
from core.jobs.runtime import JobRuntime
from core.jobs.train import run_train
from core.jobs.unlearn import run_unlearn
from core.settings import Settings
from core.storage import ArtifactStore
from core.tasks import PROCESS_MODEL_TASK, TRAIN_BASE_MODEL_TASK


class Claim(Protocol):
    def __call__(
        self, session: Session, model_id: str, *, worker_id: str, now: datetime, policy: ClaimPolicy
    ) -> ClaimOutcome: ...


class JobResult(Protocol):
    @property
    def checkpoint_uri(self) -> str: ...


Runner = Callable[[JobClaim, JobRuntime, ArtifactStore], Any]
"""run(claim, runtime, artifact store) -> the kind's result (a `JobResult`); raises `Cancelled` on a stop.
It imports torch when called, not when imported."""


@dataclass(frozen=True)
class JobStrategy:
    kind: JobKind
    task_name: str
    """The task that (re)runs this kind for a model: what a retry enqueues."""
    claim: Claim
    run: Runner
    commit: Callable[[Session, JobClaim, Any, datetime, Settings], str]
    """Writes the result in one fenced transaction; returns the new version's id."""
    repeat: bool
    """Claim again after a finished job, until nothing is left (unlearn: the next batch of requests)."""
    follow_up: Callable[[Session, str], str | None] = lambda session, model_id: None
    """After a success: the task to enqueue for the model, if any."""
    purges: bool = False
    """A success retires versions: purge the checkpoints that are due right after it."""


def _commit_unlearn(session: Session, claim: JobClaim, result: Any, now: datetime, settings: Settings) -> str:
    return commit_unlearn_success(
        session, claim, result, now, retire_grace_s=settings.retired_version_grace_s
    )


def _commit_train(session: Session, claim: JobClaim, result: Any, now: datetime, settings: Settings) -> str:
    return commit_train_success(session, claim, result, now)


def _requests_waiting(session: Session, model_id: str) -> str | None:
    """Deletion requests posted while the base model trained: process them now."""
    waiting = session.execute(
        select(DeletionRequest.id)
        .where(DeletionRequest.model_id == model_id, DeletionRequest.status == RequestStatus.queued)
        .limit(1)
    ).first()
    return PROCESS_MODEL_TASK if waiting is not None else None


STRATEGIES: dict[JobKind, JobStrategy] = {
    JobKind.unlearn: JobStrategy(
        kind=JobKind.unlearn,
        task_name=PROCESS_MODEL_TASK,
        claim=claim_unlearn_job,
        run=run_unlearn,
        commit=_commit_unlearn,
        repeat=True,
        purges=True,
    ),
    JobKind.train: JobStrategy(
        kind=JobKind.train,
        task_name=TRAIN_BASE_MODEL_TASK,
        claim=claim_train_job,
        run=run_train,
        commit=_commit_train,
        repeat=False,
        follow_up=_requests_waiting,
    ),
}
