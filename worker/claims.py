"""Job state transitions in the database: claim, heartbeat, progress, and the final writes.

The database, not the broker, decides who runs what (DESIGN section 6). Every function here runs in
the caller's short transaction and starts by locking the model row (`SELECT ... FOR UPDATE` on
PostgreSQL; on SQLite every write transaction already holds the database write lock, see
`app.db.session`), so two workers can never both claim a model's work.

Fencing: a claim is identified by (job id, attempt, worker id). Every later write checks that the job
row still carries that triple and is `running`; if the reaper handed the job to another worker
(because this one's heartbeat went stale) the old worker's writes match no row and it stops without
writing anything. Checkpoints are keyed by job id *and* attempt for the same reason.

Coalescing: a job serves every queued request of the model that can share one run: requests naming
sample IDs with the same method and params. A class-wise request runs alone (one class per run).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db import (
    AuditEventType,
    AuditReport,
    Dataset,
    DeletionRequest,
    ForgottenSample,
    Job,
    JobKind,
    JobStatus,
    Model,
    ModelStatus,
    ModelVersion,
    RequestKind,
    RequestStatus,
    add_model_version,
    append_audit_event,
)

PROBLEM_BASE = "urn:unlearn:problem:"  # the prefix app.errors uses


def problem(kind: str, title: str, detail: str, *, status: int = 500, **extra: Any) -> dict[str, Any]:
    """An RFC 9457 problem object stored on a failed request/model/job."""
    return {"type": PROBLEM_BASE + kind, "title": title, "status": status, "detail": detail, **extra}


class ClaimStatus(StrEnum):
    claimed = "claimed"
    busy = "busy"  # another worker runs a job for this model and its heartbeat is fresh
    idle = "idle"  # nothing to do for this model
    not_ready = "not_ready"  # the model has no usable head version (training, or failed)


@dataclass(frozen=True)
class RequestSpec:
    id: str
    kind: str
    sample_ids: tuple[str, ...]
    forget_class: int | None


@dataclass(frozen=True)
class DatasetRef:
    id: str
    format: str
    uri: str | None
    options: dict[str, Any]
    num_classes: int


@dataclass(frozen=True)
class JobClaim:
    """What a worker holds after a successful claim; `attempt` is the fencing token."""

    job_id: str
    kind: str
    model_id: str
    worker_id: str
    attempt: int
    dataset: DatasetRef
    architecture: str
    parent_version_id: str | None = None
    parent_checkpoint_uri: str | None = None
    parent_sha256: str | None = None
    parent_forgotten_count: int = 0
    method: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    train_params: dict[str, Any] = field(default_factory=dict)
    requests: tuple[RequestSpec, ...] = ()
    tombstones: frozenset[str] = frozenset()

    @property
    def request_ids(self) -> list[str]:
        return [request.id for request in self.requests]

    @property
    def forget_class(self) -> int | None:
        classes = {request.forget_class for request in self.requests if request.kind == RequestKind.class_}
        return next(iter(classes)) if classes else None

    @property
    def forget_ids(self) -> list[str]:
        """Union of the requests' sample IDs in request order, without duplicates or tombstones."""
        ordered = dict.fromkeys(sample for request in self.requests for sample in request.sample_ids)
        return [sample for sample in ordered if sample not in self.tombstones]


@dataclass(frozen=True)
class ClaimOutcome:
    status: ClaimStatus
    claim: JobClaim | None = None
    detail: str = ""


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def lock_model(session: Session, model_id: str) -> Model | None:
    """The model row, locked for the rest of the transaction (serialises claims and result writes)."""
    return session.execute(select(Model).where(Model.id == model_id).with_for_update()).scalar_one_or_none()


def heartbeat_fresh(job: Job, now: datetime, stale_after_s: float) -> bool:
    return job.heartbeat_at is not None and now - job.heartbeat_at < timedelta(seconds=stale_after_s)


def _dataset_ref(session: Session, dataset_id: str) -> DatasetRef:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise LookupError(f"dataset {dataset_id!r} of the model does not exist")
    return DatasetRef(
        dataset.id, dataset.format, dataset.uri, dict(dataset.options or {}), dataset.num_classes
    )


