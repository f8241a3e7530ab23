import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    WithJsonSchema,
    computed_field,
)

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
    """Ask a worker to train a base model on a registered dataset (the spec's input geometry and
    normalisation come from the dataset)."""

    name: Text = Field(min_length=1, max_length=200)
    architecture: Architecture
    dataset_id: Text = Field(min_length=1, max_length=40)
    width: StrictInt | None = Field(
        default=None, ge=1, le=4096, description="Base width of a built-in or plugin architecture."
    )
    train: TrainParams = Field(default_factory=TrainParams)


def _numbers(value: Any) -> Any:
    """A form field holding numbers: `0.5,0.4,0.3`, `0.5 0.4 0.3` or a JSON array."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("not a JSON array of numbers") from None
    parts = [part for part in text.replace(",", " ").split() if part]
    try:
        return [float(part) for part in parts]
    except ValueError:
        raise ValueError("must be numbers separated by commas (one per channel)") from None


PerChannel = Annotated[
    list[float] | None,
    BeforeValidator(_numbers),
    WithJsonSchema(
        {
            "type": "string",
            "description": "One number per input channel: comma-separated (`0.485,0.456,0.406`) or a JSON "
            "array. Default: the dataset's train-split statistics.",
            "examples": ["0.485,0.456,0.406"],
        }
    ),
]


class ModelUploadForm(BaseModel):
    """The text fields of `POST /v1/models/upload` (multipart/form-data; the file part is `checkpoint`).

    `checkpoint` is a safetensors file: a plain `state_dict` as users write it
    (`safetensors.torch.save_file(model.state_dict(), "model.safetensors")`, the architecture's own tensor
    names), or a checkpoint this service wrote (it carries its spec in its metadata). The spec fields say
    how the model sees its input; those left out default to the dataset's (its class count, channels,
    image size, and its train-split mean/std). The service loads the weights strictly and runs one forward
    pass on real images of the dataset before it stores anything.
    """

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    dataset_id: Annotated[str, Field(min_length=1, max_length=40)]
    architecture: Annotated[
        Architecture | None,
        Field(description="Required for a plain state_dict, e.g. torchvision/resnet18."),
    ] = None
    num_classes: Annotated[int | None, Field(ge=2, le=100_000)] = None
    in_channels: Annotated[int | None, Field(ge=1, le=64)] = None
    image_size: Annotated[
        int | None, Field(ge=1, le=4096, description="Height and width of the (square) input images.")
    ] = None
    mean: PerChannel = None
    std: PerChannel = None
    width: Annotated[
        int | None, Field(ge=1, le=4096, description="Base width of a built-in or plugin architecture.")
    ] = None

    def declared_spec(self) -> dict[str, Any]:
        """The spec fields the form gives (those left out are not in the dict)."""
        return self.model_dump(exclude={"name", "dataset_id"}, exclude_none=True)


UPLOAD_TEXT_FIELDS = tuple(ModelUploadForm.model_fields)


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


def upload_form_schema() -> dict[str, Any]:
    """The OpenAPI schema of the upload form (component `ModelUpload`): the text fields plus the file."""
    schema = ModelUploadForm.model_json_schema(ref_template="#/components/schemas/{model}")
    schema["title"] = "ModelUpload"
    schema["properties"]["checkpoint"] = {
        "type": "string",
        "format": "binary",
        "description": "A safetensors file: a plain state_dict in the architecture's own tensor names, or a "
        "checkpoint this service wrote. Pickles (torch.save) are refused.",
    }
    schema["required"] = [*schema.get("required", []), "checkpoint"]
    return schema
