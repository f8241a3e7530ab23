"""DAU's game on a tiny memorising problem: it moves the attacker toward chance, and it behaves."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from memorising_problem import memorising_problem, one_thread, snapshot, stop_after  # noqa: F401

from unlearning.methods import get_method, parse_params
from unlearning.methods.dau.defender import DefenderStep
from unlearning.training import accuracy
from unlearning.types import Cancelled

FAST = {
    "critic": "samia",  # the paper's game (the default plays the critic on random sets)
    "attacker_warmup": 60,
    "attacker_steps": 1,
    "batch_size": 64,
    "eval_every": 10,
    "lr": 0.1,  # the tiny MLP's memorised logits are saturated: it needs a bigger step than a real model
    "attacker": {"layers": 1, "token_dim": 32, "ff_dim": 64, "hidden_dim": 32},  # 4x cheaper, same shape
}


def run_dau(splits, should_stop=lambda: False, **params):  # type: ignore[no-untyped-def]
    stages: list[str] = []
    model, info = get_method("dau").run(
        memorising_problem().model,
        splits,
        parse_params("dau", {**FAST, **params}),
        lambda fraction, stage: stages.append(stage),
        should_stop,
    )
    return model, info, stages


def test_the_game_moves_held_out_attacker_accuracy_toward_chance() -> None:
    problem = memorising_problem()
    splits = problem.random_splits
    before = snapshot(problem.model)
    model, info, stages = run_dau(splits, iterations=80, stop_patience=100)

    trace = [point["attacker_accuracy"] for point in info["attacker_accuracy"]["trace"]]
    start, end = trace[0], sum(trace[-3:]) / 3  # the last three evaluations: held-out sets are small
    assert start >= 0.75, f"the attacker should first tell members from non-members easily, got {start}"
    assert abs(end - 0.5) <= 0.6 * abs(start - 0.5), f"attacker accuracy {trace}"
    # the forget set now looks like unseen data: far less accurate than when memorised
    assert accuracy(model, splits.forget) <= accuracy(problem.model, splits.forget) - 25
    assert accuracy(model, splits.retain) >= 85
    # the caller's model is untouched, and the report is JSON
    assert all(torch.equal(before[name], value) for name, value in problem.model.state_dict().items())
    assert info["iterations"] == 80 and info["stop_reason"] == "budget"
    assert {"attacker_warmup", "game", "evaluate"} <= set(info["seconds"])
    json.dumps(info)
    assert stages[0] == "attacker_warmup" and "game" in stages and stages[-1] == "done"


def test_class_wise_forgetting_drops_alpha_and_restores_retain_accuracy() -> None:
    splits = memorising_problem().class_splits
    model, info, stages = run_dau(splits, iterations=60, class_alpha_iterations=10, stop_patience=100)
    assert "restore" in stages and stages.index("restore") > stages.index("game")
    assert info["seconds"]["restore"] > 0
    trace = {point["iteration"]: point for point in info["attacker_accuracy"]["trace"]}
    assert trace[10]["forget_accuracy"] <= 20, "the forgotten class is no longer recognised once alpha drops"
    assert accuracy(model, splits.forget) <= 20
    assert trace[60]["retain_accuracy"] > trace[10]["retain_accuracy"], "retain accuracy recovers after"


def test_class_wise_restore_can_aim_at_the_original_without_the_class() -> None:
    """`without_class` sets the restore target to the original's probe accuracy with the class taken out of
    its argmax: here above the original's own, as a bias toward the class makes it steal retain samples."""
    problem = memorising_problem()
    splits = problem.class_splits
    biased = copy.deepcopy(problem.model)
    with torch.no_grad():
        biased.head.bias[splits.forget_class] += 11.0  # median top-1 margin 7, class logit -3
    params = {**FAST, "iterations": 20, "class_alpha_iterations": 10, "retain_probe": 4096}
    infos = {
        target: get_method("dau").run(
            biased, splits, parse_params("dau", {**params, "class_restore_target": target}),
            lambda fraction, stage: None, lambda: False,
        )[1]
        for target in ("original", "without_class")
    }  # fmt: skip
    start = infos["original"]["retain_probe_accuracy_start"]
    assert start < 95, "the bias should make the original miss retain samples"
    assert infos["original"]["retain_probe_accuracy_target"] == start
    assert infos["without_class"]["retain_probe_accuracy_start"] == start
    assert infos["without_class"]["retain_probe_accuracy_target"] >= start + 5


