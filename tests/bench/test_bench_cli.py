"""`unlearn bench --preset smoke` end to end, and the bench's pieces (scenarios, rows, report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from models.checkpoint import load_checkpoint
from unlearning.bench.presets import get_preset
from unlearning.bench.report import ROW_KEYS, TOP_KEYS, BenchReport, RowResult
from unlearning.bench.rows import parse_rows, row_spec
from unlearning.bench.scenarios import scenario_splits
from unlearning.data import load_digits


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("UNLEARN_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; other jobs share the cores
    yield tmp_path / "cache"
    torch.set_num_threads(threads)


def test_smoke_bench_end_to_end_writes_the_json_and_checkpoints(tmp_path: Path, cache: Path) -> None:
    json_path, out = tmp_path / "smoke.json", tmp_path / "out"
    args = ["bench", "--preset", "smoke", "--scenario", "random", "--json", str(json_path), "--out", str(out)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})  # the table must not wrap its headings
    assert result.exit_code == 0, result.output
    for heading in ("UA", "MIA", "RA", "TA", "disparity", "ratio_to_retrain", "train acc", "test acc"):
        assert heading in result.output

    report = json.loads(json_path.read_text())
    assert tuple(report) == TOP_KEYS
    assert (report["preset"], report["scenario"], report["seed"], report["device"]) == (
        "smoke",
        "random",
        0,
        "cpu",
    )
    assert {"train_acc", "test_acc", "UA", "MIA", "RA", "TA", "disparity"} <= set(report["original"])
    rows = {row["method"]: row for row in report["rows"]}
    assert list(rows) == ["retrain", "dau", "dau-nobt"]
    for row in rows.values():
        assert tuple(row) == ROW_KEYS
        assert all(0 <= row[key] <= 100 for key in ("UA", "MIA", "RA", "TA"))
        assert row["seconds"] > 0 and row["disparity"] >= 0
    assert rows["retrain"]["disparity"] == 0 and rows["retrain"]["ratio_to_retrain"] == 1
    assert rows["dau"]["ratio_to_retrain"] == pytest.approx(
        rows["dau"]["seconds"] / rows["retrain"]["seconds"],
        rel=1e-3,  # the JSON rounds to 4 decimals
    )

    splits = json.loads((out / "splits.json").read_text())
    assert set(splits) == {"forget", "retain", "val", "test"}
    digits = load_digits(seed=0)
    assert len(splits["forget"]) == round(0.1 * len(digits.train))
    assert set(splits["forget"]).isdisjoint(splits["retain"])
    assert set(splits["forget"]) | set(splits["retain"]) == set(digits.train.sample_ids)
    for name in ("original", "retrain", "dau", "dau-nobt"):
        assert load_checkpoint(out / f"{name}.safetensors").model.spec.architecture == "mlp"

    # a second run loads the cached original instead of training it again
    again = CliRunner().invoke(app, [*args[:-2], "--methods", "retrain", "--reuse-retrain"])
    assert again.exit_code == 0, again.output
    assert "cached" in again.output
    assert json.loads(json_path.read_text())["original"] == report["original"]


def test_sparse_bench_runs_every_row_on_the_pruned_original_and_keeps_its_zeros(
    tmp_path: Path, cache: Path
) -> None:
    from unlearning.pruning import prunable_parameters, sparsity_of

    json_path, out = tmp_path / "sparse.json", tmp_path / "out"
    args = ["bench", "--preset", "smoke", "--scenario", "class", "--json", str(json_path), "--out", str(out)]
    args += ["--methods", "retrain,dau,ft", "--sparsity", "0.9"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    report = json.loads(json_path.read_text())
    assert report["sparsity"] == 0.9 and "90% sparse" in result.output
    original = load_checkpoint(out / "original.safetensors").model
    assert sparsity_of(original) >= 0.9 - 1e-3
    pruned = {name: original.masks[name] for name in prunable_parameters(original)}
    for name in ("retrain", "dau", "ft"):
        model = load_checkpoint(out / f"{name}.safetensors").model
        params = dict(model.named_parameters())
        for weight, mask in pruned.items():
            assert not params[weight][~mask].any(), f"{name} revived pruned weights of {weight}"
        assert sparsity_of(model) >= 0.9 - 1e-3

    again_args = [*args[:-4], "--methods", "retrain", "--reuse-retrain", "--sparsity", "0.9"]
    again = CliRunner().invoke(app, again_args)
    assert again.exit_code == 0, again.output
    assert "sparse original (90%): cached" in again.output


def test_unknown_method_or_preset_is_a_clean_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["bench", "--preset", "smoke", "--scenario", "random", "--methods", "dau,nope", "--json", "x.json"],
    )
    assert result.exit_code == 2 and "nope" in result.output
    result = CliRunner().invoke(
        app, ["bench", "--preset", "tiny", "--scenario", "random", "--json", "x.json"]
    )
    assert result.exit_code == 2


def test_scenarios_forget_a_seeded_tenth_or_one_whole_class() -> None:
    dataset = load_digits(seed=0)
    first = scenario_splits(dataset, "random", seed=1)
    assert first.forget.sample_ids == scenario_splits(dataset, "random", seed=1).forget.sample_ids
    assert first.forget.sample_ids != scenario_splits(dataset, "random", seed=2).forget.sample_ids
    assert len(first.forget) == round(0.1 * len(dataset.train)) and first.forget_class is None
    whole = scenario_splits(dataset, "class", seed=0, forget_class=3)
    assert whole.forget_class == 3 and set(whole.forget.labels.tolist()) == {3}
    assert (
        len(whole.forget) == int((dataset.train.labels == 3).sum()) and 3 not in whole.retain.labels.tolist()
    )
    with pytest.raises(ValueError):
        scenario_splits(dataset, "random", seed=0, forget_class=3)


def test_rows_put_the_reference_first_and_dau_nobt_switches_off_barlow_twins() -> None:
    assert parse_rows("dau, dau-nobt,retrain,dau") == ["retrain", "dau", "dau-nobt"]
    with pytest.raises(ValueError, match="unknown"):
        parse_rows("dau,magic")
    preset = get_preset("cpu")
    assert row_spec("dau-nobt", preset, 3).params == {"seed": 3, "lambda_bt": 0.0}
    retrain = row_spec("retrain", preset, 3)
    assert retrain.params["recipe"]["epochs"] == 30 and retrain.params["recipe"]["seed"] == 3


def test_report_json_has_exactly_the_documented_keys() -> None:
    row = RowResult("dau", 1.0, 2.0, 3.0, 4.0, 0.5, 10.0, 0.1, info={"iterations": 5})
    report = BenchReport("cpu", "class", 0, "cpu", {"train_acc": 90.0, "test_acc": 70.0}, [row])
    data = report.as_json()
    assert tuple(data) == TOP_KEYS and tuple(data["rows"][0]) == ROW_KEYS
    assert data["rows"][0]["disparity"] == 0.5
    assert len(report.tables()) == 2


def test_any_registered_architecture_runs_on_a_presets_data(tmp_path: Path) -> None:
    """`--architecture` swaps the preset's network (same data, same recipe); a bad name exits 2 first."""
    smoke = get_preset("smoke")
    swapped = smoke.with_architecture("torchvision/resnet18")
    assert (swapped.architecture, swapped.data, swapped.recipe) == (
        "torchvision/resnet18",
        "digits",
        smoke.recipe,
    )
    args = ["bench", "--preset", "smoke", "--scenario", "class", "--json", str(tmp_path / "x.json")]
    for bad in ("vgg", "torchvision/resnet19"):
        result = CliRunner().invoke(app, [*args, "--architecture", bad, "--methods", "ft"])
        assert result.exit_code == 2 and f"{bad.split('/')[-1]}'" in result.output, result.output
    assert not (tmp_path / "x.json").exists()
