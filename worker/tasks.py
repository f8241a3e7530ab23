"""The Celery tasks `worker.process_model` and `worker.train_base_model`, and the loops behind them.

The task functions are thin: `process_model_now` / `train_model_now` do the work and take the
settings, the job runner and the enqueue function as arguments, so the tests drive the same code
in-process. Outcome of one claimed job:

- success: one transaction writes version, tombstones, reports, request states (`worker.claims`);
- `Cancelled`: cancelled requests end `cancelled`, the others go back to the queue; no version;
- another exception: the job goes back to `queued` and is re-enqueued with a backoff while
  attempts < max_attempts, else its requests fail with a problem+json error;
- the claim was lost (a stale heartbeat let another worker take over): nothing is written.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import JobKind, session_scope, utcnow
from app.settings import Settings, get_settings
from worker import claims
from worker.callbacks import Notify, deliver_in_background, flush_callbacks, worker_session
from worker.celery_app import PROCESS_MODEL_TASK, TRAIN_BASE_MODEL_TASK, app, enqueue
from worker.claims import FailureOutcome, JobClaim, LostClaim, UnlearnResult
from worker.jobs import JobRuntime, PermanentJobError, discard_earlier_attempts

log = logging.getLogger(__name__)

MAX_JOBS_PER_DELIVERY = 100
"""Safety bound on the claim loop of one delivery (each iteration finishes one job)."""

Enqueue = Callable[[str, str, float | None], None]
"""enqueue(task_name, model_id, countdown_s): how a retry or follow-up is scheduled."""

UnlearnRunner = Callable[[JobClaim, JobRuntime, Path], UnlearnResult]
TrainRunner = Callable[[JobClaim, JobRuntime, Path], tuple[str, str, int, dict[str, Any]]]


def celery_enqueue(task_name: str, model_id: str, countdown_s: float | None) -> None:
    enqueue(task_name, model_id, countdown_s=countdown_s)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def retry_backoff_s(attempt: int) -> float:
    """2, 4, 8, ... seconds, at most a minute."""
    return float(min(2**attempt, 60))


def error_problem(error: BaseException, *, permanent: bool) -> dict[str, Any]:
    kind = "job-error" if permanent else "job-attempt-failed"
    title = "The job cannot run" if permanent else "A job attempt failed"
    return claims.problem(
        kind,
        title,
        f"{type(error).__name__}: {error}",
        traceback=traceback.format_exception_only(error)[-1].strip(),
    )


def claim_job(
    session: Session, kind: str, model_id: str, worker_id: str, settings: Settings
) -> claims.ClaimOutcome:
    """One claim of the model's `kind` job now, under the settings' heartbeat and attempt limits."""
    claim = claims.claim_train_job if kind == JobKind.train else claims.claim_unlearn_job
    return claim(
        session,
        model_id,
        worker_id=worker_id,
        now=utcnow(),
        heartbeat_stale_s=settings.heartbeat_stale_s,
        max_attempts=settings.max_attempts,
    )


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    outcome: str  # succeeded | cancelled | retry | failed | lost | duplicate
    version_id: str | None = None


def process_model_now(
    model_id: str,
    *,
    settings: Settings | None = None,
    worker_id: str | None = None,
    runner: UnlearnRunner | None = None,
    enqueue_task: Enqueue = celery_enqueue,
    notify: Notify | None = deliver_in_background,
) -> list[JobOutcome]:
    """Claim and run the model's unlearning jobs until none is left (or another worker holds it)."""
    from worker.jobs import run_unlearn

    settings = settings or get_settings()
    worker_id = worker_id or worker_identity()
    runner = runner or run_unlearn
    outcomes: list[JobOutcome] = []
    for _ in range(MAX_JOBS_PER_DELIVERY):
        with worker_session(settings.database_url, notify) as session:
            claimed = claim_job(session, JobKind.unlearn, model_id, worker_id, settings)
        if claimed.claim is None:
            log.info("process_model %s: %s (%s)", model_id, claimed.status, claimed.detail)
            break
        outcome = _run_unlearn_claim(claimed.claim, settings, runner, enqueue_task, notify)
        outcomes.append(outcome)
        if outcome.outcome in ("retry", "lost"):
            break  # a retry runs after its backoff; a lost claim belongs to another worker now
    return outcomes


def _run_unlearn_claim(
    claim: JobClaim, settings: Settings, runner: UnlearnRunner, enqueue_task: Enqueue, notify: Notify | None
) -> JobOutcome:
    from unlearning.types import Cancelled

    log.info(
        "job %s (attempt %d): unlearning %d request(s) on model %s",
        claim.job_id,
        claim.attempt,
        len(claim.requests),
        claim.model_id,
    )
    checkpoint: Path | None = None
    runtime = JobRuntime(
        claim, database_url=settings.database_url, heartbeat_interval_s=settings.heartbeat_interval_s
    )
    try:
        try:
            with runtime:  # heartbeats while the computation runs; stopped before the final write
                result = runner(claim, runtime, settings.artifacts)
            checkpoint = Path(result.checkpoint_uri)
            if runtime.lost.is_set():
                raise LostClaim(f"job {claim.job_id}: heartbeat lost before the results were written")
            if runtime.should_stop(force=True):
                raise Cancelled("cancel requested before the results were written")
            with worker_session(settings.database_url, notify) as session:
                written = claims.commit_unlearn_success(session, claim, result, utcnow())
            log.info("job %s: version %s written", claim.job_id, written)
            _discard_earlier_attempts(settings.artifacts, claim)
            return JobOutcome(claim.job_id, "succeeded", written)
        except Cancelled:
            if runtime.lost.is_set():
                raise LostClaim(f"job {claim.job_id}: claim lost while running") from None
            _discard(checkpoint)
            with worker_session(settings.database_url, notify) as session:
                cancelled = claims.commit_cancelled(session, claim, utcnow())
            log.info("job %s: cancelled requests %s", claim.job_id, cancelled)
            return JobOutcome(claim.job_id, "cancelled")
    except LostClaim as lost:
        _discard(checkpoint)
        log.warning("%s", lost)
        return JobOutcome(claim.job_id, "lost")
    except IntegrityError:
        # model_versions.job_id is unique: another delivery already wrote this job's version.
        _discard(checkpoint)
        log.warning("job %s: a version for this job already exists (duplicate delivery)", claim.job_id)
        return JobOutcome(claim.job_id, "duplicate")
    except Exception as error:
        _discard(checkpoint)
        return _record_failure(claim, settings, error, enqueue_task, notify)


