"""Status-change callbacks from the worker (DESIGN section 5). The delivery itself (signing, retries,
background lanes, the after-commit hook) lives in `app.callbacks`, shared with the API, so there is one
way of sending a callback; this module adds what only the worker needs:

- `worker_session` is the worker's write transaction: once committed, every deletion request whose
  status it changed is handed to `notify` (by default the background lanes), so a slow receiver delays
  neither the job nor the next state. The tasks call `flush_callbacks` before returning.
- `notify_requests` re-delivers the current resource of given requests, synchronously.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from app.callbacks import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF_S,
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    CallbackOutcome,
    Notify,
    deliver_callback,
    deliver_in_background,
    flush_callbacks,
    request_resource,
    sign_body,
    track_status_changes,
    verify_signature,
)

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "CallbackOutcome",
    "Notify",
    "deliver_callback",
    "deliver_in_background",
    "flush_callbacks",
    "notify_requests",
    "sign_body",
    "verify_signature",
    "worker_session",
]

log = logging.getLogger(__name__)


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


@contextmanager
def worker_session(database_url: str, notify: Notify | None = deliver_in_background) -> Iterator[Session]:
    """`session_scope` that, after a successful commit, notifies every deletion request whose status
    this transaction changed and that has a callback URL."""
    from app.db import session_scope

    with session_scope(database_url) as session:
        if notify is not None:
            track_status_changes(session, notify)
        yield session
