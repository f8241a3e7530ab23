"""ML commands: `unlearn train` (a base model) and `unlearn predict` (probabilities for re-auditing).

Torch and the library are imported inside the command functions so that `unlearn api` stays light.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from unlearning.data import Dataset

DATA_HELP = (
    "Dataset: 'digits' (scikit-learn's bundled 8x8 digits), 'cifar10-cpu' / 'cifar10-full' (the bench "
    "presets, read from ../shared/data/cifar10-jpeg.tar.gz or --cifar10), or a path: an image folder, a "
    ".tar.gz of one, or a .npz file."
)
SEED_HELP = "Seed for the dataset split (digits, image folders) and for training."


def register(app: typer.Typer) -> None:
    """Add the ML commands to the `unlearn` app."""
    app.command("train")(train)
    app.command("predict")(predict)


def train(
    out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (.safetensors).")],
    data: Annotated[str, typer.Option("--data", help=DATA_HELP)] = "digits",
    format: Annotated[
        str | None,
        typer.Option("--format", help="imagefolder | npz | digits; inferred from --data if omitted."),
    ] = None,
    architecture: Annotated[
        str | None,
        typer.Option(
            "--architecture",
            help="resnet18 | resnet_small | mlp | torchvision/<name> | timm/<name> | plugin/<name> "
            "(default: mlp below 16 px, else resnet_small).",
        ),
    ] = None,
    width: Annotated[int | None, typer.Option("--width", help="Base width override.")] = None,
    epochs: Annotated[int, typer.Option("--epochs")] = 30,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 128,
    lr_max: Annotated[float, typer.Option("--lr-max", help="Peak one-cycle learning rate.")] = 0.05,
    seed: Annotated[int, typer.Option("--seed", help=SEED_HELP)] = 0,
    cifar10: Annotated[
        Path | None, typer.Option("--cifar10", help="CIFAR-10 archive for the presets.")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu | cuda (default: cuda if present).")
    ] = None,
) -> None:
    """Train a base model on a dataset's train split and save it as a safetensors checkpoint."""
    import time

    from pydantic import ValidationError
    from tqdm import tqdm

    from models.checkpoint import save_checkpoint
    from models.spec import check_architecture_name
    from unlearning.pipeline import train_base_model
    from unlearning.training import TrainRecipe, accuracy, pick_device

    if architecture is not None:
        try:
            check_architecture_name(architecture)
        except ValueError as error:
            _fail(f"--architecture: {error}")
    try:
        recipe = TrainRecipe(epochs=epochs, batch_size=batch_size, lr_max=lr_max, seed=seed)
    except ValidationError as error:
        _fail(f"training options: {error}")
    dataset = _load(data, format, cifar10, seed)
    chosen_device = device or str(pick_device())
    typer.echo(
        f"{dataset.name}: {len(dataset.train)} train / {len(dataset.val)} val / {len(dataset.test)} test, "
        f"{dataset.num_classes} classes; device {chosen_device}"
    )
    started = time.perf_counter()
    with tqdm(total=100, desc="train", bar_format="{l_bar}{bar}| {elapsed}<{remaining}", leave=False) as bar:

        def progress(fraction: float, stage: str) -> None:
            bar.update(100 * fraction - bar.n)

        try:
            model = train_base_model(
                dataset,
                architecture,
                recipe,
                progress,
                width=width,
                device=chosen_device,  # type: ignore[arg-type]
            )
        except ValueError as error:  # an architecture that does not exist or fit the data
            _fail(f"--architecture: {error}")
    seconds = time.perf_counter() - started
    metadata = {
        "dataset": dataset.name,
        "data": data,
        "train_recipe": recipe.model_dump_json(),
        "train_seconds": f"{seconds:.1f}",
    }
    info = save_checkpoint(model, out, metadata)
    scores = {split: accuracy(model, dataset.split(split)) for split in ("train", "val", "test")}
    typer.echo(
        f"{model.spec.architecture}: trained {epochs} epochs in {seconds:.1f} s; accuracy "
        + ", ".join(f"{split} {value:.2f}%" for split, value in scores.items())
    )
    typer.echo(f"wrote {out} ({info.size_bytes} bytes, sha256 {info.sha256})")


