from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.deps import EnqueueDep, SessionDep, SettingsDep, page_limit
from app.auth import ModelsRead, ModelsWrite
from app.errors import ProblemError, error_item, problem_from_validation
from app.model_registry import service
from app.model_registry.checker import CHECKER
from app.model_registry.schemas import ModelOut, ModelTrainCreate, ModelVersionOut
from app.model_registry.upload import receive_upload
from app.schemas import Cursor, Limit, Page
from core.db.models import Model, ModelStatus, ModelVersion
from core.settings import Settings
from core.storage import artifact_store
from core.tasks import TRAIN_BASE_MODEL_TASK


@asynccontextmanager
async def _warm_model_check(app: FastAPI) -> AsyncIterator[None]:
    """Outside tests, start the model-check process (torch's import) with the API, not at the first
    upload, so a bad upload is refused in about a second."""
    if app.state.settings.env != "test":
        CHECKER.warm_up()
    yield


router = APIRouter(tags=["models"], lifespan=_warm_model_check)

UPLOAD_PATH = "/v1/models/upload"

TRAIN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ModelTrainCreate"}}},
    }
}
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {"$ref": "#/components/schemas/ModelUpload"}}},
    }
}


def _created(model: Model, status: int) -> JSONResponse:
    return JSONResponse(
        service.model_out(model).model_dump(mode="json"),
        status_code=status,
        headers={"Location": f"/v1/models/{model.id}"},
    )


@router.post("/v1/models", status_code=202, response_model=ModelOut, openapi_extra=TRAIN_BODY)
async def train_model(
    request: Request, session: SessionDep, settings: SettingsDep, enqueue: EnqueueDep, principal: ModelsWrite
) -> JSONResponse:
    """Ask a worker to train a base model on a registered dataset (202, status `training`). To register
    weights you already have, upload them: `POST /v1/models/upload`."""
    try:
        body = ModelTrainCreate.model_validate_json(await request.body())
    except ValidationError as error:
        raise problem_from_validation(error) from None
    model = await run_in_threadpool(service.request_training, session, body, settings, actor=principal.key_id)
    await run_in_threadpool(session.commit)
    await run_in_threadpool(enqueue, TRAIN_BASE_MODEL_TASK, model.id)
    return _created(model, 202)


