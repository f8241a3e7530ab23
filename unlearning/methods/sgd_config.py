"""Hyperparameters of the SGD-based baselines (FT, GA, l1-sparse, SalUn, SCRUB), torch-free so the API
validates a request's params without loading the methods; each method's module documents its defaults."""

from __future__ import annotations

from pydantic import Field, model_validator

from unlearning.methods.base import MethodConfig


class SgdConfig(MethodConfig):
    """Optimiser and loop settings every SGD-based baseline has (each method sets its own defaults)."""

    seed: int = Field(0, ge=0, description="Seeds batch order, augmentation and any random labels.")
    epochs: int = Field(10, ge=1, le=1000, description="Passes over the method's training set.")
    batch_size: int = Field(128, ge=1, le=8192)
    lr: float = Field(0.01, gt=0, le=10, description="Constant SGD learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    augment: bool = Field(True, description="Crop + flip as in base training (images of 16 px or more).")
    amp: bool = Field(True, description="bf16 autocast on CUDA devices that support it (never on CPU).")


class FtConfig(SgdConfig):
    """Reference: 10 epochs, lr 0.01 (Jia et al. 2023)."""


class GaConfig(SgdConfig):
    """Reference: 5 epochs, lr 1e-4 (Jia et al. 2023)."""

    epochs: int = Field(5, ge=1, le=1000, description="Passes over the forget set.")
    lr: float = Field(1e-4, gt=0, le=10, description="Constant SGD learning rate of the ascent.")


class L1SparseConfig(SgdConfig):
    gamma: float = Field(1e-4, ge=0, le=1, description="Initial l1 weight; decays linearly to 0.")


class SalunConfig(SgdConfig):
    lr: float = Field(0.013, gt=0, le=10, description="Constant SGD learning rate.")
    saliency: float = Field(
        0.5,
        gt=0,
        le=1,
        description="gamma: share of (unpruned) weights that may change, by forget-gradient size.",
    )


class ScrubConfig(SgdConfig):
    epochs: int = Field(
        3, ge=1, le=1000, description="Epochs; each is a max pass (early ones) then a min pass."
    )
    max_epochs: int = Field(
        2, ge=0, le=1000, description="Epochs that start with a max pass over the forget set."
    )
    lr: float = Field(5e-4, gt=0, le=10, description="Constant SGD learning rate.")
    forget_batch_size: int = Field(32, ge=1, le=8192, description="Batch size of the max passes.")
    temperature: float = Field(4.0, gt=0, le=100, description="tau: distillation temperature.")
    alpha: float = Field(0.001, ge=0, le=1000, description="Weight of the retain KL term.")
    gamma: float = Field(0.99, ge=0, le=1000, description="Weight of the retain cross-entropy.")

    @model_validator(mode="after")
    def _check(self) -> ScrubConfig:
        if self.max_epochs > self.epochs:
            raise ValueError(f"max_epochs {self.max_epochs} is larger than epochs {self.epochs}")
        return self