def predict(
    checkpoint: Annotated[
        Path, typer.Argument(help="A safetensors checkpoint (from train, bench --out, ...).")
    ],
    data: Annotated[str, typer.Option("--data", help=DATA_HELP)],
    ids: Annotated[Path, typer.Option("--ids", help="Sample ids: one per line, or a JSON list (or object).")],
    out: Annotated[Path, typer.Option("--out", help="Output .npz with probs (N x C), labels, sample_ids.")],
    split: Annotated[
        str | None,
        typer.Option("--split", help="Key to read when --ids is a JSON object such as splits.json."),
    ] = None,
    format: Annotated[str | None, typer.Option("--format", help="imagefolder | npz | digits.")] = None,
    seed: Annotated[int, typer.Option("--seed", help=SEED_HELP)] = 0,
    cifar10: Annotated[
        Path | None, typer.Option("--cifar10", help="CIFAR-10 archive for the presets.")
    ] = None,
) -> None:
    """Softmax probabilities of a checkpoint for the listed samples, so anyone can re-audit it."""
    import numpy as np
    import torch

    from models.checkpoint import CheckpointError, load_checkpoint
    from unlearning.training import predict_probs

    sample_ids = _read_ids(ids, split)
    try:
        model = load_checkpoint(checkpoint).model
    except CheckpointError as error:
        _fail(f"checkpoint: {error}")
    dataset = _load(data, format, cifar10, seed)
    spec = model.spec
    if (spec.in_channels, spec.image_size) != (dataset.in_channels, dataset.image_size):
        _fail(
            f"checkpoint expects {spec.in_channels} x {spec.image_size} x {spec.image_size} images, "
            f"dataset {dataset.name} has {dataset.in_channels} x {dataset.image_size} x {dataset.image_size}"
        )
    found = dataset.index_of(sample_ids)
    unknown = [sample_id for sample_id in sample_ids if sample_id not in found]
    if unknown:
        _fail(
            f"{len(unknown)} of {len(sample_ids)} sample ids are not in {dataset.name}; first: {unknown[:10]}"
        )
    images = torch.stack([dataset.split(found[i][0]).images[found[i][1]] for i in sample_ids])
    labels = np.array(
        [int(dataset.split(found[i][0]).labels[found[i][1]]) for i in sample_ids], dtype=np.int64
    )
    probs = predict_probs(model, images).numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as handle:
        np.savez(handle, probs=probs, labels=labels, sample_ids=np.array(sample_ids, dtype=str))
    typer.echo(f"wrote {out}: probs {probs.shape[0]} x {probs.shape[1]}")


def _load(data: str, format: str | None, cifar10: Path | None, seed: int) -> Dataset:
    from unlearning.pipeline import resolve_data

    try:
        return resolve_data(data, format=format, cifar10_path=cifar10, seed=seed)
    except (FileNotFoundError, ValueError) as error:
        _fail(f"--data: {error}")


def _read_ids(path: Path, split: str | None) -> list[str]:
    """Ids from a text file (one per line) or JSON (a list, or an object with `split` naming the list)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        _fail(f"--ids: cannot read {path} as text: {error}")
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as error:
            _fail(f"--ids: {path} is not valid JSON: {error}")
        if isinstance(parsed, dict):
            if split is None or split not in parsed:
                _fail(f"--ids: {path} is a JSON object; pass --split with one of {sorted(parsed)}")
            parsed = parsed[split]
        if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
            _fail(f"--ids: {path} must hold a JSON list of strings")
        ids = parsed
    else:
        ids = [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        _fail(f"--ids: {path} lists no sample ids")
    return ids


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)