def _spec(request: DeletionRequest) -> RequestSpec:
    return RequestSpec(
        id=request.id,
        kind=request.kind,
        sample_ids=tuple(str(sample) for sample in (request.sample_ids or [])),
        forget_class=request.forget_class,
    )


def _coalescable(first: DeletionRequest, other: DeletionRequest) -> bool:
    return (
        first.kind == RequestKind.samples
        and other.kind == RequestKind.samples
        and first.method == other.method
        and canonical(first.params or {}) == canonical(other.params or {})
    )


def _cancel_queued(session: Session, request: DeletionRequest, now: datetime, actor: str) -> None:
    request.status = RequestStatus.cancelled
    request.stage = "cancelled"
    request.finished_at = now
    request.job_id = None
    append_audit_event(
        session,
        AuditEventType.request_cancelled,
        actor=actor,
        request_id=request.id,
        model_id=request.model_id,
        data={"while": "queued"},
    )


def _fail_requests(
    session: Session,
    requests: Iterable[DeletionRequest],
    error: dict[str, Any],
    now: datetime,
    actor: str,
    job_id: str | None,
) -> list[str]:
    failed = []
    for request in requests:
        request.status = RequestStatus.failed
        request.error = error
        request.stage = "failed"
        request.finished_at = now
        failed.append(request.id)
        append_audit_event(
            session,
            AuditEventType.request_failed,
            actor=actor,
            request_id=request.id,
            model_id=request.model_id,
            job_id=job_id,
            data={"error": error},
        )
    return failed


def _active_requests_of_job(session: Session, job_id: str) -> list[DeletionRequest]:
    return list(
        session.execute(
            select(DeletionRequest)
            .where(
                DeletionRequest.job_id == job_id,
                DeletionRequest.status.in_([RequestStatus.queued, RequestStatus.running]),
            )
            .order_by(DeletionRequest.received_at, DeletionRequest.id)
        ).scalars()
    )


def _open_jobs(session: Session, model_id: str, kind: str) -> list[Job]:
    return list(
        session.execute(
            select(Job)
            .where(
                Job.model_id == model_id,
                Job.kind == kind,
                Job.status.in_([JobStatus.running, JobStatus.queued]),
            )
            .order_by(Job.created_at, Job.id)
        ).scalars()
    )


def _exhausted(job: Job, max_attempts: int) -> dict[str, Any]:
    last = job.error or {}
    detail = f"gave up after {job.attempts} attempts (max_attempts = {max_attempts})"
    if job.status == JobStatus.running:
        detail += f"; the last attempt's worker {job.worker_id!r} stopped heartbeating"
    elif last.get("detail"):
        detail += f"; last error: {last['detail']}"
    return problem(
        "job-failed", "Unlearning job failed", detail, attempts=job.attempts, last_error=last or None
    )


def _start_attempt(session: Session, job: Job, worker_id: str, now: datetime, reason: str) -> None:
    previous_worker = job.worker_id
    job.status = JobStatus.running
    job.worker_id = worker_id
    job.heartbeat_at = now
    job.attempts += 1
    job.started_at = job.started_at or now
    job.stage = "claimed"
    job.progress = 0.0
    if job.attempts > 1:
        append_audit_event(
            session,
            AuditEventType.job_retried,
            actor=worker_id,
            model_id=job.model_id,
            job_id=job.id,
            data={"attempt": job.attempts, "previous_worker": previous_worker, "reason": reason},
        )
    append_audit_event(
        session,
        AuditEventType.job_started,
        actor=worker_id,
        model_id=job.model_id,
        job_id=job.id,
        data={"attempt": job.attempts, "kind": job.kind, "request_ids": list(job.request_ids or [])},
    )


