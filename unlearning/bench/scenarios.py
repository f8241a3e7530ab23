"""The two forgetting scenarios of the DAU paper's evaluation.

- `random`: a seeded 10% of the train split, drawn uniformly (so every class loses about 10%).
- `class`: every train sample of one class (`forget_class`, default 0).
"""

from __future__ import annotations

from typing import Literal

import torch

from unlearning.data import Dataset, UnlearningSplits, make_splits

Scenario = Literal["random", "class"]
SCENARIOS: tuple[Scenario, ...] = ("random", "class")
RANDOM_FORGET_FRACTION = 0.1
DEFAULT_FORGET_CLASS = 0


def scenario_splits(
    dataset: Dataset, scenario: Scenario, *, seed: int, forget_class: int | None = None
) -> UnlearningSplits:
    if scenario == "random":
        if forget_class is not None:
            raise ValueError("--forget-class applies to the class scenario only")
        count = max(1, round(RANDOM_FORGET_FRACTION * len(dataset.train)))
        rows = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(seed))[:count]
        forget_ids = [dataset.train.sample_ids[row] for row in sorted(rows.tolist())]
        return make_splits(dataset, forget_ids=forget_ids)
    if scenario == "class":
        return make_splits(
            dataset, forget_class=DEFAULT_FORGET_CLASS if forget_class is None else forget_class
        )
    raise ValueError(f"unknown scenario {scenario!r}; known: {list(SCENARIOS)}")
