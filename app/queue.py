"""Enqueueing worker tasks by name: the API never imports `worker`.

The database is the source of truth: a request is committed before its task is sent, and a failed
send only logs (the worker's reaper re-enqueues anything queued without a live job). Tests replace
`app.state.enqueue` with a recording fake.
"""

import logging
from typing import Any

logger = logging.getLogger("app.queue")


class CeleryEnqueue:
    """A `core.tasks.Enqueue`: `send_task` on a Celery client for `broker_url`, created on first use."""

    def __init__(self, broker_url: str, queue_name: str, *, connect_timeout_s: float = 3.0) -> None:
        self.broker_url = broker_url
        self.queue_name = queue_name
        self.connect_timeout_s = connect_timeout_s
        self._client: Any = None

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

    def __call__(self, task_name: str, model_id: str, countdown_s: float | None = None) -> bool:
        try:
            self._celery().send_task(
                task_name,
                args=[model_id],
                queue=self.queue_name,
                countdown=countdown_s,
                retry=True,
                retry_policy={
                    "max_retries": 2,
                    "interval_start": 0.2,
                    "interval_step": 0.5,
                    "interval_max": 1,
                },
            )
            return True
        except Exception:
            logger.warning(
                "could not enqueue %s(%s); the reaper will pick it up from the DB",
                task_name,
                model_id,
                exc_info=True,
            )
            return False


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
