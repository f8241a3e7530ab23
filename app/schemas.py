"""Response shapes shared by every resource."""

from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictStr

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """Every list endpoint answers `{"data": [...], "next_cursor": str | null}`."""

    data: list[T]
    next_cursor: str | None


def storable_text(value: str) -> str:
    """Refuse what a database cannot store: NUL characters (PostgreSQL text) and lone surrogates (UTF-8)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


Text = Annotated[StrictStr, AfterValidator(storable_text)]
"""A string field of a request body: a JSON string (no coercion) that the database can store."""


class StrictModel(BaseModel):
    """Request bodies: unknown keys refused, no silent type coercion of strings."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


Cursor = Annotated[str | None, Query(max_length=2000, description="Opaque cursor from `next_cursor`.")]
Limit = Annotated[int | None, Query(ge=1, le=500, description="Page size (default 50, at most 500).")]
