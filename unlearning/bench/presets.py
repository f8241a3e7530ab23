"""Bench presets (DESIGN section 11): which data, which network, which base recipe.

- `smoke`: scikit-learn digits and the MLP; seconds; run in CI.
- `cpu`: the CIFAR-10 JPEG cpu split (10,000 train / 1,000 val / 2,000 test) and the small ResNet,
  30 epochs of SGD (momentum 0.9, weight decay 5e-4, one-cycle max lr 0.05, batch 128, crop + flip).
- `gpu`: full CIFAR-10 (45,000 / 5,000 / 10,000) and ResNet-18 with the CIFAR stem, same recipe.
The retrain row uses the preset's recipe, so retraining is exactly how the original was made minus the
forget set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from models.spec import Architecture
from unlearning.data import Dataset
from unlearning.training import TrainRecipe

PresetName = Literal["smoke", "cpu", "gpu"]


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: PresetName
    data: Literal["digits", "cifar10-cpu", "cifar10-full"]
    """A name `unlearning.pipeline.resolve_data` understands."""
    architecture: Architecture
    recipe: TrainRecipe
    """Base recipe (its seed is replaced by the bench seed)."""

    def with_architecture(self, architecture: str) -> Preset:
        """The preset on another network (any name `models.spec` accepts: `torchvision/resnet18`, ...)."""
        return Preset.model_validate({**self.model_dump(), "architecture": architecture})

    def recipe_for(self, seed: int) -> TrainRecipe:
        return self.recipe.model_copy(update={"seed": seed})

    def load(self, data_path: Path | None, seed: int) -> Dataset:
        """The preset's dataset; `data_path` is the CIFAR-10 archive or tree (ignored for digits)."""
        from unlearning.pipeline import resolve_data

        return resolve_data(self.data, cifar10_path=data_path, seed=seed)


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke",
        data="digits",
        architecture="mlp",
        recipe=TrainRecipe(epochs=40, batch_size=64, lr_max=0.05, augment=False),
    ),
    "cpu": Preset(name="cpu", data="cifar10-cpu", architecture="resnet_small", recipe=TrainRecipe()),
    "gpu": Preset(name="gpu", data="cifar10-full", architecture="resnet18", recipe=TrainRecipe()),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}") from None
