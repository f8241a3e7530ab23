"""The deletion-request resource: what `GET /v1/deletion-requests/{id}` serves and what a status-change
callback carries, mapped by pydantic from the ORM row (`from_attributes`) or from a row of its columns (a new
request's, `core.lifecycle.requests_received`), so all of them are the same."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from core.db.models import RequestStatus, utcnow


class RequestLinks(BaseModel):
    self: str
    cancel: str
    model: str
    audit: str | None = None
    checkpoint: str | None = None
    result_version: str | None = None


def is_overdue(status: str, due_at: datetime, now: datetime) -> bool:
    """Not (yet) succeeded nor cancelled, and past its due date."""
    return status not in (RequestStatus.succeeded, RequestStatus.cancelled) and due_at < now


class DeletionRequestOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    id: str
    model_id: str
    external_ref: str | None
    kind: str
    sample_ids: list[str] | None
    class_: int | None = Field(validation_alias="forget_class", serialization_alias="class")
    method: str
    params: dict[str, Any]
    status: RequestStatus
    progress: float
    stage: str | None
    error: dict[str, Any] | None
    received_at: datetime
    due_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result_version_id: str | None
    cancel_requested: bool
    callback_url: str | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def sample_count(self) -> int | None:
        return len(self.sample_ids) if self.sample_ids is not None else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def overdue(self) -> bool:
        return is_overdue(self.status, self.due_at, utcnow())

    @computed_field  # type: ignore[prop-decorator]
    @property
    def links(self) -> RequestLinks:
        base = f"/v1/deletion-requests/{self.id}"
        version = self.result_version_id
        return RequestLinks(
            self=base,
            cancel=f"{base}/cancel",
            model=f"/v1/models/{self.model_id}",
            audit=f"{base}/audit" if self.status == RequestStatus.succeeded else None,
            checkpoint=f"/v1/model-versions/{version}/checkpoint" if version else None,
            result_version=f"/v1/model-versions/{version}" if version else None,
        )


def request_resource(request: Any) -> dict[str, Any]:
    """The deletion request row as JSON, exactly as the API serves it."""
    resource: dict[str, Any] = DeletionRequestOut.model_validate(request).model_dump(
        mode="json", by_alias=True
    )
    return resource
