"""Seeded index choices shared by the attacks, so one audit seed reproduces every subset."""

import numpy as np

from unlearning.audit.scores import IntArray


def seeded_subset(n_total: int, n_wanted: int, seed: int) -> IntArray:
    """min(n_wanted, n_total) distinct indices of range(n_total), sorted, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(n_total, size=min(n_wanted, n_total), replace=False)
    return np.sort(chosen).astype(np.int64)


def seeded_halves(n_total: int, seed: int) -> tuple[IntArray, IntArray]:
    """A seeded split of range(n_total) into two disjoint halves (the first gets the odd one)."""
    if n_total < 2:
        raise ValueError(f"need at least 2 samples to split into halves, got {n_total}")
    order = np.random.default_rng(seed).permutation(n_total).astype(np.int64)
    first = (n_total + 1) // 2
    return np.sort(order[:first]), np.sort(order[first:])
