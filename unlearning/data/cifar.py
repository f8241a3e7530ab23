"""CIFAR-10 (JPEG image-folder tree) presets for the benchmarks, DESIGN section 11.

The shared archive `cifar10-jpeg.tar.gz` unpacks to `cifar10-jpeg/{train,test}/<class>/<NNNN>.jpg`. Presets
take fixed slices of each class's files in sorted name order, so every run and every machine sees the same
samples with the same ids (`train/cat/0001.jpg`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unlearning.data.cache import cache_key, cached_arrays, file_sha256, unpack_archive
from unlearning.data.decode import decode_images, image_mode
from unlearning.data.imagefolder import class_files, resolve_root
from unlearning.data.imageset import SPLITS, Dataset, dataset_from_catalog
from unlearning.data.listing import Catalog, SampleRow

CIFAR10_ARCHIVE_SHA256 = "efac85c8ed52f4ead1e1f1b670d8dcf435d551fccebdd8b6365e0a01a504f3a4"

SplitPlan = dict[str, list[tuple[str, int]]]
"""split name -> [(path relative to root, label)] in a fixed order."""

SliceRule = dict[str, tuple[str, int, int]]
"""output split -> (source folder, first index, end index) over each class's sorted files."""

CPU_PRESET_RULE: SliceRule = {
    "train": ("train", 0, 1000),
    "val": ("train", 1000, 1100),
    "test": ("test", 0, 200),
}
"""10,000 train, 1,000 val, 2,000 test images: small enough for 2 CPU cores."""

FULL_RULE: SliceRule = {"train": ("train", 0, 4500), "val": ("train", 4500, 5000), "test": ("test", 0, 1000)}
"""All 60,000 images: train = the first 4,500 per class of train/, val = the last 500, test = all of test/."""


def unpack_cifar10(archive: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Unpack the archive once into the cache; return the tree root holding `train/` and `test/`."""
    unpacked = unpack_archive(archive, Path(cache_dir) if cache_dir is not None else None)
    return resolve_root(unpacked)


def load_cifar10_cpu_preset(data_path: str | Path) -> Dataset:
    """The `cpu` bench split, per class: train = files 0..999 of train/, val = 1000..1099, test =
    files 0..199 of test/ (sorted names)."""
    return load_cifar10_slices(data_path, CPU_PRESET_RULE, name="cifar10-cpu")


def load_cifar10_full(data_path: str | Path) -> Dataset:
    """The `gpu` bench split: train = first 4,500 per class of train/, val = the last 500, test = test/."""
    return load_cifar10_slices(data_path, FULL_RULE, name="cifar10-full")


def load_cifar10_slices(data_path: str | Path, rule: SliceRule, *, name: str) -> Dataset:
    """CIFAR-10 from the archive or an unpacked tree, with the per-class slices of `rule`.

    The decoded arrays are cached under a key made of the archive's sha256 (or the folder's path and
    modification time) and the rule, so a cached load lists no files and decodes nothing.
    """
    data_path = Path(data_path).expanduser()
    if data_path.is_file():
        source: dict[str, object] = {
            "archive_sha256": file_sha256(data_path),
            "size": data_path.stat().st_size,
        }
    elif data_path.is_dir():
        source = {"folder": str(data_path.resolve()), "mtime_ns": data_path.stat().st_mtime_ns}
    else:
        raise FileNotFoundError(
            f"CIFAR-10 data {str(data_path)!r} does not exist (want the .tar.gz or its tree)"
        )

    def build() -> dict[str, np.ndarray]:
        root = unpack_cifar10(data_path) if data_path.is_file() else resolve_root(data_path)
        class_names, plan = slice_plan(root, rule)
        return decode_plan(root, class_names, plan)

    arrays = cached_arrays(cache_key(kind="cifar10", source=source, rule=rule), build)
    return dataset_from_arrays(name, arrays)


def slice_plan(root: Path, rule: SliceRule) -> tuple[list[str], SplitPlan]:
    folders = {source for source, _, _ in rule.values()}
    by_folder = {}
    for folder in folders:
        if not (root / folder).is_dir():
            raise FileNotFoundError(
                f"{str(root)!r} has no {folder}/ folder: not a CIFAR-10 image-folder tree"
            )
        by_folder[folder] = class_files(root / folder)
    class_names = list(by_folder[rule["train"][0]])
    plan: SplitPlan = {}
    for split in SPLITS:
        source, start, stop = rule[split]
        rows = []
        for label, class_name in enumerate(class_names):
            files = by_folder[source].get(class_name, [])
            if len(files) < stop:
                raise ValueError(
                    f"{source}/{class_name} has {len(files)} images; the {split} slice needs at least {stop}"
                )
            rows.extend((str(f.relative_to(root)), label) for f in files[start:stop])
        plan[split] = rows
    return class_names, plan


def decode_plan(root: Path, class_names: list[str], plan: SplitPlan) -> dict[str, np.ndarray]:
    """Decode every planned file into the arrays the cache stores: the images and the plan itself, so a
    cached load lists no files."""
    ordered = [row for split in SPLITS for row in plan[split]]
    paths = [root / relative for relative, _ in ordered]
    return {
        "images": decode_images(paths, mode=image_mode(paths[0])),
        "labels": np.array([label for _, label in ordered], dtype=np.int64),
        "sample_ids": np.array([relative for relative, _ in ordered], dtype=str),
        "split_sizes": np.array([len(plan[split]) for split in SPLITS], dtype=np.int64),
        "class_names": np.array(class_names, dtype=str),
    }


def dataset_from_arrays(name: str, arrays: dict[str, np.ndarray]) -> Dataset:
    sizes = arrays["split_sizes"].tolist()
    splits = [split for split, size in zip(SPLITS, sizes, strict=True) for _ in range(size)]
    rows = zip(arrays["sample_ids"].tolist(), arrays["labels"].tolist(), splits, strict=True)
    catalog = Catalog(arrays["class_names"].tolist(), [SampleRow(*row) for row in rows])
    return dataset_from_catalog(name, catalog, arrays["images"])
