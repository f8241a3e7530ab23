"""The whole protocol on synthetic outputs, and `audit_model` on a real (tiny) model."""

import json
from collections.abc import Callable

import numpy as np
import pytest
import torch

from unlearning.audit import AuditProbs, AuditReport, accuracy_pct, audit_model, metrics_from_probs


def test_unlearning_shows_in_every_membership_figure(before_and_after: tuple[AuditProbs, AuditProbs]) -> None:
    before, after = (metrics_from_probs(probs, seed=0) for probs in before_and_after)
    assert after.MIA > before.MIA + 40
    assert after.UA > before.UA
    assert before.attacker_view.overall.auc is not None and after.attacker_view.overall.auc is not None
    assert before.attacker_view.overall.auc > 0.9
    assert abs(after.attacker_view.overall.auc - 0.5) < 0.1
    assert after.attacks["confidence"].forget_member_pct < before.attacks["confidence"].forget_member_pct - 40
    # the retain set is untouched in this synthetic pair: its leakage is the same before and after
    assert after.retain_leakage.auc == pytest.approx(before.retain_leakage.auc)


def test_result_figures_and_sizes(before_and_after: tuple[AuditProbs, AuditProbs]) -> None:
    probs = before_and_after[0]
    result = metrics_from_probs(probs, seed=0)
    assert result.UA == pytest.approx(100 - accuracy_pct(*probs.forget.pair))
    assert result.set_sizes == {"forget": 80, "retain": 600, "val": 150, "test": 200}
    assert (result.svm_mia.n_shadow_members, result.svm_mia.n_shadow_nonmembers) == (200, 200)
    overall = result.attacker_view.overall
    assert (overall.n_members, overall.n_nonmembers) == (80, 350)
    at_1pct, at_01pct = overall.tpr_at_low_fpr
    assert at_1pct.tpr is not None and at_1pct.false_positives is not None and at_1pct.false_positives <= 3
    assert at_01pct.tpr is None and "1000" in (at_01pct.reason or "")
    assert sum(row.n_members for row in result.attacker_view.per_class) == 80
    assert result.probs is probs


def test_to_dict_is_strict_json_without_the_probabilities(
    before_and_after: tuple[AuditProbs, AuditProbs],
) -> None:
    result = metrics_from_probs(before_and_after[1], seed=0)
    as_dict = result.to_dict()
    text = json.dumps(as_dict, allow_nan=False)
    assert "probs" not in as_dict
    assert {key: as_dict[key] for key in ("UA", "MIA", "RA", "TA")} == result.headline()
    assert json.loads(text)["attacks"]["modified_entropy"]["name"] == "modified_entropy"


def test_same_seed_same_report_other_seed_other_subsets(
    before_and_after: tuple[AuditProbs, AuditProbs],
) -> None:
    probs = before_and_after[0]
    assert metrics_from_probs(probs, seed=3).to_dict() == metrics_from_probs(probs, seed=3).to_dict()
    thresholds = [metrics_from_probs(probs, seed=s).attacks["confidence"].thresholds for s in (3, 4)]
    assert thresholds[0] != thresholds[1]


def test_classwise_audit(make_audit_probs: Callable[..., AuditProbs]) -> None:
    probs = make_audit_probs(forget_margin=6.0, forget_class=2)
    result = metrics_from_probs(probs)
    assert result.forget_class == 2
    test_without_class = probs.test.labels != 2
    assert result.TA == pytest.approx(
        accuracy_pct(probs.test.probs[test_without_class], probs.test.labels[test_without_class])
    )
    assert result.forget_class_test_accuracy is not None
    # retain holds no sample of class 2, so its thresholds come from all classes
    assert 2 in result.attacks["entropy"].fallback_classes
    members_per_class = [row.n_members for row in result.attacker_view.per_class]
    assert members_per_class == [0, 0, 80, 0]


def test_report_disparity_against_a_reference(before_and_after: tuple[AuditProbs, AuditProbs]) -> None:
    before, after = (metrics_from_probs(probs) for probs in before_and_after)
    report = AuditReport(before=before, after=after, reference=after, provenance={"seed": 0})
    disparity = report.disparity()
    assert disparity is not None
    assert disparity["after"].average == 0.0
    expected = np.mean([abs(before.headline()[k] - after.headline()[k]) for k in ("UA", "MIA", "RA", "TA")])
    assert disparity["before"].average == pytest.approx(expected)
    as_json = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert as_json["disparity"]["before"]["distances"]["MIA"] == pytest.approx(abs(before.MIA - after.MIA))
    assert AuditReport(before=before, after=after).to_dict()["disparity"] is None


def test_nan_is_refused_in_provenance(before_and_after: tuple[AuditProbs, AuditProbs]) -> None:
    result = metrics_from_probs(before_and_after[0])
    with pytest.raises(ValueError, match=r"\$\.provenance\.timing_s"):
        AuditReport(before=result, after=result, provenance={"timing_s": float("nan")}).to_dict()


def test_audit_model_on_a_trained_digits_mlp() -> None:
    from models.registry import build_model
    from models.spec import ModelSpec
    from unlearning.data import load_digits, make_splits
    from unlearning.training import TrainRecipe, accuracy, predict_probs, train_model

    torch.manual_seed(0)
    dataset = load_digits(seed=0)
    splits = make_splits(dataset, forget_ids=dataset.train.sample_ids[:60])
    spec = ModelSpec(
        architecture="mlp",
        num_classes=dataset.num_classes,
        in_channels=dataset.in_channels,
        image_size=dataset.image_size,
        mean=list(dataset.mean),
        std=list(dataset.std),
    )
    model = train_model(build_model(spec), dataset.train, TrainRecipe(epochs=3, batch_size=64, augment=False))

    result = audit_model(model, splits, seed=0)
    assert result.UA == pytest.approx(100 - accuracy(model, splits.forget), abs=1e-4)
    assert result.RA == pytest.approx(accuracy(model, splits.retain), abs=1e-4)
    assert result.TA == pytest.approx(accuracy(model, splits.test), abs=1e-4)
    assert result.set_sizes == {
        name: len(getattr(splits, name)) for name in ("forget", "retain", "val", "test")
    }
    assert result.probs is not None
    assert np.allclose(result.probs.test.probs, predict_probs(model, splits.test).numpy(), atol=1e-6)
    json.dumps(result.to_dict(), allow_nan=False)
