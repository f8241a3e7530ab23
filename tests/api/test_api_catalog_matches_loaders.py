"""The torch-free catalogue the API registers datasets with agrees sample for sample with the loaders
the worker trains on (ids, labels, splits), for every format and the options that change splits."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from unlearning.catalog import list_samples


def _catalog_rows(format: str, uri: str | None, options: dict) -> set[tuple[str, int, str]]:
    return {(r.sample_id, r.label, r.split) for r in list_samples(format, uri, options).samples}


def _loader_rows(dataset) -> set[tuple[str, int, str]]:
    return {(sid, int(label), split) for sid, label, split in dataset.iter_samples()}


@pytest.mark.parametrize("options", [{}, {"seed": 3, "val_fraction": 0.1, "test_fraction": 0.3}])
def test_digits(options) -> None:
    from unlearning.data import load_digits

    assert _catalog_rows("digits", None, options) == _loader_rows(load_digits(**options))


def _write_images(root, layout):
    for relative in layout:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), color=(len(relative) % 255, 0, 0)).save(path)


@pytest.mark.parametrize(
    "options",
    [{}, {"seed": 7, "val_fraction": 0.25, "test_fraction": 0.25}, {"per_class_limits": {"train": 3}}],
)
def test_imagefolder_class_folders_with_seeded_holdouts(tmp_path, options) -> None:
    from unlearning.data import load_imagefolder

    _write_images(tmp_path / "wrapper", [f"{c}/{i:02d}.png" for c in ("ant", "bee", "cow") for i in range(9)])
    (tmp_path / "wrapper" / "bee" / "notes.txt").write_text("not an image")
    uri = str(tmp_path)
    assert _catalog_rows("imagefolder", uri, options) == _loader_rows(load_imagefolder(uri, **options))


def test_imagefolder_split_folders_and_tar_archive(tmp_path) -> None:
    import tarfile

    from unlearning.data import load_imagefolder

    layout = [f"train/{c}/{i}.png" for c in ("a", "b") for i in range(6)] + [
        f"test/{c}/t{i}.png" for c in "ab" for i in range(2)
    ]
    _write_images(tmp_path / "src" / "data", layout)
    assert _catalog_rows("imagefolder", str(tmp_path / "src"), {}) == _loader_rows(
        load_imagefolder(tmp_path / "src")
    )
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        handle.add(tmp_path / "src" / "data", arcname="data")
    assert _catalog_rows("imagefolder", str(archive), {}) == _loader_rows(load_imagefolder(archive))


def test_npz(tmp_path) -> None:
    from unlearning.data import load_npz

    path = tmp_path / "set.npz"
    np.savez(
        path,
        x=np.zeros((6, 1, 2, 2), np.uint8),
        y=np.array([2, 0, 1, 1, 0, 2]),
        sample_id=np.array([f"s{i}" for i in range(6)]),
        split=np.array(["train", "val", "test"] * 2),
        class_names=np.array(["x", "y", "z"]),
    )
    assert _catalog_rows("npz", str(path), {}) == _loader_rows(load_npz(path))
    assert list_samples("npz", str(path), {}).class_names == ["x", "y", "z"]


def test_the_api_process_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from app.main import create_app\n"
        "from unlearning.catalog import list_samples\n"
        "create_app().openapi()\n"
        "list_samples('digits', None, {})\n"
        "print('torch' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "False"


def test_method_param_validation_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from unlearning.catalog import METHOD_NAMES, method_config\n"
        "for name in METHOD_NAMES:\n"
        "    method_config(name).model_validate({})\n"
        "print('torch' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "False"


def test_method_catalogue_matches_the_registered_methods() -> None:
    from unlearning.catalog import METHOD_NAMES, method_config
    from unlearning.methods import available_methods, get_method

    assert sorted(METHOD_NAMES) == available_methods()
    for name in METHOD_NAMES:
        assert method_config(name) is get_method(name).Config
