"""User `.npz` files: arrays `x` (images), `y` (labels), `sample_id` (strings), `split` (train/val/test) and
optionally `class_names`. Never unpickles.

Torch-free at import: `list_npz` reads every array but `x` (what the API stores); `load_npz` lists with
it, then takes the listed rows of `x`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from unlearning.data.folder_layout import SPLITS
from unlearning.data.listing import Catalog, CatalogError, FormatOptions, SampleRow, SourceNotFound

if TYPE_CHECKING:
    from unlearning.data.imageset import Dataset

REQUIRED = ("x", "y", "sample_id", "split")


class NpzOptions(FormatOptions):
    """None: the file holds everything."""


def _read(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Those of `names` that the file holds; `CatalogError` when it lacks one of `REQUIRED`."""
    try:
        stored = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise SourceNotFound("uri", f"npz file {str(path)!r} does not exist") from None
    except (OSError, ValueError) as error:
        raise CatalogError("uri", f"{path.name} could not be read as .npz without pickle: {error}") from None
    if not isinstance(stored, np.lib.npyio.NpzFile):
        raise CatalogError("uri", f"{path.name} is a single array, not an .npz archive of arrays")
    with stored:
        missing = [name for name in REQUIRED if name not in stored.files]
        if missing:
            raise CatalogError("uri", f"{path.name} lacks arrays {missing}; needs x, y, sample_id, split")
        try:
            return {name: stored[name] for name in names if name in stored.files}
        except (OSError, ValueError) as error:
            raise CatalogError("uri", f"{path.name}: {error}") from None


def list_npz(path: Path, _options: NpzOptions | None = None) -> Catalog:
    """Every sample of the file, each split in file order."""
    arrays = _read(path, ("y", "sample_id", "split", "class_names"))
    labels = arrays["y"]
    sample_ids = arrays["sample_id"].astype(str)
    splits = arrays["split"].astype(str)
    if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1 or len(labels) == 0:
        message = f"{path.name}: y must be a non-empty 1-d integer array, got {labels.dtype} {labels.shape}"
        raise CatalogError("uri", message)
    if sample_ids.shape != labels.shape or splits.shape != labels.shape:
        shapes = f"sample_id {sample_ids.shape} and split {splits.shape}"
        message = f"{path.name}: {shapes} must match y {labels.shape}"
        raise CatalogError("uri", message)
    bad_splits = sorted(set(splits.tolist()) - set(SPLITS))
    if bad_splits:
        raise CatalogError("uri", f"{path.name}: split values must be train, val or test; found {bad_splits}")
    if labels.min() < 0:
        raise CatalogError("uri", f"{path.name}: labels must be >= 0, found {int(labels.min())}")
    unique, counts = np.unique(sample_ids, return_counts=True)
    if len(unique) != len(sample_ids):
        duplicated = unique[counts > 1][:20].tolist()
        raise CatalogError("uri", f"{path.name}: sample ids must be unique; duplicated: {duplicated}")
    num_classes = int(labels.max()) + 1
    if "class_names" in arrays:
        class_names = arrays["class_names"].astype(str).tolist()
        if len(class_names) < num_classes:
            message = f"{path.name}: {len(class_names)} class_names but labels go up to {num_classes - 1}"
            raise CatalogError("uri", message)
    else:
        class_names = [str(label) for label in range(num_classes)]
    ids = sample_ids.tolist()
    samples = [
        SampleRow(ids[row], int(labels[row]), split)
        for split in SPLITS
        for row in np.flatnonzero(splits == split).tolist()
    ]
    return Catalog(class_names, samples)


def read_npz(path: Path, options: NpzOptions | None = None) -> Dataset:
    """The listed rows of `x`, which may be N x H x W (greyscale), N x C x H x W or N x H x W x C (C in 1,
    3), uint8 0..255 or float in [0, 1]."""
    from unlearning.data.imageset import dataset_from_catalog

    catalog = list_npz(path, options)
    arrays = _read(path, ("x", "sample_id"))
    images = _images_nchw(arrays["x"], path.name)
    sample_ids = arrays["sample_id"].astype(str).tolist()
    if len(images) != len(sample_ids):
        raise ValueError(f"{path.name}: x holds {len(images)} images but y {len(sample_ids)} labels")
    row_of = {sample_id: row for row, sample_id in enumerate(sample_ids)}
    listed = images[[row_of[sample.sample_id] for sample in catalog.samples]]
    return dataset_from_catalog(path.stem, catalog, listed)


def load_npz(path: str | Path) -> Dataset:
    """A `.npz` file as a `Dataset` (see `read_npz`)."""
    return read_npz(Path(path).expanduser())


def _images_nchw(x: np.ndarray, file_name: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{file_name}: x must be N x H x W, N x C x H x W or N x H x W x C, got {x.shape}")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        if x.size and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"{file_name}: float x must be in [0, 1], found {x.min()}..{x.max()}")
        return np.rint(x * 255).astype(np.uint8)
    raise ValueError(f"{file_name}: x must be uint8 or float, got {x.dtype}")
