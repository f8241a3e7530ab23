"""The retry rule, in one place: which errors are worth another attempt, how many attempts a job gets,
and how long it waits before the next one.

Permanent errors (bad params, a request the method can never serve, missing or altered data) fail the
job at once with the reason: another attempt would hit the same error. Everything else (a GPU fault, a
full disk, a database that went away) is transient and backs off.
"""

from __future__ import annotations

from pydantic import ValidationError

MAX_BACKOFF_S = 60.0


class PermanentJobError(Exception):
    """An error another attempt cannot fix: fail at once, no retry."""


def is_permanent(error: BaseException) -> bool:
    from unlearning.types import Unservable

    return isinstance(error, PermanentJobError | Unservable | ValidationError)


def retry_backoff_s(attempt: int) -> float:
    """Wait before attempt `attempt + 1`: 2, 4, 8, ... seconds, at most a minute."""
    return float(min(2**attempt, MAX_BACKOFF_S))


def will_retry(*, attempts: int, max_attempts: int, permanent: bool) -> bool:
    """Whether a job that failed its attempt number `attempts` runs again."""
    return not permanent and attempts < max_attempts
