"""Status-change callbacks (DESIGN section 5) through a durable outbox: the one way they are sent.

A callback POSTs the request resource (exactly what `GET /v1/deletion-requests/{id}` served when the
status changed) to its `callback_url`, signed `X-Unlearn-Signature: sha256=<hex HMAC-SHA256 of the exact
body bytes with the server secret>` and named `X-Unlearn-Delivery: <delivery id>`.

Writing (any process): `core.lifecycle` calls `owe_callback` on every status change of a request that
has a callback URL; when the transaction commits, a `before_commit` hook inserts one `callback_outbox`
row per such request (one multi-row INSERT, the resource as committed) in that same transaction. So a
committed status change always has its row, and a rolled-back one has none. After the commit the
session's `Notify` (set by `notify_after_commit`) is told once, which enqueues the delivery task.

Delivering (the workers: the `worker.deliver_callbacks` task, and every reaper pass): `deliver_due`
claims due rows, at most the oldest pending row of each request (a request's callbacks leave in the
order its status changed), and leases them (`next_attempt_at` moves past the attempt's longest
duration, so a worker that dies mid-attempt leaves the row to the next pass). Each POST goes to an
address checked again just before (`core.netguard`; a refused target fails the delivery at once, never
retried) and pinned: the connection goes to the checked address, with the URL's Host header and TLS
server name. A 2xx delivers; connection errors, timeouts, 5xx, 408 and 429 are retried with doubling
backoff until `callback_attempts`; a redirect or any other 4xx fails at once. At least once: a
receiver drops duplicates by the delivery id, which every retry repeats.

Torch-free, web-free and worker-free.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, event, exists, insert, select, update
from sqlalchemy.orm import Session, object_session

from core.db.models import CallbackDelivery, DeletionRequest, DeliveryStatus, new_id, utcnow
from core.resources import request_resource

if TYPE_CHECKING:
    from core.netguard import Target
    from core.settings import Settings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Unlearn-Signature"
DELIVERY_HEADER = "X-Unlearn-Delivery"
RETRYABLE_STATUSES = frozenset({408, 429})
LEASE_TIMEOUTS = 3
"""An attempt's lease: connect, send and read may each take callback_timeout_s ..."""
LEASE_MARGIN_S = 5.0
"""... plus the target check and the database round trips."""
SENDERS = 8
"""Deliveries in flight at once (each to another request): a claim takes no more rows than this, so every
claimed attempt starts at once and ends within its lease."""
ERROR_CHARS = 2000

Notify = Callable[[], object]
"""Told (best effort) after a commit that wrote outbox rows: wakes a deliverer."""

_OWED = "callbacks_owed"
_WROTE = "callbacks_wrote"
_NOTIFY = "callbacks_notify"


def sign_body(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secret: str) -> bool:
    """Constant-time check of a `sha256=<hex>` header against the body (what a receiver does)."""
    if not header or not header.startswith("sha256="):
        return False
    # Bytes, not str: compare_digest raises TypeError on a non-ASCII str, and the header is untrusted.
    return hmac.compare_digest(header.encode("utf-8", "surrogatepass"), sign_body(body, secret).encode())


def callback_body(resource: dict[str, Any]) -> str:
    """The exact JSON text a callback carries (its UTF-8 bytes are signed)."""
    return json.dumps(resource, sort_keys=True, ensure_ascii=False)


# -- writing the outbox, in the transaction of the status change ----------------------------------------


def owe_callback(request: DeletionRequest | Mapping[str, Any], session: Session | None = None) -> None:
    """`request`'s status changed: if it has a callback URL, its outbox row is written when the
    transaction commits, with the resource as committed (`core.lifecycle` calls this, nothing else).
    `request` is an ORM object (its session found from it) or a new request's complete row (`session`
    given: `core.lifecycle.requests_received`)."""
    url = request["callback_url"] if isinstance(request, Mapping) else request.callback_url
    if not url:
        return
    session = session if session is not None else object_session(request)
    if session is None:
        raise RuntimeError(f"deletion request {request} changed status outside a session")
    owed: dict[int, DeletionRequest | Mapping[str, Any]] | None = session.info.get(_OWED)
    if owed is None:
        owed = session.info[_OWED] = {}
        event.listen(session, "before_commit", _write_owed)
        event.listen(session, "after_commit", _notify)
        event.listen(session, "after_soft_rollback", _forget)
    owed[id(request)] = request  # by object: a new ORM request has no id before its flush


