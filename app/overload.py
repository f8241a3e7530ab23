"""No 500 under overload or outage: admission control, circuit breakers and the 503 answers.

- `AdmissionControl` (ASGI middleware): a process works on at most `api_max_concurrency` requests at once,
  each holding at most one pooled connection and one thread, so the pool can never run dry while a
  holder waits for a thread (the old deadlock: dependencies and handlers each took a threadpool slot
  while a connection stayed checked out). The others wait for a turn in the event loop, at no cost; one
  that waits longer than `api_queue_timeout_s`, or finds `api_max_queue` waiting already, is shed with
  503 + Retry-After. While the database breaker is open every endpoint but the probes answers 503 at
  once; while the broker breaker is open so do the endpoints that enqueue (after a probe of the broker).
- `Breaker`: opened by a failure for `cooldown_s`; the next caller after that tries again.
- `install_outage_handlers`: a database error that escapes a handler is a 503 problem with Retry-After
  (and opens the database breaker when the database could not be reached), never a 500.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_item, problem_response, send_problem
from core.settings import Settings

logger = logging.getLogger("app.overload")

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc"})
"""Never queued nor refused by a breaker: liveness, readiness (it reports the outage itself), metrics."""
GROUP_COMMIT_ROUTES = frozenset({("POST", "/v1/deletion-requests")})
"""Requests that wait for a group commit (`app.deletion.group_commit`) without a thread or a connection:
admitted by their own, larger gate (`api_max_writes`)."""
BATCH_ROUTES = frozenset({("POST", "/v1/deletion-requests/batch")})
"""CPU-heavy requests (up to 1,000 deletion requests each): their own, small gate (`api_max_batches`),
since more of them at once in one process only make the threads fight over the GIL (measured: 8 at once
cost 3.3 times the CPU per batch of 2 at once)."""
ENQUEUING_ROUTES = frozenset(
    {("POST", "/v1/deletion-requests"), ("POST", "/v1/deletion-requests/batch"), ("POST", "/v1/models")}
)
"""Requests that end by sending a task: refused while the broker is known to be unreachable."""


class Breaker:
    """Open for `cooldown_s` after a failure; thread-safe; `reason` says what failed last."""

    def __init__(self, name: str, cooldown_s: float) -> None:
        self.name = name
        self.cooldown_s = cooldown_s
        self.reason: str | None = None
        self._open_until = 0.0
        self._lock = threading.Lock()

    def trip(self, reason: str) -> None:
        with self._lock:
            if not self.is_open():
                logger.warning(
                    "%s unreachable (%s): answering 503 for %.1f s", self.name, reason, self.cooldown_s
                )
            self.reason = reason[:300]
            self._open_until = time.monotonic() + self.cooldown_s

    def reset(self) -> None:
        with self._lock:
            self._open_until = 0.0
            self.reason = None

    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def tripped(self) -> bool:
        """Failed before and not reset since (open, or cooled down and waiting for a probe)."""
        return self.reason is not None


def _is_connection_failure(error: BaseException) -> bool:
    """The database could not be reached (as opposed to a busy one: a deadlock, a lock or statement
    timeout, a serialisation failure)."""
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    orig = getattr(error, "orig", None) or error
    sqlstate = getattr(orig, "sqlstate", None)
    if type(orig).__module__.startswith("psycopg"):
        return sqlstate is None or sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03")
    return "unable to open database" in str(orig)


class Gate:
    """At most `limit` holders at once; a caller waits up to `timeout_s` for a turn, behind at most
    `max_waiting` others, else is refused (False)."""

    def __init__(self, limit: int, max_waiting: int, timeout_s: float) -> None:
        self.limit, self.max_waiting, self.timeout_s = limit, max_waiting, timeout_s
        self.holders = 0
        self.waiting = 0
        self._semaphore: asyncio.Semaphore | None = None

    async def enter(self) -> str | None:
        """None once in without waiting, "" once in after a wait (call `leave` after either), else why
        not."""
        if self._semaphore is None:  # created in the serving event loop
            self._semaphore = asyncio.Semaphore(self.limit)
        if self._semaphore.locked():
            if self.waiting >= self.max_waiting:
                return f"{self.waiting} requests are already waiting"
            self.waiting += 1
            try:
                await asyncio.wait_for(self._semaphore.acquire(), self.timeout_s)
            except TimeoutError:
                return f"no turn within {self.timeout_s:g} s"
            finally:
                self.waiting -= 1
            self.holders += 1
            return ""
        await self._semaphore.acquire()
        self.holders += 1
        return None

    def leave(self) -> None:
        assert self._semaphore is not None
        self.holders -= 1
        self._semaphore.release()


class AdmissionControl:
    """See the module docstring. State lives on `app.state` (`db_breaker`, `broker_breaker`)."""

    def __init__(self, app: ASGIApp, settings: Settings, state: Any) -> None:
        self.app = app
        self.settings = settings
        self.state = state
        timeout_s, queue = settings.api_queue_timeout_s, settings.api_max_queue
        self.gate = Gate(settings.api_max_concurrency, queue, timeout_s)
        self.writes = Gate(settings.api_max_writes, queue, timeout_s)
        self.batches = Gate(settings.api_max_batches, queue, settings.api_batch_queue_timeout_s)
        self.db_breaker: Breaker = state.db_breaker
        state.admission = self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        settings = self.settings
        db_breaker: Breaker = self.db_breaker
        if db_breaker.is_open():
            await _unavailable(scope, send, "database", db_breaker.reason, settings.outage_retry_after_s)
            return
        route = (scope["method"], scope["path"])
        if route in ENQUEUING_ROUTES:
            reason = await self._broker_down()
            if reason is not None:
                await _unavailable(scope, send, "broker", reason, settings.outage_retry_after_s)
                return
        gate = (
            self.writes
            if route in GROUP_COMMIT_ROUTES
            else self.batches
            if route in BATCH_ROUTES
            else self.gate
        )
        refused = await gate.enter()
        if refused:
            await self._shed(scope, send, gate, refused)
            return
        try:
            if refused == "":  # it waited: its client may have given up meanwhile
                receive = await _still_wanted(receive)
                if receive is None:
                    return
            await self.app(scope, receive, send)
        finally:
            gate.leave()

    async def _broker_down(self) -> str | None:
        """None when the broker is believed reachable; after a failure, probes it once per cooldown."""
        breaker: Breaker = self.state.broker_breaker
        if not breaker.tripped():
            return None
        if breaker.is_open():
            return breaker.reason
        probe: Callable[[str], str | None] = self.state.broker_probe
        reason = await run_in_threadpool(probe, self.settings.broker_url)
        if reason is None:
            breaker.reset()
            return None
        breaker.trip(reason)
        return reason

    async def _shed(self, scope: Scope, send: Send, gate: Gate, why: str) -> None:
        detail = (
            f"the API is at capacity ({gate.limit} such requests in progress per process; {why}): "
            f"retry after {self.settings.overload_retry_after_s} s"
        )
        await send_problem(
            scope,
            send,
            503,
            "overloaded",
            detail,
            [error_item("service", "at capacity", where="service")],
            {"Retry-After": str(self.settings.overload_retry_after_s)},
        )


async def _still_wanted(receive: Receive) -> Receive | None:
    """Read the whole body now: None when the client disconnected (nobody waits for the answer, so the
    work is not done), else a `receive` that replays the body."""
    messages: list[Message] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        messages.append(message)
        if not message.get("more_body", False):
            break

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay


async def _unavailable(scope: Scope, send: Send, what: str, reason: str | None, retry_after_s: int) -> None:
    detail = f"the {what} is unreachable ({reason or 'failed'}): retry after {retry_after_s} s"
    await send_problem(
        scope,
        send,
        503,
        f"{what}-unavailable",
        detail,
        [error_item(what, reason or "unreachable", where="service")],
        {"Retry-After": str(retry_after_s)},
    )


def install_outage_handlers(app: FastAPI) -> None:
    """Database errors that escape a handler: 503 + Retry-After, opening the breaker when unreachable."""

    async def database_error(request: Request, error: Exception) -> JSONResponse:
        settings: Settings = request.app.state.settings
        reason = (
            f"{type(getattr(error, 'orig', None) or error).__name__}: {getattr(error, 'orig', None) or error}"
        )
        reason = reason.splitlines()[0][:300]
        if isinstance(error, sa_exc.TimeoutError) or type(error).__name__ == "PoolTimeout":
            return _busy(request, settings, "no database connection became free in time")
        if _is_connection_failure(error):
            request.app.state.db_breaker.trip(reason)
            return problem_response(
                request,
                503,
                slug="database-unavailable",
                detail=f"the database is unreachable ({reason}): retry after "
                f"{settings.outage_retry_after_s} s",
                errors=[error_item("database", reason, where="service")],
                headers={"Retry-After": str(settings.outage_retry_after_s)},
            )
        return _busy(request, settings, reason)

    import psycopg
    from psycopg_pool import PoolTimeout

    errors = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)
    for error_type in (*errors, psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout):
        app.add_exception_handler(error_type, database_error)


def _busy(request: Request, settings: Settings, reason: str) -> JSONResponse:
    logger.warning("database busy on %s %s: %s", request.method, request.url.path, reason)
    return problem_response(
        request,
        503,
        slug="database-busy",
        detail=f"the database is busy ({reason}): retry after {settings.overload_retry_after_s} s",
        errors=[error_item("database", reason, where="service")],
        headers={"Retry-After": str(settings.overload_retry_after_s)},
    )
