"""Mean and standard deviation over seeds of each variant in `bench/dau_sweep.py --json` files, best
first: how a DAU default is chosen on some seeds before it is re-measured on others.

    python bench/sweep_summary.py bench/results/cpu-distill-2026-12-01/sweeps-seeds0-2.jsonl
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

FIGURES = ("UA", "MIA", "RA", "TA", "seconds")


def summarise(lines: list[dict[str, Any]]) -> list[tuple[float, float, list[int], dict[str, float], str]]:
    by_variant: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for line in lines:
        params = dict(line["params"])
        seed = int(params.pop("seed"))
        by_variant[json.dumps(params, sort_keys=True)][seed] = line
    rows = []
    for variant, seeds in by_variant.items():
        disparities = [seeds[seed]["disparity"] for seed in sorted(seeds)]
        spread = statistics.stdev(disparities) if len(disparities) > 1 else 0.0
        means = {name: statistics.mean(line[name] for line in seeds.values()) for name in FIGURES}
        rows.append((statistics.mean(disparities), spread, sorted(seeds), means, variant))
    return sorted(rows, key=lambda row: row[0])


def main() -> None:
    texts = [text for path in sys.argv[1:] for text in Path(path).read_text().splitlines()]
    lines = [json.loads(text) for text in texts if text]
    for mean, spread, seeds, means, variant in summarise(lines):
        figures = " ".join(f"{name} {value:.1f}" for name, value in means.items())
        print(f"{mean:5.2f} ± {spread:4.2f}  seeds {seeds}  {figures}  {variant}")


if __name__ == "__main__":
    main()
