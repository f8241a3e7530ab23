"""Discriminative Adversarial Unlearning: a min-max game between a membership attacker and the model.

Symbols: D the defender (the model being unlearned), A the attacker (`attacker.py`), F a forget batch
(members), V a validation batch paired with F (non-members, `pools.py`), R a retain batch, z = D's
penultimate features, p = softmax(D(x)), s = sensitivity of p (`sensitivity.py`), y the label token.

    attacker step (k_att per iteration, D frozen):
        min_A  BCE(A(p_F, s_F, y_F), 1) + BCE(A(p_V, s_V, y_V), 0)
    defender step (A frozen, s detached):
        min_D  CE(D(R), y_R) + alpha * BCE(A(p_F, s_F, y_F), 0) + lambda_bt * BT(z_F, z_V)

The defender term is the non-saturating one: D pushes forget samples toward "non-member" rather than
away from "member", so its gradient is strongest exactly when the attacker is confident.

What keeps an iteration cheap: D runs in eval mode (batch norm statistics frozen, so noisy copies can
share one forward and the attack inputs are what an auditor sees); the forget forward that feeds the
attacker is the same one the defender step back-propagates through; V needs no gradient (BT treats z_V
as the target); warm-up reuses one pass of D over the attack pool. Stopping: every `eval_every`
iterations the attacker is scored on held-out forget/val samples it never trained on; random
forgetting stops once that accuracy stays within 0.5 +- tol with retain accuracy recovered, class-wise
once alpha has dropped to 0 and retain accuracy is recovered.

With `retain_source="condensed"` R is drawn from the condensation method's reduced retain set (built or
loaded from the per-model-version cache first, in the run's time: stage `condense`); the retain-accuracy
probe of the stopping rule stays on the real retain set, so both sources stop by the same measure.

Small sets (forget sets below `small_set_below`, `pools.py` says why): F is views of the forget samples;
the attacker steps on shadow members S (retain samples) against their own paired V, never on F; the
defender's target is the non-members' median membership score instead of 0, and the stopping check is
the attacker's held-out AUC of F against V; with one forget sample BT is left out (a batch of views of
one image has no sample-to-sample spread to match):
    attacker step:  min_A  BCE(A(p_S, s_S, y_S), 1) + BCE(A(p_V', s_V', y_V'), 0)
    defender step:  min_D  CE(D(R), y_R) + alpha * BCE(A(p_F, s_F, y_F), sigmoid(median A(p_V, s_V, y_V)))
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unlearning.methods.base import register
from unlearning.methods.common import (
    Job,
    Method,
    StageClock,
    batch_to,
    index_stream,
    raise_if_stopped,
    working_copy,
)
from unlearning.methods.condensation.condense import reduce_retain_in
from unlearning.methods.dau.attacker import AttackInputs, MembershipAttacker
from unlearning.methods.dau.barlow_twins import barlow_twins_loss
from unlearning.methods.dau.config import DauConfig
from unlearning.methods.dau.critic_game import CriticGame
from unlearning.methods.dau.defender import DefenderStep
from unlearning.methods.dau.pools import PairSampler, attack_sets, label_tokens
from unlearning.methods.dau.retain_term import RetainTerm
from unlearning.methods.dau.sensitivity import sensitivity
from unlearning.methods.dau.stopping import HeldOut, roc_auc
from unlearning.methods.dau.warm_start import influence_start
from unlearning.training import augment, autocast, memory_format_for
from unlearning.types import Progress, ShouldStop

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import ImageSet, UnlearningSplits

WARMUP_SHARE = 0.1
"""Share of the game's progress bar given to the attacker warm-up."""
CONDENSE_SHARE = 0.3
"""Share of the whole progress bar given to condensing the retain set when the cache misses."""
WARM_START_SHARE = 0.4
"""Share of the rest of the progress bar given to the influence warm start (`warm_start.py`)."""


