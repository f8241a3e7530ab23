"""A job whose result write fails because the database went away is written as soon as the database
answers again (not left `running` until the reaper's next pass). The outage is real: PostgreSQL refuses
every connection to the job's database and drops the open ones, then takes connections again."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url
from worker_helpers import SeededModel, add_request

from core.db import DeletionRequest, JobKind, RequestStatus, session_scope
from core.jobs import JobClaim, JobRuntime, UnlearnResult
from core.jobs.loop import run_jobs
from core.jobs.unlearn import run_unlearn

OUTAGE_S = 2.0


def _admin(url: str) -> psycopg.Connection[Any]:
    admin_url = make_url(url).set(drivername="postgresql", database="postgres")
    return psycopg.connect(admin_url.render_as_string(hide_password=False), autocommit=True)


def _set_connections(url: str, allowed: bool) -> None:
    name = make_url(url).database
    with _admin(url) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allowed else "false"}')
        if not allowed:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


def test_result_write_waits_for_the_database_and_lands(
    settings: Any, seeded_model: SeededModel, caplog: pytest.LogCaptureFixture
) -> None:
    url = settings.database_url
    if make_url(url).get_backend_name() != "postgresql":
        pytest.skip("the outage is made by PostgreSQL refusing connections (its variant runs in CI)")
    request_id = add_request(url, seeded_model.model_id, seeded_model.train_ids[:5])
    restored = threading.Event()

    def run_then_lose_the_database(claim: JobClaim, runtime: JobRuntime, artifacts: Path) -> UnlearnResult:
        result = run_unlearn(claim, runtime, artifacts)
        _set_connections(url, allowed=False)

        def restore() -> None:
            _set_connections(url, allowed=True)
            restored.set()

        threading.Timer(OUTAGE_S, restore).start()
        return result

    try:
        with caplog.at_level(logging.WARNING, logger="core.jobs.loop"):
            outcomes = run_jobs(
                JobKind.unlearn,
                seeded_model.model_id,
                settings=settings,
                runner=run_then_lose_the_database,
                enqueue=lambda *call: True,
                notify=None,
            )
    finally:
        restored.wait(timeout=30)
        _set_connections(url, allowed=True)
    assert [outcome.outcome for outcome in outcomes] == ["succeeded"]
    assert any("database unreachable" in record.getMessage() for record in caplog.records), (
        "the first result write should have met the outage"
    )
    with session_scope(url) as session:
        request = session.get(DeletionRequest, request_id)
        assert request is not None and request.status == RequestStatus.succeeded
        assert request.result_version_id == outcomes[0].version_id
