"""IU: influence unlearning with a WoodFisher inverse (Koh & Liang 2017, Singh & Alistarh 2020), as
Jia et al. 2023 benchmark it: one Newton-like step that removes the forget set's influence.

Symbols: theta the weights, D_f the forget set, D_r the retain set, g_i the per-sample gradient of the
cross-entropy at sample i, N retain samples with gradients G = [g_1 .. g_N] (N x P), lambda the dampening.

    v         = mean_{i in D_f} g_i  -  mean_{i in D_r} g_i       (forget/retain gradient difference)
    F         = lambda * I + (1/N) * sum_n g_n g_n^T               (empirical Fisher, WoodFisher)
    theta'    = theta + eta * F^-1 v

WoodFisher builds F^-1 from N rank-1 Sherman-Morrison updates starting at I / lambda; applied to one
vector that recursion equals the Woodbury identity
    F^-1 v = (v - G^T (N lambda I + G G^T)^-1 G v) / lambda,
which needs one N x N solve instead of N passes. lambda = `damping` times the mean diagonal of
(1/N) G^T G, so it follows the gradients' scale. The step eta is the shared rule of `second_order.py`
(the largest step on a doubling grid that costs at most `max_retain_drop` points of retain-probe
accuracy), reported in `info`. G is kept in memory (N x P floats), so N is also capped by
`max_gradient_gib`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unlearning.methods.base import register
from unlearning.methods.common import Job
from unlearning.methods.second_order import OneShotMethod, in_chunks, per_sample_gradients, sample_rows
from unlearning.methods.second_order_config import IuConfig
from unlearning.types import Progress, ShouldStop

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import ImageSet, UnlearningSplits
    from unlearning.methods.second_order import Params

BYTES_PER_GIB = 2**30


def flat(tensors: Params, batch_dims: int = 0) -> Tensor:
    return torch.cat([value.reshape(*value.shape[:batch_dims], -1) for value in tensors.values()], dim=-1)


def unflat(vector: Tensor, like: Params) -> Params:
    out, offset = {}, 0
    for name, value in like.items():
        out[name] = vector[offset : offset + value.numel()].view_as(value)
        offset += value.numel()
    return out


def kept_entries(model: Classifier) -> Tensor:
    """1 for every weight entry that may move, 0 where pruned (flattened in parameter order)."""
    return flat(
        {
            name: model.masks[name].float() if name in model.masks else torch.ones_like(param)
            for name, param in model.named_parameters()
        }
    )


def mean_gradient(model: Classifier, data: ImageSet, chunk_size: int, should_stop: ShouldStop) -> Tensor:
    """mean_i g_i over `data`, flattened (one ordinary backward per chunk)."""
    model.zero_grad(set_to_none=True)
    for images, labels in in_chunks(model, data, chunk_size, should_stop, "IU forget gradient"):
        (F.cross_entropy(model(images).float(), labels, reduction="sum") / len(data)).backward()
    total = flat({name: param.grad for name, param in model.named_parameters()})  # type: ignore[misc]
    model.zero_grad(set_to_none=True)
    return total


def woodfisher_inverse_product(gradients: Tensor, vector: Tensor, damping: float) -> Tensor:
    """F^-1 v for F = lambda I + G^T G / N, lambda = damping * mean diagonal of G^T G / N (Woodbury)."""
    count, size = gradients.shape
    gram = (gradients @ gradients.T).double()
    lam = damping * float(gram.trace()) / (count * size)
    gram.diagonal().add_(count * lam)
    coefficients = torch.linalg.solve(gram, (gradients @ vector).double()).to(vector.dtype)
    return (vector - gradients.T @ coefficients) / lam


def influence_direction(
    model: Classifier, splits: UnlearningSplits, config: IuConfig, should_stop: ShouldStop, progress: Progress
) -> tuple[Params, dict[str, Any]]:
    """F^-1 v as parameter-shaped tensors (model in eval mode), and what it was computed from."""
    params = {name: param.detach() for name, param in model.named_parameters()}
    size = sum(value.numel() for value in params.values())
    memory_cap = max(1, int(config.max_gradient_gib * BYTES_PER_GIB // (4 * size)))
    rows = sample_rows(
        len(splits.retain), min(config.retain_samples, memory_cap), torch.Generator().manual_seed(config.seed)
    )
    retain_sample = splits.retain.subset(rows)
    device = next(model.parameters()).device
    kept = kept_entries(model).to(device)

    gradients = torch.empty(len(retain_sample), size, device=device)
    done = 0
    for images, labels in in_chunks(
        model, retain_sample, config.chunk_size, should_stop, "IU retain gradients"
    ):
        gradients[done : done + len(images)] = flat(per_sample_gradients(model, images, labels), batch_dims=1)
        done += len(images)
        progress(0.8 * done / len(retain_sample), "retain gradients")
    gradients *= kept
    forget_gradient = mean_gradient(model, splits.forget, config.chunk_size, should_stop) * kept
    progress(0.85, "forget gradient")
    v = forget_gradient - gradients.mean(dim=0)
    direction = woodfisher_inverse_product(gradients, v, config.damping) * kept
    return unflat(direction, params), {"retain_samples": len(retain_sample), "memory_cap_samples": memory_cap}


class InfluenceUnlearning(OneShotMethod[IuConfig]):
    name = "iu"
    Config = IuConfig

    def direction(self, model: Classifier, job: Job[IuConfig]) -> tuple[Params, dict[str, Any]]:
        return influence_direction(model, job.splits, job.config, job.should_stop, job.progress)

    def step_info(self, scale: float) -> dict[str, float]:
        """theta + scale * F^-1 v is theta + eta * F^-1 v."""
        return {"eta": scale}


register(InfluenceUnlearning())
