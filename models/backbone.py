"""Any classification `nn.Module` as a `Classifier`: normalisation first, its classifier layer as the head.

The head rule (how methods find penultimate features on any architecture):
1. when the module has `get_classifier()` (timm's convention) returning an `nn.Linear` with `num_classes`
   outputs, that layer;
2. otherwise the last `nn.Linear` in registration order (`named_modules()`) with `num_classes` outputs:
   torchvision's `fc` (ResNets), `classifier.<n>` (MobileNets, EfficientNets, ConvNeXts), `heads.head`
   (ViTs), an in-house net's final linear layer.
`features(x)` is the input of that layer, taken by a forward pre-hook during one forward pass of the whole
module, and `head` is the layer itself, so `head(features(x)) == forward(x)` whenever the layer is the
module's last operation. The upload check verifies that on real images; a module without such a layer
(squeezenet's convolutional classifier) is refused with `UnsupportedArchitecture`.

The wrapped module's tensors keep their own names in checkpoints (`checkpoint_prefix` "backbone." is
stripped) and the normalisation lives in the spec, not in the state dict, so a checkpoint loads into a
fresh instance of the user's module with `load_state_dict(strict=True)`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from models.base import Classifier
from models.spec import ModelSpec


class UnsupportedArchitecture(ValueError):
    """The architecture exists but cannot serve as a `Classifier` (no linear classifier layer, ...)."""


def find_head(module: nn.Module, num_classes: int) -> str:
    """The name (in `module.named_modules()`) of its classifier layer, by the rule in the module docstring."""
    get_classifier = getattr(module, "get_classifier", None)
    if callable(get_classifier):
        try:
            candidate = get_classifier()
        except Exception:  # a model's own accessor failing is no reason to give up on rule 2
            candidate = None
        if isinstance(candidate, nn.Linear) and candidate.out_features == num_classes:
            for name, sub in module.named_modules():
                if sub is candidate:
                    return name
    last: str | None = None
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear) and sub.out_features == num_classes:
            last = name
    if last is None:
        raise UnsupportedArchitecture(
            f"{type(module).__name__} has no nn.Linear classifier layer with {num_classes} outputs: the "
            "unlearning methods need one (features = its input, logits = its output)"
        )
    return last


def logits_of(output: Any) -> Tensor:
    """The logits of a module's output: the tensor itself, or the first element of a tuple (the main
    output of models that also return auxiliary logits in training mode, such as GoogLeNet)."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(f"the model returned {type(output).__name__}, not a tensor of logits")


class BackboneClassifier(Classifier):
    """A `Classifier` around `backbone`, a module mapping normalised B x C x H x W images to logits."""

    checkpoint_prefix = "backbone."

    def __init__(self, spec: ModelSpec, backbone: nn.Module) -> None:
        super().__init__(spec, normalisation_in_state=False)
        self.backbone = backbone
        self.head_name = find_head(backbone, spec.num_classes)
        self.feature_dim = self.head.in_features

    @property  # type: ignore[override]
    def head(self) -> nn.Linear:  # a view into the backbone, not a second registration of the layer
        layer = self.backbone.get_submodule(self.head_name)
        assert isinstance(layer, nn.Linear)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        return logits_of(self.backbone(self.normalise(x)))

    def features(self, x: Tensor) -> Tensor:
        """The input of the classifier layer during a forward pass of [0, 1] inputs."""
        captured: list[Tensor] = []

        def keep_input(_module: nn.Module, args: tuple[Any, ...]) -> None:
            captured.append(args[0])

        handle = self.head.register_forward_pre_hook(keep_input)
        try:
            self.backbone(self.normalise(x))
        finally:
            handle.remove()
        if len(captured) != 1:
            raise UnsupportedArchitecture(
                f"{self.spec.architecture}: its classifier layer {self.head_name!r} ran {len(captured)} "
                "times in one forward pass, expected once"
            )
        return captured[0]
