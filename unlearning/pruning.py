"""One-shot global magnitude pruning, the sparse model variant of Jia et al. 2023 ("prune first, then
unlearn"): the 95%-sparse originals every method is also benchmarked on.

Prunable weights, on any architecture: the weight of every convolution (1-, 2- or 3-d, transposed too)
and of every linear layer except the classifier head (`model.head`), plus the input projection of
attention layers (`nn.MultiheadAttention.in_proj_weight`, a linear weight held outside an `nn.Linear`);
the head, biases and normalisation parameters stay dense. (For the service's own networks that is every
convolution of the ResNets and the MLP's hidden layers.) One threshold over all prunable weights together
keeps the largest (1 - sparsity) share by magnitude, so layers end up with different sparsities. The
result carries `masks` (False = pruned), which training and every unlearning method re-apply after each
step, and checkpoints store.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from models.base import Classifier
from unlearning.data import ImageSet
from unlearning.training import TrainRecipe, train_model
from unlearning.types import Progress, ShouldStop, never_stop, no_progress


def prunable_parameters(model: Classifier) -> list[str]:
    """Names of the weights magnitude pruning may zero (see the module docstring)."""
    head = {id(param) for param in model.head.parameters()}
    names: list[str] = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.modules.conv._ConvNd | nn.Linear):
            if id(module.weight) not in head:
                names.append(f"{prefix}weight")
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            names.append(f"{prefix}in_proj_weight")
    return names


def global_magnitude_masks(model: Classifier, sparsity: float) -> dict[str, Tensor]:
    """Masks keeping the largest `1 - sparsity` share of the prunable weights by |w| (one threshold).

    Exactly round(sparsity * count) weights are pruned (ties broken by position). Weights already
    pruned are zero, so they go first, and they stay pruned even when `sparsity` is lower than before.
    """
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    params = dict(model.named_parameters())
    names = prunable_parameters(model)
    if not names:
        raise ValueError(f"{model.spec.architecture} has no prunable weights")
    magnitudes = torch.cat([params[name].detach().abs().flatten().float().cpu() for name in names])
    pruned_count = round(sparsity * magnitudes.numel())
    keep = torch.ones(magnitudes.numel(), dtype=torch.bool)
    if pruned_count:
        keep[torch.topk(magnitudes, pruned_count, largest=False, sorted=False).indices] = False
    masks = {}
    for name, kept in zip(names, keep.split([params[name].numel() for name in names]), strict=True):
        mask = kept.view_as(params[name])
        masks[name] = mask & model.masks[name].cpu() if name in model.masks else mask
    return masks


def magnitude_prune(model: Classifier, sparsity: float) -> Classifier:
    """A copy of `model` (on the CPU) with global magnitude masks at `sparsity` set and applied."""
    pruned = copy.deepcopy(model).cpu()
    masks = global_magnitude_masks(pruned, sparsity)
    pruned.set_masks({**{name: mask.cpu() for name, mask in pruned.masks.items()}, **masks})
    return pruned


def prune_and_retrain(
    model: Classifier,
    data: ImageSet,
    sparsity: float,
    recipe: TrainRecipe,
    *,
    progress: Progress = no_progress,
    should_stop: ShouldStop = never_stop,
    device: torch.device | str | None = None,
) -> Classifier:
    """One-shot prune a copy of `model` to `sparsity`, then retrain it on `data` with the mask fixed
    (`train_model` re-applies masks after every step). The input model is not modified."""
    pruned = magnitude_prune(model, sparsity)
    return train_model(pruned, data, recipe, progress=progress, should_stop=should_stop, device=device)


def sparsity_of(model: Classifier) -> float:
    """Share of prunable weights that are exactly zero."""
    params = dict(model.named_parameters())
    names = prunable_parameters(model)
    total = sum(params[name].numel() for name in names)
    zeros = sum(int((params[name] == 0).sum()) for name in names)
    return zeros / total
