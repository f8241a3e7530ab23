"""The state changes of a model and of its versions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db.audit import AuditEventType, append_audit_event
from core.db.models import (
    JobKind,
    Model,
    ModelStatus,
    ModelVersion,
    VersionState,
    new_id,
)
from core.lifecycle.jobs import job_created
from core.lifecycle.tables import (
    MODEL_TRANSITIONS,
    VERSION_TRANSITIONS,
    check,
)


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
    check(MODEL_TRANSITIONS, "model", model.id, model.status, status)
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
    check(MODEL_TRANSITIONS, "model", model.id, model.status, ModelStatus.ready)
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
    check(MODEL_TRANSITIONS, "model", model.id, model.status, ModelStatus.failed)
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
    check(VERSION_TRANSITIONS, "model version", version_id, None, VersionState.live)
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
        check(VERSION_TRANSITIONS, "model version", version.id, version.state, VersionState.retired)
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
    check(VERSION_TRANSITIONS, "model version", version.id, version.state, VersionState.purged)
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
