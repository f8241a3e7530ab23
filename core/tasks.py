"""The worker tasks by name, and the one signature every sender of them has.

The API sends with a plain Celery client (`app.queue.CeleryEnqueue`), the worker with its own app
(`worker.celery_app.enqueue`); neither imports the other, and both name tasks from here.
"""

from typing import Protocol

PROCESS_MODEL_TASK = "worker.process_model"
"""Claim and run the unlearning jobs of one model until none is left."""
TRAIN_BASE_MODEL_TASK = "worker.train_base_model"
"""Train the base model of one model (version 1)."""


class Enqueue(Protocol):
    def __call__(self, task_name: str, model_id: str, countdown_s: float | None = None) -> bool:
        """Send `task_name(model_id)`, after `countdown_s` if given; True when the broker accepted it.

        The database is the source of truth: a sender that fails only logs, and the reaper re-sends
        whatever is due from the rows alone."""
        ...
