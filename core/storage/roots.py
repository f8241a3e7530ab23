"""Dataset locations confined to the configured roots (`dataset_roots`).

A uri is refused, before anything at it is read, when it contains `..`, lies outside every root (another
folder, bucket or prefix) or resolves through a symlink to outside them; an image folder is refused when
any symlink inside it leads outside. A refusal is one message per cause that depends only on the uri and
the roots, never on what exists outside them, so registration cannot be used to probe the server.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.storage.urls import BadLocation, key_parts, local_path, relative_key, s3_parts, scheme_of
from unlearning.data.listing import CatalogError


class OutsideRoots(CatalogError):
    """The uri is not a location inside the dataset roots (field `uri`)."""

    def __init__(self, reason: str, roots: Sequence[str]) -> None:
        listed = ", ".join(roots) if roots else "(none configured)"
        super().__init__("uri", f"{reason}; datasets are read only from the dataset roots: {listed}")


@dataclass(frozen=True)
class DatasetLocation:
    uri: str
    """As the user gave it."""
    path: Path | None = None
    """A local file or folder inside a local root."""
    s3_url: str | None = None
    """`s3://bucket/key` inside an s3 root."""


def confine(uri: str, roots: Sequence[str]) -> DatasetLocation:
    """Where `uri` points, when that is inside `roots`; OutsideRoots otherwise (nothing read outside)."""
    if "\x00" in uri:
        raise OutsideRoots("the uri holds a NUL character", roots)
    try:
        scheme = scheme_of(uri)
    except BadLocation:
        if "://" in uri:
            raise OutsideRoots("only local paths, file:// and s3:// URIs are supported", roots) from None
        raise OutsideRoots("a local uri must be an absolute path", roots) from None
    if scheme == "s3":
        return DatasetLocation(uri, s3_url=_confine_s3(uri, roots))
    return DatasetLocation(uri, path=_confine_local(uri, roots))


def _confine_s3(uri: str, roots: Sequence[str]) -> str:
    try:
        bucket, key = s3_parts(uri)
        if key:
            key_parts(key)
    except BadLocation:
        reason = "the uri must be s3://bucket/key without '.', '..' or empty parts"
        raise OutsideRoots(reason, roots) from None
    for root in roots:
        if scheme_of(root) != "s3":
            continue
        root_bucket, prefix = s3_parts(root)
        if root_bucket == bucket and relative_key(prefix, key) is not None:
            return f"s3://{bucket}/{key}"
    raise OutsideRoots("the uri is outside the dataset roots", roots)


def _local_roots(roots: Sequence[str]) -> list[str]:
    return [root for root in roots if scheme_of(root) == "file"]


def _inside(path: str, folders: Sequence[str]) -> bool:
    return any(path == folder or path.startswith(folder.rstrip(os.sep) + os.sep) for folder in folders)


def _real_roots(roots: Sequence[str]) -> list[str]:
    return [os.path.realpath(root) for root in _local_roots(roots)]


def _confine_local(uri: str, roots: Sequence[str]) -> Path:
    try:
        path = local_path(uri) if uri.lower().startswith("file://") else Path(uri)
    except BadLocation:
        raise OutsideRoots("a file:// uri names no host (file:///abs/path)", roots) from None
    if "\x00" in str(path):
        raise OutsideRoots("the uri holds a NUL character", roots)
    if not path.is_absolute():
        raise OutsideRoots("a local uri must be an absolute path", roots)
    if ".." in path.parts:
        raise OutsideRoots("the uri must not contain '..'", roots)
    lexical = os.path.normpath(path)
    if not _inside(lexical, _local_roots(roots)):
        raise OutsideRoots("the uri is outside the dataset roots", roots)
    if not _inside(os.path.realpath(lexical), _real_roots(roots)):
        raise OutsideRoots("the uri resolves (through a symlink) outside the dataset roots", roots)
    return Path(lexical)


def check_tree(folder: Path, roots: Sequence[str]) -> None:
    """Refuse a folder in which a symlink (to a file or a folder, at any depth) leads outside the roots.

    Walks the folder and every symlinked folder inside the roots once; a link is judged by where it
    resolves, never by whether its target exists."""
    real_roots = _real_roots(roots)
    if not folder.is_dir():
        return
    pending = [str(folder)]
    seen: set[str] = set()
    while pending:
        current = pending.pop()
        real = os.path.realpath(current)
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue  # unreadable: the listing reports it, with a path inside the roots
        for entry in entries:
            if entry.is_symlink() and not _inside(os.path.realpath(entry.path), real_roots):
                where = os.path.relpath(entry.path, folder)
                raise OutsideRoots(f"{where!r} in the folder is a symlink that leads outside", roots)
            if entry.is_dir(follow_symlinks=True):
                pending.append(entry.path)
