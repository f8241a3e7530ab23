"""Cost and accuracy of the ways to compute DAU's sensitivity s (see `methods/dau/sensitivity.py`).

    python -m unlearning.bench.sensitivity_cost --checkpoint ORIGINAL.safetensors [--samples 256]

For a batch of forget (member) and validation (non-member) images it times each estimator and compares
it with the m -> infinity limit sqrt(2/pi) ||grad_x p_c|| (C backward passes): the mean relative error
per entry, and whether the estimate keeps the attack signal (AUC of the membership score -sum_c s_c,
members being flatter). Printed as a markdown table for bench/README.md.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor

from models.checkpoint import load_checkpoint
from unlearning.bench.presets import get_preset
from unlearning.bench.scenarios import scenario_splits
from unlearning.methods.dau.sensitivity import expected_sensitivity, sensitivity
from unlearning.training import memory_format_for, to_float


def measure(
    model: torch.nn.Module, x: Tensor, estimate: Callable[[], Tensor], repeats: int
) -> tuple[float, Tensor]:
    estimate()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        result = estimate()
    return (time.perf_counter() - start) / repeats, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--samples", type=int, default=256, help="Members and as many non-members.")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = load_checkpoint(args.checkpoint).model.eval()
    device = torch.device("cpu")
    memory_format = memory_format_for(model, device)
    model = model.to(memory_format=memory_format)
    splits = scenario_splits(get_preset(args.preset).load(args.data, 0), "random", seed=0)
    half = min(args.samples, len(splits.forget), len(splits.val))
    images = torch.cat([splits.forget.images[:half], splits.val.images[:half]])
    x = to_float(images).contiguous(memory_format=memory_format)
    membership = torch.cat([torch.ones(half), torch.zeros(half)]).numpy()
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)

    start = time.perf_counter()
    exact = expected_sensitivity(model, x)
    exact_seconds = time.perf_counter() - start
    with torch.no_grad():
        forward_seconds, _ = measure(model, x, lambda: model(x), args.repeats)

    def fd(copies: int) -> Callable[[], Tensor]:
        return lambda: sensitivity(
            model, x, probs=probs, copies=copies, generator=torch.Generator().manual_seed(0)
        )

    def fd_looped(copies: int) -> Callable[[], Tensor]:
        def run() -> Tensor:
            total = torch.zeros_like(probs)
            for k in range(copies):
                generator = torch.Generator().manual_seed(k)
                total += sensitivity(model, x, probs=probs, copies=1, generator=generator)
            return total / copies

        return run

    def jvp(copies: int) -> Callable[[], Tensor]:
        return lambda: sensitivity(
            model, x, copies=copies, method="jvp", generator=torch.Generator().manual_seed(0)
        )

    options: list[tuple[str, Callable[[], Tensor]]] = [
        ("finite difference, m=1", fd(1)),
        ("finite difference, m=2, batched (default)", fd(2)),
        ("finite difference, m=2, one copy per forward", fd_looped(2)),
        ("finite difference, m=4, batched", fd(4)),
        ("finite difference, m=10, batched", fd(10)),
        ("jvp (torch.func), m=2", jvp(2)),
        ("jvp (torch.func), m=10", jvp(10)),
    ]
    print(f"{2 * half} images ({half} members, {half} non-members), {torch.get_num_threads()} threads")
    print(f"one plain forward of the batch: {forward_seconds:.3f} s\n")
    print("| estimator | seconds | x forward | mean rel. error vs E[s] | AUC of -sum s |")
    print("|---|---|---|---|---|")
    for name, estimate in options:
        seconds, s = measure(model, x, estimate, args.repeats)
        error = ((s - exact).abs() / exact.clamp_min(1e-12)).mean().item()
        auc = roc_auc_score(membership, -s.sum(1).numpy())
        print(f"| {name} | {seconds:.3f} | {seconds / forward_seconds:.1f} | {error:.3f} | {auc:.3f} |")
    auc = roc_auc_score(membership, -exact.sum(1).numpy())
    print(
        f"| exact E[s] = sqrt(2/pi) ||grad p_c|| (C backward passes) | {exact_seconds:.3f} | "
        f"{exact_seconds / forward_seconds:.1f} | 0 | {auc:.3f} |"
    )


if __name__ == "__main__":
    main()
