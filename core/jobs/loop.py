"""The one job loop of every job kind: claim -> run -> commit, or fail / retry, then claim again.

Outcome of one claimed job:
- success: the kind's commit writes the result in one transaction (`core.jobs.commit`);
- `Cancelled`: cancelled requests end `cancelled`, the others go back to the queue; no version;
- another exception: `core.jobs.retry` classifies it; a transient one sends the job back to `queued`
  and re-enqueues it after a backoff while attempts remain, a permanent one fails it at once;
- the claim was lost (a stale heartbeat let another worker take over): nothing is written.

Each of those writes waits for the database when it is unreachable and is written as soon as it
answers again (`result_write_patience_s`): a PostgreSQL restart costs the time it takes, not a job.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from core.callbacks import Notify, write_session
from core.db import JobKind, utcnow
from core.jobs.artifacts import discard_earlier_attempts
from core.jobs.claim import ClaimOutcome, ClaimPolicy, JobClaim
from core.jobs.commit import FailureOutcome, commit_cancelled, commit_failure
from core.jobs.fence import LostClaim
from core.jobs.purge import purge_derived_copies, purge_due_checkpoints
from core.jobs.retry import is_permanent, retry_backoff_s
from core.jobs.runtime import JobRuntime
from core.jobs.strategies import STRATEGIES, JobStrategy, Runner
from core.observability.logs import bound
from core.observability.metrics import record_job
from core.problems import problem
from core.settings import Settings, get_settings
from core.storage import ArtifactStore, artifact_store
from core.tasks import Enqueue
from unlearning.data.cache import cache_policy

log = logging.getLogger(__name__)

MAX_JOBS_PER_DELIVERY = 100
"""Safety bound on the claim loop of one delivery (each iteration finishes one job)."""

T = TypeVar("T")


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    outcome: str  # succeeded | cancelled | retry | failed | lost | duplicate
    version_id: str | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    """Seconds per stage of a succeeded run, as the job recorded them (`metrics.timings_s`)."""


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_job(
    session: Session, kind: JobKind, model_id: str, worker_id: str, settings: Settings
) -> ClaimOutcome:
    """One claim of the model's `kind` job now, under the settings' heartbeat and attempt limits."""
    policy = ClaimPolicy(
        heartbeat_stale_s=settings.heartbeat_stale_s,
        max_attempts=settings.max_attempts,
        coalesce_window_s=settings.coalesce_window_s,
        acceptance=settings.acceptance,
        retrain_fallback=settings.retrain_fallback,
    )
    return STRATEGIES[kind].claim(session, model_id, worker_id=worker_id, now=utcnow(), policy=policy)


def run_jobs(
    kind: JobKind,
    model_id: str,
    *,
    enqueue: Enqueue,
    settings: Settings | None = None,
    worker_id: str | None = None,
    runner: Runner | None = None,
    notify: Notify | None = None,
) -> list[JobOutcome]:
    """Claim and run the model's `kind` jobs until none is left (or another worker holds one).

    `runner` replaces the kind's run (tests); `enqueue` schedules retries and follow-ups; `notify` is told
    after a commit that owes callbacks (the worker enqueues their delivery)."""
    strategy = STRATEGIES[kind]
    settings = settings or get_settings()
    worker_id = worker_id or worker_identity()
    outcomes: list[JobOutcome] = []
    for _ in range(MAX_JOBS_PER_DELIVERY if strategy.repeat else 1):
        with write_session(settings.database_url, notify) as session:
            claimed = claim_job(session, kind, model_id, worker_id, settings)
        if claimed.claim is None:
            log.info("%s %s: %s (%s)", strategy.task_name, model_id, claimed.status, claimed.detail)
            if claimed.retry_in_s is not None:
                enqueue(strategy.task_name, model_id, claimed.retry_in_s)
            break
        outcome = _run_bound(strategy, claimed.claim, settings, runner or strategy.run, enqueue, notify)
        outcomes.append(outcome)
        if outcome.outcome in ("retry", "lost"):
            break  # a retry runs after its backoff; a lost claim belongs to another worker now
    return outcomes


def _write(settings: Settings, notify: Notify | None, write: Callable[[Session], T]) -> T:
    """One result transaction; while the database cannot be reached, wait and try again."""
    deadline = time.monotonic() + settings.result_write_patience_s
    delay_s = 0.25
    while True:
        try:
            with write_session(settings.database_url, notify) as session:
                return write(session)
        except (OperationalError, InterfaceError) as error:
            if time.monotonic() + delay_s > deadline:
                raise
            log.warning("database unreachable for a result write (%s); again in %.2f s", error.orig, delay_s)
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 5.0)


def _run_bound(
    strategy: JobStrategy,
    claim: JobClaim,
    settings: Settings,
    runner: Runner,
    enqueue: Enqueue,
    notify: Notify | None,
) -> JobOutcome:
    """`_run_claim` with the job's ids on every log line (the requests' too: `grep req_...` finds the job)
    and its outcome and durations in the worker's metrics."""
    with bound(
        job_id=claim.job_id,
        model_id=claim.model_id,
        attempt=claim.attempt,
        request_ids=claim.request_ids or None,
    ):
        log.info("job claimed", extra={"job_kind": claim.kind, "method": claim.method or None})
        started = time.monotonic()
        outcome = _run_claim(strategy, claim, settings, runner, enqueue, notify)
        elapsed_s = time.monotonic() - started
        record_job(claim.kind, claim.method or claim.kind, outcome.outcome, elapsed_s, outcome.timings_s)
        log.info("job finished: %s", outcome.outcome, extra={"version_id": outcome.version_id})
        return outcome