def _write_owed(session: Session) -> None:
    owed: dict[int, DeletionRequest | Mapping[str, Any]] = session.info.get(_OWED, {})
    if not owed:
        return
    session.flush()  # the resource as this transaction leaves it
    now = utcnow()
    resources = [request_resource(request) for request in owed.values()]
    rows = [
        {
            "delivery_id": new_id("dlv"),
            "request_id": resource["id"],
            "url": resource["callback_url"],
            "body": callback_body(resource),
            "status": DeliveryStatus.pending.value,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for resource in resources
    ]
    owed.clear()
    session.connection().execute(insert(CallbackDelivery.__table__), rows)
    session.info[_WROTE] = True


def _notify(session: Session) -> None:
    if not session.info.pop(_WROTE, False):
        return
    notify: Notify | None = session.info.get(_NOTIFY)
    if notify is None:
        return
    try:
        notify()
    except Exception:  # the reaper's sweep delivers what no wake-up announced
        log.exception("callbacks: could not wake a deliverer; the reaper's next pass delivers")


def _forget(session: Session, previous: Any) -> None:
    if getattr(previous, "nested", False):
        return  # a savepoint: the transaction goes on, and so do the callbacks it owes
    session.info.get(_OWED, {}).clear()
    session.info.pop(_WROTE, None)


def notify_after_commit(session: Session, notify: Notify | None) -> None:
    """After each commit of `session` that wrote outbox rows, call `notify` once."""
    if notify is None:
        session.info.pop(_NOTIFY, None)
    else:
        session.info[_NOTIFY] = notify


@contextmanager
def write_session(database_url: str, notify: Notify | None = None) -> Iterator[Session]:
    """`session_scope` whose commit, when it owed callbacks, calls `notify` (the job loop's writes)."""
    from core.db import session_scope

    with session_scope(database_url) as session:
        notify_after_commit(session, notify)
        yield session


class Waker:
    """A `Notify` that calls `send` from a daemon thread: a commit never waits for the broker, and the
    commits made while a send is in flight share the next one."""

    def __init__(self, send: Callable[[], object]) -> None:
        self.send = send
        self._due = False
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def __call__(self) -> None:
        with self._wake:
            self._due = True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="callback-waker", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._due)
                self._due = False
            try:
                self.send()
            except Exception:
                log.exception("callbacks: could not enqueue the delivery task; the reaper delivers")


# -- delivering -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    id: int
    delivery_id: str
    request_id: str
    url: str
    body: str
    attempts: int
    """Including the attempt this claim makes."""


@dataclass(frozen=True)
class Attempt:
    delivered: bool
    status_code: int | None = None
    error: str | None = None
    final: bool = False
    """A failure no retry can fix (a refused target, a redirect, a 4xx)."""


@dataclass
class DeliveryReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0


def lease_s(settings: Settings) -> float:
    return LEASE_TIMEOUTS * settings.callback_timeout_s + LEASE_MARGIN_S


_outbox = CallbackDelivery.__table__
PENDING, DELIVERED, FAILED = (status.value for status in DeliveryStatus)


def claim_due(engine: Engine, settings: Settings, now: datetime, limit: int = SENDERS) -> list[Claimed]:
    """Lease the due rows that are first in line for their request (in one statement: `FOR UPDATE SKIP
    LOCKED` on PostgreSQL, so workers claim disjoint rows; SQLite runs it under its write lock). A due
    row with no attempt left lost its last attempt with a worker that stopped: it fails."""
    t, earlier = _outbox, _outbox.alias("earlier")
    due = (t.c.status == PENDING) & (t.c.next_attempt_at <= now)
    first_in_line = ~exists().where(
        earlier.c.request_id == t.c.request_id, earlier.c.status == PENDING, earlier.c.id < t.c.id
    )
    candidates = (
        select(t.c.id)
        .where(due, t.c.attempts < settings.callback_attempts, first_in_line)
        .order_by(t.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=t)
    )
    lease = now + timedelta(seconds=lease_s(settings))
    claim = (
        update(t)
        .where(t.c.id.in_(candidates.scalar_subquery()))
        .values(attempts=t.c.attempts + 1, next_attempt_at=lease, updated_at=now)
        .returning(t.c.id, t.c.delivery_id, t.c.request_id, t.c.url, t.c.body, t.c.attempts)
    )
    with engine.begin() as connection:
        connection.execute(
            update(t)
            .where(due, t.c.attempts >= settings.callback_attempts)
            .values(
                status=FAILED,
                last_error="the last attempt was lost with the worker that made it",
                finished_at=now,
                updated_at=now,
            )
        )
        rows = connection.execute(claim).all()
    return sorted((Claimed(*row) for row in rows), key=lambda claimed: claimed.id)


