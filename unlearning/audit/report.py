"""One deletion request's audit report: the parent model (before) against the new version (after),
optionally against a model retrained without the forget set (the reference), plus provenance."""

from dataclasses import dataclass, field
from typing import Any

from unlearning.audit.disparity import avg_disparity, metric_distances
from unlearning.audit.jsonable import to_jsonable
from unlearning.audit.result import AuditResult


@dataclass(frozen=True)
class Disparity:
    average: float
    distances: dict[str, float]

    @classmethod
    def between(cls, result: AuditResult, reference: AuditResult) -> "Disparity":
        return cls(
            average=avg_disparity(result.headline(), reference.headline()),
            distances=metric_distances(result.headline(), reference.headline()),
        )


@dataclass(frozen=True)
class AuditReport:
    before: AuditResult
    after: AuditResult
    reference: AuditResult | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    """Seeds, set sizes, method and params, checkpoint sha256s, code version, timings: the caller's record."""

    def disparity(self) -> dict[str, Disparity] | None:
        """Distance of before and after to the reference; None without a reference."""
        if self.reference is None:
            return None
        return {
            "before": Disparity.between(self.before, self.reference),
            "after": Disparity.between(self.after, self.reference),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "reference": self.reference.to_dict() if self.reference is not None else None,
            "disparity": to_jsonable(self.disparity(), "$.disparity"),
            "provenance": to_jsonable(self.provenance, "$.provenance"),
        }
