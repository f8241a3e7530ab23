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

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, select, update
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


def _cancel(
    session: Session, request: DeletionRequest, now: datetime, actor: str, job_id: str | None
) -> None:
    """End a request `cancelled`: while it runs in `job_id`, or (None) while queued, leaving its job."""
    request.status = RequestStatus.cancelled
    request.stage = "cancelled"
    request.finished_at = now
    if job_id is None:
        request.job_id = None
    append_audit_event(
        session,
        AuditEventType.request_cancelled,
        actor=actor,
        request_id=request.id,
        model_id=request.model_id,
        job_id=job_id,
        data={"while": "queued" if job_id is None else "running"},
    )


def _without_cancelled(
    session: Session, requests: Iterable[DeletionRequest], now: datetime, actor: str
) -> list[DeletionRequest]:
    """Cancel the queued requests that asked for it; the others, in their order."""
    kept = []
    for request in requests:
        if request.cancel_requested:
            _cancel(session, request, now, actor, None)
        else:
            kept.append(request)
    return kept


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


def _requests(session: Session, *where: ColumnElement[bool]) -> list[DeletionRequest]:
    """The requests matching `where`, oldest first (the order a job serves them in)."""
    return list(
        session.execute(
            select(DeletionRequest).where(*where).order_by(DeletionRequest.received_at, DeletionRequest.id)
        ).scalars()
    )


