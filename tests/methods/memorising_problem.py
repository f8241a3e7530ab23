"""A tiny problem with a strong membership signal, for the DAU tests (imported by name).

Images are a faint class prototype under heavy noise, so an MLP memorises its training set (100% train
accuracy) while generalising poorly (about 40% on held-out images): members and non-members are easy to
tell apart, as for a real model trained long. Built once per session in a second or two on one thread.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch

from models.base import Classifier
from unlearning.data import ImageSet, UnlearningSplits, make_dataset, make_splits
from unlearning.pipeline import train_base_model
from unlearning.training import TrainRecipe

NUM_CLASSES = 4
FORGET_CLASS = 1


@dataclass(frozen=True)
class Problem:
    model: Classifier
    random_splits: UnlearningSplits
    class_splits: UnlearningSplits


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
    with torch.random.fork_rng(devices=[]):
        model = train_base_model(dataset, "mlp", recipe, width=128, device="cpu")
    rows = torch.randperm(len(dataset.train), generator=generator)[:160]
    forget_ids = [dataset.train.sample_ids[row] for row in rows.tolist()]
    return Problem(
        model=model,
        random_splits=make_splits(dataset, forget_ids=forget_ids),
        class_splits=make_splits(dataset, forget_class=FORGET_CLASS),
    )


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and other jobs share the machine's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def snapshot(model: Classifier) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def stop_after(calls: int):  # type: ignore[no-untyped-def]
    """A should_stop that answers True from its (calls + 1)-th call on."""
    count = {"n": 0}

    def should_stop() -> bool:
        count["n"] += 1
        return count["n"] > calls

    return should_stop
