"""The audit reports of an unlearn job: one per request it serves, plus the HTML page of each."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.jobs.artifacts import split_record, splits_for, torch_threads
from core.jobs.claim import JobClaim
from core.jobs.runtime import JobRuntime

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.audit import AuditReport
    from unlearning.data import Dataset, UnlearningSplits

log = logging.getLogger(__name__)


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
                request_splits = splits_for(self.dataset, claim, forget_ids=own, excluded=excluded | others)
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
