"""Group commit of POST /v1/deletion-requests: the requests a process receives together are checked and
stored in one transaction (`service.create_requests`), each answered on its own.

`workers` threads (`write_batch_workers`) take whatever is waiting, up to `max_batch`, whenever they are
free: one request alone when the API is quiet (no added latency), tens at a time under load, where the
statements, the flush, the commit's WAL flush and the audit chain's lock are paid once per transaction
instead of once per request. A handler waits for its outcome without a thread or a connection.

If the transaction loses a race (IntegrityError: a concurrent writer took an id or an idempotency key
first) it is rolled back and the whole group checked once more, so the losers get their 422 and the
others are stored. Any other failure (the database went away) is every request's failure (503).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.deletion.service import Created, NewRequest, create_requests
from app.errors import ProblemError
from core.settings import Settings
from core.tasks import PROCESS_MODEL_TASK, Enqueue

logger = logging.getLogger("app.deletion.group_commit")
ATTEMPTS = 4
"""Checks and writes of one group before a 409. Each lost race means another writer committed first, so a
burst whose requests contend for the same ids needs up to one attempt per writer overlapping it (two
processes with `write_batch_workers` 2 each: four). With 2, the burst regression test got an occasional
409 once the bulk inserts shortened every transaction (2 of 10 runs)."""
T = TypeVar("T")


@dataclass
class _Waiting:
    request: NewRequest
    future: Future[Created]


class GroupCommit:
    def __init__(
        self,
        open_session: Callable[[], Session],
        settings: Callable[[], Settings],
        enqueue: Callable[[], Enqueue],
        *,
        workers: int,
        max_batch: int,
    ) -> None:
        self.open_session = open_session
        self.settings = settings
        self.enqueue = enqueue
        self.workers = workers
        self.max_batch = max_batch
        self.transactions = 0
        self.requests = 0
        self._queue: deque[_Waiting] = deque()
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def submit(self, request: NewRequest) -> Future[Created]:
        """The request's (row, created), or its ProblemError / database error, once its group committed."""
        waiting = _Waiting(request, Future())
        with self._wake:
            if self._stopping or not self._threads:
                running = False
            else:
                running = True
                self._queue.append(waiting)
                self._wake.notify()
        if not running:  # not started (no lifespan) or stopping: commit it alone, here
            self._commit([waiting])
        return waiting.future

    def start(self) -> None:
        with self._wake:
            self._stopping = False
            while len(self._threads) < self.workers:
                thread = threading.Thread(
                    target=self._loop, name=f"group-commit-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Commit what is waiting, then end the threads."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=timeout_s)

    def _loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: bool(self._queue) or self._stopping)
                if not self._queue:
                    return
                group = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            self._commit(group)

    def _commit(self, group: list[_Waiting]) -> None:
        try:
            results = self._write([waiting.request for waiting in group])
        except BaseException as error:
            for waiting in group:
                waiting.future.set_exception(error)
            return
        models = [
            result[0].model_id for result in results if not isinstance(result, ProblemError) and result[1]
        ]
        enqueue = self.enqueue()
        for model_id in dict.fromkeys(models):
            enqueue(PROCESS_MODEL_TASK, model_id)
        for waiting, result in zip(group, results, strict=True):
            if isinstance(result, ProblemError):
                waiting.future.set_exception(result)
            else:
                waiting.future.set_result(result)

    def _write(self, requests: list[NewRequest]) -> list[Created | ProblemError]:
        try:
            results = commit_with_retry(
                self.open_session, lambda s: create_requests(s, self.settings(), requests)
            )
        except ProblemError as conflict:
            return [conflict] * len(requests)
        self.transactions += 1
        self.requests += len(requests)
        return results


def commit_with_retry(open_session: Callable[[], Session], write: Callable[[Session], T]) -> T:
    """`write` in a new session, committed; checked and written again after an IntegrityError (a
    concurrent writer took an id or an idempotency key first: the next check reports it); after ATTEMPTS
    lost races, a 409 to retry."""
    for attempt in range(1, ATTEMPTS + 1):
        session = open_session()
        try:
            result = write(session)
            session.commit()
            return result
        except IntegrityError:
            session.rollback()
            if attempt == ATTEMPTS:
                raise ProblemError(
                    409,
                    "a concurrent request changed what this one depends on; retry",
                    slug="conflict",
                    headers={"Retry-After": "1"},
                ) from None
        finally:
            session.close()
    raise AssertionError("unreachable")
