"""The unlearn job's run: unlearn the job's forget set from the head version, save the checkpoint and
audit every request it serves. Returns what `core.jobs.commit.commit_unlearn_success` writes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.db import new_id
from core.jobs.artifacts import (
    Stopwatch,
    checkpoint_path,
    code_version,
    load_dataset_for,
    load_parent,
    split_record,
    splits_for,
)
from core.jobs.audits import RequestAudits
from core.jobs.claim import JobClaim
from core.jobs.commit import UnlearnResult
from core.jobs.retry import PermanentJobError
from core.jobs.runtime import JobRuntime
from core.request_params import split_reference

if TYPE_CHECKING:
    from unlearning.data import UnlearningSplits


def run_unlearn(claim: JobClaim, runtime: JobRuntime, artifacts: Path) -> UnlearnResult:
    """Unlearn the job's forget set from the head version, save the checkpoint, audit every request.

    Returns the result for `commit_unlearn_success`, including the id the new version will get (the
    reports' provenance names it before the version row exists). Raises `Cancelled` on a stop.
    Progress: data 0-5 %, method 5-80 % (5-55 % plus a retrain reference 55-80 %), audits 80-99 %.
    """
    import torch
    from pydantic import ValidationError

    from models.checkpoint import save_checkpoint
    from unlearning.methods.base import UnknownMethodError, get_method, parse_params

    try:
        reference, raw_params = split_reference(claim.params)
        method = get_method(claim.method)
        config = parse_params(claim.method, raw_params)
    except (UnknownMethodError, ValidationError, ValueError) as error:
        raise PermanentJobError(f"method {claim.method!r} with params {claim.params}: {error}") from error

    clock = Stopwatch()
    runtime.progress(0.0, "loading data")
    dataset = load_dataset_for(claim)
    parent = load_parent(claim)
    if claim.forget_class is None and not claim.forget_ids:
        raise PermanentJobError("every sample ID of the job is already forgotten")
    splits = splits_for(dataset, claim, forget_ids=claim.forget_ids, excluded=claim.tombstones)
    clock.lap("load")

    method_end = 0.55 if reference == "retrain" else 0.8
    seed = int(getattr(config, "seed", 0) or 0)
    torch.manual_seed(seed)
    new_model, info = method.run(
        parent, splits, config, runtime.window(0.05, method_end), runtime.should_stop
    )
    clock.lap("method")

    runtime.progress(method_end, "saving checkpoint")
    version_id = new_id("ver")
    path = checkpoint_path(artifacts, claim)
    saved = save_checkpoint(
        new_model,
        path,
        metadata={
            "model_id": claim.model_id,
            "version_id": version_id,
            "job_id": claim.job_id,
            "parent_version_id": str(claim.parent_version_id),
            "method": claim.method,
            "dataset_id": claim.dataset.id,
        },
    )
    clock.lap("save")
    audits: RequestAudits | None = None
    try:  # the checkpoint file exists from here on: remove it (and any page) if anything below fails or stops
        reference_model = None
        if reference == "retrain":
            retrain = get_method("retrain")
            reference_model, _ = retrain.run(
                parent, splits, parse_params("retrain", {}), runtime.window(0.55, 0.8), runtime.should_stop
            )
            clock.lap("reference_retrain")
        audits = RequestAudits(claim, runtime, dataset, splits, parent, new_model, reference_model)
        provenance = {
            "job_id": claim.job_id,
            "attempt": claim.attempt,
            "worker_id": claim.worker_id,
            "model_id": claim.model_id,
            "dataset_id": claim.dataset.id,
            "method": claim.method,
            "params": claim.params,
            "method_info": info,
            "coalesced_request_ids": claim.request_ids,
            "parent": {"version_id": claim.parent_version_id, "sha256": claim.parent_sha256},
            "new": {"version_id": version_id, "sha256": saved.sha256, "size_bytes": saved.size_bytes},
            "job_sets": split_record(splits, claim.tombstones),
            "seeds": {"method": seed, "audit": 0},
            "code_version": code_version(),
            "timings_s": clock.seconds,
        }
        reports = audits.reports(provenance, artifacts / "reports" / claim.model_id)
        clock.lap("audit")
    except BaseException:
        path.unlink(missing_ok=True)
        for page in audits.html_pages.values() if audits is not None else ():
            Path(page).unlink(missing_ok=True)
        raise

    assert audits is not None
    runtime.progress(0.99, "writing results")
    metrics = {
        **audits.job_after.headline(),
        "sets": split_record(splits, claim.tombstones),
        "method_info": info,
        "timings_s": clock.seconds,
        "request_ids": claim.request_ids,
    }
    return UnlearnResult(
        checkpoint_uri=str(path),
        sha256=saved.sha256,
        size_bytes=saved.size_bytes,
        metrics=metrics,
        reports=reports,
        forgotten=forgotten_owners(claim, splits),
        version_id=version_id,
        html_reports=audits.html_pages,
    )


def forgotten_owners(claim: JobClaim, splits: UnlearningSplits) -> dict[str, str]:
    """The new tombstones: each forgotten sample with the (first) request that named it."""
    owner: dict[str, str] = {}
    for request in claim.requests:
        for sample in request.sample_ids:
            owner.setdefault(sample, request.id)
    class_request = claim.requests[0].id
    return {
        sample: owner.get(sample, class_request)
        for sample in splits.forget.sample_ids
        if sample not in claim.tombstones
    }
