from datetime import datetime
from typing import Annotated, Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, PlainValidator, UrlConstraints, WithJsonSchema

from app.schemas import Text, storable_text
from core.resources import DeletionRequestOut, RequestLinks

__all__ = ["AuditReportOut", "DeletionRequestCreate", "DeletionRequestOut", "RequestLinks"]

SampleId = Annotated[Text, Field(min_length=1, max_length=512)]


def _class_ref(value: object) -> int | str:
    """One check instead of an int|str union, so an error names `class`, not pydantic's union branches."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be a class index (an integer) or a class name (a string)")
    return storable_text(value) if isinstance(value, str) else value


ClassRef = Annotated[
    int | str,
    PlainValidator(_class_ref),
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string"}]}),
]
CallbackUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=2000, allowed_schemes=["http", "https"])]


class DeletionRequestCreate(BaseModel):
    """Forget either `sample_ids` (train samples of the model's dataset) or a whole `class`.

    Every field but `class` (resolved to `forget_class`) is stored in the column of its name."""

    model_config = ConfigDict(extra="forbid")

    model_id: Text = Field(min_length=1, max_length=40)
    sample_ids: list[SampleId] | None = Field(default=None, description="Sample ids to forget (train split).")
    class_: ClassRef | None = Field(
        default=None, alias="class", description="A class index or name: forget every train sample of it."
    )
    method: Text = Field(default="dau", min_length=1, max_length=64)
    params: dict[str, Any] = Field(
        default_factory=dict,
        description='Method hyperparameters, plus optional "reference": "retrain" for the audit.',
    )
    external_ref: Text | None = Field(default=None, min_length=1, max_length=200)
    callback_url: CallbackUrl | None = None


class AuditReportOut(BaseModel):
    request_id: str
    version_id: str
    created_at: datetime
    report: dict[str, Any]
