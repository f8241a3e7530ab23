"""The method contract for every baseline: registered with typed params, the input model untouched,
progress and cancellation every iteration, and pruning masks kept (for DAU and retrain too)."""

from __future__ import annotations

import math

import pytest
import torch
from baselines_helpers import digits_problem, one_thread, state, stop_after  # noqa: F401
from pydantic import ValidationError

from unlearning.methods import available_methods, get_method, parse_params
from unlearning.pruning import magnitude_prune
from unlearning.types import Cancelled, never_stop, no_progress

BASELINES = ["ft", "ga", "ff", "iu", "l1-sparse", "salun", "scrub"]

FAST = {
    "ft": {"epochs": 1},
    "ga": {"epochs": 3, "lr": 0.01},
    "ff": {"fisher_samples": 32, "probe_size": 64},
    "iu": {"retain_samples": 32, "probe_size": 64},
    "l1-sparse": {"epochs": 1, "gamma": 1e-3},
    "salun": {"epochs": 1},
    "scrub": {"epochs": 2, "max_epochs": 1, "lr": 0.01},
    "dau": {"iterations": 4, "attacker_warmup": 2, "eval_every": 2, "batch_size": 32},
    "retrain": {"recipe": {"epochs": 2, "batch_size": 128, "augment": False}},
}

BAD_PARAMS = [
    ("ft", {"lr": 0.0}),
    ("ft", {"epochs": "3"}),
    ("ft", {"lr": math.nan}),
    ("ft", {"momentum": 1.0}),
    ("ga", {"lr": -1e-4}),
    ("ga", {"batch_size": 0}),
    ("ff", {"max_retain_drop": -1.0}),
    ("ff", {"variance_cap": 0.0}),
    ("ff", {"fisher_samples": 0}),
    ("iu", {"damping": 0.0}),
    ("iu", {"retain_samples": 0}),
    ("iu", {"max_gradient_gib": -1.0}),
    ("l1-sparse", {"gamma": -1e-4}),
    ("salun", {"saliency": 0.0}),
    ("salun", {"saliency": 1.5}),
    ("scrub", {"epochs": 2, "max_epochs": 3}),
    ("scrub", {"temperature": 0.0}),
    ("scrub", {"alpha": -1.0}),
] + [(name, {"no_such_param": 1}) for name in BASELINES]


def test_every_baseline_is_registered_with_default_params() -> None:
    assert set(BASELINES) <= set(available_methods())
    for name in BASELINES:
        method = get_method(name)
        assert method.name == name
        assert parse_params(name, {}) == method.Config()


@pytest.mark.parametrize(("name", "raw"), BAD_PARAMS)
def test_bad_params_are_refused(name: str, raw: dict) -> None:
    with pytest.raises(ValidationError):
        parse_params(name, raw)


@pytest.mark.parametrize("name", BASELINES)
def test_input_model_untouched_and_progress_reported(name: str) -> None:
    problem = digits_problem()
    before = state(problem.model)
    reports: list[tuple[float, str]] = []
    model, info = get_method(name).run(
        problem.model,
        problem.random_splits,
        parse_params(name, FAST[name]),
        lambda fraction, stage: reports.append((fraction, stage)),
        never_stop,
    )
    for key, value in state(problem.model).items():
        assert torch.equal(value, before[key]), key
    assert model is not problem.model
    assert not model.training
    assert all(not param.requires_grad for param in model.parameters())
    assert len(reports) >= 3
    assert all(0.0 <= fraction <= 1.0 for fraction, _ in reports)
    assert reports[-1][0] == 1.0
    assert isinstance(info, dict) and info


@pytest.mark.parametrize("name", BASELINES)
def test_a_stop_request_raises_cancelled(name: str) -> None:
    problem = digits_problem()
    should_stop = stop_after(2)
    with pytest.raises(Cancelled):
        get_method(name).run(
            problem.model, problem.random_splits, parse_params(name, FAST[name]), no_progress, should_stop
        )
    assert should_stop.count["n"] == 3  # asked every iteration, stopped at the first True


@pytest.mark.parametrize("name", [*BASELINES, "dau", "retrain"])
def test_sparse_models_keep_every_masked_weight_at_zero(name: str) -> None:
    problem = digits_problem()
    sparse = magnitude_prune(problem.model, 0.5)
    model, _ = get_method(name).run(
        sparse, problem.class_splits, parse_params(name, FAST[name]), no_progress, never_stop
    )
    assert set(model.masks) == set(sparse.masks) and model.masks
    params = dict(model.named_parameters())
    for param_name, mask in model.masks.items():
        assert torch.equal(mask.cpu(), sparse.masks[param_name].cpu())
        assert bool((params[param_name][~mask] == 0).all()), param_name
    original = dict(sparse.named_parameters())
    assert any(not torch.equal(param, original[key]) for key, param in params.items())
