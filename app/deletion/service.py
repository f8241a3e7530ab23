"""Deletion requests: idempotent creation (checks and storage in `app.deletion.intake`, shared with the
batch endpoint), listing, cancellation, audit reports.

Validation order matters: the idempotency key is looked up first (a replay of an accepted request must
return it even though its ids are now pending), then cheap checks (cap, shape, method, params), then the
database checks (model, sample ids, tombstones, pending requests). Nothing is written unless all pass.
The API stores new requests in groups (`app.deletion.group_commit` calls `create_requests`).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.deletion.intake import Accepted, add_one_month, body_hash, check_items, store_accepted
from app.deletion.schemas import AuditReportOut, DeletionRequestCreate, DeletionRequestOut
from app.errors import ProblemError, error_item, invalid, not_found
from app.pagination import decode_cursor, encode_cursor
from app.schemas import Page
from core import lifecycle
from core.db.models import AuditReport, DeletionRequest, RequestStatus, utcnow
from core.settings import Settings

__all__ = ["add_one_month", "body_hash", "create_requests"]

IDEMPOTENCY_HEADER = "Idempotency-Key"


def request_out(request: Any) -> DeletionRequestOut:
    """The resource of a request: from its ORM object, a Core row of its columns, or a new request's row."""
    return DeletionRequestOut.model_validate(request)


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= 200 or not all(33 <= ord(ch) <= 126 for ch in key):
        raise invalid(
            IDEMPOTENCY_HEADER, "must be 1..200 visible ASCII characters", where="header", value=key[:200]
        )
    return key


def reused_key(key: str, earlier: str) -> ProblemError:
    return ProblemError(
        422,
        f"{IDEMPOTENCY_HEADER} {key!r} was already used with a different request body ({earlier})",
        slug="idempotency-key-reused",
        title="Idempotency key reused",
        errors=[error_item(IDEMPOTENCY_HEADER, "reused with a different body", where="header", value=key)],
    )


@dataclass(frozen=True)
class NewRequest:
    body: DeletionRequestCreate
    idempotency_key: str | None
    actor: str | None


Created = tuple[DeletionRequestOut, bool]
"""(the request's resource, whether this call created it: False for an idempotent replay)."""


def create_requests(
    session: Session, settings: Settings, items: Sequence[NewRequest]
) -> list[Created | ProblemError]:
    """Validate and store queued requests in the caller's transaction (it commits and enqueues): each
    item's request and whether it was created (False: a replay of its Idempotency-Key), or its problem.

    A key used earlier replays that request (422 if the body differs); a key given twice in this call
    makes the later items replays of the first one."""
    hashes = [body_hash(item.body) for item in items]
    keys = {item.idempotency_key for item in items if item.idempotency_key is not None}
    earlier: dict[str, DeletionRequest] = {}
    if keys:
        rows = session.execute(
            select(DeletionRequest)
            .where(DeletionRequest.idempotency_key.in_(sorted(keys)))
            .order_by(DeletionRequest.received_at)
        ).scalars()
        for row in rows:
            earlier.setdefault(str(row.idempotency_key), row)
    results: list[Created | ProblemError | None] = [None] * len(items)
    first_with_key: dict[str, int] = {}
    to_check: list[int] = []
    for index, item in enumerate(items):
        key = item.idempotency_key
        if key is not None and key in earlier:
            row = earlier[key]
            same = row.request_hash == hashes[index]
            results[index] = (request_out(row), False) if same else reused_key(key, f"request {row.id}")
        elif key is None or key not in first_with_key:
            if key is not None:
                first_with_key[key] = index
            to_check.append(index)
    outcomes = check_items(session, settings, [items[index].body for index in to_check])
    accepted: list[tuple[int, Accepted]] = []
    for index, outcome in zip(to_check, outcomes, strict=True):
        if isinstance(outcome, Accepted):
            outcome.idempotency_key, outcome.actor = items[index].idempotency_key, items[index].actor
            outcome.request_hash = hashes[index]
            accepted.append((index, outcome))
        else:
            results[index] = outcome
    store_accepted(session, [outcome for _, outcome in accepted])
    for index, outcome in accepted:
        assert outcome.request is not None
        results[index] = (request_out(outcome.request), True)
    for index, item in enumerate(items):
        if results[index] is None:  # the same key earlier in this call
            assert item.idempotency_key is not None
            first = first_with_key[item.idempotency_key]
            done = results[first]
            if hashes[index] != hashes[first]:
                results[index] = reused_key(item.idempotency_key, "a concurrent request")
            else:
                results[index] = done if isinstance(done, ProblemError) else (done[0], False)  # type: ignore[index]
    return [result for result in results if result is not None]


