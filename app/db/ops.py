"""Database operations that both the API and the worker perform, written once."""

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.audit import AuditEventType, append_audit_event
from app.db.models import Model, ModelVersion, new_id


def add_model_version(
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
    move_head: bool = True,
) -> ModelVersion:
    """Insert the next version of `model`, move its head to it and append a `version.created` event.

    Runs in the caller's transaction. The version row is flushed before the head moves (the
    models <-> model_versions foreign keys form a cycle). `job_id` is unique on model_versions: a
    second version for the same job raises IntegrityError, which a duplicate delivery should treat
    as "already done".
    """
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
    if move_head:
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
