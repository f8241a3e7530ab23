"""The FastAPI application factory: `uvicorn --factory app.main:create_app`."""

import gc
import re
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import open_session
from app.api.reads import AsyncReads
from app.audit_log.routes import router as audit_log_router
from app.certificates.routes import router as certificates_router
from app.datasets.routes import router as datasets_router
from app.deletion.group_commit import GroupCommit
from app.deletion.routes import router as deletion_router
from app.errors import document_problem_responses, error_item, install_problem_handlers, send_problem
from app.health import router as health_router
from app.metrics import install_metrics
from app.model_registry.routes import UPLOAD_PATH
from app.model_registry.routes import router as models_router
from app.model_registry.schemas import ModelTrainCreate, upload_form_schema
from app.overload import AdmissionControl, Breaker, install_outage_handlers
from app.queue import CeleryEnqueue, probe_broker
from app.ratelimit import KeyRateLimiter
from core.callbacks import Notify, Waker
from core.db.session import get_engine, get_read_engine
from core.observability.logs import bound, configure_logging
from core.observability.tracing import instrumentor, start_tracing
from core.settings import Settings, get_settings
from core.tasks import ALL_DUE, DELIVER_CALLBACKS_TASK, Enqueue

SWITCH_INTERVAL_S = 0.001
"""How long a thread may hold the GIL while another waits (CPython's default is 5 ms): the event loop
hands work to the group-commit and threadpool threads and takes their results back, and each hand-off
waited up to the whole interval behind a thread busy in Python (the POST p99 at 16 connections)."""
JSON_TYPES = ("application/json",)
MULTIPART_PATHS = {UPLOAD_PATH}
MEDIA_TYPE_HINTS = {
    "/v1/models": f"; to register weights you already have, POST multipart/form-data to {UPLOAD_PATH}"
}
CORRELATION_HEADER = "x-request-id"
CORRELATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""A caller's X-Request-ID is kept when it looks like an id; anything else is replaced by a fresh one."""


