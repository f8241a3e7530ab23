"""A tiny unlearning problem shared by the baseline tests: scikit-learn's digits and a small MLP; and what
every method test shares (the problem record, the one-thread fixture, weight snapshots, should_stop).

Trained once per test session (about a second with one thread); tests must not modify the model.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch

from models.base import Classifier
from unlearning.data import Dataset, UnlearningSplits, load_digits, make_splits
from unlearning.pipeline import train_base_model
from unlearning.training import TrainRecipe, accuracy

FORGET_CLASS = 0


@dataclass(frozen=True)
class Problem:
    dataset: Dataset
    model: Classifier
    class_splits: UnlearningSplits
    random_splits: UnlearningSplits


def trained_problem(
    dataset: Dataset, recipe: TrainRecipe, *, width: int, forget_rows: torch.Tensor, forget_class: int
) -> Problem:
    """An MLP trained on `dataset` (the global RNG left as it was), with a class-wise and a random split."""
    with torch.random.fork_rng(devices=[]):
        model = train_base_model(dataset, "mlp", recipe, width=width, device="cpu")
    forget_ids = [dataset.train.sample_ids[row] for row in forget_rows.tolist()]
    return Problem(
        dataset=dataset,
        model=model,
        class_splits=make_splits(dataset, forget_class=forget_class),
        random_splits=make_splits(dataset, forget_ids=forget_ids),
    )


@functools.cache
def digits_problem() -> Problem:
    dataset = load_digits()
    recipe = TrainRecipe(epochs=60, batch_size=256, lr_max=0.2, augment=False)
    rows = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(0))
    return trained_problem(
        dataset, recipe, width=32, forget_rows=rows[: len(dataset.train) // 10], forget_class=FORGET_CLASS
    )


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and other jobs share this machine's two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def accuracies(model: Classifier, splits: UnlearningSplits) -> dict[str, float]:
    return {
        "forget": accuracy(model, splits.forget),
        "retain": accuracy(model, splits.retain),
        "test": accuracy(model, splits.test),
    }


def state(model: Classifier) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def stop_after(calls: int):  # type: ignore[no-untyped-def]
    """A should_stop that says stop from its (calls + 1)-th call on, counting how often it was asked."""
    count = {"n": 0}

    def should_stop() -> bool:
        count["n"] += 1
        return count["n"] > calls

    should_stop.count = count  # type: ignore[attr-defined]
    return should_stop
