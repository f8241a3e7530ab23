"""The defender's retain term, shared by both DAU games: cross-entropy on the retain batch, plus (with
`retain_distill` > 0) the KL divergence from the original model's softened outputs on the same batch.

Why the second part: pushing the forget set's confidence down also lowers it on the retain samples that look
alike, and cross-entropy on hard labels barely pulls back a retain sample the model still gets right.
Retraining keeps the original's behaviour on retain data (after random forgetting its retain accuracy matches
the original's), so the original's own outputs there are the target the defender should keep: every retain
sample then pulls, right or wrong, towards where it was (knowledge distillation, Hinton et al. 2015, at
temperature T with the usual T^2 scaling). When a whole class is forgotten, the teacher's logit for it is
masked out: its softened outputs would otherwise give the class its share on every retain image and pull the
defender back towards predicting it, while a model retrained without the class spreads that share over the
others.

The same divergence on the critic game's non-member batch is its anchor (`nonmember_distill`, `nonmembers`):
unseen data should look to the unlearned model as it did to the original."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from unlearning.methods.common import working_copy

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.methods.dau.config import DauConfig


def mask_class(logits: Tensor, forget_class: int) -> Tensor:
    """`logits` (in place) with the class at the dtype's lowest finite value: out of every argmax and
    softmax. Not -inf: the log-target KL computes exp(t) * (t - s), and at -inf that is 0 * -inf = nan."""
    logits[:, forget_class] = torch.finfo(logits.dtype).min
    return logits


class RetainTerm:
    """Built from the original model (where the game starts unless `warm_start.py` moved it first); the
    teacher is a frozen copy of it on the run's device."""

    def __init__(
        self,
        original: Classifier,
        config: DauConfig,
        device: torch.device,
        autocast: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
        *,
        forget_class: int | None = None,
    ) -> None:
        self.weight, self.temperature = config.retain_distill, config.distill_temperature
        self.nonmember_weight = config.nonmember_distill
        self.forget_class = forget_class
        self.autocast = autocast
        self.teacher: Classifier | None = None
        if self.weight > 0 or self.nonmember_weight > 0:
            self.teacher = working_copy(original, device).eval().requires_grad_(False)

    def __call__(self, logits_r: Tensor, y_r: Tensor, x_r: Tensor) -> Tensor:
        loss = F.cross_entropy(logits_r.float(), y_r)
        if self.weight == 0:
            return loss
        return loss + self.weight * self.distill(logits_r, x_r)

    def nonmembers(self, logits_v: Tensor, x_v: Tensor) -> Tensor:
        """`nonmember_distill` times the KL divergence from the original's outputs on a non-member batch."""
        return self.nonmember_weight * self.distill(logits_v, x_v)

    def distill(self, logits: Tensor, x: Tensor) -> Tensor:
        """The KL divergence of `logits` from the teacher's softened outputs on `x`, scaled by T^2."""
        assert self.teacher is not None
        with torch.no_grad(), self.autocast():
            softened = self.teacher(x).float() / self.temperature
        if self.forget_class is not None:
            mask_class(softened, self.forget_class)
        target = F.log_softmax(softened, dim=1)
        student = F.log_softmax(logits.float() / self.temperature, dim=1)
        return self.temperature**2 * F.kl_div(student, target, reduction="batchmean", log_target=True)
