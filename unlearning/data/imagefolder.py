"""Image-folder datasets: `<root>/<split>/<class>/<file>`, or `<root>/<class>/<file>` with seeded hold-outs.

A sample's id is its path relative to the root (`train/cat/0001.jpg`), so ids survive re-decoding and match
what users see on disk. Files are taken in sorted name order; held-out fractions are drawn per class with
a generator seeded by (seed, class name), so adding a class never reshuffles another.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from unlearning.data.cache import cache_key, cached_arrays, unpack_archive
from unlearning.data.decode import decode_images, image_mode, is_image_file
from unlearning.data.imageset import SPLITS, Dataset, ImageSet, make_dataset

SplitPlan = dict[str, list[tuple[str, int]]]
"""split name -> [(path relative to root, label)] in a fixed order."""

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def resolve_root(path: str | Path) -> Path:
    """An image-folder root from a folder or a .tar(.gz) archive (unpacked once into the cache).

    A folder holding exactly one sub-folder and nothing else (an archive's top-level directory, such as
    `cifar10-jpeg/`) is descended into.
    """
    path = Path(path).expanduser()
    if path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES):
        path = unpack_archive(path)
    if not path.is_dir():
        raise FileNotFoundError(f"image folder {str(path)!r} does not exist (or is not a folder or archive)")
    while True:
        entries = [entry for entry in path.iterdir() if not entry.name.startswith(".")]
        if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in SPLITS:
            only = entries[0]
            if any(child.is_dir() for child in only.iterdir()):
                path = only
                continue
        return path


def class_files(folder: Path) -> dict[str, list[Path]]:
    """`{class name: sorted image files}` for the class sub-folders of `folder`."""
    classes = sorted(
        entry.name for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith(".")
    )
    return {name: sorted(f for f in (folder / name).iterdir() if is_image_file(f)) for name in classes}


def hold_out(files: list[Path], fraction: float, seed: int, class_name: str, what: str) -> tuple[list, list]:
    """Split `files` into (kept, held out): `fraction` of them drawn with a (seed, class, what) generator.

    At least one file is held out when the fraction is positive and the class has two or more files.
    (`unlearning.catalog` mirrors this rule without torch; keep the two in step.)
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"{what}_fraction must be in [0, 1), got {fraction}")
    count = round(fraction * len(files))
    if fraction > 0 and len(files) > 1:
        count = max(count, 1)
    chosen = set(random.Random(f"{seed}:{what}:{class_name}").sample(range(len(files)), count))
    kept = [f for i, f in enumerate(files) if i not in chosen]
    held = [f for i, f in enumerate(files) if i in chosen]
    return kept, held


def plan_imagefolder(
    root: Path, *, val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[str], SplitPlan]:
    """Which file goes to which split, following the layout rules in the module docstring."""
    split_layout = (root / "train").is_dir()
    train_folder = root / "train" if split_layout else root
    by_class = class_files(train_folder)
    class_names = list(by_class)
    if not class_names:
        raise ValueError(f"no class folders found in {str(train_folder)!r}")
    label_of = {name: index for index, name in enumerate(class_names)}
    per_split: dict[str, dict[str, list[Path]]] = {split: {} for split in SPLITS}
    has_folder = {split: split_layout and (root / split).is_dir() for split in ("val", "test")}
    for split in ("val", "test"):
        if has_folder[split]:
            found = class_files(root / split)
            unknown = sorted(found.keys() - label_of.keys())
            if unknown:
                raise ValueError(f"{split}/ has class folders that train/ lacks: {unknown}")
            per_split[split] = found
    for name, files in by_class.items():
        if not has_folder["test"]:
            files, per_split["test"][name] = hold_out(files, test_fraction, seed, name, "test")
        if not has_folder["val"]:
            files, per_split["val"][name] = hold_out(files, val_fraction, seed, name, "val")
        if not files:
            raise ValueError(
                f"class {name!r} has too few images to hold out val and test and keep any for train"
            )
        per_split["train"][name] = files
    plan: SplitPlan = {
        split: [
            (str(f.relative_to(root)), label_of[name])
            for name in class_names
            for f in per_split[split].get(name, [])
        ]
        for split in SPLITS
    }
    if not plan["train"]:
        raise ValueError(f"no image files found under {str(train_folder)!r}")
    return class_names, plan


def limit_per_class(plan: SplitPlan, limits: Mapping[str, int]) -> SplitPlan:
    """Keep at most the first `limits[split]` samples of each class in each named split."""
    unknown = sorted(set(limits) - set(SPLITS))
    if unknown:
        raise ValueError(f"per_class_limits names unknown splits {unknown}; known: {list(SPLITS)}")
    limited: SplitPlan = {}
    for split, rows in plan.items():
        if split not in limits:
            limited[split] = rows
            continue
        counts: dict[int, int] = {}
        kept = []
        for relative, label in rows:
            if counts.get(label, 0) < limits[split]:
                kept.append((relative, label))
                counts[label] = counts.get(label, 0) + 1
        limited[split] = kept
    return limited


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
