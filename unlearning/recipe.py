"""The base training recipe, torch-free so the HTTP edge can validate it (`unlearning.training` runs it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TrainRecipe(BaseModel):
    """SGD with momentum and a one-cycle learning-rate schedule (DESIGN section 11)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr_max: float = Field(default=0.05, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    augment: bool = True
    seed: int = 0
