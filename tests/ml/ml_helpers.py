"""Helpers shared by the ML tests (imported by name: tests/ml is on sys.path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, rng: np.random.Generator, size: int = 32, mode: str = "RGB") -> np.ndarray:
    """Write a random image (PNG or JPEG by suffix) and return its pixels as written (C x H x W)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels, mode=mode).save(path)
    return pixels.transpose(2, 0, 1) if mode == "RGB" else pixels[None]
