from datetime import datetime
from typing import Annotated, Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, PlainValidator, UrlConstraints, WithJsonSchema

from app.schemas import Text, storable_text
from core.resources import DeletionRequestOut, RequestLinks

__all__ = [
    "AuditReportOut",
    "BatchItemResult",
    "DeletionBatchCreate",
    "DeletionBatchOut",
    "DeletionRequestCreate",
    "DeletionRequestOut",
    "RequestLinks",
]

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


class DeletionBatchCreate(BaseModel):
    """Up to `max_batch_requests` (1,000) deletion requests in one call. Each item is checked and stored
    on its own (one bad item refuses only itself) and answered in `results`, in order."""

    model_config = ConfigDict(extra="forbid")

    requests: list[Any] = Field(
        min_length=1,
        description="Items shaped like the body of POST /v1/deletion-requests (DeletionRequestCreate), "
        "each with its own `external_ref`. An item that is not such an object is refused on its own.",
    )


class BatchItemResult(BaseModel):
    index: int
    external_ref: str | None = None
    status: int = Field(description="202: accepted (see `request`); a 4xx: refused (see `problem`).")
    request: DeletionRequestOut | None = None
    problem: dict[str, Any] | None = Field(default=None, description="An RFC 9457 problem document.")


class DeletionBatchOut(BaseModel):
    accepted: int
    refused: int
    replayed: bool = Field(description="True: the answer of an earlier call with this Idempotency-Key.")
    results: list[BatchItemResult]
