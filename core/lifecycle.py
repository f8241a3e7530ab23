"""Every state change of a deletion request, a job, a model and a model version: the one place.

Each entity has a table of allowed transitions (`REQUEST_TRANSITIONS`, `JOB_TRANSITIONS`,
`MODEL_TRANSITIONS`; `None` is "does not exist yet") and one function per transition. A function checks
the move against the table (`IllegalTransition` otherwise), then sets the status together with what
goes with it (stage, progress, timestamps, links to jobs and versions) and appends the audit event, all
in the caller's transaction. Nothing else assigns a status: a new outcome is a row in a table and a
function here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db.audit import AuditEventType, append_audit_event
from core.db.models import (
    DeletionRequest,
    Job,
    JobKind,
    JobStatus,
    Model,
    ModelStatus,
    ModelVersion,
    RequestStatus,
    VersionState,
    new_id,
)

Q, R, S, F, C = (
    RequestStatus.queued,
    RequestStatus.running,
    RequestStatus.succeeded,
    RequestStatus.failed,
    RequestStatus.cancelled,
)
REQUEST_TRANSITIONS: Mapping[tuple[RequestStatus | None, RequestStatus], str] = {
    (None, Q): "request_received",
    (Q, R): "request_started",
    (R, R): "request_started",  # its job was taken over from a worker whose heartbeat went stale
    (Q, C): "request_cancelled",
    (Q, F): "request_failed",  # its model failed to train, or its job gave up while it waited for a retry
    (R, Q): "request_requeued",  # a retry, or a request that shared its run with a cancelled one
    (R, S): "request_succeeded",
    (R, F): "request_failed",
    (R, C): "request_cancelled",
}
"""(from, to) -> the function of this module that makes the move."""

JQ, JR, JS, JF, JC = (
    JobStatus.queued,
    JobStatus.running,
    JobStatus.succeeded,
    JobStatus.failed,
    JobStatus.cancelled,
)
JOB_TRANSITIONS: Mapping[tuple[JobStatus | None, JobStatus], str] = {
    (None, JQ): "job_created",
    (JQ, JR): "job_started",
    (JR, JR): "job_started",  # taken over from a worker whose heartbeat went stale
    (JR, JQ): "job_retry_scheduled",
    (JR, JS): "job_succeeded",
    (JQ, JF): "job_failed",
    (JR, JF): "job_failed",
    (JQ, JC): "job_cancelled",
    (JR, JC): "job_cancelled",
}

MODEL_TRANSITIONS: Mapping[tuple[ModelStatus | None, ModelStatus], str] = {
    (None, ModelStatus.training): "model_created",
    (None, ModelStatus.ready): "model_created",  # an uploaded checkpoint
    (ModelStatus.training, ModelStatus.ready): "model_trained",
    (ModelStatus.training, ModelStatus.failed): "model_training_failed",
}

VERSION_TRANSITIONS: Mapping[tuple[VersionState | None, VersionState], str] = {
    (None, VersionState.live): "version_created",
    (VersionState.live, VersionState.retired): "versions_retired",
    (VersionState.retired, VersionState.purged): "version_purged",
}
"""A version is live until a later version forgets samples it holds; then retired (never served again)
and, after the grace period, purged (its checkpoint file deleted)."""

STAGE_MAX_CHARS = 64
"""Width of the `stage` columns."""


class IllegalTransition(Exception):
    """A state change the transition tables do not allow (a bug, or a race the caller lost)."""

    def __init__(self, entity: str, entity_id: str | None, current: str | None, target: str) -> None:
        super().__init__(f"{entity} {entity_id}: {current or '(new)'} -> {target} is not allowed")
        self.entity, self.entity_id, self.current, self.target = entity, entity_id, current, target


def _check(
    table: Mapping[tuple[Any, Any], str], entity: str, entity_id: str | None, current: Any, target: Any
) -> None:
    current = None if current is None else type(target)(current)
    if (current, target) not in table:
        raise IllegalTransition(entity, entity_id, current, target)


def _stage(text: str) -> str:
    return text[:STAGE_MAX_CHARS]


# -- deletion requests -------------------------------------------------------------------------------


def _request_to(request: DeletionRequest, target: RequestStatus, stage: str) -> None:
    _check(REQUEST_TRANSITIONS, "deletion request", request.id, request.status, target)
    request.status = target
    request.stage = _stage(stage)


def request_received(
    session: Session,
    request: DeletionRequest,
    *,
    received_at: datetime,
    actor: str | None,
    data: dict[str, Any],
) -> DeletionRequest:
    """A validated request enters the queue (the API's only write on creation)."""
    _check(REQUEST_TRANSITIONS, "deletion request", request.id, request.status, Q)
    request.status, request.progress, request.received_at = Q, 0.0, received_at
    session.add(request)
    session.flush()
    append_audit_event(
        session,
        AuditEventType.request_received,
        actor=actor,
        request_id=request.id,
        model_id=request.model_id,
        data=data,
    )
    return request


def request_started(request: DeletionRequest, job: Job, now: datetime) -> None:
    """A job (or its next attempt) claimed the request; the job's `job.started` event records it."""
    _request_to(request, R, "claimed")
    request.job_id = job.id
    request.started_at = request.started_at or now
    request.progress = 0.0
    request.error = None


def request_requeued(request: DeletionRequest, stage: str, *, keep_job: bool) -> None:
    """Back to the queue: for a retry of its job (`keep_job`: the attempt count carries over), or
    because a request sharing its run was cancelled (it waits for a new job)."""
    _request_to(request, Q, stage)
    request.progress = 0.0
    if not keep_job:
        request.job_id = None


def request_succeeded(
    session: Session,
    request: DeletionRequest,
    version: ModelVersion,
    now: datetime,
    *,
    actor: str,
    forgotten: int,
) -> None:
    _request_to(request, S, "done")
    request.progress = 1.0
    request.finished_at = now
    request.result_version_id = version.id
    append_audit_event(
        session,
        AuditEventType.request_succeeded,
        actor=actor,
        request_id=request.id,
        model_id=request.model_id,
        version_id=version.id,
        job_id=request.job_id,
        data={"forgotten": forgotten},
    )


def request_failed(
    session: Session, request: DeletionRequest, error: dict[str, Any], now: datetime, *, actor: str | None
) -> None:
    _request_to(request, F, "failed")
    request.error = error
    request.finished_at = now
    append_audit_event(
        session,
        AuditEventType.request_failed,
        actor=actor,
        request_id=request.id,
        model_id=request.model_id,
        job_id=request.job_id,
        data={"error": error},
    )


def request_cancelled(
    session: Session, request: DeletionRequest, now: datetime, *, actor: str | None
) -> None:
    """Ends the request `cancelled`: at once while queued (it leaves any job it waited in), or after
    the run it was part of stopped."""
    _check(REQUEST_TRANSITIONS, "deletion request", request.id, request.status, C)
    was = RequestStatus(request.status)
    job_id = request.job_id if was == R else None
    _request_to(request, C, "cancelled")
    request.cancel_requested = True
    request.finished_at = now
    if was == Q:
        request.job_id = None
    append_audit_event(
        session,
        AuditEventType.request_cancelled,
        actor=actor,
        request_id=request.id,
        model_id=request.model_id,
        job_id=job_id,
        data={"from": was.value},
    )


def request_cancel_requested(session: Session, request: DeletionRequest, *, actor: str | None) -> bool:
    """A running request asks its job to stop (no status change yet: the worker ends it). False when
    it had asked already."""
    if request.status != R:
        raise IllegalTransition("deletion request", request.id, request.status, "cancel requested")
    if request.cancel_requested:
        return False
    request.cancel_requested = True
    append_audit_event(
        session,
        AuditEventType.request_cancel_requested,
        actor=actor,
        request_id=request.id,
        model_id=request.model_id,
        job_id=request.job_id,
        data={},
    )
    return True


# -- jobs ----------------------------------------------------------------------------------------------


def _job_to(job: Job, target: JobStatus) -> None:
    _check(JOB_TRANSITIONS, "job", job.id, job.status, target)
    job.status = target


def _job_event(
    session: Session, event: AuditEventType, job: Job, actor: str | None, data: dict[str, Any]
) -> None:
    append_audit_event(session, event, actor=actor, model_id=job.model_id, job_id=job.id, data=data)


def job_created(session: Session, model_id: str, kind: JobKind) -> Job:
    job = Job(id=new_id("job"), model_id=model_id, kind=kind, attempts=0, request_ids=[], progress=0.0)
    _check(JOB_TRANSITIONS, "job", job.id, None, JQ)
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
    _check(JOB_TRANSITIONS, "job", job.id, job.status, JQ)
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
    job.stage = _stage(f"retrying (attempt {job.attempts + 1} of {max_attempts})")


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
    _check(JOB_TRANSITIONS, "job", job.id, job.status, JF)
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


# -- models and versions ---------------------------------------------------------------------------------


def model_created(
    session: Session,
    model: Model,
    status: ModelStatus,
    *,
    actor: str | None,
    event: AuditEventType,
    data: dict[str, Any],
) -> Model:
    """A new model: `training`, with the queued train job that trains it, or `ready` (an uploaded
    checkpoint; its version 1 follows)."""
    _check(MODEL_TRANSITIONS, "model", model.id, model.status, status)
    model.status = status
    session.add(model)
    session.flush()
    job = job_created(session, model.id, JobKind.train) if status == ModelStatus.training else None
    append_audit_event(
        session, event, actor=actor, model_id=model.id, job_id=job.id if job else None, data=data
    )
    return model


def model_trained(
    session: Session, model: Model, version: ModelVersion, *, actor: str, job_id: str, data: dict[str, Any]
) -> None:
    _check(MODEL_TRANSITIONS, "model", model.id, model.status, ModelStatus.ready)
    model.status = ModelStatus.ready
    model.error = None
    append_audit_event(
        session,
        AuditEventType.model_trained,
        actor=actor,
        model_id=model.id,
        version_id=version.id,
        job_id=job_id,
        data=data,
    )


def model_training_failed(
    session: Session, model: Model, error: dict[str, Any], *, actor: str, job_id: str | None
) -> None:
    _check(MODEL_TRANSITIONS, "model", model.id, model.status, ModelStatus.failed)
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


def version_created(
    session: Session,
    model: Model,
    *,
    checkpoint_uri: str,
    sha256: str,
    size_bytes: int,
    method: str | None = None,
    params: dict[str, Any] | None = None,
    parent_id: str | None = None,
    forgotten_count: int = 0,
    metrics: dict[str, Any] | None = None,
    job_id: str | None = None,
    version_id: str | None = None,
    actor: str | None = None,
) -> ModelVersion:
    """The next version of `model`, which becomes its head, with a `version.created` event.

    The version row is flushed before the head moves (models <-> model_versions foreign keys form a
    cycle). `job_id` is unique on model_versions: a second version for the same job raises
    IntegrityError, which a duplicate delivery treats as "already done".
    """
    _check(VERSION_TRANSITIONS, "model version", version_id, None, VersionState.live)
    last_number = session.execute(
        select(func.max(ModelVersion.number)).where(ModelVersion.model_id == model.id)
    ).scalar()
    number = (last_number or 0) + 1
    version = ModelVersion(
        id=version_id or new_id("ver"),
        model_id=model.id,
        parent_id=parent_id,
        number=number,
        method=method,
        params=params or {},
        checkpoint_uri=checkpoint_uri,
        sha256=sha256,
        size_bytes=size_bytes,
        forgotten_count=forgotten_count,
        metrics=metrics or {},
        job_id=job_id,
    )
    session.add(version)
    session.flush()
    model.head_version_id = version.id
    session.flush()
    append_audit_event(
        session,
        AuditEventType.version_created,
        actor=actor,
        model_id=model.id,
        version_id=version.id,
        job_id=job_id,
        data={
            "number": number,
            "sha256": sha256,
            "size_bytes": size_bytes,
            "method": method,
            "parent_id": parent_id,
            "forgotten_count": forgotten_count,
        },
    )
    return version


def versions_retired(
    session: Session,
    model: Model,
    successor: ModelVersion,
    now: datetime,
    *,
    grace_s: float,
    actor: str | None,
    request_ids: list[str],
) -> list[ModelVersion]:
    """Every live version of `model` but `successor` still holds what `successor` forgot: retire them
    (their checkpoints are no longer served) and schedule their purge after `grace_s`."""
    retired = list(
        session.execute(
            select(ModelVersion)
            .where(
                ModelVersion.model_id == model.id,
                ModelVersion.id != successor.id,
                ModelVersion.retired_at.is_(None),
            )
            .order_by(ModelVersion.number)
        ).scalars()
    )
    purge_after = now + timedelta(seconds=grace_s)
    for version in retired:
        _check(VERSION_TRANSITIONS, "model version", version.id, version.state, VersionState.retired)
        version.retired_at, version.retired_by, version.purge_after = now, successor.id, purge_after
        append_audit_event(
            session,
            AuditEventType.version_retired,
            actor=actor,
            model_id=model.id,
            version_id=version.id,
            data={
                "successor": successor.id,
                "request_ids": request_ids,
                "purge_after": purge_after.isoformat(),
            },
        )
    return retired


def version_purged(session: Session, version: ModelVersion, now: datetime, *, actor: str | None) -> None:
    """The retired version's checkpoint file is gone from storage (the caller deleted it first)."""
    _check(VERSION_TRANSITIONS, "model version", version.id, version.state, VersionState.purged)
    version.purged_at = now
    append_audit_event(
        session,
        AuditEventType.checkpoint_purged,
        actor=actor,
        model_id=version.model_id,
        version_id=version.id,
        data={
            "sha256": version.sha256,
            "checkpoint_uri": version.checkpoint_uri,
            "retired_by": version.retired_by,
        },
    )
