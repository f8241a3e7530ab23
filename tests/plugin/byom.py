"""What the bring-your-own-model tests share (tests/api, tests/ml and tests/methods put this folder on
`sys.path` and import `byom`):
a plugin installed the way pip would, as far as `importlib.metadata` can tell (the module and a
`.dist-info` folder whose `entry_points.txt` registers `TinyCNN` as `tiny_cnn` in the group
`unlearn.architectures`), and small generated image datasets in the npz format."""

from __future__ import annotations

import importlib
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ENTRY_POINT = "tiny_cnn"
ARCHITECTURE = f"plugin/{ENTRY_POINT}"


def install(folder: Path) -> Path:
    """Copy the plugin into `folder`, register its entry point and put `folder` on `sys.path` (which the
    API's model-check process inherits)."""
    shutil.copyfile(Path(__file__).with_name("unlearn_test_plugin.py"), folder / "unlearn_test_plugin.py")
    info = folder / "unlearn_test_plugin-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: unlearn-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[unlearn.architectures]\n{ENTRY_POINT} = unlearn_test_plugin:TinyCNN\n"
    )
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    return folder


def uninstall(folder: Path) -> None:
    if str(folder) in sys.path:
        sys.path.remove(str(folder))
    sys.modules.pop("unlearn_test_plugin", None)
    importlib.invalidate_caches()


@contextmanager
def installed(folder: Path) -> Iterator[Path]:
    """The plugin installed in `folder`, and torch on one thread (small models, two shared cores)."""
    import torch

    install(folder)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield folder
    finally:
        torch.set_num_threads(threads)
        uninstall(folder)


def plugin_module() -> object:
    return importlib.import_module("unlearn_test_plugin")


def write_npz(
    path: Path,
    *,
    classes: int = 3,
    train_per_class: int = 24,
    holdout_per_class: int = 8,
    size: int = 16,
    channels: int = 3,
    seed: int = 0,
) -> Path:
    """Learnable images: each class a colour and a bright square in its own corner, plus noise; ids
    `img/<split>/<class>/<n>`, `holdout_per_class` images per class each for val and test."""
    rng = np.random.default_rng(seed)
    images, labels, ids, splits = [], [], [], []
    for split, count in (("train", train_per_class), ("val", holdout_per_class), ("test", holdout_per_class)):
        for label in range(classes):
            for n in range(count):
                image = rng.normal(0.35, 0.12, (channels, size, size))
                image[label % channels] += 0.25
                row, col = divmod(label % 4, 2)
                half = size // 2
                image[:, row * half : row * half + half // 2, col * half : col * half + half // 2] += 0.4
                images.append(np.clip(image, 0, 1))
                labels.append(label)
                ids.append(f"img/{split}/{label}/{n:03d}")
                splits.append(split)
    x = np.rint(np.stack(images) * 255).astype(np.uint8)
    np.savez(
        path,
        x=x,
        y=np.array(labels, np.int64),
        sample_id=np.array(ids),
        split=np.array(splits),
        class_names=np.array([f"class{label}" for label in range(classes)]),
    )
    return path
