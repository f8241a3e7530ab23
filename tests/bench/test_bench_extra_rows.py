"""The issue #7 rows: `dau-condensed` (DAU's CE term on the condensed retain set) and `multigan-r0.1`
(Multi-GAN reading a tenth of the retain set), as specs and end to end on the smoke preset."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from unlearning.bench.presets import get_preset
from unlearning.bench.report import ROW_KEYS
from unlearning.bench.rows import known_rows, parse_rows, row_spec
from unlearning.methods import parse_params

NEW_ROWS = ("dau-condensed", "multigan-r0.1")


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("UNLEARN_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; other jobs share the cores
    yield tmp_path / "cache"
    torch.set_num_threads(threads)


def test_the_rows_are_the_methods_with_the_issue_params() -> None:
    assert set(NEW_ROWS) <= set(known_rows())
    assert parse_rows("multigan-r0.1,dau-condensed,retrain") == ["retrain", "multigan-r0.1", "dau-condensed"]
    preset = get_preset("smoke")
    condensed = row_spec("dau-condensed", preset, 4)
    assert (condensed.method, condensed.params) == (
        "dau",
        {"seed": 4, "retain_source": "condensed", "condense": {"cache": False}},  # the cold cost
    )
    assert row_spec("condensation", preset, 4).params == {"seed": 4, "condense": {"cache": False}}
    tenth = row_spec("multigan-r0.1", preset, 4)
    assert (tenth.method, tenth.params) == ("multigan", {"seed": 4, "retain_fraction": 0.1})
    assert parse_params("dau", condensed.params).retain_source == "condensed"  # type: ignore[attr-defined]
    assert parse_params("multigan", tenth.params).retain_fraction == 0.1  # type: ignore[attr-defined]
    assert parse_params("multigan", {}).retain_fraction == 1.0  # type: ignore[attr-defined]


def test_smoke_bench_produces_the_new_rows(tmp_path: Path, cache: Path) -> None:
    json_path, out = tmp_path / "rows.json", tmp_path / "out"
    args = ["bench", "--preset", "smoke", "--scenario", "random", "--json", str(json_path), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--methods", "retrain,dau-condensed,multigan-r0.1"])
    assert result.exit_code == 0, result.output
    rows = {row["method"]: row for row in json.loads(json_path.read_text())["rows"]}
    assert list(rows) == ["retrain", *NEW_ROWS]
    for name in NEW_ROWS:
        row = rows[name]
        assert tuple(row) == ROW_KEYS
        assert all(0 <= row[key] <= 100 for key in ("UA", "MIA", "RA", "TA"))
        assert row["seconds"] > 0 and row["disparity"] >= 0
        assert (out / f"{name}.safetensors").is_file()
