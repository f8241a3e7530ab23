"""Architectures built by other code: torchvision's classification models, timm's models (optional extra)
and in-house modules registered under the entry-point group `unlearn.architectures`.

Each builder returns a freshly initialised `nn.Module` (never downloaded weights) that maps normalised
B x C x H x W images to B x num_classes logits; `models.registry.build_model` wraps it as a `Classifier`.

- `torchvision/<name>`: `torchvision.models.get_model(name, weights=None, num_classes=...)`; ViTs get
  `image_size`, MaxViT `input_size`. For `in_channels` other than 3 the first convolution is replaced by one
  taking that many channels (the usual way to adapt a torchvision model to greyscale), same name and
  settings, so the state dict keeps its names.
- `timm/<name>`: `timm.create_model(name, pretrained=False, num_classes=..., in_chans=...)` (plus
  `img_size` for models that take it).
- `plugin/<name>`: the entry point `<name>` of the group `unlearn.architectures` names a callable (an
  `nn.Module` class or a factory). It is called with those of `num_classes`, `in_channels`, `image_size`,
  `width` (when set) and `spec` (the `ModelSpec`) that its signature accepts (all of them if it takes
  `**kwargs`). It may return a `models.base.Classifier`, used as it is, or any `nn.Module`, wrapped.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from importlib import metadata
from typing import Any

from torch import nn

from models.spec import ENTRY_POINT_GROUP, ModelSpec, split_architecture


class UnknownArchitecture(ValueError):
    """No architecture of that name can be built here."""


def build_backbone(spec: ModelSpec) -> nn.Module:
    source, name = split_architecture(spec.architecture)
    builders: dict[str, Callable[[str, ModelSpec], nn.Module]] = {
        "torchvision": torchvision_model,
        "timm": timm_model,
        "plugin": plugin_model,
    }
    if source not in builders:
        raise UnknownArchitecture(f"unknown architecture {spec.architecture!r}")
    return builders[source](name, spec)


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def torchvision_names() -> list[str]:
    import torchvision.models

    return sorted(torchvision.models.list_models(module=torchvision.models))


def torchvision_model(name: str, spec: ModelSpec) -> nn.Module:
    import torchvision
    import torchvision.models

    known = torchvision_names()
    if name not in known:
        raise UnknownArchitecture(
            f"torchvision {torchvision.__version__} has no classification model {name!r}"
            + _suggest(name, known)
        )
    kwargs: dict[str, Any] = {"weights": None, "num_classes": spec.num_classes}
    if name.startswith("vit_"):
        kwargs["image_size"] = spec.image_size
    elif name.startswith("maxvit"):
        kwargs["input_size"] = (spec.image_size, spec.image_size)
    model = torchvision.models.get_model(name, **kwargs)
    if spec.in_channels != 3:
        adapt_input_channels(model, spec.in_channels, spec.architecture)
    return model


def adapt_input_channels(model: nn.Module, channels: int, architecture: str) -> None:
    """Replace the first 2-d convolution by one that takes `channels` input channels, in place."""
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        if module.groups != 1:
            break
        replacement = nn.Conv2d(
            channels,
            module.out_channels,
            module.kernel_size,  # type: ignore[arg-type]
            stride=module.stride,  # type: ignore[arg-type]
            padding=module.padding,  # type: ignore[arg-type]
            dilation=module.dilation,  # type: ignore[arg-type]
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
        )
        parent_name, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attribute, replacement)
        return
    raise UnknownArchitecture(f"{architecture} has no plain first convolution to take {channels} channels")


def timm_model(name: str, spec: ModelSpec) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise UnknownArchitecture(
            f"timm/{name} needs the optional timm package: pip install 'unlearn-service[timm]'"
        ) from None
    if not timm.is_model(name):
        raise UnknownArchitecture(f"timm {timm.__version__} has no model {name!r}")
    kwargs: dict[str, Any] = {
        "pretrained": False,
        "num_classes": spec.num_classes,
        "in_chans": spec.in_channels,
    }
    try:
        return timm.create_model(name, img_size=spec.image_size, **kwargs)
    except TypeError:  # most convolutional nets take no img_size
        return timm.create_model(name, **kwargs)


def plugin_names() -> list[str]:
    return sorted({entry.name for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)})


def plugin_model(name: str, spec: ModelSpec) -> nn.Module:
    entries = [entry for entry in metadata.entry_points(group=ENTRY_POINT_GROUP) if entry.name == name]
    if not entries:
        known = plugin_names()
        raise UnknownArchitecture(
            f"no entry point {name!r} in the group {ENTRY_POINT_GROUP!r} (installed: {known or 'none'})"
            + _suggest(name, known)
        )
    try:
        factory = entries[0].load()
    except Exception as error:
        raise UnknownArchitecture(f"plugin/{name}: loading {entries[0].value!r} failed: {error}") from error
    offered: dict[str, Any] = {
        "num_classes": spec.num_classes,
        "in_channels": spec.in_channels,
        "image_size": spec.image_size,
        "spec": spec,
    }
    if spec.width is not None:
        offered["width"] = spec.width
    module = factory(**_accepted(factory, offered))
    if not isinstance(module, nn.Module):
        raise UnknownArchitecture(f"plugin/{name} returned {type(module).__name__}, not an nn.Module")
    return module


def _accepted(factory: Callable[..., Any], offered: dict[str, Any]) -> dict[str, Any]:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return offered
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return offered
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {key: value for key, value in offered.items() if key in names}
