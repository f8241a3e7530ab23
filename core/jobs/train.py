"""The train job's run: train the base model per `models.train_params` and save version 1's checkpoint."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

from core.jobs.artifacts import load_dataset_for, store_checkpoint, torch_threads
from core.jobs.claim import JobClaim
from core.jobs.commit import TrainResult
from core.jobs.retry import PermanentJobError
from core.jobs.runtime import JobRuntime
from core.storage import ArtifactStore

if TYPE_CHECKING:
    from models.spec import Architecture


def run_train(claim: JobClaim, runtime: JobRuntime, store: ArtifactStore) -> TrainResult:
    """Train the base model per `models.train_params`.

    `train_params` is what the API stores: `{"recipe": {TrainRecipe fields}, "width": int | None}`.
    """
    from pydantic import ValidationError

    from unlearning.pipeline import train_base_model
    from unlearning.training import TrainRecipe, accuracy

    raw = dict(claim.train_params)
    width = raw.pop("width", None)
    recipe_fields = raw.pop("recipe", None)
    try:
        if raw:
            raise ValueError(f"unknown train_params keys {sorted(raw)}")
        recipe = TrainRecipe.model_validate(recipe_fields or {})
    except (ValidationError, ValueError) as error:
        raise PermanentJobError(f"train_params {claim.train_params}: {error}") from error
    runtime.progress(0.0, "loading data")
    dataset = load_dataset_for(claim, store)
    started = time.perf_counter()
    model = train_base_model(
        dataset,
        cast("Architecture", claim.architecture),  # the API validated it against the registry
        recipe,
        runtime.window(0.02, 0.95),
        runtime.should_stop,
        width=width,
    )
    seconds = round(time.perf_counter() - started, 3)
    runtime.progress(0.95, "evaluating")
    metrics = {
        "train_accuracy": accuracy(model, dataset.train),
        "val_accuracy": accuracy(model, dataset.val),
        "test_accuracy": accuracy(model, dataset.test),
        "recipe": recipe.model_dump(),
        "seconds": seconds,
        "torch_threads": torch_threads(),
    }
    metadata = {
        "model_id": claim.model_id,
        "job_id": claim.job_id,
        "dataset_id": claim.dataset.id,
        "method": "train",
    }
    saved = store_checkpoint(store, claim, model, metadata)
    return TrainResult(saved.url, saved.sha256, saved.size_bytes, metrics)
