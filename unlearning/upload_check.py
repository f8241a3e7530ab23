"""The model check behind uploads and train requests: resolve the spec against the dataset, build the
architecture, load the weights strictly, run one forward pass on real images of the dataset.

It runs in a child process of the API (the API never imports torch): `python -m unlearning.upload_check`
reads one JSON request per line on stdin and answers one JSON line on stdout, after a first line
`{"ready": true, ...}` once torch and torchvision are imported. The process stays up between checks, so an
upload pays for the imports once per API process (`app.model_registry.checker` starts and feeds it).

Request: `{"dataset": {"id", "format", "uri", "options"}, "declared": {spec fields the user gave},
"file_spec": the checkpoint's own spec or null, "checkpoint": path or null}`.
Answer: `{"ok": true, "spec": {...}, "seconds": {...}}`, or `{"ok": false, "field": ..., "message": ...,
"value": ...}` naming the form field at fault (`checkpoint` when the value came from the file's own spec
or weights), or `{"ok": false, "internal": true, "message": ...}` when the check itself broke.

The checks, in order (the first failure answers):
1. declared fields against the file's own spec (when it has one): they must agree;
2. `num_classes`, `in_channels`, `image_size` against the dataset (defaults: the dataset's), `mean`/`std`
   (default: the dataset's train-split statistics) one per channel;
3. the architecture builds (`architecture`);
4. the weights fit it strictly: same names, same shapes (a classifier layer of another class count is
   a `num_classes` problem, a first convolution of another channel count an `in_channels` problem);
5. one forward pass on `SAMPLE_SIZE` train images gives finite B x num_classes logits, and
   `head(features(x))` equals the output (the head rule of `models.backbone`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from models.checkpoint import CheckpointError, WeightsFit, load_weights, weights_fit
from models.checkpoint_header import read_tensors
from models.spec import ModelSpec

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import Dataset

SAMPLE_SIZE = 8
"""Images of the dataset's train split the forward pass runs on."""
CACHED_DATASETS = 2

_datasets: OrderedDict[str, Dataset] = OrderedDict()


class Refusal(Exception):
    def __init__(self, field: str, message: str, value: Any = None) -> None:
        super().__init__(message)
        self.field, self.message, self.value = field, message, value

    def answer(self) -> dict[str, Any]:
        return {"ok": False, "field": self.field, "message": self.message, "value": self.value}


def dataset_for(source: dict[str, Any]) -> Dataset:
    """The dataset a request names, from a small in-memory cache (keyed by row and the file's mtime)."""
    from unlearning.data.cache import cache_policy
    from unlearning.pipeline import load_dataset

    uri = source.get("uri")
    stamp = None
    if uri:
        path = Path(str(uri).removeprefix("file://")).expanduser()
        stamp = path.stat().st_mtime_ns if path.exists() else None
    key = json.dumps([source.get("format"), uri, source.get("options") or {}, stamp], sort_keys=True)
    if key in _datasets:
        _datasets.move_to_end(key)
        return _datasets[key]
    try:
        with cache_policy(persist=False):  # like the jobs: no copy of the images on disk
            dataset = load_dataset(source["format"], uri, **(source.get("options") or {}))
    except (FileNotFoundError, ValueError, TypeError, OSError) as error:
        raise Refusal("dataset_id", f"dataset {source.get('id')} cannot be loaded: {error}") from None
    _datasets[key] = dataset
    while len(_datasets) > CACHED_DATASETS:
        _datasets.popitem(last=False)
    return dataset


