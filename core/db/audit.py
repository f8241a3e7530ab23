"""The append-only, hash-chained audit log: the one place that appends to it and the one that checks it.

Each row stores `hash = sha256(prev_hash || canonical JSON of the row)` where the row is every column
except `id` and `hash`, and `prev_hash` is the previous row's hash (64 zeros for the first row). Appends
are serialised: on PostgreSQL by a transaction-scoped advisory lock, on SQLite by the write lock every
transaction takes (see core.db.session). `prev_hash` is unique, so a fork is refused by the database.
"""

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from core.db.models import AuditEvent, utcnow
from core.evidence import EVENT_FIELDS, GENESIS_HASH, canonical_json, event_hash

_PG_AUDIT_LOCK_KEY = 0x756E6C6561726E  # "unlearn"


class AuditEventType(StrEnum):
    dataset_registered = "dataset.registered"
    model_registered = "model.registered"
    model_training_requested = "model.training_requested"
    model_trained = "model.trained"
    model_training_failed = "model.training_failed"
    request_received = "request.received"
    request_cancel_requested = "request.cancel_requested"
    request_cancelled = "request.cancelled"
    request_succeeded = "request.succeeded"
    request_failed = "request.failed"
    job_started = "job.started"
    job_retried = "job.retried"
    job_finished = "job.finished"
    job_failed = "job.failed"
    version_created = "version.created"
    report_issued = "report.issued"
    checkpoint_deleted = "checkpoint.deleted"
    version_retired = "version.retired"
    checkpoint_purged = "checkpoint.purged"
    derived_data_purged = "derived_data.purged"
    api_key_created = "api_key.created"
    api_key_revoked = "api_key.revoked"


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def event_payload(event: AuditEvent) -> dict[str, Any]:
    """The hashed content of a row (all columns but `id` and `hash`)."""
    return {
        "created_at": _iso(event.created_at),
        "event": event.event,
        "actor": event.actor,
        "request_id": event.request_id,
        "model_id": event.model_id,
        "version_id": event.version_id,
        "job_id": event.job_id,
        "data": event.data,
        "prev_hash": event.prev_hash,
    }


def compute_event_hash(event: AuditEvent) -> str:
    return event_hash(event_payload(event))


def append_audit_event(
    session: Session,
    event: str,
    *,
    actor: str | None = None,
    request_id: str | None = None,
    model_id: str | None = None,
    version_id: str | None = None,
    job_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction (it becomes visible when the caller commits).

    Call it late in a transaction: on PostgreSQL it holds a lock that serialises appends until commit.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_AUDIT_LOCK_KEY})
    last_hash = session.execute(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)).scalar()
    # Round-trip data through JSON so the hashed value is exactly what the database gives back.
    row = AuditEvent(
        created_at=utcnow(),
        event=str(event),
        actor=actor,
        request_id=request_id,
        model_id=model_id,
        version_id=version_id,
        job_id=job_id,
        data=json.loads(canonical_json(data or {})),
        prev_hash=last_hash or GENESIS_HASH,
    )
    row.hash = compute_event_hash(row)
    session.add(row)
    session.flush()
    return row


_COLUMNS = ("id", *EVENT_FIELDS, "hash")


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str | None = None
    last_hash: str | None = None


def verify_audit_chain(session: Session, *, batch_size: int = 1000) -> ChainVerification:
    """Walk the chain in id order; report the first row whose link or hash does not hold."""
    expected_prev = GENESIS_HASH
    checked = 0
    last_id = 0
    columns = [getattr(AuditEvent, name) for name in _COLUMNS]
    while True:
        rows = session.execute(
            select(*columns).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(batch_size)
        ).all()
        if not rows:
            last_hash = None if checked == 0 else expected_prev
            return ChainVerification(ok=True, checked=checked, last_hash=last_hash)
        for values in rows:
            row = AuditEvent(**dict(zip(_COLUMNS, values, strict=True)))  # transient, never added
            if row.prev_hash != expected_prev:
                return ChainVerification(
                    False, checked, row.id, f"event {row.id}: prev_hash is not the previous event's hash"
                )
            if compute_event_hash(row) != row.hash:
                return ChainVerification(
                    False, checked, row.id, f"event {row.id} was altered: its content does not match its hash"
                )
            expected_prev = row.hash
            checked += 1
            last_id = row.id
