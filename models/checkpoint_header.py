"""Read and validate a checkpoint's safetensors header without torch (usable by the HTTP edge).

A checkpoint is a safetensors file whose metadata holds `spec` (the `ModelSpec` as JSON) and the caller's
keys (dataset id, ...); tensors are the model's state dict (under its checkpoint names: see
`models.base.Classifier.checkpoint_state`) plus optional `mask.<name>` pruning masks.

A user's own file (`safetensors.torch.save_file(model.state_dict(), path)`) has no `spec`: `read_tensors`
reads it, and `write_with_metadata` copies it with the spec added to its metadata (tensor bytes and names
untouched), which is how an upload becomes a checkpoint of this service.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
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


@dataclass(frozen=True)
class TensorListing:
    """A safetensors file's metadata and tensor names, dtypes and shapes (no spec required)."""

    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]


PICKLE_ADVICE = (
    "pickles can run code, so they are never loaded: save the weights with "
    "safetensors.torch.save_file(model.state_dict(), 'model.safetensors')"
)


def foreign_format(path: Path) -> str | None:
    """What a file that is not safetensors looks like, when it looks like something known."""
    with open(path, "rb") as handle:
        start = handle.read(8)
    if start.startswith(b"PK\x03\x04"):
        return "a zip archive (what torch.save writes)"
    if len(start) >= 2 and start[0] == 0x80 and 2 <= start[1] <= 5:
        return "a Python pickle (what torch.save writes)"
    return None


def read_tensors(path: str | Path) -> TensorListing:
    """Metadata and tensor infos of any safetensors file; `CheckpointError` naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file")
    looks_like = foreign_format(path)
    if looks_like is not None:
        raise CheckpointError(
            f"{path.name} is not a valid safetensors file: it is {looks_like}; {PICKLE_ADVICE}"
        )
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
    return TensorListing(metadata=metadata, tensors=tensors)


def read_header(path: str | Path) -> CheckpointHeader:
    """Parse the header and the spec; raise `CheckpointError` naming what is wrong."""
    listing = read_tensors(path)
    spec = parse_spec(listing.metadata, Path(path).name)
    return CheckpointHeader(spec=spec, metadata=listing.metadata, tensors=listing.tensors)


def write_with_metadata(source: str | Path, target: str | Path, metadata: dict[str, str]) -> None:
    """Copy the safetensors file `source` to `target` (atomically) with `metadata` as its metadata.

    Only the JSON header changes (tensor offsets are relative to the data, which is copied byte for
    byte), so the tensors keep their names, dtypes and bytes. `source` must have passed `read_tensors`.
    """
    target = Path(target)
    with open(source, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        header["__metadata__"] = dict(metadata)
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # safetensors aligns the data to 8 bytes
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(descriptor, "wb") as out:
                out.write(struct.pack("<Q", len(encoded)))
                out.write(encoded)
                shutil.copyfileobj(handle, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise


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
