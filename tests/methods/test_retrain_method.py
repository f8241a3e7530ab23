"""Retrain, the exact-unlearning reference: fresh initialisation, retain set only, base recipe."""

from __future__ import annotations

import pytest
import torch
from memorising_problem import memorising_problem, one_thread, snapshot, stop_after  # noqa: F401

import unlearning.methods.retrain as retrain_module
from unlearning.methods import get_method, parse_params
from unlearning.types import Cancelled


def test_retrain_trains_a_fresh_model_on_the_retain_set_only(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = memorising_problem()
    splits = problem.random_splits
    seen: dict[str, object] = {}
    real_train_model = retrain_module.train_model

    def spy(model, data, recipe, **kwargs):  # type: ignore[no-untyped-def]
        seen["ids"] = list(data.sample_ids)
        seen["initial"] = snapshot(model)
        seen["recipe"] = recipe
        return real_train_model(model, data, recipe, **kwargs)

    monkeypatch.setattr(retrain_module, "train_model", spy)
    before = snapshot(problem.model)
    config = parse_params("retrain", {"recipe": {"epochs": 2, "batch_size": 64, "augment": False}})
    model, info = get_method("retrain").run(problem.model, splits, config, lambda f, s: None, lambda: False)

    assert seen["ids"] == splits.retain.sample_ids
    assert set(seen["ids"]).isdisjoint(splits.forget.sample_ids)
    assert seen["recipe"] == config.recipe  # type: ignore[attr-defined]
    initial = seen["initial"]
    assert isinstance(initial, dict)
    assert not torch.equal(initial["body.1.weight"], before["body.1.weight"]), "not a fresh initialisation"
    assert all(torch.equal(before[name], value) for name, value in problem.model.state_dict().items())
    assert not torch.equal(model.state_dict()["body.1.weight"], before["body.1.weight"])
    assert info["train_samples"] == len(splits.retain) and info["epochs"] == 2
    assert not model.training and next(model.parameters()).device.type == "cpu"


def test_retrain_keeps_pruning_masks_and_can_be_cancelled() -> None:
    problem = memorising_problem()
    sparse = problem.model.__class__(problem.model.spec)
    shape = sparse.body[1].weight.shape
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(0)) > 0.5
    sparse.set_masks({"body.1.weight": mask})
    config = parse_params("retrain", {"recipe": {"epochs": 1, "batch_size": 64, "augment": False}})
    model, _ = get_method("retrain").run(
        sparse, problem.random_splits, config, lambda f, s: None, lambda: False
    )
    assert torch.count_nonzero(model.body[1].weight[~mask]) == 0
    assert torch.equal(model.masks["body.1.weight"], mask)

    with pytest.raises(Cancelled):
        get_method("retrain").run(
            problem.model, problem.random_splits, config, lambda f, s: None, stop_after(2)
        )


def test_init_seed_sets_the_initialisation_and_the_recipe_seed_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    problem = memorising_problem()
    initial: dict[tuple[int, int | None], dict[str, torch.Tensor]] = {}
    real_train_model = retrain_module.train_model

    def run(recipe_seed: int, init_seed: int | None) -> None:
        def spy(model, data, recipe, **kwargs):  # type: ignore[no-untyped-def]
            initial[(recipe_seed, init_seed)] = snapshot(model)
            return real_train_model(model, data, recipe, **kwargs)

        monkeypatch.setattr(retrain_module, "train_model", spy)
        recipe = {"epochs": 1, "batch_size": 64, "augment": False, "seed": recipe_seed}
        config = parse_params("retrain", {"recipe": recipe, "init_seed": init_seed})
        get_method("retrain").run(
            problem.model, problem.random_splits, config, lambda f, s: None, lambda: False
        )

    run(1, None)
    run(2, 1)
    run(2, None)
    same = initial[(1, None)], initial[(2, 1)]
    assert all(torch.equal(same[0][name], same[1][name]) for name in same[0])
    assert not torch.equal(initial[(2, None)]["body.1.weight"], same[0]["body.1.weight"])
