"""DAU's Wasserstein critic: the closed-form attacker, and the game it plays on a memorising problem."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from memorising_problem import memorising_problem, one_thread, snapshot  # noqa: F401

from unlearning.methods import get_method, parse_params
from unlearning.methods.base import escalated
from unlearning.methods.common import StageClock
from unlearning.methods.dau.config import (
    CLASS_GAME_DEFAULTS,
    CRITIC_DEFAULTS,
    RANDOM_GAME_DEFAULTS,
    DauConfig,
)
from unlearning.methods.dau.critic import classwise_wasserstein, label_margin, wasserstein_1d
from unlearning.methods.dau.critic_game import CriticGame
from unlearning.methods.dau.retain_term import RetainTerm
from unlearning.training import accuracy

CRITIC = {"critic": "wasserstein", "alpha": 1.0, "batch_size": 64, "eval_every": 10, "lr": 0.1}


def test_label_margin_is_the_logit_scaled_confidence() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    labels = torch.tensor([0, 2])
    p = torch.softmax(logits, dim=1)[torch.arange(2), labels]
    assert torch.allclose(label_margin(logits, labels), torch.log(p) - torch.log1p(-p), atol=1e-5)


def test_wasserstein_1d_matches_quantiles_and_pulls_each_member_toward_its_rank() -> None:
    members = torch.tensor([5.0, 1.0, 3.0], requires_grad=True)
    nonmembers = torch.tensor([0.0, 2.0, 1.0])
    distance = wasserstein_1d(members, nonmembers)  # sorted: [1,3,5] vs [0,1,2]
    assert distance.item() == pytest.approx((1 + 2 + 3) / 3)
    distance.backward()
    assert members.grad is not None and torch.all(members.grad > 0)  # every member is above its match
    assert wasserstein_1d(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0])).item() == 0.0
    # unequal sizes compare quantiles
    assert wasserstein_1d(torch.tensor([0.0, 10.0]), torch.linspace(0, 10, 101)).item() == pytest.approx(
        2.5, abs=0.01
    )


def test_classwise_wasserstein_matches_within_each_class() -> None:
    members, nonmembers = torch.tensor([1.0, 5.0]), torch.tensor([5.0, 1.0])
    # pooled, the two sets are identical; per class, each member sits 4 away from its class
    assert wasserstein_1d(members, nonmembers).item() == 0.0
    per_class = classwise_wasserstein(members, torch.tensor([0, 1]), nonmembers, torch.tensor([0, 1]))
    assert per_class.item() == pytest.approx(4.0)


def test_naming_the_critic_alone_brings_its_own_defaults_and_named_fields_win() -> None:
    samia = parse_params("dau", {})
    assert isinstance(samia, DauConfig)
    assert (samia.alpha, samia.iterations, samia.retain_distill) == (3.0, 80, 0.0)
    tuned = parse_params("dau", {"critic": "wasserstein"})
    critic_defaults = CRITIC_DEFAULTS["wasserstein"]
    assert {name: getattr(tuned, name) for name in critic_defaults} == critic_defaults
    assert tuned.alpha != samia.alpha  # the critic's defaults differ from the field defaults they replace
    mine = parse_params("dau", {"critic": "wasserstein", "alpha": 0.3, "max_grad_norm": None})
    assert (mine.alpha, mine.max_grad_norm, mine.iterations) == (0.3, None, 30)


def test_the_acceptance_ladder_keeps_the_critics_defaults_and_doubles_its_budget() -> None:
    tuned = parse_params("dau", {"critic": "wasserstein"})
    larger = escalated(tuned)
    assert isinstance(larger, DauConfig)
    assert larger.iterations == 2 * tuned.iterations
    assert larger.model_dump(exclude={"iterations"}) == tuned.model_dump(exclude={"iterations"})


def test_auto_plays_the_critic_for_random_sets_and_samia_for_classes_and_single_samples() -> None:
    auto = parse_params("dau", {"lr": 0.02, "alpha": 2.0})
    assert isinstance(auto, DauConfig) and auto.critic == "auto"
    random = auto.for_forget_set(forget_count=500, class_wise=False, pruned=True)
    assert random.critic == "wasserstein"
    assert (random.lr, random.alpha) == (0.02, 2.0)  # what the params named stays
    assert (random.iterations, random.retain_distill) == (30, 5.0)  # the rest is the critic's defaults
    assert random.warm_start == "none"
    for count, class_wise in ((500, True), (1, False)):
        samia = auto.for_forget_set(forget_count=count, class_wise=class_wise)
        assert (samia.critic, samia.iterations, samia.alpha) == ("samia", 80, 2.0)
    named = parse_params("dau", {"critic": "samia"})
    assert named.for_forget_set(forget_count=500, class_wise=False) is named


def test_auto_plays_a_class_with_the_class_game_and_named_fields_win() -> None:
    auto = parse_params("dau", {"update_fraction": 0.75})
    assert isinstance(auto, DauConfig)
    game = auto.for_forget_set(forget_count=500, class_wise=True)
    assert game.update_fraction == 0.75  # named in the params
    others = {name: value for name, value in CLASS_GAME_DEFAULTS.items() if name != "update_fraction"}
    assert {name: getattr(game, name) for name in others} == others
    assert any(DauConfig.model_fields[name].default != value for name, value in others.items())
    single = auto.for_forget_set(forget_count=1, class_wise=False)  # SAMIA too, but not a class's game
    assert {name: getattr(single, name) for name in others} != others
    larger = escalated(game)
    assert isinstance(larger, DauConfig)
    assert larger.model_dump(exclude={"iterations"}) == game.model_dump(exclude={"iterations"})


def test_auto_starts_random_forgetting_on_a_dense_model_from_the_influence_step() -> None:
    auto = parse_params("dau", {"iterations": 40, "warm_start_from": 500})
    assert isinstance(auto, DauConfig)
    dense = auto.for_forget_set(forget_count=500, class_wise=False)
    assert (dense.critic, dense.warm_start, dense.iterations) == (
        "wasserstein",
        "influence",
        40,
    )  # named wins
    unnamed = parse_params("dau", {}).for_forget_set(forget_count=1000, class_wise=False)
    assert {name: getattr(unnamed, name) for name in RANDOM_GAME_DEFAULTS} == RANDOM_GAME_DEFAULTS
    assert "max_grad_norm" not in RANDOM_GAME_DEFAULTS  # the rest comes from the critic's defaults
    assert dense.max_grad_norm == CRITIC_DEFAULTS["wasserstein"]["max_grad_norm"]
    assert (
        dense.retain_distill
        == RANDOM_GAME_DEFAULTS["retain_distill"]
        != CRITIC_DEFAULTS["wasserstein"]["retain_distill"]
    )  # the random game's own win over the critic's
    for kwargs in ({"pruned": True}, {"class_wise": True}, {"forget_count": 1}, {"forget_count": 499}):
        cold = auto.for_forget_set(**{"forget_count": 500, "class_wise": False, **kwargs})  # type: ignore[arg-type]
        assert cold.warm_start == "none", kwargs
    assert parse_params("dau", {}).for_forget_set(forget_count=999, class_wise=False).warm_start == "none"
    named = parse_params("dau", {"critic": "wasserstein"})
    assert named.for_forget_set(forget_count=5000, class_wise=False).warm_start == "none"  # the cold game
    larger = escalated(unnamed)
    assert isinstance(larger, DauConfig) and larger.warm_start == "influence"


def test_a_warm_started_game_plays_from_the_step_and_distils_toward_the_original() -> None:
    problem = memorising_problem()
    moved = copy.deepcopy(problem.model)
    with torch.no_grad():
        for parameter in moved.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    config = parse_params("dau", {"critic": "wasserstein"})
    splits = problem.random_splits
    game = CriticGame(
        moved, splits, splits.retain, config, torch.device("cpu"), StageClock(), teacher=problem.model
    )
    teacher = game.retain_term.teacher
    assert teacher is not None
    original, start = problem.model.state_dict(), moved.state_dict()
    assert all(torch.equal(value, original[name]) for name, value in teacher.state_dict().items())
    assert all(torch.equal(value, start[name]) for name, value in game.defender.state_dict().items())


def test_the_influence_warm_start_runs_ius_step_within_its_memory_cap() -> None:
    problem = memorising_problem()
    size = sum(parameter.numel() for parameter in problem.model.parameters())
    cap = 40  # retain gradients that fit in warm_start_gib
    params = {"warm_start": "influence", "warm_start_gib": (cap + 0.5) * 4 * size / 2**30, "iterations": 2}
    before = snapshot(problem.model)
    model, info = get_method("dau").run(
        problem.model, problem.random_splits, parse_params("dau", params), lambda f, s: None, lambda: False
    )
    warm = info["warm_start"]
    assert warm["method"] == "iu" and warm["eta"] > 0
    assert warm["memory_cap_samples"] == cap and warm["retain_samples"] == cap
    assert {"direction", "step_search", "game"} <= set(info["seconds"])
    assert accuracy(model, problem.random_splits.forget) < accuracy(
        problem.model, problem.random_splits.forget
    )
    assert all(torch.equal(before[name], value) for name, value in problem.model.state_dict().items())
    _, cold = get_method("dau").run(
        problem.model,
        problem.random_splits,
        parse_params("dau", {"critic": "wasserstein", "iterations": 2}),
        lambda f, s: None,
        lambda: False,
    )
    assert cold["warm_start"] is None
    json.dumps(info)


def test_the_influence_warm_start_takes_warm_start_samples_retain_gradients() -> None:
    problem = memorising_problem()
    params = {"warm_start": "influence", "warm_start_samples": 25, "iterations": 1}
    _, info = get_method("dau").run(
        problem.model, problem.random_splits, parse_params("dau", params), lambda f, s: None, lambda: False
    )
    assert info["warm_start"]["retain_samples"] == 25
    assert info["warm_start"]["memory_cap_samples"] > 25


def test_the_critic_game_records_which_critic_played() -> None:
    problem = memorising_problem()
    fast = {"iterations": 2, "batch_size": 64, "eval_every": 1, "attacker_warmup": 1}
    method = get_method("dau")
    _, random = method.run(
        problem.model, problem.random_splits, parse_params("dau", fast), lambda f, s: None, lambda: False
    )
    assert random["critic"] == "wasserstein"
    _, explicit = method.run(
        problem.model,
        problem.random_splits,
        parse_params("dau", {**fast, "critic": "samia"}),
        lambda f, s: None,
        lambda: False,
    )
    assert explicit["critic"] == "samia"


@pytest.mark.parametrize("critic", [["wasserstein"], {"a": 1}, 3])
def test_a_critic_of_the_wrong_type_is_a_validation_error(critic: object) -> None:
    with pytest.raises(ValueError, match="critic"):
        parse_params("dau", {"critic": critic})


def test_mask_label_cannot_be_read_by_the_critic() -> None:
    with pytest.raises(ValueError, match="mask_label"):
        parse_params("dau", {"critic": "wasserstein", "class_nonmembers": "mask_label"})


def test_the_critic_game_brings_memorised_forget_samples_to_unseen_confidence() -> None:
    problem = memorising_problem()
    splits = problem.random_splits
    before = snapshot(problem.model)
    model, info = get_method("dau").run(
        problem.model, splits, parse_params("dau", {**CRITIC, "iterations": 80, "stop_patience": 100}),
        lambda fraction, stage: None, lambda: False,
    )  # fmt: skip
    trace = [point["attacker_auc"] for point in info["membership_auc"]["trace"]]
    start, end = trace[0], sum(trace[-3:]) / 3
    assert start >= 0.8, f"memorised forget samples should first look like members: {trace}"
    assert abs(end - 0.5) <= 0.5 * abs(start - 0.5), trace
    assert accuracy(model, splits.forget) <= accuracy(problem.model, splits.forget) - 25
    assert accuracy(model, splits.retain) >= 85
    # no attacker to warm up or step, no sensitivity copies: only game and evaluation stages
    assert set(info["seconds"]) <= {"game", "restore", "evaluate"}
    assert info["critic"] == "wasserstein" and info["attack_pool"]["mode"] == "critic"
    assert all(torch.equal(before[name], value) for name, value in problem.model.state_dict().items())
    json.dumps(info)


def test_the_critic_stops_once_the_forget_set_looks_unseen() -> None:
    problem = memorising_problem()
    params = {**CRITIC, "iterations": 400, "stop_tolerance": 0.1, "retain_tolerance": 10.0}
    _, info = get_method("dau").run(
        problem.model, problem.random_splits, parse_params("dau", params), lambda f, s: None, lambda: False
    )
    assert info["stop_reason"] == "won" and info["iterations"] < 400
    last = info["membership_auc"]["trace"][-1]["attacker_auc"]
    assert abs(last - 0.5) <= 0.1


def test_class_wise_the_critic_forgets_the_class_then_restores() -> None:
    problem = memorising_problem()
    splits = problem.class_splits
    params = {**CRITIC, "iterations": 60, "class_alpha_iterations": 10, "stop_patience": 100}
    model, info = get_method("dau").run(
        problem.model, splits, parse_params("dau", params), lambda f, s: None, lambda: False
    )
    assert info["alpha_off_at"] is not None
    assert accuracy(model, splits.forget) <= 20
    assert accuracy(model, splits.retain) >= 85


def test_the_retain_term_is_cross_entropy_until_the_defender_leaves_the_original() -> None:
    problem = memorising_problem()
    retain = problem.random_splits.retain
    x, y = retain.images[:64].float() / 255, retain.labels[:64]
    defender = copy.deepcopy(problem.model).eval()
    cpu = torch.device("cpu")
    plain = RetainTerm(defender, parse_params("dau", {}), cpu)
    distilled = RetainTerm(
        defender, parse_params("dau", {"retain_distill": 1.0, "distill_temperature": 2.0}), cpu
    )
    assert plain.teacher is None and distilled.teacher is not None
    with torch.no_grad():
        logits = defender(x)
        cross_entropy = torch.nn.functional.cross_entropy(logits, y)
        assert plain(logits, y, x).item() == pytest.approx(cross_entropy.item(), rel=1e-6)
        # the teacher is the defender as it was: nothing to distil yet
        assert distilled(logits, y, x).item() == pytest.approx(cross_entropy.item(), rel=1e-5)
        for parameter in defender.parameters():  # the defender moves; the teacher must not follow
            parameter.add_(0.05 * torch.randn_like(parameter))
        moved = defender(x)
        assert distilled(moved, y, x).item() > plain(moved, y, x).item() + 1e-3


def test_the_nonmember_anchor_is_zero_at_the_original_and_grows_as_the_defender_moves() -> None:
    problem = memorising_problem()
    val = problem.random_splits.val
    x = val.images[:64].float() / 255
    defender = copy.deepcopy(problem.model).eval()
    cpu = torch.device("cpu")
    term = RetainTerm(defender, parse_params("dau", {"retain_distill": 0.0, "nonmember_distill": 2.0}), cpu)
    assert term.teacher is not None  # the anchor alone needs the original
    with torch.no_grad():
        assert term.nonmembers(defender(x), x).item() == pytest.approx(0.0, abs=1e-5)
        for parameter in defender.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        moved = defender(x)
        assert term.nonmembers(moved, x).item() > 1e-3
        assert term.nonmembers(moved, x).item() == pytest.approx(2.0 * term.distill(moved, x).item())


def test_forgetting_a_class_the_teacher_gives_it_no_share() -> None:
    """The distillation target of a class-wise run is the original's softened outputs over the other classes:
    a student that never predicts the forgotten class matches it better than the original's own outputs."""
    problem = memorising_problem()
    splits = problem.class_splits
    gone = splits.forget_class
    assert gone is not None
    x, y = splits.retain.images[:64].float() / 255, splits.retain.labels[:64]
    teacher = copy.deepcopy(problem.model).eval()
    params = parse_params("dau", {"retain_distill": 1.0, "distill_temperature": 2.0})
    cpu = torch.device("cpu")
    masked, unmasked = RetainTerm(teacher, params, cpu, forget_class=gone), RetainTerm(teacher, params, cpu)

    def distillation(term: RetainTerm, logits: torch.Tensor) -> float:
        return (term(logits, y, x) - torch.nn.functional.cross_entropy(logits, y)).item()

    with torch.no_grad():
        logits = teacher(x)
        without_class = logits.clone()
        without_class[:, gone] = -1e4
        assert distillation(unmasked, logits) == pytest.approx(0.0, abs=1e-5)
        assert distillation(masked, without_class) == pytest.approx(0.0, abs=1e-5)
        assert distillation(masked, logits) > 1e-3 and distillation(unmasked, without_class) > 1e-3
    student = logits.clone().requires_grad_(True)
    loss = masked(student, y, x)
    loss.backward()
    assert student.grad is not None and torch.isfinite(loss) and torch.isfinite(student.grad).all()
    assert (student.grad[:, gone] > 0).all()  # every retain sample pushes the forgotten class's logit down


