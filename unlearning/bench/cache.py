"""Cached bench models: the original per (preset, seed), retrain references per scenario.

Entries live under `<UNLEARN_CACHE_DIR>/bench/<key>/` as a safetensors checkpoint plus the seconds it
took to make (in the checkpoint metadata). The key hashes everything the model depends on (preset,
recipe, architecture, dataset and its sizes, and for retrain the forget ids), so changing any of them
never loads a stale model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.base import Classifier
from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from unlearning.data.cache import cache_dir, cache_key

SECONDS_KEY = "bench_seconds"


@dataclass(frozen=True)
class CachedModel:
    model: Classifier
    seconds: float
    path: Path


def entry_path(kind: str, cache_root: Path | None, **parts: Any) -> Path:
    key = cache_key(kind=kind, **parts)
    return (cache_root or cache_dir()) / "bench" / f"{kind}-{key}" / "model.safetensors"


def ids_digest(sample_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sample_ids).encode()).hexdigest()


def load_cached(path: Path) -> CachedModel | None:
    """The cached model, or None when absent or unreadable (a damaged entry is rebuilt, never trusted)."""
    if not path.is_file():
        return None
    try:
        loaded = load_checkpoint(path)
        seconds = float(loaded.metadata[SECONDS_KEY])
    except (CheckpointError, KeyError, ValueError, OSError):
        return None
    return CachedModel(loaded.model.eval(), seconds, path)


def store(model: Classifier, seconds: float, path: Path) -> None:
    save_checkpoint(model, path, {SECONDS_KEY: f"{seconds:.3f}"})
