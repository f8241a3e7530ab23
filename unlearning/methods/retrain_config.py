"""Retrain's hyperparameters (the base recipe, with upper bounds), torch-free so the API validates a
request's params without loading the method."""

from __future__ import annotations

from pydantic import Field, model_validator

from unlearning.methods.base import MethodConfig
from unlearning.recipe import TrainRecipe

MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 8192
MAX_LR = 10.0


class RetrainConfig(MethodConfig):
    recipe: TrainRecipe = Field(
        default_factory=TrainRecipe,
        description="The base training recipe; callers pass the one the original model was trained with.",
    )
    init_seed: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Seed of the fresh initialisation (default: the recipe's seed, as the original was trained). A "
            "pruned model's mask was found from its initialisation, so a retrain of it keeps that one."
        ),
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