class CorrelationId:
    """Every log line of an HTTP request carries its `correlation_id`: the caller's X-Request-ID, or a new
    one; the response returns it in X-Request-ID. (The deletion request's own id is `request_id`.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == CORRELATION_HEADER.encode()), b"")
        text = given.decode("latin-1")
        correlation_id = text if CORRELATION_ID.fullmatch(text) else uuid.uuid4().hex
        header = (CORRELATION_HEADER.encode(), correlation_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        with bound(correlation_id=correlation_id):
            await self.app(scope, receive, send_with_id)


class RequestGuard:
    """Refuses, with a problem document and before any route runs: NUL characters in the path or query
    (400: no database stores them), bodies of the wrong media type (415) and JSON over the size cap (413)."""

    def __init__(self, app: ASGIApp, max_json_bytes: int) -> None:
        self.app = app
        self.max_json_bytes = max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or "%00" in scope.get("query_string", b"").decode("latin-1"):
            where = "path" if "\x00" in scope["path"] else "query"
            await _problem(
                scope,
                send,
                400,
                "Bad Request",
                "validation-error",
                f"the {where} contains a NUL character",
                where,
            )
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length")
        has_body = (length is not None and length != "0") or "transfer-encoding" in headers
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        is_json = media_type in JSON_TYPES or (
            media_type.startswith("application/") and media_type.endswith("+json")
        )
        allowed = "multipart/form-data" if scope["path"] in MULTIPART_PATHS else "application/json"
        if has_body and not is_json:
            if not (scope["path"] in MULTIPART_PATHS and media_type == "multipart/form-data"):
                detail = f"unsupported content type {media_type or '(none)'!r}: send {allowed}"
                detail += MEDIA_TYPE_HINTS.get(scope["path"], "")
                await _problem(
                    scope,
                    send,
                    415,
                    "Unsupported Media Type",
                    "unsupported-media-type",
                    detail,
                    "Content-Type",
                )
                return
        if is_json and length is not None and length.isdigit() and int(length) > self.max_json_bytes:
            detail = f"the JSON body exceeds the {self.max_json_bytes}-byte limit"
            await _problem(scope, send, 413, "Content Too Large", "payload-too-large", detail, "body")
            return
        await self.app(scope, receive, send)


async def _problem(
    scope: Scope, send: Send, status: int, title: str, slug: str, detail: str, field: str
) -> None:
    errors = [error_item(field, detail, where=_location(field))]
    await send_problem(scope, send, status, slug, detail, errors, title=title)


def _location(field: str) -> str:
    return "header" if field[0].isupper() else field if field in ("path", "query") else "body"


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            extra = ModelTrainCreate.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(extra.pop("$defs", {}))
            components["ModelTrainCreate"] = extra
            upload = upload_form_schema()
            components.update(upload.pop("$defs", {}))
            components["ModelUpload"] = upload
            document_problem_responses(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    return build


def _configure_database(settings: Settings) -> None:
    """The process's engines with the API's pools and timeouts (PostgreSQL; when this call creates them):
    the read-write one, and the autocommit one for one-statement reads (the GETs and key lookups)."""
    if make_url(settings.database_url).get_backend_name() != "postgresql":
        return  # SQLite: the default engine, created on first use (every write takes the lock)
    options: dict[str, Any] = {
        "pool_timeout_s": settings.api_db_pool_timeout_s,
        "pre_ping": settings.api_db_pre_ping,
        "connect_timeout_s": settings.db_connect_timeout_s,
        "server_options": {
            "lock_timeout": f"{int(settings.db_lock_timeout_s * 1000)}ms",
            "statement_timeout": f"{int(settings.db_statement_timeout_s * 1000)}ms",
            "idle_in_transaction_session_timeout": f"{int(settings.db_statement_timeout_s * 1000)}ms",
        },
    }
    get_engine(
        settings.database_url,
        pool_size=settings.api_db_pool_size,
        max_overflow=settings.api_db_pool_overflow,
        **options,
    )
    get_read_engine(settings.database_url, pool_size=settings.api_max_concurrency, max_overflow=2, **options)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    gc.freeze()  # what start-up made lives as long as the process: keep it out of every full collection
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    group_commit: GroupCommit = app.state.group_commit
    group_commit.start()
    reads: AsyncReads | None = app.state.reads
    if reads is not None:
        await reads.open()
    try:
        yield
    finally:
        if reads is not None:
            await reads.close()
        await run_in_threadpool(group_commit.stop)  # what waits is committed first
        flush = getattr(app.state.enqueue, "flush", None)
        if flush is not None:  # send what the background sender holds before the process ends
            await run_in_threadpool(flush, 5.0)
        app.state.metrics.process_exited()


def _admission_count(app: FastAPI, state: str) -> float:
    admission = getattr(app.state, "admission", None)
    if admission is None:
        return 0.0
    gates = (admission.gate, admission.writes, admission.batches)
    return float(sum(gate.holders if state == "admitted" else gate.waiting for gate in gates))


def create_app(
    settings: Settings | None = None, *, enqueue: Enqueue | None = None, notify: Notify | None = None
) -> FastAPI:
    """The API for `settings` (default: from the environment); `enqueue` replaces the Celery sender,
    `notify` what a commit that owed callbacks tells (default: enqueue their delivery, off the commit
    path)."""
    settings = settings or get_settings()
    configure_logging(settings, "api")
    tracing = start_tracing(settings, "api")  # before the engines exist: their queries become spans
    app = FastAPI(
        title="unlearn-service",
        version="0.1.0",
        description="Makes a trained image classifier forget training samples (Discriminative Adversarial "
        "Unlearning), versions every result and audits it. Errors are RFC 9457 problem documents.",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.db_breaker = Breaker("database", settings.db_breaker_s)
    app.state.broker_breaker = Breaker("broker", settings.broker_breaker_s)
    app.state.broker_probe = probe_broker
    app.state.enqueue = enqueue or CeleryEnqueue(
        settings.broker_url,
        settings.queue_name,
        breaker=app.state.broker_breaker,
        mark_ttl_s=settings.enqueue_mark_ttl_s,
    )
    app.state.notify = notify or Waker(lambda: app.state.enqueue(DELIVER_CALLBACKS_TASK, ALL_DUE))
    app.state.rate_limiter = KeyRateLimiter.from_settings(settings)
    _configure_database(settings)
    app.state.reads = AsyncReads.for_settings(settings)
    app.state.group_commit = GroupCommit(
        lambda: open_session(app),
        lambda: app.state.settings,
        lambda: app.state.enqueue,
        workers=settings.write_batch_workers,
        max_batch=settings.write_batch_max,
    )
    install_problem_handlers(app)
    install_outage_handlers(app)
    app.add_middleware(RequestGuard, max_json_bytes=settings.max_json_bytes)
    app.add_middleware(AdmissionControl, settings=settings, state=app.state)
    app.state.metrics = metrics = install_metrics(app)  # outermost: counts the guard's and the shedding's too
    metrics.admission = lambda: (_admission_count(app, "admitted"), _admission_count(app, "waiting"))
    app.add_middleware(CorrelationId)
    for router in (
        health_router,
        datasets_router,
        models_router,
        deletion_router,
        audit_log_router,
        certificates_router,
    ):
        app.include_router(router)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    if tracing:
        instrumentor("opentelemetry.instrumentation.fastapi", "FastAPIInstrumentor").instrument_app(app)
    return app
