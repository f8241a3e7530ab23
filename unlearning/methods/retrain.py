"""Retrain: exact unlearning, the gold standard the others are measured against.

A fresh initialisation of the same architecture trained on the retain set alone with the base recipe,
so no forget sample can have left a trace. Pruning masks of the input model are kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from models.registry import build_model
from unlearning.methods.base import register
from unlearning.methods.common import Job, Method
from unlearning.methods.retrain_config import RetrainConfig
from unlearning.training import train_model

if TYPE_CHECKING:
    from models.base import Classifier


class Retrain(Method[RetrainConfig]):
    name = "retrain"
    Config = RetrainConfig

    def unlearn(self, job: Job[RetrainConfig]) -> tuple[Classifier, dict[str, Any]]:
        recipe, retain = job.config.recipe, job.splits.retain
        with job.clock.stage("train"):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(recipe.seed if job.config.init_seed is None else job.config.init_seed)
                fresh = build_model(job.model.spec)
            fresh.set_masks({name: mask.cpu() for name, mask in job.model.masks.items()})
            trained = train_model(
                fresh,
                retain,
                recipe,
                progress=job.progress_span(0.0, 1.0, "retrain"),
                should_stop=job.should_stop,
                device=job.device,
            )
        info = {"epochs": recipe.epochs, "train_samples": len(retain), "seconds": job.clock.rounded()}
        return trained, info


register(Retrain())
