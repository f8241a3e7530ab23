"""MIA-efficacy as in Jia et al. 2023 (Unlearn-Sparse), the figure the DAU paper reports.

An RBF SVM learns, from the true-label probability alone, to tell retain samples (members, label 1)
from test samples (non-members, label 0); MIA-efficacy is the percentage of forget samples it calls
non-members. Retraining from scratch scores high; a model that still remembers the forget set scores low.
"""

from dataclasses import dataclass

import numpy as np
from sklearn.svm import SVC

from unlearning.audit.sampling import seeded_subset
from unlearning.audit.scores import FloatArray


@dataclass(frozen=True)
class SvmMia:
    efficacy: float
    """Percent of forget samples predicted non-member."""
    n_shadow_members: int
    n_shadow_nonmembers: int
    n_forget: int


def svm_mia_efficacy(
    retain_confidence: FloatArray,
    test_confidence: FloatArray,
    forget_confidence: FloatArray,
    *,
    seed: int = 0,
) -> SvmMia:
    """Each argument holds p_y per sample of that split.

    The members are a seeded random subset of retain, as many as the test samples (all of retain if
    it is smaller), so the SVM trains on balanced classes.
    """
    for name, values in (
        ("retain", retain_confidence),
        ("test", test_confidence),
        ("forget", forget_confidence),
    ):
        if len(values) == 0:
            raise ValueError(f"SVM MIA needs a non-empty {name} set")
    members = np.asarray(retain_confidence)[seeded_subset(len(retain_confidence), len(test_confidence), seed)]
    features = np.concatenate([members, test_confidence]).reshape(-1, 1)
    is_member = np.concatenate([np.ones(len(members)), np.zeros(len(test_confidence))])
    svm = SVC(C=3, kernel="rbf", gamma="auto")
    svm.fit(features, is_member)
    predicted_member = svm.predict(np.asarray(forget_confidence).reshape(-1, 1))
    return SvmMia(
        efficacy=float(100.0 * np.mean(predicted_member == 0)),
        n_shadow_members=len(members),
        n_shadow_nonmembers=len(test_confidence),
        n_forget=len(forget_confidence),
    )
