"""l1-sparse: fine-tuning with a decaying l1 penalty, the sparsity-aware unlearning of Jia et al. 2023.

Symbols: theta all weights, D_r the retain set, CE the cross-entropy, t the step, T the step budget,
gamma the penalty weight.

    min_theta  CE(theta; D_r) + gamma_t * ||theta||_1,     gamma_t = gamma * (1 - t / T)

The penalty pulls weights toward zero early (a sparse prior makes approximate unlearning closer to
retraining, their theorem) and fades out so the last steps are plain fine-tuning that restores accuracy.
Defaults: FT's (10 epochs, lr 0.01) with gamma = 1e-4, the upper end of the reference's search range.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unlearning.methods.base import register
from unlearning.methods.common import Job
from unlearning.methods.ft import SgdMethod, SgdRun
from unlearning.methods.sgd_config import L1SparseConfig

if TYPE_CHECKING:
    from models.base import Classifier


def l1_norm(model: Classifier) -> torch.Tensor:
    return sum(param.abs().sum() for param in model.parameters())  # type: ignore[return-value]


class L1Sparse(SgdMethod[L1SparseConfig]):
    """min_theta CE(theta; D_r) + gamma_t * ||theta||_1,  gamma_t = gamma * (1 - t / T)."""

    name = "l1-sparse"
    Config = L1SparseConfig
    stage = "l1-fine-tune"

    def prepare(self, run: SgdRun[L1SparseConfig], job: Job[L1SparseConfig]) -> dict[str, Any]:
        return {"gamma": job.config.gamma}

    def loss(self, run: SgdRun[L1SparseConfig], x_r: Tensor, y_r: Tensor) -> Tensor:
        gamma_t = run.config.gamma * (1.0 - run.fraction_done)
        return F.cross_entropy(run.logits(x_r), y_r) + gamma_t * l1_norm(run.model)


register(L1Sparse())
