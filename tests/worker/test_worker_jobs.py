"""The worker's job lifecycle against a real database and the real unlearning code (no broker needed:
the enqueue function is recorded instead of sent). Each test names the DESIGN section 6 rule it checks."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from worker_helpers import FAST_DAU, SeededModel, add_request, claim

from core import jobs
from core.db import (
    AuditEvent,
    AuditReport,
    DeletionRequest,
    ForgottenSample,
    Job,
    JobKind,
    Model,
    ModelVersion,
    RequestStatus,
    session_scope,
    utcnow,
    verify_audit_chain,
)
from core.jobs import ClaimStatus, JobClaim, JobRuntime
from core.jobs.loop import run_jobs
from core.jobs.unlearn import run_unlearn
from core.storage import artifact_store, local_path


class Recorder:
    """Stands in for the broker: records what the worker would enqueue."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float | None]] = []

    def __call__(self, task: str, model_id: str, countdown_s: float | None) -> None:
        self.calls.append((task, model_id, countdown_s))


def count(url: str, column: Any, *where: Any) -> int:
    with session_scope(url) as session:
        return int(session.execute(select(func.count(column)).where(*where)).scalar_one())


def request_row(url: str, request_id: str) -> DeletionRequest:
    with session_scope(url) as session:
        row = session.get(DeletionRequest, request_id)
        assert row is not None
        return row


def test_a_request_runs_to_a_new_version_with_tombstones_and_report(
    settings: Any, seeded_model: SeededModel
) -> None:
    url = settings.database_url
    forget = seeded_model.train_ids[:20]
    request_id = add_request(url, seeded_model.model_id, forget)

    outcomes = run_jobs(JobKind.unlearn, seeded_model.model_id, settings=settings, enqueue=Recorder())

    assert [outcome.outcome for outcome in outcomes] == ["succeeded"]
    row = request_row(url, request_id)
    assert row.status == RequestStatus.succeeded and row.progress == 1.0
    with session_scope(url) as session:
        version = session.get(ModelVersion, row.result_version_id)
        model = session.get(Model, seeded_model.model_id)
        assert version is not None and model is not None
        assert version.parent_id == seeded_model.version_id and version.number == 2
        assert model.head_version_id == version.id
        assert version.forgotten_count == 20
        report = session.execute(select(AuditReport).where(AuditReport.request_id == request_id)).scalar_one()
        tombstones = set(session.execute(select(ForgottenSample.sample_id)).scalars())
        assert verify_audit_chain(session).ok
    assert tombstones == set(forget)
    from models.checkpoint import file_sha256

    assert file_sha256(local_path(version.checkpoint_uri)).sha256 == version.sha256
    for side in ("before", "after"):
        assert set(report.report[side]) >= {"UA", "RA", "TA", "MIA"}
    provenance = report.report["provenance"]
    assert provenance["parent"]["version_id"] == seeded_model.version_id
    assert provenance["new"] == {
        "version_id": version.id,
        "sha256": version.sha256,
        "size_bytes": version.size_bytes,
    }
    assert provenance["sets"]["forget"] == 20
    assert provenance["sets"]["retain"] == len(seeded_model.train_ids) - 20


def test_duplicate_delivery_exits_without_a_second_version(settings: Any, seeded_model: SeededModel) -> None:
    url = settings.database_url
    request_id = add_request(url, seeded_model.model_id, seeded_model.train_ids[:10])
    first = claim(settings, seeded_model.model_id, "worker-a")
    assert first.status == ClaimStatus.claimed and first.claim is not None

    # The broker delivers the same message again while worker-a runs (fresh heartbeat): nothing happens.
    assert claim(settings, seeded_model.model_id, "worker-b").status == ClaimStatus.busy
    assert (
        run_jobs(
            JobKind.unlearn,
            seeded_model.model_id,
            settings=settings,
            worker_id="worker-b",
            enqueue=Recorder(),
        )
        == []
    )

    # worker-a finishes and commits; a replayed commit of the same claim is fenced off.
    with JobRuntime(first.claim, database_url=url, heartbeat_interval_s=0.2) as runtime:
        result = run_unlearn(first.claim, runtime, artifact_store(settings))
    with session_scope(url) as session:
        jobs.commit_unlearn_success(session, first.claim, result, utcnow())
    with pytest.raises(jobs.LostClaim), session_scope(url) as session:
        jobs.commit_unlearn_success(session, first.claim, result, utcnow())

    # A late duplicate delivery after success finds nothing to do.
    assert (
        run_jobs(
            JobKind.unlearn,
            seeded_model.model_id,
            settings=settings,
            worker_id="worker-c",
            enqueue=Recorder(),
        )
        == []
    )
    assert count(url, ModelVersion.id, ModelVersion.model_id == seeded_model.model_id) == 2
    assert count(url, ForgottenSample.id) == 10
    assert request_row(url, request_id).status == RequestStatus.succeeded


