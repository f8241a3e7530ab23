"""A two-hidden-layer perceptron for tiny images such as scikit-learn's 8x8 digits."""

from __future__ import annotations

from torch import Tensor, nn

from models.base import Classifier
from models.spec import ModelSpec


class MLP(Classifier):
    """Flatten, two ReLU hidden layers (the second is the penultimate feature), linear head."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        hidden = spec.width or 128
        inputs = spec.in_channels * spec.image_size * spec.image_size
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(inputs, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.feature_dim = hidden
        self.head = nn.Linear(hidden, spec.num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.body(x)


def mlp(spec: ModelSpec) -> MLP:
    return MLP(spec)
