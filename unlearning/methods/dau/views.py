"""Views of samples for DAU's small-set mode (`pools.py`): a random crop and flip as in base training
(`unlearning.training.augment`, images of 16 px and more: the model learnt those crops, so a view of a
member is a member) plus Gaussian pixel noise of std `noise` (which keeps the views of a small image
distinct where crop and flip are off, and stays inside the sample's neighbourhood).
"""

from __future__ import annotations

import torch

from unlearning.data import ImageSet
from unlearning.training import augment, to_float


def sample_views(images: ImageSet, copies: int, *, noise: float, generator: torch.Generator) -> ImageSet:
    """`copies` views of every image, sample-major (the views of row i are rows i*copies ...), as uint8;
    the ids read `<sample id>#view<k>` and the labels are the sample's."""
    x = to_float(images.images).repeat_interleave(copies, dim=0)
    x = augment(x, generator)
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=generator)
    pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    ids = [f"{sample_id}#view{k}" for sample_id in images.sample_ids for k in range(copies)]
    return ImageSet(pixels, images.labels.repeat_interleave(copies), ids)
