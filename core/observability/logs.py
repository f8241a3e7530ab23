"""Structured logs: one JSON object a line (or text for a terminal), each line carrying the ids of what it
is about, so `grep req_...` over the API's and the workers' logs follows one deletion end to end.

Why the standard `logging` module with python-json-logger's formatter (and not structlog): every module
of the service and every library under it (Celery, uvicorn, SQLAlchemy, limits) already logs through
`logging`; one formatter on the root handler turns all of their lines into JSON, with no second logging
API in the code. The ids come from a context variable: `bound(...)` (a scope: the job loop, a request)
and `bind(...)` (adds to the current scope: a route once it knows the request id). A filter copies them
onto every record. Context variables follow asyncio tasks and `run_in_threadpool`, not bare threads: a
thread that should carry the ids runs in `contextvars.copy_context()` (the job's heartbeat thread does).

Fields of a JSON line: `time` (UTC ISO 8601), `level`, `logger`, `message`, `service` (api | worker),
`process`, then the bound ids (`request_id` in the API; `job_id`, `model_id`, `attempt`, `request_ids`
in the worker; `correlation_id` = the X-Request-ID of the HTTP request; `task_id` of a Celery task) and
any `extra=`; `exc_info` when an exception is logged.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any, TextIO

from core.settings import Settings

LOG_CONTEXT: ContextVar[Mapping[str, Any]] = ContextVar("unlearn_log_context", default=MappingProxyType({}))
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
CHATTY_LOGGERS = ("httpx",)
"""Libraries that log every HTTP request they make at INFO: held at WARNING unless the level is DEBUG
(the service logs what it does with the answers itself, e.g. a callback delivery that failed)."""


def current_context() -> Mapping[str, Any]:
    return LOG_CONTEXT.get()


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add `fields` (None values left out) to every line logged in this scope."""
    token = LOG_CONTEXT.set(_merged(fields))
    try:
        yield
    finally:
        LOG_CONTEXT.reset(token)


def bind(**fields: Any) -> Token[Mapping[str, Any]]:
    """Add `fields` to the current scope (until the enclosing `bound` ends, the request's task does, or
    `LOG_CONTEXT.reset` is called with the returned token)."""
    return LOG_CONTEXT.set(_merged(fields))


def _merged(fields: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType({**LOG_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})


class ContextFilter(logging.Filter):
    """Copies the bound ids onto each record (an `extra=` of the call wins) and renders them for text."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = LOG_CONTEXT.get()
        for key, value in context.items():
            if key not in record.__dict__:
                setattr(record, key, value)
        record.context = "".join(f" {key}={value}" for key, value in context.items())
        return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at emit time (test runners swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


class _OurHandler(_StderrHandler):
    """Marks the handler this module installs, so configuring again replaces only it."""


def json_formatter(service: str) -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s %(process)d",
        rename_fields={"levelname": "level", "name": "logger"},
        static_fields={"service": service},
        reserved_attrs=[*_RESERVED, "context", "color_message"],
        timestamp="time",
    )


_RESERVED = (
    "args msg levelno pathname filename module exc_text stack_info lineno funcName created msecs "
    "relativeCreated thread threadName processName taskName exc_info"
).split()
"""LogRecord attributes left out of a JSON line (kept: time, level, logger, message, process, exc_info)."""


def configure_logging(settings: Settings, service: str, *, level: str | int | None = None) -> None:
    """Send every logger of this process through one stderr handler in `settings.log_format`.

    Idempotent; replaces only a handler it installed itself (a test runner's handlers stay). In JSON,
    uvicorn's own loggers go through it too (their lines then carry the request's ids). The
    `CHATTY_LOGGERS` log at WARNING unless the level is DEBUG."""
    handler = _OurHandler()
    if settings.log_format == "json":
        formatter: logging.Formatter = json_formatter(service)
    else:
        formatter = logging.Formatter(
            f"%(asctime)s %(levelname)s {service}[%(process)d] %(name)s: %(message)s%(context)s"
        )
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if level is not None else settings.log_level)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if root.level > logging.DEBUG else logging.NOTSET)
    logging.captureWarnings(True)  # warnings become log lines (logger py.warnings) in the same format
    if settings.log_format == "json":
        for name in UVICORN_LOGGERS:
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True
