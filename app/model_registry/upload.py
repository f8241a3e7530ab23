"""Receiving a checkpoint upload: the form's text fields validated (`ModelUploadForm`), the file's size cap
enforced while streaming it to a temporary file in this host's staging folder (it enters the artifact
store once checked: `service.register_upload`)."""

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from app.errors import ProblemError, error_item, invalid, problem_from_validation
from app.model_registry.schemas import UPLOAD_TEXT_FIELDS, ModelUploadForm
from app.schemas import storable_text
from core.settings import Settings
from core.storage.store import STAGING_FOLDER

CHUNK_BYTES = 1 << 20
FORM_OVERHEAD_BYTES = 64 * 1024


@dataclass
class ReceivedUpload:
    name: str
    dataset_id: str
    temp_path: Path
    declared: dict[str, Any] = field(default_factory=dict)
    """The spec fields the form gave (architecture, num_classes, ...); see `ModelUploadForm`."""


def too_large(settings: Settings, what: str = "checkpoint") -> ProblemError:
    return ProblemError(
        413,
        f"the upload exceeds the {settings.max_upload_bytes}-byte limit",
        slug="payload-too-large",
        errors=[error_item(what, f"larger than {settings.max_upload_bytes} bytes")],
    )


def _text_field(form_value: object, field: str, max_length: int) -> str:
    if not isinstance(form_value, str):
        raise invalid(field, "required form field (text)")
    value = form_value.strip()
    try:
        storable_text(value)
    except ValueError as error:
        raise invalid(field, str(error)) from None
    if not 1 <= len(value) <= max_length:
        raise invalid(field, f"must be 1..{max_length} characters", value=form_value[:200])
    return value


async def receive_upload(request: Request, settings: Settings) -> ReceivedUpload:
    """Parse the multipart form and copy the `checkpoint` file into staging (removed on error)."""
    declared = request.headers.get("content-length")
    if (
        declared is not None
        and declared.isdigit()
        and int(declared) > settings.max_upload_bytes + FORM_OVERHEAD_BYTES
    ):
        raise too_large(settings)
    form = await request.form(max_files=1, max_fields=len(UPLOAD_TEXT_FIELDS) + 2)
    try:
        expected = [*UPLOAD_TEXT_FIELDS, "checkpoint"]
        unexpected = sorted(set(form.keys()) - set(expected))
        if unexpected:
            message = f"unexpected form fields {unexpected}; expected {', '.join(expected)}"
            raise invalid(unexpected[0], message)
        name = _text_field(form.get("name"), "name", 200)
        dataset_id = _text_field(form.get("dataset_id"), "dataset_id", 40)
        declared = _spec_fields(form, name, dataset_id)
        upload = form.get("checkpoint")
        if not isinstance(upload, UploadFile):
            raise invalid("checkpoint", "required form field (a file part holding a safetensors checkpoint)")
        temp_dir = settings.cache_root / STAGING_FOLDER
        temp_dir.mkdir(parents=True, exist_ok=True)
        descriptor, temp_name = tempfile.mkstemp(prefix="upload-", suffix=".safetensors", dir=temp_dir)
        temp_path = Path(temp_name)
        try:
            size = 0
            with os.fdopen(descriptor, "wb") as handle:
                while chunk := await upload.read(CHUNK_BYTES):
                    size += len(chunk)
                    if size > settings.max_upload_bytes:
                        raise too_large(settings)
                    handle.write(chunk)
            if size == 0:
                raise invalid("checkpoint", "the uploaded file is empty")
        except BaseException:
            temp_path.unlink(missing_ok=True)
            raise
        return ReceivedUpload(name=name, dataset_id=dataset_id, temp_path=temp_path, declared=declared)
    finally:
        await form.close()


def _spec_fields(form: Any, name: str, dataset_id: str) -> dict[str, Any]:
    """The spec fields the form gives, validated by `ModelUploadForm` (empty fields count as absent)."""
    raw: dict[str, Any] = {"name": name, "dataset_id": dataset_id}
    for key in UPLOAD_TEXT_FIELDS:
        if key in raw:
            continue
        value = form.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise invalid(key, "a text field, not a file")
        if value.strip():
            raw[key] = value.strip()
    try:
        return ModelUploadForm.model_validate(raw).declared_spec()
    except ValidationError as error:
        raise problem_from_validation(error) from None
