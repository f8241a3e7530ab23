"""The artifact store: checkpoints and audit pages under one URL (`artifact_url`), read back by URL.

Writes are atomic: a `file://` object is written under a temporary name in its folder, synced and renamed;
an `s3://` object appears when its upload completes (a failed upload is aborted). The sha256 of every
object is computed while its bytes go out, and downloads into a local file are checked against the sha256
the caller knows. Reads take any URL of the store's schemes (bare absolute paths are read as files), so
rows written before a move of `artifact_url` stay readable.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.storage.filesystems import S3Options, filesystem
from core.storage.urls import display, join, local_path, scheme_of

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
STAGING_FOLDER = "staging"
"""Under a host's cache root: files on their way into or out of the store (removed once there)."""


class ObjectMissing(FileNotFoundError):
    """No object at that URL."""


class ObjectAltered(ValueError):
    """An object's bytes do not have the sha256 (or size) its row records."""


@dataclass(frozen=True)
class StoredObject:
    url: str
    sha256: str
    size_bytes: int


def _chunks_of(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


class ArtifactStore:
    """Objects under `root_url`; `staging_root` is this host's local folder for files in transit."""

    def __init__(self, root_url: str, *, s3: S3Options, staging_root: Path) -> None:
        self.root_url = root_url
        self.s3 = s3
        self.staging_root = staging_root

    @property
    def is_local(self) -> bool:
        return scheme_of(self.root_url) == "file"

    def url_for(self, key: str) -> str:
        return join(self.root_url, key)

    # -- writing --------------------------------------------------------------------------------------

    def put_file(self, key: str, source: Path) -> StoredObject:
        """Copy the local file `source` to `key`."""
        return self.put_chunks(key, _chunks_of(source))

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        return self.put_chunks(key, [data])

    def put_chunks(self, key: str, chunks: Iterable[bytes]) -> StoredObject:
        """Write the bytes of `chunks` to `key`; an error while they come leaves no object behind."""
        return self._write(self.url_for(key), chunks)

    def _write(self, url: str, chunks: Iterable[bytes]) -> StoredObject:
        digest = hashlib.sha256()
        size = 0

        def counted() -> Iterator[bytes]:
            nonlocal size
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                yield chunk

        if scheme_of(url) == "file":
            _write_local(local_path(url), counted())
        else:
            self._write_remote(url, counted())
        return StoredObject(url, digest.hexdigest(), size)

    def _write_remote(self, url: str, chunks: Iterator[bytes]) -> None:
        fs, path = filesystem(url, self.s3)
        handle = fs.open(path, "wb")
        try:
            for chunk in chunks:
                handle.write(chunk)
        except BaseException:
            handle.discard()  # aborts a multipart upload; nothing small was sent yet
            handle.closed = True  # never completed by a later close()
            raise
        handle.close()
        fs.invalidate_cache(path)

    # -- reading --------------------------------------------------------------------------------------

    def size(self, url: str) -> int | None:
        """The object's size in bytes, or None when there is none."""
        fs, path = filesystem(url, self.s3)
        try:
            info = fs.info(path)
        except FileNotFoundError:
            return None
        if info.get("type") != "file":
            return None
        return int(info["size"])

    def stream(self, url: str) -> Iterator[bytes]:
        """The object's bytes in chunks; ObjectMissing (at the first chunk) when there is none."""
        fs, path = filesystem(url, self.s3)
        try:
            handle = fs.open(path, "rb")
        except FileNotFoundError:
            raise ObjectMissing(f"no object at {display(url)}") from None
        with handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk

    def read_bytes(self, url: str) -> bytes:
        return b"".join(self.stream(url))

    def verified_stream(self, url: str, *, sha256: str, size_bytes: int) -> Iterator[bytes]:
        """`stream`, raising ObjectAltered after the last chunk when the bytes are not the recorded ones
        (a download then ends short of its Content-Length instead of passing for complete)."""
        digest = hashlib.sha256()
        read = 0
        for chunk in self.stream(url):
            read += len(chunk)
            digest.update(chunk)
            if read <= size_bytes:
                yield chunk
            elif read - len(chunk) < size_bytes:
                yield chunk[: size_bytes - (read - len(chunk))]
        if read != size_bytes or digest.hexdigest() != sha256:
            log.error("%s does not match its row (sha256 %s, %d bytes)", display(url), sha256, size_bytes)
            raise ObjectAltered(f"{display(url)} does not have sha256 {sha256}")

    def presign(self, url: str, expires_s: int) -> str | None:
        """A URL that serves the object without credentials for `expires_s`; None for a local file."""
        if scheme_of(url) == "file" or expires_s <= 0:
            return None
        fs, path = filesystem(url, self.s3)
        return str(fs.sign(path, expiration=expires_s))

    def download(self, url: str, target: Path, *, sha256: str | None = None) -> StoredObject:
        """Copy the object to the local file `target` (atomically), checked against `sha256` when given."""
        digest = hashlib.sha256()
        size = 0

        def counted() -> Iterator[bytes]:
            nonlocal size
            for chunk in self.stream(url):
                digest.update(chunk)
                size += len(chunk)
                yield chunk

        _write_local(target, counted())
        if sha256 is not None and digest.hexdigest() != sha256:
            target.unlink(missing_ok=True)
            raise ObjectAltered(f"{display(url)} has sha256 {digest.hexdigest()}, not {sha256}")
        return StoredObject(url, digest.hexdigest(), size)

    @contextmanager
    def local_copy(self, url: str, *, sha256: str) -> Iterator[Path]:
        """A local file holding the object, checked against `sha256`: a local object itself, else a
        download into staging that is removed when the block ends (no copy outlives its use)."""
        if scheme_of(url) == "file":
            path = local_path(url)
            if not path.is_file():
                raise ObjectMissing(f"no object at {path}")
            actual = hashlib.sha256()
            for chunk in _chunks_of(path):
                actual.update(chunk)
            if actual.hexdigest() != sha256:
                raise ObjectAltered(f"{path} has sha256 {actual.hexdigest()}, not {sha256}")
            yield path
            return
        with self.staged(suffix=Path(url).suffix) as target:
            self.download(url, target, sha256=sha256)
            yield target

    @contextmanager
    def staged(self, suffix: str = "") -> Iterator[Path]:
        """A fresh local path in this host's staging folder, removed (if written) when the block ends."""
        folder = self.staging_root / STAGING_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{secrets.token_hex(8)}{suffix}"
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    # -- deleting -------------------------------------------------------------------------------------

    def delete(self, url: str) -> None:
        """Remove the object (and, for a local one, any partial write of it); no error when absent."""
        if scheme_of(url) == "file":
            path = local_path(url)
            path.unlink(missing_ok=True)
            if path.parent.is_dir():
                for partial in path.parent.glob(f".{path.name}.*.tmp"):
                    partial.unlink(missing_ok=True)
            return
        fs, path_in_fs = filesystem(url, self.s3)
        try:
            fs.rm_file(path_in_fs)
        except FileNotFoundError:
            pass
        fs.invalidate_cache(path_in_fs)


def _write_local(target: Path, chunks: Iterable[bytes]) -> None:
    """Write under a temporary name next to `target`, sync, then rename: readers never see a partial file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