@router.post(
    UPLOAD_PATH,
    status_code=201,
    response_model=ModelOut,
    openapi_extra=UPLOAD_BODY,
    responses={201: {"model": ModelOut, "description": "Registered; the upload is version 1."}},
)
async def upload_model(
    request: Request, session: SessionDep, settings: SettingsDep, principal: ModelsWrite
) -> JSONResponse:
    """Register a model from weights trained elsewhere (multipart/form-data, the fields of `ModelUpload`):
    a safetensors `state_dict` in the architecture's own tensor names plus the spec fields (architecture;
    class count, channels, image size and normalisation default to the dataset's). The weights are loaded
    strictly and run on real images of the dataset before anything is stored; a mismatch is a 422 naming
    the field. The upload becomes version 1 (201)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise ProblemError(
            415,
            f"unsupported content type {content_type or '(none)'!r}: send multipart/form-data with the "
            "fields name, dataset_id, checkpoint (the file) and the spec fields",
            slug="unsupported-media-type",
            errors=[error_item("Content-Type", "send multipart/form-data", where="header")],
        )
    upload = await receive_upload(request, settings)
    model = await run_in_threadpool(
        service.register_upload, session, settings, upload, actor=principal.key_id
    )
    await run_in_threadpool(session.commit)
    return _created(model, 201)


@router.get("/v1/models", response_model=Page[ModelOut])
def list_models(
    session: SessionDep,
    settings: SettingsDep,
    _: ModelsRead,
    dataset_id: str | None = Query(default=None, max_length=40),
    status: ModelStatus | None = Query(default=None),
    cursor: Cursor = None,
    limit: Limit = None,
) -> Page[ModelOut]:
    return service.list_models(
        session,
        settings.server_secret,
        dataset_id=dataset_id,
        status=status,
        cursor=cursor,
        limit=page_limit(settings, limit),
    )


@router.get("/v1/models/{model_id}", response_model=ModelOut)
def get_model(model_id: str, session: SessionDep, _: ModelsRead) -> ModelOut:
    return service.model_out(service.get_model(session, model_id))


@router.get("/v1/models/{model_id}/versions", response_model=Page[ModelVersionOut])
def list_versions(
    model_id: str,
    session: SessionDep,
    settings: SettingsDep,
    _: ModelsRead,
    cursor: Cursor = None,
    limit: Limit = None,
) -> Page[ModelVersionOut]:
    return service.list_versions(
        session, settings.server_secret, model_id, cursor, page_limit(settings, limit)
    )


@router.get("/v1/model-versions/{version_id}", response_model=ModelVersionOut)
def get_version(version_id: str, session: SessionDep, _: ModelsRead) -> ModelVersionOut:
    return service.version_out(service.get_version(session, version_id))


def _etag_matches(if_none_match: str, etag: str) -> bool:
    candidates = [c.strip() for c in if_none_match.split(",")]
    return any(c == "*" or c.removeprefix("W/") == etag for c in candidates)


CHECKPOINT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "The safetensors file."},
    304: {"description": "Not modified (If-None-Match matched the ETag)."},
    307: {"description": "Download it from the presigned URL in Location (UNLEARN_PRESIGN_DOWNLOADS_S)."},
    410: {"description": "The version was retired: it still holds samples a later version forgot."},
}


def _serve_checkpoint(
    version: ModelVersion, request: Request, session: Session, settings: Settings
) -> Response:
    """The checkpoint of a live version, streamed from the artifact store (or a 307 to a presigned URL of
    it); `ETag` is the quoted sha256 of the file. A stream whose bytes turn out not to have that sha256 is
    cut short of its Content-Length, so a client never takes an altered file for a complete one."""
    service.refuse_retired(version)
    version_id, url, etag = version.id, version.checkpoint_uri, f'"{version.sha256}"'
    sha256, size_bytes = version.sha256, version.size_bytes
    session.rollback()  # end the read transaction before streaming
    if _etag_matches(request.headers.get("if-none-match", ""), etag):
        return Response(status_code=304, headers={"ETag": etag})
    store = artifact_store(settings)
    try:
        size = store.size(url)
    except Exception as error:  # the store is unreachable (network, credentials): not the client's fault
        raise ProblemError(
            503, f"the artifact store could not be read: {type(error).__name__}", slug="storage-unavailable"
        ) from None
    if size is None:
        raise ProblemError(
            410, f"the checkpoint file of version {version_id} is no longer available", slug="gone"
        )
    headers = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"}
    presigned = store.presign(url, settings.presign_downloads_s)
    if presigned is not None:
        return RedirectResponse(presigned, status_code=307, headers={**headers, "Cache-Control": "no-store"})
    return StreamingResponse(
        store.verified_stream(url, sha256=sha256, size_bytes=size_bytes),
        media_type="application/octet-stream",
        headers={
            **headers,
            "Content-Length": str(size_bytes),
            "Content-Disposition": f'attachment; filename="{version_id}.safetensors"',
        },
    )


@router.get(
    "/v1/model-versions/{version_id}/checkpoint",
    response_class=StreamingResponse,
    responses=CHECKPOINT_RESPONSES,
)
def download_checkpoint(
    version_id: str, request: Request, session: SessionDep, settings: SettingsDep, _: ModelsRead
) -> Response:
    """The version's safetensors checkpoint; 410 once the version is retired."""
    return _serve_checkpoint(service.get_version(session, version_id), request, session, settings)


@router.get(
    "/v1/models/{model_id}/checkpoint", response_class=StreamingResponse, responses=CHECKPOINT_RESPONSES
)
def download_head_checkpoint(
    model_id: str, request: Request, session: SessionDep, settings: SettingsDep, _: ModelsRead
) -> Response:
    """The checkpoint of the model's current head version."""
    return _serve_checkpoint(service.head_version(session, model_id), request, session, settings)
