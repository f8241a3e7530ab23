"""The membership attacker A of DAU (after Yuan & Zhang 2022, SAMIA): a small transformer over classes.

Per sample it reads the defender's softmax p (C), its sensitivity s (C, see `sensitivity.py`) and the
one-hot label y (C). Class c becomes one token (p_c, s_c, y_c); the transformer lets every class token
attend to the others (how confident, how flat the neighbourhood, is it the labelled class) and a small
MLP over the flattened tokens gives one membership logit (member = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from unlearning.methods.dau.config import AttackerConfig


@dataclass(frozen=True)
class AttackInputs:
    """What the attacker sees of a batch: softmax p, sensitivity s and the label given to the token."""

    probs: Tensor  # B x C
    sensitivity: Tensor  # B x C
    label_onehot: Tensor  # B x C (all zeros where the label token is masked)

    def __len__(self) -> int:
        return self.probs.shape[0]

    def detach(self) -> AttackInputs:
        return AttackInputs(self.probs.detach(), self.sensitivity.detach(), self.label_onehot)

    def take(self, rows: Tensor) -> AttackInputs:
        return AttackInputs(self.probs[rows], self.sensitivity[rows], self.label_onehot[rows])

    def cat(self, other: AttackInputs) -> AttackInputs:
        return AttackInputs(
            torch.cat([self.probs, other.probs]),
            torch.cat([self.sensitivity, other.sensitivity]),
            torch.cat([self.label_onehot, other.label_onehot]),
        )

    def to(self, device: torch.device) -> AttackInputs:
        return AttackInputs(self.probs.to(device), self.sensitivity.to(device), self.label_onehot.to(device))


class MembershipAttacker(nn.Module):
    """BN over the 3C inputs -> C tokens of (p_c, s_c, y_c) -> Linear(3, d) + GELU -> transformer
    encoder -> flatten (d*C) -> Linear + ReLU -> Linear(., 1): the membership logit."""

    def __init__(self, num_classes: int, config: AttackerConfig | None = None) -> None:
        super().__init__()
        config = config or AttackerConfig()
        if config.token_dim % config.heads:
            raise ValueError(f"token_dim {config.token_dim} is not divisible by heads {config.heads}")
        self.num_classes = num_classes
        self.input_norm = nn.BatchNorm1d(3 * num_classes)
        self.token_embed = nn.Sequential(nn.Linear(3, config.token_dim), nn.GELU())
        layer = nn.TransformerEncoderLayer(
            d_model=config.token_dim,
            nhead=config.heads,
            dim_feedforward=config.ff_dim,
            dropout=config.dropout,
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=config.layers, enable_nested_tensor=False)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(config.token_dim * num_classes, config.hidden_dim),
            nn.ReLU(),
            nn.Linear(config.hidden_dim, 1),
        )

    def forward(self, inputs: AttackInputs) -> Tensor:
        """B membership logits (> 0: member)."""
        tokens = torch.stack([inputs.probs, inputs.sensitivity, inputs.label_onehot], dim=-1)  # B x C x 3
        batch = tokens.shape[0]
        tokens = self.input_norm(tokens.reshape(batch, -1).float()).reshape(batch, self.num_classes, 3)
        return self.classifier(self.encoder(self.token_embed(tokens))).squeeze(-1)
