"""Where the SVM membership attack draws its line, per model: what its MIA figure reads besides forgetting.

MIA-efficacy (`unlearning/audit/svm_mia.py`) fits the attack on each model's own retain and test outputs,
so the figure moves with the model's retain confidence as well as with the forget set. Beside each model's
MIA this prints the share of the test samples themselves that the same attack calls non-members (what a
forget set that looks exactly like unseen data would score) and the quartiles of the true-label confidence
on forget, test and retain. Scored on the cached bench original and retrain reference (run `unlearn bench`
for the seed first; this never retrains).

    python bench/mia_boundary.py --preset cpu --scenario random --seed 7 --methods dau,iu
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False)


@app.command()
def boundary(
    preset: Annotated[str, typer.Option(help="smoke | cpu | gpu")],
    scenario: Annotated[str, typer.Option(help="random | class")] = "random",
    methods: Annotated[
        str, typer.Option(help="Comma-separated bench rows (dau, iu, dau-nobt, ...).")
    ] = "dau",
    seed: int = 0,
    data: Annotated[Path | None, typer.Option(help="CIFAR-10 archive or tree.")] = None,
) -> None:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from unlearning.audit.protocol import model_probs
    from unlearning.audit.svm_mia import svm_mia_efficacy
    from unlearning.bench.rows import parse_rows, row_spec
    from unlearning.bench.runner import SilentReporter, cached_references, run_row

    try:
        rows = [name for name in parse_rows(methods) if name != "retrain"]
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--methods") from None
    references = cached_references(preset, scenario, seed, data)  # type: ignore[arg-type]
    splits = references.splits
    models = {"original": references.original, "retrain": references.retrain}
    for name in rows:  # each row as `unlearn bench` runs it
        spec = row_spec(name, references.preset, seed)
        models[name] = run_row(spec, references.original, splits, SilentReporter()).model

    table = Table(title=f"SVM attack per model: {preset} {scenario}, seed {seed}")
    for column in (
        "model",
        "MIA (forget)",
        "test called non-member",
        "conf. quartiles forget / test / retain",
    ):
        table.add_column(column)
    for name, model in models.items():
        probs = model_probs(model, splits)
        retain, test, forget = probs.retain.confidence, probs.test.confidence, probs.forget.confidence
        mia = svm_mia_efficacy(retain, test, forget, seed=seed).efficacy
        on_test = svm_mia_efficacy(retain, test, test, seed=seed).efficacy
        quartiles = " / ".join(
            ",".join(f"{q:.3f}" for q in np.quantile(values, [0.25, 0.5, 0.75]))
            for values in (forget, test, retain)
        )
        table.add_row(name, f"{mia:.1f}", f"{on_test:.1f}", quartiles)
    Console().print(table)


if __name__ == "__main__":
    app()
