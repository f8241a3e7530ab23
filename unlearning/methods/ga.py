"""GA: gradient ascent on the forget set (Jia et al. 2023's reference baseline).

Symbols: theta the model's weights, D_f the forget set, CE the cross-entropy.

    min_theta  -CE(theta; D_f)       `epochs` passes over D_f, SGD with momentum, constant learning rate

It undoes the fit to the forget samples directly and nothing holds retain accuracy up, so its step
budget is small: the reference's 5 epochs at lr 1e-4.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch.nn.functional as F

from unlearning.methods.base import MethodConfig, register
from unlearning.methods.ft import SgdRun
from unlearning.methods.sgd_config import GaConfig
from unlearning.types import Progress, ShouldStop

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import UnlearningSplits


class GradientAscent:
    name: ClassVar[str] = "ga"
    Config: ClassVar[type[MethodConfig]] = GaConfig

    def run(
        self,
        model: Classifier,
        splits: UnlearningSplits,
        config: GaConfig,
        progress: Progress,
        should_stop: ShouldStop,
    ) -> tuple[Classifier, dict[str, Any]]:
        forget = splits.forget
        run = SgdRun.over(model, config, forget, progress, should_stop)
        for x_f, y_f in run.epochs(forget, "ascent"):
            with run.autocast():
                loss = -F.cross_entropy(run.model(x_f).float(), y_f)
            run.update(loss, "ascent")
        return run.result(epochs=config.epochs, train_samples=len(forget))


register(GradientAscent())