class Dau(Method[DauConfig]):
    name = "dau"
    Config = DauConfig

    def unlearn(self, job: Job[DauConfig]) -> tuple[Classifier, dict[str, Any]]:
        config, splits = job.config, job.splits
        condensed = config.retain_source == "condensed"
        with torch.random.fork_rng(devices=[job.device] if job.device.type == "cuda" else []):
            torch.manual_seed(config.seed)
            reduction = reduce_retain_in(job, config.condense, CONDENSE_SHARE) if condensed else None
            retain = splits.retain if reduction is None else reduction.images
            start = CONDENSE_SHARE if reduction is not None and not reduction.cache_hit else 0.0
            plays_critic = config.critic == "wasserstein" and len(splits.forget) >= config.small_set_below
            game_type = CriticGame if plays_critic else _Game
            model, warm_start = job.model, None
            if config.warm_start == "influence":
                model, warm_start = influence_start(job, start, WARM_START_SHARE * (1 - start))
                start += WARM_START_SHARE * (1 - start)
            game = game_type(model, splits, retain, config, job.device, job.clock, teacher=job.model)
            unlearned, info = game.play(job.progress_span(start, 1 - start), job.should_stop)
        info["warm_start"] = warm_start
        info["retain_source"] = config.retain_source
        if reduction is not None:
            info.update(reduction.info(len(splits.retain)))
        return unlearned, info


