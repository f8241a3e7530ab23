"""DAU's parts checked in isolation: attacker shapes, sensitivity estimators, Barlow Twins, pools."""

from __future__ import annotations

import math

import pytest
import torch
from memorising_problem import one_thread  # noqa: F401  (autouse fixture)
from torch import nn

from unlearning.methods.dau.attacker import AttackerConfig, AttackInputs, MembershipAttacker
from unlearning.methods.dau.barlow_twins import barlow_twins_loss, cross_correlation
from unlearning.methods.dau.pools import PairSampler, build_pools, label_tokens
from unlearning.methods.dau.sensitivity import expected_sensitivity, sensitivity


def tiny_conv_net(classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, classes),
    ).eval()


def attack_inputs(batch: int, classes: int) -> AttackInputs:
    probs = torch.softmax(torch.randn(batch, classes), dim=1)
    labels = torch.randint(classes, (batch,))
    return AttackInputs(probs, torch.rand(batch, classes), label_tokens(labels, classes))


# -- attacker ------------------------------------------------------------------------------------------


def test_attacker_gives_one_logit_per_sample_and_has_the_specified_layers() -> None:
    attacker = MembershipAttacker(10)
    logits = attacker(attack_inputs(16, 10))
    assert logits.shape == (16,)
    assert attacker.input_norm.num_features == 30  # BN over the 3C inputs
    assert attacker.token_embed[0].in_features == 3 and attacker.token_embed[0].out_features == 64
    layers = attacker.encoder.layers
    assert len(layers) == 3
    assert layers[0].self_attn.num_heads == 4 and layers[0].linear1.out_features == 128
    assert layers[0].dropout.p == pytest.approx(0.2)
    assert attacker.classifier[1].in_features == 64 * 10 and attacker.classifier[3].out_features == 1


def test_attacker_gradient_reaches_the_defender_probabilities() -> None:
    attacker = MembershipAttacker(4, AttackerConfig(layers=1)).eval()
    inputs = attack_inputs(8, 4)
    probs = inputs.probs.clone().requires_grad_(True)
    attacker(AttackInputs(probs, inputs.sensitivity, inputs.label_onehot)).sum().backward()
    assert probs.grad is not None and probs.grad.abs().sum() > 0


def test_masked_label_tokens_are_all_zero() -> None:
    onehot = label_tokens(torch.tensor([2, -1, 0]), 3)
    assert onehot.tolist() == [[0, 0, 1], [0, 0, 0], [1, 0, 0]]


# -- sensitivity ---------------------------------------------------------------------------------------


