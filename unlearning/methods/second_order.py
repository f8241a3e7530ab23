"""What the two second-order baselines (FF and IU) share: per-sample gradients, and the rule that sizes
their one-shot weight change.

Both methods compute a direction in weight space once (FF: Fisher-scaled noise, IU: an inverse-Fisher
step) and add it to the weights; how far to go is the only free choice, and the papers tuned it per
experiment. Here one rule sizes it the same way for both and for every scenario:

    Delta(rho) = rho * ||theta|| * d / ||d||        rho on the doubling grid 1e-4, 2e-4, 4e-4, ... (< 2)
    take the largest rho whose accuracy on a fixed, seeded probe of retain samples stays within
    `max_retain_drop` percentage points of the original model's (stop at the first rho that fails).

So the change is as large as the retain set tolerates, measured rather than hand-set; `info` reports the
chosen rho, the equivalent paper-style scale and the probe trace.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad, vmap

from unlearning.methods.common import Job, Method, batch_to, raise_if_stopped
from unlearning.methods.second_order_config import PerturbationConfig
from unlearning.training import accuracy, memory_format_for, seeded_generator
from unlearning.types import Progress, ShouldStop

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import ImageSet

RHO_GRID = tuple(1e-4 * 2**k for k in range(15))
"""Relative sizes ||Delta|| / ||theta|| tried, smallest first (1e-4 .. 1.64)."""


Params = dict[str, Tensor]
PerturbationConfigT = TypeVar("PerturbationConfigT", bound=PerturbationConfig)


class OneShotMethod(Method[PerturbationConfigT]):
    """A one-shot method end to end: d from `direction`, then theta + Delta(rho) by the rule.

    A subclass computes d (`direction`) and says what the chosen step means in its paper (`step_info`)."""

    def unlearn(self, job: Job[PerturbationConfigT]) -> tuple[Classifier, dict[str, Any]]:
        config, retain = job.config, job.splits.retain
        with job.clock.stage("direction"):
            unlearned = job.working_copy().eval()
            direction, info = self.direction(unlearned, job)
        with job.clock.stage("step_search"):
            probe_rows = sample_rows(len(retain), config.probe_size, seeded_generator(config.seed + 1))
            probe = retain.subset(probe_rows)
            step = largest_safe_step(
                unlearned, direction, probe, config.max_retain_drop, job.should_stop, job.progress
            )
            job.progress(1.0, "done")
        info = {**info, "step": step, "device": str(job.device), "seconds": job.clock.rounded()}
        return unlearned, {**self.step_info(step["scale"]), **info}

    def direction(self, model: Classifier, job: Job[PerturbationConfigT]) -> tuple[Params, dict[str, Any]]:
        """d for the working copy `model` (eval mode, on the device), and what to report about it."""
        raise NotImplementedError

    def step_info(self, scale: float) -> dict[str, float]:
        """The chosen step, scale = ||Delta|| / ||d||, in the paper's own terms."""
        raise NotImplementedError


def per_sample_gradients(model: Classifier, images: Tensor, targets: Tensor) -> Params:
    """grad_theta CE(model(x_i), y_i) for every row i: name -> B x shape (model in eval mode)."""
    params = {name: param.detach() for name, param in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(weights: Params, x: Tensor, y: Tensor) -> Tensor:
        logits = functional_call(model, (weights, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(logits.float(), y.unsqueeze(0))

    return vmap(grad(loss), in_dims=(None, 0, 0))(params, images, targets)


def in_chunks(
    model: Classifier, data: ImageSet, chunk_size: int, should_stop: ShouldStop, stage: str
) -> Iterator[tuple[Tensor, Tensor]]:
    """(float images on the model's device, labels) over `data` in order, checking for a stop first."""
    device = next(model.parameters()).device
    memory_format = memory_format_for(model, device)
    for start in range(0, len(data), chunk_size):
        raise_if_stopped(should_stop, f"{stage} at sample {start}")
        images = batch_to(data.images[start : start + chunk_size], device, memory_format)
        yield images, data.labels[start : start + chunk_size].to(device)


def sample_rows(count: int, limit: int, generator: torch.Generator) -> Tensor:
    """Up to `limit` distinct rows of range(count), seeded."""
    return torch.randperm(count, generator=generator)[: min(limit, count)]


def largest_safe_step(
    model: Classifier,
    direction: Params,
    probe: ImageSet,
    max_retain_drop: float,
    should_stop: ShouldStop,
    progress: Progress,
) -> dict[str, Any]:
    """Apply theta + Delta(rho) with the largest rho the rule allows (module docstring), in place.

    `direction` covers every parameter (zeros allowed); pruned entries are zeroed afterwards as always.
    """
    params = dict(model.named_parameters())
    start = {name: param.detach().clone() for name, param in params.items()}
    theta_norm = math.sqrt(sum(float(value.pow(2).sum()) for value in start.values()))
    direction_norm = math.sqrt(sum(float(value.pow(2).sum()) for value in direction.values()))
    if direction_norm == 0 or not math.isfinite(direction_norm):
        return {"rho": 0.0, "scale": 0.0, "reason": f"direction norm is {direction_norm}", "trace": []}

    def move(rho: float) -> None:
        scale = rho * theta_norm / direction_norm
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(start[name] + scale * direction[name])
        model.apply_masks()

    base_accuracy = accuracy(model, probe)
    best, trace = 0.0, []
    for step, rho in enumerate(RHO_GRID):
        raise_if_stopped(should_stop, "step-size search")
        move(rho)
        probe_accuracy = accuracy(model, probe)
        trace.append({"rho": rho, "probe_accuracy": round(probe_accuracy, 2)})
        progress(0.9 + 0.1 * (step + 1) / len(RHO_GRID), "step size")
        if base_accuracy - probe_accuracy > max_retain_drop:
            break
        best = rho
    move(best)
    return {
        "rho": best,
        "scale": best * theta_norm / direction_norm,
        "probe_accuracy_start": round(base_accuracy, 2),
        "trace": trace,
    }
