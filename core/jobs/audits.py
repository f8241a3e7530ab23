"""The audit reports of an unlearn job: one per request it serves, all cut from the job's shared work.

Each model of the job (the parent, the new version, the optional retrained reference) predicts the job's
splits once. A request's report is computed from those predictions, its forget set being its own rows of
the job's forget set; its retain, val and test sets are the job's (the other requests' samples are not
retain data for it either). The plots of the HTML pages are drawn once per job, on the job's whole forget
set, and each request's page carries its own figures with them: a burst of coalesced requests costs one
set of predictions and plots, not one per request.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from core.jobs.artifacts import split_record, torch_threads
from core.jobs.claim import JobClaim
from core.jobs.runtime import JobRuntime
from core.storage import ArtifactStore

if TYPE_CHECKING:
    from unlearning.audit import AuditProbs, AuditReport, AuditResult
    from unlearning.data import Dataset, UnlearningSplits

log = logging.getLogger(__name__)


def cut_forget(probs: AuditProbs, rows: list[int]) -> AuditProbs:
    """The same outputs with the forget set narrowed to `rows` (one request's samples)."""
    from dataclasses import replace

    from unlearning.audit import SplitProbs

    return replace(probs, forget=SplitProbs(probs.forget.probs[rows], probs.forget.labels[rows]))


def request_rows(claim: JobClaim, splits: UnlearningSplits) -> dict[str, list[int]]:
    """Each request's own samples (without tombstones) as rows of the job's forget set; a request with
    none left (all forgotten already by another) is absent."""
    forget_ids = list(splits.forget.sample_ids)
    if len(claim.requests) == 1:
        return {claim.requests[0].id: list(range(len(forget_ids)))}
    row_of = {sample: row for row, sample in enumerate(forget_ids)}
    rows = {
        request.id: [row_of[sample] for sample in dict.fromkeys(request.sample_ids) if sample in row_of]
        for request in claim.requests
    }
    return {request_id: own for request_id, own in rows.items() if own}


class RequestAudits:
    """One report per request, cut from the outputs of the job's models on the job's splits (see the
    module doc): `probs` maps before / after / (reference) to them."""

    def __init__(
        self,
        claim: JobClaim,
        runtime: JobRuntime,
        dataset: Dataset,
        splits: UnlearningSplits,
        probs: dict[str, AuditProbs],
        device: Any,
    ) -> None:
        from unlearning.audit import metrics_from_probs

        self.claim, self.runtime, self.dataset, self.splits = claim, runtime, dataset, splits
        self.device = device
        self.html_pages: dict[str, str] = {}
        """request id -> the store URL of its HTML audit page, for the reports `reports` rendered."""
        runtime.progress(0.8, "auditing")
        self.probs = probs
        self.rows = request_rows(claim, splits)
        self.job_results = {role: metrics_from_probs(role_probs) for role, role_probs in probs.items()}
        self.job_after = self.job_results["after"]

    def _results(self, rows: list[int]) -> dict[str, AuditResult]:
        from unlearning.audit import metrics_from_probs

        if len(rows) == len(self.splits.forget):
            return self.job_results
        return {role: metrics_from_probs(cut_forget(probs, rows)) for role, probs in self.probs.items()}

    def reports(
        self,
        provenance: dict[str, Any],
        store: ArtifactStore | None = None,
        sections: dict[str, dict[str, Any]] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """The JSON report of each request (with its `sections`, e.g. the acceptance ladder, in its
        provenance); with `store`, also its HTML page there (`reports/<model id>/...`)."""
        from unlearning.audit import AuditReport
        from unlearning.types import Cancelled

        claim = self.claim
        plots = self._job_plots() if store is not None else None
        reports: dict[str, dict[str, Any]] = {}
        for index, request in enumerate(claim.requests):
            if self.runtime.should_stop():
                raise Cancelled("stop requested while auditing")
            self.runtime.progress(0.8 + 0.19 * index / len(claim.requests), "auditing")
            rows = self.rows.get(request.id)
            if rows is None:
                continue
            own = [self.splits.forget.sample_ids[row] for row in rows]
            results = self._results(rows)
            record = {
                **provenance,
                "request_id": request.id,
                "device": str(self.device),
                "torch_threads": torch_threads(),
                "sets": split_record(self.splits, claim.tombstones, own),
                **(sections or {}).get(request.id, {}),
            }
            report = AuditReport(
                before=results["before"],
                after=results["after"],
                reference=results.get("reference"),
                provenance=record,
            )
            reports[request.id] = report.to_dict()
            if store is not None:
                key = f"reports/{claim.model_id}/{request.id}-{claim.job_id}-a{claim.attempt}.html"
                url = write_audit_page(report, store, key, self.dataset.class_names, plots)
                if url is not None:
                    self.html_pages[request.id] = url
        return reports

    def _job_plots(self) -> str | None:
        """The plots section of the pages, drawn once on the job's whole forget set."""
        from unlearning.audit import AuditReport
        from unlearning.audit.html import plots_section

        job_report = AuditReport(
            before=self.job_results["before"],
            after=self.job_results["after"],
            reference=self.job_results.get("reference"),
        )
        try:
            section = plots_section(job_report, self.dataset.class_names)
        except Exception:
            log.exception("could not draw the plots of job %s", self.claim.job_id)
            return None
        if len(self.claim.requests) > 1:
            note = (
                f"The plots show the job's whole forget set ({len(self.splits.forget)} samples of "
                f"{len(self.claim.requests)} coalesced requests); the tables above are this request's own."
            )
            section = f'<p class="note">{note}</p>' + section
        return section


def write_audit_page(
    report: AuditReport, store: ArtifactStore, key: str, class_names: list[str], plots: str | None
) -> str | None:
    """Render the report's HTML page into the store at `key`; its URL, or None (logged) when it cannot be
    rendered: the page is a view of the JSON report, which stays the record, so a plotting failure must
    not fail the job. A store that cannot be written fails the job like the checkpoint would."""
    from unlearning.audit.html import render_html

    try:
        page = render_html(report, class_names=class_names, plots=plots)
    except Exception:
        log.exception("could not render the HTML audit page %s", key)
        return None
    return store.put_bytes(key, page.encode("utf-8")).url
