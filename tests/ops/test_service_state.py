"""The database/broker figures the workers serve (`core.observability.collector`), computed at scrape time
from real rows (SQLite, and PostgreSQL in CI) and a real Redis holding Celery queue lists."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any


def figures(collector: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in collector.collect()
        for sample in family.samples
    }


def seed(database_url: str) -> None:
    from core.db import session_scope
    from core.db.models import AuditEvent, Dataset, DeletionRequest, Job, Model, utcnow

    now = utcnow()
    with session_scope(database_url) as session:
        dataset = Dataset(name="d", format="digits", uri=None, options={}, num_classes=10)
        session.add(dataset)
        session.flush()
        model = Model(name="m", architecture="mlp", dataset_id=dataset.id, status="ready")
        session.add(model)
        session.flush()

        def request(status: str, received_ago: timedelta, due_in: timedelta) -> None:
            session.add(
                DeletionRequest(
                    model_id=model.id,
                    kind="samples",
                    sample_ids=[uuid.uuid4().hex],
                    status=status,
                    received_at=now - received_ago,
                    due_at=now + due_in,
                    request_hash=uuid.uuid4().hex,
                )
            )

        past, future = timedelta(days=-1), timedelta(days=20)
        request("queued", timedelta(hours=2), future)
        request("queued", timedelta(days=40), past)  # the oldest queued, and overdue
        request("running", timedelta(minutes=5), future)
        request("succeeded", timedelta(days=40), past)  # done: never overdue
        request("cancelled", timedelta(days=40), past)
        request("failed", timedelta(days=40), past)  # nothing forgotten: overdue
        request("audit_failed", timedelta(days=3), future)
        session.add(Job(model_id=model.id, kind="unlearn", status="running"))
        session.add(Job(model_id=model.id, kind="unlearn", status="queued"))
        session.add(Job(model_id=model.id, kind="train", status="succeeded"))
        for _ in range(2):
            session.add(AuditEvent(event="job.escalated", prev_hash=uuid.uuid4().hex, hash=uuid.uuid4().hex))
        session.add(AuditEvent(event="job.started", prev_hash=uuid.uuid4().hex, hash=uuid.uuid4().hex))


def test_figures_from_the_database_and_the_broker(database_url: str, broker_url: str) -> None:
    import redis

    from core.observability.collector import ServiceStateCollector
    from core.tasks import redis_url

    seed(database_url)
    client = redis.Redis.from_url(redis_url(broker_url) or "")
    client.lpush("cpu", "m1", "m2")
    client.lpush("cpu\x06\x163", "m3")  # kombu's list for priority 3 of queue "cpu"
    collector = ServiceStateCollector(database_url, broker_url, ["gpu", "cpu", "cpu"])

    got = figures(collector)

    def value(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert value("unlearn_deletion_requests_overdue", status="queued") == 1
    assert value("unlearn_deletion_requests_overdue", status="failed") == 1
    assert value("unlearn_deletion_requests_overdue", status="running") == 0
    assert value("unlearn_deletion_requests_overdue", status="audit_failed") == 0
    assert not any(labels == (("status", "succeeded"),) for name, labels in got if "overdue" in name)
    assert value("unlearn_deletion_requests", status="queued") == 2
    assert value("unlearn_deletion_requests", status="running") == 1
    assert 40 * 86400 <= value("unlearn_deletion_request_oldest_queued_age_seconds") < 40 * 86400 + 600
    assert value("unlearn_deletion_requests_audit_failed_total") == 1
    assert value("unlearn_job_escalations_total") == 2
    assert value("unlearn_jobs", kind="unlearn", status="running") == 1
    assert value("unlearn_jobs", kind="unlearn", status="queued") == 1
    assert value("unlearn_jobs", kind="train", status="queued") == 0
    assert value("unlearn_queue_length", queue="cpu") == 3
    assert value("unlearn_queue_length", queue="gpu") == 0
    assert value("unlearn_state_source_up", source="database") == 1
    assert value("unlearn_state_source_up", source="broker") == 1


def test_an_unreachable_source_is_reported_not_raised(database_url: str, tmp_path: Path) -> None:
    from core.observability.collector import ServiceStateCollector

    seed(database_url)
    no_broker = f"redis+socket://{tmp_path / 'nothing.sock'}"
    got = figures(ServiceStateCollector(database_url, no_broker, ["cpu"]))
    assert got[("unlearn_state_source_up", (("source", "broker"),))] == 0
    assert got[("unlearn_state_source_up", (("source", "database"),))] == 1
    assert not any(name == "unlearn_queue_length" for name, _ in got)
    assert got[("unlearn_deletion_requests", (("status", "queued"),))] == 2

    no_database = f"sqlite:///{tmp_path / 'missing' / 'none.db'}"
    got = figures(ServiceStateCollector(no_database, no_broker, ["cpu"]))
    assert got[("unlearn_state_source_up", (("source", "database"),))] == 0
    assert not any(name == "unlearn_jobs" for name, _ in got)
