"""`unlearn bench --seeds N`: the same rows over several seeds, summarised as mean and standard deviation.

Learning figures move with the seed: one seed decides nothing. Each seed is a whole bench run (its own
forget set, original and retrain), so a row's spread covers the data, the original and the method.

Two readings make the table honest:
- the **noise floor** is the `retrain-b` row's disparity, a second retrain with another training seed
  scored against `retrain`: no method can be told apart from retraining below it;
- **ties**: two rows whose mean disparities differ by at most the larger of their standard deviations
  cannot be ranked on these seeds, and the text output says so.

JSON: {"preset", "architecture", "scenario", "seeds", "sparsity", "device", "summary": [{"method",
"<figure>": {"mean", "std"}, ...}], "noise_floor": {"mean", "std"} | null, "ties": [[method, ...]],
"runs": [<the single-seed JSON of each seed>]}.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from unlearning.bench.report import BenchReport
from unlearning.bench.rows import NOISE_FLOOR_ROW

FIGURES = ("UA", "MIA", "RA", "TA", "disparity", "seconds", "ratio_to_retrain")
SEED_TOP_KEYS = (
    "preset",
    "architecture",
    "scenario",
    "seeds",
    "sparsity",
    "device",
    "summary",
    "noise_floor",
    "ties",
    "runs",
)


@dataclass(frozen=True)
class Spread:
    mean: float
    std: float
    """Sample standard deviation (0 for a single seed)."""

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)

    def as_json(self) -> dict[str, float]:
        return {"mean": round(self.mean, 4), "std": round(self.std, 4)}

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}"


@dataclass
class RowSummary:
    method: str
    figures: dict[str, Spread]


@dataclass
class SeedsReport:
    runs: list[BenchReport]
    summary: list[RowSummary] = field(init=False)
    noise_floor: Spread | None = field(init=False)
    ties: list[list[str]] = field(init=False)

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError("a multi-seed report needs at least one run")
        methods = [row.method for row in self.runs[0].rows]
        self.summary = [RowSummary(method, self._figures(method)) for method in methods]
        floor = self.row(NOISE_FLOOR_ROW)
        self.noise_floor = floor.figures.get("disparity") if floor else None
        self.ties = tie_groups(
            {row.method: row.figures["disparity"] for row in self.summary if "disparity" in row.figures}
        )

    def _figures(self, method: str) -> dict[str, Spread]:
        figures: dict[str, Spread] = {}
        for name in FIGURES:
            values = [_value(run, method, name) for run in self.runs]
            present = [value for value in values if value is not None]
            if len(present) == len(values):
                figures[name] = Spread.of(present)
        return figures

    def row(self, method: str) -> RowSummary | None:
        return next((row for row in self.summary if row.method == method), None)

    def as_json(self) -> dict[str, Any]:
        first = self.runs[0]
        return {
            "preset": first.preset,
            "architecture": first.architecture,
            "scenario": first.scenario,
            "seeds": [run.seed for run in self.runs],
            "sparsity": first.sparsity,
            "device": first.device,
            "summary": [
                {"method": row.method, **{name: spread.as_json() for name, spread in row.figures.items()}}
                for row in self.summary
            ],
            "noise_floor": self.noise_floor.as_json() if self.noise_floor else None,
            "ties": self.ties,
            "runs": [run.as_json() for run in self.runs],
        }

    def tables(self) -> list[Table]:
        first = self.runs[0]
        seeds = ", ".join(str(run.seed) for run in self.runs)
        title = (
            f"unlearn bench: preset {first.preset}, scenario {first.scenario}, seeds {seeds}, "
            + ("dense" if first.sparsity is None else f"{first.sparsity:.0%} sparse")
            + f", {first.device}: mean ± std over {len(self.runs)} seeds"
        )
        table = Table(title=title, caption=self.verdict())
        table.add_column("method")
        for name in FIGURES:
            table.add_column(name, justify="right")
        for row in self.summary:
            table.add_row(row.method, *(_cell(row.figures.get(name), name) for name in FIGURES))
        return [table]

    def verdict(self) -> str:
        """The lines that say what the table can and cannot tell apart."""
        lines = []
        if self.noise_floor is None:
            lines.append(f"no noise floor: add the {NOISE_FLOOR_ROW} row to measure it")
        else:
            lines.append(
                f"noise floor ({NOISE_FLOOR_ROW} vs retrain): disparity {self.noise_floor}; a row at or "
                "below it cannot be told apart from retraining"
            )
            below = [
                row.method
                for row in self.summary
                if row.method not in ("retrain", NOISE_FLOOR_ROW)
                and "disparity" in row.figures
                and row.figures["disparity"].mean <= self.noise_floor.mean + self.noise_floor.std
            ]
            if below:
                lines.append("within the noise floor: " + ", ".join(below))
        for group in self.ties:
            lines.append("tied (means within one std): " + ", ".join(group))
        return "\n".join(lines)


def tie_groups(disparities: dict[str, Spread]) -> list[list[str]]:
    """Groups of rows (best first) whose mean disparities lie within one standard deviation of a
    neighbour's: `a` and `b` tie when |mean_a - mean_b| <= max(std_a, std_b). The retrain row itself
    (disparity 0 by definition) takes no part."""
    ranked = sorted(
        ((method, spread) for method, spread in disparities.items() if method != "retrain"),
        key=lambda item: item[1].mean,
    )
    groups: list[list[str]] = []
    current: list[tuple[str, Spread]] = []
    for method, spread in ranked:
        if current and not any(
            abs(spread.mean - other.mean) <= max(spread.std, other.std) for _, other in current
        ):
            if len(current) > 1:
                groups.append([name for name, _ in current])
            current = []
        current.append((method, spread))
    if len(current) > 1:
        groups.append([name for name, _ in current])
    return groups


def _value(run: BenchReport, method: str, name: str) -> float | None:
    row = next((row for row in run.rows if row.method == method), None)
    value = getattr(row, name, None) if row is not None else None
    return float(value) if value is not None else None


def _cell(spread: Spread | None, name: str) -> str:
    if spread is None:
        return "-"
    digits = 3 if name == "ratio_to_retrain" else 1 if name == "seconds" else 2
    return f"{spread.mean:.{digits}f}±{spread.std:.{digits}f}"
