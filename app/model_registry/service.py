"""Models: ask a worker to train one, or register an uploaded checkpoint as version 1; browse versions."""

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets.service import get_dataset
from app.errors import ProblemError, error_item, invalid
from app.listing import get_or_404, keyset_page
from app.model_registry.schemas import ModelOut, ModelTrainCreate, ModelVersionOut
from app.schemas import Page
from core import lifecycle
from core.db.audit import AuditEventType
from core.db.models import Model, ModelStatus, ModelVersion, new_id
from core.settings import Settings
from models.checkpoint_header import CheckpointError, read_header

WEIGHTS_CHECK_TIMEOUT_S = 300
_WEIGHTS_CHECK_SCRIPT = """
import json, sys
from models.checkpoint import CheckpointError, load_checkpoint
try:
    load_checkpoint(sys.argv[1])
    print(json.dumps({"ok": True}))
except CheckpointError as error:
    print(json.dumps({"ok": False, "error": str(error)}))
"""


def model_out(model: Model) -> ModelOut:
    return ModelOut.model_validate(model)


def version_out(version: ModelVersion) -> ModelVersionOut:
    return ModelVersionOut.model_validate(version)


def request_training(session: Session, body: ModelTrainCreate, *, actor: str | None) -> Model:
    """A `training` model plus a queued `train` job; the caller commits and enqueues."""
    dataset = get_dataset(session, body.dataset_id, field="dataset_id", where="body")
    model = Model(
        id=new_id("mdl"),
        name=body.name,
        architecture=body.architecture,
        dataset_id=dataset.id,
        train_params={"recipe": body.train.model_dump(), "width": body.width},
    )
    return lifecycle.model_created(
        session,
        model,
        ModelStatus.training,
        actor=actor,
        event=AuditEventType.model_training_requested,
        data={
            "name": model.name,
            "architecture": model.architecture,
            "dataset_id": dataset.id,
            "train_params": model.train_params,
        },
    )


def file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def check_weights_fit(path: Path) -> str | None:
    """Load the checkpoint into the architecture its spec names, in a child process (torch stays out of
    the API process). None when it fits, else the reason."""
    completed = subprocess.run(
        [sys.executable, "-c", _WEIGHTS_CHECK_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=WEIGHTS_CHECK_TIMEOUT_S,
        check=False,
    )
    try:
        verdict = json.loads(completed.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(
            f"checkpoint weight check failed to run (exit {completed.returncode}): {completed.stderr[-2000:]}"
        ) from None
    return None if verdict.get("ok") else str(verdict.get("error"))


def register_upload(
    session: Session, settings: Settings, *, name: str, dataset_id: str, temp_path: Path, actor: str | None
) -> Model:
    """Validate the uploaded file at `temp_path`, move it into the artifact store and record model + v1.

    The caller commits; on any error the temporary file is removed and nothing is written.
    """
    final_path: Path | None = None
    try:
        dataset = get_dataset(session, dataset_id, field="dataset_id", where="body")
        try:
            header = read_header(temp_path)
        except CheckpointError as error:
            raise invalid("checkpoint", str(error).replace(temp_path.name, "the uploaded file")) from None
        spec = header.spec
        if spec.num_classes != dataset.num_classes:
            raise invalid(
                "checkpoint",
                f"the checkpoint's spec has num_classes={spec.num_classes} but dataset {dataset.id} has "
                f"{dataset.num_classes} classes",
                value={"spec.num_classes": spec.num_classes},
            )
        if settings.verify_uploaded_weights:
            reason = check_weights_fit(temp_path)
            if reason is not None:
                raise invalid("checkpoint", reason.replace(temp_path.name, "the uploaded file"))
        sha256, size_bytes = file_sha256(temp_path)
        model = Model(id=new_id("mdl"), name=name, architecture=spec.architecture, dataset_id=dataset.id)
        version_id = new_id("ver")
        final_path = settings.artifacts / "models" / model.id / f"{version_id}.safetensors"
        final_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp_path, final_path)
        lifecycle.model_created(
            session,
            model,
            ModelStatus.ready,
            actor=actor,
            event=AuditEventType.model_registered,
            data={
                "name": name,
                "architecture": spec.architecture,
                "dataset_id": dataset.id,
                "source": "upload",
            },
        )
        lifecycle.version_created(
            session,
            model,
            checkpoint_uri=str(final_path),
            sha256=sha256,
            size_bytes=size_bytes,
            method="upload",
            params={"spec": spec.model_dump()},
            version_id=version_id,
            actor=actor,
        )
        return model
    except BaseException:
        temp_path.unlink(missing_ok=True)
        if final_path is not None:
            final_path.unlink(missing_ok=True)
        raise


def get_model(session: Session, model_id: str) -> Model:
    return get_or_404(session, Model, model_id, "model")


def get_version(session: Session, version_id: str) -> ModelVersion:
    return get_or_404(session, ModelVersion, version_id, "model version")


def head_version(session: Session, model_id: str) -> ModelVersion:
    model = get_model(session, model_id)
    if model.head_version_id is None:
        raise ProblemError(
            409, f"model {model_id} is {model.status} and has no version yet", slug="model-not-ready"
        )
    return get_version(session, model.head_version_id)


def refuse_retired(version: ModelVersion) -> None:
    """410 for a retired version: it still holds samples that a later version forgot."""
    if version.retired_at is None:
        return
    purge = (
        f"its file was purged at {version.purged_at.isoformat()}"
        if version.purged_at is not None
        else f"its file is purged at {version.purge_after.isoformat() if version.purge_after else 'once due'}"
    )
    raise ProblemError(
        410,
        f"version {version.id} was retired at {version.retired_at.isoformat()}: it still holds samples that "
        f"its successor {version.retired_by} forgot; {purge}. Download the model's current head instead "
        f"(/v1/models/{version.model_id}/checkpoint).",
        slug="version-retired",
        title="Version retired",
        errors=[
            error_item(
                "version_id", f"retired; successor {version.retired_by}", where="path", value=version.id
            )
        ],
    )


def list_models(
    session: Session,
    secret: str,
    *,
    dataset_id: str | None,
    status: ModelStatus | None,
    cursor: str | None,
    limit: int,
) -> Page[ModelOut]:
    filters = {"dataset_id": dataset_id, "status": status.value if status else None}
    query = select(Model)
    if dataset_id is not None:
        query = query.where(Model.dataset_id == dataset_id)
    if status is not None:
        query = query.where(Model.status == status.value)
    return keyset_page(
        session,
        query,
        [(Model.created_at, datetime), (Model.id, str)],
        model_out,
        cursor=cursor,
        limit=limit,
        secret=secret,
        resource="models",
        filters=filters,
    )


def list_versions(
    session: Session, secret: str, model_id: str, cursor: str | None, limit: int
) -> Page[ModelVersionOut]:
    get_model(session, model_id)
    return keyset_page(
        session,
        select(ModelVersion).where(ModelVersion.model_id == model_id),
        [(ModelVersion.number, int)],
        version_out,
        cursor=cursor,
        limit=limit,
        secret=secret,
        resource="versions",
        filters={"model_id": model_id},
    )


def conflict(detail: str, field: str, value: object = None) -> ProblemError:
    return ProblemError(409, detail, slug="conflict", errors=[error_item(field, detail, value=value)])
