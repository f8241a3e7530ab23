"""The fsspec filesystem behind a URL: the local one for `file://`, s3fs for `s3://` (endpoint and region
from the settings, credentials from the standard AWS_* variables that botocore reads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.storage.urls import local_path, s3_parts, scheme_of

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


@dataclass(frozen=True)
class S3Options:
    endpoint_url: str = ""
    region: str = ""


def filesystem(url: str, s3: S3Options) -> tuple[AbstractFileSystem, str]:
    """The filesystem that holds `url` and the path it has there."""
    import fsspec

    if scheme_of(url) == "file":
        return fsspec.filesystem("file"), str(local_path(url))
    bucket, key = s3_parts(url)
    client_kwargs: dict[str, Any] = {}
    if s3.region:
        client_kwargs["region_name"] = s3.region
    fs = fsspec.filesystem(
        "s3",
        endpoint_url=s3.endpoint_url or None,
        client_kwargs=client_kwargs,
        use_listings_cache=False,  # other hosts write and delete objects: never trust a cached listing
    )
    return fs, f"{bucket}/{key}" if key else bucket