def get_request(session: Session, request_id: str, *, for_update: bool = False) -> DeletionRequest:
    query = select(DeletionRequest).where(DeletionRequest.id == request_id)
    if for_update:
        query = query.with_for_update()
    request = session.execute(query).scalar_one_or_none()
    if request is None:
        raise not_found("deletion request", request_id)
    return request


def read_request(session: Session, request_id: str) -> Any:
    """The request's row (columns only, no ORM object: what GET serves); 404 when unknown."""
    table = DeletionRequest.__table__
    row = session.connection().execute(select(table).where(table.c.id == request_id)).one_or_none()
    if row is None:
        raise not_found("deletion request", request_id)
    return row


def cancel_request(session: Session, request_id: str, *, actor: str | None) -> DeletionRequest:
    """queued -> cancelled now; running -> cancel_requested (the worker stops at its next iteration);
    finished -> 409. The caller commits."""
    request = get_request(session, request_id, for_update=True)
    if request.status == RequestStatus.queued:
        lifecycle.request_cancelled(session, request, utcnow(), actor=actor)
    elif request.status == RequestStatus.running:
        lifecycle.request_cancel_requested(session, request, actor=actor)
    else:
        raise ProblemError(
            409,
            f"deletion request {request_id} is already {request.status} and cannot be cancelled",
            slug="request-finished",
        )
    session.flush()
    return request


def list_requests(
    session: Session,
    secret: str,
    *,
    status: RequestStatus | None,
    model_id: str | None,
    external_ref: str | None,
    overdue: bool | None,
    cursor: str | None,
    limit: int,
) -> Page[DeletionRequestOut]:
    now = utcnow()
    filters: dict[str, Any] = {
        "status": status.value if status else None,
        "model_id": model_id,
        "external_ref": external_ref,
        "overdue": overdue,
    }
    query = select(DeletionRequest).order_by(DeletionRequest.received_at.desc(), DeletionRequest.id.desc())
    if status is not None:
        query = query.where(DeletionRequest.status == status.value)
    if model_id is not None:
        query = query.where(DeletionRequest.model_id == model_id)
    if external_ref is not None:
        query = query.where(DeletionRequest.external_ref == external_ref)
    not_done = DeletionRequest.status.not_in([RequestStatus.succeeded.value, RequestStatus.cancelled.value])
    if overdue is True:
        query = query.where(not_done, DeletionRequest.due_at < now)
    elif overdue is False:
        query = query.where(~(not_done & (DeletionRequest.due_at < now)))
    if cursor:
        received_at, last_id = decode_cursor(secret, "deletion-requests", filters, cursor, (datetime, str))
        query = query.where(
            (DeletionRequest.received_at < received_at)
            | ((DeletionRequest.received_at == received_at) & (DeletionRequest.id < last_id))
        )
    rows = session.execute(query.limit(limit + 1)).scalars().all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(secret, "deletion-requests", filters, [rows[-1].received_at, rows[-1].id])
    return Page(data=[request_out(r) for r in rows], next_cursor=next_cursor)


def get_audit_report(session: Session, request_id: str) -> AuditReportOut:
    request = get_request(session, request_id)
    report = session.execute(
        select(AuditReport).where(AuditReport.request_id == request_id)
    ).scalar_one_or_none()
    if report is None:
        raise ProblemError(
            404,
            f"deletion request {request_id} has no audit report yet (status {request.status})",
            slug="audit-not-ready",
        )
    return AuditReportOut(
        request_id=request_id,
        version_id=report.version_id,
        created_at=report.created_at,
        report=report.report,
    )


def audit_html_path(session: Session, request_id: str) -> str:
    get_request(session, request_id)
    report = session.execute(
        select(AuditReport).where(AuditReport.request_id == request_id)
    ).scalar_one_or_none()
    if report is None or report.html_uri is None:
        raise ProblemError(
            404, f"deletion request {request_id} has no HTML audit report", slug="audit-not-ready"
        )
    return report.html_uri


RETRY_AFTER_STATUSES = frozenset({RequestStatus.queued, RequestStatus.running})
