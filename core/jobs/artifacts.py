"""What a job reads and writes besides the database: the dataset (an s3:// one through this host's local
copy), the parent checkpoint (fetched from the artifact store and checked against its sha256), its own
checkpoint objects (keyed by job and attempt), and the records of the sets it used."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

from core.jobs.claim import JobClaim
from core.jobs.retry import PermanentJobError
from core.storage import ArtifactStore, ObjectAltered, ObjectMissing, StoredObject

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


def load_dataset_for(claim: JobClaim, store: ArtifactStore) -> Dataset:
    """The claim's dataset, decoded; an s3:// one from this host's copy, checked against the content sha256
    recorded when it was registered."""
    from core.storage.datasets import local_source
    from core.storage.mirror import DatasetChanged
    from unlearning.data.listing import CatalogError
    from unlearning.pipeline import load_dataset

    dataset = claim.dataset
    try:
        source = local_source(dataset.uri, dataset.content_sha256, s3=store.s3, cache_root=store.staging_root)
    except (DatasetChanged, CatalogError) as error:
        raise PermanentJobError(f"cannot load dataset {dataset.id}: {error}") from error
    try:
        return load_dataset(dataset.format, source.local, **dataset.options)
    except (FileNotFoundError, ValueError, TypeError) as error:
        raise PermanentJobError(f"cannot load dataset {dataset.id}: {source.public(str(error))}") from error


def load_parent(claim: JobClaim, store: ArtifactStore) -> Classifier:
    """The head version's model, from a local copy of its checkpoint checked against the version's sha256
    (a download is removed once loaded)."""
    from models.checkpoint import load_checkpoint

    assert claim.parent_checkpoint_uri is not None and claim.parent_sha256 is not None
    version = claim.parent_version_id
    try:
        with store.local_copy(claim.parent_checkpoint_uri, sha256=claim.parent_sha256) as path:
            return load_checkpoint(path).model
    except ObjectMissing as error:
        raise PermanentJobError(f"checkpoint of version {version} is missing: {error}") from None
    except ObjectAltered as error:
        raise PermanentJobError(f"checkpoint of version {version} was altered: {error}") from None


def checkpoint_key(claim: JobClaim, attempt: int | None = None) -> str:
    """Keyed by job id and attempt: a taken-over attempt can never overwrite the object of another."""
    number = claim.attempt if attempt is None else attempt
    return f"models/{claim.model_id}/{claim.job_id}-a{number}.safetensors"


def store_checkpoint(
    store: ArtifactStore, claim: JobClaim, model: Classifier, metadata: dict[str, str]
) -> StoredObject:
    """Save the model's checkpoint into the store (through a local staging file, removed afterwards)."""
    from models.checkpoint import save_checkpoint

    with store.staged(".safetensors") as staged:
        saved = save_checkpoint(model, staged, metadata=metadata)
        stored = store.put_file(checkpoint_key(claim), staged)
    if stored.sha256 != saved.sha256:
        store.delete(stored.url)
        raise RuntimeError(
            f"the checkpoint changed on its way to the store: {stored.sha256} != {saved.sha256}"
        )
    return stored


def discard_earlier_attempts(store: ArtifactStore, claim: JobClaim) -> list[str]:
    """Remove this job's checkpoints (and partial writes) from earlier attempts; call after this attempt's
    version is written. A worker killed after saving (while auditing) leaves its object behind, and once
    the job has its version no row can ever point at another attempt's object. Returns those removed."""
    removed: list[str] = []
    for attempt in range(1, claim.attempt):
        url = store.url_for(checkpoint_key(claim, attempt))
        existed = store.size(url) is not None
        store.delete(url)
        if existed:
            removed.append(url)
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