def check(request: dict[str, Any]) -> dict[str, Any]:
    """One check (see the module docstring); raises `Refusal`."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    declared: dict[str, Any] = dict(request.get("declared") or {})
    file_spec: dict[str, Any] | None = request.get("file_spec")
    dataset_id = request["dataset"].get("id", "?")

    def field_of(key: str) -> str:
        """The form field a spec value came from: the field itself, or the checkpoint's own spec."""
        return "checkpoint" if file_spec is not None and key not in declared else key

    fields = dict(file_spec or {})
    for key, value in declared.items():
        if file_spec is not None and key in file_spec and file_spec[key] != value:
            raise Refusal(
                key, f"{value!r} here, but the checkpoint's own spec says {file_spec[key]!r}", value
            )
        fields[key] = value
    if "architecture" not in fields:
        raise Refusal("architecture", "required: the checkpoint names no architecture of its own")

    dataset = dataset_for(request["dataset"])
    lap("dataset")
    geometry = {
        "num_classes": dataset.num_classes,
        "in_channels": dataset.in_channels,
        "image_size": dataset.image_size,
    }
    for key in ("num_classes", "in_channels", "image_size"):
        value = fields.setdefault(key, geometry[key])
        if value != geometry[key]:
            raise Refusal(field_of(key), geometry_mismatch(key, value, geometry, dataset_id), value)
    fields.setdefault("mean", [float(v) for v in dataset.mean])
    fields.setdefault("std", [float(v) for v in dataset.std])
    try:
        spec = ModelSpec.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["loc"]:
            key = str(first["loc"][0])
        else:  # a check across fields ("mean has 2 values but ...", "width applies to ...")
            named = message.split(" ", 1)[0]
            key = named if named in ModelSpec.model_fields else "architecture"
        raise Refusal(field_of(key), message, fields.get(key)) from None

    model = build(spec)
    lap("build")
    checkpoint = request.get("checkpoint")
    if checkpoint:
        try:
            listing = read_tensors(checkpoint)
        except CheckpointError as error:
            raise Refusal("checkpoint", str(error)) from None
        fit = weights_fit(model, listing.tensors)
        if not fit.fits:
            raise Refusal(*misfit(model, fit, geometry, dataset_id, field_of))
        try:
            load_weights(model, checkpoint, listing.tensors)
        except CheckpointError as error:
            raise Refusal("checkpoint", str(error)) from None
        lap("load")
    forward_check(model, dataset, dataset_id, field_of)
    lap("forward")
    return {"ok": True, "spec": spec.model_dump(mode="json"), "seconds": seconds}


def geometry_mismatch(key: str, value: Any, geometry: dict[str, int], dataset_id: str) -> str:
    channels, size, classes = geometry["in_channels"], geometry["image_size"], geometry["num_classes"]
    if key == "num_classes":
        return (
            f"{value} classes, but dataset {dataset_id} has {classes}: the model would output "
            f"[batch, {value}], the dataset's labels need [batch, {classes}]"
        )
    if key == "in_channels":
        return (
            f"{value} input channels, but dataset {dataset_id} has {channels}-channel images: the model "
            f"takes [batch, {value}, H, W], the dataset gives [batch, {channels}, {size}, {size}]"
        )
    return (
        f"{value} px, but dataset {dataset_id} has {size} x {size} px images: the model takes "
        f"[batch, C, {value}, {value}], the dataset gives [batch, {channels}, {size}, {size}]"
    )


def build(spec: ModelSpec) -> Classifier:
    import torch

    from models.registry import UnknownArchitecture, UnsupportedArchitecture, build_model

    try:
        with torch.random.fork_rng(devices=[]):
            return build_model(spec)
    except (UnknownArchitecture, UnsupportedArchitecture) as error:
        raise Refusal("architecture", str(error), spec.architecture) from None
    except Exception as error:  # a constructor refusing this geometry (e.g. a ViT's patch size)
        raise Refusal(
            "architecture",
            f"{spec.architecture} cannot be built for {spec.in_channels} x {spec.image_size} x "
            f"{spec.image_size} inputs and {spec.num_classes} classes: {type(error).__name__}: {error}",
            spec.architecture,
        ) from None


