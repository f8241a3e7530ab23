"""`unlearn bench`: benchmark presets that compare unlearning methods against retraining."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from unlearning.bench.report import BenchReport
    from unlearning.bench.seeds import SeedsReport
    from unlearning.types import Progress


class PresetChoice(StrEnum):
    smoke = "smoke"
    cpu = "cpu"
    gpu = "gpu"


class ScenarioChoice(StrEnum):
    random = "random"
    class_ = "class"


def register(app: typer.Typer) -> None:
    """Add the bench command to the `unlearn` app."""
    app.command("bench")(bench)


def bench(
    preset: Annotated[PresetChoice, typer.Option("--preset", help="smoke (digits, CI) | cpu | gpu.")],
    scenario: Annotated[
        ScenarioChoice, typer.Option("--scenario", help="random: a seeded 10% of train; class: one class.")
    ],
    json_path: Annotated[Path, typer.Option("--json", help="Write the result JSON here.")],
    methods: Annotated[
        str, typer.Option("--methods", help="Comma-separated rows, e.g. dau,dau-nobt,retrain.")
    ] = "dau,dau-nobt,retrain",
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seeds the split, training and methods.")] = 0,
    seeds: Annotated[
        int,
        typer.Option(
            "--seeds",
            min=1,
            max=100,
            help="Run seeds --seed .. --seed + N - 1 and report mean ± std of every figure (add the "
            "retrain-b row for the noise floor).",
        ),
    ] = 1,
    forget_class: Annotated[
        int | None, typer.Option("--forget-class", min=0, help="Class scenario: the class to forget (0).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write original.safetensors, <method>.safetensors and splits.json here."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="CIFAR-10 archive or tree (default ../shared/data/cifar10-jpeg.tar.gz)."),
    ] = None,
    sparsity: Annotated[
        float | None,
        typer.Option(
            "--sparsity",
            min=0.0,
            max=0.999,
            help="Prune the original's conv and linear weights (not the head) to this share of zeros (e.g. "
            "0.95), retrain it with the mask fixed, and run every method on it (the mask is kept).",
        ),
    ] = None,
    architecture: Annotated[
        str | None,
        typer.Option(
            "--architecture",
            help="Any registered architecture instead of the preset's: resnet18 | resnet_small | mlp | "
            "torchvision/<name> | timm/<name> | plugin/<name> (on the preset's data and recipe).",
        ),
    ] = None,
    reuse_retrain: Annotated[
        bool,
        typer.Option(
            "--reuse-retrain",
            help="Tuning aid: take the retrain row from the cache of an earlier run instead of retraining.",
        ),
    ] = False,
) -> None:
    """Train (or load the cached) original model, run each method, audit, and print the comparison."""
    from rich.console import Console

    from unlearning.bench.rows import parse_rows
    from unlearning.bench.runner import BenchOptions, run_bench, run_seeds

    try:
        rows = parse_rows(methods)
    except ValueError as error:
        _fail(f"--methods: {error}")
    options = BenchOptions(
        preset=preset.value,
        scenario=scenario.value,  # type: ignore[arg-type]
        methods=rows,
        seed=seed,
        forget_class=forget_class,
        out_dir=out,
        data_path=data,
        sparsity=sparsity,
        reuse_retrain=reuse_retrain,
        architecture=architecture,
    )
    status = Console(stderr=True)
    try:
        report: BenchReport | SeedsReport = (
            run_bench(options, _RichReporter(status))
            if seeds == 1
            else run_seeds(options, seeds, _RichReporter(status))
        )
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    console = Console()
    for table in report.tables():
        console.print(table)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report.as_json(), indent=2) + "\n")
    console.print(f"wrote {json_path}")


class _RichReporter:
    """Log lines and one progress bar per long task, on stderr so stdout keeps the table."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def log(self, message: str) -> None:
        self.console.log(message)

    @contextlib.contextmanager
    def task(self, description: str) -> Iterator[Progress]:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}% {task.fields[stage]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=True) as bar:
            task_id = bar.add_task(description, total=1.0, stage="")

            def progress(fraction: float, stage: str) -> None:
                bar.update(task_id, completed=fraction, stage=stage)

            yield progress


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)
