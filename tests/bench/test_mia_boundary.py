"""bench/mia_boundary.py: per model, MIA beside the share of test samples the attack calls non-members."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_script import load_bench_script
from typer.testing import CliRunner

from unlearning.bench.presets import get_preset
from unlearning.bench.runner import BenchOptions, SilentReporter, headline_metrics, original_model
from unlearning.bench.scenarios import scenario_splits


def test_each_model_gets_a_row_and_an_unknown_row_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_bench_script("mia_boundary", tmp_path, monkeypatch)
    args = ["--preset", "smoke", "--scenario", "random"]
    result = CliRunner().invoke(module.app, [*args, "--methods", "ga"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") >= 5}
    assert {"original", "retrain", "ga"} <= set(rows)
    figures = {
        name: [float(cell) for cell in rows[name].split("│")[2:4]] for name in ("original", "retrain", "ga")
    }
    assert all(0 <= value <= 100 for pair in figures.values() for value in pair)
    # the MIA column is the audit's MIA figure for the same model (the original, from the cache just made)
    preset = get_preset("smoke")
    dataset = preset.load(None, 0)
    options = BenchOptions("smoke", "random", ["retrain"], seed=0, reuse_retrain=True)
    original = original_model(preset, dataset, options, SilentReporter())
    splits = scenario_splits(dataset, "random", seed=0)
    assert figures["original"][0] == pytest.approx(
        headline_metrics(original.model, splits, 0)["MIA"], abs=0.05
    )
    bad = CliRunner().invoke(module.app, [*args, "--methods", "nope"])
    assert bad.exit_code == 2 and "nope" in bad.output
