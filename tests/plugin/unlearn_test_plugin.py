"""An in-house architecture as a user would register it: a plain `nn.Module` that knows nothing about the
service, exposed through the entry-point group `unlearn.architectures` (see `installed.py`)."""

from __future__ import annotations

from torch import Tensor, nn


class TinyCNN(nn.Module):
    """Two convolutions with batch norm, global pooling, a hidden linear layer and the classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 24),
            nn.ReLU(),
        )
        self.out = nn.Linear(24, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x))
