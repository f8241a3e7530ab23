"""Claim rules that need no unlearning run: takeover of a stale job, fencing of the old owner, giving up
after max_attempts, base-model training, and what the reaper re-enqueues from the database alone."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from worker_helpers import SeededModel, add_request, claim

from core import jobs
from core.db import (
    AuditEvent,
    DeletionRequest,
    Job,
    JobKind,
    JobStatus,
    Model,
    ModelStatus,
    ModelVersion,
    RequestStatus,
    session_scope,
    utcnow,
)
from core.jobs import ClaimStatus, JobRuntime
from core.jobs.loop import run_jobs
from core.jobs.reaping import plan_reaping
from worker.reaper import Reaper


def age_heartbeat(settings: Any, job_id: str, seconds: float) -> None:
    with session_scope(settings.database_url) as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def test_a_stale_job_is_taken_over_and_its_old_owner_is_fenced_off(
    settings: Any, seeded_model: SeededModel
) -> None:
    request_id = add_request(settings.database_url, seeded_model.model_id, seeded_model.train_ids[:5])
    first = claim(settings, seeded_model.model_id, "worker-a")
    assert first.claim is not None and first.claim.attempt == 1

    age_heartbeat(settings, first.claim.job_id, settings.heartbeat_stale_s + 1)  # worker-a froze or died
    second = claim(settings, seeded_model.model_id, "worker-b")
    assert second.status == ClaimStatus.claimed and second.claim is not None
    assert (second.claim.job_id, second.claim.attempt) == (first.claim.job_id, 2)
    assert second.claim.request_ids == [request_id]

    with session_scope(settings.database_url) as session:
        assert not jobs.record_heartbeat(session, first.claim, utcnow())
        assert not jobs.record_progress(session, first.claim, fraction=0.5, stage="game", now=utcnow())
        assert jobs.record_heartbeat(session, second.claim, utcnow())
    for commit in (
        lambda session: jobs.commit_cancelled(session, first.claim, utcnow()),
        lambda session: jobs.commit_failure(session, first.claim, {}, utcnow(), max_attempts=3),
    ):
        try:
            with session_scope(settings.database_url) as session:
                commit(session)
            raise AssertionError("the fenced-off owner could write")
        except jobs.LostClaim:
            pass
    with session_scope(settings.database_url) as session:
        events = session.execute(
            select(AuditEvent.event, AuditEvent.data).where(AuditEvent.job_id == first.claim.job_id)
        ).all()
    retried = [data for event, data in events if event == "job.retried"]
    assert retried == [
        {"attempt": 2, "previous_worker": "worker-a", "reason": "previous worker stopped heartbeating"}
    ]


def test_runtime_notices_a_lost_claim(settings: Any, seeded_model: SeededModel) -> None:
    add_request(settings.database_url, seeded_model.model_id, seeded_model.train_ids[:5])
    first = claim(settings, seeded_model.model_id, "worker-a")
    assert first.claim is not None
    age_heartbeat(settings, first.claim.job_id, settings.heartbeat_stale_s + 1)
    assert claim(settings, seeded_model.model_id, "worker-b").status == ClaimStatus.claimed
    runtime = JobRuntime(first.claim, database_url=settings.database_url, heartbeat_interval_s=0.1)
    with runtime:
        deadline = utcnow() + timedelta(seconds=10)
        while not runtime.lost.is_set() and utcnow() < deadline:
            runtime.progress(0.5, "game")
    assert runtime.lost.is_set() and runtime.should_stop()


def test_a_job_whose_last_attempt_died_fails_with_a_clear_error(
    settings: Any, seeded_model: SeededModel
) -> None:
    request_id = add_request(settings.database_url, seeded_model.model_id, seeded_model.train_ids[:5])
    for attempt in range(1, settings.max_attempts + 1):
        outcome = claim(settings, seeded_model.model_id, f"worker-{attempt}")
        assert outcome.claim is not None and outcome.claim.attempt == attempt
        age_heartbeat(settings, outcome.claim.job_id, settings.heartbeat_stale_s + 1)  # SIGKILLed each time

    assert claim(settings, seeded_model.model_id, "worker-last").status == ClaimStatus.idle
    with session_scope(settings.database_url) as session:
        request = session.get(DeletionRequest, request_id)
        assert request is not None and request.error is not None
        job = session.get(Job, request.job_id)
    assert request.status == RequestStatus.failed
    assert request.error["type"] == "urn:unlearn:problem:job-failed"
    assert "gave up after 3 attempts" in request.error["detail"]
    assert "worker-3" in request.error["detail"] and "stopped heartbeating" in request.error["detail"]
    assert job is not None and job.status == JobStatus.failed


def test_class_requests_run_alone(settings: Any, seeded_model: SeededModel) -> None:
    samples = add_request(settings.database_url, seeded_model.model_id, seeded_model.train_ids[:5])
    whole_class = add_request(settings.database_url, seeded_model.model_id, forget_class=3)
    outcome = claim(settings, seeded_model.model_id, "worker-a")
    assert outcome.claim is not None and outcome.claim.request_ids == [samples]
    with session_scope(settings.database_url) as session:
        row = session.get(DeletionRequest, whole_class)
        assert row is not None and (row.status, row.job_id) == (RequestStatus.queued, None)


def new_training_model(settings: Any, seeded_model: SeededModel, recipe: dict[str, Any]) -> str:
    """A model as the API leaves it after POST /v1/models (status training, a queued train job)."""
    with session_scope(settings.database_url) as session:
        model = Model(
            name="to-train",
            architecture="mlp",
            dataset_id=seeded_model.dataset_id,
            status=ModelStatus.training,
            train_params={"recipe": recipe, "width": None},
        )
        session.add(model)
        session.flush()
        session.add(Job(model_id=model.id, kind=JobKind.train, status=JobStatus.queued))
        return model.id


def test_training_writes_version_one_and_hands_over_queued_requests(
    settings: Any, seeded_model: SeededModel
) -> None:
    model_id = new_training_model(settings, seeded_model, {"epochs": 3, "batch_size": 64, "lr_max": 0.1})
    add_request(settings.database_url, model_id, seeded_model.train_ids[:5])
    enqueued: list[tuple[str, str, float | None]] = []

    [outcome] = run_jobs(
        JobKind.train, model_id, settings=settings, enqueue=lambda *call: enqueued.append(call)
    )

    assert outcome.outcome == "succeeded"
    with session_scope(settings.database_url) as session:
        model = session.get(Model, model_id)
        version = session.get(ModelVersion, outcome.version_id)
        assert model is not None and version is not None
        jobs = session.execute(select(Job).where(Job.model_id == model_id)).scalars().all()
    assert (model.status, model.head_version_id, version.number, version.method) == (
        "ready",
        version.id,
        1,
        "train",
    )
    assert version.metrics["test_accuracy"] > 50 and version.metrics["torch_threads"] >= 1
    assert [job.status for job in jobs] == [JobStatus.succeeded], "the API's queued job row is the one run"
    assert enqueued == [("worker.process_model", model_id, None)]
    assert (
        run_jobs(JobKind.train, model_id, settings=settings, enqueue=lambda *call: enqueued.append(call))
        == []
    )


def test_training_with_bad_params_fails_the_model_at_once(settings: Any, seeded_model: SeededModel) -> None:
    model_id = new_training_model(settings, seeded_model, {"epochs": 0})
    [outcome] = run_jobs(JobKind.train, model_id, settings=settings, enqueue=lambda *call: None)
    assert outcome.outcome == "failed"
    with session_scope(settings.database_url) as session:
        model = session.get(Model, model_id)
    assert model is not None and model.status == ModelStatus.failed
    assert model.error is not None and "epochs" in model.error["detail"]


def test_requests_of_a_failed_model_fail_instead_of_waiting(settings: Any, seeded_model: SeededModel) -> None:
    model_id = new_training_model(settings, seeded_model, {"epochs": 0})
    request_id = add_request(settings.database_url, model_id, seeded_model.train_ids[:5])
    run_jobs(JobKind.train, model_id, settings=settings, enqueue=lambda *call: None)
    assert claim(settings, model_id, "worker-a").status == ClaimStatus.not_ready
    with session_scope(settings.database_url) as session:
        request = session.get(DeletionRequest, request_id)
    assert request is not None and request.status == RequestStatus.failed
    assert request.error is not None and request.error["type"] == "urn:unlearn:problem:model-not-usable"


def test_reaper_plans_from_the_database(settings: Any, seeded_model: SeededModel) -> None:
    url = settings.database_url
    model_id = seeded_model.model_id
    now = utcnow()

    def plan() -> tuple[frozenset[str], frozenset[str]]:
        with session_scope(url) as session:
            result = plan_reaping(
                session, now=utcnow(), heartbeat_stale_s=settings.heartbeat_stale_s, grace_s=5
            )
        return result.process_models, result.train_models

    assert plan() == (frozenset(), frozenset())
    add_request(url, model_id, seeded_model.train_ids[:5])  # just arrived: its own message is on the way
    assert plan() == (frozenset(), frozenset())
    add_request(url, model_id, seeded_model.train_ids[5:10], age_s=30)  # its message was lost
    assert plan() == (frozenset({model_id}), frozenset())

    outcome = claim(settings, model_id, "worker-a")
    assert outcome.claim is not None
    assert plan() == (frozenset(), frozenset()), "a live job owns the model"
    age_heartbeat(settings, outcome.claim.job_id, settings.heartbeat_stale_s + 1)
    assert plan() == (frozenset({model_id}), frozenset()), "a stale job is re-enqueued"

    training = new_training_model(settings, seeded_model, {"epochs": 1})
    with session_scope(url) as session:
        session.execute(
            update(Model).where(Model.id == training).values(created_at=now - timedelta(seconds=60))
        )
    assert plan() == (frozenset({model_id}), frozenset({training}))


def test_reaper_rate_limits_its_own_reenqueues(
    settings: Any, seeded_model: SeededModel, tmp_path: Path
) -> None:
    add_request(settings.database_url, seeded_model.model_id, seeded_model.train_ids[:5], age_s=30)
    sent: list[tuple[str, str]] = []
    reaper = Reaper(
        settings,
        lambda task, model: sent.append((task, model)),
        interval_s=1,
        grace_s=5,
        reenqueue_interval_s=60,
    )
    try:
        reaper.run_once()
        reaper.run_once()
    finally:
        reaper.stop()
    assert sent == [("worker.process_model", seeded_model.model_id)]
