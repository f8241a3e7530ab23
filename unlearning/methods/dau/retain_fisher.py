"""Retain-Fisher preconditioning of the defender's step (`DauConfig.retain_fisher` = s > 0):

    g_i  <-  g_i / (1 + s * F_i / mean(F))

F is the empirical diagonal Fisher of the retain set at the start of the run: the mean squared per-sample
cross-entropy gradient over `fisher_samples` seeded retain images, for the weights the defender trains.

Why: the adversarial term's gradient moves every weight the forget samples use, including the ones the
retain set relies on, so forgetting costs retain and test accuracy (the critic's RA -4 on the cpu bench).
Dividing by the retain Fisher keeps the step on the weights the retain set barely constrains, where what
only the forget samples needed is held: the importance measure of elastic weight consolidation
(Kirkpatrick et al. 2017), used here as a preconditioner rather than a penalty, so it adds no term to tune
against the others and costs one pass of per-sample gradients before the game.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from unlearning.methods.common import batch_to
from unlearning.methods.second_order import per_sample_gradients, sample_rows
from unlearning.training import memory_format_for

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import ImageSet

CHUNK = 32
"""Per-sample gradients are taken this many images at a time (memory: CHUNK copies of the weights)."""


def retain_fisher_scales(
    model: Classifier,
    retain: ImageSet,
    trainable: list[torch.nn.Parameter],
    strength: float,
    samples: int,
    generator: torch.Generator,
) -> list[Tensor]:
    """1 / (1 + strength * F / mean(F)) for each trainable parameter, in `trainable`'s order."""
    device = trainable[0].device
    memory_format = memory_format_for(model, device)
    names = {id(param): name for name, param in model.named_parameters()}
    fisher = [torch.zeros_like(param) for param in trainable]
    rows = sample_rows(len(retain), samples, generator)
    for chunk in rows.split(CHUNK):
        images = batch_to(retain.images[chunk], device, memory_format)
        grads = per_sample_gradients(model, images, retain.labels[chunk].to(device))
        for total, param in zip(fisher, trainable, strict=True):
            total += grads[names[id(param)]].float().pow(2).sum(0)
    mean = sum(float(total.sum()) for total in fisher) / max(1, sum(total.numel() for total in fisher))
    if mean <= 0:
        return [torch.ones_like(total) for total in fisher]
    return [1.0 / (1.0 + strength * total / mean) for total in fisher]
