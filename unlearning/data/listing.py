"""What a dataset source holds, listed without decoding a single image.

A `Catalog` (class names; every sample's id, label and split) is what the API stores in its `datasets`
and `samples` tables when a dataset is registered, and what a loader decodes: every loader lists its
source first, with the same function the API calls, then decodes the rows listed, so the two cannot
disagree. A format's options are a `FormatOptions` model: the loader's keyword arguments, validated,
unknown keys refused.

Standard library and pydantic only (no numpy, no torch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from unlearning.data.folder_layout import SPLITS


class CatalogError(ValueError):
    """The source or the options do not describe a dataset; `field` names the offending input (`uri`,
    `options.seed`, ...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class SourceNotFound(CatalogError, FileNotFoundError):
    """The uri names nothing on this machine (also a FileNotFoundError)."""


@dataclass(frozen=True)
class SampleRow:
    sample_id: str
    label: int
    split: str


@dataclass(frozen=True)
class Catalog:
    """A dataset's class names and samples, train rows first, then val, then test."""

    class_names: list[str]
    samples: list[SampleRow]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(SPLITS, 0)
        for row in self.samples:
            counts[row.split] += 1
        return counts


class FormatOptions(BaseModel):
    """A format's options: exactly its loader's keyword arguments, JSON types only (no coercion)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> Self:
        """Validated options; `CatalogError` naming the first offending option (`options.seed`)."""
        if raw is not None and not isinstance(raw, Mapping):
            raise CatalogError("options", f"options must be an object, got {raw!r}")
        try:
            return cls.model_validate(dict(raw or {}))
        except ValidationError as error:
            raise cls._first_error(error) from None

    @classmethod
    def _first_error(cls, error: ValidationError) -> CatalogError:
        first = error.errors()[0]
        cause = (first.get("ctx") or {}).get("error")
        if isinstance(cause, CatalogError):  # a check across options names its field itself
            return cause
        path = [str(part) for part in first["loc"] if part != "[key]"]
        field = ".".join(["options", *path])
        if first["type"] == "extra_forbidden":
            known = sorted(cls.model_fields)
            return CatalogError(field, f"unknown option {path[-1]!r}; known: {known}")
        return CatalogError(field, f"{first['msg']}, got {first['input']!r}")
