"""Enqueueing worker tasks by name: the API never imports `worker`.

The database is the source of truth: a request is committed before its task is sent, and a failed
send only logs (the worker's reaper re-enqueues anything queued without a live job). Tests replace
`app.state.enqueue` with a recording fake.

One enqueue per model, not per request: a request's `PROCESS_MODEL_TASK` is handed to a background sender
(the answer does not wait for the broker), which sends it only when the model's queued mark could be set
(`core.tasks.queued_mark`; the task clears it when it starts): the requests of a model that arrive together
cost one SET NX, and no task while one is waiting. A failure to reach the broker opens the broker breaker
(`app.overload`): the endpoints that enqueue answer 503 until a probe succeeds.
"""

import logging
import threading
from typing import Any

from app.overload import Breaker
from core.tasks import PROCESS_MODEL_TASK, queue_for, queued_mark, redis_client

logger = logging.getLogger("app.queue")


class CeleryEnqueue:
    """A `core.tasks.Enqueue`: `send_task` on a Celery client for `broker_url`, created on first use."""

    def __init__(
        self,
        broker_url: str,
        queue_name: str,
        *,
        connect_timeout_s: float = 3.0,
        breaker: Breaker | None = None,
        mark_ttl_s: int = 300,
    ) -> None:
        self.broker_url = broker_url
        self.queue_name = queue_name
        self.connect_timeout_s = connect_timeout_s
        self.breaker = breaker
        self.mark_ttl_s = mark_ttl_s
        self.sent = 0
        self.skipped = 0
        self._client: Any = None
        self._due: dict[str, None] = {}
        self._busy = False
        self._wake = threading.Condition()
        self._sender: threading.Thread | None = None

    def _celery(self) -> Any:
        if self._client is None:
            from celery import Celery

            client = Celery("unlearn-api", broker=self.broker_url)
            client.conf.broker_connection_timeout = self.connect_timeout_s
            client.conf.broker_connection_retry_on_startup = False
            client.conf.broker_transport_options = {
                "socket_timeout": self.connect_timeout_s,
                "socket_connect_timeout": self.connect_timeout_s,
            }
            self._client = client
        return self._client

    def _failed(self, task_name: str, model_id: str, error: Exception) -> bool:
        logger.warning(
            "could not enqueue %s(%s); the reaper will pick it up from the DB: %s", task_name, model_id, error
        )
        if self.breaker is not None:
            self.breaker.trip(f"{type(error).__name__}: {error}")
        return False

    def __call__(self, task_name: str, model_id: str, countdown_s: float | None = None) -> bool:
        """Send the task; `PROCESS_MODEL_TASK` without a countdown on a Redis broker is queued for the
        background sender instead (True: it will be sent unless one is waiting already)."""
        if task_name == PROCESS_MODEL_TASK and countdown_s is None and redis_client(self.broker_url):
            with self._wake:
                self._due[model_id] = None
                if self._sender is None or not self._sender.is_alive():
                    self._sender = threading.Thread(target=self._send_due, name="enqueue", daemon=True)
                    self._sender.start()
                self._wake.notify()
            return True
        return self._send(task_name, model_id, countdown_s)

    def _send_due(self) -> None:
        while True:
            with self._wake:
                self._busy = False
                self._wake.notify_all()
                self._wake.wait_for(lambda: bool(self._due))
                due, self._due, self._busy = list(self._due), {}, True
            for model_id in due:
                self._send_once(model_id)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until the background sender has sent (or given up on) everything handed to it."""
        with self._wake:
            self._wake.wait_for(lambda: not self._due and not self._busy, timeout_s)

    def _send_once(self, model_id: str) -> bool:
        marks = redis_client(self.broker_url)
        mark = queued_mark(self.queue_name, PROCESS_MODEL_TASK, model_id)
        try:
            if not marks.set(mark, b"1", nx=True, ex=self.mark_ttl_s):  # type: ignore[union-attr]
                self.skipped += 1
                return True  # a task for this model is queued and has not started: it will claim
        except Exception as error:
            return self._failed(PROCESS_MODEL_TASK, model_id, error)
        if self._send(PROCESS_MODEL_TASK, model_id, None):
            return True
        try:
            marks.delete(mark)  # type: ignore[union-attr]
        except Exception:
            pass  # it expires
        return False

    def _send(self, task_name: str, model_id: str, countdown_s: float | None) -> bool:
        try:
            self._celery().send_task(
                task_name,
                args=[model_id],
                queue=queue_for(task_name, self.queue_name),
                countdown=countdown_s,
                retry=True,
                retry_policy={
                    "max_retries": 2,
                    "interval_start": 0.2,
                    "interval_step": 0.5,
                    "interval_max": 1,
                },
            )
        except Exception as error:
            return self._failed(task_name, model_id, error)
        self.sent += 1
        return True


def broker_ping(broker_url: str, timeout_s: float = 2.0) -> str | None:
    """None when the broker answers, else a short reason."""
    try:
        from kombu import Connection

        with Connection(
            broker_url,
            connect_timeout=timeout_s,
            transport_options={"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s},
        ) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout_s)
        return None
    except Exception as error:
        return f"{type(error).__name__}: {error}"[:300]


def probe_broker(broker_url: str, timeout_s: float = 1.0) -> str | None:
    """None when the broker answers (a Redis PING, or a connection for another broker), else why not."""
    client = redis_client(broker_url)
    if client is None:
        return broker_ping(broker_url, timeout_s)
    try:
        client.ping()  # type: ignore[attr-defined]
        return None
    except Exception as error:
        return f"{type(error).__name__}: {error}"[:300]
