"""The FastAPI application factory: `uvicorn --factory app.main:create_app`."""

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.audit_log.routes import router as audit_log_router
from app.certificates.routes import router as certificates_router
from app.datasets.routes import router as datasets_router
from app.deletion.routes import router as deletion_router
from app.errors import PROBLEM_CONTENT_TYPE, TYPE_PREFIX, document_problem_responses, install_problem_handlers
from app.health import router as health_router
from app.metrics import install_metrics
from app.model_registry.routes import router as models_router
from app.model_registry.schemas import ModelTrainCreate
from app.queue import CeleryEnqueue
from core.callbacks import Notify, background_sender
from core.settings import Settings, get_settings
from core.tasks import Enqueue

JSON_TYPES = ("application/json",)
MULTIPART_PATHS = {"/v1/models"}


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
        allowed = "application/json" + (" or multipart/form-data" if scope["path"] in MULTIPART_PATHS else "")
        if has_body and not is_json:
            if not (scope["path"] in MULTIPART_PATHS and media_type == "multipart/form-data"):
                detail = f"unsupported content type {media_type or '(none)'!r}: send {allowed}"
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
    body = json.dumps(
        {
            "type": TYPE_PREFIX + slug,
            "title": title,
            "status": status,
            "detail": detail,
            "instance": scope["path"],
            "errors": [{"field": field, "in": _location(field), "message": detail}],
        }
    ).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})


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
            document_problem_responses(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    return build


def create_app(
    settings: Settings | None = None, *, enqueue: Enqueue | None = None, notify: Notify | None = None
) -> FastAPI:
    """The API for `settings` (default: from the environment); `enqueue` replaces the Celery sender,
    `notify` the background sender of status-change callbacks."""
    settings = settings or get_settings()
    app = FastAPI(
        title="unlearn-service",
        version="0.1.0",
        description="Makes a trained image classifier forget training samples (Discriminative Adversarial "
        "Unlearning), versions every result and audits it. Errors are RFC 9457 problem documents.",
    )
    app.state.settings = settings
    app.state.enqueue = enqueue or CeleryEnqueue(settings.broker_url, settings.queue_name)
    app.state.notify = notify or background_sender(settings)
    install_problem_handlers(app)
    app.add_middleware(RequestGuard, max_json_bytes=settings.max_json_bytes)
    app.state.metrics = install_metrics(app)  # outermost: counts the guard's 413/415 answers too
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
    return app
