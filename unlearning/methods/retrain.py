"""Retrain: exact unlearning, the gold standard the others are measured against.

A fresh initialisation of the same architecture trained on the retain set alone with the base recipe,
so no forget sample can have left a trace. Pruning masks of the input model are kept.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from models.registry import build_model
from unlearning.methods.base import register
from unlearning.methods.common import finish
from unlearning.methods.retrain_config import RetrainConfig
from unlearning.training import pick_device, train_model
from unlearning.types import Progress, ShouldStop

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import UnlearningSplits


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
