"""Synthetic softmax outputs for audit tests: members get a larger true-class margin than non-members."""

from collections.abc import Callable

import numpy as np
import pytest

from unlearning.audit import AuditProbs, SplitProbs


def synthetic_split(
    rng: np.random.Generator, n: int, num_classes: int, margin: float, classes: list[int] | None = None
) -> SplitProbs:
    """Softmax of Gaussian logits with `margin` (plus unit noise) added to the true class."""
    labels = rng.choice(classes if classes is not None else num_classes, size=n)
    logits = rng.normal(size=(n, num_classes))
    logits[np.arange(n), labels] += margin + rng.normal(size=n)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return SplitProbs.of(probs / probs.sum(axis=1, keepdims=True), labels)


def synthetic_audit_probs(
    *, forget_margin: float, seed: int = 0, num_classes: int = 4, forget_class: int | None = None
) -> AuditProbs:
    """Retain is memorised (margin 6), val/test are not (margin 2); forget sits at `forget_margin`."""
    rng = np.random.default_rng(seed)
    others = [c for c in range(num_classes) if c != forget_class]
    return AuditProbs(
        forget=synthetic_split(
            rng, 80, num_classes, forget_margin, [forget_class] if forget_class is not None else None
        ),
        retain=synthetic_split(rng, 600, num_classes, 6.0, others if forget_class is not None else None),
        val=synthetic_split(rng, 150, num_classes, 2.0),
        test=synthetic_split(rng, 200, num_classes, 2.0),
        num_classes=num_classes,
        forget_class=forget_class,
    )


@pytest.fixture
def make_audit_probs() -> Callable[..., AuditProbs]:
    return synthetic_audit_probs


@pytest.fixture
def before_and_after() -> tuple[AuditProbs, AuditProbs]:
    """The same request before unlearning (forget memorised) and after (forget looks held out)."""
    return synthetic_audit_probs(forget_margin=6.0, seed=1), synthetic_audit_probs(forget_margin=2.0, seed=1)
