"""Deletion-request routes. Creation and the single GET are `async def` handlers: a new request waits,
without a thread or a connection, for the group commit that stores it with its neighbours
(`app.deletion.group_commit`); a batch and a GET do their database work in one threadpool call each."""

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Body, FastAPI, Header, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.deps import SessionDep, SettingsDep, open_session, page_limit
from app.auth import AuditRead, RequestsRead, RequestsWrite
from app.certificates.offline import audit_page_with_verification
from app.deletion import batch, service, targets
from app.deletion.group_commit import commit_with_retry
from app.deletion.schemas import (
    AuditReportOut,
    DeletionBatchCreate,
    DeletionBatchOut,
    DeletionRequestCreate,
    DeletionRequestOut,
)
from app.errors import ProblemError, not_found
from app.schemas import Cursor, Limit, Page
from core.db.models import RequestStatus
from core.observability.logs import bind
from core.settings import Settings
from core.storage import ObjectMissing, artifact_store
from core.tasks import PROCESS_MODEL_TASK

router = APIRouter(prefix="/v1/deletion-requests", tags=["deletion requests"])
log = logging.getLogger(__name__)

T = TypeVar("T")


def _resource(out: DeletionRequestOut, status_code: int, settings: Settings) -> Response:
    """The resource of a request as the response (with Location, and Retry-After while it waits)."""
    headers = {"Location": out.links.self}
    if out.status in service.RETRY_AFTER_STATUSES:
        headers["Retry-After"] = str(settings.retry_after_s)
    return Response(
        out.model_dump_json(by_alias=True),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


@router.post(
    "",
    status_code=202,
    response_model=DeletionRequestOut,
    responses={200: {"model": DeletionRequestOut, "description": "Replay of an earlier request (same key)."}},
)
async def create_deletion_request(
    request: Request,
    body: DeletionRequestCreate,
    principal: RequestsWrite,
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key", max_length=200),
) -> Response:
    """Accept a deletion request (202 + Location); same Idempotency-Key and body replays it (200)."""
    key = service.check_idempotency_key(idempotency_key)
    await targets.check_callback_url(request.app.state.settings, body.callback_url)
    submitted = request.app.state.group_commit.submit(service.NewRequest(body, key, principal.key_id))
    out, created = await asyncio.wrap_future(submitted)
    bind(request_id=out.id, model_id=out.model_id)  # every later line of this HTTP request names it
    log.info("deletion request %s", "accepted" if created else "replayed", extra={"status": out.status})
    return _resource(out, 202 if created else 200, request.app.state.settings)


def _write_batch(app: FastAPI, write: Callable[[Session], batch.BatchOutcome]) -> DeletionBatchOut:
    """In a worker thread: the batch in one transaction (checked again after a lost race), then each
    model enqueued once."""
    outcome = commit_with_retry(lambda: open_session(app), write)
    models = outcome.model_ids
    # one line per batch, not per item: a line per request cost 4% of the batch's CPU (bench/load_api.py),
    # and each request's own record is its `request.received` audit event
    log.info(
        "deletion batch %s",
        "replayed" if outcome.answer.replayed else "stored",
        extra={
            "accepted": outcome.answer.accepted,
            "refused": outcome.answer.refused,
            "model_ids": models,
        },
    )
    for model_id in models:
        app.state.enqueue(PROCESS_MODEL_TASK, model_id)
    return outcome.answer


@router.post(
    "/batch",
    response_model=DeletionBatchOut,
    responses={
        413: {"description": "More items than max_batch_requests (1,000)."},
        422: {"description": "The envelope is invalid, or the Idempotency-Key was used with another body."},
    },
)
async def create_deletion_batch(
    request: Request,
    principal: RequestsWrite,
    body: DeletionBatchCreate = Body(),
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key", max_length=200),
) -> Response:
    """Up to 1,000 deletion requests in one call (for backlogs): each item is checked and answered on its
    own, in order (`results[i].status` 202 with `request`, or a 4xx with `problem`), all stored in one
    transaction. With an Idempotency-Key the batch is idempotent as a whole: the same key and body replay
    the stored answers (`replayed: true`); another body with the key is 422."""
    key = service.check_idempotency_key(idempotency_key)
    settings = request.app.state.settings
    batch.check_size(settings, body.requests)
    digest = batch.batch_hash(body.requests)
    refused = await targets.refused_targets(settings, targets.batch_urls(body.requests))

    def write(session: Session) -> batch.BatchOutcome:
        return batch.create_batch(
            session,
            settings,
            body.requests,
            idempotency_key=key,
            digest=digest,
            actor=principal.key_id,
            refused_targets=refused,
        )

    answer = await run_in_threadpool(_write_batch, request.app, write)
    return Response(answer.model_dump_json(by_alias=True), media_type="application/json")


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


def _read(app: FastAPI, read: Callable[[Session], T]) -> T:
    """In a worker thread: `read` in a new autocommit session (one statement, no BEGIN nor ROLLBACK)."""
    session = open_session(app, autocommit=True)
    try:
        return read(session)
    finally:
        session.close()


READ_ONE_SQL = "SELECT * FROM deletion_requests WHERE id = %s"


@router.get("/{request_id}", response_model=DeletionRequestOut)
async def get_deletion_request(request_id: str, request: Request, _: RequestsRead) -> Response:
    """The request's status, progress and links; `Retry-After` while queued or running."""
    settings = request.app.state.settings
    reads = request.app.state.reads
    if reads is not None and reads.ready:  # PostgreSQL: from the event loop (app.api.reads)
        row = await reads.one(READ_ONE_SQL, (request_id,))
        if row is None:
            raise not_found("deletion request", request_id)
        return _resource(service.request_out(row), 200, settings)

    def read(session: Session) -> Response:
        return _resource(service.request_out(service.read_request(session, request_id)), 200, settings)

    return await run_in_threadpool(_read, request.app, read)


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
    status = 200 if request.status == RequestStatus.cancelled else 202
    return _resource(service.request_out(request), status, settings)


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
    """The audit report as a page (read from the artifact store), with the key id of the certificate and how
    to verify it offline."""
    url = service.audit_html_path(session, request_id)
    session.rollback()
    try:
        page = artifact_store(settings).read_bytes(url).decode("utf-8")
    except ObjectMissing:
        raise ProblemError(
            410, f"the HTML audit report of {request_id} is no longer available", slug="gone"
        ) from None
    return HTMLResponse(audit_page_with_verification(page, settings, request_id, str(request.base_url)))
