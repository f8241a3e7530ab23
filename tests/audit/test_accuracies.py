"""UA / RA / TA on tiny probability matrices whose predictions are read off by eye."""

import numpy as np
import pytest

from unlearning.audit.accuracies import accuracy_pct, compute_accuracies, per_class_accuracy


def one_hot_like(predicted: list[int], num_classes: int = 3) -> np.ndarray:
    """Rows with 0.8 on the predicted class and the rest spread evenly."""
    probs = np.full((len(predicted), num_classes), 0.2 / (num_classes - 1))
    probs[np.arange(len(predicted)), predicted] = 0.8
    return probs


FORGET = (one_hot_like([0, 1, 2, 0]), np.array([0, 1, 2, 1]))  # 3 of 4 right -> UA = 25
RETAIN = (one_hot_like([0, 1, 2, 2, 1]), np.array([0, 1, 2, 2, 0]))  # 4 of 5 -> RA = 80
TEST = (one_hot_like([0, 1, 1, 2]), np.array([0, 0, 1, 2]))  # 3 of 4 -> 75; class 0: 1 of 2
VAL = (one_hot_like([2, 2]), np.array([2, 1]))  # 1 of 2 -> 50


def test_random_forgetting_accuracies() -> None:
    acc = compute_accuracies(FORGET, RETAIN, TEST, VAL)
    assert (acc.UA, acc.RA, acc.TA, acc.val_accuracy) == pytest.approx((25.0, 80.0, 75.0, 50.0))
    assert acc.forget_class_test_accuracy is None


def test_classwise_ta_leaves_out_the_forgotten_class() -> None:
    acc = compute_accuracies(FORGET, RETAIN, TEST, forget_class=0)
    assert acc.TA == pytest.approx(100.0)  # classes 1 and 2: both right
    assert acc.forget_class_test_accuracy == pytest.approx(50.0)  # class 0: one of two right
    assert acc.val_accuracy is None


def test_per_class_accuracy_marks_missing_classes() -> None:
    rows = per_class_accuracy(4, FORGET, RETAIN, TEST)
    assert [r.forget for r in rows] == pytest.approx([100.0, 50.0, 100.0, None])
    assert [r.retain for r in rows] == pytest.approx([50.0, 100.0, 100.0, None])
    assert [r.test for r in rows] == pytest.approx([50.0, 100.0, 100.0, None])


def test_empty_set_has_no_accuracy() -> None:
    with pytest.raises(ValueError, match="empty forget set"):
        accuracy_pct(np.zeros((0, 3)), np.zeros(0, dtype=np.int64), split="forget")
