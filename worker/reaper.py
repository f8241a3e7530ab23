"""The reaper: re-enqueue, from the database, work the broker may have lost.

Runs in every worker's main process, at start-up and then every `interval_s` (a daemon thread started
on Celery's `worker_ready` signal; celery beat is not needed). What it enqueues is planned from the
rows alone by `core.jobs.reaping.plan_reaping`. Each pass also purges the checkpoints of retired versions
whose grace is over (`core.jobs.purge`), so a worker killed between a commit and its purge leaves no live
file of a retired version once a worker runs again. And it delivers the due callbacks of the outbox
(`core.callbacks.deliver_due`), so none waits for a lost enqueue or a dead worker.

Enqueueing is always safe: a delivery that finds a live job or nothing to do returns at once, and the
claim gives up on a job after `max_attempts`. To keep the broker quiet while one worker is busy for a
long time, a model is re-enqueued at most once per `reenqueue_interval_s` by the same reaper.

Also here: the other signal handlers of the worker process (ready file for supervisors, resetting
DB engines inherited across fork).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from celery.signals import worker_process_init, worker_ready, worker_shutdown
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from core.callbacks import deliver_due
from core.jobs.purge import purge_due_checkpoints
from core.jobs.reaping import ReapPlan, plan_reaping
from core.settings import Settings, get_settings
from core.storage import artifact_store
from core.tasks import PROCESS_MODEL_TASK, TRAIN_BASE_MODEL_TASK
from worker.celery_app import WORKER_READY_FILE_ENV, enqueue

log = logging.getLogger(__name__)


@dataclass
class Reaper:
    """Periodic reaping in a daemon thread; `run_once` is what the thread (and the tests) call."""

    settings: Settings
    enqueue_task: Callable[[str, str], object]
    interval_s: float
    grace_s: float
    reenqueue_interval_s: float
    _engine: Engine | None = field(default=None, init=False)
    _last_enqueued: dict[tuple[str, str], float] = field(default_factory=dict, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    @classmethod
    def from_settings(cls, settings: Settings, enqueue_task: Callable[[str, str], object]) -> Reaper:
        stale = settings.heartbeat_stale_s
        return cls(
            settings,
            enqueue_task,
            interval_s=max(stale / 2, 1.0),
            grace_s=stale,
            reenqueue_interval_s=max(stale * 5, 30.0),
        )

    def engine(self) -> Engine:
        # NullPool: the main worker process keeps no idle connection that a forked pool child could inherit.
        if self._engine is None:
            url = self.settings.database_url
            connect_args: dict[str, Any] = {"timeout": 30.0} if url.startswith("sqlite") else {}
            self._engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
        return self._engine

    def run_once(self, now: datetime | None = None) -> ReapPlan:
        from core.db import utcnow

        now = now or utcnow()
        try:
            purge_due_checkpoints(
                self.settings.database_url, artifact_store(self.settings), now, actor="reaper"
            )
        except Exception:
            log.exception("reaper: purging retired checkpoints failed; next pass retries")
        with Session(self.engine()) as session:
            plan = plan_reaping(
                session,
                now=now,
                heartbeat_stale_s=self.settings.heartbeat_stale_s,
                grace_s=self.grace_s,
            )
        clock = time.monotonic()
        for task, model_ids in (
            (PROCESS_MODEL_TASK, plan.process_models),
            (TRAIN_BASE_MODEL_TASK, plan.train_models),
        ):
            for model_id in sorted(model_ids):
                last = self._last_enqueued.get((task, model_id))
                if last is not None and clock - last < self.reenqueue_interval_s:
                    continue
                log.info("reaper: re-enqueueing %s(%s)", task, model_id)
                self.enqueue_task(task, model_id)
                self._last_enqueued[(task, model_id)] = clock
        self.sweep_callbacks()
        return plan

    def sweep_callbacks(self) -> None:
        """Deliver the due rows of the callback outbox from here as well: a lost enqueue, a worker killed
        with a delivery in flight, or pool processes all busy with long jobs delay a callback by one pass
        at most."""
        try:
            deliver_due(self.engine(), self.settings, budget_s=self.interval_s)
        except Exception:
            log.exception("reaper: delivering due callbacks failed; next pass retries")

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception:
                log.exception("reaper pass failed; retrying in %.0f s", self.interval_s)
            if self._stop.wait(self.interval_s):
                return

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="unlearn-reaper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._engine is not None:
            self._engine.dispose()


_reaper: Reaper | None = None


@worker_ready.connect
def _on_worker_ready(**_: Any) -> None:
    global _reaper
    _reaper = Reaper.from_settings(get_settings(), enqueue)
    _reaper.start()
    ready_file = os.environ.get(WORKER_READY_FILE_ENV)
    if ready_file:
        Path(ready_file).write_text(f"{os.getpid()}\n")


@worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    if _reaper is not None:
        _reaper.stop()


@worker_process_init.connect
def _on_process_init(**_: Any) -> None:
    """Drop (without closing) any DB engine a pool child inherited through fork; it opens its own."""
    from core.db import session as db_session

    for engine in list(db_session._engines.values()):  # noqa: SLF001 - no public reset-after-fork yet
        engine.dispose(close=False)
    db_session._engines.clear()  # noqa: SLF001
