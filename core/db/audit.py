"""The append-only, hash-chained audit log: the one place that appends to it and the one that checks it.

Each row stores `hash = sha256(prev_hash || canonical JSON of the row)` where the row is every column
except `id` and `hash`, and `prev_hash` is the previous row's hash (64 zeros for the first row). Appends
are serialised: on PostgreSQL by a transaction-scoped advisory lock, on SQLite by the write lock every
transaction takes (see core.db.session). `prev_hash` is unique, so a fork is refused by the database.

Group commit: a session marked with `defer_audit(session)` (the API's request creation) does not take the
lock at each append: its events are kept in the session and chained when it commits (a `before_commit`
hook takes the lock, reads the head and inserts them all), so the lock is held once per transaction, for
three statements and the commit, however many events and however long the transaction. The API's
request batcher puts many requests in one transaction, so the chain's lock is taken once per batch."""

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from core.db.bulk import insert_rows
from core.db.models import AuditEvent, utcnow
from core.evidence import EVENT_FIELDS, GENESIS_HASH, canonical_json, event_hash

_PG_AUDIT_LOCK_KEY = 0x756E6C6561726E  # "unlearn"
DEFERRED_INFO_KEY = "audit_deferred"


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
    request_audit_failed = "request.audit_failed"
    job_escalated = "job.escalated"
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


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def defer_audit(session: Session) -> None:
    """Chain this session's audit events when it commits, under one lock for all of them (PostgreSQL;
    elsewhere appends stay immediate: SQLite's write lock serialises every transaction anyway)."""
    if DEFERRED_INFO_KEY in session.info or not _is_postgresql(session):
        return
    session.info[DEFERRED_INFO_KEY] = []
    event.listen(session, "before_commit", _chain_deferred)
    event.listen(session, "after_soft_rollback", _forget_deferred)


def _forget_deferred(session: Session, _previous: Any = None) -> None:
    session.info.get(DEFERRED_INFO_KEY, []).clear()


def _chain_deferred(session: Session) -> None:
    staged: list[dict[str, Any]] = session.info.get(DEFERRED_INFO_KEY, [])
    if not staged:
        return
    _lock_chain(session)
    previous = _last_hash(session)
    for row in staged:
        row["prev_hash"] = previous
        row["hash"] = previous = event_hash({**row, "created_at": _iso(row["created_at"])})
    insert_rows(session.connection(), AuditEvent.__table__, staged)
    staged.clear()


_STAGED: Any = AuditEvent(event="(staged: chained when the session commits)")
"""What `append_audit_event` returns for a deferred event (no caller reads it; an ORM object per event
would cost more than the event itself)."""


def _lock_chain(session: Session) -> None:
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_AUDIT_LOCK_KEY})


def _last_hash(session: Session) -> str:
    last = session.execute(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)).scalar()
    return last or GENESIS_HASH


_FLAT = (str, int, bool, type(None))


def _is_flat(data: dict[str, Any]) -> bool:
    """String keys and string, integer, boolean or null values: what JSON gives back unchanged (a float
    may not, and a nested value is checked by the round trip instead)."""
    return all(type(key) is str and isinstance(value, _FLAT) for key, value in data.items())


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
    In a session marked `defer_audit` the event is chained at commit instead (no lock now), and the
    returned event has no id, prev_hash nor hash yet.
    """
    # Round-trip data through JSON so the hashed value is exactly what the database gives back (flat data
    # of strings, integers, booleans and nulls comes back as it is: no round trip needed).
    data = dict(data) if data and _is_flat(data) else json.loads(canonical_json(data or {}))
    content = {
        "created_at": utcnow(),
        "event": str(event),
        "actor": actor,
        "request_id": request_id,
        "model_id": model_id,
        "version_id": version_id,
        "job_id": job_id,
        "data": data,
    }
    staged = session.info.get(DEFERRED_INFO_KEY)
    if staged is not None:
        staged.append(content)
        return _STAGED  # the row exists once the session commits
    if _is_postgresql(session):
        _lock_chain(session)
    row = AuditEvent(**content, prev_hash=_last_hash(session))
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
