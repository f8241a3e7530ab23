"""POST /v1/deletion-requests/batch: up to `max_batch_requests` deletion requests in one transaction.

Each item goes through the checks of a single request (`app.deletion.intake`), against the database and
against the items before it in the same call; each is answered on its own (202 with the resource, or its
problem, its fields named `requests.N.FIELD`). Under an Idempotency-Key the batch is idempotent as a
whole: its answers are stored (`deletion_batches`) in the transaction that stores its requests, and the
same key with the same body replays them (the resources as they are now); another body is 422.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.deletion.intake import Accepted, check_items, store_accepted
from app.deletion.schemas import BatchItemResult, DeletionBatchOut, DeletionRequestCreate, DeletionRequestOut
from app.deletion.service import reused_key
from app.errors import ErrorItem, ProblemError, error_item, invalid, problem_from_validation
from core.db.audit import canonical_json
from core.db.models import DeletionBatch, DeletionRequest
from core.problems import TYPE_PREFIX, Problem
from core.settings import Settings

BATCH_PATH = "/v1/deletion-requests/batch"


def batch_hash(items: list[Any]) -> str:
    try:
        return hashlib.sha256(canonical_json(items).encode("utf-8", "surrogatepass")).hexdigest()
    except ValueError as error:  # NaN or Infinity somewhere: JSON cannot carry it
        raise invalid("requests", f"not representable as JSON: {error}") from None


def check_size(settings: Settings, items: list[Any]) -> None:
    if len(items) > settings.max_batch_requests:
        raise ProblemError(
            413,
            f"{len(items)} requests exceed the limit of {settings.max_batch_requests} per batch",
            slug="too-many-requests-in-batch",
            errors=[
                error_item("requests", f"more than {settings.max_batch_requests} items", value=len(items))
            ],
        )


def _parse(item: Any, refused_targets: Mapping[str, ProblemError]) -> DeletionRequestCreate | ProblemError:
    """The item, or its problem (a callback URL whose target was refused: `app.deletion.targets`)."""
    try:
        body = DeletionRequestCreate.model_validate(item)
    except ValidationError as error:
        return problem_from_validation(error)
    if body.callback_url is not None and str(body.callback_url) in refused_targets:
        return refused_targets[str(body.callback_url)]
    return body


def _problem_document(index: int, problem: ProblemError) -> dict[str, Any]:
    """The item's problem, its fields named from the batch body (`requests.N.sample_ids`)."""
    prefix = f"requests.{index}"
    errors: list[ErrorItem] = []
    for item in problem.errors or []:
        named = item.model_copy()
        if named.in_ == "body":
            named.field = f"{prefix}.{named.field}" if named.field != "body" else prefix
        errors.append(named)
    document = Problem(
        type=TYPE_PREFIX + problem.slug if problem.slug else "about:blank",
        title=problem.title,
        status=problem.status,
        detail=f"{prefix}: {problem.detail}",
        instance=BATCH_PATH,
        errors=errors or None,
    )
    return document.model_dump(mode="json", by_alias=True, exclude_none=True)


def _external_ref(item: Any) -> str | None:
    ref = item.get("external_ref") if isinstance(item, dict) else None
    return ref if isinstance(ref, str) else None


@dataclass
class BatchOutcome:
    answer: DeletionBatchOut
    model_ids: list[str]
    """The models of the requests this call stored (none on a replay), each once: they are enqueued."""


def _answer(results: list[BatchItemResult], replayed: bool) -> DeletionBatchOut:
    accepted = sum(1 for result in results if result.request is not None)
    return DeletionBatchOut(
        accepted=accepted, refused=len(results) - accepted, replayed=replayed, results=results
    )


def replay(session: Session, key: str | None, digest: str) -> DeletionBatchOut | None:
    """The stored answer of the batch posted earlier with this key (its requests as they are now); 422
    when that batch had another body; None when the key is new."""
    if key is None:
        return None
    batch = session.execute(
        select(DeletionBatch).where(DeletionBatch.idempotency_key == key)
    ).scalar_one_or_none()
    if batch is None:
        return None
    if batch.request_hash != digest:
        raise reused_key(key, f"batch {batch.id}")
    ids = [entry["id"] for entry in batch.results if entry.get("id")]
    rows = {
        row.id: row
        for start in range(0, len(ids), 5000)
        for row in session.execute(
            select(DeletionRequest).where(DeletionRequest.id.in_(ids[start : start + 5000]))
        ).scalars()
    }
    results = []
    for index, entry in enumerate(batch.results):
        request = rows.get(entry.get("id", ""))
        results.append(
            BatchItemResult(
                index=index,
                external_ref=entry.get("external_ref"),
                status=entry["status"],
                request=DeletionRequestOut.model_validate(request) if request is not None else None,
                problem=entry.get("problem"),
            )
        )
    return _answer(results, replayed=True)


def create_batch(
    session: Session,
    settings: Settings,
    items: list[Any],
    *,
    idempotency_key: str | None,
    digest: str,
    actor: str | None,
    refused_targets: Mapping[str, ProblemError] | None = None,
) -> BatchOutcome:
    """Check and store the items (the caller commits, enqueues and, on IntegrityError, rolls back and
    calls again: a concurrent writer took an id or the key first)."""
    earlier = replay(session, idempotency_key, digest)
    if earlier is not None:
        return BatchOutcome(earlier, [])
    refused = refused_targets or {}
    outcomes = check_items(session, settings, [_parse(item, refused) for item in items])
    accepted = [outcome for outcome in outcomes if isinstance(outcome, Accepted)]
    for outcome in accepted:
        outcome.actor = actor
    store_accepted(session, accepted)
    results: list[BatchItemResult] = []
    stored: list[dict[str, Any]] = []
    for index, (item, outcome) in enumerate(zip(items, outcomes, strict=True)):
        ref = _external_ref(item)
        if isinstance(outcome, Accepted):
            assert outcome.request is not None
            results.append(
                BatchItemResult(
                    index=index,
                    external_ref=ref,
                    status=202,
                    request=DeletionRequestOut.model_validate(outcome.request),
                )
            )
            stored.append({"status": 202, "id": outcome.request["id"], "external_ref": ref})
        else:
            problem = _problem_document(index, outcome)
            results.append(
                BatchItemResult(index=index, external_ref=ref, status=outcome.status, problem=problem)
            )
            stored.append({"status": outcome.status, "problem": problem, "external_ref": ref})
    if idempotency_key is not None:
        session.add(
            DeletionBatch(
                idempotency_key=idempotency_key, request_hash=digest, api_key_id=actor, results=stored
            )
        )
    models = list(dict.fromkeys(item.body.model_id for item in accepted))
    return BatchOutcome(_answer(results, replayed=False), models)