def post_delivery(target: Target, body: bytes, delivery_id: str, secret: str, timeout_s: float) -> Attempt:
    """One signed POST to the checked address of `target` (Host header and TLS server name from its
    URL), no redirect followed, no proxy from the environment."""
    import httpx

    url = httpx.URL(target.url)
    headers = {
        "Host": url.netloc.decode("ascii"),
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign_body(body, secret),
        DELIVERY_HEADER: delivery_id,
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        with httpx.Client(trust_env=False, follow_redirects=False, timeout=timeout_s) as client:
            response = client.post(
                url.copy_with(host=str(target.address)), content=body, headers=headers, extensions=extensions
            )
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as failure:  # a URL no retry fixes
        return Attempt(False, error=f"{type(failure).__name__}: {failure}", final=True)
    except httpx.HTTPError as failure:  # connection refused, timeout, ...
        return Attempt(False, error=f"{type(failure).__name__}: {failure}")
    status = response.status_code
    if 200 <= status < 300:
        return Attempt(True, status)
    error = f"the receiver answered {status}"
    if 300 <= status < 400:
        return Attempt(False, status, f"{error} (a redirect: not followed)", final=True)
    return Attempt(False, status, error, final=status < 500 and status not in RETRYABLE_STATUSES)


def attempt_delivery(claimed: Claimed, settings: Settings) -> Attempt:
    """Check the target again (DNS may answer differently than at POST), then POST; never raises."""
    from core.netguard import TargetRefused, TargetUnresolved, check_target

    try:
        target = check_target(claimed.url, tuple(settings.callback_allow_networks))
    except TargetRefused as refused:
        return Attempt(False, error=f"callback target refused: {refused}", final=True)
    except TargetUnresolved as unresolved:
        return Attempt(False, error=f"callback target unresolved: {unresolved}")
    try:
        return post_delivery(
            target,
            claimed.body.encode(),
            claimed.delivery_id,
            settings.server_secret,
            settings.callback_timeout_s,
        )
    except Exception as error:  # a bug must not stop the other deliveries
        log.exception("callbacks: delivery %s raised", claimed.delivery_id)
        return Attempt(False, error=f"{type(error).__name__}: {error}")


def record_attempt(engine: Engine, claimed: Claimed, attempt: Attempt, settings: Settings) -> str:
    """Write the attempt's outcome (unless another worker claimed the row since); the row's new status."""
    now = utcnow()
    values: dict[str, Any] = {
        "last_status_code": attempt.status_code,
        "last_error": attempt.error[:ERROR_CHARS] if attempt.error else None,
        "updated_at": now,
    }
    if attempt.delivered:
        status = DELIVERED
        values.update(status=status, finished_at=now)
    elif attempt.final or claimed.attempts >= settings.callback_attempts:
        status = FAILED
        values.update(status=status, finished_at=now)
    else:
        status = PENDING
        wait_s = settings.callback_backoff_s * 2 ** (claimed.attempts - 1)
        values.update(next_attempt_at=now + timedelta(seconds=wait_s))
    with engine.begin() as connection:
        connection.execute(
            update(_outbox)
            .where(
                _outbox.c.id == claimed.id,
                _outbox.c.status == PENDING,
                _outbox.c.attempts == claimed.attempts,
            )
            .values(**values)
        )
    if status == FAILED:
        log.warning(
            "callback %s to %s failed after %d attempts: %s",
            claimed.delivery_id,
            claimed.url,
            claimed.attempts,
            attempt.error,
        )
    return status


def deliver_due(
    engine: Engine, settings: Settings, *, budget_s: float = 60.0, now: datetime | None = None
) -> DeliveryReport:
    """Claim and deliver due rows, batch after batch, until none is due or `budget_s` has passed.
    `now`: what is due at that time (tests: "after the lease ran out")."""
    report = DeliveryReport()
    deadline = time.monotonic() + budget_s
    while True:
        claimed = claim_due(engine, settings, now or utcnow())
        if not claimed:
            return report
        with ThreadPoolExecutor(min(len(claimed), SENDERS), thread_name_prefix="callback") as senders:
            attempts = {senders.submit(attempt_delivery, row, settings): row for row in claimed}
            for done in as_completed(attempts):
                status = record_attempt(engine, attempts[done], done.result(), settings)
                if status == DELIVERED:
                    report.delivered += 1
                elif status == FAILED:
                    report.failed += 1
                else:
                    report.retrying += 1
        if time.monotonic() > deadline:
            return report
