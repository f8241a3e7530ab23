"""DAU with the Wasserstein critic (`critic.py`): the game `DauConfig.critic = "wasserstein"` plays.

    defender step:  min_D  retain term(R) + alpha * W1(phi_D(F), phi_D(V)) + lambda_bt * BT(z_F, z_V)
                           + nonmember_distill * KL(D_0(V) || D(V))

F is a batch of the whole forget set, V a batch of non-members paired with it (same class in random
forgetting, relabelled other classes' images class-wise: `pools.py`), phi the logit-scaled confidence of
each sample's label token, D_0 the original model. The critic is solved exactly at every step, so there is
no attacker to warm up or step, and no sensitivity copies: an iteration costs one forward-backward of R + F
and a forward of V (a forward-backward with the anchor). The critic's gradient reaches only F, but the shared
weights move V's confidence with it; the anchor (the last term) keeps V where the original had it, so the
target the forget set is matched to stays what unseen data looks like.

The held-out check the stopping rule (`game.py`) reads, aimed at "the forget set looks like unseen data":
the AUC of phi, forget samples (a fixed probe of up to `holdout_max`) against held-out non-members the game
never matched to.
"""

from __future__ import annotations

from typing import Any

import torch

from unlearning.methods.common import index_stream
from unlearning.methods.dau.barlow_twins import barlow_twins_loss
from unlearning.methods.dau.critic import classwise_wasserstein, label_margin, wasserstein_1d
from unlearning.methods.dau.game import Game
from unlearning.methods.dau.pools import PairSampler, build_pools
from unlearning.methods.dau.stopping import HeldOut, roc_auc


class CriticGame(Game):
    """The game against the exact critic (`Game` holds the defender, the loop and the stopping rule)."""

    critic = "wasserstein"

    def _set_up(self) -> None:
        config, splits = self.config, self.splits
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
        self.member_tokens = self.pools.member_token_labels.to(self.device)
        self.nonmember_tokens = self.pools.nonmember_token_labels.to(self.device)
        self.pairs = PairSampler(self.pools, splits.val.labels, self.rows)
        self.forget_batches = index_stream(len(splits.forget), config.batch_size, self.rows)
        self._draw_retain()
        self.forget_probe = torch.randperm(len(splits.forget), generator=self.rows)[: config.holdout_max]
        self.lambda_bt = config.lambda_bt

    def _report(self, trace: list[HeldOut]) -> dict[str, Any]:
        return {
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
        x_f = self._batch(self.splits.forget.images[forget_rows])
        x_v = self._batch(self.splits.val.images[val_rows])
        forward = self._forward(x_f)
        logits_f, z_f = forward.logits_f, forward.z_f
        loss = self.retain_term(forward.logits_r, forward.y_r, forward.x_r)
        anchored = config.nonmember_distill > 0
        if alpha > 0 or self.lambda_bt > 0 or anchored:
            with torch.set_grad_enabled(anchored), self._autocast():
                z_v = self.defender.features(x_v)
                logits_v = self.defender.head(z_v)
            if anchored:
                loss = loss + self.retain_term.nonmembers(logits_v, x_v)
                z_v, logits_v = z_v.detach(), logits_v.detach()
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
