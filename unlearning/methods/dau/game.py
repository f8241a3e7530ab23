"""What both DAU games share: the defender with its step and retain term, the retain batches, the
retain-accuracy probe, and the loop with its stopping rule. A game (`samia_game.py`, `critic_game.py`)
brings its attacker: how an iteration's adversarial term is made, how the held-out check is scored and
what it reports.

The loop: up to `iterations` defender steps, a held-out check (`_evaluate`) every `eval_every` of them.
Random forgetting stops once the check finds the attacker at chance (0.5 +- `stop_tolerance`) with retain
accuracy recovered (within `retain_tolerance` of the start), `stop_patience` checks in a row. Class-wise,
alpha drops to 0 once the class is forgotten (the attacker at chance, or forget accuracy at most
`class_forgotten_accuracy`; not before `class_alpha_iterations`), the rest of the budget restores retain
accuracy, and the game stops once it is recovered (to `class_restore_target`, within `retain_tolerance`).
The game returns the last iterate or, with `weight_average`, the moving average of the iterates, which is
checked once more (`averaged_check`; the trace reads the iterates).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from unlearning.methods.common import StageClock, batch_to, index_stream, raise_if_stopped, working_copy
from unlearning.methods.dau.config import DauConfig
from unlearning.methods.dau.defender import DefenderStep
from unlearning.methods.dau.retain_term import RetainTerm, mask_class
from unlearning.methods.dau.stopping import HeldOut
from unlearning.training import augment, autocast, memory_format_for
from unlearning.types import Progress, ShouldStop

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import ImageSet, UnlearningSplits


@dataclass
class Forward:
    """An iteration's defender forward: the retain batch and the forget batch through D in one pass."""

    x_r: Tensor
    y_r: Tensor
    logits_r: Tensor
    logits_f: Tensor
    z_f: Tensor
    """The forget batch's penultimate features (Barlow Twins' input)."""


