"""The defender's side of both DAU games: which weights train, its SGD with the linearly decaying rate,
one clipped step (the largest gradient norm before clipping is kept for the run's info), and the optional
moving average of its weights (`DauConfig.weight_average`) the game returns instead of the last iterate."""

from __future__ import annotations

import torch

from models.base import Classifier
from unlearning.methods.common import optimiser_step
from unlearning.methods.dau.config import DauConfig
from unlearning.methods.dau.stopping import last_parameters


class DefenderStep:
    def __init__(self, defender: Classifier, config: DauConfig, device: torch.device) -> None:
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
        average = config.weight_average
        self.average = None if average is None else [weight.detach().clone() for weight in self.trainable]
        """The moving average of the trainable weights, from the game's start (`weight_average`)."""
        self.blend = 1.0 - (average or 0.0)

    def __call__(self, loss: torch.Tensor) -> None:
        loss.backward()
        self.defender.mask_gradients()
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.max_norm)
        self.max_grad_norm = torch.maximum(self.max_grad_norm, norm.detach())
        optimiser_step(self.optimiser, self.defender)
        self.schedule.step()
        if self.average is not None:
            for average, weight in zip(self.average, self.trainable, strict=True):
                average.lerp_(weight.detach(), self.blend)

    @torch.no_grad()
    def finish(self) -> bool:
        """Put the averaged weights into the defender; False (nothing done) without `weight_average`."""
        if self.average is None:
            return False
        for weight, average in zip(self.trainable, self.average, strict=True):
            weight.copy_(average)
        return True
