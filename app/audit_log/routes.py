from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from app.api.deps import SettingsDep, page_limit
from app.auth import AuditRead
from app.db.audit import verify_audit_chain
from app.db.models import AuditEvent
from app.db.session import SessionDep
from app.pagination import decode_cursor, encode_cursor
from app.schemas import Cursor, Limit, Page

router = APIRouter(prefix="/v1/audit-log", tags=["audit log"])


class AuditEventOut(BaseModel):
    id: int
    created_at: datetime
    event: str
    actor: str | None
    request_id: str | None
    model_id: str | None
    version_id: str | None
    job_id: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str


class ChainVerificationOut(BaseModel):
    ok: bool
    checked: int
    first_bad_id: int | None
    reason: str | None
    last_hash: str | None


@router.get("", response_model=Page[AuditEventOut])
def list_events(
    session: SessionDep,
    settings: SettingsDep,
    _: AuditRead,
    request_id: str | None = Query(default=None, max_length=40),
    model_id: str | None = Query(default=None, max_length=40),
    event: str | None = Query(default=None, max_length=64),
    cursor: Cursor = None,
    limit: Limit = None,
) -> Page[AuditEventOut]:
    """Events in chain order (oldest first)."""
    limit = page_limit(settings, limit)
    filters = {"request_id": request_id, "model_id": model_id, "event": event}
    query = select(AuditEvent).order_by(AuditEvent.id)
    if request_id is not None:
        query = query.where(AuditEvent.request_id == request_id)
    if model_id is not None:
        query = query.where(AuditEvent.model_id == model_id)
    if event is not None:
        query = query.where(AuditEvent.event == event)
    if cursor:
        (last_id,) = decode_cursor(settings.server_secret, "audit-log", filters, cursor, (int,))
        query = query.where(AuditEvent.id > last_id)
    rows = session.execute(query.limit(limit + 1)).scalars().all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(settings.server_secret, "audit-log", filters, [rows[-1].id])
    return Page(
        data=[AuditEventOut.model_validate(r, from_attributes=True) for r in rows], next_cursor=next_cursor
    )


@router.get("/verify", response_model=ChainVerificationOut)
def verify(session: SessionDep, _: AuditRead) -> ChainVerificationOut:
    """Walk the whole chain; `ok: false` names the first event whose link or content does not hold."""
    result = verify_audit_chain(session)
    return ChainVerificationOut(
        ok=result.ok,
        checked=result.checked,
        first_bad_id=result.first_bad_id,
        reason=result.reason,
        last_hash=result.last_hash,
    )