class Game(ABC):
    """One run of a game from `model`; `retain` is the set the CE term's batches come from (see
    `retain_source`); `teacher` is the retain distillation's (the original)."""

    critic: ClassVar[str]
    """The attacker's name in the run's info (`DauConfig.critic`)."""
    warmup_share: ClassVar[float] = 0.0
    """Share of the progress bar taken before the first iteration (`_before_game`)."""

    def __init__(
        self,
        model: Classifier,
        splits: UnlearningSplits,
        retain: ImageSet,
        config: DauConfig,
        device: torch.device,
        clock: StageClock,
        *,
        teacher: Classifier,
    ):
        self.config, self.splits, self.retain, self.device, self.clock = config, splits, retain, device, clock
        self.amp = config.amp and device.type == "cuda"
        self.rows = torch.Generator().manual_seed(config.seed)
        self.defender = working_copy(model, device).eval()
        self.memory_format = memory_format_for(self.defender, device)
        self.step = DefenderStep(self.defender, config, device)
        self.retain_term = RetainTerm(
            teacher, config, device, self._autocast, forget_class=splits.forget_class
        )
        self._set_up()

    def _draw_retain(self) -> None:
        """The retain term's batches and the stopping rule's retain probe. A game calls it once its own
        pools are drawn: the order of draws from `rows` is part of what a seed reproduces."""
        retain_batch = self.config.retain_batch_size or self.config.batch_size
        self.retain_batches = index_stream(len(self.retain), retain_batch, self.rows)
        probe = min(self.config.retain_probe, len(self.splits.retain))
        self.retain_probe = torch.randperm(len(self.splits.retain), generator=self.rows)[:probe]

    # -- what a game brings -------------------------------------------------------------------------------

    @abstractmethod
    def _set_up(self) -> None:
        """The attacker, its pools and batches; calls `_draw_retain` once the pools are drawn."""

    def _before_game(self, progress: Progress, should_stop: ShouldStop) -> None:
        """Work before the first held-out check (the attacker's warm-up), on `warmup_share` of the bar;
        none by default."""
        return None

    @abstractmethod
    def _iteration(self, alpha: float) -> None:
        """One defender step: the retain term, plus `alpha` times the adversarial term when alpha > 0."""

    @abstractmethod
    def _evaluate(self, iteration: int) -> HeldOut:
        """The held-out check the stopping rule reads."""

    @abstractmethod
    def _report(self, trace: list[HeldOut]) -> dict[str, Any]:
        """The game's own part of the run's info: its attack pool and the held-out trace."""

    # -- the loop -----------------------------------------------------------------------------------------

    def play(self, progress: Progress, should_stop: ShouldStop) -> tuple[Classifier, dict[str, Any]]:
        config = self.config
        class_wise = self.splits.forget_class is not None
        start_retain_accuracy = self._retain_accuracy()
        restore_to = start_retain_accuracy
        if class_wise and config.class_restore_target == "without_class":
            restore_to = self._retain_accuracy(without_class=self.splits.forget_class)
        self._before_game(progress, should_stop)
        trace = [self._evaluate(0)]
        won_streak, stop_reason, iteration = 0, "budget", 0
        alpha_off_at: int | None = None
        for iteration in range(1, config.iterations + 1):
            raise_if_stopped(should_stop, f"DAU iteration {iteration}")
            alpha = config.alpha if alpha_off_at is None else 0.0
            if not class_wise and config.random_alpha_iterations is not None:
                alpha = config.alpha if iteration <= config.random_alpha_iterations else 0.0
            stage = "game" if alpha > 0 else "restore"
            with self.clock.stage(stage):
                self._iteration(alpha)
            progress(self.warmup_share + (1 - self.warmup_share) * iteration / config.iterations, stage)
            if iteration % config.eval_every and iteration != config.iterations:
                continue
            with self.clock.stage("evaluate"):
                held_out = self._evaluate(iteration)
            trace.append(held_out)
            recovered = held_out.retain_accuracy >= restore_to - config.retain_tolerance
            at_chance = held_out.at_chance(config.stop_tolerance)
            if class_wise:
                forgotten = at_chance or held_out.forget_accuracy <= config.class_forgotten_accuracy
                if alpha_off_at is None and iteration >= config.class_alpha_iterations and forgotten:
                    alpha_off_at = iteration  # the class is forgotten: the rest of the budget restores
                won = alpha == 0 and recovered
            else:
                won = at_chance and recovered
            won_streak = won_streak + 1 if won else 0
            if won_streak >= config.stop_patience:
                stop_reason = "restored" if class_wise else "won"
                break
        averaged = None
        if self.step.finish():
            with self.clock.stage("evaluate"):
                averaged = self._evaluate(iteration).as_dict()
        progress(1.0, "done")
        return self.defender, {
            "critic": self.critic,
            "iterations": iteration,
            "stop_reason": stop_reason,
            "seconds": self.clock.rounded(),
            "device": str(self.device),
            "retain_probe_accuracy_start": round(start_retain_accuracy, 2),
            "retain_probe_accuracy_target": round(restore_to, 2),
            "max_defender_grad_norm": round(float(self.step.max_grad_norm), 3),
            "alpha_off_at": alpha_off_at,
            "averaged_check": averaged,
            **self._report(trace),
        }

    # -- pieces -------------------------------------------------------------------------------------------

    def _forward(self, x_f: Tensor) -> Forward:
        """Draw the retain batch (augmented when `augment_retain`) and run it with `x_f` through D."""
        retain_rows = next(self.retain_batches)
        x_r = self._batch(self.retain.images[retain_rows])
        y_r = self.retain.labels[retain_rows].to(self.device)
        if self.config.augment_retain:
            x_r = augment(x_r, self.rows).contiguous(memory_format=self.memory_format)
        with self._autocast():
            z = self.defender.features(torch.cat([x_r, x_f]))
            logits = self.defender.head(z)
        return Forward(x_r, y_r, logits[: len(x_r)], logits[len(x_r) :], z[len(x_r) :])

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        return autocast(self.device) if self.amp else contextlib.nullcontext()

    def _batch(self, images: Tensor) -> Tensor:
        return batch_to(images, self.device, self.memory_format)

    @torch.no_grad()
    def _logits(self, images: ImageSet, rows: Tensor) -> Tensor:
        chunks = []
        for chunk in rows.split(512):
            with self._autocast():
                chunks.append(self.defender(self._batch(images.images[chunk])).float())
        return torch.cat(chunks)

    def _retain_accuracy(self, without_class: int | None = None) -> float:
        """Accuracy on the retain probe; with `without_class`, of the argmax over the other classes."""
        logits = self._logits(self.splits.retain, self.retain_probe)
        if without_class is not None:
            mask_class(logits, without_class)
        predicted = logits.argmax(1).cpu()
        correct = int((predicted == self.splits.retain.labels[self.retain_probe]).sum())
        return 100.0 * correct / max(1, len(self.retain_probe))
