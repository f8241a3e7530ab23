"""Jobs: the claim of a model's next job, its run, and the fenced writes that end it, for every job kind.

Modules: `claim` (what to claim), `fence` (ownership of a running job), `runtime` (heartbeat, progress,
cancellation while it computes), `unlearn` / `train` / `audits` / `artifacts` (how each kind runs),
`commit` (what each outcome writes), `retry` (the retry rule), `strategies` (the kinds),
`loop` (the one claim -> run -> commit loop), `reaping` (what the reaper re-enqueues).
"""

from core.jobs.claim import ClaimOutcome, ClaimStatus, JobClaim, RequestSpec
from core.jobs.commit import (
    FailureOutcome,
    HeadMoved,
    TrainResult,
    UnlearnResult,
    commit_cancelled,
    commit_failure,
    commit_train_success,
    commit_unlearn_success,
)
from core.jobs.fence import LostClaim, cancel_requested, record_heartbeat, record_progress
from core.jobs.retry import PermanentJobError
from core.jobs.runtime import JobRuntime

__all__ = [
    "ClaimOutcome",
    "ClaimStatus",
    "FailureOutcome",
    "HeadMoved",
    "JobClaim",
    "JobRuntime",
    "LostClaim",
    "PermanentJobError",
    "RequestSpec",
    "TrainResult",
    "UnlearnResult",
    "cancel_requested",
    "commit_cancelled",
    "commit_failure",
    "commit_train_success",
    "commit_unlearn_success",
    "record_heartbeat",
    "record_progress",
]
