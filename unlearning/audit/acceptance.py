"""The acceptance policy: does an audit show the forgetting a certificate may claim?

One test per kind of request, each a question about the new model alone, answered from its softmax
outputs on the request's splits (`AuditProbs`):

- class-wise: the accuracy on held-out (test) images of the forgotten class is at most chance plus
  `class_margin` points;
- samples, at least `small_request_below` of them: the forgotten samples' membership signal is no
  stronger than unseen data's. An RBF SVM on the true-label probability learns members (retain) from
  non-members (one half of test); the percentage of forgotten samples it calls non-members may trail
  that of the other, unseen half of test by at most `membership_tolerance` points. A single shadow draw
  moves that figure by points, so it is decided on the mean over `membership_draws` seeded draws and
  reported with their spread;
- fewer samples: a per-sample test. Each forgotten sample's loss is ranked among the unseen test
  samples' losses; under "never trained on it" that rank is uniform, so its p-value (the share of unseen
  samples with a loss at most as low) falls under `per_sample_alpha / n` with probability at most
  `per_sample_alpha` for all n samples together (Bonferroni). A smaller p-value fails the request. When
  one job serves several small requests, n counts all their samples (`family_size`): the job escalates
  on one decision, so its false-alarm rate stays at `per_sample_alpha`, whatever the burst.

Torch-free: numpy and scikit-learn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.svm import SVC

from unlearning.audit.result import AuditProbs
from unlearning.audit.sampling import seeded_halves, seeded_subset

LOSS_FLOOR = 1e-30


class AcceptancePolicy(BaseModel):
    """The thresholds of the three tests (module docstring); the defaults are the service's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    class_margin: float = Field(10.0, ge=0, le=100, description="Points above chance (100 / classes).")
    membership_tolerance: float = Field(
        5.0,
        ge=0,
        le=100,
        description="Points by which forgotten samples may look more member-like than unseen.",
    )
    membership_draws: int = Field(5, ge=1, le=100, description="Seeded SVM shadow draws averaged.")
    small_request_below: int = Field(
        20, ge=1, description="Requests smaller than this use the per-sample test."
    )
    per_sample_alpha: float = Field(0.05, gt=0, lt=1, description="Family-wise level of the per-sample test.")


@dataclass(frozen=True)
class Verdict:
    passed: bool
    test: str
    """class-accuracy | membership-gap | per-sample-loss"""
    reason: str
    figures: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(
    probs: AuditProbs, policy: AcceptancePolicy, *, seed: int = 0, family_size: int | None = None
) -> Verdict:
    """The verdict of `policy` on the new model's outputs `probs` for one request; `family_size`: the
    number of per-sample tests the caller decides on together (default: this request's samples)."""
    if probs.forget_class is not None:
        return _class_accuracy(probs, policy)
    if len(probs.forget) < policy.small_request_below:
        return _per_sample_loss(probs, policy, max(family_size or 0, len(probs.forget)))
    return _membership_gap(probs, policy, seed=seed)


def _class_accuracy(probs: AuditProbs, policy: AcceptancePolicy) -> Verdict:
    forget_class = probs.forget_class
    of_class = probs.test.labels == forget_class
    chance = 100.0 / probs.num_classes
    limit = chance + policy.class_margin
    figures: dict[str, Any] = {"held_out_images": int(of_class.sum()), "chance": chance, "limit": limit}
    if not of_class.any():
        reason = f"not measurable: needs held-out test images of class {forget_class}, has 0"
        return Verdict(False, "class-accuracy", reason, figures)
    accuracy = 100.0 * float(np.mean(probs.test.probs[of_class].argmax(axis=1) == forget_class))
    figures["accuracy"] = accuracy
    passed = accuracy <= limit
    reason = (
        f"accuracy on held-out images of class {forget_class} is {accuracy:.2f}%, "
        f"{'within' if passed else 'above'} chance {chance:.2f}% + margin {policy.class_margin:g} points"
    )
    return Verdict(passed, "class-accuracy", reason, figures)


