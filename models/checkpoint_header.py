"""Read and validate a checkpoint's safetensors header without torch (usable by the HTTP edge).

A checkpoint is a safetensors file whose metadata holds `spec` (the `ModelSpec` as JSON) and the caller's
keys (dataset id, ...); tensors are the model's state dict plus optional `mask.<param name>` pruning masks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from safetensors import SafetensorError, safe_open

from models.spec import ModelSpec

MASK_PREFIX = "mask."
FORMAT_KEY = "format"
FORMAT_VALUE = "unlearn-service/checkpoint-v1"
SPEC_KEY = "spec"


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, not safetensors, truncated, or does not fit its architecture."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class CheckpointHeader:
    spec: ModelSpec
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]

    @property
    def mask_names(self) -> list[str]:
        """Names of the parameters that carry a pruning mask."""
        return [name[len(MASK_PREFIX) :] for name in self.tensors if name.startswith(MASK_PREFIX)]


def read_header(path: str | Path) -> CheckpointHeader:
    """Parse the header and the spec; raise `CheckpointError` naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {}
            for name in handle.keys():
                tensor_slice = handle.get_slice(name)
                tensors[name] = TensorInfo(tensor_slice.get_dtype(), tuple(tensor_slice.get_shape()))
    except SafetensorError as error:
        raise CheckpointError(
            f"{path.name} is not a valid safetensors file (or is truncated): {error}"
        ) from None
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path.name} could not be read as safetensors: {error}") from None
    return CheckpointHeader(spec=parse_spec(metadata, path.name), metadata=metadata, tensors=tensors)


def parse_spec(metadata: dict[str, str], file_name: str = "checkpoint") -> ModelSpec:
    raw = metadata.get(SPEC_KEY)
    if raw is None:
        raise CheckpointError(
            f"{file_name} has no {SPEC_KEY!r} metadata key: it was not written by this service"
        )
    try:
        return ModelSpec.model_validate(json.loads(raw))
    except (json.JSONDecodeError, ValidationError) as error:
        raise CheckpointError(
            f"{file_name} metadata {SPEC_KEY!r} is not a valid model spec: {error}"
        ) from None
