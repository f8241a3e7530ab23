"""`unlearn train` and `unlearn predict` end to end on the bundled digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from models.checkpoint import load_checkpoint
from unlearning.data import load_digits
from unlearning.training import predict_probs

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "digits.safetensors"
    result = runner.invoke(app, ["train", "--data", "digits", "--epochs", "3", "--out", str(path)])
    assert result.exit_code == 0, result.output
    assert "sha256" in result.output and "test" in result.output
    return path


def test_train_writes_a_loadable_checkpoint(checkpoint: Path) -> None:
    loaded = load_checkpoint(checkpoint)
    assert loaded.model.spec.architecture == "mlp"
    assert loaded.metadata["dataset"] == "digits"
    assert json.loads(loaded.metadata["train_recipe"])["epochs"] == 3


def test_predict_writes_probabilities_for_listed_ids(checkpoint: Path, tmp_path: Path) -> None:
    dataset = load_digits()
    ids = [dataset.test.sample_ids[2], dataset.train.sample_ids[0]]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    out = tmp_path / "probs.npz"
    result = runner.invoke(
        app, ["predict", str(checkpoint), "--data", "digits", "--ids", str(ids_file), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    with np.load(out, allow_pickle=False) as arrays:
        assert arrays["sample_ids"].tolist() == ids
        assert arrays["labels"].tolist() == [int(dataset.test.labels[2]), int(dataset.train.labels[0])]
        expected = predict_probs(load_checkpoint(checkpoint).model, dataset.test.subset([2])).numpy()
        assert np.allclose(arrays["probs"][0], expected[0], atol=1e-6)
        assert arrays["probs"].shape == (2, 10)


def test_predict_reads_json_lists_and_splits_files(checkpoint: Path, tmp_path: Path) -> None:
    dataset = load_digits()
    splits_file = tmp_path / "splits.json"
    splits_file.write_text(
        json.dumps({"forget": dataset.train.sample_ids[:3], "test": dataset.test.sample_ids})
    )
    out = tmp_path / "forget.npz"
    result = runner.invoke(
        app,
        [
            "predict",
            str(checkpoint),
            "--data",
            "digits",
            "--ids",
            str(splits_file),
            "--split",
            "forget",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    with np.load(out, allow_pickle=False) as arrays:
        assert arrays["sample_ids"].tolist() == dataset.train.sample_ids[:3]
    missing_split = runner.invoke(
        app, ["predict", str(checkpoint), "--data", "digits", "--ids", str(splits_file), "--out", str(out)]
    )
    assert missing_split.exit_code == 2
    assert "--split" in missing_split.output


def test_predict_refuses_unknown_ids(checkpoint: Path, tmp_path: Path) -> None:
    ids_file = tmp_path / "ids.json"
    ids_file.write_text(json.dumps(["digits/0001", "digits/nope"]))
    out = tmp_path / "never.npz"
    result = runner.invoke(
        app, ["predict", str(checkpoint), "--data", "digits", "--ids", str(ids_file), "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "digits/nope" in result.output
    assert not out.exists()


def test_predict_refuses_a_non_checkpoint(tmp_path: Path) -> None:
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"not a checkpoint at all, just bytes" * 3)
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("digits/0001\n")
    result = runner.invoke(
        app,
        ["predict", str(fake), "--data", "digits", "--ids", str(ids_file), "--out", str(tmp_path / "o.npz")],
    )
    assert result.exit_code == 2
    assert "not a valid safetensors" in result.output