def _run_claim(
    strategy: JobStrategy,
    claim: JobClaim,
    settings: Settings,
    runner: Runner,
    enqueue: Enqueue,
    notify: Notify | None,
) -> JobOutcome:
    from unlearning.types import Cancelled

    log.info("job %s started (%s, attempt %d)", claim.job_id, claim.kind, claim.attempt)
    checkpoint: str | None = None
    store = artifact_store(settings)
    runtime = JobRuntime(
        claim, database_url=settings.database_url, heartbeat_interval_s=settings.heartbeat_interval_s
    )
    try:
        try:
            # Heartbeats while the computation runs (stopped before the final write); no image-derived
            # file is stored on disk meanwhile, so no copy of erased data outlives the job.
            with runtime, cache_policy(settings.cache_root, persist=False):
                result = runner(claim, runtime, store)
            checkpoint = result.checkpoint_uri
            if runtime.lost.is_set():
                raise LostClaim(f"job {claim.job_id}: heartbeat lost before the results were written")
            if runtime.should_stop(force=True):
                raise Cancelled("cancel requested before the results were written")
            version_id = _write(
                settings, notify, lambda session: strategy.commit(session, claim, result, utcnow(), settings)
            )
            log.info("job %s committed: version %s written", claim.job_id, version_id)
            _discard_earlier_attempts(store, claim)
            _follow_up(strategy, claim, version_id, settings, enqueue)
            timings = result.metrics.get("timings_s") if isinstance(result.metrics, dict) else None
            return JobOutcome(claim.job_id, "succeeded", version_id, dict(timings or {}))
        except Cancelled:
            if runtime.lost.is_set():
                raise LostClaim(f"job {claim.job_id}: claim lost while running") from None
            _discard(store, checkpoint)
            cancelled = _write(settings, notify, lambda session: commit_cancelled(session, claim, utcnow()))
            log.info("job %s: cancelled requests %s", claim.job_id, cancelled)
            return JobOutcome(claim.job_id, "cancelled")
    except LostClaim as lost:
        _discard(store, checkpoint)
        log.warning("%s", lost)
        return JobOutcome(claim.job_id, "lost")
    except IntegrityError:
        # model_versions.job_id is unique: another delivery already wrote this job's version.
        _discard(store, checkpoint)
        log.warning("job %s: a version for this job already exists (duplicate delivery)", claim.job_id)
        return JobOutcome(claim.job_id, "duplicate")
    except Exception as error:
        _discard(store, checkpoint)
        return _record_failure(strategy, claim, settings, error, enqueue, notify)


def error_problem(error: BaseException, *, permanent: bool) -> dict[str, Any]:
    slug, title = (
        ("job-error", "The job cannot run") if permanent else ("job-attempt-failed", "A job attempt failed")
    )
    return problem(
        slug,
        title,
        f"{type(error).__name__}: {error}",
        traceback=traceback.format_exception_only(error)[-1].strip(),
    )


def _record_failure(
    strategy: JobStrategy,
    claim: JobClaim,
    settings: Settings,
    error: Exception,
    enqueue: Enqueue,
    notify: Notify | None,
) -> JobOutcome:
    permanent = is_permanent(error)
    log.error(
        "job %s attempt %d failed%s",
        claim.job_id,
        claim.attempt,
        " permanently" if permanent else "",
        exc_info=error,
    )
    document = error_problem(error, permanent=permanent)
    try:
        outcome = _write(
            settings,
            notify,
            lambda session: commit_failure(
                session,
                claim,
                document,
                utcnow(),
                max_attempts=settings.max_attempts,
                retryable=not permanent,
            ),
        )
    except LostClaim as lost:
        log.warning("%s", lost)
        return JobOutcome(claim.job_id, "lost")
    if outcome == FailureOutcome.retry:
        enqueue(strategy.task_name, claim.model_id, retry_backoff_s(claim.attempt))
        return JobOutcome(claim.job_id, "retry")
    return JobOutcome(claim.job_id, "failed")


def _follow_up(
    strategy: JobStrategy, claim: JobClaim, version_id: str, settings: Settings, enqueue: Enqueue
) -> None:
    """After a committed success; a failure here only logs (the reaper finds queued work and due purges
    by itself)."""
    try:
        if strategy.purges:
            purge_due_checkpoints(
                settings.database_url, artifact_store(settings), utcnow(), actor=claim.worker_id
            )
            purge_derived_copies(
                settings.database_url,
                settings.cache_root,
                actor=claim.worker_id,
                model_id=claim.model_id,
                version_id=version_id,
            )
        with write_session(settings.database_url, None) as session:
            task = strategy.follow_up(session, claim.model_id)
        if task is not None:
            enqueue(task, claim.model_id, None)
    except Exception:
        log.exception("job %s: could not schedule the follow-up of model %s", claim.job_id, claim.model_id)


def _discard(store: ArtifactStore, url: str | None) -> None:
    """Remove an attempt's checkpoint that no row will point at; a store that cannot be reached only logs
    (the error being handled is the one to record)."""
    if url is None:
        return
    try:
        store.delete(url)
    except Exception:
        log.exception("could not remove %s", url)


def _discard_earlier_attempts(store: ArtifactStore, claim: JobClaim) -> None:
    """Housekeeping after the version is committed: a failure here must not turn success into a retry."""
    try:
        for url in discard_earlier_attempts(store, claim):
            log.info("job %s: removed %s of an earlier attempt", claim.job_id, url)
    except Exception:
        log.exception("job %s: could not remove earlier attempts' checkpoints", claim.job_id)
