"""Every state change of a deletion request, a job, a model and a model version: the one place.

Each entity has a table of allowed transitions (`REQUEST_TRANSITIONS`, `JOB_TRANSITIONS`,
`MODEL_TRANSITIONS`; `None` is "does not exist yet") and one function per transition. A function checks
the move against the table (`IllegalTransition` otherwise), then sets the status together with what
goes with it (stage, progress, timestamps, links to jobs and versions) and appends the audit event, all
in the caller's transaction; a request's status change also owes its callback (`core.callbacks`: the
outbox row is written when that transaction commits). Nothing else assigns a status: a new outcome is a
row in a table and a function here.
"""

from core.lifecycle.jobs import (
    job_cancelled,
    job_created,
    job_failed,
    job_retry_scheduled,
    job_started,
    job_succeeded,
)
from core.lifecycle.models import (
    model_created,
    model_trained,
    model_training_failed,
    version_created,
    version_purged,
    versions_retired,
)
from core.lifecycle.requests import (
    NewRequest,
    request_audit_failed,
    request_cancel_requested,
    request_cancelled,
    request_failed,
    request_requeued,
    request_started,
    request_succeeded,
    requests_received,
)
from core.lifecycle.tables import (
    JOB_TRANSITIONS,
    MODEL_TRANSITIONS,
    REQUEST_TRANSITIONS,
    STAGE_MAX_CHARS,
    VERSION_TRANSITIONS,
    IllegalTransition,
)

__all__ = [
    "IllegalTransition",
    "JOB_TRANSITIONS",
    "MODEL_TRANSITIONS",
    "NewRequest",
    "REQUEST_TRANSITIONS",
    "STAGE_MAX_CHARS",
    "VERSION_TRANSITIONS",
    "job_cancelled",
    "job_created",
    "job_failed",
    "job_retry_scheduled",
    "job_started",
    "job_succeeded",
    "model_created",
    "model_trained",
    "model_training_failed",
    "request_audit_failed",
    "request_cancel_requested",
    "request_cancelled",
    "request_failed",
    "requests_received",
    "request_requeued",
    "request_started",
    "request_succeeded",
    "version_created",
    "version_purged",
    "versions_retired",
]
