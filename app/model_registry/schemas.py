from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, computed_field

from app.schemas import StrictModel, Text
from core.db import VersionState
from models.spec import Architecture


class TrainParams(StrictModel):
    """The base-model training recipe (mirrors `unlearning.training.TrainRecipe`, with upper bounds)."""

    epochs: StrictInt = Field(default=30, ge=1, le=1000)
    batch_size: StrictInt = Field(default=128, ge=1, le=8192)
    lr_max: StrictFloat | StrictInt = Field(default=0.05, gt=0, le=10)
    momentum: StrictFloat | StrictInt = Field(default=0.9, ge=0, lt=1)
    weight_decay: StrictFloat | StrictInt = Field(default=5e-4, ge=0, le=1)
    augment: StrictBool = True
    seed: StrictInt = Field(default=0, ge=0, le=2**32 - 1)


class ModelTrainCreate(StrictModel):
    """Ask a worker to train a base model on a registered dataset."""

    name: Text = Field(min_length=1, max_length=200)
    architecture: Architecture
    dataset_id: Text = Field(min_length=1, max_length=40)
    width: StrictInt | None = Field(default=None, ge=1, le=4096)
    train: TrainParams = Field(default_factory=TrainParams)


class ModelLinks(BaseModel):
    self: str
    versions: str
    head_version: str | None = None
    checkpoint: str | None = None


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    architecture: str
    dataset_id: str
    status: str
    head_version_id: str | None
    error: dict[str, Any] | None
    train_params: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def links(self) -> ModelLinks:
        head = self.head_version_id
        return ModelLinks(
            self=f"/v1/models/{self.id}",
            versions=f"/v1/models/{self.id}/versions",
            head_version=f"/v1/model-versions/{head}" if head else None,
            checkpoint=f"/v1/model-versions/{head}/checkpoint" if head else None,
        )


class VersionLinks(BaseModel):
    self: str
    checkpoint: str
    model: str


class ModelVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    model_id: str
    parent_id: str | None
    number: int
    method: str | None
    params: dict[str, Any]
    sha256: str
    size_bytes: int
    forgotten_count: int
    metrics: dict[str, Any]
    job_id: str | None
    created_at: datetime
    state: VersionState
    retired_at: datetime | None
    retired_by: str | None
    purge_after: datetime | None
    purged_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def links(self) -> VersionLinks:
        return VersionLinks(
            self=f"/v1/model-versions/{self.id}",
            checkpoint=f"/v1/model-versions/{self.id}/checkpoint",
            model=f"/v1/models/{self.model_id}",
        )


UPLOAD_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "dataset_id", "checkpoint"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "dataset_id": {"type": "string", "minLength": 1, "maxLength": 40},
        "checkpoint": {"type": "string", "format": "binary", "description": "A safetensors checkpoint."},
    },
}
