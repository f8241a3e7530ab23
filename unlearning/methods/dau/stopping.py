"""What both DAU games share besides the config: the held-out check that stops them, the ROC AUC it uses,
and which of the defender's weights train."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class HeldOut:
    iteration: int
    attacker_accuracy: float
    forget_accuracy: float
    retain_accuracy: float
    attacker_auc: float | None = None
    """Small-set mode: ROC AUC of the attacker's logits, held-out forget views vs non-members."""

    def as_dict(self) -> dict[str, float]:
        point = {
            "iteration": self.iteration,
            "attacker_accuracy": round(self.attacker_accuracy, 4),
            "forget_accuracy": round(self.forget_accuracy, 2),
            "retain_accuracy": round(self.retain_accuracy, 2),
        }
        if self.attacker_auc is not None:
            point["attacker_auc"] = round(self.attacker_auc, 4)
        return point

    def at_chance(self, tolerance: float) -> bool:
        """The attacker no better than a coin: its AUC (small sets) or accuracy within 0.5 +- tolerance."""
        score = self.attacker_accuracy if self.attacker_auc is None else self.attacker_auc
        return abs(score - 0.5) <= tolerance


def roc_auc(member_scores: Tensor, nonmember_scores: Tensor) -> float:
    """P(member score > non-member score), ties counting half: the area under the ROC curve."""
    difference = member_scores[:, None] - nonmember_scores[None, :]
    return ((difference > 0).float() + 0.5 * (difference == 0).float()).mean().item()


def last_parameters(model: torch.nn.Module, fraction: float) -> list[torch.nn.Parameter]:
    """Unfreeze the last parameters (in the network's order) holding `fraction` of all weights, freeze the
    rest. Memorised detail sits mostly in the late layers, and the backward pass stops at the first
    trainable layer, so the expensive high-resolution early layers cost no gradient work."""
    named = list(model.named_parameters())
    budget = fraction * sum(param.numel() for _, param in named)
    trainable: list[torch.nn.Parameter] = []
    for _, param in reversed(named):
        param.requires_grad_(budget > 0)
        if budget > 0:
            trainable.append(param)
        budget -= param.numel()
    return trainable
