"""SalUn: saliency unlearning (Fan et al. 2024), random labels on the forget set, salient weights only.

Symbols: theta the weights, D_f the forget set with labels y, D_r the retain set, y' a random label
different from y (drawn once per sample), CE the cross-entropy, g the forget-loss gradient, m_S the
saliency mask, gamma the saliency share.

    g   = grad_theta CE(theta_o; D_f)                 (summed over the forget set, at the original weights)
    m_S = 1[ |g| >= the top-gamma quantile of |g| ]   (one threshold over all unpruned weights)
    min_theta  CE(theta; D_f, y') + CE(theta; D_r)    over passes of the shuffled union D_f' u D_r,
               updating only theta * m_S (the rest stays exactly at theta_o)

Defaults: 10 epochs at lr 0.013 and gamma = 0.5 (the reference's CIFAR-10 settings).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unlearning.data import ImageSet
from unlearning.methods.base import register
from unlearning.methods.common import Job, batch_to, raise_if_stopped
from unlearning.methods.ft import SgdMethod, SgdRun
from unlearning.methods.sgd_config import SalunConfig
from unlearning.training import memory_format_for
from unlearning.types import ShouldStop

if TYPE_CHECKING:
    from models.base import Classifier


def saliency_mask(
    model: Classifier, forget: ImageSet, share: float, batch_size: int, should_stop: ShouldStop
) -> dict[str, torch.Tensor]:
    """m_S: True for the `share` of weights with the largest |grad CE(forget)|; pruned weights never."""
    device = next(model.parameters()).device
    memory_format = memory_format_for(model, device)
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    for start in range(0, len(forget), batch_size):
        raise_if_stopped(should_stop, "SalUn saliency")
        x_f = batch_to(forget.images[start : start + batch_size], device, memory_format)
        y_f = forget.labels[start : start + batch_size].to(device)
        F.cross_entropy(model(x_f), y_f, reduction="sum").backward()
    scores = {}
    for name, param in model.named_parameters():
        score = param.grad.abs() if param.grad is not None else torch.zeros_like(param)
        if name in model.masks:
            score = torch.where(model.masks[name], score, torch.full_like(score, -1.0))
        scores[name] = score
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    flat = torch.cat([score.flatten() for score in scores.values()])
    eligible = int((flat >= 0).sum())
    keep = max(1, round(share * eligible))
    threshold = torch.topk(flat, keep, sorted=True).values[-1]
    return {name: (score >= threshold) & (score >= 0) for name, score in scores.items()}


def random_other_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """y': a uniformly random label different from each y."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels + shift) % num_classes


class Salun(SgdMethod[SalunConfig]):
    """min_theta CE(theta; D_f, y') + CE(theta; D_r), updating only theta * m_S."""

    name = "salun"
    Config = SalunConfig
    stage = "random-label"

    def training_set(self, job: Job[SalunConfig]) -> ImageSet:
        """D_f' u D_r: the forget set under y', then the retain set."""
        forget = job.splits.forget
        y_prime = random_other_labels(
            forget.labels, job.splits.num_classes, torch.Generator().manual_seed(job.config.seed)
        )
        return ImageSet(forget.images, y_prime, forget.sample_ids).concat(job.splits.retain)

    def prepare(self, run: SgdRun[SalunConfig], job: Job[SalunConfig]) -> dict[str, Any]:
        """m_S at the original weights; everything outside it is frozen."""
        config, forget = job.config, job.splits.forget
        salient = saliency_mask(run.model, forget, config.saliency, config.batch_size, job.should_stop)
        run.freeze({name: ~mask for name, mask in salient.items()})
        return {"salient_weights": sum(int(mask.sum()) for mask in salient.values())}

    def loss(self, run: SgdRun[SalunConfig], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(run.logits(x), y)


register(Salun())
