"""Status-change callbacks (DESIGN section 5), the one way both the API and the worker send them.

A callback POSTs the request resource (exactly what `GET /v1/deletion-requests/{id}` serves) to its
`callback_url`, signed `X-Unlearn-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes with the
server secret>`.

- `deliver_callback` makes one delivery: retried with exponential backoff on connection errors,
  timeouts, 5xx, 408 and 429 (every retry carries the same `X-Unlearn-Delivery` id, so a receiver can
  drop duplicates); any other 4xx is final. It never raises: a callback never fails a job or a call.
- `track_status_changes` hooks a session: after each commit it hands a snapshot of every deletion
  request whose status the transaction changed to a `Notify` function. The API's request sessions
  and the worker's write transactions both use it, so no status change can skip its callback.
- `background_sender` / `deliver_in_background` queue deliveries on a few daemon threads ("lanes"),
  so a slow or dead receiver delays neither the HTTP answer nor the job. A request always maps to the
  same lane, so its callbacks leave in the order its status changed. `flush_callbacks` waits for the
  queued deliveries (the worker tasks call it before returning, so a recycled process drops none).

- `write_session` is a write transaction hooked that way (the job loop's); `notify_requests`
  re-delivers the current resource of given requests, synchronously.

Torch-free, web-free and worker-free.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import get_history

from core.resources import request_resource

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Unlearn-Signature"
DELIVERY_HEADER = "X-Unlearn-Delivery"
RETRYABLE_STATUSES = frozenset({408, 429})
DEFAULT_ATTEMPTS = 6
DEFAULT_BACKOFF_S = 1.0
"""1, 2, 4, 8, 16 s between the 6 attempts: about half a minute in all."""
LANES = 4

Notify = Callable[[str, str, dict[str, Any]], None]
"""notify(request_id, callback_url, resource snapshot)."""


@dataclass(frozen=True)
class CallbackOutcome:
    delivered: bool
    attempts: int
    status_code: int | None
    error: str | None
    delivery_id: str


def sign_body(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secret: str) -> bool:
    """Constant-time check of a `sha256=<hex>` header against the body (what a receiver does)."""
    if not header or not header.startswith("sha256="):
        return False
    # Bytes, not str: compare_digest raises TypeError on a non-ASCII str, and the header is untrusted.
    return hmac.compare_digest(header.encode("utf-8", "surrogatepass"), sign_body(body, secret).encode())


def deliver_callback(
    url: str,
    resource: dict[str, Any],
    secret: str,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_s: float = DEFAULT_BACKOFF_S,
    timeout_s: float = 10.0,
) -> CallbackOutcome:
    """POST `resource` as JSON to `url`, signed; retry with doubling backoff; never raise."""
    import httpx

    delivery_id = uuid.uuid4().hex
    try:
        body = json.dumps(resource, sort_keys=True, ensure_ascii=False).encode()
    except (TypeError, ValueError) as unserialisable:
        reason = f"{type(unserialisable).__name__}: {unserialisable}"
        return CallbackOutcome(False, 0, None, reason, delivery_id)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign_body(body, secret),
        DELIVERY_HEADER: delivery_id,
    }
    status_code: int | None = None
    error: str | None = None
    for attempt in range(1, max(attempts, 1) + 1):
        if attempt > 1:
            time.sleep(backoff_s * 2 ** (attempt - 2))
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=timeout_s)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL, ValueError) as failure:  # a URL no retry fixes
            return CallbackOutcome(False, attempt, None, f"{type(failure).__name__}: {failure}", delivery_id)
        except httpx.HTTPError as failure:  # connection refused, timeout, ...
            status_code, error = None, f"{type(failure).__name__}: {failure}"
            continue
        status_code = response.status_code
        if status_code < 300:
            return CallbackOutcome(True, attempt, status_code, None, delivery_id)
        error = f"the receiver answered {status_code}"
        if status_code < 500 and status_code not in RETRYABLE_STATUSES:
            return CallbackOutcome(False, attempt, status_code, error, delivery_id)
    log.warning("callback %s to %s not delivered after %d attempts: %s", delivery_id, url, attempts, error)
    return CallbackOutcome(False, max(attempts, 1), status_code, error, delivery_id)


# -- background delivery ------------------------------------------------------------------------

Job = tuple[Future[CallbackOutcome], Callable[[], CallbackOutcome]]

_lanes: list[queue.SimpleQueue[Job]] = []
_lanes_lock = threading.Lock()
_pending: set[Future[CallbackOutcome]] = set()


def _serve(lane: queue.SimpleQueue[Job]) -> None:
    while True:
        future, deliver = lane.get()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(deliver())
        except BaseException as error:  # deliver_callback does not raise; this keeps the lane alive
            future.set_exception(error)


def _lane(request_id: str) -> queue.SimpleQueue[Job]:
    # Daemon threads: an exiting process does not wait half a minute for a dead receiver's retries.
    with _lanes_lock:
        if not _lanes:
            for number in range(LANES):
                lane: queue.SimpleQueue[Job] = queue.SimpleQueue()
                threading.Thread(target=_serve, args=(lane,), name=f"callback-{number}", daemon=True).start()
                _lanes.append(lane)
    return _lanes[zlib.crc32(request_id.encode()) % LANES]


def submit_delivery(
    request_id: str,
    url: str,
    resource: dict[str, Any],
    secret: str,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_s: float = DEFAULT_BACKOFF_S,
    timeout_s: float = 10.0,
) -> Future[CallbackOutcome]:
    """Queue a delivery on the request's lane; returns at once."""
    future: Future[CallbackOutcome] = Future()
    _pending.add(future)
    future.add_done_callback(_pending.discard)
    _lane(request_id).put(
        (
            future,
            lambda: deliver_callback(
                url, resource, secret, attempts=attempts, backoff_s=backoff_s, timeout_s=timeout_s
            ),
        )
    )
    return future


