"""Image-folder datasets: `<root>/<split>/<class>/<file>`, or `<root>/<class>/<file>` with seeded hold-outs.

A sample's id is its path relative to the root (`train/cat/0001.jpg`), so ids survive re-decoding and match
what users see on disk. The layout rules (root, image files, seeded per-class hold-outs, per-class limits)
live in `unlearning.folder_layout`, shared with the torch-free catalogue the API lists samples with.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from unlearning import folder_layout
from unlearning.data.cache import cache_key, cached_arrays, unpack_archive
from unlearning.data.decode import decode_images, image_mode, is_image_file
from unlearning.data.imageset import SPLITS, Dataset, ImageSet, make_dataset
from unlearning.folder_layout import ARCHIVE_SUFFIXES, descend_wrapper, limit_per_class

SplitPlan = dict[str, list[tuple[str, int]]]
"""split name -> [(path relative to root, label)] in a fixed order."""


def resolve_root(path: str | Path) -> Path:
    """An image-folder root from a folder or a .tar(.gz) archive (unpacked once into the cache), descending
    into a lone wrapper folder (an archive's top-level directory, such as `cifar10-jpeg/`)."""
    path = Path(path).expanduser()
    if path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES):
        path = unpack_archive(path)
    if not path.is_dir():
        raise FileNotFoundError(f"image folder {str(path)!r} does not exist (or is not a folder or archive)")
    return descend_wrapper(path, _children, Path.is_dir)


def _children(folder: Path) -> list[Path]:
    return sorted(folder.iterdir(), key=lambda entry: entry.name)


def class_files(folder: Path) -> dict[str, list[Path]]:
    """`{class name: sorted image files}` for the class sub-folders of `folder`."""
    return folder_layout.class_files(folder, _children, Path.is_dir, is_image_file)


def plan_imagefolder(
    root: Path, *, val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[str], SplitPlan]:
    """Which file goes to which split (`unlearning.folder_layout.plan_splits`), as relative paths."""
    class_names, plan = folder_layout.plan_splits(
        root, _children, Path.is_dir, is_image_file,
        val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
    )
    return class_names, {
        split: [(str(f.relative_to(root)), label) for f, label in rows] for split, rows in plan.items()
    }


def fingerprint(root: Path, plan: SplitPlan) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of every planned file: a changed file invalidates the decode cache."""
    entries = []
    for rows in plan.values():
        for relative, _ in rows:
            stat = (root / relative).stat()
            entries.append((relative, stat.st_size, stat.st_mtime_ns))
    return entries


def decode_plan(
    root: Path, class_names: list[str], plan: SplitPlan, *, image_size: int | None = None
) -> dict[str, np.ndarray]:
    """Decode every planned file into the arrays `dataset_from_arrays` reads (and the cache stores)."""
    ordered = [row for split in SPLITS for row in plan[split]]
    paths = [root / relative for relative, _ in ordered]
    images = decode_images(paths, mode=image_mode(paths[0]), image_size=image_size)
    return {
        "images": images,
        "labels": np.array([label for _, label in ordered], dtype=np.int64),
        "sample_ids": np.array([relative for relative, _ in ordered], dtype=str),
        "split_sizes": np.array([len(plan[split]) for split in SPLITS], dtype=np.int64),
        "class_names": np.array(class_names, dtype=str),
    }


def dataset_from_arrays(name: str, arrays: dict[str, np.ndarray]) -> Dataset:
    images = torch.from_numpy(arrays["images"])
    labels = torch.from_numpy(arrays["labels"])
    sample_ids = arrays["sample_ids"].tolist()
    sets: dict[str, ImageSet] = {}
    start = 0
    for split, size in zip(SPLITS, arrays["split_sizes"].tolist(), strict=True):
        sets[split] = ImageSet(
            images[start : start + size], labels[start : start + size], sample_ids[start : start + size]
        )
        start += size
    return make_dataset(name, arrays["class_names"].tolist(), sets["train"], sets["val"], sets["test"])


def load_imagefolder(
    root: str | Path,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    per_class_limits: Mapping[str, int] | None = None,
    image_size: int | None = None,
    name: str | None = None,
) -> Dataset:
    """An image folder (or .tar.gz of one) as a `Dataset` with relative-path sample ids.

    Layout `<root>/train/<class>/...` (+ optional `val/`, `test/`): splits come from the folders; a missing
    `val/` (or `test/`) is a seeded `val_fraction` (`test_fraction`) per class held out of train/.
    Layout `<root>/<class>/...`: test is held out per class first, then val from the rest.
    `per_class_limits` keeps the first N files per class of a split (e.g. `{"train": 1000}`); `image_size`
    resizes images that are not that size.
    """
    resolved = resolve_root(root)
    class_names, plan = plan_imagefolder(
        resolved, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
    )
    if per_class_limits:
        plan = limit_per_class(plan, per_class_limits)
    key = cache_key(kind="imagefolder", files=fingerprint(resolved, plan), plan=plan, image_size=image_size)
    arrays = cached_arrays(key, lambda: decode_plan(resolved, class_names, plan, image_size=image_size))
    return dataset_from_arrays(name or resolved.name, arrays)
