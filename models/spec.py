"""The serialisable description of a network: enough to rebuild it from a checkpoint.

Torch-free on purpose, so the HTTP edge can validate a checkpoint header without importing torch.

Architecture names (`ModelSpec.architecture`):
- the service's own small networks: `resnet18` (CIFAR stem), `resnet_small`, `mlp`;
- `torchvision/<name>`: any classification model of `torchvision.models` (`torchvision/resnet18`,
  `torchvision/mobilenet_v3_small`, `torchvision/vit_b_16`, ...), built with `weights=None`;
- `timm/<name>`: any `timm` model (needs the optional `timm` extra: `pip install unlearn-service[timm]`);
- `plugin/<name>`: an in-house `nn.Module` registered under the entry-point group `unlearn.architectures`.
The name is checked here for its form only; `models.registry.build_model` knows whether it exists.
"""

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

BUILTIN_ARCHITECTURES: tuple[str, ...] = ("resnet18", "resnet_small", "mlp")
EXTERNAL_SOURCES: tuple[str, ...] = ("torchvision", "timm", "plugin")
"""Prefixes of the architectures built by other code: `<source>/<name>`."""
ENTRY_POINT_GROUP = "unlearn.architectures"
"""The Python entry-point group in-house architectures are registered under (`plugin/<entry point name>`)."""

ARCHITECTURE_PATTERN = r"^(resnet18|resnet_small|mlp|(torchvision|timm|plugin)/[A-Za-z0-9][A-Za-z0-9_.\-]*)$"
ARCHITECTURE_HELP = (
    "resnet18, resnet_small or mlp (the service's own networks), torchvision/<name> (any torchvision "
    "classification model), timm/<name> (any timm model; optional extra) or plugin/<name> (an entry point "
    f"of the group {ENTRY_POINT_GROUP!r})"
)


def split_architecture(name: str) -> tuple[str, str]:
    """("builtin", name) for the service's own networks, else (source, model name)."""
    if name in BUILTIN_ARCHITECTURES:
        return "builtin", name
    source, _, model_name = name.partition("/")
    return source, model_name


def check_architecture_name(value: str) -> str:
    source, model_name = split_architecture(value)
    if source == "builtin":
        return value
    if source not in EXTERNAL_SOURCES or not model_name or "/" in model_name or not model_name[0].isalnum():
        raise ValueError(f"unknown architecture {value!r}: use {ARCHITECTURE_HELP}")
    if not all(ch.isalnum() or ch in "_.-" for ch in model_name):
        raise ValueError(f"architecture {value!r}: the model name may hold letters, digits, '_', '.', '-'")
    return value


Architecture = Annotated[
    str,
    Field(
        max_length=64,
        description=f"The network: {ARCHITECTURE_HELP}.",
        examples=["resnet_small", "torchvision/resnet18", "timm/resnet10t", "plugin/tiny_cnn"],
        json_schema_extra={"pattern": ARCHITECTURE_PATTERN},
    ),
    AfterValidator(check_architecture_name),
]


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
        description="Base channel (or hidden unit) count; None = the architecture's default. Built-in "
        "architectures and plugins only.",
    )

    @property
    def source(self) -> str:
        """ "builtin", "torchvision", "timm" or "plugin"."""
        return split_architecture(self.architecture)[0]

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
        if self.width is not None and self.source in ("torchvision", "timm"):
            raise ValueError(f"width applies to built-in and plugin architectures, not {self.architecture!r}")
        return self
