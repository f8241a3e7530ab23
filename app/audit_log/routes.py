from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from app.api.deps import SessionDep, SettingsDep, page_limit
from app.auth import AuditRead
from app.listing import keyset_page
from app.schemas import Cursor, Limit, Page
from core.db.audit import verify_audit_chain
from core.db.models import AuditEvent

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
    filters = {"request_id": request_id, "model_id": model_id, "event": event}
    query = select(AuditEvent)
    if request_id is not None:
        query = query.where(AuditEvent.request_id == request_id)
    if model_id is not None:
        query = query.where(AuditEvent.model_id == model_id)
    if event is not None:
        query = query.where(AuditEvent.event == event)
    return keyset_page(
        session,
        query,
        [(AuditEvent.id, int)],
        lambda r: AuditEventOut.model_validate(r, from_attributes=True),
        cursor=cursor,
        limit=page_limit(settings, limit),
        secret=settings.server_secret,
        resource="audit-log",
        filters=filters,
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
