"""The transition tables of requests, jobs, models and versions, and the check every transition makes.

`None` in a table is "does not exist yet"; each (from, to) pair names the function that makes the move.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.db.models import JobStatus, ModelStatus, RequestStatus, VersionState

Q, R, S, F, C = (
    RequestStatus.queued,
    RequestStatus.running,
    RequestStatus.succeeded,
    RequestStatus.failed,
    RequestStatus.cancelled,
)
REQUEST_TRANSITIONS: Mapping[tuple[RequestStatus | None, RequestStatus], str] = {
    (None, Q): "requests_received",
    (Q, R): "request_started",
    (R, R): "request_started",  # its job was taken over from a worker whose heartbeat went stale
    (Q, C): "request_cancelled",
    (Q, F): "request_failed",  # its model failed to train, or its job gave up while it waited for a retry
    (R, Q): "request_requeued",  # a retry, or a request that shared its run with a cancelled one
    (R, S): "request_succeeded",
    (R, F): "request_failed",
    (R, C): "request_cancelled",
    (R, RequestStatus.audit_failed): "request_audit_failed",
}
"""(from, to) -> the function of this module that makes the move."""

JQ, JR, JS, JF, JC = (
    JobStatus.queued,
    JobStatus.running,
    JobStatus.succeeded,
    JobStatus.failed,
    JobStatus.cancelled,
)
JOB_TRANSITIONS: Mapping[tuple[JobStatus | None, JobStatus], str] = {
    (None, JQ): "job_created",
    (JQ, JR): "job_started",
    (JR, JR): "job_started",  # taken over from a worker whose heartbeat went stale
    (JR, JQ): "job_retry_scheduled",
    (JR, JS): "job_succeeded",
    (JQ, JF): "job_failed",
    (JR, JF): "job_failed",
    (JQ, JC): "job_cancelled",
    (JR, JC): "job_cancelled",
}

MODEL_TRANSITIONS: Mapping[tuple[ModelStatus | None, ModelStatus], str] = {
    (None, ModelStatus.training): "model_created",
    (None, ModelStatus.ready): "model_created",  # an uploaded checkpoint
    (ModelStatus.training, ModelStatus.ready): "model_trained",
    (ModelStatus.training, ModelStatus.failed): "model_training_failed",
}

VERSION_TRANSITIONS: Mapping[tuple[VersionState | None, VersionState], str] = {
    (None, VersionState.live): "version_created",
    (VersionState.live, VersionState.retired): "versions_retired",
    (VersionState.retired, VersionState.purged): "version_purged",
}
"""A version is live until a later version forgets samples it holds; then retired (never served again)
and, after the grace period, purged (its checkpoint file deleted)."""

STAGE_MAX_CHARS = 64
"""Width of the `stage` columns."""


class IllegalTransition(Exception):
    """A state change the transition tables do not allow (a bug, or a race the caller lost)."""

    def __init__(self, entity: str, entity_id: str | None, current: str | None, target: str) -> None:
        super().__init__(f"{entity} {entity_id}: {current or '(new)'} -> {target} is not allowed")
        self.entity, self.entity_id, self.current, self.target = entity, entity_id, current, target


def check(
    table: Mapping[tuple[Any, Any], str], entity: str, entity_id: str | None, current: Any, target: Any
) -> None:
    current = None if current is None else type(target)(current)
    if (current, target) not in table:
        raise IllegalTransition(entity, entity_id, current, target)


def stage_text(text: str) -> str:
    return text[:STAGE_MAX_CHARS]
