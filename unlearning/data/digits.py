"""scikit-learn's bundled 8x8 digits: 1,797 greyscale images, ids `digits/0000`..`digits/1796`.

Torch-free at import: `list_digits` is what the API stores; `load_digits` lists with it, then decodes.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np
from pydantic import Field, model_validator

from unlearning.data.listing import Catalog, CatalogError, FormatOptions, SampleRow

if TYPE_CHECKING:
    from unlearning.data.imageset import Dataset


class DigitsOptions(FormatOptions):
    seed: int = Field(0, ge=0, le=2**32 - 1)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    """Of all images, stratified."""
    test_fraction: float = Field(0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _leave_train_images(self) -> Self:
        if self.val_fraction + self.test_fraction >= 1:
            total = f"{self.val_fraction} + {self.test_fraction}"
            raise CatalogError(
                "options.val_fraction", f"val_fraction + test_fraction must be < 1, got {total}"
            )
        return self


def digit_id(row: int) -> str:
    return f"digits/{row:04d}"


@lru_cache(maxsize=1)
def _bundled() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's images (0..16 floats, N x 8 x 8) and labels; read-only."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images, labels = bunch.images, bunch.target.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def list_digits(_source: Path | None, options: DigitsOptions) -> Catalog:
    """Stratified, seeded split: `test_fraction` of all images to test, `val_fraction` of all to val;
    each split in id order."""
    from sklearn.model_selection import train_test_split

    labels = _bundled()[1]
    rows = np.arange(len(labels))
    seed, test_share = options.seed, options.test_fraction
    rest, test_rows = train_test_split(rows, test_size=test_share, stratify=labels, random_state=seed)
    val_share = options.val_fraction / (1 - test_share)
    train_rows, val_rows = train_test_split(
        rest, test_size=val_share, stratify=labels[rest], random_state=seed
    )
    samples = [
        SampleRow(digit_id(int(row)), int(labels[row]), split)
        for split, chosen in (("train", train_rows), ("val", val_rows), ("test", test_rows))
        for row in np.sort(chosen)
    ]
    return Catalog([str(digit) for digit in range(10)], samples)


def read_digits(source: Path | None, options: DigitsOptions) -> Dataset:
    """The listed digits, 1 x 8 x 8 uint8 (0..16 scaled to 0..255)."""
    from unlearning.data.imageset import dataset_from_catalog

    catalog = list_digits(source, options)
    images = _bundled()[0]
    row_of = {digit_id(row): row for row in range(len(images))}
    listed = images[[row_of[sample.sample_id] for sample in catalog.samples]]
    pixels = np.rint(listed * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return dataset_from_catalog("digits", catalog, pixels)


def load_digits(seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2) -> Dataset:
    """The digits as a `Dataset` (see `list_digits` for the split)."""
    options = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    return read_digits(None, DigitsOptions.parse(options))
