"""DAU with the paper's SAMIA attacker: the game `DauConfig.critic = "samia"` plays.

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
as the target); warm-up reuses one pass of D over the attack pool. The held-out check the stopping rule
(`game.py`) reads: the attacker's accuracy on forget/val samples it never trained on.

Small sets (forget sets below `small_set_below`, `pools.py` says why): F is views of the forget samples;
the attacker steps on shadow members S (retain samples) against their own paired V, never on F; the
defender's target is the non-members' median membership score instead of 0, and the stopping check is
the attacker's held-out AUC of F against V; with one forget sample BT is left out (a batch of views of
one image has no sample-to-sample spread to match):
    attacker step:  min_A  BCE(A(p_S, s_S, y_S), 1) + BCE(A(p_V', s_V', y_V'), 0)
    defender step:  min_D  CE(D(R), y_R) + alpha * BCE(A(p_F, s_F, y_F), sigmoid(median A(p_V, s_V, y_V)))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unlearning.methods.common import index_stream, raise_if_stopped
from unlearning.methods.dau.attacker import AttackInputs, MembershipAttacker
from unlearning.methods.dau.barlow_twins import barlow_twins_loss
from unlearning.methods.dau.game import Game
from unlearning.methods.dau.pools import PairSampler, attack_sets, label_tokens
from unlearning.methods.dau.sensitivity import sensitivity
from unlearning.methods.dau.stopping import HeldOut, roc_auc
from unlearning.types import Progress, ShouldStop

if TYPE_CHECKING:
    from unlearning.data import ImageSet

WARMUP_SHARE = 0.1
"""Share of the game's progress bar given to the attacker warm-up."""


class SamiaGame(Game):
    """The game against the SAMIA attacker (`Game` holds the defender, the loop and the stopping rule)."""

    critic = "samia"
    warmup_share = WARMUP_SHARE

    def _set_up(self) -> None:
        config, splits, device = self.config, self.splits, self.device
        self.num_classes = splits.num_classes
        self.noise = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.attacker = MembershipAttacker(self.num_classes, config.attacker).to(device)
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
        self._draw_retain()
        self.member_tokens = label_tokens(self.pools.member_token_labels, self.num_classes).to(device)
        self.nonmember_tokens = label_tokens(self.pools.nonmember_token_labels, self.num_classes).to(device)
        self.shadow_tokens = label_tokens(attack.shadow_token_labels, self.num_classes).to(device)
        if self.shadow is not None:
            shadow_batch = min(config.batch_size, len(self.pools.member_train))  # the forget batch's size
            self.shadow_batches = index_stream(len(self.shadow), shadow_batch, self.rows)

    def _before_game(self, progress: Progress, should_stop: ShouldStop) -> None:
        with self.clock.stage("attacker_warmup"):
            self._warm_up(progress, should_stop)

    def _report(self, trace: list[HeldOut]) -> dict[str, Any]:
        return {
            "attack_pool": {**self.attack.describe(), "barlow_twins": self.lambda_bt > 0},
            "attacker_accuracy": {
                "after_warmup": round(trace[0].attacker_accuracy, 4),
                "final": round(trace[-1].attacker_accuracy, 4),
                "trace": [point.as_dict() for point in trace],
            },
        }

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
        x_f = self._batch(self.members.images[forget_rows])
        x_v = self._batch(self.nonmembers.images[val_rows])
        forward = self._forward(x_f)
        logits_f, z_f = forward.logits_f, forward.z_f
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

        loss = self.retain_term(forward.logits_r, forward.y_r, forward.x_r) + alpha * adversarial
        if self.lambda_bt > 0:
            loss = loss + self.lambda_bt * barlow_twins_loss(z_f, z_v, config.bt_off_diagonal)
        self.step(loss)

    # -- pieces -----------------------------------------------------------------------------------------

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
            retain_accuracy=self._retain_accuracy(),
            attacker_auc=None if self.shadow is None else roc_auc(member_logits, nonmember_logits),
        )
