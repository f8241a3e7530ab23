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

Small sets (`attack_sets`, forget sets below `DauConfig.small_set_below`; one sample, the everyday
deletion request). The attacker trains on part of its pool and is scored, for the stopping rule, on a
held-out part it never saw; one sample cannot be both. Nor can an attacker learn membership from one
member: it learns that sample's identity (measured on the memorising test problem with 64 views of the
sample as members and held-out views: held-out attacker accuracy 0.96-1.0 for all 80 iterations, so
the stopping rule never fires, while the chased defender drove the sample to p_y = 0). So in small-set
mode:
- the attacker learns membership from *shadow members*, retain samples (which the model trained on and
  keeps), against the validation non-members, as the audit's attacks do; it never sees the forget set;
- the forget samples become views (`views.py`), split into the defender's training views and the
  held-out views of the stopping check (views, not samples, are held out);
- everything the attacker sees is a view (shadow members and non-members one each), so the two sides
  differ in membership, not in the transform;
- the game's self-correction (an attacker that re-learns the forget set stops the defender pushing it
  past the non-members) is gone, so the defender is pulled to the equilibrium itself: the forget views'
  membership logit toward the median logit of their paired non-members, and the stopping check is the
  attacker's AUC of held-out forget views against held-out non-members (0.5 = a typical non-member);
- class-wise, every label token is masked: the shadow members (retain) cannot carry the forgotten
  class's label, so a token would tell them from the non-members by itself.
Known limit: the attacker's score is flat over outputs it already calls non-member, so nothing pulls a
sample back once pushed past the median; on the memorising test problem a single memorised sample ends
at p_y ~ 0, where a model retrained without it keeps p_y 0.997 (half that class's non-members have
p_y above 0.74). On digits the result matches retraining.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from unlearning.methods.dau.config import ClassNonMembers, DauConfig
from unlearning.methods.dau.views import sample_views
from unlearning.types import Unservable

if TYPE_CHECKING:
    from unlearning.data import ImageSet, UnlearningSplits


@dataclass(frozen=True)
class AttackPools:
    """Rows of the members (splits.forget or its views) and the non-members (splits.val or its views),
    split into train and held-out parts."""

    member_train: Tensor
    member_holdout: Tensor
    nonmember_train: Tensor
    nonmember_holdout: Tensor
    member_token_labels: Tensor
    """Label token per member row (-1 = masked), indexed by member row."""
    nonmember_token_labels: Tensor
    """Label token per non-member row (-1 = masked), indexed by non-member row."""
    pair_by_class: bool


def nonmember_rows(
    val_labels: Tensor, *, forget_class: int | None, class_nonmembers: ClassNonMembers
) -> Tensor:
    """The validation rows that play the non-members (all of them in random forgetting)."""
    if forget_class is None:
        return torch.arange(len(val_labels))
    is_class = val_labels == forget_class
    return (is_class if class_nonmembers == "same_class" else ~is_class).nonzero().flatten()


def token_labels(
    labels: Tensor, *, member: bool, forget_class: int | None, class_nonmembers: ClassNonMembers
) -> Tensor:
    """The label token each member (or non-member) row carries: its label, or as `class_nonmembers` says."""
    tokens = labels.clone()
    if forget_class is not None:
        if class_nonmembers == "relabel" and not member:
            tokens[:] = forget_class
        elif class_nonmembers == "mask_label":
            tokens[:] = -1
    return tokens


def build_pools(
    forget_labels: Tensor,
    val_labels: Tensor,
    *,
    forget_class: int | None,
    class_nonmembers: ClassNonMembers,
    holdout_fraction: float,
    holdout_max: int,
    generator: torch.Generator,
    balanced_holdout: bool = True,
) -> AttackPools:
    """Split members and non-members at random into training and held-out parts. Held out per side:
    `holdout_fraction` of it (at least 1, at most `holdout_max`); with `balanced_holdout`, both sides
    hold out as many as the smaller side's share."""
    nonmembers = nonmember_rows(val_labels, forget_class=forget_class, class_nonmembers=class_nonmembers)
    if len(nonmembers) < 2 or len(forget_labels) < 2:
        raise ValueError(
            f"a split into training and held-out parts needs at least 2 members and 2 non-members; got "
            f"{len(forget_labels)} and {len(nonmembers)} (forget_class={forget_class}, "
            f"class_nonmembers={class_nonmembers!r})"
        )
    member_rows = torch.randperm(len(forget_labels), generator=generator)
    nonmembers = nonmembers[torch.randperm(len(nonmembers), generator=generator)]
    member_holdout, nonmember_holdout = (
        min(holdout_max, max(1, round(holdout_fraction * len(rows)))) for rows in (member_rows, nonmembers)
    )
    if balanced_holdout:
        member_holdout = nonmember_holdout = min(member_holdout, nonmember_holdout)
    tokens = functools.partial(token_labels, forget_class=forget_class, class_nonmembers=class_nonmembers)
    return AttackPools(
        member_train=member_rows[member_holdout:],
        member_holdout=member_rows[:member_holdout],
        nonmember_train=nonmembers[nonmember_holdout:],
        nonmember_holdout=nonmembers[:nonmember_holdout],
        member_token_labels=tokens(forget_labels, member=True),
        nonmember_token_labels=tokens(val_labels, member=False),
        pair_by_class=forget_class is None,
    )