def test_queued_requests_coalesce_into_one_job(settings: Any, seeded_model: SeededModel) -> None:
    url = settings.database_url
    ids = seeded_model.train_ids
    first = add_request(url, seeded_model.model_id, ids[0:5])
    second = add_request(url, seeded_model.model_id, ids[3:9])  # overlaps the first on 3 IDs
    other_params = add_request(url, seeded_model.model_id, ids[20:25], params={**FAST_DAU, "alpha": 2.0})

    outcomes = run_jobs(JobKind.unlearn, seeded_model.model_id, settings=settings, enqueue=Recorder())

    assert [outcome.outcome for outcome in outcomes] == ["succeeded", "succeeded"]
    rows = {request_id: request_row(url, request_id) for request_id in (first, second, other_params)}
    assert rows[first].job_id == rows[second].job_id != rows[other_params].job_id
    assert rows[first].result_version_id == rows[second].result_version_id
    with session_scope(url) as session:
        shared = session.get(ModelVersion, rows[first].result_version_id)
        later = session.get(ModelVersion, rows[other_params].result_version_id)
        job = session.get(Job, rows[first].job_id)
        owners = dict(session.execute(select(ForgottenSample.sample_id, ForgottenSample.request_id)).all())
        reports = session.execute(select(AuditReport.request_id)).scalars().all()
    assert shared is not None and later is not None and job is not None
    assert (shared.number, later.number, later.parent_id) == (2, 3, shared.id)
    assert sorted(job.request_ids) == sorted([first, second])
    assert shared.forgotten_count == 9 and later.forgotten_count == 14
    assert {sample for sample, owner in owners.items() if owner == first} == set(ids[0:5])
    assert {sample for sample, owner in owners.items() if owner == second} == set(ids[5:9])
    assert sorted(reports) == sorted([first, second, other_params])


def test_cancel_while_running_writes_no_version_and_no_tombstones(
    settings: Any, seeded_model: SeededModel
) -> None:
    url = settings.database_url
    cancelled = add_request(url, seeded_model.model_id, seeded_model.train_ids[:5])
    sharing = add_request(url, seeded_model.model_id, seeded_model.train_ids[5:10])

    def cancel_mid_run(job_claim: JobClaim, runtime: JobRuntime, artifacts: Path) -> jobs.UnlearnResult:
        report = runtime.progress

        def progress(fraction: float, stage: str) -> None:
            report(fraction, stage)
            if fraction > 0.2:  # the API's cancel endpoint sets this flag
                with session_scope(url) as session:
                    row = session.get(DeletionRequest, cancelled)
                    assert row is not None
                    row.cancel_requested = True

        runtime.progress = progress  # type: ignore[method-assign]
        return run_unlearn(job_claim, runtime, artifacts)

    recorder = Recorder()
    outcomes = run_jobs(
        JobKind.unlearn, seeded_model.model_id, settings=settings, runner=cancel_mid_run, enqueue=recorder
    )

    # The first job stops; the cancelled request ends, the one sharing its run is requeued and then
    # runs alone in a second job (same delivery loop).
    assert [outcome.outcome for outcome in outcomes] == ["cancelled", "succeeded"]
    model_artifacts = local_path(settings.artifact_url) / "models" / seeded_model.model_id
    assert not list(model_artifacts.glob(f"{outcomes[0].job_id}-*")), "a cancelled run keeps no checkpoint"
    cancelled_row = request_row(url, cancelled)
    assert cancelled_row.status == RequestStatus.cancelled and cancelled_row.result_version_id is None
    sharing_row = request_row(url, sharing)
    assert sharing_row.status == RequestStatus.succeeded
    assert count(url, ModelVersion.id, ModelVersion.model_id == seeded_model.model_id) == 2
    with session_scope(url) as session:
        tombstones = set(session.execute(select(ForgottenSample.sample_id)).scalars())
    assert tombstones == set(seeded_model.train_ids[5:10])


