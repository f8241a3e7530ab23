"""Hyperparameters of the second-order baselines (FF, IU) and of the step-size rule they share
(`second_order.py`), torch-free so the API validates a request's params without loading the methods."""

from __future__ import annotations

from pydantic import Field

from unlearning.methods.base import MethodConfig


class PerturbationConfig(MethodConfig):
    """Settings of the step-size rule (module docstring) and of the samples the curvature is taken on."""

    seed: int = Field(0, ge=0, description="Seeds the sample choice (and FF's noise).")
    max_retain_drop: float = Field(
        2.0, ge=0, le=100, description="Percentage points of retain-probe accuracy the change may cost."
    )
    probe_size: int = Field(1024, ge=16, le=100_000, description="Retain samples in the accuracy probe.")
    chunk_size: int = Field(64, ge=1, le=4096, description="Samples per vectorised per-sample-gradient pass.")


class FfConfig(PerturbationConfig):
    fisher_samples: int = Field(
        500,
        ge=1,
        le=1_000_000,
        description="Retain samples the Fisher is taken on (cost: one backward pass per sample and class).",
    )
    variance_cap: float = Field(
        1000.0,
        gt=0,
        le=1e9,
        description="c: no weight's noise variance exceeds c times that of a weight with the mean Fisher.",
    )


class IuConfig(PerturbationConfig):
    retain_samples: int = Field(
        1000, ge=1, le=1_000_000, description="N: retain gradients in the WoodFisher."
    )
    damping: float = Field(
        1e-3, gt=0, le=1e6, description="lambda relative to the mean diagonal of the empirical Fisher."
    )
    max_gradient_gib: float = Field(
        8.0, gt=0, le=1024, description="Memory cap on the N x P gradient matrix."
    )
