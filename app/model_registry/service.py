"""Models: ask a worker to train one, or register an uploaded checkpoint as version 1; browse versions.

An upload is checked before anything is stored (`register_upload`): torch-free checks here (the file is
safetensors, not a pickle; the spec fields agree with the file's own spec and the dataset's class count),
then the model check in a child process (`app.model_registry.checker`, running
`unlearning.upload_check`): the spec resolved against the dataset, a strict load, one forward pass on real
images. A plain state_dict is stored with the resolved spec added to its metadata (tensor names and bytes
untouched); a checkpoint this service wrote is stored byte for byte. Either goes into the artifact store
(`core.storage`), its sha256 computed on the way.
"""

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets.service import get_dataset
from app.errors import ProblemError, error_item, invalid
from app.listing import get_or_404, keyset_page
from app.model_registry.checker import CHECKER, CheckerUnavailable
from app.model_registry.schemas import ModelOut, ModelTrainCreate, ModelVersionOut
from app.model_registry.upload import ReceivedUpload
from app.schemas import Page
from core import lifecycle
from core.db.audit import AuditEventType
from core.db.models import Model, ModelStatus, ModelVersion, new_id
from core.settings import Settings
from core.storage import StoredObject, artifact_store, s3_options
from core.storage.datasets import DatasetSource, local_source
from core.storage.mirror import DatasetChanged, DatasetUnavailable
from models.checkpoint_header import (
    FORMAT_KEY,
    FORMAT_VALUE,
    SPEC_KEY,
    CheckpointError,
    parse_spec,
    read_tensors,
    write_with_metadata,
)
from models.spec import BUILTIN_ARCHITECTURES, ModelSpec

log = logging.getLogger(__name__)

UPLOAD_SHA256_KEY = "upload_sha256"
"""Metadata key of a stored upload: the sha256 of the file as the user sent it."""


def model_out(model: Model) -> ModelOut:
    return ModelOut.model_validate(model)


def version_out(version: ModelVersion) -> ModelVersionOut:
    return ModelVersionOut.model_validate(version)


def request_training(
    session: Session, body: ModelTrainCreate, settings: Settings, *, actor: str | None
) -> Model:
    """A `training` model plus a queued `train` job; the caller commits and enqueues.

    An architecture other than the built-ins is checked first (it must build for the dataset's images and
    classes and run on them), in the model-check process."""
    dataset = DatasetRef.read(session, body.dataset_id)
    if body.architecture not in BUILTIN_ARCHITECTURES:
        declared = {"architecture": body.architecture}
        if body.width is not None:
            declared["width"] = body.width
        model_check(dataset, settings, declared=declared)
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


@dataclass(frozen=True)
class DatasetRef:
    """What the model check needs of a dataset row, read before the check so that no transaction (on
    SQLite: the write lock) is held while it runs."""

    id: str
    format: str
    uri: str | None
    options: dict[str, Any]
    num_classes: int
    content_sha256: str | None = None

    @classmethod
    def read(cls, session: Session, dataset_id: str) -> "DatasetRef":
        row = get_dataset(session, dataset_id, field="dataset_id", where="body")
        ref = cls(row.id, row.format, row.uri, dict(row.options or {}), row.num_classes, row.content_sha256)
        session.rollback()  # end the read transaction before the (seconds-long) check
        return ref

    def source(self, settings: Settings) -> DatasetSource:
        """Where the model check reads the dataset on this host (an s3:// one: the API's local copy)."""
        try:
            return local_source(
                self.uri, self.content_sha256, s3=s3_options(settings), cache_root=settings.cache_root
            )
        except DatasetChanged as error:
            raise invalid("dataset_id", str(error), value=self.id) from None
        except DatasetUnavailable as error:
            raise ProblemError(503, str(error), slug="storage-unavailable") from None


def model_check(
    dataset: DatasetRef,
    settings: Settings,
    *,
    declared: dict[str, Any],
    file_spec: ModelSpec | None = None,
    checkpoint: Path | None = None,
) -> ModelSpec:
    """The spec the model-check process resolves and verifies (see `unlearning.upload_check`); a 422
    naming the field at fault when it refuses."""
    source = dataset.source(settings)
    request = {
        "dataset": {
            "id": dataset.id,
            "format": dataset.format,
            "uri": source.local,
            "options": dataset.options,
        },
        "declared": declared,
        "file_spec": file_spec.model_dump(mode="json") if file_spec is not None else None,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
    }
    try:
        answer = CHECKER.check(request)
    except CheckerUnavailable as error:
        raise ProblemError(
            503, f"the model check is unavailable: {error}", slug="check-unavailable"
        ) from None
    if answer.get("ok"):
        return ModelSpec.model_validate(answer["spec"])
    if answer.get("internal"):
        raise RuntimeError(f"the model check failed: {answer.get('message')}")
    message = source.public(str(answer.get("message")))
    if checkpoint is not None:
        message = message.replace(checkpoint.name, "the uploaded file")
    raise invalid(str(answer.get("field") or "checkpoint"), message, value=answer.get("value"))