def background_sender(settings: Settings) -> Notify:
    """A `Notify` that queues signed deliveries with the secret and retry settings of `settings`."""

    def notify(request_id: str, url: str, resource: dict[str, Any]) -> None:
        submit_delivery(
            request_id,
            url,
            resource,
            settings.server_secret,
            attempts=settings.callback_attempts,
            backoff_s=settings.callback_backoff_s,
            timeout_s=settings.callback_timeout_s,
        )

    return notify


def deliver_in_background(request_id: str, url: str, resource: dict[str, Any]) -> None:
    """`background_sender` for the settings of the environment (the worker's default)."""
    from core.settings import get_settings

    background_sender(get_settings())(request_id, url, resource)


def flush_callbacks(timeout_s: float = 60.0) -> None:
    """Wait (bounded) for the deliveries queued so far."""
    if _pending:
        wait(list(_pending), timeout=timeout_s)


# -- which requests changed status --------------------------------------------------------------


def _status_changed(instance: Any) -> bool:
    history = get_history(instance, "status")  # not inspect().attrs: that builds every attribute's state
    return bool(history.added) and list(history.added) != list(history.deleted)


def track_status_changes(session: Session, notify: Notify) -> None:
    """After each commit of `session`, call `notify` for every deletion request with a callback URL
    whose status the committed transaction changed (a rolled-back transaction notifies nothing)."""
    from core.db.models import DeletionRequest

    changed: dict[str, Any] = {}

    def collect(flushing: Session, _context: Any) -> None:
        for instance in [*flushing.new, *flushing.dirty]:
            if isinstance(instance, DeletionRequest) and _status_changed(instance):
                changed[instance.id] = instance

    def forget(_session: Session, _previous: Any = None) -> None:
        changed.clear()

    def dispatch(_session: Session) -> None:
        # The sessions here do not expire on commit: building the resource reads loaded attributes only.
        committed = list(changed.values())
        changed.clear()
        for request in committed:
            if not request.callback_url:
                continue
            try:
                notify(request.id, request.callback_url, request_resource(request))
            except Exception:  # never undo or fail a committed transition because of a callback
                log.exception("callbacks: could not queue the callback of %s", request.id)

    event.listen(session, "after_flush", collect)
    event.listen(session, "after_soft_rollback", forget)
    event.listen(session, "after_commit", dispatch)


@contextmanager
def write_session(database_url: str, notify: Notify | None = deliver_in_background) -> Iterator[Session]:
    """`session_scope` that, after a successful commit, notifies every deletion request whose status
    this transaction changed and that has a callback URL."""
    from core.db import session_scope

    with session_scope(database_url) as session:
        if notify is not None:
            track_status_changes(session, notify)
        yield session


def notify_requests(
    database_url: str,
    secret: str,
    request_ids: Iterable[str],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_s: float = DEFAULT_BACKOFF_S,
) -> dict[str, CallbackOutcome]:
    """Deliver the current resource of each request that has a callback URL; {} if the DB is unreadable."""
    from core.db import DeletionRequest, session_scope

    snapshots: list[tuple[str, str, dict[str, Any]]] = []
    try:
        with session_scope(database_url, readonly=True) as session:
            for request_id in request_ids:
                request = session.get(DeletionRequest, request_id)
                if request is not None and request.callback_url:
                    snapshots.append((request.id, request.callback_url, request_resource(request)))
    except Exception:
        log.exception("callbacks: cannot read the requests %s", list(request_ids))
        return {}
    return {
        request_id: deliver_callback(url, resource, secret, attempts=attempts, backoff_s=backoff_s)
        for request_id, url, resource in snapshots
    }
