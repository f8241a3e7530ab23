"""Seconds per training epoch of `resnet_small` on the 10,000 CIFAR-10 train images of the cpu preset.

    .venv/bin/python bench/train_speed.py [--data ../shared/data/cifar10-jpeg.tar.gz] [--epochs 2]

The target (issue 2) is about 15 s per epoch or less on two CPU cores, batch 128, with augmentation.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CIFAR-10 JPEG archive or its tree")
    parser.add_argument("--epochs", type=int, default=2, help="epochs to time (each is reported)")
    parser.add_argument("--architecture", default="resnet_small")
    parser.add_argument("--width", type=int, default=None, help="override the architecture's base width")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from models.registry import build_model
    from unlearning.data import load_cifar10_cpu_preset
    from unlearning.pipeline import spec_for
    from unlearning.training import TrainRecipe, accuracy, pick_device, train_model

    started = time.perf_counter()
    dataset = load_cifar10_cpu_preset(args.data)
    print(f"data: {len(dataset.train)} train images loaded in {time.perf_counter() - started:.2f} s")
    device = pick_device()
    torch.manual_seed(0)
    model = build_model(spec_for(dataset, args.architecture, width=args.width))
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"model: {args.architecture} width={args.width or 'default'}, {parameters:,} parameters, "
        f"device {device}, {torch.get_num_threads()} threads"
    )
    recipe = TrainRecipe(epochs=1, batch_size=args.batch_size)
    for epoch in range(args.epochs):
        load_before = os.getloadavg()[0]
        started, cpu_started = time.perf_counter(), time.process_time()
        train_model(model, dataset.train, recipe.model_copy(update={"seed": epoch}), device=device)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        print(
            f"epoch {epoch + 1}: {seconds:.1f} s wall ({len(dataset.train) / seconds:.0f} images/s), "
            f"{cpu_seconds:.1f} s CPU; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} "
            f"(figures are only meaningful when the load is below the core count, {os.cpu_count()})"
        )
    print(f"after {args.epochs} epoch(s): test accuracy {accuracy(model, dataset.test):.1f}%")


if __name__ == "__main__":
    main()
