"""In-memory image collections with stable string sample IDs, and a dataset's train/val/test split.

Images stay uint8 (N x C x H x W) in memory: four times smaller than float and converted per batch by
`unlearning.training.to_float`. Splits: `train` (members), `val` (held out, never trained on; DAU and
audits use it as non-members) and `test`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from unlearning.data.folder_layout import SPLITS
from unlearning.data.listing import Catalog


@dataclass(frozen=True)
class ImageSet:
    images: Tensor
    """uint8, N x C x H x W."""
    labels: Tensor
    """int64, N."""
    sample_ids: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be a uint8 N x C x H x W tensor, "
                f"got {self.images.dtype} {tuple(self.images.shape)}"
            )
        count = self.images.shape[0]
        if self.labels.shape != (count,) or len(self.sample_ids) != count:
            raise ValueError(
                f"images ({count}), labels ({tuple(self.labels.shape)}) and "
                f"sample_ids ({len(self.sample_ids)}) "
                "must have the same length"
            )
        if self.labels.dtype != torch.int64:
            object.__setattr__(self, "labels", self.labels.to(torch.int64))

    def __len__(self) -> int:
        return len(self.sample_ids)

    @classmethod
    def empty(cls, channels: int, size: int) -> ImageSet:
        return cls(
            torch.zeros(0, channels, size, size, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64), []
        )

    def subset(self, index: Tensor | Sequence[int]) -> ImageSet:
        """Rows `index` (a list of positions, a long tensor or a bool mask), in that order."""
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        index = index.to(torch.int64)
        positions = index.tolist()
        return ImageSet(self.images[index], self.labels[index], [self.sample_ids[i] for i in positions])

    def concat(self, other: ImageSet) -> ImageSet:
        return ImageSet(
            torch.cat([self.images, other.images]),
            torch.cat([self.labels, other.labels]),
            self.sample_ids + other.sample_ids,
        )

    def of_class(self, label: int, *, keep: bool = True) -> ImageSet:
        """The rows whose label is (keep=True) or is not (keep=False) `label`."""
        match = self.labels == label
        return self.subset(match if keep else ~match)

    def select_ids(self, ids: Sequence[str]) -> ImageSet:
        """Rows for `ids`, in that order; KeyError naming the first id not present."""
        row_of = {sample_id: row for row, sample_id in enumerate(self.sample_ids)}
        try:
            return self.subset([row_of[sample_id] for sample_id in ids])
        except KeyError as error:
            raise KeyError(f"sample id {error.args[0]!r} is not in this image set") from None


@dataclass(frozen=True)
class Dataset:
    name: str
    class_names: list[str]
    train: ImageSet
    val: ImageSet
    test: ImageSet
    mean: tuple[float, ...]
    """Per-channel mean of train pixels in [0, 1]: goes into the model's normalisation layer."""
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[2])

    def split(self, name: str) -> ImageSet:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; known: {list(SPLITS)}")
        return getattr(self, name)

    @cached_property
    def _index(self) -> dict[str, tuple[str, int]]:
        return {
            sample_id: (split, row)
            for split in SPLITS
            for row, sample_id in enumerate(self.split(split).sample_ids)
        }

    def index_of(self, ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """`{sample_id: (split, row)}` for those of `ids` that exist; absent ids are left out."""
        index = self._index
        return {sample_id: index[sample_id] for sample_id in ids if sample_id in index}

    def lookup(self, ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """`{sample_id: (split, label)}` for the ids that exist, for request validation."""
        found = self.index_of(ids)
        return {
            sample_id: (split, int(self.split(split).labels[row]))
            for sample_id, (split, row) in found.items()
        }

    def iter_samples(self) -> Iterator[tuple[str, int, str]]:
        """`(sample_id, label, split)` for every sample: what the service bulk-loads as its samples."""
        for split in SPLITS:
            images = self.split(split)
            for sample_id, label in zip(images.sample_ids, images.labels.tolist(), strict=True):
                yield sample_id, label, split


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (std floored to avoid division by 0).

    Computed from a 256-bin histogram per channel: exact, and much faster than float arithmetic on 30M pixels.
    """
    if images.shape[0] == 0:
        raise ValueError("cannot compute normalisation statistics of an empty train split")
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = torch.bincount(images[:, channel].reshape(-1).to(torch.int64), minlength=256).to(
            torch.float64
        )
        total = counts.sum()
        mean = float((counts * levels).sum() / total)
        variance = float((counts * (levels - mean) ** 2).sum() / (total - 1).clamp_min(1))
        means.append(round(mean, 6))
        stds.append(round(max(variance**0.5, 1e-3), 6))
    return tuple(means), tuple(stds)


def make_dataset(
    name: str, class_names: list[str], train: ImageSet, val: ImageSet, test: ImageSet
) -> Dataset:
    """A `Dataset` with normalisation statistics taken from its train split; checks ids are unique."""
    seen: set[str] = set()
    duplicates = []
    for split in (train, val, test):
        for sample_id in split.sample_ids:
            if sample_id in seen:
                duplicates.append(sample_id)
            seen.add(sample_id)
    if duplicates:
        raise ValueError(f"sample ids must be unique across splits; duplicated: {duplicates[:20]}")
    for split_name, split in (("train", train), ("val", val), ("test", test)):
        if split.images.shape[1:] != train.images.shape[1:]:
            raise ValueError(
                f"{split_name} images are {tuple(split.images.shape[1:])}, train images "
                f"{tuple(train.images.shape[1:])}: all splits need one shape"
            )
        if len(split) and (int(split.labels.min()) < 0 or int(split.labels.max()) >= len(class_names)):
            raise ValueError(
                f"{split_name} labels must be in 0..{len(class_names) - 1}, got "
                f"{int(split.labels.min())}..{int(split.labels.max())}"
            )
    mean, std = channel_stats(train.images)
    return Dataset(name, class_names, train, val, test, mean, std)


def dataset_from_catalog(name: str, catalog: Catalog, images: np.ndarray) -> Dataset:
    """A `Dataset` whose ids, labels and splits are the catalog's: `images[i]` (uint8 C x H x W) holds the
    pixels of `catalog.samples[i]`. Every loader ends here, after listing its source and decoding the rows
    listed."""
    rows = catalog.samples
    if len(images) != len(rows):
        raise ValueError(f"{len(images)} images for {len(rows)} listed samples")
    pixels = torch.from_numpy(np.ascontiguousarray(images))
    labels = torch.tensor([row.label for row in rows], dtype=torch.int64)
    splits = np.array([SPLITS.index(row.split) for row in rows], dtype=np.int64)
    sets = {}
    for rank, split in enumerate(SPLITS):
        index = np.flatnonzero(splits == rank)
        if len(index) and index[-1] - index[0] + 1 == len(index):  # listed together: a view, not a copy
            chosen: slice | Tensor = slice(int(index[0]), int(index[-1]) + 1)
        else:
            chosen = torch.from_numpy(index)
        sets[split] = ImageSet(pixels[chosen], labels[chosen], [rows[i].sample_id for i in index.tolist()])
    return make_dataset(name, catalog.class_names, sets["train"], sets["val"], sets["test"])
