"""DAU with the Wasserstein critic (`critic.py`): the game `DauConfig.critic = "wasserstein"` plays.

    defender step:  min_D  CE(D(R), y_R) + alpha * W1(phi_D(F), phi_D(V)) + lambda_bt * BT(z_F, z_V)

F is a batch of the whole forget set, V a batch of non-members paired with it (same class in random
forgetting, relabelled other classes' images class-wise: `pools.py`), phi the logit-scaled confidence of
each sample's label token. The critic is solved exactly at every step, so there is no attacker to warm up
or step, and no sensitivity copies: an iteration costs one forward-backward of R + F and a forward of V.

Stopping aims at "the forget set looks like unseen data": every `eval_every` iterations the AUC of phi,
forget samples (a fixed probe of up to `holdout_max`) against held-out non-members the game never
matched to, is checked. Random forgetting stops once it stays within 0.5 +- `stop_tolerance` with retain
accuracy recovered; class-wise, alpha drops to 0 once the class is forgotten (as in the SAMIA game) and the
rest of the budget restores retain accuracy.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from unlearning.methods.common import (
    StageClock,
    batch_to,
    index_stream,
    raise_if_stopped,
    working_copy,
)
from unlearning.methods.dau.barlow_twins import barlow_twins_loss
from unlearning.methods.dau.config import DauConfig
from unlearning.methods.dau.critic import classwise_wasserstein, label_margin, wasserstein_1d
from unlearning.methods.dau.defender import DefenderStep
from unlearning.methods.dau.pools import PairSampler, build_pools
from unlearning.methods.dau.retain_term import RetainTerm
from unlearning.methods.dau.stopping import HeldOut, roc_auc
from unlearning.training import augment, autocast, memory_format_for
from unlearning.types import Progress, ShouldStop

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import ImageSet, UnlearningSplits


class CriticGame:
    """One run of the critic game from `model`; `retain` is the set the CE term's batches come from;
    `teacher` is the retain distillation's (the original)."""

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
        self.retain_term = RetainTerm(teacher, config, device, self._autocast)
        self.pools = build_pools(
            splits.forget.labels,
            splits.val.labels,
            forget_class=splits.forget_class,
            class_nonmembers=config.class_nonmembers,
            holdout_fraction=config.holdout_fraction,
            holdout_max=config.holdout_max,
            generator=self.rows,
            balanced_holdout=False,
        )
        self.member_tokens = self.pools.member_token_labels.to(device)
        self.nonmember_tokens = self.pools.nonmember_token_labels.to(device)
        self.pairs = PairSampler(self.pools, splits.val.labels, self.rows)
        self.forget_batches = index_stream(len(splits.forget), config.batch_size, self.rows)
        retain_batch = config.retain_batch_size or config.batch_size
        self.retain_batches = index_stream(len(retain), retain_batch, self.rows)
        probe = min(config.retain_probe, len(splits.retain))
        self.retain_probe = torch.randperm(len(splits.retain), generator=self.rows)[:probe]
        self.forget_probe = torch.randperm(len(splits.forget), generator=self.rows)[: config.holdout_max]
        self.lambda_bt = config.lambda_bt

    def play(self, progress: Progress, should_stop: ShouldStop) -> tuple[Classifier, dict[str, Any]]:
        config = self.config
        start_retain_accuracy = self._retain_accuracy()
        trace = [self._evaluate(0)]
        class_wise = self.splits.forget_class is not None
        won_streak, stop_reason, iteration, alpha_off_at = 0, "budget", 0, None
        for iteration in range(1, config.iterations + 1):
            raise_if_stopped(should_stop, f"DAU iteration {iteration}")
            alpha = config.alpha if alpha_off_at is None else 0.0
            if not class_wise and config.random_alpha_iterations is not None:
                alpha = config.alpha if iteration <= config.random_alpha_iterations else 0.0
            stage = "game" if alpha > 0 else "restore"
            with self.clock.stage(stage):
                self._iteration(alpha)
            progress(iteration / config.iterations, stage)
            if iteration % config.eval_every and iteration != config.iterations:
                continue
            with self.clock.stage("evaluate"):
                held_out = self._evaluate(iteration)
            trace.append(held_out)
            recovered = held_out.retain_accuracy >= start_retain_accuracy - config.retain_tolerance
            unseen = held_out.at_chance(config.stop_tolerance)
            if class_wise and alpha_off_at is None and iteration >= config.class_alpha_iterations:
                if unseen or held_out.forget_accuracy <= config.class_forgotten_accuracy:
                    alpha_off_at = iteration
            won = (alpha_off_at is not None) and recovered if class_wise else unseen and recovered
            won_streak = won_streak + 1 if won else 0
            if won_streak >= config.stop_patience:
                stop_reason = "restored" if class_wise else "won"
                break
        progress(1.0, "done")
        return self.defender, {
            "critic": "wasserstein",
            "iterations": iteration,
            "stop_reason": stop_reason,
            "seconds": self.clock.rounded(),
            "device": str(self.device),
            "retain_probe_accuracy_start": round(start_retain_accuracy, 2),
            "max_defender_grad_norm": round(float(self.step.max_grad_norm), 3),
            "alpha_off_at": alpha_off_at,
            "attack_pool": {
                "mode": "critic",
                "forget_probe": len(self.forget_probe),
                "nonmember_train": len(self.pools.nonmember_train),
                "nonmember_holdout": len(self.pools.nonmember_holdout),
                "barlow_twins": self.lambda_bt > 0,
            },
            "membership_auc": {
                "start": trace[0].attacker_auc,
                "final": trace[-1].attacker_auc,
                "trace": [point.as_dict() for point in trace],
            },
        }

    def _iteration(self, alpha: float) -> None:
        config = self.config
        forget_rows = next(self.forget_batches)
        val_rows = self.pairs.pair(self.splits.forget.labels[forget_rows])
        retain_rows = next(self.retain_batches)
        x_f = self._batch(self.splits.forget.images[forget_rows])
        x_v = self._batch(self.splits.val.images[val_rows])
        x_r = self._batch(self.retain.images[retain_rows])
        y_r = self.retain.labels[retain_rows].to(self.device)
        if config.augment_retain:
            x_r = augment(x_r, self.rows).contiguous(memory_format=self.memory_format)
        with self._autocast():
            z = self.defender.features(torch.cat([x_r, x_f]))
            logits = self.defender.head(z)
        logits_r, logits_f, z_f = logits[: len(x_r)], logits[len(x_r) :], z[len(x_r) :]
        loss = self.retain_term(logits_r, y_r, x_r)
        if alpha > 0 or self.lambda_bt > 0:
            with torch.no_grad(), self._autocast():
                z_v = self.defender.features(x_v)
                logits_v = self.defender.head(z_v)
        if alpha > 0:
            member_labels = self.member_tokens[forget_rows.to(self.device)]
            nonmember_labels = self.nonmember_tokens[val_rows.to(self.device)]
            phi_f = label_margin(logits_f, member_labels)
            phi_v = label_margin(logits_v, nonmember_labels)
            if config.critic_per_class and self.splits.forget_class is None:
                critic = classwise_wasserstein(phi_f, member_labels, phi_v, nonmember_labels)
            else:
                critic = wasserstein_1d(phi_f, phi_v)
            loss = loss + alpha * critic
        if self.lambda_bt > 0:
            loss = loss + self.lambda_bt * barlow_twins_loss(z_f, z_v, config.bt_off_diagonal)
        self.step(loss)

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

    @torch.no_grad()
    def _evaluate(self, iteration: int) -> HeldOut:
        forget_logits = self._logits(self.splits.forget, self.forget_probe)
        holdout = self.pools.nonmember_holdout
        phi_f = label_margin(forget_logits, self.member_tokens[self.forget_probe.to(self.device)])
        phi_v = label_margin(
            self._logits(self.splits.val, holdout), self.nonmember_tokens[holdout.to(self.device)]
        )
        labels = self.splits.forget.labels[self.forget_probe].to(self.device)
        auc = roc_auc(phi_f, phi_v)
        return HeldOut(
            iteration=iteration,
            attacker_accuracy=auc,
            forget_accuracy=(forget_logits.argmax(1) == labels).float().mean().item() * 100,
            retain_accuracy=self._retain_accuracy(),
            attacker_auc=auc,
        )

    def _retain_accuracy(self) -> float:
        logits = self._logits(self.splits.retain, self.retain_probe)
        return (
            100.0
            * (logits.argmax(1).cpu() == self.splits.retain.labels[self.retain_probe]).float().mean().item()
        )
