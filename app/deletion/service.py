"""Deletion requests: the validation of DESIGN 6.1, idempotent creation, listing, cancellation.

Validation order matters: the idempotency key is looked up first (a replay of an accepted request must
return it even though its ids are now pending), then cheap checks (cap, shape, method, params), then the
database checks (model, sample ids, tombstones, pending requests). Nothing is written unless all pass.
"""

import calendar
import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.deletion.schemas import AuditReportOut, DeletionRequestCreate, DeletionRequestOut
from app.errors import ErrorItem, ProblemError, error_item, invalid, not_found, problem_from_validation
from app.pagination import decode_cursor, encode_cursor
from app.schemas import Page
from core import lifecycle
from core.db.audit import canonical_json
from core.db.models import (
    ACTIVE_REQUEST_STATUSES,
    AuditReport,
    Dataset,
    DeletionRequest,
    ForgottenSample,
    Model,
    ModelStatus,
    RequestKind,
    RequestStatus,
    Sample,
    Split,
    new_id,
    utcnow,
)
from core.request_params import AUDIT_REFERENCES, REFERENCE_PARAM, split_reference
from core.settings import Settings
from unlearning.catalog import METHOD_NAMES, method_config

IN_CLAUSE_CHUNK = 500
IDEMPOTENCY_HEADER = "Idempotency-Key"


def add_one_month(moment: datetime) -> datetime:
    """The same day and time next month, clamped to the month's last day (31 Jan -> 28/29 Feb)."""
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def body_hash(body: DeletionRequestCreate) -> str:
    """sha256 of the canonical JSON of the body with defaults filled in (key order and spacing ignored)."""
    return hashlib.sha256(canonical_json(body.model_dump(mode="json", by_alias=True)).encode()).hexdigest()


def request_out(request: DeletionRequest) -> DeletionRequestOut:
    return DeletionRequestOut.model_validate(request)


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= 200 or not all(33 <= ord(ch) <= 126 for ch in key):
        raise invalid(
            IDEMPOTENCY_HEADER, "must be 1..200 visible ASCII characters", where="header", value=key[:200]
        )
    return key


def find_replay(session: Session, key: str | None, request_hash: str) -> DeletionRequest | None:
    """The request created earlier with this key and the same body; 422 when the body differs."""
    if key is None:
        return None
    existing = (
        session.execute(
            select(DeletionRequest)
            .where(DeletionRequest.idempotency_key == key)
            .order_by(DeletionRequest.received_at)
        )
        .scalars()
        .first()
    )
    if existing is None:
        return None
    if existing.request_hash != request_hash:
        raise ProblemError(
            422,
            f"{IDEMPOTENCY_HEADER} {key!r} was already used with a different request body "
            f"(request {existing.id})",
            slug="idempotency-key-reused",
            title="Idempotency key reused",
            errors=[
                error_item(IDEMPOTENCY_HEADER, "reused with a different body", where="header", value=key)
            ],
        )
    return existing


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), IN_CLAUSE_CHUNK):
        yield values[start : start + IN_CLAUSE_CHUNK]


def _ids_problem(detail: str, items: list[ErrorItem], total: int) -> ProblemError:
    listed = f" (first {len(items)} listed in errors)" if total > len(items) else ""
    return ProblemError(
        422, detail + listed, slug="invalid-sample-ids", title="Invalid sample ids", errors=items
    )


def _check_params(body: DeletionRequestCreate) -> None:
    if body.method not in METHOD_NAMES:
        raise invalid(
            "method", f"unknown method {body.method!r}; known: {list(METHOD_NAMES)}", value=body.method
        )
    try:
        _, params = split_reference(body.params)
    except ValueError:
        reference = body.params.get(REFERENCE_PARAM)
        raise invalid(
            f"params.{REFERENCE_PARAM}", f"must be one of {list(AUDIT_REFERENCES)} or absent", value=reference
        ) from None
    try:
        method_config(body.method).model_validate(params)
    except ValidationError as error:
        raise problem_from_validation(error, prefix="params", title="Invalid method params") from None