class _Game:
    """One run of the game from `model`; `retain` is the set the CE term's batches come from (see
    `retain_source`); `teacher` is the retain distillation's (the original)."""

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
        self.config = config
        self.splits = splits
        self.retain = retain
        self.device = device
        self.amp = config.amp and device.type == "cuda"
        self.num_classes = splits.num_classes
        self.rows = torch.Generator().manual_seed(config.seed)
        self.noise = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.clock = clock

        self.defender = working_copy(model, device).eval()
        self.memory_format = memory_format_for(self.defender, device)
        self.attacker = MembershipAttacker(self.num_classes, config.attacker).to(device)
        self.step = DefenderStep(self.defender, config, device)
        self.retain_term = RetainTerm(teacher, config, device, self._autocast)
        self.attacker_optimiser = torch.optim.AdamW(
            self.attacker.parameters(), lr=config.attacker_lr, weight_decay=config.attacker_weight_decay
        )
        attack = attack_sets(splits, config=config, generator=self.rows)
        self.attack, self.pools = attack, attack.pools
        self.members, self.nonmembers, self.shadow = attack.members, attack.nonmembers, attack.shadow
        """Members (splits.forget or its views), non-members (splits.val or its views) and, for small
        sets, the shadow members the attacker learns membership from (`pools.py`)."""
        self.lambda_bt = config.lambda_bt if len(splits.forget) >= 2 else 0.0
        """Barlow Twins matches the spread of forget features over samples: one sample has none."""
        self.pairs = PairSampler(self.pools, self.nonmembers.labels, self.rows)
        self.forget_batches = index_stream(len(self.pools.member_train), config.batch_size, self.rows)
        retain_batch = config.retain_batch_size or config.batch_size
        self.retain_batches = index_stream(len(retain), retain_batch, self.rows)
        probe_size = min(config.retain_probe, len(splits.retain))
        self.retain_probe = torch.randperm(len(splits.retain), generator=self.rows)[:probe_size]
        self.member_tokens = label_tokens(self.pools.member_token_labels, self.num_classes).to(device)
        self.nonmember_tokens = label_tokens(self.pools.nonmember_token_labels, self.num_classes).to(device)
        self.shadow_tokens = label_tokens(attack.shadow_token_labels, self.num_classes).to(device)
        if self.shadow is not None:
            shadow_batch = min(config.batch_size, len(self.pools.member_train))  # the forget batch's size
            self.shadow_batches = index_stream(len(self.shadow), shadow_batch, self.rows)

    # -- the loop ---------------------------------------------------------------------------------------

    def play(self, progress: Progress, should_stop: ShouldStop) -> tuple[Classifier, dict[str, Any]]:
        config = self.config
        start_retain_accuracy = self._accuracy(self.splits.retain, self.retain_probe)
        with self.clock.stage("attacker_warmup"):
            self._warm_up(progress, should_stop)
        trace = [self._evaluate(0)]
        won_streak, stop_reason, iteration = 0, "budget", 0
        class_wise = self.splits.forget_class is not None
        alpha_off_at: int | None = None
        for iteration in range(1, config.iterations + 1):
            raise_if_stopped(should_stop, f"DAU iteration {iteration}")
            alpha = config.alpha if alpha_off_at is None else 0.0
            if not class_wise and config.random_alpha_iterations is not None:
                alpha = config.alpha if iteration <= config.random_alpha_iterations else 0.0
            stage = "game" if alpha > 0 else "restore"
            with self.clock.stage(stage):
                self._iteration(alpha)
            progress(WARMUP_SHARE + (1 - WARMUP_SHARE) * iteration / config.iterations, stage)
            if iteration % config.eval_every and iteration != config.iterations:
                continue
            with self.clock.stage("evaluate"):
                held_out = self._evaluate(iteration)
            trace.append(held_out)
            recovered = held_out.retain_accuracy >= start_retain_accuracy - config.retain_tolerance
            attack_won = held_out.at_chance(config.stop_tolerance)
            forgotten = attack_won or held_out.forget_accuracy <= config.class_forgotten_accuracy
            attack_phase_over = iteration >= config.class_alpha_iterations and forgotten
            if class_wise and alpha_off_at is None and attack_phase_over:
                alpha_off_at = iteration  # the class is forgotten: the rest of the budget restores
            if class_wise:
                won = alpha == 0 and recovered
            else:
                won = attack_won and recovered
            won_streak = won_streak + 1 if won else 0
            if won_streak >= config.stop_patience:
                stop_reason = "restored" if class_wise else "won"
                break
        progress(1.0, "done")
        info = {
            "critic": "samia",
            "iterations": iteration,
            "stop_reason": stop_reason,
            "seconds": self.clock.rounded(),
            "device": str(self.device),
            "retain_probe_accuracy_start": round(start_retain_accuracy, 2),
            "max_defender_grad_norm": round(float(self.step.max_grad_norm), 3),
            "alpha_off_at": alpha_off_at,
            "attack_pool": {**self.attack.describe(), "barlow_twins": self.lambda_bt > 0},
            "attacker_accuracy": {
                "after_warmup": round(trace[0].attacker_accuracy, 4),
                "final": round(trace[-1].attacker_accuracy, 4),
                "trace": [point.as_dict() for point in trace],
            },
        }
        return self.defender, info

    def _warm_up(self, progress: Progress, should_stop: ShouldStop) -> None:
        """k steps of the attacker against the frozen defender: its view of the pool is computed once."""
        steps = self.config.attacker_warmup
        if steps == 0:
            return
        if self.shadow is None:
            members = self._view(self.members, self.pools.member_train, self.member_tokens)
        else:
            members = self._view(self.shadow, torch.arange(len(self.shadow)), self.shadow_tokens)
        nonmembers = self._view(self.nonmembers, self.pools.nonmember_train, self.nonmember_tokens)
        half = min(self.config.batch_size, len(members), len(nonmembers))
        for step in range(steps):
            raise_if_stopped(should_stop, f"DAU attacker warm-up step {step}")
            member_rows = torch.randint(len(members), (half,), generator=self.rows)
            nonmember_rows = torch.randint(len(nonmembers), (half,), generator=self.rows)
            self._attacker_step(
                members.take(member_rows.to(self.device)), nonmembers.take(nonmember_rows.to(self.device))
            )
            progress(WARMUP_SHARE * (step + 1) / steps, "attacker_warmup")

    def _iteration(self, alpha: float) -> None:
        config = self.config
        forget_rows = self.pools.member_train[next(self.forget_batches)]
        val_rows = self.pairs.pair(self.members.labels[forget_rows])
        retain_rows = next(self.retain_batches)
        x_f = self._batch(self.members.images[forget_rows])
        x_v = self._batch(self.nonmembers.images[val_rows])
        x_r = self._batch(self.retain.images[retain_rows])
        y_r = self.retain.labels[retain_rows].to(self.device)
        if config.augment_retain:
            x_r = augment(x_r, self.rows).contiguous(memory_format=self.memory_format)

        with self._autocast():
            z = self.defender.features(torch.cat([x_r, x_f]))
            logits = self.defender.head(z)
        z_f = z[len(x_r) :]
        logits_r, logits_f = logits[: len(x_r)], logits[len(x_r) :]
        with torch.no_grad(), self._autocast():
            z_v = self.defender.features(x_v)
            logits_v = self.defender.head(z_v)

        adversarial = torch.zeros((), device=self.device)
        if alpha > 0:
            p_f = torch.softmax(logits_f.float(), dim=1)
            p_v = torch.softmax(logits_v.float(), dim=1)
            s = self._sensitivity(torch.cat([x_f, x_v]), torch.cat([p_f.detach(), p_v]))
            members = AttackInputs(p_f, s[: len(x_f)], self.member_tokens[forget_rows.to(self.device)])
            nonmembers = AttackInputs(p_v, s[len(x_f) :], self.nonmember_tokens[val_rows.to(self.device)])
            for _ in range(config.attacker_steps):
                self._attacker_step(*self._attacker_batch(members, nonmembers))
            self.attacker.eval()
            self.attacker.requires_grad_(False)
            adversarial = F.binary_cross_entropy_with_logits(
                self.attacker(members), self._defender_target(nonmembers, len(members))
            )
            self.attacker.requires_grad_(True)

        loss = self.retain_term(logits_r, y_r, x_r) + alpha * adversarial
        if self.lambda_bt > 0:
            loss = loss + self.lambda_bt * barlow_twins_loss(z_f, z_v, config.bt_off_diagonal)
        self.step(loss)

    # -- pieces -----------------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        return autocast(self.device) if self.amp else contextlib.nullcontext()

    def _batch(self, images: Tensor) -> Tensor:
        return batch_to(images, self.device, self.memory_format)

    def _attacker_step(self, members: AttackInputs, nonmembers: AttackInputs) -> None:
        self.attacker.train()
        logits = self.attacker(members.cat(nonmembers))
        target = torch.cat([torch.ones(len(members)), torch.zeros(len(nonmembers))]).to(self.device)
        loss = F.binary_cross_entropy_with_logits(logits, target)
        loss.backward()
        self.attacker_optimiser.step()
        self.attacker_optimiser.zero_grad(set_to_none=True)

    def _attacker_batch(
        self, members: AttackInputs, nonmembers: AttackInputs
    ) -> tuple[AttackInputs, AttackInputs]:
        """What the attacker steps on: the game's own forget and paired validation batch, or in small-set
        mode a batch of shadow members and their own paired non-members (it never trains on F)."""
        if self.shadow is None:
            return members.detach(), nonmembers
        rows = next(self.shadow_batches)
        paired = self.pairs.pair(self.shadow.labels[rows])
        return (
            self._view(self.shadow, rows, self.shadow_tokens),
            self._view(self.nonmembers, paired, self.nonmember_tokens),
        )

    @torch.no_grad()
    def _defender_target(self, nonmembers: AttackInputs, count: int) -> Tensor:
        """The membership probability the defender pushes the forget batch to: 0 (non-saturating), or in
        small-set mode that of the paired non-members' median logit, the game's equilibrium."""
        if self.shadow is None:
            return torch.zeros(count, device=self.device)
        return torch.sigmoid(self.attacker(nonmembers).median()).expand(count)

    def _sensitivity(self, x: Tensor, probs: Tensor) -> Tensor:
        config = self.config
        return sensitivity(
            self.defender,
            x,
            probs=None if self.amp else probs,
            eps=config.sensitivity_eps,
            copies=config.sensitivity_copies,
            method=config.sensitivity_method,
            generator=self.noise,
        )

    @torch.no_grad()
    def _view(self, images: ImageSet, rows: Tensor, tokens: Tensor) -> AttackInputs:
        """The attacker's inputs for `rows` of `images` under the current (frozen) defender."""
        chunks = []
        for chunk in rows.split(512):
            x = self._batch(images.images[chunk])
            with self._autocast():
                probs = torch.softmax(self.defender(x).float(), dim=1)
            chunks.append(AttackInputs(probs, self._sensitivity(x, probs), tokens[chunk.to(self.device)]))
        view = chunks[0]
        for chunk_view in chunks[1:]:
            view = view.cat(chunk_view)
        return view

    @torch.no_grad()
    def _evaluate(self, iteration: int) -> HeldOut:
        members = self._view(self.members, self.pools.member_holdout, self.member_tokens)
        nonmembers = self._view(self.nonmembers, self.pools.nonmember_holdout, self.nonmember_tokens)
        self.attacker.eval()
        member_logits, nonmember_logits = self.attacker(members), self.attacker(nonmembers)
        said_member = torch.cat([member_logits, nonmember_logits]) > 0
        truth = torch.cat([torch.ones(len(members)), torch.zeros(len(nonmembers))]).to(self.device).bool()
        forget_labels = self.members.labels[self.pools.member_holdout].to(self.device)
        forget_accuracy = (members.probs.argmax(1) == forget_labels).float().mean().item() * 100
        return HeldOut(
            iteration=iteration,
            attacker_accuracy=(said_member == truth).float().mean().item(),
            forget_accuracy=forget_accuracy,
            retain_accuracy=self._accuracy(self.splits.retain, self.retain_probe),
            attacker_auc=None if self.shadow is None else roc_auc(member_logits, nonmember_logits),
        )

    @torch.no_grad()
    def _accuracy(self, images: ImageSet, rows: Tensor) -> float:
        correct = 0
        for chunk in rows.split(512):
            x = self._batch(images.images[chunk])
            with self._autocast():
                predicted = self.defender(x).argmax(1).cpu()
            correct += int((predicted == images.labels[chunk]).sum())
        return 100.0 * correct / max(1, len(rows))


register(Dau())
