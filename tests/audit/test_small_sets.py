"""Audits of tiny sets: a one-sample deletion request is the everyday case, and its report must be written
(strict JSON, no exception), with 'not measurable' reasons where so few samples cannot give a figure."""

import dataclasses
import json
from collections.abc import Callable

import numpy as np
import pytest

from unlearning.audit import AuditProbs, AuditReport, SplitProbs, metrics_from_probs
from unlearning.audit.html import render_html


def first(split: SplitProbs, count: int) -> SplitProbs:
    return SplitProbs.of(split.probs[:count], split.labels[:count])


def with_forget(probs: AuditProbs, count: int) -> AuditProbs:
    return dataclasses.replace(probs, forget=first(probs.forget, count))


def strict_json(report: AuditReport) -> dict:  # type: ignore[type-arg]
    return json.loads(json.dumps(report.to_dict(), allow_nan=False))


@pytest.mark.parametrize("count", [1, 2, 3, 10])
def test_forget_sets_of_a_few_samples_give_a_full_report(
    count: int, make_audit_probs: Callable[..., AuditProbs]
) -> None:
    before = with_forget(make_audit_probs(forget_margin=6.0, seed=1), count)
    after = with_forget(make_audit_probs(forget_margin=2.0, seed=1), count)
    report = AuditReport(metrics_from_probs(before), metrics_from_probs(after))
    document = strict_json(report)
    result = report.after
    assert result.set_sizes["forget"] == count
    # every forget figure is a count over `count` samples
    for figure in (result.UA, result.MIA, result.attacks["confidence"].forget_member_pct):
        assert figure is not None and round(figure * count / 100, 9) == round(figure * count / 100)
    assert result.attacker_view.overall.n_members == count and result.attacker_view.overall.auc is not None
    per_class = document["after"]["attacker_view"]["per_class"]
    present = set(before.forget.labels.tolist())
    for row in per_class:
        if row["class_index"] in present:
            assert row["auc"] is not None and row["reason"] is None
        else:
            assert row["auc"] is None
            assert row["reason"] == "not measurable: needs at least 1 member, has 0"
    assert "<html" in render_html(report)


def test_one_forget_sample_in_class_wise_forgetting(make_audit_probs: Callable[..., AuditProbs]) -> None:
    probs = with_forget(make_audit_probs(forget_margin=2.0, forget_class=1), 1)
    result = metrics_from_probs(probs)
    assert result.UA in (0.0, 100.0) and result.MIA in (0.0, 100.0)
    assert result.forget_class_test_accuracy is not None
    json.dumps(result.to_dict(), allow_nan=False)


def test_a_test_set_without_two_halves_leaves_the_metric_attacks_not_measurable(
    make_audit_probs: Callable[..., AuditProbs],
) -> None:
    probs = with_forget(make_audit_probs(forget_margin=2.0), 1)
    probs = dataclasses.replace(probs, test=first(probs.test, 1))
    report = AuditReport(metrics_from_probs(probs), metrics_from_probs(probs))
    document = strict_json(report)
    for attack in document["after"]["attacks"].values():
        assert attack["accuracy_pct"] is None and attack["forget_member_pct"] is None
        assert attack["reason"] == "not measurable: needs at least 2 test samples, one per half, has 1"
    assert np.isfinite(report.after.MIA) and report.after.TA in (0.0, 100.0)  # the rest is still measured
    tpr = document["after"]["attacker_view"]["overall"]["tpr_at_low_fpr"][1]
    assert tpr["reason"].startswith("not measurable: needs at least 1000 non-members")
    assert "not measurable: needs at least 2 test samples" in render_html(report)
