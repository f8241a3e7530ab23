"""The state changes of a deletion request."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from core.callbacks import owe_callback
from core.db.audit import AuditEventType, append_audit_event
from core.db.bulk import fill_defaults, insert_rows
from core.db.models import (
    DeletionRequest,
    Job,
    ModelVersion,
    RequestKind,
    RequestStatus,
)
from core.lifecycle.tables import (
    REQUEST_TRANSITIONS,
    C,
    F,
    IllegalTransition,
    Q,
    R,
    S,
    check,
    stage_text,
)


def _request_to(request: DeletionRequest, target: RequestStatus, stage: str) -> None:
    check(REQUEST_TRANSITIONS, "deletion request", request.id, request.status, target)
    changed = request.status != target
    request.status = target
    request.stage = stage_text(stage)
    if changed:
        owe_callback(request)


def _event(
    session: Session,
    request: DeletionRequest,
    event: AuditEventType,
    actor: str | None,
    *,
    data: dict[str, Any],
    version_id: str | None = None,
    job_id: str | None = None,
) -> None:
    """The audit event of a request's transition (request and model named from the row)."""
    append_audit_event(
        session,
        event,
        actor=actor,
        request_id=request.id,
        model_id=request.model_id,
        version_id=version_id,
        job_id=job_id,
        data=data,
    )


NewRequest = dict[str, Any]
"""A new deletion request as its row: column name -> value (`id` set; a column left out takes its default)."""


def requests_received(session: Session, requests: Sequence[NewRequest], *, received_at: datetime) -> None:
    """Validated requests enter the queue (the API's only write on creation). Each row is completed in
    place (status queued, `received_at`, the columns' defaults: it then holds every column, as the
    database does) and all are stored with one bulk insert (`core.db.bulk`); each gets its
    `request.received` event, its actor the request's API key, and its callback if it has a URL.

    Rows, not ORM objects: the API answers from them, and at a thousand requests a call the objects
    cost more than everything else the call does (`core.db.bulk`). Load one (`session.get`) to change it."""
    table = DeletionRequest.__table__
    for request in requests:
        check(REQUEST_TRANSITIONS, "deletion request", request["id"], request.get("status"), Q)
    for request in requests:
        request.update(status=Q, progress=0.0, received_at=received_at)
    columns = fill_defaults(table, requests)
    insert_rows(session.connection(), table, requests, columns)
    for request in requests:
        if request["callback_url"]:
            owe_callback(request, session)
        data = {
            "kind": RequestKind(request["kind"]).value,
            "sample_count": len(request["sample_ids"]) if request["sample_ids"] else None,
            "class": request["forget_class"],
            "method": request["method"],
            "external_ref": request["external_ref"],
            "due_at": request["due_at"].isoformat(),
            "request_hash": request["request_hash"],
        }
        append_audit_event(
            session,
            AuditEventType.request_received,
            actor=request["api_key_id"],
            request_id=request["id"],
            model_id=request["model_id"],
            data=data,
        )


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
    _event(
        session,
        request,
        AuditEventType.request_succeeded,
        actor,
        data={"forgotten": forgotten},
        version_id=version.id,
        job_id=request.job_id,
    )


def request_audit_failed(
    session: Session,
    request: DeletionRequest,
    version: ModelVersion,
    error: dict[str, Any],
    now: datetime,
    *,
    actor: str,
) -> None:
    """Its run ended without an audit that passes the acceptance policy, and no rung is left: the new
    version is the best the service could do and is kept, but the request gets no certificate."""
    _request_to(request, RequestStatus.audit_failed, "audit failed")
    request.progress = 1.0
    request.error = error
    request.finished_at = now
    request.result_version_id = version.id
    _event(
        session,
        request,
        AuditEventType.request_audit_failed,
        actor,
        data={"error": error},
        version_id=version.id,
        job_id=request.job_id,
    )


def request_failed(
    session: Session, request: DeletionRequest, error: dict[str, Any], now: datetime, *, actor: str | None
) -> None:
    _request_to(request, F, "failed")
    request.error = error
    request.finished_at = now
    _event(
        session, request, AuditEventType.request_failed, actor, data={"error": error}, job_id=request.job_id
    )


def request_cancelled(
    session: Session, request: DeletionRequest, now: datetime, *, actor: str | None
) -> None:
    """Ends the request `cancelled`: at once while queued (it leaves any job it waited in), or after
    the run it was part of stopped."""
    check(REQUEST_TRANSITIONS, "deletion request", request.id, request.status, C)
    was = RequestStatus(request.status)
    job_id = request.job_id if was == R else None
    _request_to(request, C, "cancelled")
    request.cancel_requested = True
    request.finished_at = now
    if was == Q:
        request.job_id = None
    _event(session, request, AuditEventType.request_cancelled, actor, data={"from": was.value}, job_id=job_id)


def request_cancel_requested(session: Session, request: DeletionRequest, *, actor: str | None) -> bool:
    """A running request asks its job to stop (no status change yet: the worker ends it). False when
    it had asked already."""
    if request.status != R:
        raise IllegalTransition("deletion request", request.id, request.status, "cancel requested")
    if request.cancel_requested:
        return False
    request.cancel_requested = True
    _event(session, request, AuditEventType.request_cancel_requested, actor, data={}, job_id=request.job_id)
    return True
