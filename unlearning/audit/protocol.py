"""The audit protocol (DESIGN section 10): every metric from one model's probabilities on the splits.

Set choices, so each figure can be reproduced:
- SVM MIA-efficacy: retain subset (as many as test) vs test, applied to forget (Jia et al. 2023).
- Metric attacks: thresholds fitted on a retain subset (members) vs a seeded half of test
  (non-members); evaluated on forget (members) vs the other half of test. Validation samples are
  not used as evaluation non-members because unlearning methods such as DAU train against them.
  A test set of one sample has no halves: the attacks are then not measurable (with the reason).
- Attacker view: forget vs val + test, as DESIGN section 10 specifies. In class-wise forgetting the
  per-class row of the forgotten class (its forget vs its own val/test images) is the like-for-like one.
- Retain leakage: all of retain vs test.
"""

from typing import TYPE_CHECKING

import numpy as np

from unlearning.audit.accuracies import compute_accuracies, per_class_accuracy
from unlearning.audit.measurable import not_measurable
from unlearning.audit.result import AttackerView, AuditProbs, AuditResult, SplitProbs
from unlearning.audit.roc import per_class_roc, roc_summary
from unlearning.audit.sampling import seeded_halves, seeded_subset
from unlearning.audit.svm_mia import svm_mia_efficacy
from unlearning.audit.threshold_attacks import ThresholdAttackResult, metric_attacks, unmeasured_attacks

if TYPE_CHECKING:
    import torch

    from models.base import Classifier
    from unlearning.data import UnlearningSplits


def metrics_from_probs(probs: AuditProbs, *, seed: int = 0) -> AuditResult:
    forget, retain, val, test = probs.forget, probs.retain, probs.val, probs.test
    accuracies = compute_accuracies(
        forget.pair, retain.pair, test.pair, val.pair if len(val) else None, forget_class=probs.forget_class
    )
    svm = svm_mia_efficacy(retain.confidence, test.confidence, forget.confidence, seed=seed)
    attacks = split_test_attacks(probs, seed)
    nonmember_confidence = np.concatenate([val.confidence, test.confidence])
    nonmember_labels = np.concatenate([val.labels, test.labels])
    attacker_view = AttackerView(
        score="true-label confidence",
        members="forget",
        nonmembers="val+test",
        overall=roc_summary(forget.confidence, nonmember_confidence),
        per_class=per_class_roc(
            forget.confidence, forget.labels, nonmember_confidence, nonmember_labels, probs.num_classes
        ),
    )
    return AuditResult(
        UA=accuracies.UA,
        RA=accuracies.RA,
        TA=accuracies.TA,
        MIA=svm.efficacy,
        val_accuracy=accuracies.val_accuracy,
        forget_class_test_accuracy=accuracies.forget_class_test_accuracy,
        num_classes=probs.num_classes,
        forget_class=probs.forget_class,
        set_sizes=probs.set_sizes(),
        seed=seed,
        svm_mia=svm,
        attacks=attacks,
        attacker_view=attacker_view,
        retain_leakage=roc_summary(retain.confidence, test.confidence),
        per_class_accuracy=per_class_accuracy(probs.num_classes, forget.pair, retain.pair, test.pair),
        probs=probs,
    )


def split_test_attacks(probs: AuditProbs, seed: int) -> dict[str, ThresholdAttackResult]:
    """The metric attacks: fitted on retain vs one seeded half of test, scored on forget vs the other."""
    forget, retain, test = probs.forget, probs.retain, probs.test
    if len(test) < 2:
        return unmeasured_attacks(not_measurable("at least 2 test samples, one per half", len(test)))
    shadow_test_rows, eval_test_rows = seeded_halves(len(test), seed)
    shadow_retain_rows = seeded_subset(len(retain), len(shadow_test_rows), seed)
    return metric_attacks(
        shadow_members=(retain.probs[shadow_retain_rows], retain.labels[shadow_retain_rows]),
        shadow_nonmembers=(test.probs[shadow_test_rows], test.labels[shadow_test_rows]),
        forget=forget.pair,
        eval_nonmembers=(test.probs[eval_test_rows], test.labels[eval_test_rows]),
        num_classes=probs.num_classes,
    )


def model_probs(
    model: "Classifier", splits: "UnlearningSplits", *, device: "torch.device | str | None" = None
) -> AuditProbs:
    """The model's softmax outputs on forget, retain, val and test: what every audit figure comes from."""
    from unlearning.training import predict_probs

    def outputs(name: str) -> SplitProbs:
        image_set = getattr(splits, name)
        probs = predict_probs(model, image_set, device=device)
        return SplitProbs.of(probs.detach().cpu().double().numpy(), image_set.labels.cpu().numpy())

    return AuditProbs(
        forget=outputs("forget"),
        retain=outputs("retain"),
        val=outputs("val"),
        test=outputs("test"),
        num_classes=splits.num_classes,
        forget_class=splits.forget_class,
    )


def audit_model(
    model: "Classifier",
    splits: "UnlearningSplits",
    *,
    device: "torch.device | str | None" = None,
    seed: int = 0,
) -> AuditResult:
    """Run the model on forget, retain, val and test and audit its softmax outputs.

    The result keeps those probabilities in `.probs` so the HTML report can plot them.
    """
    return metrics_from_probs(model_probs(model, splits, device=device), seed=seed)
