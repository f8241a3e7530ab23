"""FF and IU on the tiny digits problem: Fisher-shaped noise, the WoodFisher step, and the sizing rule."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from baselines_helpers import accuracies, digits_problem, one_thread  # noqa: F401

from unlearning.methods import get_method, parse_params
from unlearning.methods.common import working_copy
from unlearning.methods.ff import FfConfig, diagonal_fisher, noise_variances
from unlearning.methods.iu import IuConfig, influence_direction, woodfisher_inverse_product
from unlearning.methods.second_order import sample_rows
from unlearning.training import predict_logits, to_float
from unlearning.types import never_stop, no_progress

CPU = torch.device("cpu")


def deltas(model, original) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    before = dict(original.named_parameters())
    return {name: (param - before[name]).detach() for name, param in model.named_parameters()}


def test_diagonal_fisher_matches_its_definition() -> None:
    problem = digits_problem()
    model = working_copy(problem.model, CPU).eval()
    data = problem.class_splits.retain.subset(list(range(5)))
    config = FfConfig(chunk_size=2)
    fisher = diagonal_fisher(model, data, 10, config, never_stop, no_progress)

    expected = {name: torch.zeros_like(param) for name, param in model.named_parameters()}
    for image in to_float(data.images):
        log_p = torch.log_softmax(model(image[None]), dim=1)[0]
        for label in range(10):
            grads = torch.autograd.grad(log_p[label], list(model.parameters()), retain_graph=True)
            for (name, _), grad in zip(model.named_parameters(), grads, strict=True):
                expected[name] += log_p[label].exp().detach() * grad.pow(2) / len(data)
    for name in expected:
        torch.testing.assert_close(fisher[name], expected[name], rtol=1e-4, atol=1e-9)


def test_ff_noise_has_variance_alpha_over_fisher() -> None:
    problem = digits_problem()
    splits = problem.class_splits
    params = {"fisher_samples": 200, "probe_size": 256, "seed": 3}
    model, info = get_method("ff").run(
        problem.model, splits, parse_params("ff", params), no_progress, never_stop
    )

    config = FfConfig(**params)
    rows = torch.Generator().manual_seed(config.seed)
    fisher_set = splits.retain.subset(sample_rows(len(splits.retain), config.fisher_samples, rows))
    copy = working_copy(problem.model, CPU).eval()
    fisher = diagonal_fisher(copy, fisher_set, 10, config, never_stop, no_progress)
    variances = noise_variances(fisher, {}, config.variance_cap)

    delta = torch.cat([value.flatten() for value in deltas(model, problem.model).values()])
    variance = torch.cat([value.flatten() for value in variances.values()])
    alpha = info["alpha"]
    assert alpha > 0
    standardised = delta / (alpha * variance).sqrt()
    count = standardised.numel()  # N(0, 1) draws: allow five standard errors
    assert abs(float(standardised.std()) - 1.0) < 5 / (2 * count) ** 0.5
    assert abs(float(standardised.mean())) < 5 / count**0.5
    flat_fisher = torch.cat([value.flatten() for value in fisher.values()])
    low, high = flat_fisher.quantile(0.25), flat_fisher.quantile(0.75)
    assert float(delta[flat_fisher <= low].abs().mean()) > 10 * float(delta[flat_fisher >= high].abs().mean())


def test_ff_noise_scale_is_the_largest_that_keeps_the_retain_probe() -> None:
    problem = digits_problem()
    params = {"fisher_samples": 100, "probe_size": 256, "max_retain_drop": 2.0}
    _, info = get_method("ff").run(
        problem.model, problem.class_splits, parse_params("ff", params), no_progress, never_stop
    )
    step, start = info["step"], info["step"]["probe_accuracy_start"]
    passed = [point for point in step["trace"] if start - point["probe_accuracy"] <= 2.0]
    assert passed and step["rho"] == passed[-1]["rho"]
    if len(step["trace"]) > len(passed):
        assert start - step["trace"][-1]["probe_accuracy"] > 2.0
    _, stricter = get_method("ff").run(
        problem.model,
        problem.class_splits,
        parse_params("ff", {**params, "max_retain_drop": 0.0}),
        no_progress,
        never_stop,
    )
    assert stricter["alpha"] <= info["alpha"]


def test_woodbury_equals_rank_one_sherman_morrison_updates() -> None:
    generator = torch.Generator().manual_seed(0)
    gradients = torch.randn(6, 20, generator=generator, dtype=torch.float64)
    vector = torch.randn(20, generator=generator, dtype=torch.float64)
    damping = 0.05
    count = gradients.shape[0]
    lam = damping * float(gradients.pow(2).sum()) / gradients.numel()

    inverse = torch.eye(20, dtype=torch.float64) / lam
    for g in gradients:
        inverse_g = inverse @ g
        inverse -= torch.outer(inverse_g, inverse_g) / (count + g @ inverse_g)
    fisher = lam * torch.eye(20, dtype=torch.float64) + gradients.T @ gradients / count

    result = woodfisher_inverse_product(gradients, vector, damping)
    torch.testing.assert_close(result, inverse @ vector)
    torch.testing.assert_close(fisher @ result, vector)


def test_iu_moves_the_weights_along_the_influence_direction() -> None:
    problem = digits_problem()
    splits = problem.class_splits
    params = {"retain_samples": 200, "probe_size": 256}
    model, info = get_method("iu").run(
        problem.model, splits, parse_params("iu", params), no_progress, never_stop
    )

    direction, sizes = influence_direction(
        working_copy(problem.model, CPU).eval(), splits, IuConfig(**params), never_stop, no_progress
    )
    assert sizes["retain_samples"] == 200
    moved = torch.cat([value.flatten() for value in deltas(model, problem.model).values()])
    expected = info["eta"] * torch.cat([value.flatten() for value in direction.values()])
    assert info["eta"] > 0
    assert float(F.cosine_similarity(moved, expected, dim=0)) > 0.999
    torch.testing.assert_close(moved, expected, rtol=1e-3, atol=1e-6)

    def forget_loss(m) -> float:  # type: ignore[no-untyped-def]
        return float(F.cross_entropy(predict_logits(m, splits.forget), splits.forget.labels))

    assert forget_loss(model) > forget_loss(problem.model)
    assert accuracies(model, splits)["retain"] >= accuracies(problem.model, splits)["retain"] - 2.5


def test_iu_caps_the_gradient_matrix_by_memory() -> None:
    problem = digits_problem()
    size = sum(param.numel() for param in problem.model.parameters())
    gib = 50 * 4 * size / 2**30
    _, info = get_method("iu").run(
        problem.model,
        problem.class_splits,
        parse_params("iu", {"retain_samples": 500, "probe_size": 64, "max_gradient_gib": gib}),
        no_progress,
        never_stop,
    )
    assert info["retain_samples"] == 50
