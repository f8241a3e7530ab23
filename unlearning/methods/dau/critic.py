"""DAU's Wasserstein critic: the attacker in closed form.

The membership signal a model leaks about a sample is in how sure it is of the sample's label: the
logit-scaled confidence phi = z_y - logsumexp_{j != y} z_j (LiRA's statistic; the audit's SVM reads p_y,
a monotone function of it). A retrained model treats the forget set like unseen data, so the defender's
goal is that the forget samples' phi be distributed like the non-members'.

A Wasserstein-style critic measures exactly that: W1(F, V) = max over 1-Lipschitz f of E_F f - E_V f.
On one real-valued statistic the maximising critic is known without training it: W1 is the mean distance
between the two sorted samples (the quantile coupling). So the attacker of this game is always optimal
(no warm-up, no attacker steps, no sensitivity copies), and its gradient is well behaved: each forget
sample is pulled toward the non-member of the same rank, never past it, which ends the game where the
forget set looks unseen rather than where it looks forgotten (a one-sided attacker can push forget
samples below every non-member; retraining does not).
"""

from __future__ import annotations

import torch
from torch import Tensor


def label_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """phi = z_y - logsumexp of the other logits (= log p_y - log(1 - p_y)), per row."""
    logits = logits.float()
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - torch.logsumexp(others, dim=1)


def wasserstein_1d(members: Tensor, nonmembers: Tensor) -> Tensor:
    """W1 between two empirical distributions on the line: the mean gap between matching quantiles.
    `nonmembers` is the target (no gradient flows into it); sizes may differ."""
    ranked = members.sort().values
    target = nonmembers.detach().float().sort().values
    if len(target) != len(ranked):
        levels = (torch.arange(len(ranked), device=ranked.device, dtype=torch.float32) + 0.5) / len(ranked)
        target = torch.quantile(target, levels)
    return (ranked - target).abs().mean()


def classwise_wasserstein(
    members: Tensor, member_labels: Tensor, nonmembers: Tensor, nonmember_labels: Tensor
) -> Tensor:
    """W1 per class of the members, weighted by each class's share of them: a hard class's forget samples
    are matched to that class's non-members, not to an easy class's."""
    total = members.new_zeros(())
    for label in member_labels.unique():
        mine, theirs = member_labels == label, nonmember_labels == label
        if bool(theirs.any()):
            total = total + wasserstein_1d(members[mine], nonmembers[theirs]) * mine.float().mean()
    return total
