"""Architectures by name: the one place that maps `ModelSpec.architecture` to a constructor."""

from __future__ import annotations

from collections.abc import Callable

from models.base import Classifier
from models.mlp import mlp
from models.resnet import resnet18, resnet_small
from models.spec import ModelSpec

ARCHITECTURES: dict[str, Callable[[ModelSpec], Classifier]] = {
    "resnet18": resnet18,
    "resnet_small": resnet_small,
    "mlp": mlp,
}


def build_model(spec: ModelSpec) -> Classifier:
    """A freshly initialised model for `spec` (seed torch first for a reproducible init)."""
    try:
        constructor = ARCHITECTURES[spec.architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {spec.architecture!r}; known: {sorted(ARCHITECTURES)}"
        ) from None
    return constructor(spec)
