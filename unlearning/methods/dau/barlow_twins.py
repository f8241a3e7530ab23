"""The Barlow Twins loss (Zbontar et al. 2021) between forget-set and validation-set features.

    c   = BN(z_f)^T BN(z_v) / B                       (D x D cross-correlation)
    BT  = sum_i (1 - c_ii)^2 + lambda_off * sum_{i != j} c_ij^2

z_f: penultimate features of a forget batch, z_v: features of the paired validation batch (row b of
z_f is paired with row b of z_v), BN: standardisation of each feature over the batch (zero mean, unit
biased variance, no affine), B: batch size, D: feature dimension, lambda_off = 0.0051 (the paper's).
Driving c toward the identity makes each forget feature vary across the batch exactly as its paired
validation feature does, so forget samples keep only what unseen samples of the same class share.
"""

from __future__ import annotations

from torch import Tensor


def standardise(z: Tensor, eps: float = 1e-5) -> Tensor:
    """Each column to zero mean and unit (biased) variance over the batch."""
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=False, keepdim=True)
    return (z - mean) / (var + eps).sqrt()


def cross_correlation(z_f: Tensor, z_v: Tensor) -> Tensor:
    if z_f.shape != z_v.shape:
        raise ValueError(f"paired feature batches differ in shape: {tuple(z_f.shape)} vs {tuple(z_v.shape)}")
    return standardise(z_f.float()).T @ standardise(z_v.float()) / z_f.shape[0]


def barlow_twins_loss(z_f: Tensor, z_v: Tensor, off_diagonal_weight: float = 0.0051) -> Tensor:
    c = cross_correlation(z_f, z_v)
    on_diagonal = (1 - c.diagonal()).pow(2).sum()
    off_diagonal = c.pow(2).sum() - c.diagonal().pow(2).sum()
    return on_diagonal + off_diagonal_weight * off_diagonal
