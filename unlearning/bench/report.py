"""The bench result: the JSON other tools read (DESIGN section 11) and the table people read.

JSON: {"preset", "architecture", "scenario", "seed", "sparsity", "device", "original": {...}, "rows":
[{"method", "UA", "MIA", "RA", "TA", "disparity", "seconds", "ratio_to_retrain"}]}. Metrics are
percentages; `disparity` is Avg. Disparity against the retrain row (null without one), `ratio_to_retrain`
= seconds / retrain's seconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rich.table import Table

ROW_KEYS = ("method", "UA", "MIA", "RA", "TA", "disparity", "seconds", "ratio_to_retrain")
TOP_KEYS = ("preset", "architecture", "scenario", "seed", "sparsity", "device", "original", "rows")


@dataclass
class RowResult:
    method: str
    UA: float
    MIA: float
    RA: float
    TA: float
    disparity: float | None
    seconds: float
    ratio_to_retrain: float | None
    info: dict[str, Any] = field(default_factory=dict, repr=False)
    """The method's own `info` (iterations, stop reason, stage timings): printed, not in the JSON rows."""

    def as_json(self) -> dict[str, Any]:
        row = asdict(self)
        return {key: _rounded(row[key]) for key in ROW_KEYS}


@dataclass
class BenchReport:
    preset: str
    scenario: str
    seed: int
    device: str
    original: dict[str, float | None]
    """train_acc, test_acc, UA, MIA, RA, TA of the original model, and its disparity to retrain."""
    rows: list[RowResult]
    sparsity: float | None = None
    """Share of prunable weights zeroed in the original (None: the dense original)."""
    reference_note: str | None = None
    """Set when the retrain reference was loaded from the cache instead of measured in this run."""
    architecture: str | None = None
    """The network every row starts from (the preset's, or `--architecture`)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "architecture": self.architecture,
            "scenario": self.scenario,
            "seed": self.seed,
            "sparsity": self.sparsity,
            "device": self.device,
            "original": {key: _rounded(value) for key, value in self.original.items()},
            "rows": [row.as_json() for row in self.rows],
        }

    def tables(self) -> list[Table]:
        title = (
            f"unlearn bench: preset {self.preset}, scenario {self.scenario}, seed {self.seed}, "
            + ("dense" if self.sparsity is None else f"{self.sparsity:.0%} sparse")
            + f", {self.device}"
        )
        network = f"{self.architecture}, " if self.architecture else ""
        original = Table(title=f"{title}\noriginal model ({network}no unlearning)")
        for column in ("train acc", "test acc", "UA", "MIA", "RA", "TA", "disparity"):
            original.add_column(column, justify="right")
        original.add_row(
            *(
                _cell(self.original.get(key))
                for key in ("train_acc", "test_acc", "UA", "MIA", "RA", "TA", "disparity")
            )
        )
        methods = Table(caption=self.reference_note)
        methods.add_column("method")
        for column in ROW_KEYS[1:]:
            methods.add_column(column, justify="right")
        for row in self.rows:
            methods.add_row(
                row.method,
                *(_cell(getattr(row, key)) for key in ("UA", "MIA", "RA", "TA", "disparity")),
                _cell(row.seconds, 1),
                _cell(row.ratio_to_retrain, 3),
            )
        return [original, methods]


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value
