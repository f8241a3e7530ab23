"""FF: Fisher forgetting (Golatkar et al. 2020, in the form Jia et al. 2023 benchmark), one-shot noise.

Symbols: theta the weights, D_r the retain set, p(y | x) the model's softmax, F the diagonal Fisher
information on D_r, eps ~ N(0, I), alpha the noise scale, c the variance cap.

    F_i     = E_{x in D_r} sum_y p(y | x) * (d log p(y | x) / d theta_i)^2      (every label, true Fisher)
    v_i     = min(1 / (F_i + 1e-8), c / mean(F))
    theta' = theta + sqrt(alpha * v) * eps

Weights the retain set barely constrains (small F) get the most noise, so what only the forget set
needed is scrambled while the retain fit survives. The cap keeps weights with F ~ 0 from taking all of
it. alpha is chosen by the shared rule in `second_order.py` (the largest noise, on a doubling grid,
that costs at most `max_retain_drop` points of retain-probe accuracy); it is reported in `info`.
F is estimated on a seeded sample of `fisher_samples` retain images (an expectation: its error falls
as 1 / sqrt(n), and the cost is one backward pass per sample and class).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from unlearning.methods.base import register
from unlearning.methods.common import Job
from unlearning.methods.second_order import OneShotMethod, in_chunks, per_sample_gradients, sample_rows
from unlearning.methods.second_order_config import FfConfig
from unlearning.types import Progress, ShouldStop

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import ImageSet
    from unlearning.methods.second_order import Params

FISHER_EPS = 1e-8


def diagonal_fisher(
    model: Classifier,
    data: ImageSet,
    num_classes: int,
    config: FfConfig,
    should_stop: ShouldStop,
    progress: Progress,
) -> Params:
    """F_i, averaged over `data` (model in eval mode)."""
    fisher = {name: torch.zeros_like(param) for name, param in model.named_parameters()}
    done = 0
    for images, _ in in_chunks(model, data, config.chunk_size, should_stop, "FF Fisher"):
        with torch.no_grad():
            probs = torch.softmax(model(images).float(), dim=1)
        for label in range(num_classes):
            targets = torch.full((len(images),), label, device=images.device)
            for name, grads in per_sample_gradients(model, images, targets).items():
                fisher[name] += torch.einsum("b,b...->...", probs[:, label], grads.pow(2))
        done += len(images)
        progress(0.9 * done / len(data), "fisher")
    return {name: value / len(data) for name, value in fisher.items()}


def noise_variances(fisher: Params, masks: dict[str, torch.Tensor], cap: float) -> Params:
    """v_i (zero where pruned, so pruned weights get no noise and do not count toward the mean)."""
    kept = {
        name: masks[name] if name in masks else torch.ones_like(value, dtype=torch.bool)
        for name, value in fisher.items()
    }
    total = sum(float(value[kept[name]].sum()) for name, value in fisher.items())
    count = sum(int(mask.sum()) for mask in kept.values())
    ceiling = cap / max(total / max(count, 1), FISHER_EPS)
    return {
        name: torch.where(kept[name], (1.0 / (value + FISHER_EPS)).clamp(max=ceiling), 0.0)
        for name, value in fisher.items()
    }


class FisherForgetting(OneShotMethod[FfConfig]):
    name = "ff"
    Config = FfConfig

    def direction(self, model: Classifier, job: Job[FfConfig]) -> tuple[Params, dict[str, Any]]:
        """sqrt(v) * eps, with F estimated on a seeded sample of the retain set."""
        config, retain = job.config, job.splits.retain
        rows = sample_rows(len(retain), config.fisher_samples, torch.Generator().manual_seed(config.seed))
        fisher = diagonal_fisher(
            model, retain.subset(rows), job.splits.num_classes, config, job.should_stop, job.progress
        )
        variances = noise_variances(fisher, model.masks, config.variance_cap)
        noise = torch.Generator().manual_seed(config.seed + 2)
        direction = {
            name: value.sqrt() * torch.randn(value.shape, generator=noise).to(job.device)
            for name, value in variances.items()
        }
        return direction, {"fisher_samples": len(rows)}

    def step_info(self, scale: float) -> dict[str, float]:
        """theta + scale * sqrt(v) * eps is theta + sqrt(alpha * v) * eps."""
        return {"alpha": scale**2}


register(FisherForgetting())
