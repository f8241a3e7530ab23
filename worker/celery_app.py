"""The Celery application of the worker, configured from the service settings.

Import cost matters: `celery -A worker.celery_app worker` imports this module in the parent process of
the prefork pool, and the parent must not initialise CUDA (a forked child cannot use a CUDA context it
inherited). So nothing here imports torch; the task bodies import the heavy modules when they run,
inside the child process.

Delivery semantics (DESIGN section 6):
- `task_acks_late` + `task_reject_on_worker_lost`: a message is acknowledged only after the task
  returns; if the child process dies (OOM, SIGKILL) the message goes back to the queue.
- `worker_prefetch_multiplier = 1`: a worker holds one message per process, so a long job does not
  sit on messages another idle worker could take.
- The broker is not trusted for exactly-once: the DB claim (`worker.claims`) is. A redelivered or
  duplicated message finds the job `running` with a fresh heartbeat and returns at once.

Why `visibility_timeout` is `VISIBILITY_TIMEOUT_S` (6 hours): with the Redis transport an unacked
message is handed to another worker once the visibility timeout passes, even if the first worker is
still running it. A short timeout would only produce duplicate deliveries of long jobs (each one harmless,
because the heartbeat claim refuses it, but noise); a long one delays the broker's own recovery of a
message whose worker host died. That recovery is not what we rely on: the reaper (`worker.reaper`)
re-enqueues from the DB as soon as a job's heartbeat is older than `heartbeat_stale_s` (a minute by
default), whatever the broker holds. So the timeout is set well above the longest expected job (a GPU
unlearning run with a retrain reference is well under an hour), and crash recovery speed comes from the
heartbeat, not from the broker.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from core.settings import Settings, get_settings
from core.tasks import CALLBACKS_QUEUE, queue_for

__all__ = ["WORKER_READY_FILE_ENV", "app", "create_celery_app", "enqueue"]

VISIBILITY_TIMEOUT_S = 6 * 3600
"""See the module docstring: the DB heartbeat claim, not the broker, prevents parallel runs."""

WORKER_READY_FILE_ENV = "UNLEARN_WORKER_READY_FILE"
"""When set, the worker's main process writes its pid there once it is ready (for supervisors)."""
DEVICE_QUEUES = ("gpu", "cpu")


def create_celery_app(settings: Settings | None = None) -> Celery:
    """A Celery app whose broker and (unused) result backend are `settings.broker_url`."""
    settings = settings or get_settings()
    queue_names = list(dict.fromkeys([*DEVICE_QUEUES, settings.queue_name, CALLBACKS_QUEUE]))
    transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    celery = Celery("unlearn", broker=settings.broker_url, backend=settings.broker_url)
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Each queue bound under its own name (a bare Queue(name) would be bound under the default one).
        task_queues=[Queue(name, routing_key=name) for name in queue_names],
        task_default_queue=settings.queue_name,
        # The API reads job state from the DB, never from Celery's result backend.
        task_ignore_result=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport_options,
        result_backend_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        # The task catches its own errors and decides about retries from the DB (attempts vs max_attempts).
        task_track_started=False,
        imports=["worker.tasks"],
    )
    return celery


app = create_celery_app()
"""The app `celery -A worker.celery_app` and `unlearn worker` run."""

from worker import metrics as _observability  # noqa: E402,F401 - logging/metrics/tracing signal handlers


def enqueue(task_name: str, model_id: str, countdown_s: float | None = None) -> bool:
    """A `core.tasks.Enqueue` on the worker's own app (what the reaper, retries and follow-ups use)."""
    queue = queue_for(task_name, get_settings().queue_name)
    app.send_task(task_name, args=[model_id], queue=queue, countdown=countdown_s)
    return True
