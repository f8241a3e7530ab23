"""`unlearn bench --seeds N`: per-seed runs, mean ± std, the retrain-b noise floor and ties."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from unlearning.bench.presets import get_preset
from unlearning.bench.rows import NOISE_FLOOR_ROW, RETRAIN_B_SEED_OFFSET, row_spec
from unlearning.bench.seeds import SEED_TOP_KEYS, Spread, tie_groups


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("UNLEARN_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path / "cache"
    torch.set_num_threads(threads)


def test_retrain_b_is_the_presets_recipe_with_another_training_seed() -> None:
    preset = get_preset("cpu")
    reference, second = row_spec("retrain", preset, 3), row_spec(NOISE_FLOOR_ROW, preset, 3)
    assert second.method == reference.method == "retrain"
    assert second.params["recipe"]["seed"] == 3 + RETRAIN_B_SEED_OFFSET
    assert {**second.params["recipe"], "seed": 3} == reference.params["recipe"]


def test_ties_are_rows_within_one_standard_deviation_of_a_neighbour() -> None:
    groups = tie_groups(
        {
            "retrain": Spread(0.0, 0.0),
            "a": Spread(1.0, 0.3),
            "b": Spread(1.2, 0.1),  # 0.2 from a, within a's 0.3
            "c": Spread(2.0, 0.1),  # 0.8 from b: not tied
            "d": Spread(2.5, 0.6),  # 0.5 from c, within d's 0.6
            "e": Spread(5.0, 0.0),
        }
    )
    assert groups == [["a", "b"], ["c", "d"]]
    assert tie_groups({"a": Spread(1.0, 0.0), "b": Spread(2.0, 0.0)}) == []


def test_spread_is_the_sample_mean_and_standard_deviation() -> None:
    spread = Spread.of([1.0, 2.0, 4.0])
    assert spread.mean == pytest.approx(7 / 3)
    assert spread.std == pytest.approx(statistics.stdev([1.0, 2.0, 4.0]))
    assert Spread.of([3.0]).std == 0.0


def test_seeds_runs_each_seed_and_summarises_with_the_noise_floor(tmp_path: Path, cache: Path) -> None:
    json_path = tmp_path / "seeds.json"
    args = [
        "bench", "--preset", "smoke", "--scenario", "random", "--methods", "ga,retrain-b,retrain",
        "--seed", "4", "--seeds", "2", "--json", str(json_path),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "noise floor (retrain-b vs retrain)" in result.output

    report = json.loads(json_path.read_text())
    assert tuple(report) == SEED_TOP_KEYS
    assert report["seeds"] == [4, 5]
    assert [run["seed"] for run in report["runs"]] == [4, 5]
    # Each seed is its own run: its own forget set, so the originals' figures differ.
    assert report["runs"][0]["original"] != report["runs"][1]["original"]
    summary = {row["method"]: row for row in report["summary"]}
    assert list(summary) == ["retrain", "retrain-b", "ga"]
    for method in ("retrain-b", "ga"):
        per_seed = [next(r for r in run["rows"] if r["method"] == method) for run in report["runs"]]
        disparities = [row["disparity"] for row in per_seed]
        assert summary[method]["disparity"]["mean"] == pytest.approx(statistics.fmean(disparities), abs=1e-3)
        assert summary[method]["disparity"]["std"] == pytest.approx(statistics.stdev(disparities), abs=1e-3)
    assert summary["retrain"]["disparity"] == {"mean": 0.0, "std": 0.0}
    # The second retrain really is another model: it does not reproduce the reference exactly.
    assert report["noise_floor"] == summary["retrain-b"]["disparity"]
    assert report["noise_floor"]["mean"] > 0


def test_dau_wasserstein_is_dau_with_the_critic_and_its_own_alpha() -> None:
    from unlearning.methods import parse_params

    spec = row_spec("dau-wasserstein", get_preset("cpu"), 2)
    config = parse_params(spec.method, spec.params)
    assert spec.method == "dau" and config.critic == "wasserstein"  # type: ignore[attr-defined]
    assert config.seed == 2 and config.alpha < parse_params("dau", {}).alpha  # type: ignore[attr-defined]


def test_on_a_pruned_original_retrain_b_keeps_the_initialisation_the_mask_came_from() -> None:
    preset = get_preset("cpu")
    dense, sparse = row_spec(NOISE_FLOOR_ROW, preset, 3), row_spec(NOISE_FLOOR_ROW, preset, 3, sparse=True)
    assert "init_seed" not in dense.params
    assert sparse.params == {
        **dense.params,
        "init_seed": row_spec("retrain", preset, 3).params["recipe"]["seed"],
    }
    assert sparse.params["recipe"]["seed"] != sparse.params["init_seed"]
