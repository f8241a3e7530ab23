"""FT: fine-tune on the retain set, the simplest baseline of Jia et al. 2023 ("Model sparsity can
simplify machine unlearning"); also the SGD loop the other training-based baselines share.

Symbols: theta the model's weights, D_r the retain set, CE the cross-entropy.

    min_theta  CE(theta; D_r)        `epochs` passes, SGD with momentum, constant learning rate

Forgetting comes only from catastrophic forgetting of what D_r does not support. The defaults are the
reference's (10 epochs, lr 0.01, momentum 0.9, weight decay 5e-4) with the project's base batch size.

`SgdRun` is the loop GA, l1-sparse, SalUn and SCRUB reuse: a working copy in train mode, one SGD
optimiser, seeded shuffled passes over image sets (crop + flip when the base recipe would), bf16
autocast on CUDA, progress and cancellation every step, pruning masks re-applied after every step, and
optionally weights frozen element-wise (SalUn's saliency mask). `SgdMethod` is the method built on it
that FT, GA, l1-sparse and SalUn are: `epochs` passes over one image set minimising one loss.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from unlearning.methods.base import register
from unlearning.methods.common import Job, Method, batch_to, optimiser_step, raise_if_stopped
from unlearning.methods.sgd_config import FtConfig, SgdConfig
from unlearning.training import (
    AUGMENT_MIN_SIZE,
    augment,
    autocast,
    epoch_batches,
    memory_format_for,
    needs_grad_scaler,
    seeded_generator,
)

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import ImageSet

SgdConfigT = TypeVar("SgdConfigT", bound=SgdConfig)


def steps_per_pass(count: int, batch_size: int) -> int:
    return -(-count // batch_size)


class SgdRun(Generic[SgdConfigT]):
    """A working copy of the job's model trained by SGD over passes of image sets; `result()` hands it back.

    `freeze(keep)` pins entries to their current values (see there).
    """

    def __init__(self, job: Job[SgdConfigT], *, total_steps: int) -> None:
        config = self.config = job.config
        self.device = job.device
        self.model = job.working_copy().train()
        self.model.requires_grad_(True)
        self.memory_format = memory_format_for(self.model, self.device)
        self.generator = seeded_generator(config.seed)
        self.optimiser = torch.optim.SGD(
            self.model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        self.amp = config.amp and self.device.type == "cuda" and not needs_grad_scaler(self.device)
        self.total_steps = max(1, total_steps)
        self.steps = 0
        self.progress = job.progress
        self.should_stop = job.should_stop
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
    def over(cls, job: Job[SgdConfigT], data: ImageSet) -> SgdRun[SgdConfigT]:
        """A run whose budget is `config.epochs` passes over `data` (see `epochs`)."""
        return cls(job, total_steps=job.config.epochs * steps_per_pass(len(data), job.config.batch_size))

    def epochs(self, data: ImageSet, stage: str) -> Iterator[tuple[Tensor, Tensor]]:
        """`config.epochs` shuffled passes over `data`, batch after batch."""
        for _ in range(self.config.epochs):
            yield from self.passes(data, stage)

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        return autocast(self.device) if self.amp else contextlib.nullcontext()

    def logits(self, x: Tensor) -> Tensor:
        """The model's float32 logits on `x` (the forward under autocast when AMP is on)."""
        with self.autocast():
            return self.model(x).float()

    def passes(
        self, data: ImageSet, stage: str, *, batch_size: int | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One shuffled pass over `data`: (float images on the device, labels); checks for a stop first."""
        size = batch_size or self.config.batch_size
        augmented = self.config.augment and min(data.images.shape[2:]) >= AUGMENT_MIN_SIZE
        for index in epoch_batches(len(data), size, self.generator, fold_single=True):
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
        return self.model, summary


class SgdMethod(Method[SgdConfigT]):
    """`config.epochs` SGD passes over one image set, one `loss` per batch (stage `stage` throughout).

    A subclass writes the loss; it may train on another set than D_r (`training_set`) and set the run
    up before its first step (`prepare`, which returns extra entries for `info`)."""

    stage: ClassVar[str]

    def unlearn(self, job: Job[SgdConfigT]) -> tuple[Classifier, dict[str, Any]]:
        data = self.training_set(job)
        run = SgdRun.over(job, data)
        extra_info = self.prepare(run, job)
        for x, y in run.epochs(data, self.stage):
            run.update(self.loss(run, x, y), self.stage)
        return run.result(epochs=job.config.epochs, train_samples=len(data), **extra_info)

    def training_set(self, job: Job[SgdConfigT]) -> ImageSet:
        return job.splits.retain

    def loss(self, run: SgdRun[SgdConfigT], x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def prepare(self, run: SgdRun[SgdConfigT], job: Job[SgdConfigT]) -> dict[str, Any]:
        return {}


class FineTune(SgdMethod[FtConfig]):
    """min_theta CE(theta; D_r)."""

    name = "ft"
    Config = FtConfig
    stage = "fine-tune"

    def loss(self, run: SgdRun[FtConfig], x_r: Tensor, y_r: Tensor) -> Tensor:
        return F.cross_entropy(run.logits(x_r), y_r)


register(FineTune())
