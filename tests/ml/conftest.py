"""Fixtures for the ML library tests: a private cache dir and tiny generated datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ml_helpers import write_image


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test decodes into its own cache dir, so tests neither share nor pollute ~/.cache."""
    directory = tmp_path_factory.mktemp("unlearn-cache")
    monkeypatch.setenv("UNLEARN_CACHE_DIR", str(directory))
    return directory


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    """`root/{train,test}/<class>/` PNGs: 3 classes, 10 train and 2 test images per class."""
    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    for class_name in ("cat", "dog", "emu"):
        for index in range(10):
            write_image(root / "train" / class_name / f"{index:04d}.png", rng)
        for index in range(2):
            write_image(root / "test" / class_name / f"{index:04d}.png", rng)
    return root
