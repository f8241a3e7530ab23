"""Local copies of `s3://` datasets, one per content hash, under a host's cache root.

A dataset on S3 is one object (an .npz file, a .tar(.gz) image folder) or a prefix of objects (an image
folder). Its content sha256 is the object's sha256, or for a prefix the sha256 of a manifest (one line
`<sha256 of the object>  <key relative to the prefix>` per object, sorted by key). The API computes it
when the dataset is registered and stores it; a worker fetches the dataset into
`<cache root>/datasets/<content sha256>/` once, checks the hash, and the library loads that local copy.
The copy mirrors the user's source (which the service never changes), so no deletion purges it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.storage.filesystems import S3Options, filesystem
from core.storage.store import CHUNK_BYTES
from core.storage.urls import BadLocation, key_parts, relative_key, s3_parts
from unlearning.data.listing import CatalogError, SourceNotFound

MIRROR_FOLDER = "datasets"
TREE = "tree"
"""The folder a prefix is copied into (an object keeps its own name)."""


class DatasetChanged(ValueError):
    """The objects at the uri no longer have the content sha256 recorded at registration."""


class DatasetUnavailable(RuntimeError):
    """The store could not be read (network, credentials, endpoint): worth another try later."""


@dataclass(frozen=True)
class Mirror:
    path: Path
    """The local copy: the object's file, or the folder of a prefix's objects."""
    sha256: str


def mirror_dataset(
    uri: str, *, s3: S3Options, cache_root: Path, expected_sha256: str | None = None
) -> Mirror:
    """The local copy of the dataset at `uri` (fetched unless a copy of `expected_sha256` is there)."""
    folder = cache_root / MIRROR_FOLDER
    if expected_sha256 is not None:
        existing = _existing(folder / expected_sha256)
        if existing is not None:
            return Mirror(existing, expected_sha256)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=folder))
    try:
        entry, sha256 = _fetch(uri, s3, staging)
        if expected_sha256 is not None and sha256 != expected_sha256:
            raise DatasetChanged(
                f"the objects at {uri} changed since the dataset was registered: content sha256 {sha256}, "
                f"registered {expected_sha256}"
            )
        target = folder / sha256
        try:
            staging.rename(target)
        except OSError:
            if _existing(target) is None:  # not another process's finished copy
                raise
        found = _existing(target)
        assert found is not None and found.name == entry
        return Mirror(found, sha256)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _existing(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    entries = os.listdir(folder)
    return folder / entries[0] if len(entries) == 1 else None


def _fetch(uri: str, s3: S3Options, staging: Path) -> tuple[str, str]:
    """Copy the object or prefix at `uri` into `staging`; returns (the entry's name, content sha256)."""
    fs, path = filesystem(uri, s3)
    _, key = s3_parts(uri)
    try:
        info = fs.info(path) if key else {"type": "directory"}
        if info.get("type") == "file":
            name = key.rsplit("/", 1)[-1]
            return name, _copy_object(fs, path, staging / name)
        objects = sorted(
            (detail["name"], detail)
            for detail in fs.find(path, detail=True).values()
            if detail.get("type") == "file" and not detail["name"].endswith("/")
        )
    except FileNotFoundError:
        raise SourceNotFound("uri", f"{uri!r} does not exist") from None
    except PermissionError:
        raise CatalogError("uri", f"{uri!r} cannot be read with this service's credentials") from None
    except (CatalogError, DatasetChanged):
        raise
    except Exception as error:
        raise DatasetUnavailable(f"the store holding {uri} could not be read: {error}") from error
    if not objects:
        raise SourceNotFound("uri", f"{uri!r} does not exist")
    manifest = []
    base = path.split("/", 1)[1] if "/" in path else ""
    for name, _ in objects:
        relative = relative_key(base, name.split("/", 1)[1])
        try:
            parts = key_parts(relative or "")
        except BadLocation:
            raise CatalogError("uri", f"object {name!r} under {uri} cannot be copied as a file") from None
        try:
            digest = _copy_object(fs, name, staging.joinpath(TREE, *parts))
        except Exception as error:
            raise DatasetUnavailable(f"the store holding {uri} could not be read: {error}") from error
        manifest.append(f"{digest}  {'/'.join(parts)}\n")
    return TREE, hashlib.sha256("".join(manifest).encode()).hexdigest()


def _copy_object(fs: object, path: str, target: Path) -> str:
    """Download one object to `target`; returns its sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with fs.open(path, "rb") as source, open(target, "wb") as handle:  # type: ignore[attr-defined]
        while chunk := source.read(CHUNK_BYTES):
            digest.update(chunk)
            handle.write(chunk)
    return digest.hexdigest()
