"""Per-sample membership scores from softmax rows (Song & Mittal 2021, "Systematic Evaluation of
Privacy Risks of Machine Learning Models").

Every function takes probabilities `p` (N x C) and integer labels `y` (N) and returns one value per
row. Members (training samples) tend to be classified correctly, with a high true-label probability
and a low (modified) entropy.
"""

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

LOG_FLOOR = 1e-30
"""log(p) is taken as log(max(p, LOG_FLOOR)), so p = 0 gives a large finite value, never inf or NaN."""


def _safe_log(values: FloatArray) -> FloatArray:
    return np.log(np.maximum(values, LOG_FLOOR))


def check_probs(probs: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[FloatArray, IntArray]:
    """Validate shapes and return float64 probabilities and int64 labels."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if p.ndim != 2:
        raise ValueError(f"probs must be N x C, got shape {p.shape}")
    if y.shape != (p.shape[0],):
        raise ValueError(f"labels must have shape ({p.shape[0]},), got {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must lie in [0, {p.shape[1]}), got range [{y.min()}, {y.max()}]")
    if not np.isfinite(p).all():
        raise ValueError("probs contain NaN or infinite values")
    return p, y


def true_label_prob(probs: npt.ArrayLike, labels: npt.ArrayLike) -> FloatArray:
    """p_y: the probability each row gives its own label (the 'confidence' score)."""
    p, y = check_probs(probs, labels)
    return p[np.arange(len(y)), y]


def correctness(probs: npt.ArrayLike, labels: npt.ArrayLike) -> FloatArray:
    """1.0 where argmax p == y, else 0.0."""
    p, y = check_probs(probs, labels)
    return (p.argmax(axis=1) == y).astype(np.float64)


def entropy(probs: npt.ArrayLike) -> FloatArray:
    """H(p) = -sum_i p_i log p_i, per row."""
    p = np.asarray(probs, dtype=np.float64)
    return -(p * _safe_log(p)).sum(axis=1)


def modified_entropy(probs: npt.ArrayLike, labels: npt.ArrayLike) -> FloatArray:
    """Mentr(p, y) = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i), per row.

    Each row uses its own label only: the true-label term is picked with (row, y_row) pairs, never by
    indexing whole columns with the label vector (which would treat every label present in the batch
    as the true label of every row).
    """
    p, y = check_probs(probs, labels)
    rows = np.arange(len(y))
    is_true_label = np.zeros_like(p, dtype=bool)
    is_true_label[rows, y] = True
    p_y = p[rows, y]
    true_term = -(1.0 - p_y) * _safe_log(p_y)
    other_terms = np.where(is_true_label, 0.0, -p * _safe_log(1.0 - p)).sum(axis=1)
    return true_term + other_terms
