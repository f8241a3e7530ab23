"""The acceptance ladder of an unlearn job: run, audit against the acceptance policy, escalate.

Rungs, in order: the requested method and params; the same method with a larger budget
(`unlearning.methods.base.escalated`: twice the iterations or epochs); an exact retrain without the forget
set, when the deployment (`retrain_fallback`) or the request (`"allow_retrain": true`) allows it. The job
climbs until every request it serves passes the policy (`unlearning.audit.acceptance`). A retrain is exact
by construction, so its result is accepted whatever the statistical test says (its figures are still
reported). Requests still failing on the last rung end `audit_failed`, without a certificate.

Every rung is a section of each request's report (`provenance.acceptance`), and every escalation an event
in the audit chain (`job.escalated`, written with the job's result).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.jobs.audits import cut_forget
from core.jobs.claim import JobClaim
from core.jobs.runtime import JobRuntime

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.audit import AuditProbs
    from unlearning.audit.acceptance import Verdict
    from unlearning.data import UnlearningSplits
    from unlearning.methods.base import MethodConfig


@dataclass(frozen=True)
class Rung:
    name: str
    """method | escalated | retrain"""
    method: str
    config: MethodConfig

    @property
    def exact(self) -> bool:
        return self.method == "retrain"


def rungs_for(claim: JobClaim, config: MethodConfig) -> list[Rung]:
    from unlearning.methods.base import escalated, parse_params

    rungs = [Rung("method", claim.method, config)]
    if claim.method == "retrain":
        return rungs
    larger = escalated(config)
    if larger is not None:
        rungs.append(Rung("escalated", claim.method, larger))
    if claim.retrain_allowed:
        rungs.append(Rung("retrain", "retrain", parse_params("retrain", {})))
    return rungs


@dataclass
class Climb:
    """Where the ladder stopped: the model to keep, its outputs, and every rung's record."""

    model: Classifier
    info: dict[str, Any]
    probs: AuditProbs
    rung: Rung
    verdicts: dict[str, Verdict]
    records: list[dict[str, Any]] = field(default_factory=list)

    def failed(self) -> dict[str, Verdict]:
        """Requests whose audit does not pass on the kept rung (none after an exact retrain)."""
        if self.rung.exact:
            return {}
        return {request_id: verdict for request_id, verdict in self.verdicts.items() if not verdict.passed}

    def escalations(self) -> list[dict[str, Any]]:
        """One record per rung climbed past the first (each becomes a `job.escalated` event)."""
        return [
            {key: record[key] for key in ("rung", "method", "params", "passed")}
            for record in self.records[1:]
        ]

    def section(self, request_id: str) -> dict[str, Any]:
        """The report section of one request: the policy, and each rung's verdict on it."""
        return {
            "policy": self.records[0]["policy"] if self.records else None,
            "rungs": [
                {key: value for key, value in record.items() if key not in ("verdicts", "policy")}
                | {"verdict": record["verdicts"].get(request_id)}
                for record in self.records
            ],
            "accepted": request_id not in self.failed(),
            "accepted_by": "exact retrain" if self.rung.exact else "policy",
        }


def climb(
    claim: JobClaim,
    runtime: JobRuntime,
    parent: Classifier,
    splits: UnlearningSplits,
    rungs: list[Rung],
    rows: dict[str, list[int]],
    *,
    seed: int,
    window: tuple[float, float],
    device: Any,
) -> Climb:
    """Run the rungs in order until every request in `rows` (request id -> its forget rows) passes."""
    import torch

    from unlearning.audit import model_probs
    from unlearning.audit.acceptance import judge
    from unlearning.methods.base import get_method

    start, end = window
    small = claim.acceptance.small_request_below
    family = sum(len(own) for own in rows.values() if len(own) < small)
    records: list[dict[str, Any]] = []
    result: Climb | None = None
    for index, rung in enumerate(rungs):
        span = (start + (end - start) * index / len(rungs), start + (end - start) * (index + 1) / len(rungs))
        if index:
            runtime.progress(span[0], f"escalating: {rung.name} ({rung.method})")
        torch.manual_seed(seed)
        model, info = get_method(rung.method).run(
            parent, splits, rung.config, runtime.window(*span), runtime.should_stop
        )
        probs = model_probs(model, splits, device=device)
        verdicts = {
            request_id: judge(cut_forget(probs, own), claim.acceptance, family_size=family)
            for request_id, own in rows.items()
        }
        records.append(
            {
                "rung": rung.name,
                "method": rung.method,
                "params": rung.config.model_dump(mode="json"),
                "exact": rung.exact,
                "passed": all(verdict.passed for verdict in verdicts.values()),
                "policy": claim.acceptance.model_dump(),
                "verdicts": {request_id: verdict.to_dict() for request_id, verdict in verdicts.items()},
            }
        )
        result = Climb(model, info, probs, rung, verdicts, records)
        if records[-1]["passed"] or rung.exact:
            break
    assert result is not None
    return result
