"""Status-change callbacks (DESIGN section 5): POST the request resource to its `callback_url`, signed
`X-Unlearn-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes with UNLEARN_SERVER_SECRET>`.

- `deliver_callback` makes one delivery: retried with exponential backoff on connection errors,
  timeouts, 5xx, 408 and 429 (every retry carries the same `X-Unlearn-Delivery` id, so a receiver can
  drop duplicates); any other 4xx is final. It never raises: a callback never fails a job.
- `notify_requests` loads requests and delivers the resource the API serves for each that has a
  callback URL.
- `worker_session` is the worker's write transaction: it records which deletion requests changed
  status in it and, once committed, hands a snapshot of each resource to a small background pool, so
  a slow receiver delays neither the job nor the next state. `flush_callbacks` waits for pending
  deliveries (the tasks call it before returning, so a recycled pool process does not drop them).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Unlearn-Signature"
DELIVERY_HEADER = "X-Unlearn-Delivery"
RETRYABLE_STATUSES = frozenset({408, 429})
DEFAULT_ATTEMPTS = 6
DEFAULT_BACKOFF_S = 1.0
"""1, 2, 4, 8, 16 s between the 6 attempts: about half a minute in all."""


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


def request_resource(request: Any) -> dict[str, Any]:
    """The deletion request exactly as `GET /v1/deletion-requests/{id}` serves it."""
    from app.deletion.service import request_out

    resource: dict[str, Any] = request_out(request).model_dump(mode="json", by_alias=True)
    return resource


def notify_requests(
    database_url: str,
    secret: str,
    request_ids: Iterable[str],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_s: float = DEFAULT_BACKOFF_S,
) -> dict[str, CallbackOutcome]:
    """Deliver the current resource of each request that has a callback URL; {} if the DB is unreadable."""
    from app.db import DeletionRequest, session_scope

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


_pool: ThreadPoolExecutor | None = None
_pending: set[Future[CallbackOutcome]] = set()

Notify = Callable[[str, str, dict[str, Any]], None]
"""notify(request_id, callback_url, resource snapshot)."""


def deliver_in_background(request_id: str, url: str, resource: dict[str, Any]) -> None:
    """Queue a delivery on the process's callback pool (two threads, deliveries in submission order
    per thread); the signing secret is read from the settings."""
    global _pool
    from app.settings import get_settings

    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="callback")
    future = _pool.submit(deliver_callback, url, resource, get_settings().server_secret)
    _pending.add(future)
    future.add_done_callback(_pending.discard)


def flush_callbacks(timeout_s: float = 60.0) -> None:
    """Wait (bounded) for the deliveries queued so far."""
    if _pending:
        wait(list(_pending), timeout=timeout_s)


def _status_changed(instance: Any) -> bool:
    history = inspect(instance).attrs.status.history
    return bool(history.added) and list(history.added) != list(history.deleted)


@contextmanager
def worker_session(database_url: str, notify: Notify | None = deliver_in_background) -> Iterator[Session]:
    """`session_scope` that, after a successful commit, notifies every deletion request whose status
    this transaction changed and that has a callback URL."""
    from app.db import DeletionRequest, session_scope

    changed: dict[str, Any] = {}

    def collect(session: Session, _context: Any) -> None:
        for instance in [*session.new, *session.dirty]:
            if isinstance(instance, DeletionRequest) and _status_changed(instance):
                changed[instance.id] = instance

    with session_scope(database_url) as session:
        event.listen(session, "after_flush", collect)
        yield session
    if notify is None:
        return
    for request in changed.values():
        if request.callback_url:
            try:
                notify(request.id, request.callback_url, request_resource(request))
            except Exception:  # never undo or fail a committed transition because of a callback
                log.exception("callbacks: could not queue the callback of %s", request.id)
