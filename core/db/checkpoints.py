"""Signed checkpoints of the audit chain and exported slices of it.

A checkpoint signs the head of the chain (event id, hash, time) with the active key (`core.signing`),
as the document `core.evidence` defines and checks:

    {"format": "unlearn-service/audit-checkpoint/v1", "id": "ckp_...", "event_id": N, "hash": HEX,
     "signed_at": ISO-8601, "signature": {"algorithm": "EdDSA", "kid": ..., "sha256": ..., "value": ...}}

The API signs one when a certificate is issued (unless an earlier one already covers the certificate's
events) and, through `CheckpointSchedule`, every `checkpoint_interval_s` when the chain moved. Signing a
checkpoint appends no audit event (the head it signs stays the head). A log slice is a contiguous run of
events, exported exactly as hashed, with the checkpoints that fall on them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.audit import event_payload
from core.db.models import AuditCheckpoint, AuditEvent, new_id, utcnow
from core.db.session import session_scope
from core.evidence import CHECKPOINT_FORMAT, SLICE_FORMAT, checkpoint_content
from core.signing import KeyRing

log = logging.getLogger(__name__)

REASON_CERTIFICATE = "certificate"
REASON_SCHEDULE = "schedule"


def checkpoint_document(row: AuditCheckpoint) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "id": row.id,
        "event_id": row.event_id,
        "hash": row.event_hash,
        "signed_at": row.signed_at.isoformat(timespec="microseconds"),
        "signature": row.signature,
    }


def head_event(session: Session) -> AuditEvent | None:
    return session.execute(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)).scalar_one_or_none()


def sign_event(session: Session, keyring: KeyRing, event: AuditEvent, reason: str) -> AuditCheckpoint:
    """Sign `event` as a checkpoint, in the caller's transaction."""
    row = AuditCheckpoint(
        id=new_id("ckp"),
        event_id=event.id,
        event_hash=event.hash,
        signed_at=utcnow(),
        reason=reason,
        kid=keyring.active_kid,
        signature={},
    )
    row.signature = keyring.sign(checkpoint_content(checkpoint_document(row)))
    session.add(row)
    session.flush()
    return row


def sign_head(session: Session, keyring: KeyRing, reason: str = REASON_SCHEDULE) -> AuditCheckpoint | None:
    """Sign the head of the chain unless a checkpoint by a trusted key already signs it; None for an
    empty chain or an unmoved head."""
    head = head_event(session)
    if head is None or _trusted_checkpoint(session, keyring, head.id) is not None:
        return None
    return sign_event(session, keyring, head, reason)


def covering_checkpoint(session: Session, keyring: KeyRing, event_id: int) -> AuditCheckpoint:
    """The earliest checkpoint, by a key still trusted, at or after `event_id`; the head is signed now
    if there is none."""
    found = _trusted_checkpoint(session, keyring, event_id)
    if found is not None:
        return found
    head = head_event(session)
    if head is None or head.id < event_id:
        raise LookupError(f"audit event {event_id} is not in the chain")
    return sign_event(session, keyring, head, REASON_CERTIFICATE)


def _trusted_checkpoint(session: Session, keyring: KeyRing, event_id: int) -> AuditCheckpoint | None:
    return session.execute(
        select(AuditCheckpoint)
        .where(AuditCheckpoint.event_id >= event_id, AuditCheckpoint.kid.in_(list(keyring.keys.keys)))
        .order_by(AuditCheckpoint.event_id, AuditCheckpoint.signed_at)
        .limit(1)
    ).scalar_one_or_none()


def slice_event(event: AuditEvent) -> dict[str, Any]:
    """An event exactly as it was hashed, with its id and hash."""
    return {"id": event.id, **event_payload(event), "hash": event.hash}


def log_slice(session: Session, first_id: int, last_id: int) -> dict[str, Any]:
    """The events with first_id <= id <= last_id and the checkpoints that fall on them."""
    events = session.execute(
        select(AuditEvent).where(AuditEvent.id >= first_id, AuditEvent.id <= last_id).order_by(AuditEvent.id)
    ).scalars()
    checkpoints = session.execute(
        select(AuditCheckpoint)
        .where(AuditCheckpoint.event_id >= first_id, AuditCheckpoint.event_id <= last_id)
        .order_by(AuditCheckpoint.event_id, AuditCheckpoint.signed_at)
    ).scalars()
    return {
        "format": SLICE_FORMAT,
        "events": [slice_event(event) for event in events],
        "checkpoints": [checkpoint_document(row) for row in checkpoints],
    }


class CheckpointSchedule:
    """Signs the head every `interval_s` when it moved, in a daemon thread (`start`/`stop`)."""

    def __init__(
        self,
        database_url: str,
        keyring: Callable[[], KeyRing],
        interval_s: float,
        *,
        name: str = "checkpoints",
    ) -> None:
        self.database_url = database_url
        self.keyring = keyring
        self.interval_s = interval_s
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> AuditCheckpoint | None:
        with session_scope(self.database_url) as session:
            return sign_head(session, self.keyring(), REASON_SCHEDULE)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except Exception:  # the next tick tries again; the API keeps serving
                log.exception("signing a scheduled audit-log checkpoint failed")

    def start(self) -> None:
        if self.interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
