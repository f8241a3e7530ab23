"""The unlearn job's run: unlearn the job's forget set from the head version, save the checkpoint and
audit every request it serves. Returns what `core.jobs.commit.commit_unlearn_success` writes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.db import new_id
from core.jobs.acceptance import Climb, climb, rungs_for
from core.jobs.artifacts import (
    Stopwatch,
    code_version,
    load_dataset_for,
    load_parent,
    split_record,
    splits_for,
    store_checkpoint,
)
from core.jobs.audits import RequestAudits, request_rows
from core.jobs.claim import JobClaim
from core.jobs.commit import UnlearnResult
from core.jobs.retry import PermanentJobError
from core.jobs.runtime import JobRuntime
from core.request_params import split_reference
from core.storage import ArtifactStore, StoredObject

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.audit import AuditProbs
    from unlearning.data import UnlearningSplits
    from unlearning.methods.base import MethodConfig


def run_unlearn(claim: JobClaim, runtime: JobRuntime, store: ArtifactStore) -> UnlearnResult:
    """Unlearn the job's forget set from the head version, save the checkpoint, audit every request.

    Returns the result for `commit_unlearn_success`, including the id the new version will get (the
    reports' provenance names it before the version row exists). Raises `Cancelled` on a stop.
    The method runs on the acceptance ladder (`core.jobs.acceptance`): the version keeps the first rung
    whose audit passes for every request, or the last one.
    Progress: data 0-5 %, method 5-80 % (5-55 % plus a retrain reference 55-80 %), audits 80-99 %.
    """
    from unlearning.audit import model_probs
    from unlearning.training import pick_device

    reference, config = _parse(claim)
    clock = Stopwatch()
    runtime.progress(0.0, "loading data")
    dataset = load_dataset_for(claim, store)
    parent = load_parent(claim, store)
    if claim.forget_class is None and not claim.forget_ids:
        raise PermanentJobError("every sample ID of the job is already forgotten")
    splits = splits_for(dataset, claim, forget_ids=claim.forget_ids, excluded=claim.tombstones)
    config = config.for_forget_set(
        forget_count=len(splits.forget), class_wise=splits.forget_class is not None, pruned=bool(parent.masks)
    )
    clock.lap("load")

    device = pick_device()
    method_end = 0.55 if reference == "retrain" else 0.8
    seed = int(getattr(config, "seed", 0) or 0)
    rows = request_rows(claim, splits)
    climbed = climb(
        claim,
        runtime,
        parent,
        splits,
        rungs_for(claim, config),
        rows,
        seed=seed,
        window=(0.05, method_end),
        device=device,
    )
    clock.lap("method")

    runtime.progress(method_end, "saving checkpoint")
    version_id = new_id("ver")
    saved = _save(climbed, claim, version_id, store)
    clock.lap("save")
    audits: RequestAudits | None = None
    try:  # the checkpoint exists from here on: remove it (and any page) if anything below fails or stops
        probs = {"before": model_probs(parent, splits, device=device), "after": climbed.probs}
        if reference == "retrain":
            probs["reference"] = (
                climbed.probs if climbed.rung.exact else _reference(runtime, parent, splits, device)
            )
            clock.lap("reference_retrain")
        audits = RequestAudits(claim, runtime, dataset, splits, probs, device)
        provenance = {
            "job_id": claim.job_id,
            "attempt": claim.attempt,
            "worker_id": claim.worker_id,
            "model_id": claim.model_id,
            "dataset_id": claim.dataset.id,
            "method": claim.method,
            "params": claim.params,
            "kept_rung": {"rung": climbed.rung.name, "method": climbed.rung.method},
            "method_info": climbed.info,
            "coalesced_request_ids": claim.request_ids,
            "parent": {"version_id": claim.parent_version_id, "sha256": claim.parent_sha256},
            "new": {"version_id": version_id, "sha256": saved.sha256, "size_bytes": saved.size_bytes},
            "job_sets": split_record(splits, claim.tombstones),
            "seeds": {"method": seed, "audit": 0},
            "code_version": code_version(),
            "timings_s": clock.seconds,
        }
        sections = {request_id: {"acceptance": climbed.section(request_id)} for request_id in rows}
        reports = audits.reports(provenance, store, sections)
        clock.lap("audit")
    except BaseException:
        store.delete(saved.url)
        for page in audits.html_pages.values() if audits is not None else ():
            store.delete(page)
        raise

    runtime.progress(0.99, "writing results")
    metrics = {
        **audits.job_after.headline(),
        "sets": split_record(splits, claim.tombstones),
        "method_info": climbed.info,
        "acceptance": {"kept_rung": climbed.rung.name, "rungs": len(climbed.records)},
        "timings_s": clock.seconds,
        "request_ids": claim.request_ids,
    }
    return UnlearnResult(
        checkpoint_uri=saved.url,
        sha256=saved.sha256,
        size_bytes=saved.size_bytes,
        metrics=metrics,
        reports=reports,
        forgotten=forgotten_owners(claim, splits),
        version_id=version_id,
        html_reports=audits.html_pages,
        method=climbed.rung.method,
        params=climbed.rung.config.model_dump(mode="json"),
        escalations=climbed.escalations(),
        audit_failed={request_id: verdict.to_dict() for request_id, verdict in climbed.failed().items()},
    )


def _parse(claim: JobClaim) -> tuple[str | None, MethodConfig]:
    """The audit reference and the method's typed config; PermanentJobError when they cannot be."""
    from pydantic import ValidationError

    from unlearning.methods.base import UnknownMethodError, get_method, parse_params

    try:
        reference, raw_params = split_reference(claim.params)
        get_method(claim.method)  # an unknown method fails here, before any data is loaded
        return reference, parse_params(claim.method, raw_params)
    except (UnknownMethodError, ValidationError, ValueError) as error:
        raise PermanentJobError(f"method {claim.method!r} with params {claim.params}: {error}") from error


def _save(climbed: Climb, claim: JobClaim, version_id: str, store: ArtifactStore) -> StoredObject:
    metadata = {
        "model_id": claim.model_id,
        "version_id": version_id,
        "job_id": claim.job_id,
        "parent_version_id": str(claim.parent_version_id),
        "method": climbed.rung.method,
        "dataset_id": claim.dataset.id,
    }
    return store_checkpoint(store, claim, climbed.model, metadata)


def _reference(runtime: JobRuntime, parent: Classifier, splits: UnlearningSplits, device: Any) -> AuditProbs:
    """The outputs of a model retrained without the forget set: the audit's yardstick."""
    from unlearning.audit import model_probs
    from unlearning.methods.base import get_method, parse_params

    retrained, _ = get_method("retrain").run(
        parent, splits, parse_params("retrain", {}), runtime.window(0.55, 0.8), runtime.should_stop
    )
    return model_probs(retrained, splits, device=device)


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
