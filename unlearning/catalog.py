"""Torch-free catalogue of a dataset's samples and of the unlearning methods, for the HTTP edge.

The API registers a dataset by listing its samples (id, label, split) without decoding a single image,
and must agree exactly with what the loaders in `unlearning.data` produce from the same source and
options (the worker later loads the dataset with those loaders and the same options). The rules below
mirror the loaders': `load_digits` (seeded stratified split), `load_imagefolder` (the very same layout
rules, `unlearning.folder_layout`) and `load_npz` (arrays `y`, `sample_id`, `split`). A test checks the
agreement against the real loaders.

Only numpy, scikit-learn, pydantic (method configs) and the standard library are imported here (never
torch).
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from unlearning.folder_layout import (
    ARCHIVE_SUFFIXES,
    SPLITS,
    LayoutError,
    descend_wrapper,
    is_image_name,
    limit_per_class,
    plan_splits,
)
from unlearning.methods.base import BUILTIN_METHODS, MethodConfig, config_class

METHOD_NAMES: tuple[str, ...] = tuple(BUILTIN_METHODS)
"""Every built-in method (the one table is `unlearning.methods.base.BUILTIN_METHODS`)."""
DATASET_FORMATS = ("imagefolder", "digits", "npz")


class CatalogError(ValueError):
    """The source or the options do not describe a dataset; `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class SampleRow:
    sample_id: str
    label: int
    split: str


@dataclass(frozen=True)
class Catalog:
    """What a dataset is made of, as the `datasets` and `samples` tables store it."""

    class_names: list[str]
    samples: list[SampleRow]
    in_channels: int | None = None
    image_size: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(SPLITS, 0)
        for row in self.samples:
            counts[row.split] += 1
        return counts


def _option(options: Mapping[str, Any], name: str, default: Any, kind: type, *, lo: float, hi: float) -> Any:
    value = options.get(name, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CatalogError(f"options.{name}", f"options.{name} must be a {kind.__name__}, got {value!r}")
    if not lo <= value <= hi:
        raise CatalogError(f"options.{name}", f"options.{name} must be in [{lo}, {hi}], got {value!r}")
    return value


def _refuse_unknown(options: Mapping[str, Any], known: Iterable[str]) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise CatalogError(f"options.{unknown[0]}", f"unknown options {unknown}; known: {sorted(known)}")


def list_samples(format: str, uri: str | None, options: Mapping[str, Any] | None = None) -> Catalog:
    """The samples of a dataset source, without decoding images. Raises `CatalogError`."""
    options = dict(options or {})
    if format == "digits":
        return _digits(options)
    if format == "imagefolder":
        return _imagefolder(_local_path(uri), options)
    if format == "npz":
        return _npz(_local_path(uri), options)
    raise CatalogError("format", f"unknown dataset format {format!r}; known: {list(DATASET_FORMATS)}")


def _local_path(uri: str | None) -> Path:
    if not uri:
        raise CatalogError("uri", "uri is required for this format (a local path or file:// URI)")
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    elif "://" in uri:
        raise CatalogError("uri", f"only local paths and file:// URIs are supported, got {uri!r}")
    path = Path(uri).expanduser()
    if not path.exists():
        raise CatalogError("uri", f"{str(path)!r} does not exist on the server")
    return path


# --- digits -------------------------------------------------------------------------------------------


def _digits(options: Mapping[str, Any]) -> Catalog:
    """Mirror of `unlearning.data.load_digits(seed, val_fraction, test_fraction)`."""
    _refuse_unknown(options, ("seed", "val_fraction", "test_fraction"))
    seed = _option(options, "seed", 0, int, lo=0, hi=2**32 - 1)
    val_fraction = _option(options, "val_fraction", 0.2, float, lo=0.0, hi=1.0)
    test_fraction = _option(options, "test_fraction", 0.2, float, lo=0.0, hi=1.0)
    if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise CatalogError(
            "options.val_fraction",
            f"need 0 < val_fraction, test_fraction and a sum < 1, got {val_fraction}, {test_fraction}",
        )
    import numpy as np
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    labels = sklearn_digits().target.astype(np.int64)
    rows = np.arange(len(labels))
    rest, test_rows = train_test_split(rows, test_size=test_fraction, stratify=labels, random_state=seed)
    train_rows, val_rows = train_test_split(
        rest, test_size=val_fraction / (1 - test_fraction), stratify=labels[rest], random_state=seed
    )
    samples = [
        SampleRow(f"digits/{int(i):04d}", int(labels[i]), split)
        for split, index in (("train", train_rows), ("val", val_rows), ("test", test_rows))
        for i in np.sort(index)
    ]
    return Catalog([str(d) for d in range(10)], samples, in_channels=1, image_size=8)


# --- imagefolder --------------------------------------------------------------------------------------


class _Tree:
    """A read-only view of a folder's files, from disk or from a tar archive's member list."""

    def __init__(self, files: Iterable[PurePosixPath]) -> None:
        self.files = set(files)
        self.dirs: set[PurePosixPath] = set()
        for f in self.files:
            self.dirs.update(p for p in f.parents if str(p) != ".")
        self._children: dict[PurePosixPath, list[PurePosixPath]] = {}
        for p in self.files | self.dirs:
            self._children.setdefault(p.parent, []).append(p)

    @classmethod
    def from_path(cls, path: Path) -> _Tree:
        if path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES):
            try:
                with tarfile.open(path) as archive:
                    members = [PurePosixPath(m.name.lstrip("./")) for m in archive.getmembers() if m.isfile()]
            except (tarfile.TarError, OSError) as error:
                raise CatalogError("uri", f"{path.name} is not a readable tar archive: {error}") from None
            return cls(members)
        if not path.is_dir():
            raise CatalogError("uri", f"image folder {str(path)!r} is not a folder or a .tar(.gz) archive")
        return cls(PurePosixPath(p.relative_to(path).as_posix()) for p in path.rglob("*") if p.is_file())

    def children(self, folder: PurePosixPath) -> list[PurePosixPath]:
        return sorted((p for p in self._children.get(folder, []) if p != folder), key=lambda p: p.name)

    def is_dir(self, p: PurePosixPath) -> bool:
        return p in self.dirs

    def is_image(self, p: PurePosixPath) -> bool:
        return p in self.files and is_image_name(p)


def _imagefolder(path: Path, options: Mapping[str, Any]) -> Catalog:
    """Mirror of `load_imagefolder(root, val_fraction, test_fraction, seed, per_class_limits)`: the same
    rules (`unlearning.folder_layout`) over the folder's or archive's file list instead of the disk."""
    _refuse_unknown(options, ("seed", "val_fraction", "test_fraction", "per_class_limits", "image_size"))
    seed = _option(options, "seed", 0, int, lo=0, hi=2**32 - 1)
    val_fraction = _option(options, "val_fraction", 0.1, float, lo=0.0, hi=0.999)
    test_fraction = _option(options, "test_fraction", 0.2, float, lo=0.0, hi=0.999)
    if "image_size" in options:
        _option(options, "image_size", 32, int, lo=1, hi=4096)
    limits = options.get("per_class_limits") or {}
    if not isinstance(limits, dict) or any(
        k not in SPLITS or not isinstance(v, int) or isinstance(v, bool) or v < 0 for k, v in limits.items()
    ):
        message = f"per_class_limits must map train/val/test to counts >= 0, got {limits!r}"
        raise CatalogError("options.per_class_limits", message)
    tree = _Tree.from_path(path)
    root = descend_wrapper(PurePosixPath("."), tree.children, tree.is_dir)
    try:
        class_names, plan = plan_splits(
            root, tree.children, tree.is_dir, tree.is_image,
            val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
        )
    except LayoutError as error:
        raise CatalogError("uri", f"{error} (under {str(path)!r})") from None
    plan = limit_per_class(plan, limits)
    samples = [
        SampleRow(file.relative_to(root).as_posix(), label, split)
        for split in SPLITS
        for file, label in plan[split]
    ]
    if not any(row.split == "train" for row in samples):
        raise CatalogError("uri", f"no image files found under {str(path)!r}")
    return Catalog(class_names, samples)


# --- npz ----------------------------------------------------------------------------------------------


def _npz(path: Path, options: Mapping[str, Any]) -> Catalog:
    """Mirror of `unlearning.data.load_npz(path)`: reads `y`, `sample_id`, `split` (and `x`'s shape only)."""
    _refuse_unknown(options, ())
    import numpy as np

    try:
        stored = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise CatalogError("uri", f"{path.name} could not be read as .npz without pickle: {error}") from None
    with stored:
        names = set(getattr(stored, "files", []))
        missing = [key for key in ("x", "y", "sample_id", "split") if key not in names]
        if missing:
            raise CatalogError("uri", f"{path.name} lacks arrays {missing}; needs x, y, sample_id, split")
        try:
            labels = stored["y"]
            sample_ids = stored["sample_id"].astype(str)
            splits = stored["split"].astype(str)
            class_names_array = stored["class_names"].astype(str) if "class_names" in names else None
        except ValueError as error:
            raise CatalogError("uri", f"{path.name}: {error}") from None
    if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1:
        message = f"{path.name}: y must be a 1-d integer array, got {labels.dtype} {labels.shape}"
        raise CatalogError("uri", message)
    if sample_ids.shape != labels.shape or splits.shape != labels.shape:
        raise CatalogError("uri", f"{path.name}: sample_id and split must match y {labels.shape}")
    bad_splits = sorted(set(splits.tolist()) - set(SPLITS))
    if bad_splits:
        raise CatalogError("uri", f"{path.name}: split values must be train, val or test; found {bad_splits}")
    if len(labels) == 0 or labels.min() < 0:
        raise CatalogError("uri", f"{path.name}: labels must be >= 0 and y non-empty")
    if len(set(sample_ids.tolist())) != len(sample_ids):
        raise CatalogError("uri", f"{path.name}: sample_id values must be unique")
    num_classes = int(labels.max()) + 1
    if class_names_array is not None:
        class_names = class_names_array.tolist()
        if len(class_names) < num_classes:
            raise CatalogError(
                "uri", f"{path.name}: {len(class_names)} class_names but labels go up to {num_classes - 1}"
            )
    else:
        class_names = [str(label) for label in range(num_classes)]
    samples = [
        SampleRow(sample_ids[i], int(labels[i]), split)
        for split in SPLITS
        for i in np.flatnonzero(splits == split).tolist()
    ]
    return Catalog(class_names, samples)


# --- methods ------------------------------------------------------------------------------------------


def method_config(name: str) -> type[MethodConfig]:
    """The pydantic Config class of method `name`, without importing the method (nor torch).

    Raises `unlearning.methods.UnknownMethodError` (a KeyError) for an unknown name."""
    return config_class(name)
