"""What to claim: the claim of a model's next unlearn or train job, in the caller's short transaction.

The database, not the broker, decides who runs what (DESIGN section 6). A claim starts by locking the
model row (`SELECT ... FOR UPDATE` on PostgreSQL; on SQLite every write transaction already holds the
database write lock, see `core.db.session`), so two workers can never both claim a model's work.

Order, for both kinds: a job already running with a fresh heartbeat wins (`busy`: a duplicate delivery
exits); a job left `running` by a dead worker or `queued` for a retry is resumed with attempts + 1, or
failed when it used up `max_attempts`; otherwise a new job starts.

Coalescing (unlearn): a job serves every queued request of the model that can share one run: requests
naming sample IDs with the same method and params. A class-wise request runs alone (one class per run).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from core import lifecycle
from core.db import (
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
)
from core.db.audit import canonical_json
from core.problems import problem
from core.request_params import allows_retrain
from unlearning.audit.acceptance import AcceptancePolicy


class ClaimStatus(StrEnum):
    claimed = "claimed"
    busy = "busy"  # another worker runs a job for this model and its heartbeat is fresh
    idle = "idle"  # nothing to do for this model
    not_ready = "not_ready"  # the model has no usable head version (training, or failed)
    waiting = "waiting"  # queued requests wait out the coalescing window (`retry_in_s`)


@dataclass(frozen=True)
class ClaimPolicy:
    """The settings a claim runs under."""

    heartbeat_stale_s: float
    max_attempts: int
    coalesce_window_s: float = 0.0
    """A new unlearn job starts once its oldest request has waited this long, so a burst of requests
    on the model shares one run; 0 starts at once."""
    acceptance: AcceptancePolicy = field(default_factory=AcceptancePolicy)
    retrain_fallback: bool = True


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
    content_sha256: str | None = None
    """Of an s3:// dataset's objects, recorded at registration (see `core.storage.mirror`)."""


@dataclass(frozen=True)
class JobClaim:
    """What a worker holds after a successful claim; (job_id, attempt, worker_id) is the fencing token."""

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
    acceptance: AcceptancePolicy = field(default_factory=AcceptancePolicy)
    retrain_allowed: bool = False
    """The acceptance ladder may end in an exact retrain (the deployment or the request allows it)."""

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
    retry_in_s: float | None = None
    """`waiting`: when to ask again."""


# -- the shared clock expressions (the claim and the reaper use the same ones) ----------------------------


def job_is_live(now: datetime, heartbeat_stale_s: float) -> ColumnElement[bool]:
    """A worker runs the job and heartbeats: nobody else may take it."""
    return and_(
        Job.status == JobStatus.running, Job.heartbeat_at >= now - timedelta(seconds=heartbeat_stale_s)
    )


def job_needs_a_worker(now: datetime, heartbeat_stale_s: float, grace_s: float) -> ColumnElement[bool]:
    """An open job nobody runs: `running` with a stale heartbeat, or `queued` for a retry whose backoff
    ended more than `grace_s` ago (its delayed message should have come by then)."""
    stale_before = now - timedelta(seconds=heartbeat_stale_s)
    return or_(
        and_(
            Job.status == JobStatus.running, or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale_before)
        ),
        and_(
            Job.status == JobStatus.queued,
            or_(Job.retry_at.is_(None), Job.retry_at < now - timedelta(seconds=grace_s)),
        ),
    )


# -- queries -----------------------------------------------------------------------------------------------


def lock_model(session: Session, model_id: str) -> Model | None:
    """The model row, locked for the rest of the transaction (serialises claims and result writes)."""
    return session.execute(select(Model).where(Model.id == model_id).with_for_update()).scalar_one_or_none()


def requests_where(session: Session, *where: ColumnElement[bool]) -> list[DeletionRequest]:
    """The requests matching `where`, oldest first (the order a job serves them in)."""
    return list(
        session.execute(
            select(DeletionRequest).where(*where).order_by(DeletionRequest.received_at, DeletionRequest.id)
        ).scalars()
    )


