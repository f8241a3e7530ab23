"""Architectures by name: the one place that maps `ModelSpec.architecture` to a constructor.

The service's own networks are `ARCHITECTURES`; `torchvision/<name>`, `timm/<name>` and `plugin/<name>`
are built by `models.external` and wrapped by `models.backbone.BackboneClassifier` (see `models.spec` for
the names and `models.backbone` for how features and head are found).
"""

from __future__ import annotations

from collections.abc import Callable

from models.backbone import BackboneClassifier, UnsupportedArchitecture
from models.base import Classifier
from models.external import UnknownArchitecture, build_backbone, plugin_names
from models.mlp import mlp
from models.resnet import resnet18, resnet_small
from models.spec import BUILTIN_ARCHITECTURES, ModelSpec

__all__ = [
    "ARCHITECTURES",
    "UnknownArchitecture",
    "UnsupportedArchitecture",
    "build_model",
    "known_architectures",
]

ARCHITECTURES: dict[str, Callable[[ModelSpec], Classifier]] = {
    "resnet18": resnet18,
    "resnet_small": resnet_small,
    "mlp": mlp,
}
assert tuple(ARCHITECTURES) == BUILTIN_ARCHITECTURES


def build_model(spec: ModelSpec) -> Classifier:
    """A freshly initialised model for `spec` (seed torch first for a reproducible init).

    Raises `UnknownArchitecture` (no such model) or `UnsupportedArchitecture` (no linear classifier layer),
    both ValueErrors.
    """
    if spec.architecture in ARCHITECTURES:
        return ARCHITECTURES[spec.architecture](spec)
    backbone = build_backbone(spec)
    if isinstance(backbone, Classifier):
        if backbone.spec != spec:
            raise UnsupportedArchitecture(f"{spec.architecture} built a Classifier for another spec")
        return backbone
    return BackboneClassifier(spec, backbone)


def known_architectures() -> list[str]:
    """The built-ins, every torchvision classification model and every plugin (timm's are too many to
    list: any `timm/<name>` with `timm.list_models()`)."""
    from models.external import torchvision_names

    return [
        *ARCHITECTURES,
        *(f"torchvision/{name}" for name in torchvision_names()),
        *(f"plugin/{name}" for name in plugin_names()),
    ]
