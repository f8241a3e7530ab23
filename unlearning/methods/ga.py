"""GA: gradient ascent on the forget set (Jia et al. 2023's reference baseline).

Symbols: theta the model's weights, D_f the forget set, CE the cross-entropy.

    min_theta  -CE(theta; D_f)       `epochs` passes over D_f, SGD with momentum, constant learning rate

It undoes the fit to the forget samples directly and nothing holds retain accuracy up, so its step
budget is small: the reference's 5 epochs at lr 1e-4.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor

from unlearning.methods.base import register
from unlearning.methods.common import Job
from unlearning.methods.ft import SgdMethod, SgdRun
from unlearning.methods.sgd_config import GaConfig

if TYPE_CHECKING:
    from unlearning.data import ImageSet


class GradientAscent(SgdMethod[GaConfig]):
    """min_theta -CE(theta; D_f)."""

    name = "ga"
    Config = GaConfig
    stage = "ascent"

    def training_set(self, job: Job[GaConfig]) -> ImageSet:
        return job.splits.forget

    def loss(self, run: SgdRun[GaConfig], x_f: Tensor, y_f: Tensor) -> Tensor:
        return -F.cross_entropy(run.logits(x_f), y_f)


register(GradientAscent())
