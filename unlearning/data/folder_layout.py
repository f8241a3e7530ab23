"""The image-folder layout rules: which folder is the root, which files are images, which split a file
lands in. `unlearning.data.imagefolder` lists a source with them (the API stores that listing and the
loader decodes exactly the files listed); the CIFAR presets (`unlearning.data.cifar`) reuse the class
folders rule.

The rules see only paths and walk a file tree (a folder on disk, or a tar archive's member list) through
two callables: `is_dir(path)` and `children(folder)` (sorted by name). Standard library only.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import TypeVar

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")

P = TypeVar("P", bound=PurePath)
T = TypeVar("T")
Plan = dict[str, list[tuple[T, int]]]
"""split name -> [(file, label)], classes in label order, files in name order within a class."""


class LayoutError(ValueError):
    """The folder does not follow the layout (no classes, unknown classes in val/ or test/, ...)."""


def is_image_name(path: PurePath) -> bool:
    """An image file by its name: a known suffix, not hidden (callers check that it is a file)."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def descend_wrapper(root: P, children: Callable[[P], list[P]], is_dir: Callable[[P], bool]) -> P:
    """The dataset root under `root`: a folder holding exactly one sub-folder (not a split) that itself
    holds folders, such as an archive's top-level directory, is descended into."""
    while True:
        entries = [entry for entry in children(root) if not entry.name.startswith(".")]
        if len(entries) == 1 and is_dir(entries[0]) and entries[0].name not in SPLITS:
            if any(is_dir(child) for child in children(entries[0])):
                root = entries[0]
                continue
        return root


def hold_out(
    files: list[T], fraction: float, seed: int, class_name: str, what: str
) -> tuple[list[T], list[T]]:
    """Split `files` into (kept, held out): `fraction` of them drawn with a (seed, class, what) generator,
    so adding a class never reshuffles another. At least one file is held out when the fraction is
    positive and the class has two or more files."""
    if not 0 <= fraction < 1:
        raise LayoutError(f"{what}_fraction must be in [0, 1), got {fraction}")
    count = round(fraction * len(files))
    if fraction > 0 and len(files) > 1:
        count = max(count, 1)
    chosen = set(random.Random(f"{seed}:{what}:{class_name}").sample(range(len(files)), count))
    kept = [f for i, f in enumerate(files) if i not in chosen]
    held = [f for i, f in enumerate(files) if i in chosen]
    return kept, held


def class_files(
    folder: P, children: Callable[[P], list[P]], is_dir: Callable[[P], bool], is_image: Callable[[P], bool]
) -> dict[str, list[P]]:
    """`{class name: image files}` for the (non-hidden) class sub-folders of `folder`, in name order."""
    classes = [entry for entry in children(folder) if is_dir(entry) and not entry.name.startswith(".")]
    return {entry.name: [f for f in children(entry) if is_image(f)] for entry in classes}


def plan_splits(
    root: P,
    children: Callable[[P], list[P]],
    is_dir: Callable[[P], bool],
    is_image: Callable[[P], bool],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[list[str], Plan[P]]:
    """Class names and which file goes to which split.

    Layout `<root>/train/<class>/...` (+ optional `val/`, `test/`): splits come from the folders; a missing
    `val/` (`test/`) is a seeded `val_fraction` (`test_fraction`) per class held out of train/.
    Layout `<root>/<class>/...`: test is held out per class first, then val from the rest.
    """
    split_layout = is_dir(root / "train")
    train_folder = root / "train" if split_layout else root
    by_class = class_files(train_folder, children, is_dir, is_image)
    class_names = list(by_class)
    if not class_names:
        raise LayoutError(f"no class folders found in {str(train_folder)!r}")
    label_of = {name: index for index, name in enumerate(class_names)}
    per_split: dict[str, dict[str, list[P]]] = {split: {} for split in SPLITS}
    has_folder = {split: split_layout and is_dir(root / split) for split in ("val", "test")}
    for split in ("val", "test"):
        if has_folder[split]:
            found = class_files(root / split, children, is_dir, is_image)
            unknown = sorted(found.keys() - label_of.keys())
            if unknown:
                raise LayoutError(f"{split}/ has class folders that train/ lacks: {unknown}")
            per_split[split] = found
    for name, files in by_class.items():
        if not has_folder["test"]:
            files, per_split["test"][name] = hold_out(files, test_fraction, seed, name, "test")
        if not has_folder["val"]:
            files, per_split["val"][name] = hold_out(files, val_fraction, seed, name, "val")
        if not files:
            message = f"class {name!r} has too few images to hold out val and test and keep any for train"
            raise LayoutError(message)
        per_split["train"][name] = files
    plan: Plan[P] = {
        split: [(f, label_of[name]) for name in class_names for f in per_split[split].get(name, [])]
        for split in SPLITS
    }
    return class_names, plan


def limit_per_class(plan: Plan[T], limits: Mapping[str, int]) -> Plan[T]:
    """Keep at most the first `limits[split]` files of each class in each named split."""
    unknown = sorted(set(limits) - set(SPLITS))
    if unknown:
        raise LayoutError(f"per_class_limits names unknown splits {unknown}; known: {list(SPLITS)}")
    limited: Plan[T] = {}
    for split, rows in plan.items():
        if split not in limits:
            limited[split] = rows
            continue
        counts: dict[int, int] = {}
        kept = []
        for row, label in rows:
            if counts.get(label, 0) < limits[split]:
                kept.append((row, label))
                counts[label] = counts.get(label, 0) + 1
        limited[split] = kept
    return limited
