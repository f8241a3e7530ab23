"""What a job writes when its attempt ends: each outcome in ONE transaction, fenced by its claim.

- success (unlearn): new version, tombstones, requests succeeded, reports, head moved;
- success (train): version 1, the model `ready`;
- cancelled: cancelled requests end `cancelled`, the others go back to the queue; no version;
- failure: back to `queued` for another attempt, or failed for good (`core.jobs.retry` decides).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import lifecycle
from core.db import AuditEventType, AuditReport, ForgottenSample, JobKind, append_audit_event
from core.db.audit import canonical_json
from core.jobs.claim import JobClaim, active_requests_of_job, lock_model
from core.jobs.fence import owned_job, owned_model_and_job
from core.jobs.retry import retry_backoff_s, will_retry
from core.problems import problem


class HeadMoved(Exception):
    """The model's head is not the version this job started from; the job must run again."""


@dataclass(frozen=True)
class UnlearnResult:
    checkpoint_uri: str
    sha256: str
    size_bytes: int
    metrics: dict[str, Any]
    reports: dict[str, dict[str, Any]]
    """request id -> audit report JSON."""
    forgotten: dict[str, str]
    """sample id -> id of the request it is forgotten for (the new tombstones)."""
    version_id: str | None = None
    """The id the new version gets (the reports' provenance names it before the row exists)."""
    html_reports: dict[str, str] = field(default_factory=dict)
    """request id -> path of its HTML audit page (`GET .../audit.html`)."""
    method: str | None = None
    """The method the kept model comes from (the acceptance ladder may have escalated to retrain)."""
    params: dict[str, Any] | None = None
    escalations: list[dict[str, Any]] = field(default_factory=list)
    """One record per rung climbed past the first (each a `job.escalated` event)."""
    audit_failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    """request id -> the verdict it failed on the last rung: it ends `audit_failed`."""


@dataclass(frozen=True)
class TrainResult:
    checkpoint_uri: str
    sha256: str
    size_bytes: int
    metrics: dict[str, Any]


