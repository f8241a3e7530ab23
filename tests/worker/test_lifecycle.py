"""The lifecycle module owns every state change: each allowed transition of the tables works through its
function, and every other (from, to) pair raises IllegalTransition without changing the row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session
from worker_helpers import SeededModel, add_request

from core import lifecycle
from core.db import (
    AuditEventType,
    DeletionRequest,
    Job,
    JobKind,
    JobStatus,
    Model,
    ModelStatus,
    ModelVersion,
    RequestStatus,
    new_id,
    session_scope,
    utcnow,
)
from core.lifecycle import IllegalTransition

NOW = utcnow()
ERROR = {"type": "urn:unlearn:problem:test", "title": "t", "status": 500, "detail": "d"}


def _request_move(
    session: Session, seeded: SeededModel, target: RequestStatus
) -> Callable[[DeletionRequest], None]:
    version = session.get(ModelVersion, seeded.version_id)
    job = lifecycle.job_created(session, seeded.model_id, JobKind.unlearn)
    moves: dict[RequestStatus, Callable[[DeletionRequest], Any]] = {
        RequestStatus.queued: lambda r: (
            _receive(session, r)
            if r.status is None
            else lifecycle.request_requeued(r, "requeued", keep_job=True)
        ),
        RequestStatus.running: lambda r: lifecycle.request_started(r, job, NOW),
        RequestStatus.succeeded: lambda r: lifecycle.request_succeeded(
            session, r, version, NOW, actor="t", forgotten=0
        ),
        RequestStatus.failed: lambda r: lifecycle.request_failed(session, r, ERROR, NOW, actor="t"),
        RequestStatus.cancelled: lambda r: lifecycle.request_cancelled(session, r, NOW, actor="t"),
        RequestStatus.audit_failed: lambda r: lifecycle.request_audit_failed(
            session, r, version, ERROR, NOW, actor="t"
        ),
    }
    return moves[target]


def _receive(session: Session, request: DeletionRequest) -> None:
    """A new request enters the queue as its row (what the API stores); `request` then mirrors it."""
    columns = DeletionRequest.__table__.columns
    row = {column.name: getattr(request, column.key) for column in columns if column.key in vars(request)}
    lifecycle.requests_received(session, [row], received_at=NOW)
    request.status = session.get(DeletionRequest, request.id).status  # type: ignore[union-attr]


STATES_R = [None, *RequestStatus]


@pytest.mark.parametrize("target", list(RequestStatus))
@pytest.mark.parametrize("current", STATES_R)
def test_request_transitions(settings: Any, seeded_model: SeededModel, current: Any, target: Any) -> None:
    allowed = (current, target) in lifecycle.REQUEST_TRANSITIONS
    with session_scope(settings.database_url) as session:
        if current is None:
            request = DeletionRequest(
                id=new_id("req"),
                model_id=seeded_model.model_id,
                kind="samples",
                sample_ids=["x"],
                method="dau",
                params={},
                due_at=NOW,
                request_hash="0" * 64,
            )
            request.status = None  # type: ignore[assignment]
        else:
            request = session.get(
                DeletionRequest, add_request(settings.database_url, seeded_model.model_id, ["x"])
            )
            assert request is not None
            request.status = current
        move = _request_move(session, seeded_model, target)
        if allowed:
            move(request)
            assert request.status == target
        else:
            with pytest.raises(IllegalTransition):
                move(request)
            assert request.status == current
        session.rollback()


def _job_move(session: Session, target: JobStatus) -> Callable[[Job], Any]:
    moves: dict[JobStatus, Callable[[Job], Any]] = {
        JobStatus.queued: lambda j: lifecycle.job_retry_scheduled(
            session, j, ERROR, NOW, actor="t", backoff_s=1.0, max_attempts=3
        ),
        JobStatus.running: lambda j: lifecycle.job_started(session, j, worker_id="w", now=NOW, reason="test"),
        JobStatus.succeeded: lambda j: lifecycle.job_succeeded(session, j, NOW, actor="t", data={}),
        JobStatus.failed: lambda j: lifecycle.job_failed(session, j, ERROR, NOW, actor="t"),
        JobStatus.cancelled: lambda j: lifecycle.job_cancelled(session, j, NOW, actor="t", cancelled=[]),
    }
    return moves[target]


@pytest.mark.parametrize("target", list(JobStatus))
@pytest.mark.parametrize("current", [None, *JobStatus])
def test_job_transitions(settings: Any, seeded_model: SeededModel, current: Any, target: Any) -> None:
    allowed = (current, target) in lifecycle.JOB_TRANSITIONS
    with session_scope(settings.database_url) as session:
        if current is None and target == JobStatus.queued:
            assert lifecycle.job_created(session, seeded_model.model_id, JobKind.unlearn).status == target
            assert allowed
            session.rollback()
            return
        job = lifecycle.job_created(session, seeded_model.model_id, JobKind.unlearn)
        job.status = current  # type: ignore[assignment]
        move = _job_move(session, target)
        if allowed:
            move(job)
            assert job.status == target
        else:
            with pytest.raises(IllegalTransition):
                move(job)
            assert job.status == current
        session.rollback()


@pytest.mark.parametrize("target", list(ModelStatus))
@pytest.mark.parametrize("current", [None, *ModelStatus])
def test_model_transitions(settings: Any, seeded_model: SeededModel, current: Any, target: Any) -> None:
    allowed = (current, target) in lifecycle.MODEL_TRANSITIONS
    with session_scope(settings.database_url) as session:
        model = Model(id=new_id("mdl"), name="m", architecture="mlp", dataset_id=seeded_model.dataset_id)
        model.status = current  # type: ignore[assignment]
        version = session.get(ModelVersion, seeded_model.version_id)
        moves: dict[ModelStatus, Callable[[], Any]] = {
            ModelStatus.training: lambda: lifecycle.model_created(
                session, model, target, actor="t", event=AuditEventType.model_training_requested, data={}
            ),
            ModelStatus.ready: lambda: (
                lifecycle.model_created(
                    session, model, target, actor="t", event=AuditEventType.model_registered, data={}
                )
                if current is None
                else lifecycle.model_trained(session, model, version, actor="t", job_id="job_x", data={})
            ),
            ModelStatus.failed: lambda: lifecycle.model_training_failed(
                session, model, ERROR, actor="t", job_id=None
            ),
        }
        if current is not None:
            session.add(model)
            session.flush()
        if allowed:
            moves[target]()
            assert model.status == target
        else:
            with pytest.raises(IllegalTransition):
                moves[target]()
            assert model.status == current
        session.rollback()


def test_a_training_model_comes_with_its_queued_train_job(settings: Any, seeded_model: SeededModel) -> None:
    with session_scope(settings.database_url) as session:
        model = Model(id=new_id("mdl"), name="m", architecture="mlp", dataset_id=seeded_model.dataset_id)
        lifecycle.model_created(
            session,
            model,
            ModelStatus.training,
            actor="t",
            event=AuditEventType.model_training_requested,
            data={},
        )
        jobs = session.query(Job).filter(Job.model_id == model.id).all()
        assert [(job.kind, job.status) for job in jobs] == [(JobKind.train, JobStatus.queued)]
