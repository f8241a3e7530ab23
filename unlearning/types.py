"""Shared callback types and the cancellation signal every long loop honours."""

from collections.abc import Callable

Progress = Callable[[float, str], None]
"""progress(fraction_done in [0, 1], stage_name): called at least once per iteration."""

ShouldStop = Callable[[], bool]
"""Returns True when the caller wants the run to stop (cancellation); checked every iteration."""


class Cancelled(Exception):
    """Raised by a method when should_stop() returned True; nothing it produced may be kept."""


def no_progress(fraction: float, stage: str) -> None:
    return None


def never_stop() -> bool:
    return False


class Unservable(ValueError):
    """A method cannot serve these splits with this config, whatever the attempt (a forget set too
    small for it, say). The service fails such a job at once instead of retrying it."""
