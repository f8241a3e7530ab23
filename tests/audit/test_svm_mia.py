"""SVM MIA-efficacy on separable toy data, where the answer is obvious."""

import numpy as np
import pytest

from unlearning.audit.svm_mia import svm_mia_efficacy

rng = np.random.default_rng(7)
RETAIN = 0.99 + rng.uniform(-0.005, 0.005, size=60)  # members: confident
TEST = 0.3 + rng.uniform(-0.05, 0.05, size=25)  # non-members: unsure


def test_forget_that_looks_like_test_is_fully_forgotten() -> None:
    result = svm_mia_efficacy(RETAIN, TEST, np.full(10, 0.3), seed=0)
    assert result.efficacy == pytest.approx(100.0)
    assert (result.n_shadow_members, result.n_shadow_nonmembers, result.n_forget) == (25, 25, 10)


def test_forget_that_looks_like_retain_is_not_forgotten() -> None:
    assert svm_mia_efficacy(RETAIN, TEST, np.full(10, 0.99), seed=0).efficacy == pytest.approx(0.0)


def test_half_forgotten_set() -> None:
    forget = np.array([0.3, 0.31, 0.29, 0.99, 0.985, 0.995, 0.992, 0.28])  # 4 unsure of 8
    assert svm_mia_efficacy(RETAIN, TEST, forget, seed=3).efficacy == pytest.approx(50.0)


def test_small_retain_is_used_whole() -> None:
    assert svm_mia_efficacy(RETAIN[:5], TEST, np.full(4, 0.3), seed=0).n_shadow_members == 5


def test_empty_set_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty test"):
        svm_mia_efficacy(RETAIN, np.array([]), np.full(4, 0.3))
