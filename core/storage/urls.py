"""The URLs of the store and of dataset locations: `file:///abs/path` or `s3://bucket/key`.

A bare absolute path is read as the file it names (rows written before the store had URLs hold such
paths). Keys under a store are `/`-separated relative paths without `.`, `..` or empty parts. Standard
library only: the settings validator imports this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

SCHEMES = ("file", "s3")


class BadLocation(ValueError):
    """A URL or key the store cannot address."""


def scheme_of(url: str) -> str:
    """`file` (also for a bare absolute path) or `s3`; BadLocation otherwise."""
    if "://" not in url:
        if os.path.isabs(url):
            return "file"
        raise BadLocation(f"{url!r} is neither an absolute path nor a file:// or s3:// URL")
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise BadLocation(f"{url!r}: only file:// and s3:// locations are supported")
    return scheme


def local_path(url: str) -> Path:
    """The local path a `file://` URL (or bare absolute path) names."""
    if scheme_of(url) != "file":
        raise BadLocation(f"{url!r} is not a local file URL")
    if "://" not in url:
        return Path(url)
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise BadLocation(f"{url!r}: a file:// URL names no host (file:///abs/path)")
    return Path(unquote(parts.path))


def s3_parts(url: str) -> tuple[str, str]:
    """(bucket, key) of an `s3://bucket/key` URL; the key may be empty."""
    if scheme_of(url) != "s3":
        raise BadLocation(f"{url!r} is not an s3:// URL")
    rest = url.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise BadLocation(f"{url!r} names no bucket")
    return bucket, key.strip("/")


def key_parts(key: str) -> list[str]:
    """The parts of a relative key; BadLocation for `.`, `..`, empty parts or a leading `/`."""
    parts = key.split("/")
    if not key or any(part in ("", ".", "..") for part in parts) or "\x00" in key:
        raise BadLocation(f"{key!r} is not a relative key (no '.', '..' or empty parts)")
    return parts


def join(base_url: str, key: str) -> str:
    """The URL of `key` under the store URL `base_url`."""
    key_parts(key)
    if scheme_of(base_url) == "file":
        return (local_path(base_url) / key).as_uri()
    return f"{base_url.rstrip('/')}/{key}"


def store_url(url: str) -> str:
    """A normalised store URL: `file:///abs/path` (also from a bare path) or `s3://bucket[/prefix]`."""
    url = url.strip()
    if scheme_of(url) == "file":
        path = local_path(url).expanduser()
        if not path.is_absolute():
            raise BadLocation(f"{url!r}: a file:// store needs an absolute path")
        return Path(os.path.normpath(path)).as_uri()
    bucket, prefix = s3_parts(url)
    if prefix:
        key_parts(prefix)
    return f"s3://{bucket}/{prefix}".rstrip("/")


def dataset_root(root: str) -> str:
    """A normalised dataset root: an absolute local folder (`file://` accepted) or `s3://bucket[/prefix]`."""
    root = root.strip()
    if root.lower().startswith("s3://"):
        return store_url(root)
    path = local_path(root) if root.lower().startswith("file://") else Path(root)
    return os.path.normpath(path.expanduser().absolute())


def display(url: str) -> str:
    """How messages name a stored object: its path for a local file, else its URL."""
    return str(local_path(url)) if scheme_of(url) == "file" else url


def relative_key(base: str, key: str) -> str | None:
    """`key` relative to the prefix `base` (both without surrounding `/`), or None when outside it."""
    if not base:
        return key
    if key == base:
        return ""
    return key[len(base) + 1 :] if key.startswith(base + "/") else None
