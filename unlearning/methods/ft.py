"""FT: fine-tune on the retain set, the simplest baseline of Jia et al. 2023 ("Model sparsity can
simplify machine unlearning"); also the SGD loop the other training-based baselines share.

Symbols: theta the model's weights, D_r the retain set, CE the cross-entropy.

    min_theta  CE(theta; D_r)        `epochs` passes, SGD with momentum, constant learning rate

Forgetting comes only from catastrophic forgetting of what D_r does not support. The defaults are the
reference's (10 epochs, lr 0.01, momentum 0.9, weight decay 5e-4) with the project's base batch size.

`SgdRun` is the loop GA, l1-sparse, SalUn and SCRUB reuse: a working copy in train mode, one SGD
optimiser, seeded shuffled passes over image sets (crop + flip when the base recipe would), bf16
autocast on CUDA, progress and cancellation every step, pruning masks re-applied after every step, and
optionally weights frozen element-wise (SalUn's saliency mask).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from unlearning.methods.base import MethodConfig, register
from unlearning.methods.common import batch_to, finish, optimiser_step, raise_if_stopped, working_copy
from unlearning.methods.sgd_config import FtConfig, SgdConfig
from unlearning.training import (
    AUGMENT_MIN_SIZE,
    augment,
    autocast,
    epoch_batches,
    memory_format_for,
    needs_grad_scaler,
    pick_device,
    seeded_generator,
)
from unlearning.types import Progress, ShouldStop

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import ImageSet, UnlearningSplits


def steps_per_pass(count: int, batch_size: int) -> int:
    return -(-count // batch_size)


class SgdRun:
    """A working copy of `model` trained by SGD over passes of image sets; `result()` hands it back.

    `freeze(keep)` pins entries to their current values (see there).
    """

    def __init__(
        self,
        model: Classifier,
        config: SgdConfig,
        *,
        total_steps: int,
        progress: Progress,
        should_stop: ShouldStop,
    ) -> None:
        self.config = config
        self.device = pick_device()
        self.model = working_copy(model, self.device).train()
        self.model.requires_grad_(True)
        self.memory_format = memory_format_for(self.model, self.device)
        self.generator = seeded_generator(config.seed)
        self.optimiser = torch.optim.SGD(
            self.model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        self.amp = config.amp and self.device.type == "cuda" and not needs_grad_scaler(self.device)
        self.total_steps = max(1, total_steps)
        self.steps = 0
        self.progress = progress
        self.should_stop = should_stop
        self.started = time.perf_counter()
        self.frozen: dict[str, tuple[Tensor, Tensor]] = {}

    def freeze(self, keep: dict[str, Tensor]) -> None:
        """Pin the entries where `keep` (parameter name -> bool tensor) is True to their current values:
        they are restored after every step, so neither momentum nor weight decay can move them."""
        params = dict(self.model.named_parameters())
        self.frozen = {
            name: (mask.to(self.device), params[name].detach().clone()) for name, mask in keep.items()
        }

    @classmethod
    def over(
        cls, model: Classifier, config: SgdConfig, data: ImageSet, progress: Progress, should_stop: ShouldStop
    ) -> SgdRun:
        """A run whose budget is `config.epochs` passes over `data` (see `epochs`)."""
        total_steps = config.epochs * steps_per_pass(len(data), config.batch_size)
        return cls(model, config, total_steps=total_steps, progress=progress, should_stop=should_stop)

    def epochs(self, data: ImageSet, stage: str) -> Iterator[tuple[Tensor, Tensor]]:
        """`config.epochs` shuffled passes over `data`, batch after batch."""
        for _ in range(self.config.epochs):
            yield from self.passes(data, stage)

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        return autocast(self.device) if self.amp else contextlib.nullcontext()

    def passes(
        self, data: ImageSet, stage: str, *, batch_size: int | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One shuffled pass over `data`: (float images on the device, labels); checks for a stop first."""
        size = batch_size or self.config.batch_size
        augmented = self.config.augment and min(data.images.shape[2:]) >= AUGMENT_MIN_SIZE
        for index in epoch_batches(len(data), size, self.generator):
            raise_if_stopped(self.should_stop, f"{stage} step {self.steps}")
            images = batch_to(data.images[index], self.device, self.memory_format)
            if augmented:
                images = augment(images, self.generator).contiguous(memory_format=self.memory_format)
            yield images, data.labels[index].to(self.device)

    def update(self, loss: Tensor, stage: str) -> None:
        """Back-propagate `loss`, step, keep pruning masks and frozen entries, report progress."""
        loss.backward()
        optimiser_step(self.optimiser, self.model)
        if self.frozen:
            params = dict(self.model.named_parameters())
            with torch.no_grad():
                for name, (keep, start) in self.frozen.items():
                    params[name].copy_(torch.where(keep, start, params[name]))
        self.steps += 1
        self.progress(min(1.0, self.steps / self.total_steps), stage)

    @property
    def fraction_done(self) -> float:
        return self.steps / self.total_steps

    def result(self, **info: Any) -> tuple[Classifier, dict[str, Any]]:
        self.progress(1.0, "done")
        summary = {
            "steps": self.steps,
            "device": str(self.device),
            "seconds": {"train": round(time.perf_counter() - self.started, 3)},
            **info,
        }
        return finish(self.model), summary


class FineTune:
    name: ClassVar[str] = "ft"
    Config: ClassVar[type[MethodConfig]] = FtConfig

    def run(
        self,
        model: Classifier,
        splits: UnlearningSplits,
        config: FtConfig,
        progress: Progress,
        should_stop: ShouldStop,
    ) -> tuple[Classifier, dict[str, Any]]:
        retain = splits.retain
        run = SgdRun.over(model, config, retain, progress, should_stop)
        for x_r, y_r in run.epochs(retain, "fine-tune"):
            with run.autocast():
                loss = F.cross_entropy(run.model(x_r).float(), y_r)
            run.update(loss, "fine-tune")
        return run.result(epochs=config.epochs, train_samples=len(retain))


register(FineTune())
