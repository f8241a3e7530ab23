"""Machinery the unlearning methods share beyond `unlearning.training` (device, AMP, batches, augment):
the `Method` base class that implements the protocol's `run` once (a `Job` per call), working copies,
cancellation, per-stage clocks, endless index batches, mask-keeping optimiser steps.

Methods read as their papers' equations because the loop plumbing lives here and in `training`, once.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import torch
from torch import Tensor

from unlearning.methods.base import MethodConfig
from unlearning.training import epoch_batches, memory_format_for, pick_device, to_float
from unlearning.types import Cancelled, Progress, ShouldStop

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import UnlearningSplits

ConfigT = TypeVar("ConfigT", bound=MethodConfig)


def working_copy(model: Classifier, device: torch.device) -> Classifier:
    """A deep copy on `device` in its fastest memory format (masks included): methods never modify the
    caller's model. Return `finish(copy)` to the caller."""
    clone = copy.deepcopy(model)
    return clone.to(device=device, memory_format=memory_format_for(clone, device))


def finish(model: Classifier) -> Classifier:
    """The result as callers expect it: CPU, eval mode, contiguous, no gradients."""
    model = model.to(device="cpu", memory_format=torch.contiguous_format).eval()
    model.requires_grad_(False)
    return model


def raise_if_stopped(should_stop: ShouldStop, where: str) -> None:
    if should_stop():
        raise Cancelled(f"stop requested during {where}")


def batch_to(images: Tensor, device: torch.device, memory_format: torch.memory_format) -> Tensor:
    """uint8 N x C x H x W -> float32 in [0, 1] on `device` in `memory_format`."""
    return to_float(images.to(device, non_blocking=True)).contiguous(memory_format=memory_format)


def optimiser_step(optimiser: torch.optim.Optimizer, model: Classifier) -> None:
    """Step, clear gradients and re-zero pruned weights so sparse models keep their masks."""
    optimiser.step()
    optimiser.zero_grad(set_to_none=True)
    model.apply_masks()


def index_stream(count: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless batches of row indices into `range(count)`: shuffled passes, seeded, all the same size
    (`min(batch_size, count)`), so one loop can draw forget, retain and val batches side by side."""
    if count < 1:
        raise ValueError("cannot draw batches from an empty set")
    size = min(batch_size, count)
    while True:
        yield from epoch_batches(count, size, generator, drop_last=True)


class StageClock:
    """Wall seconds per named stage (`with clock.stage("warmup"): ...`), summed over re-entries."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def rounded(self) -> dict[str, float]:
        return {name: round(value, 3) for name, value in self.seconds.items()}


@dataclass(frozen=True)
class Job(Generic[ConfigT]):
    """One call of a method's `run`: the caller's arguments, the device it runs on and its stage clock."""

    model: Classifier
    """The caller's model: read it, never modify it (train a `working_copy()`)."""
    splits: UnlearningSplits
    config: ConfigT
    progress: Progress
    should_stop: ShouldStop
    device: torch.device = field(default_factory=pick_device)
    clock: StageClock = field(default_factory=StageClock)

    def working_copy(self) -> Classifier:
        return working_copy(self.model, self.device)

    def progress_span(self, start: float, share: float, stage: str | None = None) -> Progress:
        """Progress for a part of the run: its fraction (0..1) maps onto `share` of the bar from `start`,
        reported under `stage` (default: the part's own stage names)."""
        return lambda fraction, own_stage: self.progress(start + share * fraction, stage or own_stage)


class Method(Generic[ConfigT]):
    """An `UnlearningMethod` whose `run` is written once, here: a subclass sets `name` and `Config` and
    implements `unlearn(job)`, the algorithm itself. `unlearn` returns the unlearned model (any device or
    mode; `run` hands it back `finish`ed) and the JSON-able info dict."""

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]

    def run(
        self,
        model: Classifier,
        splits: UnlearningSplits,
        config: ConfigT,
        progress: Progress,
        should_stop: ShouldStop,
    ) -> tuple[Classifier, dict[str, Any]]:
        config = config.for_forget_set(
            forget_count=len(splits.forget),
            class_wise=splits.forget_class is not None,
            pruned=bool(model.masks),
        )
        unlearned, info = self.unlearn(Job(model, splits, config, progress, should_stop))
        return finish(unlearned), info

    def unlearn(self, job: Job[ConfigT]) -> tuple[Classifier, dict[str, Any]]:
        raise NotImplementedError