def _report_digest(report: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of a report: its hash, so the report cannot change unnoticed."""
    return {"report_sha256": hashlib.sha256(canonical_json(report).encode()).hexdigest()}


def commit_unlearn_success(
    session: Session, claim: JobClaim, result: UnlearnResult, now: datetime, *, retire_grace_s: float = 0.0
) -> str:
    """The new version becomes the head and every earlier version, which still holds the forgotten
    samples, is retired (its purge due after `retire_grace_s`).

    Raises LostClaim if the job is no longer ours, HeadMoved if the head changed under us. A second
    version for the same job is impossible (`model_versions.job_id` is unique)."""
    model, job = owned_model_and_job(session, claim)
    if model.head_version_id != claim.parent_version_id:
        raise HeadMoved(f"head of {model.id} moved from {claim.parent_version_id} to {model.head_version_id}")
    already = (
        set(
            session.execute(
                select(ForgottenSample.sample_id).where(
                    ForgottenSample.model_id == model.id,
                    ForgottenSample.sample_id.in_(list(result.forgotten)),
                )
            ).scalars()
        )
        if result.forgotten
        else set()
    )
    new_tombstones = {
        sample: request for sample, request in result.forgotten.items() if sample not in already
    }
    for escalation in result.escalations:
        append_audit_event(
            session,
            AuditEventType.job_escalated,
            actor=claim.worker_id,
            model_id=model.id,
            job_id=claim.job_id,
            data=escalation,
        )
    version = lifecycle.version_created(
        session,
        model,
        checkpoint_uri=result.checkpoint_uri,
        sha256=result.sha256,
        size_bytes=result.size_bytes,
        method=result.method or claim.method,
        params=claim.params if result.params is None else result.params,
        parent_id=claim.parent_version_id,
        forgotten_count=claim.parent_forgotten_count + len(new_tombstones),
        metrics=result.metrics,
        job_id=claim.job_id,
        version_id=result.version_id,
        actor=claim.worker_id,
    )
    session.add_all(
        ForgottenSample(
            model_id=model.id, sample_id=sample, request_id=request, version_id=version.id, created_at=now
        )
        for sample, request in new_tombstones.items()
    )
    requests = active_requests_of_job(session, claim.job_id)
    lifecycle.versions_retired(
        session,
        model,
        version,
        now,
        grace_s=retire_grace_s,
        actor=claim.worker_id,
        request_ids=[request.id for request in requests],
    )
    for request in requests:
        report = result.reports.get(request.id)
        if report is not None:
            session.add(
                AuditReport(
                    request_id=request.id,
                    version_id=version.id,
                    report=report,
                    html_uri=result.html_reports.get(request.id),
                    created_at=now,
                )
            )
            session.flush()
            append_audit_event(
                session,
                AuditEventType.report_issued,
                actor=claim.worker_id,
                request_id=request.id,
                model_id=model.id,
                version_id=version.id,
                job_id=claim.job_id,
                data=_report_digest(report),
            )
        failed = result.audit_failed.get(request.id)
        if failed is not None:
            rungs = len(result.escalations) + 1
            error = problem(
                "audit-failed",
                "The audit did not pass the acceptance policy",
                f"{failed['test']}: {failed['reason']} (after {rungs} rung(s); no retrain allowed)",
                status=422,
                verdict=failed,
            )
            lifecycle.request_audit_failed(session, request, version, error, now, actor=claim.worker_id)
            continue
        forgotten = sum(1 for owner in new_tombstones.values() if owner == request.id)
        lifecycle.request_succeeded(
            session, request, version, now, actor=claim.worker_id, forgotten=forgotten
        )
    lifecycle.job_succeeded(
        session,
        job,
        now,
        actor=claim.worker_id,
        data={
            "attempt": claim.attempt,
            "request_ids": [r.id for r in requests],
            "version_number": version.number,
        },
    )
    return version.id


def commit_train_success(session: Session, claim: JobClaim, result: TrainResult, now: datetime) -> str:
    """Version 1 of a trained base model, the head on it and the model `ready`."""
    model, job = owned_model_and_job(session, claim)
    version = lifecycle.version_created(
        session,
        model,
        checkpoint_uri=result.checkpoint_uri,
        sha256=result.sha256,
        size_bytes=result.size_bytes,
        method="train",
        params=claim.train_params,
        metrics=result.metrics,
        job_id=claim.job_id,
        actor=claim.worker_id,
    )
    lifecycle.job_succeeded(
        session, job, now, actor=claim.worker_id, data={"attempt": claim.attempt, "version_number": 1}
    )
    lifecycle.model_trained(
        session,
        model,
        version,
        actor=claim.worker_id,
        job_id=claim.job_id,
        data={"sha256": result.sha256, "metrics": result.metrics},
    )
    return version.id


def commit_cancelled(session: Session, claim: JobClaim, now: datetime) -> list[str]:
    """Returns the ids of the requests that ended `cancelled`."""
    job = owned_job(session, claim)
    cancelled: list[str] = []
    for request in active_requests_of_job(session, claim.job_id):
        if request.cancel_requested:
            lifecycle.request_cancelled(session, request, now, actor=claim.worker_id)
            cancelled.append(request.id)
        else:
            lifecycle.request_requeued(
                request, "requeued: a request sharing its run was cancelled", keep_job=False
            )
    lifecycle.job_cancelled(session, job, now, actor=claim.worker_id, cancelled=cancelled)
    return cancelled


class FailureOutcome(StrEnum):
    retry = "retry"
    failed = "failed"


def commit_failure(
    session: Session,
    claim: JobClaim,
    error: dict[str, Any],
    now: datetime,
    *,
    max_attempts: int,
    retryable: bool = True,
) -> FailureOutcome:
    """After an exception: back to `queued` for another attempt, or failed for good.

    Requests keep pointing at the job while it waits for a retry, so the attempt count carries over.
    """
    job = owned_job(session, claim)
    if will_retry(attempts=job.attempts, max_attempts=max_attempts, permanent=not retryable):
        lifecycle.job_retry_scheduled(
            session,
            job,
            error,
            now,
            actor=claim.worker_id,
            backoff_s=retry_backoff_s(job.attempts),
            max_attempts=max_attempts,
        )
        for request in active_requests_of_job(session, claim.job_id):
            lifecycle.request_requeued(request, job.stage or "retrying", keep_job=True)
        return FailureOutcome.retry
    lifecycle.job_failed(session, job, error, now, actor=claim.worker_id)
    if claim.kind == JobKind.train:
        model = lock_model(session, claim.model_id)
        if model is not None:
            lifecycle.model_training_failed(session, model, error, actor=claim.worker_id, job_id=claim.job_id)
    else:
        final = problem(
            "job-failed",
            "Unlearning job failed",
            f"failed after {job.attempts} attempt(s): {error.get('detail', '')}",
            attempts=job.attempts,
            last_error=error,
        )
        for request in active_requests_of_job(session, claim.job_id):
            lifecycle.request_failed(session, request, final, now, actor=claim.worker_id)
    return FailureOutcome.failed
