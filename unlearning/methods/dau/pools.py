"""Who the attacker sees as members and non-members, which label each token carries, and the pairing.

Random forgetting: members = forget samples, non-members = validation samples, both with their own
labels; each forget sample is paired (for Barlow Twins and the balanced attacker batch) with a
validation sample of the same class, so the two sides of every batch have the same class mix.

Class-wise forgetting needs thought (DESIGN section 9). A model retrained without class K still
recognises nothing of K: its true-label probability p_K is low on K's training *and* validation images.
So K's own validation images are the wrong non-members (the original model recognises them: the
defender would be pulled toward still recognising K), and other classes' validation images with their
own labels let the attacker win on the label token alone. Options (`DauConfig.class_nonmembers`):
`relabel` (default) gives the other classes' validation images the label token K: the attacker then
compares p_K on images the model has learnt as K against images it does not treat as K, which is what a
retrained model shows and what the audit's MIA (true-label probability) measures. `mask_label` drops the
label token on both sides instead; `other_classes` and `same_class` are the two naive choices, kept as
measured controls. Pairing is random in class-wise mode (there is no same-class validation sample that
should look like a forget sample). Measurements: bench/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from unlearning.methods.dau.config import ClassNonMembers
from unlearning.types import Unservable


@dataclass(frozen=True)
class AttackPools:
    """Rows of splits.forget (members) and splits.val (non-members), split into train and held-out parts."""

    member_train: Tensor
    member_holdout: Tensor
    nonmember_train: Tensor
    nonmember_holdout: Tensor
    member_token_labels: Tensor
    """Label token per forget row (-1 = masked), indexed by forget row."""
    nonmember_token_labels: Tensor
    """Label token per val row (-1 = masked), indexed by val row."""
    pair_by_class: bool


def build_pools(
    forget_labels: Tensor,
    val_labels: Tensor,
    *,
    forget_class: int | None,
    class_nonmembers: ClassNonMembers,
    holdout_fraction: float,
    holdout_max: int,
    generator: torch.Generator,
) -> AttackPools:
    member_tokens = forget_labels.clone()
    nonmember_tokens = val_labels.clone()
    nonmember_rows = torch.arange(len(val_labels))
    if forget_class is not None:
        is_class = val_labels == forget_class
        if class_nonmembers == "same_class":
            nonmember_rows = is_class.nonzero().flatten()
        else:
            nonmember_rows = (~is_class).nonzero().flatten()
        if class_nonmembers == "relabel":
            nonmember_tokens[:] = forget_class
        elif class_nonmembers == "mask_label":
            member_tokens[:] = -1
            nonmember_tokens[:] = -1
    if len(nonmember_rows) < 2 or len(forget_labels) < 2:
        raise Unservable(
            f"DAU needs at least 2 forget and 2 non-member validation samples; got "
            f"{len(forget_labels)} forget and {len(nonmember_rows)} non-members "
            f"(forget_class={forget_class}, class_nonmembers={class_nonmembers!r})"
        )
    member_rows = torch.randperm(len(forget_labels), generator=generator)
    nonmember_rows = nonmember_rows[torch.randperm(len(nonmember_rows), generator=generator)]
    holdout = min(
        holdout_max,
        max(1, round(holdout_fraction * len(member_rows))),
        max(1, round(holdout_fraction * len(nonmember_rows))),
    )
    return AttackPools(
        member_train=member_rows[holdout:],
        member_holdout=member_rows[:holdout],
        nonmember_train=nonmember_rows[holdout:],
        nonmember_holdout=nonmember_rows[:holdout],
        member_token_labels=member_tokens,
        nonmember_token_labels=nonmember_tokens,
        pair_by_class=forget_class is None,
    )


class PairSampler:
    """For a batch of forget rows, one non-member val row each: same class when pairing by class and the
    class has a non-member in the training part of the pool, uniformly random otherwise."""

    def __init__(self, pools: AttackPools, val_labels: Tensor, generator: torch.Generator) -> None:
        self.generator = generator
        self.pool = pools.nonmember_train
        self.by_class: dict[int, Tensor] = {}
        if pools.pair_by_class:
            pool_labels = val_labels[self.pool]
            for label in pool_labels.unique().tolist():
                self.by_class[int(label)] = self.pool[pool_labels == label]

    def pair(self, forget_labels: Tensor) -> Tensor:
        uniform = self.pool[torch.randint(len(self.pool), (len(forget_labels),), generator=self.generator)]
        if not self.by_class:
            return uniform
        paired = uniform.clone()
        for label, candidates in self.by_class.items():
            slots = (forget_labels == label).nonzero().flatten()
            if len(slots):
                paired[slots] = candidates[
                    torch.randint(len(candidates), (len(slots),), generator=self.generator)
                ]
        return paired


def label_tokens(token_labels: Tensor, num_classes: int) -> Tensor:
    """One-hot label tokens; rows with label -1 (masked) are all zeros."""
    onehot = torch.zeros(len(token_labels), num_classes)
    shown = token_labels >= 0
    onehot[shown, token_labels[shown]] = 1.0
    return onehot
