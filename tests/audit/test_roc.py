"""AUC, max |TPR - FPR| and TPR at low FPR on crafted score lists."""

import numpy as np
import pytest

from unlearning.audit.roc import per_class_roc, roc_summary


def test_auc_and_max_gap_by_hand() -> None:
    members = np.array([0.9, 0.8, 0.7, 0.6])
    nonmembers = np.array([0.75, 0.5, 0.4, 0.3, 0.2])
    summary = roc_summary(members, nonmembers)
    # pairs member > non-member: 5 + 5 + 4 + 4 = 18 of 20
    assert summary.auc == pytest.approx(0.9)
    # threshold 0.6 catches all members and one non-member: TPR 1, FPR 0.2
    assert summary.max_tpr_fpr_gap == pytest.approx(0.8)
    for point in summary.tpr_at_low_fpr:
        assert point.tpr is None
    assert summary.tpr_at_low_fpr[0].reason == "not measurable: needs at least 100 non-members, has 5"


def test_tpr_at_one_percent_fpr_with_its_counts() -> None:
    nonmembers = np.arange(200) / 400  # 0 .. 0.4975; the top two are 0.4975 and 0.495
    members = np.array([0.9, 0.8, 0.7, 0.496, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01])
    at_1pct, at_01pct = roc_summary(members, nonmembers).tpr_at_low_fpr
    # 1% of 200 = 2 false positives allowed; threshold 0.496 already catches 4 members with one (0.4975),
    # and the next member (0.3) would bring in 79 more non-members
    assert (at_1pct.tpr, at_1pct.fpr) == pytest.approx((0.4, 0.005))
    assert (at_1pct.true_positives, at_1pct.false_positives) == (4, 1)
    assert (at_1pct.n_members, at_1pct.n_nonmembers) == (10, 200)
    assert at_01pct.tpr is None
    assert at_01pct.reason == "not measurable: needs at least 1000 non-members, has 200"


def test_tpr_at_a_tenth_of_a_percent_counts_the_boundary() -> None:
    nonmembers = np.arange(1000) / 2000  # top: 0.4995, then 0.499
    members = np.array([0.9, 0.4996, 0.4992])
    at_01pct = roc_summary(members, nonmembers).tpr_at_low_fpr[1]
    # one false positive (0.4995) is exactly 0.1%: all three members are above 0.499
    assert (at_01pct.tpr, at_01pct.fpr) == pytest.approx((1.0, 0.001))
    assert (at_01pct.true_positives, at_01pct.false_positives) == (3, 1)


def test_inverted_attack_shows_in_the_gap() -> None:
    summary = roc_summary(np.array([0.1, 0.2]), np.array([0.8, 0.9, 0.7]))
    assert summary.auc == pytest.approx(0.0)
    assert summary.max_tpr_fpr_gap == pytest.approx(1.0)


def test_per_class_breakdown() -> None:
    members, member_labels = np.array([0.9, 0.4, 0.6]), np.array([0, 0, 1])
    nonmembers, nonmember_labels = np.array([0.5, 0.7, 0.2]), np.array([0, 1, 2])
    by_class = per_class_roc(members, member_labels, nonmembers, nonmember_labels, 3)
    # class 0: {0.9, 0.4} vs {0.5} -> 1 of 2 pairs; class 1: {0.6} vs {0.7} -> 0; class 2: no member
    assert [row.auc for row in by_class] == [pytest.approx(0.5), pytest.approx(0.0), None]
    assert [(row.n_members, row.n_nonmembers) for row in by_class] == [(2, 1), (1, 1), (0, 1)]


def test_empty_side_gives_a_reason_not_nan() -> None:
    summary = roc_summary(np.array([]), np.array([0.1, 0.2]))
    reason = "not measurable: needs at least 1 member, has 0"
    assert summary.auc is None and summary.reason == reason
    assert all(point.reason == reason for point in summary.tpr_at_low_fpr)
    no_nonmembers = roc_summary(np.array([0.5]), np.array([]))
    assert no_nonmembers.reason == "not measurable: needs at least 1 non-member, has 0"


def test_a_class_without_members_says_why_it_has_no_auc() -> None:
    by_class = per_class_roc(np.array([0.9]), np.array([1]), np.array([0.2, 0.3]), np.array([0, 1]), 3)
    assert [row.auc is None for row in by_class] == [True, False, True]
    assert by_class[0].reason == "not measurable: needs at least 1 member, has 0"
    assert by_class[1].reason is None and by_class[1].auc == pytest.approx(1.0)
    assert by_class[2].reason == "not measurable: needs at least 1 member, has 0"  # no sample at all