def test_batched_finite_difference_matches_a_one_copy_at_a_time_reference() -> None:
    model, eps, copies = tiny_conv_net(), 1e-3, 3
    x = torch.rand(6, 3, 8, 8)
    batched = sensitivity(model, x, eps=eps, copies=copies, generator=torch.Generator().manual_seed(1))

    noise = torch.randn((copies, *x.shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        clean = torch.softmax(model(x), dim=1)
        reference = torch.stack(
            [(torch.softmax(model(x + eps * noise[k]), dim=1) - clean).abs() / eps for k in range(copies)]
        ).mean(0)
    assert batched.shape == (6, 5)
    torch.testing.assert_close(batched, reference, rtol=1e-3, atol=1e-5)


def test_passing_the_clean_probabilities_gives_the_same_sensitivity() -> None:
    model, x = tiny_conv_net(), torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)
    own = sensitivity(model, x, copies=2, generator=torch.Generator().manual_seed(3))
    given = sensitivity(model, x, probs=probs, copies=2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(own, given, rtol=1e-4, atol=1e-6)


def test_finite_difference_tends_to_the_exact_directional_derivative() -> None:
    """jvp is the eps -> 0 limit of the finite difference along the same noise: in float64 with a tiny
    eps they agree closely; at the default eps = 1e-3 in float32 they still agree to a few percent."""
    model, x = tiny_conv_net(), torch.rand(5, 3, 8, 8)

    def both(net: nn.Module, inputs: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(  # type: ignore[return-value]
            sensitivity(
                net, inputs, eps=eps, copies=4, method=method, generator=torch.Generator().manual_seed(2)
            )
            for method in ("finite_difference", "jvp")
        )

    fd, jvp = both(model.double(), x.double(), 1e-7)
    torch.testing.assert_close(fd, jvp, rtol=1e-4, atol=1e-9)
    fd, jvp = both(model.float(), x, 1e-3)
    assert (fd - jvp).abs().mean() <= 0.03 * jvp.abs().mean()


def test_many_copies_converge_to_the_expected_sensitivity() -> None:
    """E|grad p_c . u| = sqrt(2/pi) ||grad p_c|| for u ~ N(0, I): the estimator is unbiased."""
    model, x = tiny_conv_net(), torch.rand(3, 3, 8, 8)
    estimate = sensitivity(model, x, copies=4000, method="jvp", generator=torch.Generator().manual_seed(0))
    exact = expected_sensitivity(model, x)
    assert exact.shape == estimate.shape == (3, 5)
    torch.testing.assert_close(estimate, exact, rtol=0.06, atol=1e-6)
    assert math.isclose(float(exact.sum()), float(estimate.sum()), rel_tol=0.03)


def test_sensitivity_refuses_a_model_in_training_mode() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        sensitivity(tiny_conv_net().train(), torch.rand(2, 3, 8, 8))


# -- Barlow Twins --------------------------------------------------------------------------------------


def test_barlow_twins_by_hand_on_a_two_by_two_case() -> None:
    z = torch.tensor([[1.0, 2.0], [-1.0, -2.0]])  # both columns standardise to (1, -1)
    # identical features: c is all ones, so (1 - c_ii)^2 = 0 and the two off-diagonal entries cost 0.0051
    assert barlow_twins_loss(z, z).item() == pytest.approx(2 * 0.0051, abs=1e-4)
    # opposite features: c is all -1, on-diagonal (1 - (-1))^2 = 4 twice
    assert barlow_twins_loss(z, -z).item() == pytest.approx(8 + 2 * 0.0051, abs=1e-3)


def test_barlow_twins_on_diagonal_vanishes_for_identical_standardised_features() -> None:
    z = torch.randn(64, 16)
    c = cross_correlation(z, 3 * z + 1)  # standardisation removes scale and shift
    torch.testing.assert_close(c.diagonal(), torch.ones(16), rtol=0, atol=1e-4)
    assert barlow_twins_loss(z, 3 * z + 1, off_diagonal_weight=0.0).item() == pytest.approx(0.0, abs=1e-6)
    assert barlow_twins_loss(z, torch.randn(64, 16), off_diagonal_weight=0.0).item() > 10


# -- attack pools --------------------------------------------------------------------------------------


def pools(forget_class: int | None, mode: str = "relabel"):  # type: ignore[no-untyped-def]
    forget_labels = torch.tensor([1] * 20) if forget_class is not None else torch.arange(40) % 4
    val_labels = torch.arange(40) % 4
    return build_pools(
        forget_labels,
        val_labels,
        forget_class=forget_class,
        class_nonmembers=mode,  # type: ignore[arg-type]
        holdout_fraction=0.25,
        holdout_max=100,
        generator=torch.Generator().manual_seed(0),
    ), val_labels


def test_random_forgetting_pairs_each_forget_sample_with_a_validation_sample_of_its_class() -> None:
    built, val_labels = pools(None)
    assert len(built.member_holdout) == len(built.nonmember_holdout) == 10
    assert set(built.member_train.tolist()).isdisjoint(built.member_holdout.tolist())
    assert set(built.nonmember_train.tolist()).isdisjoint(built.nonmember_holdout.tolist())
    sampler = PairSampler(built, val_labels, torch.Generator().manual_seed(0))
    wanted = torch.tensor([0, 1, 2, 3, 3, 2])
    paired = sampler.pair(wanted)
    assert val_labels[paired].tolist() == wanted.tolist()
    assert set(paired.tolist()) <= set(built.nonmember_train.tolist())


@pytest.mark.parametrize(
    ("mode", "nonmember_classes", "nonmember_token", "member_token"),
    [
        ("relabel", {0, 2, 3}, {1}, {1}),
        ("mask_label", {0, 2, 3}, {-1}, {-1}),
        ("other_classes", {0, 2, 3}, {0, 2, 3}, {1}),
        ("same_class", {1}, {1}, {1}),
    ],
)
def test_class_wise_non_members_follow_the_chosen_option(
    mode, nonmember_classes, nonmember_token, member_token
):  # type: ignore[no-untyped-def]
    built, val_labels = pools(1, mode)
    rows = torch.cat([built.nonmember_train, built.nonmember_holdout])
    assert set(val_labels[rows].tolist()) == nonmember_classes
    assert set(built.nonmember_token_labels[rows].tolist()) == nonmember_token
    assert set(built.member_token_labels.tolist()) == member_token
    assert not built.pair_by_class


def test_last_parameters_freezes_the_early_layers_and_keeps_the_share() -> None:
    from unlearning.methods.dau.stopping import last_parameters

    net = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 10), torch.nn.Linear(10, 2))
    trainable = last_parameters(net, 0.05)  # 12.1 of 242 weights: whole tensors, the last layer only
    assert {id(p) for p in trainable} == {id(p) for p in net[2].parameters()}
    assert not any(p.requires_grad for p in net[0].parameters())
    assert len(last_parameters(net, 1.0)) == len(list(net.parameters()))
