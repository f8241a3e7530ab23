"""Storage beyond one machine: the artifact store (`artifact_url`: checkpoints, audit pages) and where
datasets are read from (`dataset_roots`, local copies of `s3://` datasets).

Modules: `urls` (file:// and s3:// locations), `filesystems` (the fsspec filesystem of a URL), `store`
(the artifact store), `roots` (dataset locations confined to the roots), `mirror` (local copies of s3://
datasets by content hash), `datasets` (a dataset's source on this host). fsspec and s3fs are imported
here only: the library (`unlearning`, `models`) is handed local paths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.storage.filesystems import S3Options
from core.storage.store import ArtifactStore, ObjectAltered, ObjectMissing, StoredObject
from core.storage.urls import BadLocation, display, local_path

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = [
    "ArtifactStore",
    "BadLocation",
    "ObjectAltered",
    "ObjectMissing",
    "S3Options",
    "StoredObject",
    "artifact_store",
    "display",
    "local_path",
    "s3_options",
]


def s3_options(settings: Settings) -> S3Options:
    return S3Options(endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)


def artifact_store(settings: Settings) -> ArtifactStore:
    """The store at `settings.artifact_url`, staging local files under this host's cache root."""
    return ArtifactStore(settings.artifact_url, s3=s3_options(settings), staging_root=settings.cache_root)