def _load_model(session: Session, model_id: str) -> tuple[Model, Dataset]:
    # FOR UPDATE serialises request creation per model on PostgreSQL (SQLite's write lock does it there).
    model = session.execute(select(Model).where(Model.id == model_id).with_for_update()).scalar_one_or_none()
    if model is None:
        raise invalid("model_id", f"model {model_id!r} does not exist", value=model_id)
    if model.status != ModelStatus.ready or model.head_version_id is None:
        raise ProblemError(
            409,
            f"model {model_id} is {model.status}, not ready: it cannot take deletion requests yet",
            slug="model-not-ready",
            errors=[error_item("model_id", f"model is {model.status}", value=model_id)],
        )
    dataset = session.get(Dataset, model.dataset_id)
    assert dataset is not None
    return model, dataset


def _active_requests(session: Session, model_id: str) -> list[DeletionRequest]:
    return list(
        session.execute(
            select(DeletionRequest).where(
                DeletionRequest.model_id == model_id,
                DeletionRequest.status.in_([s.value for s in ACTIVE_REQUEST_STATUSES]),
            )
        ).scalars()
    )


def _check_sample_ids(session: Session, model: Model, sample_ids: list[str]) -> None:
    seen: set[str] = set()
    duplicates = [s for s in sample_ids if s in seen or seen.add(s)]  # type: ignore[func-returns-value]
    if duplicates:
        items = [error_item("sample_ids", "duplicate sample id", value=s) for s in dict.fromkeys(duplicates)]
        raise _ids_problem(
            f"{len(set(duplicates))} sample ids appear more than once", items[:100], len(items)
        )
    found: dict[str, tuple[str, int]] = {}
    for chunk in _chunks(sample_ids):
        rows = session.execute(
            select(Sample.sample_id, Sample.split, Sample.label).where(
                Sample.dataset_id == model.dataset_id, Sample.sample_id.in_(chunk)
            )
        )
        found.update({sid: (split, label) for sid, split, label in rows})
    problems: list[ErrorItem] = []
    unknown = [s for s in sample_ids if s not in found]
    not_train = [s for s in sample_ids if s in found and found[s][0] != Split.train]
    problems += [
        error_item("sample_ids", "unknown sample id in the model's dataset", value=s) for s in unknown
    ]
    problems += [
        error_item(
            "sample_ids",
            f"in the {found[s][0]} split, not train: only training members can be forgotten",
            value=s,
        )
        for s in not_train
    ]
    if problems:
        raise _ids_problem(
            f"{len(unknown)} unknown sample ids and {len(not_train)} not in the train split of dataset "
            f"{model.dataset_id}",
            problems[:100],
            len(problems),
        )
    forgotten: dict[str, str] = {}
    for chunk in _chunks(sample_ids):
        rows = session.execute(
            select(ForgottenSample.sample_id, ForgottenSample.request_id).where(
                ForgottenSample.model_id == model.id, ForgottenSample.sample_id.in_(chunk)
            )
        )
        forgotten.update({sample_id: request_id for sample_id, request_id in rows})
    pending: dict[str, str] = {}
    requested = set(sample_ids)
    for active in _active_requests(session, model.id):
        if active.kind == RequestKind.class_:
            hits = [s for s in sample_ids if found[s][1] == active.forget_class]
        else:
            hits = [s for s in active.sample_ids or [] if s in requested]
        pending.update(dict.fromkeys(hits, active.id))
    problems = [
        error_item("sample_ids", f"already forgotten (request {forgotten[s]})", value=s)
        for s in sample_ids
        if s in forgotten
    ] + [
        error_item("sample_ids", f"pending in active request {pending[s]}", value=s)
        for s in sample_ids
        if s in pending and s not in forgotten
    ]
    if problems:
        raise _ids_problem(
            f"{len(forgotten)} sample ids are already forgotten by model {model.id} and "
            f"{len(set(pending) - set(forgotten))} are pending in another active request",
            problems[:100],
            len(problems),
        )


