"""Sweep DAU parameters against the cached bench original and retrain reference.

How DAU's defaults were chosen: each variant runs on the same original model and splits as
`unlearn bench`, and is scored by Avg. Disparity against the retrain reference that an earlier
`unlearn bench` run left in the cache (run that first; this never retrains). Seconds are comparable
between the variants of one sweep only.

    python bench/dau_sweep.py --preset cpu --scenario random \
        --variant '{}' --variant '{"lr": 0.005}' --variant '{"random_alpha_iterations": 40}'
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False)


@app.command()
def sweep(
    preset: Annotated[str, typer.Option(help="smoke | cpu | gpu")],
    scenario: Annotated[str, typer.Option(help="random | class")],
    variant: Annotated[list[str], typer.Option(help="DAU params as a JSON object; repeat for each.")],
    method: Annotated[str, typer.Option(help="The method whose params vary.")] = "dau",
    seed: int = 0,
    sparsity: Annotated[float | None, typer.Option(help="Run on the cached pruned original.")] = None,
    data: Annotated[Path | None, typer.Option(help="CIFAR-10 archive or tree.")] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Append one JSON line per variant.")
    ] = None,
) -> None:
    from rich.console import Console
    from rich.table import Table

    from unlearning.audit import avg_disparity
    from unlearning.bench.runner import cached_references, headline_metrics
    from unlearning.methods import get_method, parse_params
    from unlearning.types import never_stop, no_progress

    console = Console()
    references = cached_references(preset, scenario, seed, data, sparsity)  # type: ignore[arg-type]
    splits, original = references.splits, references.original
    if not references.retrain_cached:
        console.print("note: no cached retrain reference was found, so it was retrained just now")
    target = headline_metrics(references.retrain, splits, seed)
    table = Table(title=f"{method} sweep: {preset} {scenario} sparsity {sparsity}, retrain {target}")
    for column in ("params", "UA", "MIA", "RA", "TA", "disparity", "seconds", "iterations", "stop"):
        table.add_column(column)
    for raw in variant:
        try:
            params = {"seed": seed, **json.loads(raw)}
            config = parse_params(method, params)
        except (ValueError, TypeError) as error:  # JSON and pydantic errors are ValueErrors
            raise typer.BadParameter(f"{raw}: {error}", param_hint="--variant") from None
        start = time.perf_counter()
        model, info = get_method(method).run(original, splits, config, no_progress, never_stop)
        seconds = time.perf_counter() - start
        metrics = headline_metrics(model, splits, seed)
        disparity = avg_disparity(metrics, target)
        cells = [f"{metrics[key]:.2f}" for key in ("UA", "MIA", "RA", "TA")]
        table.add_row(
            raw,
            *cells,
            f"{disparity:.2f}",
            f"{seconds:.1f}",
            str(info.get("iterations", "")),
            str(info.get("stop_reason", "")),
        )
        named = dict(zip(("UA", "MIA", "RA", "TA"), cells, strict=True))
        console.print(
            f"{raw}: {named} disparity {disparity:.2f} {seconds:.1f} s "
            f"{info.get('stop_reason', '')} {info.get('seconds', '')}"
        )
        if json_path is not None:
            line = {"params": params, **metrics, "disparity": disparity, "seconds": seconds, "info": info}
            with json_path.open("a") as handle:
                handle.write(json.dumps(line, default=str) + "\n")
    console.print(table)


if __name__ == "__main__":
    app()
