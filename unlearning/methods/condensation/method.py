"""Dataset-condensation unlearning (Khan, 2024): train on a reduced retain set with a modular schedule.

The reduced retain set (`condense.py`): the train set is split into feature-space sub-classes
per class; sub-classes that hold a forget sample keep their real retain images, clean ones are replaced
by one condensed image each. Condensation depends only on the model version, so it is cached: the first
request against a version pays for it, later ones load it (`info["condensed_cache_hit"]`).

The modular schedule. After the paper's code, the network is three modules: the beginning (the first
`beginning_fraction` of the feature extractor's parameter tensors in registration order: the MLP's first
hidden layer; the small ResNet's stem, first block and the start of the second), the intermediate (the
rest of the feature extractor) and the final module (the head). On the reduced retain set only:
    phase "beginning":    only the beginning learns (`beginning_epochs`);
    phase "final":        the head is re-initialised, then only it learns (`final_epochs`);
    phase "intermediate": the intermediate and the head learn (`intermediate_epochs`).
Ours, not the paper's: the paper trains its final module on a few held-out images per class and repeats
the first two phases; we re-initialise the head and train it on the reduced set, once. The re-initialised
head is what forgets: it never sees a forget sample (a forgotten class gets no positive example at all),
while the features it sits on move only a little. Each phase is the base recipe's optimiser (SGD with
momentum, one-cycle; `unlearning.training.train_model`); batch-norm statistics follow the reduced set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from unlearning.methods.base import register
from unlearning.methods.common import Job, Method
from unlearning.methods.condensation.condense import reduce_retain_in
from unlearning.methods.condensation.config import CondensationConfig
from unlearning.training import TrainRecipe, train_model

if TYPE_CHECKING:
    from models.base import Classifier

CONDENSE_SHARE = 0.5
"""Share of the progress bar for condensation when the cache misses."""

MIN_PHASE_STEPS = 8
"""A phase takes at least this many optimiser steps: the batch shrinks when the reduced set is tiny (a
class-wise request on a small dataset), which also keeps the one-cycle schedule well defined."""


def module_of(model: Classifier, beginning_fraction: float) -> dict[str, str]:
    """Parameter name -> "beginning" | "intermediate" | "final" (see the module docstring)."""
    head = {id(param) for param in model.head.parameters()}
    named = list(model.named_parameters())
    feature_names = [name for name, param in named if id(param) not in head]
    cut = max(1, round(beginning_fraction * len(feature_names)))
    modules = {name: "beginning" if row < cut else "intermediate" for row, name in enumerate(feature_names)}
    modules.update({name: "final" for name, param in named if id(param) in head})
    return modules


def reinitialise_head(model: Classifier, seed: int) -> None:
    """A fresh head (the architecture's own initialisation, seeded), leaving the global RNG untouched."""
    if not isinstance(model.head, torch.nn.Linear):
        raise TypeError(f"expected the model's head to be an nn.Linear, got {type(model.head).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.head.reset_parameters()


class Condensation(Method[CondensationConfig]):
    name = "condensation"
    Config = CondensationConfig

    def unlearn(self, job: Job[CondensationConfig]) -> tuple[Classifier, dict[str, Any]]:
        config = job.config
        reduction = reduce_retain_in(job, config.condense, CONDENSE_SHARE)
        reduced = reduction.images
        student = job.working_copy()
        modules = module_of(student, config.beginning_fraction)
        phases = [
            ("beginning", config.beginning_epochs, {"beginning"}),
            ("final", config.final_epochs, {"final"}),
            ("intermediate", config.intermediate_epochs, {"intermediate", "final"}),
        ]
        done = 0.0 if reduction.cache_hit else CONDENSE_SHARE
        per_epoch = (1 - done) / sum(epochs for _, epochs, _ in phases)
        for stage, epochs, trained in phases:
            if epochs == 0:
                continue
            if stage == "final":
                reinitialise_head(student, config.seed)
            for name, parameter in student.named_parameters():
                parameter.requires_grad_(modules[name] in trained)
            recipe = TrainRecipe(
                epochs=epochs,
                batch_size=min(config.batch_size, max(1, len(reduced) * epochs // MIN_PHASE_STEPS)),
                lr_max=config.lr_max,
                augment=config.augment,
                seed=config.seed,
            )
            with job.clock.stage(stage):
                student = train_model(
                    student,
                    reduced,
                    recipe,
                    device=job.device,
                    should_stop=job.should_stop,
                    progress=job.progress_span(done, per_epoch * epochs, stage),
                )
            done += per_epoch * epochs
        job.progress(1.0, "done")
        info = {
            **reduction.info(len(job.splits.retain)),
            "seconds": job.clock.rounded(),
            "device": str(job.device),
        }
        return student, info


register(Condensation())
