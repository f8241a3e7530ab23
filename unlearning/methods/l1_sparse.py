"""l1-sparse: fine-tuning with a decaying l1 penalty, the sparsity-aware unlearning of Jia et al. 2023.

Symbols: theta all weights, D_r the retain set, CE the cross-entropy, t the step, T the step budget,
gamma the penalty weight.

    min_theta  CE(theta; D_r) + gamma_t * ||theta||_1,     gamma_t = gamma * (1 - t / T)

The penalty pulls weights toward zero early (a sparse prior makes approximate unlearning closer to
retraining, their theorem) and fades out so the last steps are plain fine-tuning that restores accuracy.
Defaults: FT's (10 epochs, lr 0.01) with gamma = 1e-4, the upper end of the reference's search range.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from unlearning.methods.base import MethodConfig, register
from unlearning.methods.ft import SgdRun
from unlearning.methods.sgd_config import L1SparseConfig
from unlearning.types import Progress, ShouldStop

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import UnlearningSplits


def l1_norm(model: Classifier) -> torch.Tensor:
    return sum(param.abs().sum() for param in model.parameters())  # type: ignore[return-value]


class L1Sparse:
    name: ClassVar[str] = "l1-sparse"
    Config: ClassVar[type[MethodConfig]] = L1SparseConfig

    def run(
        self,
        model: Classifier,
        splits: UnlearningSplits,
        config: L1SparseConfig,
        progress: Progress,
        should_stop: ShouldStop,
    ) -> tuple[Classifier, dict[str, Any]]:
        retain = splits.retain
        run = SgdRun.over(model, config, retain, progress, should_stop)
        for x_r, y_r in run.epochs(retain, "l1-fine-tune"):
            gamma_t = config.gamma * (1.0 - run.fraction_done)
            with run.autocast():
                loss = F.cross_entropy(run.model(x_r).float(), y_r)
            run.update(loss + gamma_t * l1_norm(run.model), "l1-fine-tune")
        return run.result(epochs=config.epochs, train_samples=len(retain), gamma=config.gamma)


register(L1Sparse())
