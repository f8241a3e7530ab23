"""Decode image files to one uint8 N x C x H x W array, in parallel threads (PIL releases the GIL)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def image_mode(path: Path) -> str:
    """ "L" when the (first) image is greyscale, else "RGB": the channel count of the whole set."""
    with Image.open(path) as image:
        return "L" if image.mode in GREY_MODES else "RGB"


def decode_images(paths: list[Path], *, mode: str, image_size: int | None = None) -> np.ndarray:
    """All `paths` as one uint8 array; sizes must agree unless `image_size` resizes them (bilinear)."""
    channels = 1 if mode == "L" else 3
    if not paths:
        return np.zeros((0, channels, image_size or 1, image_size or 1), dtype=np.uint8)

    def decode(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            image = image.convert(mode)
            if image_size is not None and image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        arrays = list(pool.map(decode, paths, chunksize=256))
    shape = arrays[0].shape
    for path, array in zip(paths, arrays, strict=True):
        if array.shape != shape:
            raise ValueError(
                f"image {str(path)!r} is {array.shape[2]}x{array.shape[1]} but {str(paths[0])!r} is "
                f"{shape[2]}x{shape[1]}: pass image_size to resize, or make the images one size"
            )
    if shape[1] != shape[2]:
        raise ValueError(f"images must be square, {str(paths[0])!r} is {shape[2]}x{shape[1]}")
    return np.stack(arrays)