def _resolve_class(session: Session, model: Model, dataset: Dataset, value: int | str) -> int:
    if isinstance(value, str):
        if value not in dataset.class_names:
            raise invalid(
                "class", f"unknown class name {value!r}; known: {dataset.class_names[:50]}", value=value
            )
        forget_class = dataset.class_names.index(value)
    else:
        if not 0 <= value < dataset.num_classes:
            raise invalid("class", f"class {value} is out of range 0..{dataset.num_classes - 1}", value=value)
        forget_class = value
    for active in _active_requests(session, model.id):
        if active.kind == RequestKind.class_ and active.forget_class == forget_class:
            raise invalid(
                "class", f"class {forget_class} is pending in active request {active.id}", value=value
            )
    train_ids = set(
        session.execute(
            select(Sample.sample_id).where(
                Sample.dataset_id == dataset.id, Sample.split == Split.train, Sample.label == forget_class
            )
        ).scalars()
    )
    if not train_ids:
        raise invalid(
            "class", f"class {forget_class} has no train samples in dataset {dataset.id}", value=value
        )
    forgotten = set(
        session.execute(
            select(ForgottenSample.sample_id).where(
                ForgottenSample.model_id == model.id,
                ForgottenSample.sample_id.in_(
                    select(Sample.sample_id).where(
                        Sample.dataset_id == dataset.id,
                        Sample.split == Split.train,
                        Sample.label == forget_class,
                    )
                ),
            )
        ).scalars()
    )
    if train_ids <= forgotten:
        raise invalid(
            "class", f"every train sample of class {forget_class} is already forgotten", value=value
        )
    return forget_class


def create_request(
    session: Session,
    settings: Settings,
    body: DeletionRequestCreate,
    *,
    idempotency_key: str | None,
    actor: str | None,
) -> tuple[DeletionRequest, bool]:
    """Validate and store a queued request (caller commits and enqueues). Returns (request, created);
    created is False for an idempotent replay."""
    request_hash = body_hash(body)
    replay = find_replay(session, idempotency_key, request_hash)
    if replay is not None:
        return replay, False
    if (body.sample_ids is None) == (body.class_ is None):
        field = "sample_ids" if body.sample_ids is not None else "class"
        raise invalid(field, "give exactly one of sample_ids and class")
    if body.sample_ids is not None:
        if len(body.sample_ids) > settings.max_sample_ids:
            raise ProblemError(
                413,
                f"{len(body.sample_ids)} sample ids exceed the limit of {settings.max_sample_ids}",
                slug="too-many-sample-ids",
                errors=[
                    error_item(
                        "sample_ids", f"more than {settings.max_sample_ids} ids", value=len(body.sample_ids)
                    )
                ],
            )
        if not body.sample_ids:
            raise invalid("sample_ids", "must name at least one sample id", value=[])
    _check_params(body)
    model, dataset = _load_model(session, body.model_id)
    forget_class = None
    if body.sample_ids is not None:
        _check_sample_ids(session, model, body.sample_ids)
        kind = RequestKind.samples
    else:
        assert body.class_ is not None
        forget_class = _resolve_class(session, model, dataset, body.class_)
        kind = RequestKind.class_
    now = utcnow()
    request = DeletionRequest(
        id=new_id("req"),
        **body.model_dump(mode="json", exclude={"class_"}),  # each body field is the column of its name
        kind=kind,
        forget_class=forget_class,
        due_at=add_one_month(now),
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        api_key_id=actor,
    )
    lifecycle.request_received(
        session,
        request,
        received_at=now,
        actor=actor,
        data={
            "kind": kind.value,
            "sample_count": len(body.sample_ids) if body.sample_ids else None,
            "class": forget_class,
            "method": body.method,
            "external_ref": body.external_ref,
            "due_at": request.due_at.isoformat(),
            "request_hash": request_hash,
        },
    )
    return request, True


def get_request(session: Session, request_id: str, *, for_update: bool = False) -> DeletionRequest:
    query = select(DeletionRequest).where(DeletionRequest.id == request_id)
    if for_update:
        query = query.with_for_update()
    request = session.execute(query).scalar_one_or_none()
    if request is None:
        raise not_found("deletion request", request_id)
    return request


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
