from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.schemas import StrictModel, Text
from unlearning.data.formats import FORMAT_NAMES


class DatasetCreate(StrictModel):
    name: Text = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")
    format: Literal[FORMAT_NAMES] = Field(  # type: ignore[valid-type]
        description="A registered dataset format (`unlearning.data.formats.FORMATS`)."
    )
    uri: Text | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="An absolute local path, `file://` or `s3://bucket/key` URI inside the service's dataset "
        "roots (`UNLEARN_DATASET_ROOTS`); none for `digits`.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="The format's loader options (seed, fractions, ...); unknown ones are refused.",
    )


class DatasetOut(BaseModel):
    id: str
    name: str
    format: str
    uri: str | None
    content_sha256: str | None = Field(
        default=None, description="sha256 of an s3:// dataset's objects, recorded when it was registered."
    )
    options: dict[str, Any]
    num_classes: int
    class_names: list[str]
    split_counts: dict[str, int]
    created_at: datetime


class SampleOut(BaseModel):
    sample_id: str
    label: int
    split: str