def claim_unlearn_job(
    session: Session,
    model_id: str,
    *,
    worker_id: str,
    now: datetime,
    heartbeat_stale_s: float,
    max_attempts: int,
) -> ClaimOutcome:
    """Claim the model's unlearning work in the caller's transaction (see the module docstring).

    Order: a job already running with a fresh heartbeat wins (`busy`: a duplicate delivery exits); a
    job left `running` by a dead worker or `queued` for a retry is resumed with attempts + 1, or failed
    when it used up `max_attempts`; otherwise a new job takes the oldest queued request and every
    queued request that can share its run.
    """
    model = lock_model(session, model_id)
    if model is None:
        return ClaimOutcome(ClaimStatus.idle, detail=f"model {model_id!r} does not exist")
    open_jobs = _open_jobs(session, model_id, JobKind.unlearn)
    for open_job in open_jobs:
        if open_job.status == JobStatus.running and heartbeat_fresh(open_job, now, heartbeat_stale_s):
            return ClaimOutcome(ClaimStatus.busy, detail=f"job {open_job.id} runs on {open_job.worker_id}")

    fresh = list(
        session.execute(
            select(DeletionRequest)
            .where(
                DeletionRequest.model_id == model_id,
                DeletionRequest.status == RequestStatus.queued,
                DeletionRequest.job_id.is_(None),
            )
            .order_by(DeletionRequest.received_at, DeletionRequest.id)
        ).scalars()
    )
    for request in [request for request in fresh if request.cancel_requested]:
        _cancel_queued(session, request, now, worker_id)
        fresh.remove(request)

    if model.status != ModelStatus.ready or model.head_version_id is None:
        if model.status == ModelStatus.failed:
            waiting = fresh + [r for job in open_jobs for r in _active_requests_of_job(session, job.id)]
            error = problem(
                "model-not-usable",
                "The model has no usable version",
                f"model {model_id} failed to train: {(model.error or {}).get('detail', 'no detail')}",
                status=409,
            )
            _fail_requests(session, waiting, error, now, worker_id, None)
            for open_job in open_jobs:
                open_job.status, open_job.finished_at, open_job.error = JobStatus.failed, now, error
        return ClaimOutcome(ClaimStatus.not_ready, detail=f"model {model_id} is {model.status}")

    job: Job | None = None
    members: list[DeletionRequest] = []
    reason = ""
    for candidate in open_jobs:
        attached = _active_requests_of_job(session, candidate.id)
        for request in [request for request in attached if request.cancel_requested]:
            _cancel_queued(session, request, now, worker_id)
            attached.remove(request)
        if not attached:
            candidate.status, candidate.finished_at = JobStatus.cancelled, now
            continue
        if candidate.attempts >= max_attempts:
            error = _exhausted(candidate, max_attempts)
            _fail_requests(session, attached, error, now, worker_id, candidate.id)
            candidate.status, candidate.finished_at, candidate.error = JobStatus.failed, now, error
            append_audit_event(
                session,
                AuditEventType.job_failed,
                actor=worker_id,
                model_id=model_id,
                job_id=candidate.id,
                data={"error": error, "final": True},
            )
            continue
        if job is None:
            reason = (
                "previous worker stopped heartbeating"
                if candidate.status == JobStatus.running
                else "retry after an error"
            )
            job, members = candidate, attached
        # A second open job cannot exist (one running job per model; retries reuse their row).
    session.flush()  # finished candidates leave `running` before a new job may enter it (unique index)

    if job is None:
        if not fresh:
            return ClaimOutcome(ClaimStatus.idle, detail="no queued requests")
        job = Job(
            model_id=model_id, kind=JobKind.unlearn, status=JobStatus.queued, attempts=0, request_ids=[]
        )
        session.add(job)
        session.flush()
        members = [fresh.pop(0)]
        reason = "new"
    members += [request for request in fresh if _coalescable(members[0], request)]

    for request in members:
        request.job_id = job.id
        request.status = RequestStatus.running
        request.started_at = request.started_at or now
        request.stage = "claimed"
        request.progress = 0.0
        request.error = None
    job.request_ids = list(dict.fromkeys([*(job.request_ids or []), *(request.id for request in members)]))
    _start_attempt(session, job, worker_id, now, reason)

    head = session.get(ModelVersion, model.head_version_id)
    assert head is not None
    tombstones = frozenset(
        session.execute(
            select(ForgottenSample.sample_id).where(ForgottenSample.model_id == model_id)
        ).scalars()
    )
    first = members[0]
    claim = JobClaim(
        job_id=job.id,
        kind=JobKind.unlearn,
        model_id=model_id,
        worker_id=worker_id,
        attempt=job.attempts,
        dataset=_dataset_ref(session, model.dataset_id),
        architecture=model.architecture,
        parent_version_id=head.id,
        parent_checkpoint_uri=head.checkpoint_uri,
        parent_sha256=head.sha256,
        parent_forgotten_count=len(tombstones),
        method=first.method,
        params=dict(first.params or {}),
        requests=tuple(_spec(request) for request in members),
        tombstones=tombstones,
    )
    return ClaimOutcome(ClaimStatus.claimed, claim)


