"""Retrain: exact unlearning, the gold standard the others are measured against.

A fresh initialisation of the same architecture trained on the retain set alone with the base recipe,
so no forget sample can have left a trace. Pruning masks of the input model are kept.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field, model_validator

from models.registry import build_model
from unlearning.methods.base import MethodConfig, register
from unlearning.methods.common import finish
from unlearning.training import TrainRecipe, pick_device, train_model
from unlearning.types import Progress, ShouldStop

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import UnlearningSplits

MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 8192
MAX_LR = 10.0


class RetrainConfig(MethodConfig):
    recipe: TrainRecipe = Field(
        default_factory=TrainRecipe,
        description="The base training recipe; callers pass the one the original model was trained with.",
    )

    @model_validator(mode="after")
    def _refuse_absurd(self) -> RetrainConfig:
        recipe = self.recipe
        for field, value, limit in (
            ("epochs", recipe.epochs, MAX_EPOCHS),
            ("batch_size", recipe.batch_size, MAX_BATCH_SIZE),
            ("lr_max", recipe.lr_max, MAX_LR),
        ):
            if value > limit:
                raise ValueError(f"recipe.{field} = {value} is above the limit {limit}")
        return self


class Retrain:
    name = "retrain"
    Config = RetrainConfig

    def run(
        self,
        model: Classifier,
        splits: UnlearningSplits,
        config: RetrainConfig,
        progress: Progress,
        should_stop: ShouldStop,
    ) -> tuple[Classifier, dict[str, Any]]:
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.recipe.seed)
            fresh = build_model(model.spec)
        fresh.set_masks({name: mask.cpu() for name, mask in model.masks.items()})
        trained = train_model(
            fresh,
            splits.retain,
            config.recipe,
            progress=lambda fraction, _stage: progress(fraction, "retrain"),
            should_stop=should_stop,
            device=pick_device(),
        )
        seconds = time.perf_counter() - start
        info = {
            "epochs": config.recipe.epochs,
            "train_samples": len(splits.retain),
            "seconds": {"train": round(seconds, 3)},
        }
        return finish(trained), info


register(Retrain())