def active_requests_of_job(session: Session, job_id: str) -> list[DeletionRequest]:
    return requests_where(
        session,
        DeletionRequest.job_id == job_id,
        DeletionRequest.status.in_([RequestStatus.queued, RequestStatus.running]),
    )


def _open_jobs(
    session: Session, model_id: str, kind: JobKind, now: datetime, heartbeat_stale_s: float
) -> list[tuple[Job, bool]]:
    """The model's queued and running jobs of `kind`, oldest first, each with whether it is live."""
    rows = session.execute(
        select(Job, job_is_live(now, heartbeat_stale_s))
        .where(
            Job.model_id == model_id, Job.kind == kind, Job.status.in_([JobStatus.running, JobStatus.queued])
        )
        .order_by(Job.created_at, Job.id)
    ).all()
    return [(job, bool(live)) for job, live in rows]


def _busy(open_jobs: list[tuple[Job, bool]]) -> ClaimOutcome | None:
    for job, live in open_jobs:
        if live:
            return ClaimOutcome(ClaimStatus.busy, detail=f"job {job.id} runs on {job.worker_id}")
    return None


def _dataset_ref(session: Session, dataset_id: str) -> DatasetRef:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise LookupError(f"dataset {dataset_id!r} of the model does not exist")
    return DatasetRef(
        dataset.id,
        dataset.format,
        dataset.uri,
        dict(dataset.options or {}),
        dataset.num_classes,
        dataset.content_sha256,
    )


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


def _takeover_reason(job: Job) -> str:
    return (
        "previous worker stopped heartbeating" if job.status == JobStatus.running else "retry after an error"
    )


# -- unlearn -----------------------------------------------------------------------------------------------


def _coalescable(first: DeletionRequest, other: DeletionRequest) -> bool:
    return (
        first.kind == RequestKind.samples
        and other.kind == RequestKind.samples
        and first.method == other.method
        and canonical_json(first.params or {}) == canonical_json(other.params or {})
    )


def _without_cancelled(
    session: Session, requests: Iterable[DeletionRequest], now: datetime, actor: str
) -> list[DeletionRequest]:
    """Cancel the queued requests that asked for it; the others, in their order."""
    kept = []
    for request in requests:
        if request.cancel_requested and request.status == RequestStatus.queued:
            lifecycle.request_cancelled(session, request, now, actor=actor)
        else:
            kept.append(request)
    return kept


def _fail_waiting_on_unusable_model(
    session: Session,
    model: Model,
    open_jobs: list[tuple[Job, bool]],
    fresh: list[DeletionRequest],
    now: datetime,
    actor: str,
) -> None:
    error = problem(
        "model-not-usable",
        "The model has no usable version",
        f"model {model.id} failed to train: {(model.error or {}).get('detail', 'no detail')}",
        status=409,
    )
    for job, _ in open_jobs:
        for request in active_requests_of_job(session, job.id):
            lifecycle.request_failed(session, request, error, now, actor=actor)
        lifecycle.job_failed(session, job, error, now, actor=actor)
    for request in fresh:
        lifecycle.request_failed(session, request, error, now, actor=actor)


