"""The on-disk cache of unpacked archives and decoded image arrays (`UNLEARN_CACHE_DIR`).

Decoding tens of thousands of JPEGs takes seconds on two cores; the decoded uint8 arrays are stored once as
an uncompressed .npz keyed by a fingerprint of the source and the selection rule, so later loads take a
fraction of a second. Arrays are saved without pickle (ids as fixed-width unicode).

`cache_policy(root, persist=False)` turns the cache off for the code run inside it: nothing decoded is
stored, and archives unpack into a scratch folder removed when the block ends. The service runs its jobs
that way, so it never keeps a copy of images a deletion request may erase (`DERIVED_FOLDERS` lists what a
cache root can hold that was derived from images, for a purge).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CACHE_ENV = "UNLEARN_CACHE_DIR"
CACHE_FORMAT_VERSION = 1
DERIVED_FOLDERS = ("decoded", "unpacked", "condensed", "scratch")
"""Folders of a cache root whose files are derived from images (decoded arrays, unpacked archives,
condensed sets, scratch unpacks); `bench/` holds models only."""


@dataclass
class _Policy:
    root: Path | None = None
    persist: bool = True
    scratch: list[Path] = field(default_factory=list)


_DEFAULT_POLICY = _Policy()
_policy_var: ContextVar[_Policy | None] = ContextVar("unlearn_cache_policy", default=None)


def _current() -> _Policy:
    return _policy_var.get() or _DEFAULT_POLICY


@contextmanager
def cache_policy(root: Path | None = None, *, persist: bool = True) -> Iterator[None]:
    """Within the block: the cache lives under `root` (default: as outside), and with `persist=False`
    nothing is stored there (see the module docstring)."""
    policy = _Policy(root=root, persist=persist)
    token = _policy_var.set(policy)
    try:
        yield
    finally:
        _policy_var.reset(token)
        for folder in policy.scratch:
            shutil.rmtree(folder, ignore_errors=True)


def cache_dir() -> Path:
    """The `cache_policy` root, else `$UNLEARN_CACHE_DIR`, else `~/.cache/unlearn-service`."""
    root = _current().root
    if root is not None:
        return root
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "unlearn-service"


def purge_derived(root: Path) -> list[str]:
    """Delete every image-derived entry under the cache `root`; returns what was removed (relative paths)."""
    removed: list[str] = []
    for name in DERIVED_FOLDERS:
        folder = root / name
        if not folder.exists():
            continue
        removed += sorted(str(path.relative_to(root)) for path in folder.iterdir())
        shutil.rmtree(folder, ignore_errors=True)
    return removed


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(**parts: object) -> str:
    """A short stable key for a JSON-able description of what was decoded and how."""
    text = json.dumps({"v": CACHE_FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cached_arrays(
    key: str, build: Callable[[], dict[str, np.ndarray]], directory: Path | None = None
) -> dict[str, np.ndarray]:
    """Load `decoded/<key>.npz` from the cache, or build the arrays, store them atomically and return them.

    Under `cache_policy(persist=False)` the arrays are built and returned, never read or stored."""
    if not _current().persist:
        return build()
    target = (directory or cache_dir()) / "decoded" / f"{key}.npz"
    if target.is_file():
        try:
            with np.load(target, allow_pickle=False) as stored:
                return {name: stored[name] for name in stored.files}
        except (OSError, ValueError):
            target.unlink(missing_ok=True)  # a damaged cache entry is rebuilt, never trusted
    arrays = build()
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{key}.", suffix=".npz", dir=target.parent)
    os.close(descriptor)
    try:
        with open(temp_name, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(temp_name, target)
    finally:
        Path(temp_name).unlink(missing_ok=True)
    return arrays


def unpack_archive(archive: str | Path, directory: Path | None = None) -> Path:
    """Unpack a .tar(.gz) archive once into `<cache>/unpacked/<sha256 prefix>/`; return that folder.

    Extraction uses tarfile's `data` filter (no absolute paths, links out of the tree or device files) and
    goes to a temporary folder renamed into place, so an interrupted unpack is never mistaken for a done one.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {str(archive)!r} does not exist")
    policy = _current()
    if not policy.persist:  # a scratch unpack, removed when the cache_policy block ends
        (directory or cache_dir()).joinpath("scratch").mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="unpack-", dir=(directory or cache_dir()) / "scratch"))
        policy.scratch.append(scratch)
        with tarfile.open(archive) as tar:
            tar.extractall(scratch, filter="data")
        return scratch
    target = (directory or cache_dir()) / "unpacked" / file_sha256(archive)[:16]
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # another process finished first: keep theirs
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
