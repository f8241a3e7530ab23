"""Safetensors checkpoints: atomic save with spec metadata and masks; load that rebuilds the model.

Weights are only ever read through safetensors (no pickle), and a file that does not match the architecture
its own spec declares is refused with a `CheckpointError` naming the offending tensors.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from models.base import Classifier
from models.checkpoint_header import (
    FORMAT_KEY,
    FORMAT_VALUE,
    MASK_PREFIX,
    SPEC_KEY,
    CheckpointError,
    TensorInfo,
    read_header,
)
from models.registry import build_model

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "LoadedCheckpoint",
    "WeightsFit",
    "load_weights",
    "save_checkpoint",
    "weights_fit",
    "load_checkpoint",
    "file_sha256",
]

RESERVED_KEYS = {SPEC_KEY, FORMAT_KEY}


@dataclass(frozen=True)
class CheckpointInfo:
    sha256: str
    size_bytes: int


@dataclass
class LoadedCheckpoint:
    model: Classifier
    metadata: dict[str, str]
    masks: dict[str, Tensor] = field(default_factory=dict)
    info: CheckpointInfo | None = None


def file_sha256(path: str | Path) -> CheckpointInfo:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return CheckpointInfo(sha256=digest.hexdigest(), size_bytes=size)


def save_checkpoint(
    model: Classifier,
    path: str | Path,
    metadata: dict[str, str] | None = None,
    masks: dict[str, Tensor] | None = None,
) -> CheckpointInfo:
    """Write `model` (and its masks: `masks` or else `model.masks`) to `path` atomically.

    The file is written next to `path` under a temporary name and renamed, so readers never see a partial
    checkpoint. Returns the sha256 and size of the written file.
    """
    extra = dict(metadata or {})
    clashes = RESERVED_KEYS & extra.keys()
    if clashes:
        raise ValueError(f"metadata keys {sorted(clashes)} are reserved for the checkpoint format")
    not_strings = [
        key for key, value in extra.items() if not isinstance(key, str) or not isinstance(value, str)
    ]
    if not_strings:
        raise ValueError(f"metadata values must be strings; not so for keys {not_strings}")
    extra[SPEC_KEY] = model.spec.model_dump_json()
    extra[FORMAT_KEY] = FORMAT_VALUE

    tensors = {
        name: tensor.detach().to("cpu").contiguous() for name, tensor in model.checkpoint_state().items()
    }
    parameter_names = {name for name, _ in model.named_parameters()}
    for name, mask in (model.masks if masks is None else masks).items():
        if name not in parameter_names:
            raise ValueError(f"mask for unknown parameter {name!r}")
        tensors[MASK_PREFIX + model.checkpoint_name(name)] = mask.detach().to("cpu", torch.bool).contiguous()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    try:
        save_file(tensors, temp_name, metadata=extra)
        with open(temp_name, "rb+") as handle:
            os.fsync(handle.fileno())
        info = file_sha256(temp_name)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return info


@dataclass(frozen=True)
class WeightsFit:
    """How a file's tensors compare with a model's checkpoint state (names as in the file)."""

    missing: list[str]
    unexpected: list[str]
    wrong_shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]
    """name -> (shape in the file, shape the model has)."""

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shapes)

    def describe(self, architecture: str) -> str:
        if self.missing or self.unexpected:
            return (
                f"does not fit architecture {architecture!r}: missing tensors {self.missing[:10]}, "
                f"unexpected tensors {self.unexpected[:10]}"
            )
        return (
            f"does not fit architecture {architecture!r}: {len(self.wrong_shapes)} tensors have the wrong "
            "shape: "
            + "; ".join(
                f"{key}: file {list(file)} vs model {list(model)}"
                for key, (file, model) in list(self.wrong_shapes.items())[:10]
            )
        )


def weights_fit(model: Classifier, tensors: dict[str, TensorInfo]) -> WeightsFit:
    """Compare the (non-mask) tensors of a file with what `model` saves."""
    expected = {name: tuple(tensor.shape) for name, tensor in model.checkpoint_state().items()}
    weights = {name: info for name, info in tensors.items() if not name.startswith(MASK_PREFIX)}
    return WeightsFit(
        missing=sorted(expected.keys() - weights.keys()),
        unexpected=sorted(weights.keys() - expected.keys()),
        wrong_shapes={
            key: (info.shape, expected[key])
            for key, info in weights.items()
            if key in expected and info.shape != expected[key]
        },
    )


def load_weights(model: Classifier, path: str | Path, tensors: dict[str, TensorInfo]) -> dict[str, Tensor]:
    """Load the file's weights (strictly) and masks into `model`; `CheckpointError` if they do not fit.

    `tensors` is the file's header listing. Returns the masks set (by parameter name).
    """
    name = Path(path).name
    fit = weights_fit(model, tensors)
    if not fit.fits:
        raise CheckpointError(f"{name} {fit.describe(model.spec.architecture)}")
    parameter_shapes = {
        model.checkpoint_name(key): tuple(param.shape) for key, param in model.named_parameters()
    }
    mask_names = [key[len(MASK_PREFIX) :] for key in tensors if key.startswith(MASK_PREFIX)]
    for mask_name in mask_names:
        if mask_name not in parameter_shapes:
            raise CheckpointError(f"{name} has a mask for unknown parameter {mask_name!r}")
        mask_shape = tensors[MASK_PREFIX + mask_name].shape
        if mask_shape != parameter_shapes[mask_name]:
            raise CheckpointError(
                f"{name} mask for {mask_name!r} has shape {list(mask_shape)}, "
                f"parameter has {list(parameter_shapes[mask_name])}"
            )
    try:
        loaded = load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises its own error type for corrupt payloads
        raise CheckpointError(f"{name} tensors could not be read: {error}") from None
    own = model.checkpoint_state()
    state = {key: loaded[key] for key in own}
    non_float = [
        key
        for key, tensor in state.items()
        if own[key].is_floating_point() and not tensor.is_floating_point()
    ]
    if non_float:
        raise CheckpointError(
            f"{name} has non-float tensors where the model expects floats: {non_float[:10]}"
        )
    model.load_checkpoint_state(state)
    model.set_masks({model.state_name(key): loaded[MASK_PREFIX + key].to(torch.bool) for key in mask_names})
    return dict(model.masks)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model its spec names, load weights strictly, attach masks; `CheckpointError` if unfit."""
    header = read_header(path)
    try:
        model = build_model(header.spec)
    except ValueError as error:  # an architecture this installation cannot build
        raise CheckpointError(f"{Path(path).name}: {error}") from None
    load_weights(model, path, header.tensors)
    model.to(device)
    model.eval()
    metadata = {key: value for key, value in header.metadata.items() if key not in RESERVED_KEYS}
    return LoadedCheckpoint(model=model, metadata=metadata, masks=dict(model.masks), info=file_sha256(path))
