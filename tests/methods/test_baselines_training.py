"""FT, GA, l1-sparse, SalUn and SCRUB on the tiny digits problem: each does what it claims."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from baselines_helpers import accuracies, digits_problem, one_thread  # noqa: F401

from unlearning.methods import get_method, parse_params
from unlearning.methods.common import working_copy
from unlearning.methods.salun import random_other_labels, saliency_mask
from unlearning.training import predict_logits
from unlearning.types import never_stop, no_progress


def run(name: str, splits, **params):  # type: ignore[no-untyped-def]
    problem = digits_problem()
    return get_method(name).run(problem.model, splits, parse_params(name, params), no_progress, never_stop)


def forget_loss(model, splits) -> float:  # type: ignore[no-untyped-def]
    return float(F.cross_entropy(predict_logits(model, splits.forget), splits.forget.labels))


def near_zero_share(model, tolerance: float = 1e-3) -> float:  # type: ignore[no-untyped-def]
    params = list(model.parameters())
    return sum(int((param.abs() < tolerance).sum()) for param in params) / sum(p.numel() for p in params)


def test_ft_keeps_retain_accuracy_and_changes_the_weights() -> None:
    problem = digits_problem()
    splits = problem.random_splits
    before = accuracies(problem.model, splits)
    model, info = run("ft", splits)
    after = accuracies(model, splits)
    assert after["retain"] >= before["retain"] - 1.0
    assert after["test"] >= before["test"] - 3.0
    moved = max(
        float((a - b).abs().max())
        for a, b in zip(model.state_dict().values(), problem.model.state_dict().values(), strict=True)
    )
    assert moved > 1e-3
    assert info["steps"] == 10 * -(-len(splits.retain) // 128)


def test_ga_lowers_forget_accuracy() -> None:
    problem = digits_problem()
    splits = problem.class_splits
    before = accuracies(problem.model, splits)
    model, _ = run("ga", splits, lr=0.05, momentum=0.0, batch_size=16, epochs=5)
    after = accuracies(model, splits)
    assert before["forget"] == 100.0
    assert after["forget"] <= 50.0
    assert forget_loss(model, splits) > forget_loss(problem.model, splits) + 0.5


def test_l1_sparse_makes_more_weights_near_zero_than_ft() -> None:
    splits = digits_problem().class_splits
    fine_tuned, _ = run("ft", splits)
    sparse, info = run("l1-sparse", splits, gamma=1e-2)
    assert info["gamma"] == 1e-2
    assert near_zero_share(sparse) > 5 * near_zero_share(fine_tuned)
    assert accuracies(sparse, splits)["retain"] >= 95.0


def test_l1_sparse_without_penalty_is_fine_tuning() -> None:
    splits = digits_problem().class_splits
    fine_tuned, _ = run("ft", splits, epochs=2)
    plain, _ = run("l1-sparse", splits, gamma=0.0, epochs=2)
    for a, b in zip(fine_tuned.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_salun_updates_only_salient_weights_and_forgets_the_class() -> None:
    problem = digits_problem()
    splits = problem.class_splits
    mask = saliency_mask(
        working_copy(problem.model, torch.device("cpu")), splits.forget, 0.5, 128, never_stop
    )
    total = sum(m.numel() for m in mask.values())
    assert abs(sum(int(m.sum()) for m in mask.values()) - total / 2) <= 1

    model, info = run("salun", splits)
    assert info["salient_weights"] == sum(int(m.sum()) for m in mask.values())
    original = dict(problem.model.named_parameters())
    changed_salient = 0
    for name, param in model.named_parameters():
        assert torch.equal(param[~mask[name]], original[name][~mask[name]]), name
        changed_salient += int((param[mask[name]] != original[name][mask[name]]).sum())
    assert changed_salient > 0.9 * total / 2
    after = accuracies(model, splits)
    assert after["forget"] <= 10.0
    assert after["retain"] >= 95.0


def test_salun_random_labels_always_differ_from_the_true_ones() -> None:
    labels = torch.arange(10).repeat(50)
    relabelled = random_other_labels(labels, 10, torch.Generator().manual_seed(0))
    assert not bool((relabelled == labels).any())
    assert set(relabelled.tolist()) == set(range(10))


def test_scrub_lowers_forget_accuracy_and_keeps_retain_accuracy() -> None:
    problem = digits_problem()
    splits = problem.class_splits
    model, info = run("scrub", splits, lr=0.02, epochs=5)
    after = accuracies(model, splits)
    assert after["forget"] <= 50.0
    assert after["retain"] >= 95.0
    assert info["max_epochs"] == 2


def test_scrub_without_max_steps_stays_close_to_the_teacher() -> None:
    problem = digits_problem()
    splits = problem.class_splits
    model, _ = run("scrub", splits, lr=0.02, epochs=5, max_epochs=0)
    assert accuracies(model, splits)["forget"] >= 95.0
