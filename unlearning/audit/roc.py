"""The attacker's view: ROC of a membership score, members vs non-members.

AUC summarises the whole curve; max |TPR - FPR| is the best advantage of any threshold; TPR at a low
FPR (1%, 0.1%) is what matters for privacy (Carlini et al. 2022): an attack that confidently
identifies a few members is a real leak even when the AUC looks harmless. A TPR at FPR f rests on at
least 1/f non-members (one false positive); with fewer it is reported as not measurable.
"""

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from unlearning.audit.measurable import not_measurable
from unlearning.audit.scores import FloatArray, IntArray

LOW_FPRS = (0.01, 0.001)


@dataclass(frozen=True)
class TprAtFpr:
    fpr_target: float
    tpr: float | None
    """Largest TPR of any threshold whose FPR <= fpr_target; None when not measurable."""
    fpr: float | None
    """The FPR actually reached by that threshold."""
    true_positives: int | None
    false_positives: int | None
    n_members: int
    n_nonmembers: int
    reason: str | None
    """Why tpr is None, else None."""


@dataclass(frozen=True)
class RocSummary:
    n_members: int
    n_nonmembers: int
    auc: float | None
    max_tpr_fpr_gap: float | None
    """max over thresholds of |TPR - FPR|."""
    tpr_at_low_fpr: list[TprAtFpr]
    reason: str | None
    """Why auc is None (an empty side: 'not measurable: needs at least 1 member, has 0'), else None."""


def roc_points(member_scores: FloatArray, nonmember_scores: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(fpr, tpr) at every distinct threshold, members as the positive class (score >= t means member)."""
    scores = np.concatenate([member_scores, nonmember_scores])
    is_member = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    fpr, tpr, _ = roc_curve(is_member, scores, drop_intermediate=False)
    return fpr, tpr


def unmeasured(fpr_target: float, n_members: int, n_nonmembers: int, reason: str) -> TprAtFpr:
    return TprAtFpr(
        fpr_target=fpr_target,
        tpr=None,
        fpr=None,
        true_positives=None,
        false_positives=None,
        n_members=n_members,
        n_nonmembers=n_nonmembers,
        reason=reason,
    )


def tpr_at_fpr(
    fpr: FloatArray, tpr: FloatArray, fpr_target: float, n_members: int, n_nonmembers: int
) -> TprAtFpr:
    needed = int(np.ceil(1.0 / fpr_target - 1e-9))
    if n_nonmembers < needed:
        reason = not_measurable(f"at least {needed} non-members", n_nonmembers)
        return unmeasured(fpr_target, n_members, n_nonmembers, reason)
    allowed = fpr <= fpr_target + 1e-12
    best = int(np.argmax(np.where(allowed, tpr, -1.0)))
    return TprAtFpr(
        fpr_target=fpr_target,
        tpr=float(tpr[best]),
        fpr=float(fpr[best]),
        true_positives=int(round(tpr[best] * n_members)),
        false_positives=int(round(fpr[best] * n_nonmembers)),
        n_members=n_members,
        n_nonmembers=n_nonmembers,
        reason=None,
    )


def roc_summary(
    member_scores: FloatArray, nonmember_scores: FloatArray, fpr_targets: tuple[float, ...] = LOW_FPRS
) -> RocSummary:
    n_members, n_nonmembers = len(member_scores), len(nonmember_scores)
    if n_members == 0 or n_nonmembers == 0:
        reason = (
            not_measurable("at least 1 member", n_members)
            if n_members == 0
            else not_measurable("at least 1 non-member", n_nonmembers)
        )
        return RocSummary(
            n_members=n_members,
            n_nonmembers=n_nonmembers,
            auc=None,
            max_tpr_fpr_gap=None,
            tpr_at_low_fpr=[unmeasured(f, n_members, n_nonmembers, reason) for f in fpr_targets],
            reason=reason,
        )
    fpr, tpr = roc_points(member_scores, nonmember_scores)
    is_member = np.concatenate([np.ones(n_members), np.zeros(n_nonmembers)])
    return RocSummary(
        n_members=n_members,
        n_nonmembers=n_nonmembers,
        auc=float(roc_auc_score(is_member, np.concatenate([member_scores, nonmember_scores]))),
        max_tpr_fpr_gap=float(np.max(np.abs(tpr - fpr))),
        tpr_at_low_fpr=[tpr_at_fpr(fpr, tpr, f, n_members, n_nonmembers) for f in fpr_targets],
        reason=None,
    )


@dataclass(frozen=True)
class ClassRoc:
    class_index: int
    n_members: int
    n_nonmembers: int
    auc: float | None
    max_tpr_fpr_gap: float | None
    reason: str | None = None
    """Why auc is None (no member or no non-member of the class: the rule for most classes of a
    forget set of a few samples), else None."""


def per_class_roc(
    member_scores: FloatArray,
    member_labels: IntArray,
    nonmember_scores: FloatArray,
    nonmember_labels: IntArray,
    num_classes: int,
) -> list[ClassRoc]:
    """The attack restricted to each class: members and non-members of class c only."""
    rows = []
    for c in range(num_classes):
        summary = roc_summary(member_scores[member_labels == c], nonmember_scores[nonmember_labels == c], ())
        rows.append(
            ClassRoc(
                c,
                summary.n_members,
                summary.n_nonmembers,
                summary.auc,
                summary.max_tpr_fpr_gap,
                summary.reason,
            )
        )
    return rows