@dataclass(frozen=True)
class AttackSets:
    """The images of the game: the defender's forget batches and held-out members come from `members`,
    the non-members from `nonmembers`; the attacker trains on the members' training rows, or in
    small-set mode on `shadow` (see the module docstring)."""

    members: ImageSet
    """splits.forget, or views of it in small-set mode."""
    nonmembers: ImageSet
    """splits.val, or one view of each of its non-member rows in small-set mode."""
    pools: AttackPools
    shadow: ImageSet | None = None
    """Small-set mode: the attacker's members, one view each of a seeded retain subset as large as the
    non-members' training part; None: the attacker trains on `pools.member_train`."""
    shadow_token_labels: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    member_views: int = 0
    """Views per forget sample; 0 when the game plays on the samples themselves."""

    def describe(self) -> dict[str, Any]:
        """For the run's info: how the pool was built and its sizes."""
        return {
            "mode": "samples" if self.shadow is None else "small_set",
            "member_views_per_sample": self.member_views,
            "shadow_members": 0 if self.shadow is None else len(self.shadow),
            "member_train": len(self.pools.member_train),
            "member_holdout": len(self.pools.member_holdout),
            "nonmember_train": len(self.pools.nonmember_train),
            "nonmember_holdout": len(self.pools.nonmember_holdout),
        }


def attack_sets(splits: UnlearningSplits, *, config: DauConfig, generator: torch.Generator) -> AttackSets:
    """The attack pool of a run. A forget set of at least `config.small_set_below` samples plays on the
    samples (`build_pools`, as always); a smaller one in small-set mode, its views drawn once from
    `generator`."""
    forget, val, forget_class = splits.forget, splits.val, splits.forget_class
    class_nonmembers = config.class_nonmembers
    candidates = nonmember_rows(val.labels, forget_class=forget_class, class_nonmembers=class_nonmembers)
    if len(forget) == 0 or len(candidates) < 2:
        raise Unservable(
            f"DAU needs at least 1 forget and 2 non-member validation samples; got {len(forget)} forget "
            f"and {len(candidates)} non-members (forget_class={forget_class}, "
            f"class_nonmembers={class_nonmembers!r})"
        )
    build = functools.partial(
        build_pools,
        forget_class=forget_class,
        class_nonmembers=class_nonmembers,
        holdout_fraction=config.holdout_fraction,
        holdout_max=config.holdout_max,
        generator=generator,
    )
    if len(forget) >= config.small_set_below:
        return AttackSets(forget, val, build(forget.labels, val.labels))
    member_views = math.ceil(config.view_pool_size / len(forget))
    view = functools.partial(sample_views, noise=config.view_noise, generator=generator)
    members = view(forget, member_views)
    nonmembers = view(val.subset(candidates), 1)
    pools = build(members.labels, nonmembers.labels, balanced_holdout=False)
    shadow_rows = torch.randperm(len(splits.retain), generator=generator)[: len(pools.nonmember_train)]
    shadow = view(splits.retain.subset(shadow_rows), 1)
    shadow_tokens = shadow.labels.clone()
    if forget_class is not None:
        masked = functools.partial(torch.full_like, fill_value=-1)
        pools = replace(
            pools,
            member_token_labels=masked(pools.member_token_labels),
            nonmember_token_labels=masked(pools.nonmember_token_labels),
        )
        shadow_tokens = masked(shadow_tokens)
    return AttackSets(members, nonmembers, pools, shadow, shadow_tokens, member_views)


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