@pytest.mark.parametrize("calls", [0, 3, 70])  # during set-up/warm-up, warm-up, the game
def test_should_stop_raises_cancelled(calls: int) -> None:
    problem = memorising_problem()
    before = snapshot(problem.model)
    with pytest.raises(Cancelled):
        run_dau(problem.random_splits, should_stop=stop_after(calls), iterations=20)
    assert all(torch.equal(before[name], value) for name, value in problem.model.state_dict().items())


def test_pruned_weights_stay_zero() -> None:
    problem = memorising_problem()
    sparse = problem.model.__class__(problem.model.spec)
    sparse.load_state_dict(problem.model.state_dict())
    weight = sparse.body[1].weight
    sparse.set_masks(
        {"body.1.weight": torch.rand(weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5}
    )
    model, _ = get_method("dau").run(
        sparse,
        problem.random_splits,
        parse_params("dau", {**FAST, "iterations": 3, "attacker_warmup": 2}),
        lambda fraction, stage: None,
        lambda: False,
    )
    mask = sparse.masks["body.1.weight"]
    assert torch.count_nonzero(model.body[1].weight[~mask]) == 0
    assert torch.count_nonzero(model.body[1].weight[mask]) > 0


def test_the_defender_step_is_clipped_and_its_learning_rate_decays() -> None:
    """max_grad_norm bounds every defender step; with lr_decay the last iterations barely move it."""
    problem = memorising_problem()
    splits = problem.random_splits
    start = torch.nn.utils.parameters_to_vector(problem.model.parameters())

    def moved(**params: object) -> tuple[float, dict]:  # type: ignore[type-arg]
        model, info, _ = run_dau(
            splits, iterations=10, stop_patience=100, weight_decay=0.0, momentum=0.0, **params
        )
        return float((torch.nn.utils.parameters_to_vector(model.parameters()) - start).detach().norm()), info

    tiny, info = moved(max_grad_norm=1e-6, lr_decay=False)
    free, free_info = moved(max_grad_norm=None, lr_decay=False)
    # without momentum each step moves the weights by lr * clipped gradient: at most 0.1 * 1e-6, ten times
    assert tiny <= 10 * FAST["lr"] * 1e-6 * 1.01
    assert free > 1000 * tiny
    assert info["max_defender_grad_norm"] > 1e-6  # the norm before clipping is reported
    decayed, _ = moved(max_grad_norm=None, lr_decay=True)
    assert decayed < free  # a linearly decaying rate (mean 0.55 of the start) moves less than a constant one


def test_weight_average_puts_the_moving_average_of_the_iterates_into_the_defender() -> None:
    defender = copy.deepcopy(memorising_problem().model)
    config = parse_params("dau", {"weight_average": 0.6, "update_fraction": 0.5, "momentum": 0.0})
    step = DefenderStep(defender, config, torch.device("cpu"))
    frozen = {name: value.clone() for name, value in defender.named_parameters() if not value.requires_grad}
    expected = [weight.detach().double().clone() for weight in step.trainable]
    for _ in range(3):
        step(sum((weight**2).sum() for weight in step.trainable))  # type: ignore[arg-type]
        for average, weight in zip(expected, step.trainable, strict=True):
            average += 0.4 * (weight.detach().double() - average)
    last = [weight.detach().clone() for weight in step.trainable]
    assert step.finish()
    for weight, average, iterate in zip(step.trainable, expected, last, strict=True):
        assert torch.allclose(weight.double(), average, atol=1e-6)
        assert not torch.allclose(weight, iterate)  # not the last iterate
    params = dict(defender.named_parameters())
    assert frozen and all(torch.equal(value, params[name]) for name, value in frozen.items())
    plain = DefenderStep(defender, parse_params("dau", {}), torch.device("cpu"))
    assert not plain.finish()


def test_a_game_with_weight_average_returns_the_average_and_checks_it() -> None:
    splits = memorising_problem().random_splits
    params = {"critic": "wasserstein", "iterations": 6, "stop_patience": 100}
    averaged, info, _ = run_dau(splits, weight_average=0.7, **params)
    last, plain_info, _ = run_dau(splits, **params)
    assert plain_info["averaged_check"] is None
    check = info["averaged_check"]
    assert check["iteration"] == info["iterations"] == 6
    assert info["membership_auc"]["trace"][-1] != check  # the trace reads the iterates, the check the average
    differences = [
        not torch.equal(a, b) for a, b in zip(averaged.parameters(), last.parameters(), strict=True)
    ]
    assert any(differences)
    json.dumps(info)