def claim_train_job(
    session: Session,
    model_id: str,
    *,
    worker_id: str,
    now: datetime,
    heartbeat_stale_s: float,
    max_attempts: int,
) -> ClaimOutcome:
    """Claim the training of a base model (`models.status == training`); same rules as unlearning."""
    model = lock_model(session, model_id)
    if model is None:
        return ClaimOutcome(ClaimStatus.idle, detail=f"model {model_id!r} does not exist")
    if model.status != ModelStatus.training:
        return ClaimOutcome(ClaimStatus.idle, detail=f"model {model_id} is {model.status}")
    open_jobs = _open_jobs(session, model_id, JobKind.train)
    job: Job | None = None
    for candidate in open_jobs:
        if candidate.status == JobStatus.running and heartbeat_fresh(candidate, now, heartbeat_stale_s):
            return ClaimOutcome(ClaimStatus.busy, detail=f"job {candidate.id} runs on {candidate.worker_id}")
        if candidate.attempts >= max_attempts:
            error = _exhausted(candidate, max_attempts)
            candidate.status, candidate.finished_at, candidate.error = JobStatus.failed, now, error
            _fail_model(session, model, error, now, worker_id, candidate.id)
            return ClaimOutcome(ClaimStatus.idle, detail=error["detail"])
        job = job or candidate
    reason = "previous worker stopped heartbeating" if job and job.status == JobStatus.running else "retry"
    if job is None:
        job = Job(model_id=model_id, kind=JobKind.train, status=JobStatus.queued, attempts=0, request_ids=[])
        session.add(job)
        session.flush()
        reason = "new"
    _start_attempt(session, job, worker_id, now, reason)
    claim = JobClaim(
        job_id=job.id,
        kind=JobKind.train,
        model_id=model_id,
        worker_id=worker_id,
        attempt=job.attempts,
        dataset=_dataset_ref(session, model.dataset_id),
        architecture=model.architecture,
        method="train",
        train_params=dict(model.train_params or {}),
    )
    return ClaimOutcome(ClaimStatus.claimed, claim)


def _fail_model(
    session: Session, model: Model, error: dict[str, Any], now: datetime, actor: str, job_id: str
) -> None:
    model.status = ModelStatus.failed
    model.error = error
    append_audit_event(
        session,
        AuditEventType.model_training_failed,
        actor=actor,
        model_id=model.id,
        job_id=job_id,
        data={"error": error},
    )


def _fence(session: Session, claim: JobClaim) -> Job | None:
    """The job row if this claim still owns it (running, same attempt, same worker), else None."""
    return session.execute(
        select(Job)
        .where(
            Job.id == claim.job_id,
            Job.status == JobStatus.running,
            Job.attempts == claim.attempt,
            Job.worker_id == claim.worker_id,
        )
        .with_for_update()
    ).scalar_one_or_none()


