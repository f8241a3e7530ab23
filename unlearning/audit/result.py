"""The typed audit result: what the protocol measured on one model, and the probabilities it used."""

from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt

from unlearning.audit.accuracies import ClassAccuracy
from unlearning.audit.jsonable import JSON_EXCLUDE, to_jsonable
from unlearning.audit.roc import ClassRoc, RocSummary
from unlearning.audit.scores import FloatArray, IntArray, check_probs, true_label_prob
from unlearning.audit.svm_mia import SvmMia
from unlearning.audit.threshold_attacks import ThresholdAttackResult

SPLIT_NAMES = ("forget", "retain", "val", "test")


@dataclass(frozen=True)
class SplitProbs:
    """Softmax probabilities (N x C) of one split and its labels (N)."""

    probs: FloatArray
    labels: IntArray

    @classmethod
    def of(cls, probs: npt.ArrayLike, labels: npt.ArrayLike) -> "SplitProbs":
        return cls(*check_probs(probs, labels))

    @property
    def pair(self) -> tuple[FloatArray, IntArray]:
        return self.probs, self.labels

    @property
    def confidence(self) -> FloatArray:
        """p_y per sample."""
        return true_label_prob(self.probs, self.labels)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class AuditProbs:
    """Everything the audit reads: the model's outputs on the four splits of one unlearning request."""

    forget: SplitProbs
    retain: SplitProbs
    val: SplitProbs
    test: SplitProbs
    num_classes: int
    forget_class: int | None = None

    def __post_init__(self) -> None:
        for name in SPLIT_NAMES:
            split: SplitProbs = getattr(self, name)
            if len(split) and split.probs.shape[1] != self.num_classes:
                raise ValueError(
                    f"{name} probs have {split.probs.shape[1]} columns, expected {self.num_classes}"
                )
        if self.forget_class is not None and not 0 <= self.forget_class < self.num_classes:
            raise ValueError(f"forget_class {self.forget_class} is outside [0, {self.num_classes})")

    def set_sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in SPLIT_NAMES}


@dataclass(frozen=True)
class AttackerView:
    """ROC of the true-label confidence, forget (members) vs val + test (non-members), overall and per class.

    Confidence ranks samples exactly as the negated cross-entropy loss does, so this is also the loss attack.
    """

    score: str
    members: str
    nonmembers: str
    overall: RocSummary
    per_class: list[ClassRoc]


@dataclass(frozen=True)
class AuditResult:
    """All percentages are in [0, 100]; AUC, TPR and FPR in [0, 1]. `to_dict()` is JSON without NaN."""

    UA: float
    RA: float
    TA: float
    MIA: float
    """SVM MIA-efficacy, percent of forget samples predicted non-member."""
    val_accuracy: float | None
    forget_class_test_accuracy: float | None
    num_classes: int
    forget_class: int | None
    set_sizes: dict[str, int]
    seed: int
    svm_mia: SvmMia
    attacks: dict[str, ThresholdAttackResult]
    attacker_view: AttackerView
    retain_leakage: RocSummary
    """Retain (members) vs test (non-members): does unlearning expose what the model keeps?"""
    per_class_accuracy: list[ClassAccuracy]
    probs: AuditProbs | None = field(default=None, repr=False, compare=False, metadata=JSON_EXCLUDE)
    """The probabilities the metrics came from (for plots); never part of the JSON."""

    def headline(self) -> dict[str, float]:
        """The four figures Avg. Disparity compares, keyed as in the bench JSON."""
        return {"UA": self.UA, "MIA": self.MIA, "RA": self.RA, "TA": self.TA}

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = to_jsonable(self)
        return result
