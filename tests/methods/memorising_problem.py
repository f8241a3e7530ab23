"""A tiny problem with a strong membership signal, for the DAU tests (imported by name).

Images are a faint class prototype under heavy noise, so an MLP memorises its training set (100% train
accuracy) while generalising poorly (about 40% on held-out images): members and non-members are easy to
tell apart, as for a real model trained long. Built once per session in a second or two on one thread.
"""

from __future__ import annotations

import functools

import torch
from baselines_helpers import Problem, one_thread, stop_after, trained_problem  # noqa: F401  (re-exported)
from baselines_helpers import state as snapshot  # noqa: F401  (re-exported)

from unlearning.data import ImageSet, make_dataset
from unlearning.training import TrainRecipe

NUM_CLASSES = 4
FORGET_CLASS = 1


def _image_set(prefix: str, count: int, prototypes: torch.Tensor, generator: torch.Generator) -> ImageSet:
    labels = torch.arange(count) % NUM_CLASSES
    pixels = 0.12 * prototypes[labels] + 0.88 * torch.rand(count, 1, 8, 8, generator=generator)
    images = (pixels * 255).round().clamp(0, 255).to(torch.uint8)
    return ImageSet(images, labels, [f"{prefix}/{index:04d}" for index in range(count)])


@functools.cache
def memorising_problem() -> Problem:
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.rand(NUM_CLASSES, 1, 8, 8, generator=generator)
    dataset = make_dataset(
        "memorising",
        [str(label) for label in range(NUM_CLASSES)],
        _image_set("train", 480, prototypes, generator),
        _image_set("val", 240, prototypes, generator),
        _image_set("test", 240, prototypes, generator),
    )
    recipe = TrainRecipe(epochs=60, batch_size=60, lr_max=0.1, augment=False, weight_decay=0.0)
    rows = torch.randperm(len(dataset.train), generator=generator)[:160]
    return trained_problem(dataset, recipe, width=128, forget_rows=rows, forget_class=FORGET_CLASS)