def test_cancel_while_queued_takes_effect_at_the_claim(settings: Any, seeded_model: SeededModel) -> None:
    url = settings.database_url
    request_id = add_request(url, seeded_model.model_id, seeded_model.train_ids[:5])
    with session_scope(url) as session:
        row = session.get(DeletionRequest, request_id)
        assert row is not None
        row.cancel_requested = True
    assert run_jobs(JobKind.unlearn, seeded_model.model_id, settings=settings, enqueue=Recorder()) == []
    assert request_row(url, request_id).status == RequestStatus.cancelled
    assert count(url, ModelVersion.id, ModelVersion.model_id == seeded_model.model_id) == 1


def test_failures_requeue_then_fail_after_max_attempts(settings: Any, seeded_model: SeededModel) -> None:
    url = settings.database_url
    request_id = add_request(url, seeded_model.model_id, seeded_model.train_ids[:5])
    attempts: list[int] = []

    def flaky(job_claim: JobClaim, runtime: JobRuntime, artifacts: Path) -> jobs.UnlearnResult:
        attempts.append(job_claim.attempt)
        raise RuntimeError(f"simulated GPU fault on attempt {job_claim.attempt}")

    recorder = Recorder()
    for attempt in range(1, settings.max_attempts):
        outcomes = run_jobs(
            JobKind.unlearn, seeded_model.model_id, settings=settings, runner=flaky, enqueue=recorder
        )
        assert [outcome.outcome for outcome in outcomes] == ["retry"]
        row = request_row(url, request_id)
        assert row.status == RequestStatus.queued and row.job_id is not None
        assert row.stage == f"retrying (attempt {attempt + 1} of {settings.max_attempts})"
        assert recorder.calls[-1] == ("worker.process_model", seeded_model.model_id, float(2**attempt))

    outcomes = run_jobs(
        JobKind.unlearn, seeded_model.model_id, settings=settings, runner=flaky, enqueue=recorder
    )
    assert [outcome.outcome for outcome in outcomes] == ["failed"]
    assert attempts == [1, 2, 3]
    assert len(recorder.calls) == settings.max_attempts - 1
    row = request_row(url, request_id)
    assert row.status == RequestStatus.failed
    assert row.error is not None
    assert row.error["type"] == "urn:unlearn:problem:job-failed"
    assert row.error["attempts"] == 3 and "simulated GPU fault on attempt 3" in row.error["detail"]
    assert count(url, ModelVersion.id, ModelVersion.model_id == seeded_model.model_id) == 1
    with session_scope(url) as session:
        events = (
            session.execute(
                select(AuditEvent.event).where(AuditEvent.job_id == row.job_id).order_by(AuditEvent.id)
            )
            .scalars()
            .all()
        )
    assert events.count("job.retried") == 2 and events.count("job.failed") == 3
    assert events[-2:] == ["job.failed", "request.failed"]

    # A late delivery after the final failure does nothing.
    assert (
        run_jobs(JobKind.unlearn, seeded_model.model_id, settings=settings, runner=flaky, enqueue=recorder)
        == []
    )
    assert attempts == [1, 2, 3]


TINY_PEERS: dict[str, tuple[str, dict[str, Any]]] = {
    "multigan": (
        "multigan",
        {
            "gan": {"steps": 3, "latent_dim": 8, "batch_size": 16},
            "finetune_epochs": 1,
            "retain_fraction": 0.5,
        },
    ),
    "condensation": (
        "condensation",
        {
            "condense": {"steps": 3, "cache": False},
            "beginning_epochs": 1,
            "intermediate_epochs": 1,
            "final_epochs": 1,
        },
    ),
    "dau-condensed": ("dau", {**FAST_DAU, "retain_source": "condensed", "condense": {"steps": 3}}),
}


@pytest.mark.parametrize("row", sorted(TINY_PEERS))
def test_the_further_methods_run_through_the_worker(
    settings: Any, seeded_model: SeededModel, row: str
) -> None:
    """Issue 7: multigan, condensation and DAU on the condensed retain set are selectable per request."""
    from models.checkpoint import load_checkpoint

    method, params = TINY_PEERS[row]
    url = settings.database_url
    request_id = add_request(
        url, seeded_model.model_id, seeded_model.train_ids[:10], method=method, params=params
    )
    outcomes = run_jobs(JobKind.unlearn, seeded_model.model_id, settings=settings, enqueue=Recorder())
    assert [outcome.outcome for outcome in outcomes] == ["succeeded"], outcomes
    row_ = request_row(url, request_id)
    assert row_.status == RequestStatus.succeeded
    with session_scope(url) as session:
        version = session.get(ModelVersion, row_.result_version_id)
        assert version is not None and version.forgotten_count == 10
        report = session.execute(select(AuditReport).where(AuditReport.request_id == request_id)).scalar_one()
        assert {"UA", "RA", "TA", "MIA"} <= set(report.report["after"])
    assert load_checkpoint(local_path(version.checkpoint_uri)).metadata["method"] == method


