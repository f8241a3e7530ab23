"""The audit log: its events, a walk over the whole chain, signed checkpoints of its head and exported
slices that anyone can check offline (`unlearn verify`).

The router's lifespan checks the signing keys at start-up (a misconfigured key stops the API from
starting) and runs the checkpoint schedule (`core.db.checkpoints.CheckpointSchedule`, every
`checkpoint_interval_s` when the chain moved).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.api.deps import SessionDep, SettingsDep, page_limit
from app.audit_log.schemas import AuditEventOut, ChainVerificationOut, Checkpoint, LogSlice
from app.auth import AuditRead
from app.certificates.keys import KeyRingDep
from app.certificates.service import certificate_slice_bounds
from app.errors import ProblemError, error_item, invalid
from app.listing import get_or_404, keyset_page
from app.schemas import Cursor, Limit, Page
from core.db.audit import verify_audit_chain
from core.db.checkpoints import CheckpointSchedule, checkpoint_document, log_slice
from core.db.models import AuditCheckpoint, AuditEvent, DeletionRequest
from core.signing import keyring_for


@asynccontextmanager
async def _checkpoint_schedule(app: FastAPI) -> AsyncIterator[None]:
    settings = app.state.settings
    keyring_for(settings)  # refuse to start without a usable signing key
    schedule = CheckpointSchedule(
        settings.database_url, lambda: keyring_for(settings), settings.checkpoint_interval_s
    )
    schedule.start()
    try:
        yield
    finally:
        schedule.stop()


router = APIRouter(prefix="/v1/audit-log", tags=["audit log"], lifespan=_checkpoint_schedule)


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


def _checkpoint_out(row: AuditCheckpoint) -> Checkpoint:
    return Checkpoint.model_validate(checkpoint_document(row))


@router.get("/checkpoints", response_model=Page[Checkpoint])
def list_checkpoints(
    session: SessionDep, settings: SettingsDep, _: AuditRead, cursor: Cursor = None, limit: Limit = None
) -> Page[Checkpoint]:
    """Signed checkpoints of the chain's head, in chain order (oldest first)."""
    return keyset_page(
        session,
        select(AuditCheckpoint),
        [(AuditCheckpoint.event_id, int), (AuditCheckpoint.id, str)],
        _checkpoint_out,
        cursor=cursor,
        limit=page_limit(settings, limit),
        secret=settings.server_secret,
        resource="audit-checkpoints",
        filters={},
    )


@router.get("/checkpoints/{checkpoint_id}", response_model=Checkpoint)
def get_checkpoint(checkpoint_id: str, session: SessionDep, _: AuditRead) -> Checkpoint:
    return _checkpoint_out(get_or_404(session, AuditCheckpoint, checkpoint_id, "checkpoint"))


def _bound(session: Session, event_id: int | None, checkpoint_id: str | None, side: str) -> int:
    """One end of a slice: an event id or the event a checkpoint signs (exactly one of them)."""
    if (event_id is None) == (checkpoint_id is None):
        raise invalid(f"{side}_event", f"give {side}_event or {side}_checkpoint (one of them)", where="query")
    if checkpoint_id is not None:
        field = f"{side}_checkpoint"
        row = get_or_404(session, AuditCheckpoint, checkpoint_id, "checkpoint", field=field, where="query")
        return row.event_id
    assert event_id is not None
    return event_id


@router.get(
    "/slice",
    response_model=LogSlice,
    responses={409: {"description": "request_id names a request that has not succeeded (yet)."}},
)
def export_slice(
    session: SessionDep,
    settings: SettingsDep,
    keyring: KeyRingDep,
    _: AuditRead,
    request_id: str | None = Query(
        default=None,
        max_length=40,
        description="The slice a certificate of this (succeeded) request needs: from its first event to "
        "the checkpoint it rests on. Instead of a range.",
    ),
    from_event: int | None = Query(default=None, ge=1, le=2**62, description="First event id."),
    from_checkpoint: str | None = Query(default=None, max_length=40, description="Start at its event."),
    to_event: int | None = Query(default=None, ge=1, le=2**62, description="Last event id."),
    to_checkpoint: str | None = Query(default=None, max_length=40, description="End at its event."),
) -> JSONResponse:
    """A contiguous run of the chain, each event exactly as it was hashed, with the signed checkpoints
    that fall on it: `unlearn verify CERTIFICATE --keys JWKS --log SLICE` checks offline that the
    certificate's events are in the chain, unaltered, up to a signed checkpoint. Keep the file as it is
    (the hashes are over the events' stored bytes)."""
    if request_id is not None:
        ranged = {
            "from_event": from_event,
            "from_checkpoint": from_checkpoint,
            "to_event": to_event,
            "to_checkpoint": to_checkpoint,
        }
        given = [name for name, value in ranged.items() if value is not None]
        if given:
            raise invalid(given[0], "give either request_id or a range, not both", where="query")
        if session.get(DeletionRequest, request_id) is None:
            raise ProblemError(
                404,
                f"deletion request {request_id!r} does not exist",
                slug="not-found",
                errors=[error_item("request_id", "no deletion request with this id", where="query")],
            )
        first, last = certificate_slice_bounds(session, keyring, request_id)
        session.commit()  # a checkpoint signed for it
    else:
        first = _bound(session, from_event, from_checkpoint, "from")
        last = _bound(session, to_event, to_checkpoint, "to")
    end = "to_event" if to_checkpoint is None else "to_checkpoint"
    if last < first:
        raise invalid(end, f"the slice ends (event {last}) before it starts (event {first})", where="query")
    count = session.execute(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.id >= first, AuditEvent.id <= last)
    ).scalar_one()
    if count > settings.max_log_slice_events:
        raise invalid(
            end,
            f"the slice holds {count} events; export at most {settings.max_log_slice_events} at a time",
            where="query",
        )
    if count == 0:
        raise ProblemError(
            404,
            f"no audit events between {first} and {last}",
            slug="not-found",
            errors=[error_item(end, "no audit events in this range", where="query")],
        )
    return JSONResponse(log_slice(session, first, last))
