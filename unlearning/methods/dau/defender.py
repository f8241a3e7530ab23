"""The defender's side of both DAU games: which weights train, its SGD with the linearly decaying rate,
and one clipped step (the largest gradient norm before clipping is kept for the run's info), optionally
preconditioned by the retain Fisher (`retain_fisher.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from models.base import Classifier
from unlearning.methods.common import StageClock, optimiser_step
from unlearning.methods.dau.config import DauConfig
from unlearning.methods.dau.retain_fisher import retain_fisher_scales
from unlearning.methods.dau.stopping import last_parameters

if TYPE_CHECKING:
    from unlearning.data import ImageSet


class DefenderStep:
    def __init__(
        self,
        defender: Classifier,
        config: DauConfig,
        device: torch.device,
        retain: ImageSet,
        clock: StageClock,
    ) -> None:
        self.defender = defender
        self.max_norm = config.max_grad_norm or float("inf")
        self.trainable = last_parameters(defender, config.update_fraction)
        self.optimiser = torch.optim.SGD(
            self.trainable, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimiser,
            lambda step: max(0.0, 1 - step / config.iterations) if config.lr_decay else 1.0,
        )
        self.max_grad_norm = torch.zeros((), device=device)
        """Largest defender gradient norm before clipping, kept on the device (no sync per iteration)."""
        self.scales: list[torch.Tensor] | None = None
        if config.retain_fisher > 0:
            rows = torch.Generator().manual_seed(config.seed)  # its own stream: the game's batches stay put
            with clock.stage("fisher"):
                self.scales = retain_fisher_scales(
                    defender, retain, self.trainable, config.retain_fisher, config.fisher_samples, rows
                )

    def __call__(self, loss: torch.Tensor) -> None:
        loss.backward()
        self.defender.mask_gradients()
        if self.scales is not None:
            for param, scale in zip(self.trainable, self.scales, strict=True):
                if param.grad is not None:
                    param.grad.mul_(scale)
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.max_norm)
        self.max_grad_norm = torch.maximum(self.max_grad_norm, norm.detach())
        optimiser_step(self.optimiser, self.defender)
        self.schedule.step()
