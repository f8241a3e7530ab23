"""One-shot global magnitude pruning and retraining with the mask fixed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from baselines_helpers import digits_problem, one_thread, state  # noqa: F401

from models.checkpoint import load_checkpoint, save_checkpoint
from models.registry import build_model
from models.spec import ModelSpec
from unlearning.pruning import (
    global_magnitude_masks,
    magnitude_prune,
    prunable_parameters,
    prune_and_retrain,
    sparsity_of,
)
from unlearning.training import TrainRecipe, accuracy


def small_resnet():  # type: ignore[no-untyped-def]
    spec = ModelSpec(
        architecture="resnet_small",
        num_classes=10,
        in_channels=3,
        image_size=16,
        mean=[0.5] * 3,
        std=[0.25] * 3,
        width=4,
    )
    torch.manual_seed(0)
    return build_model(spec)


def test_resnet_prunes_every_convolution_and_nothing_else() -> None:
    model = small_resnet()
    names = prunable_parameters(model)
    convolutions = [name for name, param in model.named_parameters() if param.dim() == 4]
    assert names == convolutions
    assert any("shortcut" in name for name in names)
    assert not any(name.startswith("head") for name in names)


def test_mlp_prunes_its_hidden_layers_not_the_head() -> None:
    assert prunable_parameters(digits_problem().model) == ["body.1.weight", "body.3.weight"]


def test_global_threshold_prunes_exactly_the_smallest_weights() -> None:
    model = small_resnet()
    before = state(model)
    pruned = magnitude_prune(model, 0.95)

    for key, value in state(model).items():
        assert torch.equal(value, before[key]), "the input model was modified"
    assert model.masks == {}
    names = prunable_parameters(pruned)
    assert set(pruned.masks) == set(names)
    params = dict(pruned.named_parameters())
    originals = {name: param.detach() for name, param in model.named_parameters()}
    total = sum(params[name].numel() for name in names)
    pruned_count = sum(int((~pruned.masks[name]).sum()) for name in names)
    assert pruned_count == round(0.95 * total)
    assert sparsity_of(pruned) == pytest.approx(0.95, abs=1 / total)

    kept = torch.cat([originals[name][pruned.masks[name]].abs().flatten() for name in names])
    dropped = torch.cat([originals[name][~pruned.masks[name]].abs().flatten() for name in names])
    assert float(dropped.max()) <= float(kept.min())
    layer_sparsity = {name: float((~pruned.masks[name]).float().mean()) for name in names}
    assert max(layer_sparsity.values()) - min(layer_sparsity.values()) > 0.05  # one threshold, not per layer
    for name, param in params.items():
        if name in pruned.masks:
            assert bool((param[~pruned.masks[name]] == 0).all())
            assert torch.equal(param[pruned.masks[name]], originals[name][pruned.masks[name]])
        else:
            assert torch.equal(param, originals[name]), name


def test_pruning_again_never_revives_pruned_weights() -> None:
    half = magnitude_prune(small_resnet(), 0.5)
    less = global_magnitude_masks(half, 0.3)
    more = global_magnitude_masks(half, 0.8)
    for name, mask in half.masks.items():
        assert not bool((less[name] & ~mask).any())
        assert not bool((more[name] & ~mask).any())
        assert int(more[name].sum()) <= int(mask.sum())


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_sparsity_out_of_range_is_refused(sparsity: float) -> None:
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_prune(small_resnet(), sparsity)


def test_prune_and_retrain_keeps_the_mask_and_recovers_accuracy() -> None:
    problem = digits_problem()
    pruned = magnitude_prune(problem.model, 0.9)
    pruned_accuracy = accuracy(pruned, problem.dataset.test)
    recipe = TrainRecipe(epochs=15, batch_size=128, lr_max=0.05, augment=False)
    retrained = prune_and_retrain(problem.model, problem.dataset.train, 0.9, recipe, device="cpu")

    assert retrained is not problem.model and problem.model.masks == {}
    assert set(retrained.masks) == set(pruned.masks)
    params = dict(retrained.named_parameters())
    for name, mask in retrained.masks.items():
        assert torch.equal(mask.cpu(), pruned.masks[name])
        assert bool((params[name][~mask] == 0).all())
    assert sparsity_of(retrained) == pytest.approx(0.9, abs=1e-3)
    retrained_accuracy = accuracy(retrained, problem.dataset.test)
    assert retrained_accuracy >= 85.0
    assert retrained_accuracy >= pruned_accuracy


def test_pruned_checkpoint_round_trip_keeps_the_masks(tmp_path: Path) -> None:
    pruned = magnitude_prune(small_resnet(), 0.95)
    save_checkpoint(pruned, tmp_path / "sparse.safetensors")
    loaded = load_checkpoint(tmp_path / "sparse.safetensors").model
    assert set(loaded.masks) == set(pruned.masks)
    for name, mask in pruned.masks.items():
        assert torch.equal(loaded.masks[name].cpu(), mask)
    assert sparsity_of(loaded) == sparsity_of(pruned)


def test_mask_gradients_zeroes_only_the_pruned_weights_gradients() -> None:
    model = magnitude_prune(small_resnet(), 0.9)
    model(torch.rand(4, 3, 16, 16)).sum().backward()
    params = dict(model.named_parameters())
    before = {name: param.grad.clone() for name, param in params.items() if param.grad is not None}
    model.mask_gradients()
    for name, param in params.items():
        mask = model.masks.get(name)
        if mask is None:
            assert torch.equal(param.grad, before[name])  # unpruned parameters keep their gradient
        else:
            assert not param.grad[~mask].any()
            assert torch.equal(param.grad[mask], before[name][mask])
    assert any(before[name][~mask].any() for name, mask in model.masks.items())  # there was something to zero
