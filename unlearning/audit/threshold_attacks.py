"""The four metric-based attacks of Song & Mittal 2021 with per-class thresholds.

Each attack turns a softmax row into a membership score (higher = more member-like): correctness,
confidence p_y, negated entropy, negated modified entropy. For every class a threshold is chosen on
shadow data (known members vs known non-members of that class) to maximise the balanced accuracy
(TPR + TNR) / 2; a sample is called a member when its score >= its class's threshold. Correctness
needs no threshold: correct means member.

A class with no shadow member or no shadow non-member (in class-wise forgetting the retain set has
no sample of the forgotten class) falls back to one threshold chosen on all shadow data; such classes
are listed in `fallback_classes`. An empty set (no evaluation non-member, say) leaves every attack
not measurable, with the reason, rather than raising.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from unlearning.audit.measurable import not_measurable
from unlearning.audit.scores import (
    FloatArray,
    IntArray,
    correctness,
    entropy,
    modified_entropy,
    true_label_prob,
)

BoolArray = npt.NDArray[np.bool_]
MembershipScore = Callable[[FloatArray, IntArray], FloatArray]

ATTACK_SCORES: dict[str, MembershipScore] = {
    "correctness": correctness,
    "confidence": true_label_prob,
    "entropy": lambda probs, labels: -entropy(probs),
    "modified_entropy": lambda probs, labels: -modified_entropy(probs, labels),
}
"""Attack name -> membership score (higher = member). Entropies are negated: members have low entropy."""

UNTHRESHOLDED_ATTACKS = frozenset({"correctness"})


def best_threshold(member_scores: FloatArray, nonmember_scores: FloatArray) -> float:
    """The threshold t maximising (mean(member >= t) + mean(nonmember < t)) / 2.

    Candidates are the observed scores; among equally good ones the smallest is returned.
    """
    if len(member_scores) == 0 or len(nonmember_scores) == 0:
        raise ValueError("a threshold needs at least one member and one non-member score")
    candidates = np.unique(np.concatenate([member_scores, nonmember_scores]))
    n_members, n_nonmembers = len(member_scores), len(nonmember_scores)
    true_positives = n_members - np.searchsorted(np.sort(member_scores), candidates, side="left")
    true_negatives = np.searchsorted(np.sort(nonmember_scores), candidates, side="left")
    # (TP / n_m + TN / n_n) / 2 scaled by 2 n_m n_n: integers, so equally good thresholds tie exactly
    balanced_accuracy_scaled = true_positives * n_nonmembers + true_negatives * n_members
    return float(candidates[np.argmax(balanced_accuracy_scaled)])


def per_class_thresholds(
    member_scores: FloatArray,
    member_labels: IntArray,
    nonmember_scores: FloatArray,
    nonmember_labels: IntArray,
    num_classes: int,
) -> tuple[list[float], list[int]]:
    """One threshold per class, and the classes that had to use the all-classes threshold."""
    global_threshold = best_threshold(member_scores, nonmember_scores)
    thresholds: list[float] = []
    fallback_classes: list[int] = []
    for c in range(num_classes):
        class_members = member_scores[member_labels == c]
        class_nonmembers = nonmember_scores[nonmember_labels == c]
        if len(class_members) and len(class_nonmembers):
            thresholds.append(best_threshold(class_members, class_nonmembers))
        else:
            thresholds.append(global_threshold)
            fallback_classes.append(c)
    return thresholds, fallback_classes


@dataclass(frozen=True)
class ThresholdAttackResult:
    name: str
    accuracy_pct: float | None
    """Balanced accuracy on the evaluation sets: (% forget called member + % non-members called not) / 2."""
    forget_member_pct: float | None
    """Percent of forget samples called member (lower after good unlearning)."""
    nonmember_member_pct: float | None
    """Percent of evaluation non-members called member (the attack's false-positive rate)."""
    thresholds: list[float] | None
    """Per-class thresholds on the attack's score; None for correctness."""
    fallback_classes: list[int]
    reason: str | None = None
    """Why the percentages are None (a set too small to fit or score the attack), else None."""


def unmeasured_attacks(reason: str) -> dict[str, ThresholdAttackResult]:
    """Every attack, not measurable for `reason`."""
    return {name: ThresholdAttackResult(name, None, None, None, None, [], reason) for name in ATTACK_SCORES}


def predict_member(
    name: str, probs: FloatArray, labels: IntArray, thresholds: list[float] | None
) -> BoolArray:
    """True where attack `name` calls the sample a member."""
    scores = ATTACK_SCORES[name](probs, labels)
    if thresholds is None:
        return scores >= 1.0
    return scores >= np.asarray(thresholds)[labels]


def metric_attacks(
    shadow_members: tuple[FloatArray, IntArray],
    shadow_nonmembers: tuple[FloatArray, IntArray],
    forget: tuple[FloatArray, IntArray],
    eval_nonmembers: tuple[FloatArray, IntArray],
    num_classes: int,
) -> dict[str, ThresholdAttackResult]:
    """Fit every attack on the shadow pair, then attack forget (members) vs `eval_nonmembers`.

    Each argument is a (probabilities N x C, labels N) pair; with an empty one, no attack is measurable.
    """
    for set_name, (_, labels) in (
        ("shadow member", shadow_members),
        ("shadow non-member", shadow_nonmembers),
        ("forget", forget),
        ("evaluation non-member", eval_nonmembers),
    ):
        if len(labels) == 0:
            return unmeasured_attacks(not_measurable(f"at least 1 {set_name} sample", 0))
    results: dict[str, ThresholdAttackResult] = {}
    for name, score in ATTACK_SCORES.items():
        thresholds: list[float] | None = None
        fallback_classes: list[int] = []
        if name not in UNTHRESHOLDED_ATTACKS:
            thresholds, fallback_classes = per_class_thresholds(
                score(*shadow_members),
                shadow_members[1],
                score(*shadow_nonmembers),
                shadow_nonmembers[1],
                num_classes,
            )
        forget_member = float(np.mean(predict_member(name, *forget, thresholds)))
        nonmember_member = float(np.mean(predict_member(name, *eval_nonmembers, thresholds)))
        results[name] = ThresholdAttackResult(
            name=name,
            accuracy_pct=100.0 * (forget_member + (1.0 - nonmember_member)) / 2.0,
            forget_member_pct=100.0 * forget_member,
            nonmember_member_pct=100.0 * nonmember_member,
            thresholds=thresholds,
            fallback_classes=fallback_classes,
        )
    return results
