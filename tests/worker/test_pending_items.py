"""The worker's state changes release what a request holds in `pending_items` (the API's overlap check):
a request keeps its rows while queued or running (retries included) and loses them when it succeeds,
fails or is cancelled. The database does it (a trigger on the status), whichever code moves the request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from worker_helpers import FAST_DAU, SeededModel, add_request

from core import jobs
from core.db import DeletionRequest, JobKind, PendingItem, RequestStatus, session_scope
from core.jobs import JobClaim, JobRuntime
from core.jobs.loop import run_jobs


def hold(url: str, request_id: str) -> None:
    """The rows the API writes with a request (app.deletion.intake.store_accepted)."""
    with session_scope(url) as session:
        request = session.get(DeletionRequest, request_id)
        assert request is not None
        keys = (
            [("c", str(request.forget_class))]
            if request.kind == "class"
            else [("s", s) for s in request.sample_ids]
        )
        session.add_all(
            PendingItem(model_id=request.model_id, kind=kind, item=item, request_id=request.id)
            for kind, item in keys
        )


def held(url: str, request_id: str) -> int:
    with session_scope(url, readonly=True) as session:
        return len(
            session.execute(select(PendingItem.item).where(PendingItem.request_id == request_id)).all()
        )


def status(url: str, request_id: str) -> str:
    with session_scope(url, readonly=True) as session:
        return str(
            session.execute(
                text("SELECT status FROM deletion_requests WHERE id = :id"), {"id": request_id}
            ).scalar_one()
        )


def never(*_: Any) -> None:
    """An enqueue that records nothing (no retry is awaited here)."""


def test_success_releases_the_ids(settings: Any, seeded_model: SeededModel) -> None:
    url = settings.database_url
    request_id = add_request(url, seeded_model.model_id, seeded_model.train_ids[:5])
    by_class = add_request(url, seeded_model.model_id, forget_class=7, params=FAST_DAU)
    hold(url, request_id)
    hold(url, by_class)
    assert held(url, request_id) == 5 and held(url, by_class) == 1
    outcomes = run_jobs(JobKind.unlearn, seeded_model.model_id, settings=settings, enqueue=never)
    assert {outcome.outcome for outcome in outcomes} == {"succeeded"}
    assert status(url, request_id) == status(url, by_class) == RequestStatus.succeeded
    assert held(url, request_id) == 0 and held(url, by_class) == 0


def test_a_retry_keeps_the_ids_and_the_final_failure_releases_them(
    settings: Any, seeded_model: SeededModel
) -> None:
    url = settings.database_url
    request_id = add_request(url, seeded_model.model_id, seeded_model.train_ids[:3])
    hold(url, request_id)

    def flaky(job_claim: JobClaim, runtime: JobRuntime, artifacts: Path) -> jobs.UnlearnResult:
        assert held(url, request_id) == 3, "a running request holds its ids"
        raise RuntimeError("simulated fault")

    for _ in range(settings.max_attempts - 1):
        run_jobs(JobKind.unlearn, seeded_model.model_id, settings=settings, runner=flaky, enqueue=never)
        assert status(url, request_id) == RequestStatus.queued and held(url, request_id) == 3
        with session_scope(url) as session:  # the backoff is over
            session.execute(text("UPDATE jobs SET retry_at = NULL"))
    run_jobs(JobKind.unlearn, seeded_model.model_id, settings=settings, runner=flaky, enqueue=never)
    assert status(url, request_id) == RequestStatus.failed and held(url, request_id) == 0


def test_a_cancellation_at_the_claim_releases_the_ids(settings: Any, seeded_model: SeededModel) -> None:
    url = settings.database_url
    request_id = add_request(url, seeded_model.model_id, seeded_model.train_ids[:2])
    hold(url, request_id)
    with session_scope(url) as session:
        row = session.get(DeletionRequest, request_id)
        assert row is not None
        row.cancel_requested = True
    run_jobs(JobKind.unlearn, seeded_model.model_id, settings=settings, enqueue=never)
    assert status(url, request_id) == RequestStatus.cancelled and held(url, request_id) == 0