def record_heartbeat(session: Session, claim: JobClaim, now: datetime) -> bool:
    """Refresh the heartbeat; False when the claim was lost (another worker took the job over)."""
    result = session.execute(
        update(Job)
        .where(
            Job.id == claim.job_id,
            Job.status == JobStatus.running,
            Job.attempts == claim.attempt,
            Job.worker_id == claim.worker_id,
        )
        .values(heartbeat_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record_progress(session: Session, claim: JobClaim, *, fraction: float, stage: str, now: datetime) -> bool:
    """Heartbeat plus progress/stage on the job and on every running request it serves."""
    fraction = min(max(float(fraction), 0.0), 1.0)
    result = session.execute(
        update(Job)
        .where(
            Job.id == claim.job_id,
            Job.status == JobStatus.running,
            Job.attempts == claim.attempt,
            Job.worker_id == claim.worker_id,
        )
        .values(heartbeat_at=now, progress=fraction, stage=stage[:64])
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    session.execute(
        update(DeletionRequest)
        .where(DeletionRequest.job_id == claim.job_id, DeletionRequest.status == RequestStatus.running)
        .values(progress=fraction, stage=stage[:64])
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


class LostClaim(Exception):
    """Another worker owns the job now (this one's heartbeat went stale); write nothing."""


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


def commit_unlearn_success(session: Session, claim: JobClaim, result: UnlearnResult, now: datetime) -> str:
    """ONE transaction: version, tombstones, requests succeeded, head moved, reports, audit events.

    Raises LostClaim if the job is no longer ours, HeadMoved if the head changed under us. A second
    version for the same job is impossible (`model_versions.job_id` is unique).
    """
    model = lock_model(session, claim.model_id)
    job = _fence(session, claim)
    if model is None or job is None:
        raise LostClaim(f"job {claim.job_id} attempt {claim.attempt} is no longer owned by {claim.worker_id}")
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
    version = add_model_version(
        session,
        model,
        checkpoint_uri=result.checkpoint_uri,
        sha256=result.sha256,
        size_bytes=result.size_bytes,
        method=claim.method,
        params=claim.params,
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
    requests = _active_requests_of_job(session, claim.job_id)
    for request in requests:
        request.status = RequestStatus.succeeded
        request.progress = 1.0
        request.stage = "done"
        request.finished_at = now
        request.result_version_id = version.id
        report = result.reports.get(request.id)
        if report is not None:
            session.add(
                AuditReport(request_id=request.id, version_id=version.id, report=report, created_at=now)
            )
    job.status = JobStatus.succeeded
    job.progress = 1.0
    job.stage = "done"
    job.finished_at = now
    job.error = None
    session.flush()
    for request in requests:
        if request.id in result.reports:
            append_audit_event(
                session,
                AuditEventType.report_issued,
                actor=claim.worker_id,
                request_id=request.id,
                model_id=model.id,
                version_id=version.id,
                job_id=claim.job_id,
                data=_report_digest(result.reports[request.id]),
            )
        append_audit_event(
            session,
            AuditEventType.request_succeeded,
            actor=claim.worker_id,
            request_id=request.id,
            model_id=model.id,
            version_id=version.id,
            job_id=claim.job_id,
            data={"forgotten": sum(1 for owner in new_tombstones.values() if owner == request.id)},
        )
    append_audit_event(
        session,
        AuditEventType.job_finished,
        actor=claim.worker_id,
        model_id=model.id,
        version_id=version.id,
        job_id=claim.job_id,
        data={
            "attempt": claim.attempt,
            "request_ids": [r.id for r in requests],
            "version_number": version.number,
        },
    )
    return version.id


def _report_digest(report: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of a report: its hash, so the report cannot change unnoticed."""
    import hashlib

    return {"report_sha256": hashlib.sha256(canonical(report).encode()).hexdigest()}


def commit_cancelled(session: Session, claim: JobClaim, now: datetime) -> list[str]:
    """Cancelled requests end `cancelled`; the others the job served go back to the queue. No version."""
    job = _fence(session, claim)
    if job is None:
        raise LostClaim(f"job {claim.job_id} attempt {claim.attempt} is no longer owned by {claim.worker_id}")
    cancelled: list[str] = []
    for request in _active_requests_of_job(session, claim.job_id):
        if request.cancel_requested:
            request.status = RequestStatus.cancelled
            request.stage = "cancelled"
            request.finished_at = now
            cancelled.append(request.id)
            append_audit_event(
                session,
                AuditEventType.request_cancelled,
                actor=claim.worker_id,
                request_id=request.id,
                model_id=claim.model_id,
                job_id=claim.job_id,
                data={"while": "running"},
            )
        else:
            request.status = RequestStatus.queued
            request.job_id = None
            request.progress = 0.0
            request.stage = "requeued: a request sharing its run was cancelled"
    job.status = JobStatus.cancelled
    job.stage = "cancelled"
    job.finished_at = now
    append_audit_event(
        session,
        AuditEventType.job_finished,
        actor=claim.worker_id,
        model_id=claim.model_id,
        job_id=claim.job_id,
        data={"attempt": claim.attempt, "outcome": "cancelled", "cancelled": cancelled},
    )
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
    """After an exception: back to `queued` for another attempt, or failed for good after max_attempts.

    Requests keep pointing at the job while it waits for a retry, so the attempt count carries over.
    """
    job = _fence(session, claim)
    if job is None:
        raise LostClaim(f"job {claim.job_id} attempt {claim.attempt} is no longer owned by {claim.worker_id}")
    will_retry = retryable and job.attempts < max_attempts
    job.error = error
    append_audit_event(
        session,
        AuditEventType.job_failed,
        actor=claim.worker_id,
        model_id=claim.model_id,
        job_id=claim.job_id,
        data={"attempt": claim.attempt, "error": error, "final": not will_retry},
    )
    if will_retry:
        job.status = JobStatus.queued
        job.worker_id = None
        job.heartbeat_at = now  # the reaper's clock for "queued for a retry since"
        job.stage = f"retrying (attempt {job.attempts + 1} of {max_attempts})"
        for request in _active_requests_of_job(session, claim.job_id):
            request.status = RequestStatus.queued
            request.stage = job.stage
            request.progress = 0.0
        return FailureOutcome.retry
    job.status = JobStatus.failed
    job.finished_at = now
    if claim.kind == JobKind.train:
        model = lock_model(session, claim.model_id)
        if model is not None:
            _fail_model(session, model, error, now, claim.worker_id, claim.job_id)
    else:
        final = problem(
            "job-failed",
            "Unlearning job failed",
            f"failed after {job.attempts} attempt(s): {error.get('detail', '')}",
            attempts=job.attempts,
            last_error=error,
        )
        _fail_requests(
            session, _active_requests_of_job(session, claim.job_id), final, now, claim.worker_id, claim.job_id
        )
    return FailureOutcome.failed


def commit_train_success(
    session: Session,
    claim: JobClaim,
    *,
    checkpoint_uri: str,
    sha256: str,
    size_bytes: int,
    metrics: dict[str, Any],
    now: datetime,
) -> str:
    """Version 1 of a trained base model, the head on it and the model `ready`, in one transaction."""
    model = lock_model(session, claim.model_id)
    job = _fence(session, claim)
    if model is None or job is None:
        raise LostClaim(f"job {claim.job_id} attempt {claim.attempt} is no longer owned by {claim.worker_id}")
    version = add_model_version(
        session,
        model,
        checkpoint_uri=checkpoint_uri,
        sha256=sha256,
        size_bytes=size_bytes,
        method="train",
        params=claim.train_params,
        parent_id=None,
        forgotten_count=0,
        metrics=metrics,
        job_id=claim.job_id,
        actor=claim.worker_id,
    )
    model.status = ModelStatus.ready
    model.error = None
    job.status = JobStatus.succeeded
    job.progress = 1.0
    job.stage = "done"
    job.finished_at = now
    append_audit_event(
        session,
        AuditEventType.model_trained,
        actor=claim.worker_id,
        model_id=model.id,
        version_id=version.id,
        job_id=claim.job_id,
        data={"sha256": sha256, "metrics": metrics},
    )
    return version.id


def queued_request_count(session: Session, model_id: str) -> int:
    """Requests of the model still waiting for a job (what the task loops on)."""
    return len(
        session.execute(
            select(DeletionRequest.id).where(
                DeletionRequest.model_id == model_id, DeletionRequest.status == RequestStatus.queued
            )
        ).all()
    )
