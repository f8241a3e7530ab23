"""`unlearn bench`, the library side: original model (cached), each method row, audit, disparity, timing.

Every row starts from the same original model and the same splits; `seconds` is the wall time of the
method's `run` alone (auditing and checkpoint writing excluded), and `ratio_to_retrain` divides it by the
retrain row's seconds measured in the same run, so contention on a shared machine hits both alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from models.base import Classifier
from models.checkpoint import save_checkpoint
from unlearning.audit import audit_model, avg_disparity
from unlearning.bench.cache import CachedModel, entry_path, ids_digest, load_cached, store
from unlearning.bench.presets import Preset, get_preset
from unlearning.bench.report import BenchReport, RowResult
from unlearning.bench.rows import REFERENCE_ROW, RowSpec, row_spec
from unlearning.bench.scenarios import Scenario, scenario_splits
from unlearning.bench.seeds import SeedsReport
from unlearning.data import Dataset, UnlearningSplits
from unlearning.methods import get_method, parse_params
from unlearning.training import accuracy, pick_device
from unlearning.types import Progress, never_stop, no_progress


class Reporter(Protocol):
    """Where the bench tells people what it is doing (the CLI shows rich progress bars)."""

    def log(self, message: str) -> None: ...

    def task(self, description: str) -> contextlib.AbstractContextManager[Progress]: ...


class SilentReporter:
    def log(self, message: str) -> None:
        return None

    @contextlib.contextmanager
    def task(self, description: str) -> Iterator[Progress]:
        yield no_progress


@dataclass(frozen=True)
class BenchOptions:
    preset: str
    scenario: Scenario
    methods: list[str]
    seed: int = 0
    forget_class: int | None = None
    out_dir: Path | None = None
    data_path: Path | None = None
    cache_root: Path | None = None
    sparsity: float | None = None
    """Prune the original to this share of zero conv weights and retrain it with the mask fixed (Jia et al.
    2023); every row then starts from the sparse original and keeps its mask."""
    reuse_retrain: bool = False
    """Load the retrain reference from the cache (when there) instead of retraining: for tuning only,
    since its seconds come from an earlier run."""
    architecture: str | None = None
    """Any registered architecture (`models.spec`) instead of the preset's, on its data and recipe."""


@dataclass
class _Measured:
    model: Classifier
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


def run_bench(options: BenchOptions, reporter: Reporter | None = None) -> BenchReport:
    reporter = reporter or SilentReporter()
    preset = get_preset(options.preset)
    if options.architecture is not None:
        preset = preset.with_architecture(options.architecture)
    dataset = preset.load(options.data_path, options.seed)
    splits = scenario_splits(dataset, options.scenario, seed=options.seed, forget_class=options.forget_class)
    reporter.log(
        f"{dataset.name}: forget {len(splits.forget)}, retain {len(splits.retain)}, val {len(splits.val)}, "
        f"test {len(splits.test)} ({options.scenario} scenario"
        + (f", class {splits.forget_class})" if splits.forget_class is not None else ")")
    )
    original = original_model(preset, dataset, options, reporter)
    if options.sparsity is not None:
        original = sparse_original(original, preset, dataset, options, reporter)
    original_metrics = headline_metrics(original.model, splits, options.seed)
    original_metrics = {
        "train_acc": accuracy(original.model, dataset.train),
        "test_acc": accuracy(original.model, dataset.test),
        **original_metrics,
    }
    if options.out_dir is not None:
        options.out_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(original.model, options.out_dir / "original.safetensors", {"bench_row": "original"})
        (options.out_dir / "splits.json").write_text(json.dumps(splits.sample_ids()))

    rows: list[RowResult] = []
    reference: RowResult | None = None
    reference_note = None
    for name in options.methods:
        spec = row_spec(name, preset, options.seed, sparse=options.sparsity is not None)
        if name == REFERENCE_ROW:
            measured, cached = retrain_reference(spec, original.model, splits, preset, options, reporter)
            if cached:
                reference_note = f"retrain loaded from the cache ({measured.seconds:.1f} s in an earlier run)"
        else:
            measured = run_row(spec, original.model, splits, reporter)
        if options.sparsity is not None:
            from unlearning.pruning import sparsity_of

            measured.info["sparsity"] = sparsity_of(measured.model)
        metrics = headline_metrics(measured.model, splits, options.seed)
        row = RowResult(
            method=name,
            **metrics,
            disparity=None,
            seconds=measured.seconds,
            ratio_to_retrain=None,
            info=measured.info,
        )
        rows.append(row)
        if name == REFERENCE_ROW:
            reference = row
        reporter.log(_row_line(row))
        if options.out_dir is not None:
            save_checkpoint(
                measured.model,
                options.out_dir / f"{name}.safetensors",
                {"bench_row": name, "method": spec.method, "params": json.dumps(spec.params)},
            )

    if reference is not None:
        for row in rows:
            row.disparity = avg_disparity(_headline(row), _headline(reference))
            row.ratio_to_retrain = row.seconds / reference.seconds if reference.seconds > 0 else None
        original_metrics["disparity"] = avg_disparity(original_metrics, _headline(reference))
    else:
        original_metrics["disparity"] = None
    return BenchReport(
        preset=preset.name,
        sparsity=options.sparsity,
        scenario=options.scenario,
        seed=options.seed,
        device=str(pick_device()),
        original=original_metrics,
        rows=rows,
        reference_note=reference_note,
        architecture=preset.architecture,
    )


