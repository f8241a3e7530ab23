"""Running a claimed job: the unlearning (or base training) itself, between the claim and the final write.

Nothing here holds a DB session across the computation: `JobRuntime` opens one short transaction per
heartbeat, per throttled progress update and per throttled cancellation check. The computation returns
everything the single result transaction (`worker.claims.commit_*`) needs.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from app.db import new_id, session_scope, utcnow
from worker import claims
from worker.claims import JobClaim, UnlearnResult

if TYPE_CHECKING:
    from models.base import Classifier
    from models.spec import Architecture
    from unlearning.audit import AuditReport
    from unlearning.data import Dataset, UnlearningSplits

log = logging.getLogger(__name__)

REFERENCE_PARAM = "reference"
"""A request param the worker reads itself (not the method): "retrain" adds a retrained reference."""

PROGRESS_WRITE_INTERVAL_S = 0.5
CANCEL_CHECK_INTERVAL_S = 0.25


class PermanentJobError(Exception):
    """An error another attempt cannot fix (bad dataset, bad params): fail at once, no retry."""


class JobRuntime:
    """Heartbeat thread, throttled progress writes and the cancellation check of one claimed job."""

    def __init__(
        self,
        claim: JobClaim,
        *,
        database_url: str,
        heartbeat_interval_s: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.claim = claim
        self.database_url = database_url
        self.heartbeat_interval_s = heartbeat_interval_s
        self.clock = clock
        self.lost = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._heartbeat_loop, name=f"heartbeat-{claim.job_id}", daemon=True
        )
        self._last_write = 0.0
        self._last_stage = ""
        self._last_cancel_check = 0.0
        self._cancel_seen = False

    def __enter__(self) -> JobRuntime:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)

    def _heartbeat_loop(self) -> None:
        while not self._stopped.wait(self.heartbeat_interval_s):
            try:
                with session_scope(self.database_url) as session:
                    if not claims.record_heartbeat(session, self.claim, self.clock()):
                        log.warning(
                            "job %s: claim lost (another worker took over); stopping", self.claim.job_id
                        )
                        self.lost.set()
                        return
            except Exception:  # a DB hiccup must not kill the heartbeat thread; the next beat retries
                log.exception("job %s: heartbeat failed", self.claim.job_id)

    def progress(self, fraction: float, stage: str) -> None:
        """Write progress/stage when the stage changes or every PROGRESS_WRITE_INTERVAL_S."""
        now = time.monotonic()
        if stage == self._last_stage and now - self._last_write < PROGRESS_WRITE_INTERVAL_S:
            return
        self._last_write, self._last_stage = now, stage
        try:
            with session_scope(self.database_url) as session:
                if not claims.record_progress(
                    session, self.claim, fraction=fraction, stage=stage, now=self.clock()
                ):
                    self.lost.set()
        except Exception:
            log.exception("job %s: progress update failed", self.claim.job_id)

    def should_stop(self, *, force: bool = False) -> bool:
        """True once a served request asked to cancel, or the claim was lost.

        The DB is read at most every CANCEL_CHECK_INTERVAL_S (a method calls this every iteration);
        `force` reads it now (the last check before results are written).
        """
        if self.lost.is_set() or self._cancel_seen:
            return True
        now = time.monotonic()
        if force or now - self._last_cancel_check >= CANCEL_CHECK_INTERVAL_S:
            self._last_cancel_check = now
            try:
                with session_scope(self.database_url, readonly=True) as session:
                    self._cancel_seen = claims.cancel_requested(session, self.claim)
            except Exception:
                log.exception("job %s: cancellation check failed", self.claim.job_id)
        return self._cancel_seen or self.lost.is_set()

    def window(self, start: float, end: float) -> Callable[[float, str], None]:
        """A progress callback mapping a phase's own [0, 1] onto [start, end] of the whole job."""

        def report(fraction: float, stage: str) -> None:
            self.progress(start + (end - start) * min(max(fraction, 0.0), 1.0), stage)

        return report


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


def split_record(splits: UnlearningSplits, excluded: frozenset[str]) -> dict[str, Any]:
    return {
        "forget": len(splits.forget),
        "retain": len(splits.retain),
        "val": len(splits.val),
        "test": len(splits.test),
        "excluded_tombstones": len(excluded),
        "forget_ids_sha256": ids_digest(list(splits.forget.sample_ids)),
        "retain_ids_sha256": ids_digest(list(splits.retain.sample_ids)),
        "forget_class": splits.forget_class,
    }


