"""RFC 9457 problem details for every error the API returns, FastAPI's own included.

A handler raises `ProblemError` (or one of the shortcuts below); the exception handlers installed by
`install_problem_handlers` turn it, FastAPI's request validation errors, Starlette's HTTP errors and any
unexpected exception into `application/problem+json`. Each entry of `errors` names the offending field
(`field`, a dotted path such as `sample_ids.3`) and where it was (`in`: body, query, path or header).
"""

import json
import logging
import math
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope, Send

from core.problems import TYPE_PREFIX, ErrorItem, Problem

logger = logging.getLogger("app.errors")

PROBLEM_CONTENT_TYPE = "application/problem+json"
MAX_LISTED_ERRORS = 100


class ProblemJSONResponse(JSONResponse):
    """ASCII-escaped JSON, so an echoed bad input (a lone surrogate, say) can always be rendered."""

    media_type = PROBLEM_CONTENT_TYPE

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_item(field: str, message: str, *, where: str = "body", value: Any = None) -> ErrorItem:
    return ErrorItem.model_validate({"field": field, "in": where, "message": message, "value": value})


class ProblemError(Exception):
    """Raise to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        errors: Sequence[ErrorItem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug
        self.title = title or HTTPStatus(status).phrase
        self.errors = list(errors)[:MAX_LISTED_ERRORS] if errors else None
        self.headers = headers or {}


def invalid(
    field: str, message: str, *, where: str = "body", value: Any = None, status: int = 422
) -> ProblemError:
    """A 422 (by default) naming one offending field."""
    return ProblemError(
        status,
        f"{field}: {message}",
        slug="validation-error",
        title="Invalid request",
        errors=[error_item(field, message, where=where, value=value)],
    )


def not_found(what: str, identifier: str, *, field: str = "id", where: str = "path") -> ProblemError:
    return ProblemError(
        404,
        f"{what} {identifier!r} does not exist",
        slug="not-found",
        errors=[error_item(field, f"no {what} with this id", where=where, value=identifier)],
    )


def problem_response(
    request: Request,
    status: int,
    *,
    title: str | None = None,
    detail: str | None = None,
    slug: str | None = None,
    errors: Sequence[ErrorItem] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    problem = Problem(
        type=TYPE_PREFIX + slug if slug else "about:blank",
        title=title or HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=list(errors) if errors else None,
    )
    return ProblemJSONResponse(
        problem.model_dump(mode="json", by_alias=True, exclude_none=True), status_code=status, headers=headers
    )


async def send_problem(
    scope: Scope,
    send: Send,
    status: int,
    slug: str,
    detail: str,
    errors: Sequence[ErrorItem],
    headers: dict[str, str] | None = None,
    *,
    title: str | None = None,
) -> None:
    """A problem document sent straight from an ASGI middleware (before any route runs)."""
    problem = Problem(
        type=TYPE_PREFIX + slug,
        title=title or HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=scope["path"],
        errors=list(errors),
    )
    body = ProblemJSONResponse(problem.model_dump(mode="json", by_alias=True, exclude_none=True)).body
    raw_headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        *(
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in (headers or {}).items()
        ),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def _field_path(loc: Sequence[Any]) -> tuple[str, str]:
    """FastAPI's ("body", "sample_ids", 3) -> ("body", "sample_ids.3")."""
    where = str(loc[0]) if loc else "body"
    rest = [str(part) for part in loc[1:]]
    return where, ".".join(rest) if rest else where


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value][:20]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in list(value.items())[:20]}
    return repr(value)[:200]


def validation_items(raw_errors: Sequence[Any]) -> list[ErrorItem]:
    items = []
    for error in raw_errors:
        where, field = _field_path(error.get("loc", ()))
        items.append(
            error_item(field, error.get("msg", "invalid"), where=where, value=_jsonable(error.get("input")))
        )
    return items


def problem_from_validation(
    exc: ValidationError, *, where: str = "body", prefix: str = "", title: str = "Invalid request"
) -> ProblemError:
    """A pydantic ValidationError (from validating a body or params by hand) as a 422, or a 400 when the
    JSON itself was malformed."""
    raw = exc.errors()
    if any(error.get("type") == "json_invalid" for error in raw):
        return ProblemError(
            400,
            "the request body is not valid JSON",
            slug="malformed-json",
            title="Malformed JSON",
            errors=[error_item("body", "not valid JSON", where=where)],
        )
    items = []
    for error in raw:
        path = ".".join(str(part) for part in (prefix, *error.get("loc", ())) if part != "")
        items.append(
            error_item(
                path or prefix or where,
                error.get("msg", "invalid"),
                where=where,
                value=_jsonable(error.get("input")),
            )
        )
    summary = "; ".join(f"{item.field}: {item.message}" for item in items[:5])
    return ProblemError(422, summary, slug="validation-error", title=title, errors=items)


async def _problem_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(
        request,
        exc.status,
        title=exc.title,
        detail=exc.detail,
        slug=exc.slug,
        errors=exc.errors,
        headers=exc.headers,
    )


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in raw):
        first = next(error for error in raw if error.get("type") == "json_invalid")
        position = first.get("ctx", {}).get("error", "")
        return problem_response(
            request,
            400,
            title="Malformed JSON",
            slug="malformed-json",
            detail=f"the request body is not valid JSON: {position}".rstrip(": "),
            errors=[error_item("body", "not valid JSON", where="body")],
        )
    items = validation_items(raw)
    summary = "; ".join(f"{item.field}: {item.message}" for item in items[:5])
    return problem_response(
        request, 422, title="Invalid request", slug="validation-error", detail=summary, errors=items
    )


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    slug = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized", 403: "forbidden"}.get(
        exc.status_code
    )
    return problem_response(
        request, exc.status_code, detail=detail, slug=slug, headers=dict(exc.headers or {}) or None
    )


async def _unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        request,
        500,
        slug="internal-error",
        detail="an unexpected error occurred; it has been logged",
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _problem_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(Exception, _unexpected_error_handler)


def document_problem_responses(openapi: dict[str, Any]) -> None:
    """Make the OpenAPI document say what the API really answers on errors: every operation gets a
    `default` problem+json response (401, 403, 404, 413, 415 ... all carry a `Problem`), and FastAPI's
    generated 422 (`HTTPValidationError`, application/json) becomes the problem document it really is."""
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(
        by_alias=True, ref_template="#/components/schemas/{model}", mode="serialization"
    )
    components.update(problem_schema.pop("$defs", {}))
    components["Problem"] = problem_schema
    content = {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, response in responses.items():
                if status[0] in "45":
                    response["content"] = content
                    if response.get("description") == "Validation Error":
                        response["description"] = "Invalid request: a problem document naming each field."
            responses["default"] = {
                "description": "An error, as an RFC 9457 problem document (401 no or invalid key, 403 "
                "missing scope, 404 unknown id, 409 conflict, 413 too large, 415 wrong media type, ...).",
                "content": content,
            }
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