def _active_requests_of_job(session: Session, job_id: str) -> list[DeletionRequest]:
    return _requests(
        session,
        DeletionRequest.job_id == job_id,
        DeletionRequest.status.in_([RequestStatus.queued, RequestStatus.running]),
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


def _busy(job: Job, now: datetime, stale_after_s: float) -> ClaimOutcome | None:
    """`busy` when another worker runs `job` and still heartbeats."""
    if job.status == JobStatus.running and heartbeat_fresh(job, now, stale_after_s):
        return ClaimOutcome(ClaimStatus.busy, detail=f"job {job.id} runs on {job.worker_id}")
    return None


def _new_job(session: Session, model_id: str, kind: str) -> Job:
    job = Job(model_id=model_id, kind=kind, status=JobStatus.queued, attempts=0, request_ids=[])
    session.add(job)
    session.flush()
    return job


def _fail_job(job: Job, error: dict[str, Any], now: datetime) -> None:
    job.status, job.finished_at, job.error = JobStatus.failed, now, error


def _finish_job(job: Job, status: JobStatus, stage: str, now: datetime) -> None:
    job.status = status
    job.stage = stage
    job.finished_at = now


def _job_succeeded(job: Job, now: datetime) -> None:
    job.progress = 1.0
    _finish_job(job, JobStatus.succeeded, "done", now)


def _claim_of(session: Session, job: Job, model: Model, worker_id: str, **extra: Any) -> JobClaim:
    """The claim on `job` of `model` by `worker_id` (the current attempt); `extra`: kind-specific fields."""
    return JobClaim(
        job_id=job.id,
        kind=job.kind,
        model_id=model.id,
        worker_id=worker_id,
        attempt=job.attempts,
        dataset=_dataset_ref(session, model.dataset_id),
        architecture=model.architecture,
        **extra,
    )


def _job_event(session: Session, event: str, job: Job, actor: str, data: dict[str, Any]) -> None:
    append_audit_event(session, event, actor=actor, model_id=job.model_id, job_id=job.id, data=data)


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
        if busy := _busy(open_job, now, heartbeat_stale_s):
            return busy

    fresh = _without_cancelled(
        session,
        _requests(
            session,
            DeletionRequest.model_id == model_id,
            DeletionRequest.status == RequestStatus.queued,
            DeletionRequest.job_id.is_(None),
        ),
        now,
        worker_id,
    )

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
                _fail_job(open_job, error, now)
        return ClaimOutcome(ClaimStatus.not_ready, detail=f"model {model_id} is {model.status}")

    job: Job | None = None
    members: list[DeletionRequest] = []
    reason = ""
    for candidate in open_jobs:
        attached = _without_cancelled(session, _active_requests_of_job(session, candidate.id), now, worker_id)
        if not attached:
            candidate.status, candidate.finished_at = JobStatus.cancelled, now
            continue
        if candidate.attempts >= max_attempts:
            error = _exhausted(candidate, max_attempts)
            _fail_requests(session, attached, error, now, worker_id, candidate.id)
            _fail_job(candidate, error, now)
            _job_event(
                session, AuditEventType.job_failed, candidate, worker_id, {"error": error, "final": True}
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
        job = _new_job(session, model_id, JobKind.unlearn)
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
    claim = _claim_of(
        session,
        job,
        model,
        worker_id,
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
        if busy := _busy(candidate, now, heartbeat_stale_s):
            return busy
        if candidate.attempts >= max_attempts:
            error = _exhausted(candidate, max_attempts)
            _fail_job(candidate, error, now)
            _fail_model(session, model, error, now, worker_id, candidate.id)
            return ClaimOutcome(ClaimStatus.idle, detail=error["detail"])
        job = job or candidate
    reason = "previous worker stopped heartbeating" if job and job.status == JobStatus.running else "retry"
    if job is None:
        job = _new_job(session, model_id, JobKind.train)
        reason = "new"
    _start_attempt(session, job, worker_id, now, reason)
    claim = _claim_of(
        session, job, model, worker_id, method="train", train_params=dict(model.train_params or {})
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


def _owned_by(claim: JobClaim) -> tuple[ColumnElement[bool], ...]:
    """The fence: the job row is running and still carries this claim's attempt and worker."""
    return (
        Job.id == claim.job_id,
        Job.status == JobStatus.running,
        Job.attempts == claim.attempt,
        Job.worker_id == claim.worker_id,
    )


def _owned_job(session: Session, claim: JobClaim) -> Job:
    """The job row, locked, if this claim still owns it; else LostClaim."""
    job = session.execute(select(Job).where(*_owned_by(claim)).with_for_update()).scalar_one_or_none()
    if job is None:
        raise _lost(claim)
    return job


def _owned_model_and_job(session: Session, claim: JobClaim) -> tuple[Model, Job]:
    """The model row then the job row, locked in the order every writer takes them; else LostClaim."""
    model = lock_model(session, claim.model_id)
    job = _owned_job(session, claim)
    if model is None:
        raise _lost(claim)
    return model, job


def _lost(claim: JobClaim) -> LostClaim:
    return LostClaim(f"job {claim.job_id} attempt {claim.attempt} is no longer owned by {claim.worker_id}")


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
    if not _touch(session, claim, heartbeat_at=now, progress=fraction, stage=stage[:64]):
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
    html_reports: dict[str, str] = field(default_factory=dict)
    """request id -> path of its HTML audit page (`GET .../audit.html`)."""


def commit_unlearn_success(session: Session, claim: JobClaim, result: UnlearnResult, now: datetime) -> str:
    """ONE transaction: version, tombstones, requests succeeded, head moved, reports, audit events.

    Raises LostClaim if the job is no longer ours, HeadMoved if the head changed under us. A second
    version for the same job is impossible (`model_versions.job_id` is unique).
    """
    model, job = _owned_model_and_job(session, claim)
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
                AuditReport(
                    request_id=request.id,
                    version_id=version.id,
                    report=report,
                    html_uri=result.html_reports.get(request.id),
                    created_at=now,
                )
            )
    _job_succeeded(job, now)
    job.error = None
    session.flush()
    event = functools.partial(
        append_audit_event,
        session,
        actor=claim.worker_id,
        model_id=model.id,
        version_id=version.id,
        job_id=claim.job_id,
    )
    for request in requests:
        if request.id in result.reports:
            event(
                AuditEventType.report_issued,
                request_id=request.id,
                data=_report_digest(result.reports[request.id]),
            )
        event(
            AuditEventType.request_succeeded,
            request_id=request.id,
            data={"forgotten": sum(1 for owner in new_tombstones.values() if owner == request.id)},
        )
    event(
        AuditEventType.job_finished,
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
    job = _owned_job(session, claim)
    cancelled: list[str] = []
    for request in _active_requests_of_job(session, claim.job_id):
        if request.cancel_requested:
            _cancel(session, request, now, claim.worker_id, claim.job_id)
            cancelled.append(request.id)
        else:
            request.status = RequestStatus.queued
            request.job_id = None
            request.progress = 0.0
            request.stage = "requeued: a request sharing its run was cancelled"
    _finish_job(job, JobStatus.cancelled, "cancelled", now)
    _job_event(
        session,
        AuditEventType.job_finished,
        job,
        claim.worker_id,
        {"attempt": claim.attempt, "outcome": "cancelled", "cancelled": cancelled},
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
    job = _owned_job(session, claim)
    will_retry = retryable and job.attempts < max_attempts
    job.error = error
    _job_event(
        session,
        AuditEventType.job_failed,
        job,
        claim.worker_id,
        {"attempt": claim.attempt, "error": error, "final": not will_retry},
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
    model, job = _owned_model_and_job(session, claim)
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
    _job_succeeded(job, now)
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