def _losses(confidence: np.ndarray) -> np.ndarray:
    return -np.log(np.maximum(confidence, LOSS_FLOOR))


def _per_sample_loss(probs: AuditProbs, policy: AcceptancePolicy, family_size: int) -> Verdict:
    forget_losses = _losses(probs.forget.confidence)
    unseen_losses = np.sort(_losses(probs.test.confidence))
    count = len(forget_losses)
    threshold = policy.per_sample_alpha / family_size
    figures: dict[str, Any] = {
        "samples": count,
        "family_size": family_size,
        "unseen": len(unseen_losses),
        "p_value_threshold": threshold,
    }
    if len(unseen_losses) == 0:
        return Verdict(False, "per-sample-loss", "not measurable: needs unseen test samples, has 0", figures)
    at_most = np.searchsorted(unseen_losses, forget_losses, side="right")
    p_values = (at_most + 1) / (len(unseen_losses) + 1)
    figures["p_values"] = [float(p) for p in p_values]
    figures["smallest_p_value"] = float(p_values.min())
    passed = bool(p_values.min() >= threshold)
    reason = (
        f"smallest loss-rank p-value {p_values.min():.4f} {'>=' if passed else '<'} "
        f"{policy.per_sample_alpha:g} / {family_size} = {threshold:.5f} "
        f"among {len(unseen_losses)} unseen samples"
    )
    return Verdict(passed, "per-sample-loss", reason, figures)


def _membership_gap(probs: AuditProbs, policy: AcceptancePolicy, *, seed: int) -> Verdict:
    figures: dict[str, Any] = {"samples": len(probs.forget), "draws": policy.membership_draws}
    if len(probs.test) < 4 or len(probs.retain) == 0:
        sizes = f"has {len(probs.test)} and {len(probs.retain)}"
        reason = f"not measurable: needs >= 4 test and >= 1 retain samples, {sizes}"
        return Verdict(False, "membership-gap", reason, figures)
    retain, test, forget = probs.retain.confidence, probs.test.confidence, probs.forget.confidence
    forget_rates, unseen_rates = [], []
    for draw in range(policy.membership_draws):
        shadow_rows, unseen_rows = seeded_halves(len(test), seed + draw)
        members = retain[seeded_subset(len(retain), len(shadow_rows), seed + draw)]
        features = np.concatenate([members, test[shadow_rows]]).reshape(-1, 1)
        is_member = np.concatenate([np.ones(len(members)), np.zeros(len(shadow_rows))])
        svm = SVC(C=3, kernel="rbf", gamma="auto").fit(features, is_member)
        forget_rates.append(100.0 * float(np.mean(svm.predict(forget.reshape(-1, 1)) == 0)))
        unseen_rates.append(100.0 * float(np.mean(svm.predict(test[unseen_rows].reshape(-1, 1)) == 0)))
    gaps = np.asarray(unseen_rates) - np.asarray(forget_rates)
    figures.update(
        forget_nonmember_rate={"mean": float(np.mean(forget_rates)), "std": float(np.std(forget_rates))},
        unseen_nonmember_rate={"mean": float(np.mean(unseen_rates)), "std": float(np.std(unseen_rates))},
        gap={"mean": float(gaps.mean()), "std": float(gaps.std())},
        tolerance=policy.membership_tolerance,
    )
    passed = bool(gaps.mean() <= policy.membership_tolerance)
    reason = (
        f"forgotten samples called non-members {np.mean(forget_rates):.2f}% "
        f"vs unseen {np.mean(unseen_rates):.2f}% "
        f"(gap {gaps.mean():.2f} +- {gaps.std():.2f} points over {policy.membership_draws} draws; tolerance "
        f"{policy.membership_tolerance:g})"
    )
    return Verdict(passed, "membership-gap", reason, figures)