def _record_failure(
    claim: JobClaim, settings: Settings, error: Exception, enqueue_task: Enqueue, notify: Notify | None = None
) -> JobOutcome:
    permanent = isinstance(error, PermanentJobError)
    log.error(
        "job %s attempt %d failed%s",
        claim.job_id,
        claim.attempt,
        " permanently" if permanent else "",
        exc_info=error,
    )
    problem = error_problem(error, permanent=permanent)
    try:
        with worker_session(settings.database_url, notify) as session:
            outcome = claims.commit_failure(
                session, claim, problem, utcnow(), max_attempts=settings.max_attempts, retryable=not permanent
            )
    except LostClaim as lost:
        log.warning("%s", lost)
        return JobOutcome(claim.job_id, "lost")
    if outcome == FailureOutcome.retry:
        task = TRAIN_BASE_MODEL_TASK if claim.kind == JobKind.train else PROCESS_MODEL_TASK
        enqueue_task(task, claim.model_id, retry_backoff_s(claim.attempt))
        return JobOutcome(claim.job_id, "retry")
    return JobOutcome(claim.job_id, "failed")


def _discard(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def _discard_earlier_attempts(artifacts: Path, claim: JobClaim) -> None:
    """Housekeeping after the version is committed: a failure here must not turn success into a retry."""
    try:
        for path in discard_earlier_attempts(artifacts, claim):
            log.info("job %s: removed %s of an earlier attempt", claim.job_id, path.name)
    except OSError:
        log.exception("job %s: could not remove earlier attempts' checkpoints", claim.job_id)


def train_model_now(
    model_id: str,
    *,
    settings: Settings | None = None,
    worker_id: str | None = None,
    runner: TrainRunner | None = None,
    enqueue_task: Enqueue = celery_enqueue,
) -> JobOutcome | None:
    """Claim the model's training and run it; then hand queued deletion requests to process_model."""
    from unlearning.types import Cancelled
    from worker.jobs import run_train

    settings = settings or get_settings()
    worker_id = worker_id or worker_identity()
    runner = runner or run_train
    with session_scope(settings.database_url) as session:
        claimed = claim_job(session, JobKind.train, model_id, worker_id, settings)
    claim = claimed.claim
    if claim is None:
        log.info("train_base_model %s: %s (%s)", model_id, claimed.status, claimed.detail)
        return None
    checkpoint: Path | None = None
    runtime = JobRuntime(
        claim, database_url=settings.database_url, heartbeat_interval_s=settings.heartbeat_interval_s
    )
    try:
        with runtime:
            path, sha256, size_bytes, metrics = runner(claim, runtime, settings.artifacts)
        checkpoint = Path(path)
        if runtime.lost.is_set():
            raise LostClaim(f"job {claim.job_id}: heartbeat lost before the results were written")
        with session_scope(settings.database_url) as session:
            version_id = claims.commit_train_success(
                session,
                claim,
                checkpoint_uri=path,
                sha256=sha256,
                size_bytes=size_bytes,
                metrics=metrics,
                now=utcnow(),
            )
        _discard_earlier_attempts(settings.artifacts, claim)
    except (LostClaim, Cancelled) as stopped:
        _discard(checkpoint)
        log.warning("job %s: %s", claim.job_id, stopped)
        return JobOutcome(claim.job_id, "lost")
    except IntegrityError:
        _discard(checkpoint)
        return JobOutcome(claim.job_id, "duplicate")
    except Exception as error:
        _discard(checkpoint)
        return _record_failure(claim, settings, error, enqueue_task)
    with session_scope(settings.database_url, readonly=True) as session:
        waiting = claims.queued_request_count(session, model_id)
    if waiting:
        enqueue_task(PROCESS_MODEL_TASK, model_id, None)
    return JobOutcome(claim.job_id, "succeeded", version_id)


@app.task(name=PROCESS_MODEL_TASK)
def process_model(model_id: str) -> list[dict[str, Any]]:
    """Unlearn every queued deletion request of `model_id` (coalesced per job); see the module docstring."""
    try:
        return [outcome.__dict__ for outcome in process_model_now(model_id)]
    finally:
        flush_callbacks()


@app.task(name=TRAIN_BASE_MODEL_TASK)
def train_base_model(model_id: str) -> dict[str, Any] | None:
    """Train the base model `model_id` per its train_params and write version 1."""
    outcome = train_model_now(model_id)
    return outcome.__dict__ if outcome else None


# Signal handlers (ready file, reaper thread, engine reset after fork) live with the reaper.
from worker import reaper as _reaper  # noqa: E402,F401
