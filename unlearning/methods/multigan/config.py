"""Multi-GAN's hyperparameters (both GANs' budget, the synthetic ratios, the label inversion rule),
torch-free so the API validates a request's params without loading the method."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from unlearning.methods.base import MethodConfig

MIN_FORGET_SAMPLES = 2
"""The forget GAN's batch normalisation needs two samples per batch."""

InversionRule = Literal["least_likely", "runner_up", "shift"]
"""How forget labels are inverted (`method.py`'s docstring)."""


class GanConfig(MethodConfig):
    """One conditional GAN's size and training budget (both GANs of `multigan` use the same)."""

    latent_dim: int = Field(64, ge=1, le=1024, description="Size of the noise vector z.")
    width: int = Field(
        16,
        ge=1,
        le=512,
        description="Channels of the generator's last block (and the discriminator's first); they double "
        "per block towards the seed. 16 keeps a 32x32 generator near 7 MMAC per image on two CPU cores.",
    )
    steps: int = Field(300, ge=1, le=1_000_000, description="Generator steps (one D step precedes each).")
    batch_size: int = Field(64, ge=2, le=4096)
    lr: float = Field(2e-4, gt=0, le=1, description="Adam learning rate of G and D (DCGAN).")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1 of G and D (DCGAN).")


class MultiGanConfig(MethodConfig):
    """Multi-GAN unlearning. Budgets (GAN steps, widths, epochs) are sized for the cpu bench's two cores;
    the learning rates and ratios were checked on digits only."""

    seed: int = Field(0, ge=0, description="Seeds the retain subsample, GAN training, sampling and batches.")
    retain_fraction: float = Field(
        1.0, gt=0, le=1, description="Share of the real retain set the method may read (GAN and fine-tune)."
    )
    gan: GanConfig = Field(default_factory=GanConfig, description="Both GANs' size and training budget.")
    forget_gan_steps: int | None = Field(
        150,
        ge=1,
        le=1_000_000,
        description="Steps of the forget GAN (its data is usually ten times smaller); None = gan.steps.",
    )
    synthetic_retain_ratio: float = Field(
        0.2, ge=0, le=10, description="Synthetic retain images per real retain image (of the full set)."
    )
    synthetic_forget_ratio: float = Field(
        1.0, ge=0, le=10, description="Synthetic forget images per forget image."
    )
    inversion: InversionRule = Field(
        "least_likely", description="How forget labels are inverted (see the module docstring)."
    )
    finetune_epochs: int = Field(3, ge=1, le=1000, description="Epochs over the combined set.")
    batch_size: int = Field(128, ge=1, le=8192)
    lr_max: float = Field(0.01, gt=0, le=10, description="Peak learning rate of the one-cycle fine-tune.")
    augment: bool = Field(True, description="Crop + flip during the fine-tune (images of 16 px and more).")

    def unservable_reason(self, *, forget_count: int, class_wise: bool) -> str | None:
        if forget_count < MIN_FORGET_SAMPLES:
            return (
                f"multigan fits a GAN (with batch normalisation) to the forget set, which needs at least "
                f"{MIN_FORGET_SAMPLES} samples; this request forgets {forget_count}"
            )
        return None
