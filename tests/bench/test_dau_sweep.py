"""bench/dau_sweep.py: variants scored against the cached retrain reference, one JSON line each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_script import load_bench_script
from typer.testing import CliRunner


def test_sweep_scores_each_variant_against_retrain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_bench_script("dau_sweep", tmp_path, monkeypatch)
    out = tmp_path / "sweep.jsonl"
    args = ["--preset", "smoke", "--scenario", "class", "--json", str(out)]
    args += ["--variant", '{"iterations": 5}', "--variant", '{"iterations": 5, "alpha": 0, "lambda_bt": 0}']
    result = CliRunner().invoke(module.app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "no cached retrain reference" in result.output  # a fresh cache: it had to retrain
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["params"] for line in lines] == [
        {"seed": 0, "iterations": 5},
        {"seed": 0, "iterations": 5, "alpha": 0, "lambda_bt": 0},
    ]
    for line in lines:
        assert line["info"]["iterations"] <= 5 and line["disparity"] >= 0 and line["seconds"] > 0
    bad = CliRunner().invoke(module.app, [*args[:6], "--variant", '{"iterations": -1}'])
    assert bad.exit_code == 2 and "iterations" in bad.output
