"""The serialisable description of a network: enough to rebuild it from a checkpoint.

Torch-free on purpose, so the HTTP edge can validate a checkpoint header without importing torch.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Architecture = Literal["resnet18", "resnet_small", "mlp"]


class ModelSpec(BaseModel):
    """Architecture name plus the input geometry and the normalisation the model applies first."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: Architecture
    num_classes: int = Field(ge=2)
    in_channels: int = Field(ge=1)
    image_size: int = Field(ge=1, description="Height and width of the square input images, in pixels.")
    mean: list[float] = Field(description="Per-channel mean of inputs in [0, 1], subtracted first.")
    std: list[float] = Field(description="Per-channel standard deviation, divided by after the mean.")
    width: int | None = Field(
        default=None,
        ge=1,
        description="Base channel (or hidden unit) count; None = the architecture's default.",
    )

    @model_validator(mode="after")
    def _check_normalisation(self) -> "ModelSpec":
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != self.in_channels:
                raise ValueError(
                    f"{name} has {len(values)} values but in_channels is {self.in_channels}: "
                    "need one per channel"
                )
        bad = [s for s in self.std if not s > 0]
        if bad:
            raise ValueError(f"std values must be > 0, got {self.std}")
        return self
