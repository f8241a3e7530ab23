"""Image-folder datasets: `<root>/<split>/<class>/<file>`, or `<root>/<class>/<file>` with seeded hold-outs;
the root is a folder or a .tar(.gz) archive of one.

A sample's id is its path relative to the root (`train/cat/0001.jpg`), so ids survive re-decoding and match
what users see on disk. `list_imagefolder` applies the layout rules (`unlearning.data.folder_layout`) to
the source's file list (the folder's, or the archive's member list) without opening a file: it is what
the API stores. `load_imagefolder` lists with it, then decodes exactly the files listed (an archive is
unpacked once into the cache). Torch-free at import.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
from pydantic import Field

from unlearning.data import folder_layout
from unlearning.data.cache import cache_key, cached_arrays, unpack_archive
from unlearning.data.decode import decode_images, image_mode
from unlearning.data.folder_layout import (
    ARCHIVE_SUFFIXES,
    SPLITS,
    LayoutError,
    descend_wrapper,
    is_image_name,
    limit_per_class,
    plan_splits,
)
from unlearning.data.listing import Catalog, CatalogError, FormatOptions, SampleRow, SourceNotFound

if TYPE_CHECKING:
    from unlearning.data.imageset import Dataset


class ImageFolderOptions(FormatOptions):
    seed: int = Field(0, ge=0, le=2**32 - 1)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    """Held out of each class of train/ when there is no val/ folder."""
    test_fraction: float = Field(0.2, ge=0, lt=1)
    """Held out of each class of train/ when there is no test/ folder."""
    per_class_limits: dict[Literal["train", "val", "test"], Annotated[int, Field(ge=0)]] | None = None
    """Keep the first N files (by name) of each class of a split, e.g. `{"train": 1000}`."""
    image_size: int | None = Field(None, ge=1, le=4096)
    """Resize images that are not this size (decoding only: the listing does not depend on it)."""


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


class FileTree:
    """A read-only view of a folder's files, from disk or from a tar archive's member list."""

    def __init__(self, files: Iterable[PurePosixPath]) -> None:
        self.files = set(files)
        self.dirs: set[PurePosixPath] = set()
        for file in self.files:
            self.dirs.update(parent for parent in file.parents if str(parent) != ".")
        self._children: dict[PurePosixPath, list[PurePosixPath]] = {}
        for entry in self.files | self.dirs:
            self._children.setdefault(entry.parent, []).append(entry)

    @classmethod
    def from_path(cls, path: Path) -> FileTree:
        if not path.exists():
            raise SourceNotFound("uri", f"image folder {str(path)!r} does not exist")
        if is_archive(path):
            try:
                with tarfile.open(path) as archive:
                    # as the `data` extraction filter unpacks them: leading slashes and "." parts dropped
                    members = [PurePosixPath(m.name.lstrip("/")) for m in archive.getmembers() if m.isfile()]
            except (tarfile.TarError, OSError) as error:
                raise CatalogError("uri", f"{path.name} is not a readable tar archive: {error}") from None
            return cls(members)
        if not path.is_dir():
            raise CatalogError("uri", f"image folder {str(path)!r} is not a folder or a .tar(.gz) archive")
        return cls(PurePosixPath(p.relative_to(path).as_posix()) for p in path.rglob("*") if p.is_file())

    def children(self, folder: PurePosixPath) -> list[PurePosixPath]:
        return sorted((p for p in self._children.get(folder, []) if p != folder), key=lambda p: p.name)

    def is_dir(self, path: PurePosixPath) -> bool:
        return path in self.dirs

    def is_image(self, path: PurePosixPath) -> bool:
        return path in self.files and is_image_name(path)


@dataclass(frozen=True)
class FolderListing:
    root: PurePosixPath
    """The dataset root within the source (a lone wrapper folder descended into); ids are relative to it."""
    catalog: Catalog


def list_folder(source: Path, options: ImageFolderOptions) -> FolderListing:
    tree = FileTree.from_path(source)
    root = descend_wrapper(PurePosixPath("."), tree.children, tree.is_dir)
    try:
        class_names, plan = plan_splits(
            root,
            tree.children,
            tree.is_dir,
            tree.is_image,
            val_fraction=options.val_fraction,
            test_fraction=options.test_fraction,
            seed=options.seed,
        )
    except LayoutError as error:
        raise CatalogError("uri", f"{error} (under {str(source)!r})") from None
    plan = limit_per_class(plan, options.per_class_limits or {})
    samples = [
        SampleRow(file.relative_to(root).as_posix(), label, split)
        for split in SPLITS
        for file, label in plan[split]
    ]
    if not any(row.split == "train" for row in samples):
        raise CatalogError("uri", f"no image files found under {str(source)!r}")
    return FolderListing(root, Catalog(class_names, samples))


def list_imagefolder(source: Path, options: ImageFolderOptions) -> Catalog:
    """Every image of the folder or archive with its class and split, without opening one."""
    return list_folder(source, options).catalog


def read_imagefolder(source: Path, options: ImageFolderOptions, *, name: str | None = None) -> Dataset:
    """The listed images, decoded (in parallel threads) once and cached by their paths, sizes and
    modification times."""
    from unlearning.data.imageset import dataset_from_catalog

    listing = list_folder(source, options)
    folder = (unpack_archive(source) if is_archive(source) else source) / listing.root
    paths = [folder / row.sample_id for row in listing.catalog.samples]
    files = [
        (row.sample_id, *_size_and_mtime(path))
        for row, path in zip(listing.catalog.samples, paths, strict=True)
    ]
    key = cache_key(kind="imagefolder-images", files=files, image_size=options.image_size)

    def decode() -> dict[str, np.ndarray]:
        return {"images": decode_images(paths, mode=image_mode(paths[0]), image_size=options.image_size)}

    images = cached_arrays(key, decode)["images"]
    return dataset_from_catalog(name or folder.name, listing.catalog, images)


def _size_and_mtime(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


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
    options = ImageFolderOptions.parse(
        {
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "seed": seed,
            "per_class_limits": dict(per_class_limits) if per_class_limits is not None else None,
            "image_size": image_size,
        }
    )
    return read_imagefolder(Path(root).expanduser(), options, name=name)


# --- the disk walk the CIFAR-10 presets use ------------------------------------------------------------


def resolve_root(path: str | Path) -> Path:
    """An image-folder root on disk, descending into a lone wrapper folder (an archive's top-level directory,
    such as `cifar10-jpeg/`)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"image folder {str(path)!r} does not exist (or is not a folder)")
    return descend_wrapper(path, _children, Path.is_dir)


def _children(folder: Path) -> list[Path]:
    return sorted(folder.iterdir(), key=lambda entry: entry.name)


def _is_image_file(path: Path) -> bool:
    return path.is_file() and is_image_name(path)


def class_files(folder: Path) -> dict[str, list[Path]]:
    """`{class name: sorted image files}` for the class sub-folders of `folder`."""
    return folder_layout.class_files(folder, _children, Path.is_dir, _is_image_file)
