"""Entry points the worker and the CLI call: load a registered dataset, train a base model for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.base import Classifier
from models.registry import build_model
from models.spec import Architecture, ModelSpec
from unlearning.data import (
    Dataset,
    load_cifar10_cpu_preset,
    load_cifar10_full,
    load_digits,
    load_imagefolder,
)
from unlearning.data.formats import get_format
from unlearning.training import TrainRecipe, train_model
from unlearning.types import Progress, ShouldStop, never_stop, no_progress

NAMED_DATA = ("digits", "cifar10-cpu", "cifar10-full")
"""Names `resolve_data` accepts instead of a path."""

CIFAR10_ARCHIVE_NAME = "cifar10-jpeg.tar.gz"


def default_cifar10_archive() -> Path:
    """`../shared/data/cifar10-jpeg.tar.gz` beside the project checkout (or beside the working directory)."""
    candidates = [
        Path(__file__).resolve().parents[2] / "shared" / "data" / CIFAR10_ARCHIVE_NAME,
        Path.cwd().parent / "shared" / "data" / CIFAR10_ARCHIVE_NAME,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"CIFAR-10 archive not found at {[str(c) for c in candidates]}; pass its path instead"
    )


def load_dataset(format: str, uri: str | None = None, **options: Any) -> Dataset:
    """The dataset a `datasets` row describes: `format` is a name in `unlearning.data.formats.FORMATS`.

    `uri` is the folder (or .tar.gz) for imagefolder, the file for npz, and unused for digits. `options`
    are the format's loader options (e.g. `seed`, `val_fraction`, `test_fraction`, `per_class_limits`);
    unknown ones are refused. Raises `CatalogError` (a ValueError; a `FileNotFoundError` too when the
    uri names nothing) for a bad format, uri or option.
    """
    return get_format(format).load(uri, options)


def resolve_data(
    data: str, *, format: str | None = None, cifar10_path: str | Path | None = None, seed: int = 0
) -> Dataset:
    """A dataset from a command-line `--data` value: a name in `NAMED_DATA` or a path.

    `digits` is scikit-learn's bundled set; `cifar10-cpu` / `cifar10-full` are the bench presets read from
    `cifar10_path` (default: `default_cifar10_archive()`). A path is loaded with `format`, or, when no format
    is given, as npz for a `.npz` file and as an image folder otherwise.
    """
    if data == "digits":
        return load_digits(seed=seed)
    if data in ("cifar10-cpu", "cifar10-full"):
        source = Path(cifar10_path) if cifar10_path is not None else default_cifar10_archive()
        return load_cifar10_cpu_preset(source) if data == "cifar10-cpu" else load_cifar10_full(source)
    path = Path(data).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--data {data!r} is neither one of {list(NAMED_DATA)} nor an existing path")
    chosen = format or ("npz" if path.suffix == ".npz" else "imagefolder")
    if chosen == "imagefolder":
        return load_imagefolder(path, seed=seed)
    return load_dataset(chosen, str(path))


def spec_for(dataset: Dataset, architecture: Architecture, *, width: int | None = None) -> ModelSpec:
    """The model spec that fits `dataset`: its channels, image size, class count and normalisation."""
    return ModelSpec(
        architecture=architecture,
        num_classes=dataset.num_classes,
        in_channels=dataset.in_channels,
        image_size=dataset.image_size,
        mean=list(dataset.mean),
        std=list(dataset.std),
        width=width,
    )


def default_architecture(dataset: Dataset) -> Architecture:
    """mlp for tiny images (below 16 pixels), the small ResNet otherwise."""
    return "mlp" if dataset.image_size < 16 else "resnet_small"


def train_base_model(
    dataset: Dataset,
    architecture: Architecture | None = None,
    recipe: TrainRecipe | None = None,
    progress: Progress = no_progress,
    should_stop: ShouldStop = never_stop,
    *,
    width: int | None = None,
    device: torch.device | str | None = None,
) -> Classifier:
    """A fresh model (initialised with `recipe.seed`) trained on the dataset's train split."""
    recipe = recipe or TrainRecipe()
    spec = spec_for(dataset, architecture or default_architecture(dataset), width=width)
    torch.manual_seed(recipe.seed)
    model = build_model(spec)
    return train_model(
        model, dataset.train, recipe, progress=progress, should_stop=should_stop, device=device
    )