def _declared_conflicts(declared: dict[str, Any], file_spec: ModelSpec) -> None:
    own = file_spec.model_dump(mode="json")
    for key, value in declared.items():
        if own.get(key) != value:
            raise invalid(
                key, f"{value!r} here, but the checkpoint's own spec says {own.get(key)!r}", value=value
            )


def register_upload(
    session: Session, settings: Settings, upload: ReceivedUpload, *, actor: str | None
) -> Model:
    """Validate the uploaded file, copy it into the artifact store and record model + v1.

    The caller commits; on any error the temporary file is removed and nothing is written (an object
    already stored is deleted again).
    """
    temp_path = upload.temp_path
    stored: StoredObject | None = None
    store = artifact_store(settings)
    try:
        dataset = DatasetRef.read(session, upload.dataset_id)
        try:
            listing = read_tensors(temp_path)
            file_spec = parse_spec(listing.metadata, temp_path.name) if SPEC_KEY in listing.metadata else None
        except CheckpointError as error:
            raise invalid("checkpoint", str(error).replace(temp_path.name, "the uploaded file")) from None
        declared = upload.declared
        if file_spec is None and "architecture" not in declared:
            raise invalid(
                "architecture",
                "required for a plain state_dict (the file carries no spec of this service): name its "
                "architecture, e.g. torchvision/resnet18",
            )
        if file_spec is not None:
            _declared_conflicts(declared, file_spec)
            if file_spec.num_classes != dataset.num_classes:
                raise invalid(
                    "checkpoint",
                    f"the checkpoint's spec has num_classes={file_spec.num_classes} but dataset {dataset.id} "
                    f"has {dataset.num_classes} classes",
                    value={"spec.num_classes": file_spec.num_classes},
                )
        elif "num_classes" in declared and declared["num_classes"] != dataset.num_classes:
            raise invalid(
                "num_classes",
                f"{declared['num_classes']} classes, but dataset {dataset.id} has {dataset.num_classes}",
                value=declared["num_classes"],
            )
        if file_spec is None or settings.verify_uploaded_weights:
            spec = model_check(
                dataset, settings, declared=declared, file_spec=file_spec, checkpoint=temp_path
            )
        else:
            spec = file_spec
        upload_sha256, upload_size = file_sha256(temp_path)
        model = Model(
            id=new_id("mdl"), name=upload.name, architecture=spec.architecture, dataset_id=dataset.id
        )
        version_id = new_id("ver")
        key = f"models/{model.id}/{version_id}.safetensors"
        if file_spec is None:
            metadata = {
                **{
                    key: value for key, value in listing.metadata.items() if key not in (SPEC_KEY, FORMAT_KEY)
                },
                SPEC_KEY: spec.model_dump_json(),
                FORMAT_KEY: FORMAT_VALUE,
                "model_id": model.id,
                "version_id": version_id,
                "dataset_id": dataset.id,
                "method": "upload",
                UPLOAD_SHA256_KEY: upload_sha256,
            }
            with store.staged(".safetensors") as staged:
                write_with_metadata(temp_path, staged, metadata)
                stored = store.put_file(key, staged)
        else:
            stored = store.put_file(key, temp_path)
        temp_path.unlink(missing_ok=True)
        lifecycle.model_created(
            session,
            model,
            ModelStatus.ready,
            actor=actor,
            event=AuditEventType.model_registered,
            data={
                "name": upload.name,
                "architecture": spec.architecture,
                "dataset_id": dataset.id,
                "source": "upload",
            },
        )
        lifecycle.version_created(
            session,
            model,
            checkpoint_uri=stored.url,
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            method="upload",
            params={
                "spec": spec.model_dump(),
                "upload": {
                    "sha256": upload_sha256,
                    "size_bytes": upload_size,
                    "had_spec": file_spec is not None,
                },
            },
            version_id=version_id,
            actor=actor,
        )
        return model
    except BaseException:
        temp_path.unlink(missing_ok=True)
        if stored is not None:
            try:
                store.delete(stored.url)
            except Exception:
                log.exception("could not remove %s after a failed upload", stored.url)
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