def run_seeds(options: BenchOptions, count: int, reporter: Reporter | None = None) -> SeedsReport:
    """`run_bench` for seeds options.seed .. options.seed + count - 1, each with its own forget set,
    original and retrain; `out_dir` gets one folder per seed."""
    reporter = reporter or SilentReporter()
    runs = []
    for seed in range(options.seed, options.seed + count):
        reporter.log(f"seed {seed} ({seed - options.seed + 1} of {count})")
        out_dir = options.out_dir / f"seed-{seed}" if options.out_dir is not None else None
        runs.append(run_bench(dataclasses.replace(options, seed=seed, out_dir=out_dir), reporter))
    return SeedsReport(runs)


def original_model(
    preset: Preset, dataset: Dataset, options: BenchOptions, reporter: Reporter
) -> CachedModel:
    from unlearning.pipeline import train_base_model

    recipe = preset.recipe_for(options.seed)
    path = entry_path(
        "original",
        options.cache_root,
        preset=preset.name,
        architecture=preset.architecture,
        recipe=recipe.model_dump(),
        dataset=dataset.name,
        train_ids=ids_digest(dataset.train.sample_ids),
    )
    return _cached_or_made(
        path,
        "original model",
        f"training the original {preset.architecture} ({recipe.epochs} epochs)",
        lambda progress: train_base_model(dataset, preset.architecture, recipe, progress),
        reporter,
    )


def sparse_original(
    dense: CachedModel, preset: Preset, dataset: Dataset, options: BenchOptions, reporter: Reporter
) -> CachedModel:
    from unlearning.pruning import prune_and_retrain

    assert options.sparsity is not None
    recipe = preset.recipe_for(options.seed)
    path = entry_path(
        "sparse-original",
        options.cache_root,
        dense=dense.path.parent.name,
        sparsity=options.sparsity,
        recipe=recipe.model_dump(),
        train_ids=ids_digest(dataset.train.sample_ids),
    )
    sparsity = options.sparsity
    return _cached_or_made(
        path,
        f"sparse original ({sparsity:.0%})",
        f"pruning to {sparsity:.0%} sparsity and retraining the mask",
        lambda progress: prune_and_retrain(dense.model, dataset.train, sparsity, recipe, progress=progress),
        reporter,
    )


def _cached_or_made(
    path: Path, label: str, task: str, make: Callable[[Progress], Classifier], reporter: Reporter
) -> CachedModel:
    """The model cached at `path`, or `make` it (timed, with a progress bar) and cache it."""
    cached = load_cached(path)
    if cached is not None:
        reporter.log(f"{label}: cached at {path} (made in {cached.seconds:.1f} s)")
        return cached
    with reporter.task(task) as progress:
        start = time.perf_counter()
        model = make(progress)
        seconds = time.perf_counter() - start
    store(model, seconds, path)
    reporter.log(f"{label}: made in {seconds:.1f} s, cached at {path}")
    return CachedModel(model.cpu().eval(), seconds, path)


