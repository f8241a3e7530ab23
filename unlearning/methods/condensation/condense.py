"""Dataset condensation for unlearning (after Khan, 2024): sub-classes, one blended image per sub-class,
the reduced retain set, and a cache per model version.

Steps, with the symbols used below:
1. Sub-classes. z = f(x) are the original model's penultimate features of the train set (retain plus
   forget, in sample-id order). Within each class c, k-means (scikit-learn, seeded) splits the n_c images
   into K_c = ceil(n_c / images_per_subclass) sub-classes S_j.
2. Condensation. Each sub-class becomes one image, a learnable convex blend of its members:
       x_j = sum_{i in S_j} softmax(w_j)_i x_i,      min_{w_j} || f(x_j) - mean_{i in S_j} z_i ||^2
   w_j starts at 0 (the plain average); up to `steps` Adam steps on all w_j of a chunk of
   `subclass_batch` sub-classes at once (the model frozen, in eval mode), stopping a chunk early when its
   loss stalls. The blend is rounded to uint8 like every image. Cost: one forward and backward pass per
   sub-class and step; on the cpu bench (1,000 sub-classes) at most 100,000 passes, about a third of
   the 300,000 of one retraining, paid once per model version.
3. Reduced retain set, per request: a sub-class holding a forget sample is "dirty" and contributes its
   real retain images unchanged; a clean sub-class contributes its condensed image (id `condensed/<j>`).
   A sub-class whose members are all forgotten contributes nothing.

Caching: steps 1 and 2 depend only on the model version and the train set, never on the request (the
forget/retain partition enters at step 3 only), so their result is stored under
`<cache_dir()>/condensed/decoded/<key>.npz` with key = hash(model state_dict bytes, train sample ids,
settings). Requests against one model version (retries, the bench's scenarios and rows, DAU with
`retain_source="condensed"` after `condensation`) pay for condensation once; a new version (its weights
changed) or another dataset gets its own entry, so a stale set is never used. The entries hold blends of
every train image of that version, forget samples included (dirty sub-classes' blends are stored though
never trained on): delete the folder when versions are retired if derived data must go too.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from unlearning.data import ImageSet
from unlearning.data.cache import cache_dir, cache_key, cached_arrays
from unlearning.methods.common import Job, batch_to, raise_if_stopped, working_copy
from unlearning.methods.condensation.config import CondenseSettings
from unlearning.training import memory_format_for, pick_device, to_float
from unlearning.types import Progress, ShouldStop, never_stop, no_progress

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import UnlearningSplits

CONDENSED_PREFIX = "condensed/"
FEATURE_CHUNK = 512
CHECK_EVERY = 10
"""Steps between early-stopping checks of a condensation chunk."""
CACHE_FOLDER = "condensed"
"""Condensed sets live in `<cache_dir()>/condensed/` (as `decoded/<key>.npz`, the shared cache layout)."""


@dataclass(frozen=True)
class CondensedSet:
    """Steps 1-2 for one model version: `train_ids[i]` belongs to sub-class `assignment[i]`, whose
    condensed image is `images[assignment[i]]` with label `labels[assignment[i]]`."""

    train_ids: list[str]
    assignment: Tensor
    images: Tensor
    labels: Tensor

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "train_ids": np.array(self.train_ids, dtype=str),
            "assignment": self.assignment.numpy(),
            "images": self.images.numpy(),
            "labels": self.labels.numpy(),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> CondensedSet:
        return cls(
            train_ids=arrays["train_ids"].tolist(),
            assignment=torch.from_numpy(arrays["assignment"]),
            images=torch.from_numpy(arrays["images"]),
            labels=torch.from_numpy(arrays["labels"]),
        )


@torch.no_grad()
def penultimate_features(model: Classifier, images: Tensor) -> Tensor:
    """f(x) (N x D, float32, on the model's device) of uint8 images, in chunks, the model in eval mode."""
    device = next(model.parameters()).device
    memory_format = memory_format_for(model, device)
    chunks = images.split(FEATURE_CHUNK)
    return torch.cat([model.features(batch_to(part, device, memory_format)).float() for part in chunks])


def find_subclasses(features: Tensor, labels: Tensor, images_per_subclass: int, seed: int) -> Tensor:
    """Step 1: the sub-class index (global, numbered class by class) of every row."""
    from sklearn.cluster import KMeans

    assignment = torch.empty(len(labels), dtype=torch.int64)
    points = features.cpu().numpy().astype(np.float64)
    next_index = 0
    for label in labels.unique().tolist():
        rows = (labels == label).nonzero().flatten()
        count = math.ceil(len(rows) / images_per_subclass)
        if count == 1:
            local = np.zeros(len(rows), dtype=np.int64)
        else:
            local = KMeans(n_clusters=count, n_init=1, random_state=seed).fit_predict(points[rows.numpy()])
        # Renumber the clusters k-means actually used, so indices are dense.
        _, dense = np.unique(local, return_inverse=True)
        assignment[rows] = torch.from_numpy(dense.astype(np.int64)) + next_index
        next_index += int(dense.max()) + 1
    return assignment


def condense(
    model: Classifier,
    images: Tensor,
    assignment: Tensor,
    target_features: Tensor,
    settings: CondenseSettings,
    *,
    progress: Progress = no_progress,
    should_stop: ShouldStop = never_stop,
) -> Tensor:
    """Step 2: one uint8 image per sub-class, the blend of its members whose features best match
    `target_features` (K x D, the sub-class means). `model` is frozen and used in eval mode."""
    device = next(model.parameters()).device
    memory_format = memory_format_for(model, device)
    sizes = torch.bincount(assignment)
    count = len(sizes)
    members = assignment.argsort(stable=True).split(sizes.tolist())
    condensed = torch.empty(count, *images.shape[1:], dtype=torch.uint8)
    chunks = list(range(0, count, settings.subclass_batch))
    for chunk_number, start in enumerate(chunks):
        chunk = range(start, min(start + settings.subclass_batch, count))
        width = max(len(members[index]) for index in chunk)
        rows = torch.zeros(len(chunk), width, dtype=torch.int64)
        valid = torch.zeros(len(chunk), width, dtype=torch.bool)
        for slot, index in enumerate(chunk):
            rows[slot, : len(members[index])] = members[index]
            valid[slot, : len(members[index])] = True
        pixels = to_float(images[rows.flatten()].to(device)).view(len(chunk), width, *images.shape[1:])
        valid, target = valid.to(device), target_features[start : chunk.stop].to(device)
        logits = torch.zeros(len(chunk), width, device=device, requires_grad=True)
        optimiser = torch.optim.Adam([logits], lr=settings.lr)
        last_check = float("inf")
        for step in range(settings.steps):
            raise_if_stopped(should_stop, f"condensation chunk {chunk_number}, step {step}")
            blend = _blend(logits, valid, pixels).contiguous(memory_format=memory_format)
            loss = (model.features(blend).float() - target).pow(2).sum(dim=1).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            progress((chunk_number + (step + 1) / settings.steps) / len(chunks), "condense")
            if (step + 1) % CHECK_EVERY == 0:
                if loss.item() > (1 - settings.tolerance) * last_check:
                    break
                last_check = loss.item()
        with torch.no_grad():
            blend = _blend(logits, valid, pixels)
        condensed[start : chunk.stop] = blend.mul(255).round().clamp(0, 255).to("cpu", torch.uint8)
    return condensed


def _blend(logits: Tensor, valid: Tensor, pixels: Tensor) -> Tensor:
    """x_j = sum_i softmax(w_j)_i x_i over the valid members of each row."""
    weights = logits.masked_fill(~valid, float("-inf")).softmax(dim=1)
    return torch.einsum("bm,bm...->b...", weights, pixels)


def condensed_set(
    model: Classifier,
    train: ImageSet,
    settings: CondenseSettings,
    *,
    device: torch.device | None = None,
    progress: Progress = no_progress,
    should_stop: ShouldStop = never_stop,
) -> tuple[CondensedSet, bool]:
    """Steps 1-2 for `model` on `train` (any row order), from the cache when there: (set, cache_hit)."""
    order = sorted(range(len(train)), key=train.sample_ids.__getitem__)
    train = train.subset(order)

    def build() -> dict[str, np.ndarray]:
        frozen = working_copy(model, device or pick_device()).eval()
        frozen.requires_grad_(False)
        features = penultimate_features(frozen, train.images)
        assignment = find_subclasses(features, train.labels, settings.images_per_subclass, settings.seed)
        count = int(assignment.max()) + 1
        sums = torch.zeros(count, features.shape[1], device=features.device)
        sums.index_add_(0, assignment.to(features.device), features)
        sizes = torch.bincount(assignment, minlength=count).to(features.device)
        means = sums / sizes[:, None]
        images = condense(
            frozen, train.images, assignment, means, settings, progress=progress, should_stop=should_stop
        )
        labels = torch.zeros(count, dtype=torch.int64).scatter_(0, assignment, train.labels)
        return CondensedSet(train.sample_ids, assignment, images, labels).to_arrays()

    if not settings.cache:
        return CondensedSet.from_arrays(build()), False
    built: list[bool] = []

    def build_once() -> dict[str, np.ndarray]:
        built.append(True)
        return build()

    key = cache_key(
        kind="condensed",
        model=weights_digest(model),
        train_ids=hashlib.sha256("\n".join(train.sample_ids).encode()).hexdigest(),
        settings=settings.model_dump(exclude={"cache"}),
    )
    arrays = cached_arrays(key, build_once, directory=cache_dir() / CACHE_FOLDER)
    return CondensedSet.from_arrays(arrays), not built


def weights_digest(model: Classifier) -> str:
    """sha256 over the spec and every state_dict tensor (name, dtype, shape, bytes): one per model version."""
    digest = hashlib.sha256(model.spec.model_dump_json().encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def reduced_retain_set(condensed: CondensedSet, splits: UnlearningSplits) -> ImageSet:
    """Step 3: real retain images of dirty sub-classes plus the condensed images of clean ones."""
    subclass_of = dict(zip(condensed.train_ids, condensed.assignment.tolist(), strict=True))

    def subclasses(images: ImageSet) -> Tensor:
        try:
            rows = [subclass_of[sample_id] for sample_id in images.sample_ids]
        except KeyError as error:
            raise ValueError(f"sample {error.args[0]!r} is not in the condensed train set") from None
        return torch.tensor(rows, dtype=torch.int64)

    retain_subclass, forget_subclass = subclasses(splits.retain), subclasses(splits.forget)
    dirty = torch.zeros(len(condensed.images), dtype=torch.bool)
    dirty[forget_subclass] = True
    covered = torch.zeros(len(condensed.images), dtype=torch.bool)
    covered[retain_subclass] = True
    clean = (covered & ~dirty).nonzero().flatten()
    condensed_part = ImageSet(
        condensed.images[clean],
        condensed.labels[clean],
        [f"{CONDENSED_PREFIX}{index}" for index in clean.tolist()],
    )
    keep_real = dirty[retain_subclass]
    return splits.retain.subset(keep_real).concat(condensed_part)


@dataclass(frozen=True)
class ReducedRetain:
    """Step 3's result for one request, and where steps 1-2 came from (for a method's `info`)."""

    images: ImageSet
    subclasses: int
    cache_hit: bool

    def counts(self, retain_size: int) -> dict[str, int]:
        """Real and condensed images in the reduced set, and the size of the retain set it stands for."""
        condensed = sum(sample_id.startswith(CONDENSED_PREFIX) for sample_id in self.images.sample_ids)
        return {"real": len(self.images) - condensed, "condensed": condensed, "of_retain": retain_size}

    def info(self, retain_size: int) -> dict[str, Any]:
        """What a method's `info` says about it."""
        return {
            "condensed_cache_hit": self.cache_hit,
            "subclasses": self.subclasses,
            "reduced_retain": self.counts(retain_size),
        }


def reduce_retain(
    model: Classifier,
    splits: UnlearningSplits,
    settings: CondenseSettings,
    *,
    device: torch.device | None = None,
    progress: Progress = no_progress,
    should_stop: ShouldStop = never_stop,
) -> ReducedRetain:
    """Steps 1-3: the reduced retain set of `splits` under `model`, condensing or loading from the cache."""
    condensed, cache_hit = condensed_set(
        model,
        splits.retain.concat(splits.forget),
        settings,
        device=device,
        progress=progress,
        should_stop=should_stop,
    )
    return ReducedRetain(reduced_retain_set(condensed, splits), len(condensed.images), cache_hit)


def reduce_retain_in(job: Job[Any], settings: CondenseSettings, share: float) -> ReducedRetain:
    """`reduce_retain` as the `condense` stage of a method's run, on the first `share` of its progress bar."""
    with job.clock.stage("condense"):
        return reduce_retain(
            job.model,
            job.splits,
            settings,
            device=job.device,
            should_stop=job.should_stop,
            progress=job.progress_span(0.0, share),
        )


def condensed_retain_set(
    model: Classifier,
    splits: UnlearningSplits,
    settings: CondenseSettings | None = None,
    *,
    device: torch.device | None = None,
    progress: Progress = no_progress,
    should_stop: ShouldStop = never_stop,
) -> ImageSet:
    """The reduced retain set of `splits` under `model` (condensing or loading from the cache first):
    what DAU trains its cross-entropy term on with `retain_source="condensed"`."""
    reduced = reduce_retain(
        model,
        splits,
        settings or CondenseSettings(),
        device=device,
        progress=progress,
        should_stop=should_stop,
    )
    return reduced.images
