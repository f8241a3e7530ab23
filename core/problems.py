"""RFC 9457 problem documents: the shape of every error the service reports, over HTTP (`app.errors`)
or stored on a failed request, job or model (the job loop)."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TYPE_PREFIX = "urn:unlearn:problem:"
"""`type` of the service's own problems is this prefix plus a slug (`urn:unlearn:problem:job-failed`)."""


class ErrorItem(BaseModel):
    """One offending input: which field, where, and what is wrong with it."""

    model_config = ConfigDict(extra="allow")

    field: str
    in_: str = Field(default="body", alias="in", serialization_alias="in")
    message: str
    value: Any = None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[ErrorItem] | None = None


def problem(slug: str, title: str, detail: str, *, status: int = 500, **extra: Any) -> dict[str, Any]:
    """A problem document as stored JSON (extension members in `extra`)."""
    return {"type": TYPE_PREFIX + slug, "title": title, "status": status, "detail": detail, **extra}
