"""The samples the API stores when it registers a dataset are the samples the worker loads: both come from
the one registry of formats (`unlearning.data.formats`), whose loaders list their source with the very
function the API calls before decoding the rows listed. Checked for every registered format and the
options that change splits, down to the API's `samples` table; and the API process never loads torch."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from unlearning.data.formats import FORMAT_NAMES, list_samples

Source = tuple[str | None, dict[str, Any]]
"""A dataset source as a `datasets` row holds it: uri and options."""


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded images go to this test's own cache dir."""
    monkeypatch.setenv("UNLEARN_CACHE_DIR", str(tmp_path / "cache"))


def _write_images(root: Path, layout: list[str]) -> None:
    for relative in layout:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), color=(len(relative) % 255, 0, 0)).save(path)


def _digits_sources(_: Path) -> list[Source]:
    return [(None, {}), (None, {"seed": 3, "val_fraction": 0.1, "test_fraction": 0.3})]


def _imagefolder_sources(tmp_path: Path) -> list[Source]:
    classes = tmp_path / "classes"
    _write_images(classes / "wrapper", [f"{c}/{i:02d}.png" for c in ("ant", "bee", "cow") for i in range(9)])
    (classes / "wrapper" / "bee" / "notes.txt").write_text("not an image")
    splits = tmp_path / "splits"
    _write_images(
        splits / "data",
        [f"train/{c}/{i}.png" for c in "ab" for i in range(6)]
        + [f"test/{c}/t{i}.png" for c in "ab" for i in range(2)],
    )
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        handle.add(splits / "data", arcname="data")
    return [
        (str(classes), {}),
        (str(classes), {"seed": 7, "val_fraction": 0.25, "test_fraction": 0.25}),
        (f"file://{classes}", {"per_class_limits": {"train": 3}}),
        (str(splits), {}),
        (str(archive), {"seed": 1}),
    ]


def _npz_sources(tmp_path: Path) -> list[Source]:
    path = tmp_path / "set.npz"
    np.savez(
        path,
        x=np.zeros((6, 1, 2, 2), np.uint8),
        y=np.array([2, 0, 1, 1, 0, 2]),
        sample_id=np.array([f"s{i}" for i in (5, 3, 1, 0, 2, 4)]),
        split=np.array(["train", "val", "test"] * 2),
        class_names=np.array(["x", "y", "z"]),
    )
    return [(str(path), {})]


SOURCES: dict[str, Callable[[Path], list[Source]]] = {
    "digits": _digits_sources,
    "imagefolder": _imagefolder_sources,
    "npz": _npz_sources,
}


def _loaded_rows(format: str, uri: str | None, options: dict[str, Any]) -> list[tuple[str, int, str]]:
    from unlearning.pipeline import load_dataset

    return list(load_dataset(format, uri, **options).iter_samples())


def test_every_registered_format_has_sources_here() -> None:
    assert sorted(SOURCES) == sorted(FORMAT_NAMES)


@pytest.mark.parametrize("format", sorted(SOURCES))
def test_the_listing_is_what_the_loader_decodes(tmp_path: Path, format: str) -> None:
    from unlearning.data.formats import load_dataset

    for uri, options in SOURCES[format](tmp_path):
        catalog = list_samples(format, uri, options)
        dataset = load_dataset(format, uri, options)
        listed = [(row.sample_id, row.label, row.split) for row in catalog.samples]
        assert listed == list(dataset.iter_samples()), (uri, options)
        assert catalog.class_names == dataset.class_names


def test_the_samples_table_holds_what_the_worker_loads(client, admin, db, tmp_path: Path) -> None:
    from sqlalchemy import select

    from core.db.models import Dataset, Sample
    from core.db.session import session_scope

    registered = []
    for format, make_sources in SOURCES.items():
        (tmp_path / format).mkdir()
        for index, (uri, options) in enumerate(make_sources(tmp_path / format)):
            body = {"name": f"{format}-{index}", "format": format, "uri": uri, "options": options}
            response = client.post("/v1/datasets", json=body, headers=admin)
            assert response.status_code == 201, response.text
            registered.append(response.json()["id"])
    with session_scope(db, readonly=True) as session:
        for dataset_id in registered:
            row = session.get(Dataset, dataset_id)
            assert row is not None
            stored = session.execute(
                select(Sample.sample_id, Sample.label, Sample.split)
                .where(Sample.dataset_id == dataset_id)
                .order_by(Sample.id)
            ).all()
            # what the worker does with the row (core.jobs.artifacts.load_dataset_for)
            loaded = _loaded_rows(row.format, row.uri, row.options)
            assert [tuple(sample) for sample in stored] == loaded, (row.format, row.uri, row.options)


def test_npz_class_names_come_from_the_file(tmp_path: Path) -> None:
    (uri, options) = _npz_sources(tmp_path)[0]
    assert list_samples("npz", uri, options).class_names == ["x", "y", "z"]


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
