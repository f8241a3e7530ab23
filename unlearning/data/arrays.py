"""Datasets that come as arrays: scikit-learn's bundled 8x8 digits, and user `.npz` files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from unlearning.data.imageset import SPLITS, Dataset, ImageSet, make_dataset


def load_digits(seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's 1,797 8x8 digits (1 x 8 x 8, 0..16 scaled to 0..255), ids `digits/0000`..`digits/1796`.

    Stratified, seeded split: `test_fraction` of all images to test, `val_fraction` of all to val.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(
            f"need 0 < val_fraction, test_fraction and a sum < 1, got {val_fraction}, {test_fraction}"
        )
    bunch = sklearn_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    ids = np.array([f"digits/{i:04d}" for i in range(len(labels))])
    rows = np.arange(len(labels))
    rest, test_rows = train_test_split(rows, test_size=test_fraction, stratify=labels, random_state=seed)
    train_rows, val_rows = train_test_split(
        rest, test_size=val_fraction / (1 - test_fraction), stratify=labels[rest], random_state=seed
    )

    def image_set(index: np.ndarray) -> ImageSet:
        index = np.sort(index)
        return ImageSet(torch.from_numpy(images[index]), torch.from_numpy(labels[index]), ids[index].tolist())

    class_names = [str(digit) for digit in range(10)]
    return make_dataset(
        "digits", class_names, image_set(train_rows), image_set(val_rows), image_set(test_rows)
    )


def load_npz(path: str | Path) -> Dataset:
    """A `.npz` with arrays `x` (images), `y` (labels), `sample_id` (strings), `split` (train/val/test).

    `x` may be N x H x W (greyscale), N x C x H x W or N x H x W x C (C in 1, 3), uint8 0..255 or float in
    [0, 1]. An optional `class_names` array names the classes (default: "0".."K-1"). Never unpickles.
    """
    path = Path(path).expanduser()
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"npz file {str(path)!r} does not exist") from None
    except ValueError as error:
        raise ValueError(f"{path.name} could not be read as .npz without pickle: {error}") from None
    missing = [key for key in ("x", "y", "sample_id", "split") if key not in arrays]
    if missing:
        raise ValueError(f"{path.name} lacks arrays {missing}; needs x, y, sample_id, split")
    images = _images_nchw(arrays["x"], path.name)
    labels = arrays["y"]
    if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{path.name}: y must be {len(images)} integers, got {labels.dtype} {labels.shape}")
    sample_ids = arrays["sample_id"].astype(str)
    splits = arrays["split"].astype(str)
    if sample_ids.shape != labels.shape or splits.shape != labels.shape:
        raise ValueError(
            f"{path.name}: sample_id {sample_ids.shape} and split {splits.shape} must match y {labels.shape}"
        )
    bad_splits = sorted(set(splits.tolist()) - set(SPLITS))
    if bad_splits:
        raise ValueError(f"{path.name}: split values must be train, val or test; found {bad_splits}")
    if labels.min() < 0:
        raise ValueError(f"{path.name}: labels must be >= 0, found {int(labels.min())}")
    num_classes = int(labels.max()) + 1
    if "class_names" in arrays:
        class_names = arrays["class_names"].astype(str).tolist()
        if len(class_names) < num_classes:
            raise ValueError(
                f"{path.name}: {len(class_names)} class_names but labels go up to {num_classes - 1}"
            )
    else:
        class_names = [str(label) for label in range(num_classes)]
    sets = {}
    for split in SPLITS:
        index = np.flatnonzero(splits == split)
        sets[split] = ImageSet(
            torch.from_numpy(np.ascontiguousarray(images[index])),
            torch.from_numpy(labels[index].astype(np.int64)),
            sample_ids[index].tolist(),
        )
    return make_dataset(path.stem, class_names, sets["train"], sets["val"], sets["test"])


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