def claim_unlearn_job(
    session: Session, model_id: str, *, worker_id: str, now: datetime, policy: ClaimPolicy
) -> ClaimOutcome:
    """Claim the model's next unlearning job (see the module docstring)."""
    model = lock_model(session, model_id)
    if model is None:
        return ClaimOutcome(ClaimStatus.idle, detail=f"model {model_id!r} does not exist")
    open_jobs = _open_jobs(session, model_id, JobKind.unlearn, now, policy.heartbeat_stale_s)
    if busy := _busy(open_jobs):
        return busy

    fresh = _without_cancelled(
        session,
        requests_where(
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
            _fail_waiting_on_unusable_model(session, model, open_jobs, fresh, now, worker_id)
        return ClaimOutcome(ClaimStatus.not_ready, detail=f"model {model_id} is {model.status}")

    job: Job | None = None
    members: list[DeletionRequest] = []
    reason = ""
    for candidate, _ in open_jobs:
        attached = _without_cancelled(session, active_requests_of_job(session, candidate.id), now, worker_id)
        if not attached:
            lifecycle.job_cancelled(session, candidate, now, actor=worker_id, cancelled=[])
        elif candidate.attempts >= policy.max_attempts:
            error = _exhausted(candidate, policy.max_attempts)
            lifecycle.job_failed(session, candidate, error, now, actor=worker_id)
            for request in attached:
                lifecycle.request_failed(session, request, error, now, actor=worker_id)
        elif (
            job is None
        ):  # a second open job cannot exist (one running job per model; retries reuse their row)
            job, members, reason = candidate, attached, _takeover_reason(candidate)
    session.flush()  # finished candidates leave `running` before a new job may enter it (unique index)

    if job is None:
        if not fresh:
            return ClaimOutcome(ClaimStatus.idle, detail="no queued requests")
        waited_s = (now - fresh[0].received_at).total_seconds()
        if waited_s < policy.coalesce_window_s:
            remaining = policy.coalesce_window_s - waited_s
            detail = f"{len(fresh)} request(s) wait {remaining:.2f} s more for others to share their run"
            return ClaimOutcome(ClaimStatus.waiting, detail=detail, retry_in_s=remaining)
        job = lifecycle.job_created(session, model_id, JobKind.unlearn)
        members = [fresh.pop(0)]
        reason = "new"
    members += [request for request in fresh if _coalescable(members[0], request)]

    for request in members:
        lifecycle.request_started(request, job, now)
    lifecycle.job_started(
        session,
        job,
        worker_id=worker_id,
        now=now,
        reason=reason,
        request_ids=[request.id for request in members],
    )

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
        requests=tuple(
            RequestSpec(
                id=request.id,
                kind=request.kind,
                sample_ids=tuple(str(sample) for sample in (request.sample_ids or [])),
                forget_class=request.forget_class,
            )
            for request in members
        ),
        tombstones=tombstones,
        acceptance=policy.acceptance,
        retrain_allowed=policy.retrain_fallback or allows_retrain(first.params or {}),
    )
    return ClaimOutcome(ClaimStatus.claimed, claim)


# -- train -------------------------------------------------------------------------------------------------


def claim_train_job(
    session: Session, model_id: str, *, worker_id: str, now: datetime, policy: ClaimPolicy
) -> ClaimOutcome:
    """Claim the training of a base model (`models.status == training`); same rules as unlearning."""
    model = lock_model(session, model_id)
    if model is None:
        return ClaimOutcome(ClaimStatus.idle, detail=f"model {model_id!r} does not exist")
    if model.status != ModelStatus.training:
        return ClaimOutcome(ClaimStatus.idle, detail=f"model {model_id} is {model.status}")
    open_jobs = _open_jobs(session, model_id, JobKind.train, now, policy.heartbeat_stale_s)
    if busy := _busy(open_jobs):
        return busy
    job: Job | None = None
    reason = "new"
    for candidate, _ in open_jobs:
        if candidate.attempts >= policy.max_attempts:
            error = _exhausted(candidate, policy.max_attempts)
            lifecycle.job_failed(session, candidate, error, now, actor=worker_id)
            lifecycle.model_training_failed(session, model, error, actor=worker_id, job_id=candidate.id)
            return ClaimOutcome(ClaimStatus.idle, detail=error["detail"])
        if job is None:
            job, reason = candidate, _takeover_reason(candidate)
    if job is None:
        job = lifecycle.job_created(session, model_id, JobKind.train)
    lifecycle.job_started(session, job, worker_id=worker_id, now=now, reason=reason)
    claim = _claim_of(
        session, job, model, worker_id, method="train", train_params=dict(model.train_params or {})
    )
    return ClaimOutcome(ClaimStatus.claimed, claim)
