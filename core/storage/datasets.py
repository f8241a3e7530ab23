"""Where a dataset's files are read from on this host: confined to the dataset roots at registration,
and, for an `s3://` dataset, the local copy of its objects (`core.storage.mirror`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.storage.filesystems import S3Options
from core.storage.mirror import mirror_dataset
from core.storage.roots import check_tree, confine
from unlearning.data.formats import get_format


@dataclass(frozen=True)
class DatasetSource:
    uri: str | None
    """As registered."""
    local: str | None
    """What the library loads: the local path, or the local copy of an s3:// dataset; None for a bundled
    dataset."""
    content_sha256: str | None = None
    """Of an s3:// dataset's objects (see `core.storage.mirror`)."""

    def public(self, message: str) -> str:
        """A message about the local copy, naming the dataset's uri instead of this host's cache."""
        if self.local is None or self.uri is None or self.local == self.uri:
            return message
        return message.replace(self.local, self.uri)


def source_for_registration(
    format: str, uri: str | None, *, roots: Sequence[str], s3: S3Options, cache_root: Path
) -> DatasetSource:
    """The source of a dataset being registered, confined to `roots` (`OutsideRoots`, a CatalogError on
    `uri`, otherwise); an s3:// one is fetched here and its content sha256 computed."""
    if not get_format(format).needs_uri or not uri:
        return DatasetSource(uri, uri)  # a bundled dataset, or the format's own "needs a uri" error
    location = confine(uri, roots)
    if location.path is not None:
        check_tree(location.path, roots)
        return DatasetSource(uri, str(location.path))
    assert location.s3_url is not None
    mirror = mirror_dataset(location.s3_url, s3=s3, cache_root=cache_root)
    return DatasetSource(uri, str(mirror.path), mirror.sha256)


def local_source(
    uri: str | None, content_sha256: str | None, *, s3: S3Options, cache_root: Path
) -> DatasetSource:
    """The source of a registered dataset on this host: an s3:// one is fetched once into the cache and
    checked against the content sha256 recorded at registration (`DatasetChanged` if it differs)."""
    if uri is None or not uri.lower().startswith("s3://"):
        return DatasetSource(uri, uri)
    mirror = mirror_dataset(uri, s3=s3, cache_root=cache_root, expected_sha256=content_sha256)
    return DatasetSource(uri, str(mirror.path), mirror.sha256)
