"""Per-row membership scores against values worked out by hand."""

import math

import numpy as np
import pytest

from unlearning.audit.scores import correctness, entropy, modified_entropy, true_label_prob

PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
LABELS = np.array([0, 1])

# Mentr(p, y) = -(1 - p_y) ln p_y - sum_{i != y} p_i ln(1 - p_i)
# row 0, y = 0: 0.3 * 0.3566749 + 0.2 * 0.2231436 + 0.1 * 0.1053605 = 0.1070025 + 0.0446287 + 0.0105361
ROW0_MENTR = 0.1621673
# row 1, y = 1: 0.4 * 0.5108256 + 0.1 * 0.1053605 + 0.3 * 0.3566749 = 0.2043302 + 0.0105361 + 0.1070025
ROW1_MENTR = 0.3218688


def column_indexed_mentr(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The bug to guard against: `[:, labels]` marks every label in the batch as every row's true label."""
    log_p, log_1mp = np.log(np.maximum(probs, 1e-30)), np.log(np.maximum(1 - probs, 1e-30))
    modified_probs, modified_logs = probs.copy(), log_1mp.copy()
    modified_probs[:, labels] = 1 - probs[:, labels]
    modified_logs[:, labels] = log_p[:, labels]
    return -(modified_probs * modified_logs).sum(axis=1)


def test_modified_entropy_matches_hand_computed_rows() -> None:
    assert modified_entropy(PROBS, LABELS) == pytest.approx([ROW0_MENTR, ROW1_MENTR], abs=1e-6)


def test_modified_entropy_is_per_row_not_per_column() -> None:
    buggy = column_indexed_mentr(PROBS, LABELS)
    # row 0 under the bug also treats class 1 as true: 0.3*0.3566749 + 0.8*1.6094379 + 0.1*0.1053605
    assert buggy[0] == pytest.approx(1.4050888, abs=1e-6)
    ours = modified_entropy(PROBS, LABELS)
    assert not np.allclose(ours, buggy)
    # a row's value must not depend on which other rows share the batch
    for row in range(len(LABELS)):
        alone = modified_entropy(PROBS[row : row + 1], LABELS[row : row + 1])
        assert alone[0] == pytest.approx(ours[row], abs=1e-12)


def test_modified_entropy_is_zero_for_a_certain_correct_prediction() -> None:
    certain = np.array([[1.0, 0.0, 0.0]])
    assert modified_entropy(certain, np.array([0]))[0] == pytest.approx(0.0, abs=1e-12)
    # certain but wrong: -(1 - 0) ln(max(0, 1e-30)) - 1 * ln(max(1 - 1, 1e-30)) = 2 * 69.0776
    wrong = modified_entropy(certain, np.array([1]))[0]
    assert wrong == pytest.approx(2 * 30 * math.log(10), rel=1e-9)


def test_entropy_confidence_and_correctness() -> None:
    # H([0.5, 0.5, 0]) = ln 2; H([0.7, 0.2, 0.1]) = 0.7*0.3566749 + 0.2*1.6094379 + 0.1*2.3025851
    probs = np.array([[0.5, 0.5, 0.0], [0.7, 0.2, 0.1]])
    assert entropy(probs) == pytest.approx([math.log(2), 0.8018185], abs=1e-6)
    assert true_label_prob(PROBS, np.array([2, 1])) == pytest.approx([0.1, 0.6])
    assert correctness(PROBS, np.array([0, 2])).tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    ("probs", "labels", "message"),
    [
        (np.ones(3), np.zeros(3), "N x C"),
        (np.ones((2, 3)), np.zeros(3), "labels must have shape"),
        (np.ones((2, 3)), np.array([0, 3]), r"labels must lie in \[0, 3\)"),
        (np.array([[np.nan, 1.0]]), np.array([0]), "NaN"),
    ],
)
def test_bad_inputs_are_refused(probs: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        modified_entropy(probs, labels)
