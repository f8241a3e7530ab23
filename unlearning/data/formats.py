"""The one registry of dataset formats, shared by the API (which lists a source's samples when a dataset
is registered) and the worker (which loads it).

Each entry names a format, its options (a `FormatOptions` model: the loader's keyword arguments, unknown
ones refused), a torch-free `list_samples` (the `Catalog` the API stores in its `samples` table) and a
`load` that lists with that very function and then decodes the rows listed, so the API's samples and the
worker's dataset cannot disagree. Adding a format is one entry here plus its module.

Torch-free at import: torch is imported by `load` only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unlearning.data.digits import DigitsOptions, list_digits, read_digits
from unlearning.data.imagefolder import ImageFolderOptions, list_imagefolder, read_imagefolder
from unlearning.data.listing import Catalog, CatalogError, FormatOptions, SourceNotFound
from unlearning.data.npz import NpzOptions, list_npz, read_npz

if TYPE_CHECKING:
    from unlearning.data.imageset import Dataset


@dataclass(frozen=True)
class DatasetFormat:
    name: str
    options: type[FormatOptions]
    list_source: Callable[[Any, Any], Catalog]
    """(source path or None, validated options) -> Catalog, torch-free."""
    load_source: Callable[[Any, Any], Dataset]
    """(source path or None, validated options) -> Dataset: lists with `list_source`, then decodes."""
    needs_uri: bool = True
    """False for a bundled dataset (digits): the uri is ignored."""

    def source(self, uri: str | None) -> Path | None:
        """The local path a uri names (a path or a `file://` URI), or None when the format needs none."""
        if not self.needs_uri:
            return None
        if not uri:
            message = f"dataset format {self.name!r} needs a uri (a local path or file:// URI)"
            raise CatalogError("uri", message)
        if uri.startswith("file://"):
            uri = uri.removeprefix("file://")
        elif "://" in uri:
            raise CatalogError("uri", f"only local paths and file:// URIs are supported, got {uri!r}")
        path = Path(uri).expanduser()
        if not path.exists():
            raise SourceNotFound("uri", f"{str(path)!r} does not exist on this machine")
        return path

    def list_samples(self, uri: str | None, options: Mapping[str, Any] | None = None) -> Catalog:
        """The samples of a source, without decoding images. Raises `CatalogError`."""
        return self.list_source(self.source(uri), self.options.parse(options))

    def load(self, uri: str | None, options: Mapping[str, Any] | None = None) -> Dataset:
        """The dataset, decoded: exactly the samples `list_samples` gives for the same uri and options."""
        return self.load_source(self.source(uri), self.options.parse(options))


FORMATS: dict[str, DatasetFormat] = {
    entry.name: entry
    for entry in (
        DatasetFormat("imagefolder", ImageFolderOptions, list_imagefolder, read_imagefolder),
        DatasetFormat("digits", DigitsOptions, list_digits, read_digits, needs_uri=False),
        DatasetFormat("npz", NpzOptions, list_npz, read_npz),
    )
}
FORMAT_NAMES: tuple[str, ...] = tuple(FORMATS)


def get_format(name: str) -> DatasetFormat:
    try:
        return FORMATS[name]
    except KeyError:
        message = f"unknown dataset format {name!r}; known: {list(FORMAT_NAMES)}"
        raise CatalogError("format", message) from None


def list_samples(format: str, uri: str | None, options: Mapping[str, Any] | None = None) -> Catalog:
    """What the API stores for a `datasets` row: the samples of `uri` read as `format` with `options`."""
    return get_format(format).list_samples(uri, options)


def load_dataset(format: str, uri: str | None = None, options: Mapping[str, Any] | None = None) -> Dataset:
    """What the worker trains on for the same row: the same samples, decoded."""
    return get_format(format).load(uri, options)