def _splits_for(
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

    raw_params = dict(claim.params)
    reference = raw_params.pop(REFERENCE_PARAM, None)
    try:
        method = get_method(claim.method)
        config = parse_params(claim.method, raw_params)
    except (UnknownMethodError, ValidationError) as error:
        raise PermanentJobError(f"method {claim.method!r} with params {raw_params}: {error}") from error
    if reference not in (None, "retrain"):
        raise PermanentJobError(f"params.reference must be 'retrain' or absent, got {reference!r}")

    clock = Stopwatch()
    runtime.progress(0.0, "loading data")
    dataset = load_dataset_for(claim)
    parent = load_parent(claim)
    if claim.forget_class is None and not claim.forget_ids:
        raise PermanentJobError("every sample ID of the job is already forgotten")
    splits = _splits_for(dataset, claim, forget_ids=claim.forget_ids, excluded=claim.tombstones)
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


class RequestAudits:
    """One audit report per request: parent vs new version (vs the reference) on that request's own
    forget set; the other requests' samples of the same job are excluded from its retain set."""

    def __init__(
        self,
        claim: JobClaim,
        runtime: JobRuntime,
        dataset: Dataset,
        splits: UnlearningSplits,
        parent: Classifier,
        new_model: Classifier,
        reference_model: Classifier | None,
    ) -> None:
        from unlearning.audit import audit_model
        from unlearning.training import pick_device

        self.claim, self.runtime, self.dataset, self.splits = claim, runtime, dataset, splits
        self.parent, self.new_model, self.reference_model = parent, new_model, reference_model
        self.device = pick_device()
        self.audit_model = audit_model
        self.html_pages: dict[str, str] = {}
        """request id -> its HTML audit page, for the reports `reports` rendered."""
        runtime.progress(0.8, "auditing")
        self.job_after = audit_model(new_model, splits, device=self.device)

    def reports(self, provenance: dict[str, Any], pages_dir: Path | None = None) -> dict[str, dict[str, Any]]:
        """The JSON report of each request; with `pages_dir`, also its HTML page there."""
        from unlearning.audit import AuditReport
        from unlearning.types import Cancelled

        claim, excluded = self.claim, self.claim.tombstones
        reports: dict[str, dict[str, Any]] = {}
        for index, request in enumerate(claim.requests):
            if self.runtime.should_stop():
                raise Cancelled("stop requested while auditing")
            self.runtime.progress(0.8 + 0.19 * index / len(claim.requests), "auditing")
            if len(claim.requests) == 1:
                request_splits, after = self.splits, self.job_after
            else:
                own = [sample for sample in dict.fromkeys(request.sample_ids) if sample not in excluded]
                if not own:
                    continue
                others = frozenset(claim.forget_ids) - frozenset(own)
                request_splits = _splits_for(self.dataset, claim, forget_ids=own, excluded=excluded | others)
                after = self.audit_model(self.new_model, request_splits, device=self.device)
            before = self.audit_model(self.parent, request_splits, device=self.device)
            reference = (
                self.audit_model(self.reference_model, request_splits, device=self.device)
                if self.reference_model is not None
                else None
            )
            record = {
                **provenance,
                "request_id": request.id,
                "device": str(self.device),
                "torch_threads": torch_threads(),
                "sets": split_record(request_splits, excluded),
            }
            report = AuditReport(before=before, after=after, reference=reference, provenance=record)
            reports[request.id] = report.to_dict()
            if pages_dir is not None:
                page = pages_dir / f"{request.id}-{claim.job_id}-a{claim.attempt}.html"
                if write_audit_page(report, page, self.dataset.class_names):
                    self.html_pages[request.id] = str(page)
        return reports


def write_audit_page(report: AuditReport, path: Path, class_names: list[str]) -> bool:
    """Render the report's HTML page to `path`. False (logged) when it cannot: the page is a view of the
    JSON report, which stays the record, so a plotting failure must not fail the job."""
    from unlearning.audit.html import render_html

    try:
        page = render_html(report, class_names=class_names)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(page, encoding="utf-8")
        partial.replace(path)
    except Exception:
        log.exception("could not write the HTML audit page %s", path)
        return False
    return True


def run_train(claim: JobClaim, runtime: JobRuntime, artifacts: Path) -> tuple[str, str, int, dict[str, Any]]:
    """Train the base model per `models.train_params`; returns (checkpoint path, sha256, size, metrics).

    `train_params` is what the API stores: `{"recipe": {TrainRecipe fields}, "width": int | None}`.
    """
    from pydantic import ValidationError

    from models.checkpoint import save_checkpoint
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
    dataset = load_dataset_for(claim)
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
    path = checkpoint_path(artifacts, claim)
    saved = save_checkpoint(
        model,
        path,
        metadata={
            "model_id": claim.model_id,
            "job_id": claim.job_id,
            "dataset_id": claim.dataset.id,
            "method": "train",
        },
    )
    return str(path), saved.sha256, saved.size_bytes, metrics
