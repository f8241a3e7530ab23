"""The `Classifier` base every architecture extends: normalisation first, features, head, masks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.spec import ModelSpec


class Classifier(nn.Module):
    """An image classifier split into `features` (penultimate embedding) and `head` (logits).

    Inputs are float tensors in [0, 1] (B x C x H x W); the dataset's mean/std live in buffers and are
    applied first, so noise added by attackers and augmentation is in pixel space.

    Pruned (sparse) models carry `masks`: parameter name -> bool tensor of the same shape, False where the
    weight is pruned. Training and unlearning call `apply_masks()` after every optimiser step so pruned
    weights stay exactly zero; checkpoints store them as `mask.<name>` tensors.

    Checkpoint names: a checkpoint holds `checkpoint_state()`, the state dict with `checkpoint_prefix`
    stripped from every name. The service's own networks use their state dict as it is (normalisation
    buffers included); a wrapped backbone (`models.backbone.BackboneClassifier`) keeps its normalisation
    out of the state dict and strips its `backbone.` prefix, so its files carry the wrapped module's own
    tensor names and load into that module with `load_state_dict(strict=True)`.
    """

    head: nn.Module
    checkpoint_prefix: str = ""
    """Prefix of every state-dict name that checkpoints leave out ("" for the service's own networks)."""

    def __init__(self, spec: ModelSpec, *, normalisation_in_state: bool = True) -> None:
        super().__init__()
        self.spec = spec
        channels = spec.in_channels
        self.register_buffer(
            "input_mean",
            torch.tensor(spec.mean, dtype=torch.float32).view(1, channels, 1, 1),
            persistent=normalisation_in_state,
        )
        self.register_buffer(
            "input_std",
            torch.tensor(spec.std, dtype=torch.float32).view(1, channels, 1, 1),
            persistent=normalisation_in_state,
        )
        self.masks: dict[str, Tensor] = {}

    def checkpoint_name(self, name: str) -> str:
        """The name a parameter or buffer has in a checkpoint file."""
        return name.removeprefix(self.checkpoint_prefix)

    def state_name(self, checkpoint_name: str) -> str:
        """The parameter or buffer name of a checkpoint file's tensor name."""
        return self.checkpoint_prefix + checkpoint_name

    def checkpoint_state(self) -> dict[str, Tensor]:
        """The tensors a checkpoint holds, under their checkpoint names."""
        return {self.checkpoint_name(name): tensor for name, tensor in self.state_dict().items()}

    def load_checkpoint_state(self, state: dict[str, Tensor]) -> None:
        """Load tensors named as in `checkpoint_state()`, strictly (every name, no extra)."""
        self.load_state_dict({self.state_name(name): tensor for name, tensor in state.items()}, strict=True)

    def normalise(self, x: Tensor) -> Tensor:
        return (x - self.input_mean) / self.input_std

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate features of already-normalised inputs; implemented by each architecture."""
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        """B x D penultimate features of [0, 1] inputs."""
        return self.embed(self.normalise(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def set_masks(self, masks: dict[str, Tensor] | None) -> None:
        """Attach pruning masks (validated against the parameters) and zero the pruned weights."""
        params = dict(self.named_parameters())
        checked: dict[str, Tensor] = {}
        for name, mask in (masks or {}).items():
            if name not in params:
                raise ValueError(f"mask for unknown parameter {name!r}")
            if tuple(mask.shape) != tuple(params[name].shape):
                raise ValueError(
                    f"mask for {name!r} has shape {tuple(mask.shape)}, "
                    f"parameter has {tuple(params[name].shape)}"
                )
            checked[name] = mask.to(device=params[name].device, dtype=torch.bool)
        self.masks = checked
        self.apply_masks()

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero every masked-out weight (no-op for dense models)."""
        if not self.masks:
            return
        params = dict(self.named_parameters())
        for name, mask in self.masks.items():
            param = params[name]
            if mask.device != param.device:
                mask = mask.to(param.device)
                self.masks[name] = mask
            param.mul_(mask.to(param.dtype))

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients of masked-out weights, so a gradient-norm clip spends its budget on the
        weights that can move (no-op for dense models)."""
        params = dict(self.named_parameters())
        for name, mask in self.masks.items():
            grad = params[name].grad
            if grad is not None:
                grad.mul_(mask.to(device=grad.device, dtype=grad.dtype))

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        """Keep masks on the parameters' device when the model is moved with .to()/.cuda()."""
        result = super()._apply(fn, recurse)
        if self.masks:
            device = next(self.parameters()).device
            self.masks = {name: mask.to(device) for name, mask in self.masks.items()}
        return result
