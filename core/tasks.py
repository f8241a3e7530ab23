"""The worker tasks by name, and the one signature every sender of them has.

The API sends with a plain Celery client (`app.queue.CeleryEnqueue`), the worker with its own app
(`worker.celery_app.enqueue`); neither imports the other, and both name tasks from here.
"""

from typing import Protocol

PROCESS_MODEL_TASK = "worker.process_model"
"""Claim and run the unlearning jobs of one model until none is left."""
TRAIN_BASE_MODEL_TASK = "worker.train_base_model"
"""Train the base model of one model (version 1)."""
DELIVER_CALLBACKS_TASK = "worker.deliver_callbacks"
"""Deliver the due rows of the callback outbox (`core.callbacks.deliver_due`). Sent after a commit that
wrote outbox rows, with `ALL_DUE` for the `Enqueue` argument: the task delivers whatever is due."""
ALL_DUE = "all-due"
CALLBACKS_QUEUE = "callbacks"
"""The queue of `DELIVER_CALLBACKS_TASK`, apart from the job queues: every `unlearn worker` consumes it as
well, so a callback never waits behind a long job on the queue, and a small worker can serve it alone."""


def queue_for(task_name: str, job_queue: str) -> str:
    """The queue `task_name` is sent to: the callbacks queue for deliveries, else the job queue."""
    return CALLBACKS_QUEUE if task_name == DELIVER_CALLBACKS_TASK else job_queue


class Enqueue(Protocol):
    def __call__(self, task_name: str, model_id: str, countdown_s: float | None = None) -> bool:
        """Send `task_name(model_id)`, after `countdown_s` if given; True when the broker accepted it.

        The database is the source of truth: a sender that fails only logs, and the reaper re-sends
        whatever is due from the rows alone."""
        ...


# -- one enqueue per model ------------------------------------------------------------------------
#
# The API sends `PROCESS_MODEL_TASK(model)` only when it sets the model's "queued" mark in the broker's
# Redis (SET NX with a TTL); the task deletes the mark when it starts, before it claims. A request
# committed while the mark is set is therefore claimed by the task that set it (which has not started
# yet), and one committed after the task started finds no mark and sends the next task. The TTL bounds
# a mark whose task was lost (the reaper re-sends from the rows in any case).

QUEUED_MARK_PREFIX = "unlearn:queued"


def queued_mark(queue_name: str, task_name: str, model_id: str) -> str:
    """The Redis key that says `task_name(model_id)` is waiting in `queue_name`."""
    return f"{QUEUED_MARK_PREFIX}:{queue_name}:{task_name}:{model_id}"


def redis_url(broker_url: str) -> str | None:
    """The redis-py URL of a Redis broker (`redis+socket://PATH` -> `unix://PATH`); None otherwise."""
    if broker_url.startswith(("redis://", "rediss://")):
        return broker_url
    if broker_url.startswith("redis+socket://"):
        return "unix://" + broker_url.removeprefix("redis+socket://")
    return None


_clients: dict[str, object] = {}


def redis_client(broker_url: str, timeout_s: float = 0.5) -> object | None:
    """A cached redis-py client of a Redis broker with short socket timeouts; None for another broker."""
    url = redis_url(broker_url)
    if url is None:
        return None
    client = _clients.get(url)
    if client is None:
        import redis

        client = _clients[url] = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=30
        )
    return client


def clear_queued_mark(broker_url: str, queue_name: str, task_name: str, model_id: str) -> None:
    """What a task does when it starts: the next request for the model enqueues again. Never raises."""
    client = redis_client(broker_url)
    if client is None:
        return
    try:
        client.delete(queued_mark(queue_name, task_name, model_id))  # type: ignore[attr-defined]
    except Exception:  # the mark expires by itself
        pass
