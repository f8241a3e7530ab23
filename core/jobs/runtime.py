"""The runtime of one claimed job while it computes: heartbeat thread, throttled progress writes and the
cancellation check.

Nothing holds a DB session across the computation: one short transaction per heartbeat, per throttled
progress update and per throttled cancellation check.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from core.db import session_scope, utcnow
from core.jobs import fence
from core.jobs.claim import JobClaim

log = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL_S = 0.5
CANCEL_CHECK_INTERVAL_S = 0.25


class JobRuntime:
    """Heartbeat thread, throttled progress writes and the cancellation check of one claimed job."""

    def __init__(
        self,
        claim: JobClaim,
        *,
        database_url: str,
        heartbeat_interval_s: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.claim = claim
        self.database_url = database_url
        self.heartbeat_interval_s = heartbeat_interval_s
        self.clock = clock
        self.lost = threading.Event()
        self._stopped = threading.Event()
        # Run in a copy of the creator's context: the heartbeat's log lines carry the job's ids.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._heartbeat_loop,),
            name=f"heartbeat-{claim.job_id}",
            daemon=True,
        )
        self._last_write = 0.0
        self._last_stage = ""
        self._last_cancel_check = 0.0
        self._cancel_seen = False

    def __enter__(self) -> JobRuntime:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)

    def _heartbeat_loop(self) -> None:
        while not self._stopped.wait(self.heartbeat_interval_s):
            try:
                with session_scope(self.database_url) as session:
                    if not fence.record_heartbeat(session, self.claim, self.clock()):
                        log.warning(
                            "job %s: claim lost (another worker took over); stopping", self.claim.job_id
                        )
                        self.lost.set()
                        return
            except Exception:  # a DB hiccup must not kill the heartbeat thread; the next beat retries
                log.exception("job %s: heartbeat failed", self.claim.job_id)

    def progress(self, fraction: float, stage: str) -> None:
        """Write progress/stage when the stage changes or every PROGRESS_WRITE_INTERVAL_S."""
        now = time.monotonic()
        if stage == self._last_stage and now - self._last_write < PROGRESS_WRITE_INTERVAL_S:
            return
        self._last_write, self._last_stage = now, stage
        try:
            with session_scope(self.database_url) as session:
                if not fence.record_progress(
                    session, self.claim, fraction=fraction, stage=stage, now=self.clock()
                ):
                    self.lost.set()
        except Exception:
            log.exception("job %s: progress update failed", self.claim.job_id)

    def should_stop(self, *, force: bool = False) -> bool:
        """True once a served request asked to cancel, or the claim was lost.

        The DB is read at most every CANCEL_CHECK_INTERVAL_S (a method calls this every iteration);
        `force` reads it now (the last check before results are written).
        """
        if self.lost.is_set() or self._cancel_seen:
            return True
        now = time.monotonic()
        if force or now - self._last_cancel_check >= CANCEL_CHECK_INTERVAL_S:
            self._last_cancel_check = now
            try:
                with session_scope(self.database_url, readonly=True) as session:
                    self._cancel_seen = fence.cancel_requested(session, self.claim)
            except Exception:
                log.exception("job %s: cancellation check failed", self.claim.job_id)
        return self._cancel_seen or self.lost.is_set()

    def window(self, start: float, end: float) -> Callable[[float, str], None]:
        """A progress callback mapping a phase's own [0, 1] onto [start, end] of the whole job."""

        def report(fraction: float, stage: str) -> None:
            self.progress(start + (end - start) * min(max(fraction, 0.0), 1.0), stage)

        return report
