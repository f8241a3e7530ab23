"""Per-class threshold choice and the four metric attacks on hand-made shadow and target sets."""

import numpy as np
import pytest

from unlearning.audit.threshold_attacks import best_threshold, metric_attacks, per_class_thresholds


def test_best_threshold_maximises_balanced_accuracy_and_breaks_ties_low() -> None:
    members, nonmembers = np.array([0.9, 0.8, 0.6]), np.array([0.7, 0.5, 0.4])
    # (TPR + TNR) / 2 per candidate: 0.4 -> (1 + 0)/2, 0.5 -> (1 + 1/3)/2, 0.6 -> (1 + 2/3)/2 = 0.833,
    # 0.7 -> (2/3 + 2/3)/2, 0.8 -> (2/3 + 1)/2 = 0.833, 0.9 -> (1/3 + 1)/2: tie between 0.6 and 0.8
    assert best_threshold(members, nonmembers) == pytest.approx(0.6)
    assert best_threshold(np.array([0.9]), np.array([0.1])) == pytest.approx(0.9)


def test_per_class_thresholds_fall_back_where_a_class_lacks_shadow_data() -> None:
    member_scores, member_labels = np.array([0.9, 0.8, 0.6]), np.array([0, 0, 1])
    nonmember_scores, nonmember_labels = np.array([0.3, 0.7, 0.5, 0.2]), np.array([0, 1, 1, 2])
    thresholds, fallback = per_class_thresholds(
        member_scores, member_labels, nonmember_scores, nonmember_labels, 3
    )
    # class 0: {0.9, 0.8} vs {0.3} -> 0.8 separates perfectly; class 1: {0.6} vs {0.7, 0.5} -> 0.6
    # (TPR 1, TNR 1/2); class 2 has no member: the all-class threshold, where 0.6 scores (1 + 3/4)/2
    assert thresholds == pytest.approx([0.8, 0.6, 0.6])
    assert fallback == [2]


def rows(*pairs: tuple[float, int]) -> tuple[np.ndarray, np.ndarray]:
    """Two-class softmax rows from (probability of class 0, label)."""
    p0 = np.array([p for p, _ in pairs])
    return np.stack([p0, 1 - p0], axis=1), np.array([y for _, y in pairs])


def test_confidence_and_correctness_attacks_on_hand_made_sets() -> None:
    shadow_members = rows((0.9, 0), (0.2, 1))  # p_y 0.9 (class 0), 0.8 (class 1)
    shadow_nonmembers = rows((0.6, 0), (0.5, 1))  # p_y 0.6, 0.5 -> thresholds 0.9 and 0.8
    forget = rows((0.95, 0), (0.3, 1), (0.85, 0), (0.1, 1))  # p_y 0.95 M, 0.7 N, 0.85 N, 0.9 M; all correct
    eval_nonmembers = rows((0.92, 0), (0.55, 1))  # p_y 0.92 M (correct), 0.45 N (wrong)
    results = metric_attacks(shadow_members, shadow_nonmembers, forget, eval_nonmembers, num_classes=2)

    confidence = results["confidence"]
    assert confidence.thresholds == pytest.approx([0.9, 0.8])
    assert confidence.forget_member_pct == pytest.approx(50.0)
    assert confidence.nonmember_member_pct == pytest.approx(50.0)
    assert confidence.accuracy_pct == pytest.approx(50.0)

    correctness = results["correctness"]
    assert correctness.thresholds is None
    assert correctness.forget_member_pct == pytest.approx(100.0)
    assert correctness.nonmember_member_pct == pytest.approx(50.0)
    assert correctness.accuracy_pct == pytest.approx(75.0)

    # entropy scores are -H: class 0 member H([0.9, 0.1]) = 0.0948245 + 0.2302585 = 0.3250830 beats
    # the non-member's H([0.6, 0.4]) = 0.3064954 + 0.3665163, so the class-0 threshold is -0.3250830
    assert results["entropy"].thresholds is not None
    assert results["entropy"].thresholds[0] == pytest.approx(-0.3250830, abs=1e-6)
    assert set(results) == {"correctness", "confidence", "entropy", "modified_entropy"}


def test_an_empty_set_leaves_every_attack_not_measurable_with_the_reason() -> None:
    some = rows((0.9, 0))
    empty = (np.zeros((0, 2)), np.zeros(0, dtype=np.int64))
    results = metric_attacks(some, some, some, empty, num_classes=2)
    assert set(results) == {"correctness", "confidence", "entropy", "modified_entropy"}
    for result in results.values():
        assert result.accuracy_pct is None and result.forget_member_pct is None
        assert result.reason == "not measurable: needs at least 1 evaluation non-member sample, has 0"


def test_one_forget_sample_is_scored() -> None:
    """One member is enough to score an attack fitted on shadow data: 0 or 100% called member."""
    members, nonmembers = rows((0.95, 0), (0.05, 1)), rows((0.6, 0), (0.45, 1))  # p_y 0.95 vs 0.6, 0.55
    results = metric_attacks(members, nonmembers, rows((0.01, 1)), rows((0.5, 0)), num_classes=2)
    assert results["confidence"].forget_member_pct == pytest.approx(100.0)
    assert results["confidence"].accuracy_pct == pytest.approx(100.0)
    assert results["confidence"].reason is None