def test_a_permanent_error_fails_at_once_without_a_retry(settings: Any, seeded_model: SeededModel) -> None:
    """Params that cannot parse (stored past the API) fail the job on its first attempt, with the reason."""
    url = settings.database_url
    request_id = add_request(
        url, seeded_model.model_id, seeded_model.train_ids[:5], params={"iterations": "x"}
    )
    recorder = Recorder()
    outcomes = run_jobs(JobKind.unlearn, seeded_model.model_id, settings=settings, enqueue=recorder)
    assert [outcome.outcome for outcome in outcomes] == ["failed"]
    assert recorder.calls == [], "no retry is scheduled"
    row = request_row(url, request_id)
    assert row.status == RequestStatus.failed and row.error is not None
    assert row.error["attempts"] == 1 and "iterations" in row.error["detail"]
    assert row.error["last_error"]["type"] == "urn:unlearn:problem:job-error"


def test_success_retires_and_purges_every_earlier_version(settings: Any, seeded_model: SeededModel) -> None:
    url = settings.database_url
    parent_file = local_path(version_row(url, seeded_model.version_id).checkpoint_uri)
    assert parent_file.is_file()
    add_request(url, seeded_model.model_id, seeded_model.train_ids[:5])
    [first] = run_jobs(JobKind.unlearn, seeded_model.model_id, settings=settings, enqueue=Recorder())
    parent = version_row(url, seeded_model.version_id)
    assert parent.state == "purged" and parent.retired_by == first.version_id
    assert not parent_file.exists()

    add_request(url, seeded_model.model_id, seeded_model.train_ids[5:10])
    [second] = run_jobs(JobKind.unlearn, seeded_model.model_id, settings=settings, enqueue=Recorder())
    assert version_row(url, first.version_id).state == "purged"
    assert version_row(url, second.version_id).state == "live"
    with session_scope(url) as session:
        events = session.execute(
            select(AuditEvent.event, AuditEvent.version_id).where(
                AuditEvent.event.in_(["version.retired", "checkpoint.purged"])
            )
        ).all()
    assert sorted(events) == sorted(
        [
            ("version.retired", seeded_model.version_id),
            ("checkpoint.purged", seeded_model.version_id),
            ("version.retired", first.version_id),
            ("checkpoint.purged", first.version_id),
        ]
    )
    assert verify_audit_chain_ok(url)


def test_a_grace_period_keeps_the_file_until_it_is_due(settings: Any, seeded_model: SeededModel) -> None:
    from core.jobs.purge import purge_due_checkpoints

    url = settings.database_url
    graced = settings.model_copy(update={"retired_version_grace_s": 3600.0})
    parent_file = local_path(version_row(url, seeded_model.version_id).checkpoint_uri)
    add_request(url, seeded_model.model_id, seeded_model.train_ids[:5])
    run_jobs(JobKind.unlearn, seeded_model.model_id, settings=graced, enqueue=Recorder())
    parent = version_row(url, seeded_model.version_id)
    assert parent.state == "retired" and parent_file.is_file()
    assert purge_due_checkpoints(url, artifact_store(settings), utcnow(), actor="test") == []
    assert parent.purge_after is not None
    assert purge_due_checkpoints(url, artifact_store(settings), parent.purge_after, actor="test") == [
        seeded_model.version_id
    ]
    assert not parent_file.exists() and version_row(url, seeded_model.version_id).state == "purged"


