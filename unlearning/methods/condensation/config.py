"""Condensation's hyperparameters (how to condense, and the modular schedule), torch-free so the API
validates a request's params without loading the method; DAU reuses `CondenseSettings`."""

from __future__ import annotations

from pydantic import Field

from unlearning.methods.base import MethodConfig


class CondenseSettings(MethodConfig):
    """How the train set is condensed; part of the cache key (except `cache`)."""

    images_per_subclass: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Target sub-class size: K_c = ceil(n_c / this) (the paper's CIFAR runs: about 11). "
        "Smaller sub-classes leave more of them clean under scattered forgetting (random 10% forgetting "
        "leaves 0.9^10 = 35% of 10-image sub-classes clean, 59% of 5-image ones) but cost more to condense.",
    )
    steps: int = Field(
        100,
        ge=0,
        le=100_000,
        description="Most Adam steps on the blend weights per chunk of sub-classes; a chunk stops early "
        "once its loss improves by less than `tolerance` (relative) over `CHECK_EVERY` steps.",
    )
    tolerance: float = Field(0.01, ge=0, lt=1, description="Relative improvement that counts as progress.")
    lr: float = Field(0.1, gt=0, le=100, description="Adam learning rate of the blend logits w.")
    subclass_batch: int = Field(256, ge=1, le=100_000, description="Sub-classes optimised together.")
    seed: int = Field(0, ge=0, description="Seeds k-means.")
    cache: bool = Field(True, description="Reuse (and store) the condensed set of this model version.")


class CondensationConfig(MethodConfig):
    """Dataset-condensation unlearning; the schedule's defaults were chosen on digits (MLP), both
    scenarios, against retraining."""

    seed: int = Field(0, ge=0, description="Seeds the head's re-initialisation and the batches.")
    condense: CondenseSettings = Field(default_factory=CondenseSettings, description="How to condense.")
    beginning_fraction: float = Field(
        0.5, gt=0, lt=1, description="Share of the feature extractor's parameter tensors in the beginning."
    )
    beginning_epochs: int = Field(1, ge=0, le=1000, description="Epochs of phase beginning.")
    final_epochs: int = Field(3, ge=1, le=1000, description="Epochs of phase final (the fresh head).")
    intermediate_epochs: int = Field(3, ge=0, le=1000, description="Epochs of phase intermediate.")
    batch_size: int = Field(128, ge=1, le=8192)
    lr_max: float = Field(0.05, gt=0, le=10, description="Peak learning rate of each one-cycle phase.")
    augment: bool = Field(True, description="Crop + flip (images of 16 px and more).")