def misfit(
    model: Classifier, fit: WeightsFit, geometry: dict[str, int], dataset_id: str, field_of: Any
) -> tuple[str, str, Any]:
    """(field, message, value) for weights that do not fit: the class count, the input channels, or the
    checkpoint as a whole."""
    head_param = getattr(model.head, "weight", None)
    head_weight = next(
        (model.checkpoint_name(name) for name, param in model.named_parameters() if param is head_param), None
    )
    if head_weight is not None and head_weight in fit.wrong_shapes and not (fit.missing or fit.unexpected):
        file_shape, model_shape = fit.wrong_shapes[head_weight]
        return (
            field_of("num_classes"),
            f"the checkpoint's classifier layer {head_weight} has {file_shape[0]} outputs "
            f"({list(file_shape)}), but dataset {dataset_id} has {geometry['num_classes']} classes "
            f"(the model needs {list(model_shape)})",
            file_shape[0],
        )
    first = next(
        (model.checkpoint_name(name) for name, param in model.named_parameters() if param.dim() == 4), None
    )
    if first is not None and first in fit.wrong_shapes and not (fit.missing or fit.unexpected):
        file_shape, model_shape = fit.wrong_shapes[first]
        if file_shape[0] == model_shape[0] and file_shape[2:] == model_shape[2:]:
            return (
                field_of("in_channels"),
                f"the checkpoint's first convolution {first} takes {file_shape[1]} input channels "
                f"({list(file_shape)}), but dataset {dataset_id} has {geometry['in_channels']}-channel "
                f"images (the model needs {list(model_shape)})",
                file_shape[1],
            )
    return "checkpoint", f"the uploaded file {fit.describe(model.spec.architecture)}", None


def forward_check(model: Classifier, dataset: Dataset, dataset_id: str, field_of: Any) -> None:
    import torch

    from unlearning.training import to_float

    source = next(part for part in (dataset.train, dataset.val, dataset.test) if len(part))
    x = to_float(source.images[:SAMPLE_SIZE])
    shape = list(x.shape)
    model.eval()
    with torch.no_grad():
        try:
            logits = model(x)
        except Exception as error:
            raise Refusal(
                field_of("image_size"),
                f"one forward pass on {shape[0]} images {shape} of dataset {dataset_id} failed: "
                f"{type(error).__name__}: {error}",
            ) from None
        expected = [shape[0], dataset.num_classes]
        if list(logits.shape) != expected:
            raise Refusal(
                field_of("num_classes"),
                f"the model outputs {list(logits.shape)} for input {shape}; "
                f"dataset {dataset_id} needs {expected}",
            )
        if not torch.isfinite(logits).all():
            raise Refusal(
                "checkpoint", f"the model's outputs on images {shape} of dataset {dataset_id} are not finite"
            )
        recomposed = model.head(model.features(x))
        scale = max(1.0, float(logits.abs().max()))
        if recomposed.shape != logits.shape or not torch.allclose(
            recomposed, logits, rtol=1e-3, atol=1e-4 * scale
        ):
            raise Refusal(
                "architecture",
                f"{model.spec.architecture}: head(features(x)) differs from the model's output, so its "
                "classifier layer is not its last operation and the methods cannot take penultimate "
                "features from it (see models.backbone)",
                model.spec.architecture,
            )


def serve() -> None:
    """The child process: answer one JSON line per request line until stdin closes."""
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not break the protocol
    started = time.perf_counter()
    import torchvision.models  # noqa: F401  (the expensive imports, once)

    import models.registry  # noqa: F401
    import unlearning.pipeline  # noqa: F401

    protocol.write(json.dumps({"ready": True, "seconds": round(time.perf_counter() - started, 3)}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = check(json.loads(line))
        except Refusal as refusal:
            answer = refusal.answer()
        except Exception as error:  # the check itself broke: the API answers 500, the process lives on
            answer = {"ok": False, "internal": True, "message": f"{type(error).__name__}: {error}"}
        protocol.write(json.dumps(answer, default=str) + "\n")


if __name__ == "__main__":
    serve()