def test_the_coalescing_window_lets_a_burst_share_one_job(settings: Any, seeded_model: SeededModel) -> None:
    url = settings.database_url
    windowed = settings.model_copy(update={"coalesce_window_s": 60.0})
    first = add_request(url, seeded_model.model_id, seeded_model.train_ids[:2])
    recorder = Recorder()
    assert run_jobs(JobKind.unlearn, seeded_model.model_id, settings=windowed, enqueue=recorder) == []
    [(task, model_id, countdown_s)] = recorder.calls
    assert (task, model_id) == ("worker.process_model", seeded_model.model_id)
    assert countdown_s is not None and 55 < countdown_s <= 60
    others = [
        add_request(url, seeded_model.model_id, seeded_model.train_ids[index : index + 2])
        for index in range(2, 12, 2)
    ]
    assert request_row(url, first).status == RequestStatus.queued
    # Once the oldest request has waited the window out, one job serves the whole burst.
    with session_scope(url) as session:
        session.execute(
            update(DeletionRequest)
            .where(DeletionRequest.id == first)
            .values(received_at=utcnow() - timedelta(seconds=61))
        )
    outcomes = run_jobs(JobKind.unlearn, seeded_model.model_id, settings=windowed, enqueue=recorder)
    assert [outcome.outcome for outcome in outcomes] == ["succeeded"]
    for request_id in [first, *others]:
        row = request_row(url, request_id)
        assert row.status == RequestStatus.succeeded and row.result_version_id == outcomes[0].version_id
    with session_scope(url) as session:
        reports = session.execute(select(AuditReport)).scalars().all()
        assert {report.request_id for report in reports} == {first, *others}
        assert all(report.report["provenance"]["sets"]["forget"] == 2 for report in reports)


def version_row(url: str, version_id: str) -> ModelVersion:
    with session_scope(url) as session:
        row = session.get(ModelVersion, version_id)
        assert row is not None
        return row


def verify_audit_chain_ok(url: str) -> bool:
    with session_scope(url) as session:
        return verify_audit_chain(session).ok


NOOP_GA = {"epochs": 1, "lr": 1e-12}
"""Gradient ascent that moves no weight measurably: a run that forgets nothing."""


def _events(url: str, job_id: str | None) -> list[str]:
    with session_scope(url) as session:
        return list(
            session.execute(
                select(AuditEvent.event).where(AuditEvent.job_id == job_id).order_by(AuditEvent.id)
            )
            .scalars()
            .all()
        )


def test_a_run_that_forgets_nothing_escalates_and_is_certified_by_retrain(
    settings: Any, seeded_model: SeededModel
) -> None:
    url = settings.database_url
    request_id = add_request(url, seeded_model.model_id, forget_class=3, method="ga", params=NOOP_GA)
    [outcome] = run_jobs(JobKind.unlearn, seeded_model.model_id, settings=settings, enqueue=Recorder())
    assert outcome.outcome == "succeeded"
    row = request_row(url, request_id)
    assert row.status == RequestStatus.succeeded
    version = version_row(url, outcome.version_id)
    assert version.method == "retrain", "the kept model is the exact retrain"
    with session_scope(url) as session:
        report = session.execute(select(AuditReport).where(AuditReport.request_id == request_id)).scalar_one()
    acceptance = report.report["provenance"]["acceptance"]
    assert [rung["rung"] for rung in acceptance["rungs"]] == ["method", "escalated", "retrain"]
    first, escalated, retrain = (rung["verdict"] for rung in acceptance["rungs"])
    assert first["test"] == "class-accuracy" and not first["passed"] and first["figures"]["accuracy"] > 50
    assert not escalated["passed"] and acceptance["rungs"][1]["params"]["epochs"] == 2
    assert retrain["figures"]["accuracy"] <= retrain["figures"]["limit"]
    assert acceptance["accepted"] and acceptance["accepted_by"] == "exact retrain"
    assert _events(url, row.job_id).count("job.escalated") == 2


def test_without_retrain_a_failing_audit_ends_audit_failed(settings: Any, seeded_model: SeededModel) -> None:
    url = settings.database_url
    strict = settings.model_copy(update={"retrain_fallback": False})
    request_id = add_request(url, seeded_model.model_id, forget_class=3, method="ga", params=NOOP_GA)
    [outcome] = run_jobs(JobKind.unlearn, seeded_model.model_id, settings=strict, enqueue=Recorder())
    assert outcome.outcome == "succeeded", "the job ran; its request did not pass"
    row = request_row(url, request_id)
    assert row.status == RequestStatus.audit_failed and row.result_version_id == outcome.version_id
    assert row.error is not None and row.error["type"] == "urn:unlearn:problem:audit-failed"
    assert row.error["verdict"]["test"] == "class-accuracy" and "above chance" in row.error["detail"]
    assert "request.audit_failed" in _events(url, row.job_id)
    assert "request.succeeded" not in _events(url, row.job_id)

    # The request itself may allow what the deployment does not.
    allowed = add_request(
        url, seeded_model.model_id, forget_class=5, method="ga", params={**NOOP_GA, "allow_retrain": True}
    )
    run_jobs(JobKind.unlearn, seeded_model.model_id, settings=strict, enqueue=Recorder())
    assert request_row(url, allowed).status == RequestStatus.succeeded
