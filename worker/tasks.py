"""The Celery tasks: each reads its model id, runs the one job loop (`core.jobs.loop`) for its job kind
and returns the outcomes. Claims, retries and commits live in the core, once for every job kind. One more
task delivers the due callbacks of the outbox (`core.callbacks`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from core.callbacks import deliver_due
from core.db import JobKind
from core.db.session import get_engine
from core.jobs.loop import run_jobs
from core.settings import get_settings
from core.tasks import (
    ALL_DUE,
    DELIVER_CALLBACKS_TASK,
    PROCESS_MODEL_TASK,
    TRAIN_BASE_MODEL_TASK,
    clear_queued_mark,
)
from worker.celery_app import app, enqueue


def wake_deliverer() -> None:
    """The worker's `core.callbacks.Notify`: a commit that owes callbacks enqueues their delivery."""
    enqueue(DELIVER_CALLBACKS_TASK, ALL_DUE)


def _run(kind: JobKind, model_id: str) -> list[dict[str, Any]]:
    return [asdict(outcome) for outcome in run_jobs(kind, model_id, enqueue=enqueue, notify=wake_deliverer)]


@app.task(name=PROCESS_MODEL_TASK)
def process_model(model_id: str) -> list[dict[str, Any]]:
    """Unlearn every queued deletion request of `model_id` (coalesced per job).

    First clears the model's queued mark (`core.tasks`): a request committed from now on sends a new task,
    one committed before is claimed by this one."""
    settings = get_settings()
    clear_queued_mark(settings.broker_url, settings.queue_name, PROCESS_MODEL_TASK, model_id)
    return _run(JobKind.unlearn, model_id)


@app.task(name=TRAIN_BASE_MODEL_TASK)
def train_base_model(model_id: str) -> list[dict[str, Any]]:
    """Train the base model `model_id` per its train_params and write version 1."""
    return _run(JobKind.train, model_id)


@app.task(name=DELIVER_CALLBACKS_TASK)
def deliver_callbacks(_scope: str = ALL_DUE) -> dict[str, int]:
    """Deliver every due row of the callback outbox (the argument is only `Enqueue`'s shape)."""
    settings = get_settings()
    return asdict(deliver_due(get_engine(settings.database_url), settings))


# Signal handlers (ready file, reaper thread, engine reset after fork) live with the reaper.
from worker import reaper as _reaper  # noqa: E402,F401
