"""Membership-inference audit of an unlearned model (DESIGN section 10).

Pure functions on numpy probabilities, one typed result, and an HTML report. Importing this package
does not import torch: only `audit_model` needs it, and imports it when called.
"""

from unlearning.audit.accuracies import Accuracies, accuracy_pct, compute_accuracies
from unlearning.audit.disparity import DISPARITY_METRICS, avg_disparity, metric_distances
from unlearning.audit.protocol import audit_model, metrics_from_probs, model_probs
from unlearning.audit.report import AuditReport, Disparity
from unlearning.audit.result import AttackerView, AuditProbs, AuditResult, SplitProbs
from unlearning.audit.roc import LOW_FPRS, RocSummary, TprAtFpr, roc_summary
from unlearning.audit.svm_mia import SvmMia, svm_mia_efficacy
from unlearning.audit.threshold_attacks import ThresholdAttackResult, metric_attacks

__all__ = [
    "DISPARITY_METRICS",
    "LOW_FPRS",
    "Accuracies",
    "AttackerView",
    "AuditProbs",
    "AuditReport",
    "AuditResult",
    "Disparity",
    "RocSummary",
    "SplitProbs",
    "SvmMia",
    "ThresholdAttackResult",
    "TprAtFpr",
    "accuracy_pct",
    "audit_model",
    "avg_disparity",
    "compute_accuracies",
    "metric_attacks",
    "metric_distances",
    "metrics_from_probs",
    "model_probs",
    "roc_summary",
    "svm_mia_efficacy",
]
