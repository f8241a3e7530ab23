from pathlib import Path

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy.exc import IntegrityError

from app.api.deps import EnqueueDep, SessionDep, SettingsDep, page_limit
from app.auth import AuditRead, RequestsRead, RequestsWrite
from app.certificates.offline import audit_page_with_verification
from app.deletion import service
from app.deletion.schemas import AuditReportOut, DeletionRequestCreate, DeletionRequestOut
from app.errors import ProblemError
from app.schemas import Cursor, Limit, Page
from core.db.models import DeletionRequest, RequestStatus
from core.settings import Settings
from core.tasks import PROCESS_MODEL_TASK

router = APIRouter(prefix="/v1/deletion-requests", tags=["deletion requests"])


def _resource(request: DeletionRequest, status_code: int, settings: Settings) -> JSONResponse:
    out = service.request_out(request)
    headers = {"Location": out.links.self}
    if out.status in service.RETRY_AFTER_STATUSES:
        headers["Retry-After"] = str(settings.retry_after_s)
    return JSONResponse(out.model_dump(mode="json", by_alias=True), status_code=status_code, headers=headers)


@router.post(
    "",
    status_code=202,
    response_model=DeletionRequestOut,
    responses={200: {"model": DeletionRequestOut, "description": "Replay of an earlier request (same key)."}},
)
def create_deletion_request(
    body: DeletionRequestCreate,
    session: SessionDep,
    settings: SettingsDep,
    enqueue: EnqueueDep,
    principal: RequestsWrite,
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key", max_length=200),
) -> JSONResponse:
    """Accept a deletion request (202 + Location); same Idempotency-Key and body replays it (200)."""
    key = service.check_idempotency_key(idempotency_key)
    try:
        request, created = service.create_request(
            session, settings, body, idempotency_key=key, actor=principal.key_id
        )
        session.commit()
    except IntegrityError:
        # A concurrent request with the same key won the race: answer as a replay (or 422 if it differs).
        session.rollback()
        replay = service.find_replay(session, key, service.body_hash(body))
        if replay is None:
            raise
        request, created = replay, False
    if created:
        enqueue(PROCESS_MODEL_TASK, request.model_id)
    return _resource(request, 202 if created else 200, settings)


@router.get("", response_model=Page[DeletionRequestOut])
def list_deletion_requests(
    session: SessionDep,
    settings: SettingsDep,
    _: RequestsRead,
    status: RequestStatus | None = Query(default=None),
    model_id: str | None = Query(default=None, max_length=40),
    external_ref: str | None = Query(default=None, max_length=200),
    overdue: bool | None = Query(default=None, description="true: past due_at and not succeeded/cancelled."),
    cursor: Cursor = None,
    limit: Limit = None,
) -> JSONResponse:
    page = service.list_requests(
        session,
        settings.server_secret,
        status=status,
        model_id=model_id,
        external_ref=external_ref,
        overdue=overdue,
        cursor=cursor,
        limit=page_limit(settings, limit),
    )
    return JSONResponse(page.model_dump(mode="json", by_alias=True))


@router.get("/{request_id}", response_model=DeletionRequestOut)
def get_deletion_request(
    request_id: str, session: SessionDep, settings: SettingsDep, _: RequestsRead
) -> JSONResponse:
    """The request's status, progress and links; `Retry-After` while queued or running."""
    return _resource(service.get_request(session, request_id), 200, settings)


@router.post(
    "/{request_id}/cancel",
    response_model=DeletionRequestOut,
    responses={
        202: {"model": DeletionRequestOut, "description": "Running: the worker stops at its next iteration."},
        409: {"description": "Already finished."},
    },
)
def cancel_deletion_request(
    request_id: str, session: SessionDep, settings: SettingsDep, principal: RequestsWrite
) -> JSONResponse:
    """queued -> cancelled (200); running -> cancel requested (202); finished -> 409."""
    request = service.cancel_request(session, request_id, actor=principal.key_id)
    session.commit()
    return _resource(request, 200 if request.status == RequestStatus.cancelled else 202, settings)


@router.get("/{request_id}/audit", response_model=AuditReportOut)
def get_audit_report(request_id: str, session: SessionDep, _: AuditRead) -> AuditReportOut:
    """The audit report (metrics on the parent and the new version); 404 until the worker wrote it."""
    return service.get_audit_report(session, request_id)


@router.get(
    "/{request_id}/audit.html",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "The human-readable audit report."}},
)
def get_audit_report_html(
    request_id: str, request: Request, session: SessionDep, settings: SettingsDep, _: AuditRead
) -> Response:
    """The audit report as a page, with the key id of the certificate and how to verify it offline."""
    path = service.audit_html_path(session, request_id)
    session.rollback()
    if not Path(path).is_file():
        raise ProblemError(410, f"the HTML audit report of {request_id} is no longer available", slug="gone")
    return HTMLResponse(audit_page_with_verification(Path(path), settings, request_id, str(request.base_url)))