def _accuracy_by_weight(
    field: str, weights: tuple[float, ...], split: str, **params: object
) -> dict[float, float]:
    """Accuracy on `split` of the critic game's model on the memorising problem, per weight of `field`."""
    problem = memorising_problem()
    splits = problem.random_splits
    accuracies = {}
    for weight in weights:
        config = parse_params(
            "dau", {**CRITIC, "iterations": 40, "stop_patience": 100, **params, field: weight}
        )
        model, _ = get_method("dau").run(problem.model, splits, config, lambda f, s: None, lambda: False)
        accuracies[weight] = accuracy(model, getattr(splits, split))
    return accuracies


def test_retain_distillation_keeps_more_of_retain_accuracy_in_the_critic_game() -> None:
    accuracies = _accuracy_by_weight("retain_distill", (0.0, 3.0), "retain", alpha=3.0)
    assert accuracies[3.0] >= accuracies[0.0] + 10, accuracies  # measured: 76 -> 100


def test_the_nonmember_anchor_keeps_unseen_data_where_the_original_had_it_in_a_strong_game() -> None:
    """Without the anchor a strong critic lowers every sample's confidence, unseen ones included, and
    the forget set chases a target that keeps falling; with it, test accuracy stays nearer the original's."""
    accuracies = _accuracy_by_weight("nonmember_distill", (0.0, 5.0), "test", alpha=6.0, retain_distill=0.0)
    assert accuracies[5.0] >= accuracies[0.0] + 5, accuracies  # measured: 25 -> 40 (the original: 43)
