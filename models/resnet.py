"""Residual networks for 32x32 images: ResNet-18 with the CIFAR stem, and a small ResNet for CPU work."""

from __future__ import annotations

from torch import Tensor, nn

from models.base import Classifier
from models.spec import ModelSpec


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(Classifier):
    """Stem conv (3x3, stride 1, no max-pool), stages of BasicBlocks, global average pool, linear head."""

    def __init__(
        self, spec: ModelSpec, stage_widths: list[int], blocks_per_stage: list[int], stage_strides: list[int]
    ) -> None:
        super().__init__(spec)
        stem_width = stage_widths[0] if stage_strides[0] == 1 else stage_widths[0] // 2
        self.stem = nn.Sequential(
            nn.Conv2d(spec.in_channels, stem_width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        in_width = stem_width
        for width, blocks, stride in zip(stage_widths, blocks_per_stage, stage_strides, strict=True):
            for index in range(blocks):
                layers.append(BasicBlock(in_width, width, stride if index == 0 else 1))
                in_width = width
        self.stages = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = in_width
        self.head = nn.Linear(in_width, spec.num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.pool(self.stages(self.stem(x)))


def resnet18(spec: ModelSpec) -> ResNet:
    """ResNet-18 (He et al. 2016) with the CIFAR stem; `spec.width` scales the base width (default 64)."""
    base = spec.width or 64
    return ResNet(spec, [base, 2 * base, 4 * base, 8 * base], [2, 2, 2, 2], [1, 2, 2, 2])


def resnet_small(spec: ModelSpec) -> ResNet:
    """A small ResNet for 2-core CPU work: a stem conv, then one block per stage at 16, 8 and 4 pixels.

    Downsampling in the first block keeps the cost low (about 11 MMAC per 32x32 image at the default
    width 16), so one epoch of 10,000 CIFAR images trains in about 15 s on two cores.
    """
    base = spec.width or 16
    return ResNet(spec, [2 * base, 4 * base, 8 * base], [1, 1, 1], [2, 2, 2])