def retrain_reference(
    spec: RowSpec,
    original: Classifier,
    splits: UnlearningSplits,
    preset: Preset,
    options: BenchOptions,
    reporter: Reporter,
) -> tuple[_Measured, bool]:
    path = entry_path(
        "retrain",
        options.cache_root,
        preset=preset.name,
        params=spec.params,
        original=original.spec.model_dump(),
        sparsity=options.sparsity,
        retain_ids=ids_digest(splits.retain.sample_ids),
    )
    if options.reuse_retrain:
        cached = load_cached(path)
        if cached is not None:
            reporter.log(f"retrain: reusing the cached reference at {path}")
            return _Measured(cached.model, cached.seconds, {"cached": str(path)}), True
    measured = run_row(spec, original, splits, reporter)
    store(measured.model, measured.seconds, path)
    return measured, False


def run_row(spec: RowSpec, original: Classifier, splits: UnlearningSplits, reporter: Reporter) -> _Measured:
    """One bench row from `original`, timed, with the run's info."""
    method = get_method(spec.method)
    config = parse_params(spec.method, spec.params)
    with reporter.task(spec.name) as progress:
        start = time.perf_counter()
        model, info = method.run(original, splits, config, progress, never_stop)
        seconds = time.perf_counter() - start
    return _Measured(model, seconds, info)


@dataclass(frozen=True)
class References:
    """What a tuning script (`bench/dau_sweep.py`, `bench/mia_boundary.py`) scores against."""

    preset: Preset
    splits: UnlearningSplits
    original: Classifier
    retrain: Classifier
    retrain_cached: bool
    """False: no retrain reference was cached for these splits, so it was retrained just now."""


def cached_references(
    preset_name: str, scenario: Scenario, seed: int, data: Path | None, sparsity: float | None = None
) -> References:
    """The bench's original (pruned when `sparsity`) and retrain reference for `seed`, as `unlearn bench`
    left them in the cache (made and cached when missing), and the splits they belong to."""
    options = BenchOptions(preset_name, scenario, [REFERENCE_ROW], seed=seed, data_path=data)
    options = dataclasses.replace(options, sparsity=sparsity, reuse_retrain=True)
    preset = get_preset(preset_name)
    dataset = preset.load(data, seed)
    splits = scenario_splits(dataset, scenario, seed=seed)
    original = original_model(preset, dataset, options, SilentReporter())
    if sparsity is not None:
        original = sparse_original(original, preset, dataset, options, SilentReporter())
    spec = row_spec(REFERENCE_ROW, preset, seed)
    retrain, cached = retrain_reference(spec, original.model, splits, preset, options, SilentReporter())
    return References(preset, splits, original.model, retrain.model, cached)


def headline_metrics(model: Classifier, splits: UnlearningSplits, seed: int) -> dict[str, float]:
    audit = audit_model(model, splits, seed=seed)
    return {"UA": float(audit.UA), "MIA": float(audit.MIA), "RA": float(audit.RA), "TA": float(audit.TA)}


def _headline(row: RowResult | dict[str, Any]) -> dict[str, float]:
    source = row if isinstance(row, dict) else row.__dict__
    return {key: float(source[key]) for key in ("UA", "MIA", "RA", "TA")}


def _row_line(row: RowResult) -> str:
    info = row.info
    extra = ""
    if "iterations" in info:
        stop, stages = info.get("stop_reason"), info.get("seconds")
        extra = f", {info['iterations']} iterations, stop: {stop}, stages {stages}"
    if "sparsity" in info:
        extra += f", sparsity {info['sparsity']:.1%}"
    return (
        f"{row.method}: {row.seconds:.1f} s{extra}; UA {row.UA:.2f} MIA {row.MIA:.2f} RA {row.RA:.2f} "
        f"TA {row.TA:.2f}"
    )
