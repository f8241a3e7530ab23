"""What a job reads and writes besides the database: the dataset, the parent checkpoint (checked against
its sha256), its own checkpoint files (keyed by job and attempt), and the records of the sets it used."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.jobs.claim import JobClaim
from core.jobs.retry import PermanentJobError

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import Dataset, UnlearningSplits


def code_version() -> str:
    try:
        return metadata.version("unlearn-service")
    except metadata.PackageNotFoundError:
        return "unknown"


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def load_dataset_for(claim: JobClaim) -> Dataset:
    from unlearning.pipeline import load_dataset

    try:
        return load_dataset(claim.dataset.format, claim.dataset.uri, **claim.dataset.options)
    except (FileNotFoundError, ValueError, TypeError) as error:
        raise PermanentJobError(f"cannot load dataset {claim.dataset.id}: {error}") from error


def load_parent(claim: JobClaim) -> Classifier:
    """The head version's model, after checking the file is the one the version row describes."""
    from models.checkpoint import file_sha256, load_checkpoint

    assert claim.parent_checkpoint_uri is not None
    path = Path(claim.parent_checkpoint_uri)
    if not path.exists():
        raise PermanentJobError(f"checkpoint of version {claim.parent_version_id} is missing: {path}")
    actual = file_sha256(path).sha256
    if actual != claim.parent_sha256:
        raise PermanentJobError(
            f"checkpoint of version {claim.parent_version_id} was altered: "
            f"sha256 {actual} != {claim.parent_sha256}"
        )
    return load_checkpoint(path).model


def checkpoint_path(artifacts: Path, claim: JobClaim) -> Path:
    """Keyed by job id and attempt: a taken-over attempt can never overwrite the file of another."""
    return artifacts / "models" / claim.model_id / f"{claim.job_id}-a{claim.attempt}.safetensors"


def discard_earlier_attempts(artifacts: Path, claim: JobClaim) -> list[Path]:
    """Remove this job's checkpoints (and temp files) from earlier attempts; call after this attempt's
    version is written. A worker killed after saving (while auditing) leaves its file behind, and once
    the job has its version no row can ever point at another attempt's file."""
    folder = checkpoint_path(artifacts, claim).parent
    removed: list[Path] = []
    for attempt in range(1, claim.attempt):
        name = f"{claim.job_id}-a{attempt}.safetensors"
        for path in [folder / name, *folder.glob(f".{name}.*.tmp")]:
            if path.exists():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def ids_digest(sample_ids: list[str]) -> str:
    """sha256 over the sorted IDs joined by newlines: lets anyone check a set against the dataset."""
    return hashlib.sha256("\n".join(sorted(sample_ids)).encode()).hexdigest()


def split_record(
    splits: UnlearningSplits, excluded: frozenset[str], forget_ids: list[str] | None = None
) -> dict[str, Any]:
    """The sets a job (or, with `forget_ids`, one request of it) was audited on, as counts and digests."""
    forget = list(splits.forget.sample_ids) if forget_ids is None else forget_ids
    return {
        "forget": len(forget),
        "retain": len(splits.retain),
        "val": len(splits.val),
        "test": len(splits.test),
        "excluded_tombstones": len(excluded),
        "forget_ids_sha256": ids_digest(forget),
        "retain_ids_sha256": ids_digest(list(splits.retain.sample_ids)),
        "forget_class": splits.forget_class,
    }


def splits_for(
    dataset: Dataset, claim: JobClaim, *, forget_ids: list[str] | None, excluded: frozenset[str]
) -> UnlearningSplits:
    from unlearning.data import SplitError, make_splits

    try:
        if claim.forget_class is not None:
            return make_splits(dataset, forget_class=claim.forget_class, excluded_ids=excluded)
        return make_splits(dataset, forget_ids=forget_ids, excluded_ids=excluded)
    except SplitError as error:
        raise PermanentJobError(str(error)) from error


@dataclass
class Stopwatch:
    seconds: dict[str, float] = field(default_factory=dict)
    _started: float = field(default_factory=time.perf_counter)

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._started, 3)
        self._started = now
