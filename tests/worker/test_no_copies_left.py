"""After a deletion request succeeds, no file under the service's cache or artifact directories holds the
forgotten samples' pixels: jobs store no decoded images, and what was cached before is purged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import select
from worker_helpers import add_request

from core import lifecycle
from core.db import AuditEvent, AuditEventType, Dataset, JobKind, Model, ModelStatus, Sample, session_scope
from core.jobs.loop import run_jobs
from core.storage import local_path

CLASSES, PER_CLASS, SIZE = 3, 24, 8


def make_imagefolder(root: Path) -> dict[str, bytes]:
    """Random RGB images in `root/<class>/<n>.png`; returns sample id -> the image's CHW uint8 bytes."""
    generator = np.random.default_rng(7)
    pixels: dict[str, bytes] = {}
    for label in range(CLASSES):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for index in range(PER_CLASS):
            image = generator.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
            image[..., label] = 255  # a learnable class signal
            Image.fromarray(image).save(folder / f"{index:03d}.png")
            pixels[f"class{label}/{index:03d}.png"] = np.ascontiguousarray(image.transpose(2, 0, 1)).tobytes()
    return pixels


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if any(needle in data for needle in needles):
                found.append(str(path.relative_to(root)))
    return found


def test_no_cached_copy_of_forgotten_pixels_outlives_the_request(settings: Any, tmp_path: Path) -> None:
    from models.checkpoint import save_checkpoint
    from unlearning.catalog import list_samples
    from unlearning.data.cache import cache_policy
    from unlearning.pipeline import load_dataset, train_base_model
    from unlearning.training import TrainRecipe

    source = tmp_path / "images"
    pixels = make_imagefolder(source)
    catalog = list_samples("imagefolder", str(source), {})
    url = settings.database_url
    with cache_policy(settings.cache_root):  # as a CLI user sharing the service's cache would
        dataset = load_dataset("imagefolder", str(source))
    model = train_base_model(dataset, "mlp", TrainRecipe(epochs=3, batch_size=32), device="cpu")
    checkpoint = local_path(settings.artifact_url) / "base.safetensors"
    saved = save_checkpoint(model, checkpoint)
    with session_scope(url) as session:
        row = Dataset(
            name="pixels",
            format="imagefolder",
            uri=str(source),
            options={},
            num_classes=catalog.num_classes,
            class_names=catalog.class_names,
            split_counts={},
        )
        session.add(row)
        session.flush()
        session.add_all(
            Sample(dataset_id=row.id, sample_id=s.sample_id, label=s.label, split=s.split)
            for s in catalog.samples
        )
        registered = lifecycle.model_created(
            session,
            Model(name="pixels-mlp", architecture="mlp", dataset_id=row.id),
            ModelStatus.ready,
            actor="test",
            event=AuditEventType.model_registered,
            data={},
        )
        lifecycle.version_created(
            session,
            registered,
            checkpoint_uri=str(checkpoint),
            sha256=saved.sha256,
            size_bytes=saved.size_bytes,
        )
        model_id = registered.id
    train_ids = [s.sample_id for s in catalog.samples if s.split == "train"]
    forget = train_ids[:4]
    needles = [pixels[sample] for sample in forget]
    before = files_holding(settings.cache_root, needles)
    assert before, "the search must find the cached pixels (else it proves nothing)"

    add_request(url, model_id, forget)
    [outcome] = run_jobs(
        JobKind.unlearn, model_id, settings=settings, enqueue=lambda *call: True, notify=None
    )
    assert outcome.outcome == "succeeded"
    assert files_holding(settings.cache_root, needles) == []
    assert files_holding(local_path(settings.artifact_url), needles) == []
    assert all((source / sample).is_file() for sample in forget), "the user's source files stay untouched"
    with session_scope(url) as session:
        purged = session.execute(
            select(AuditEvent.data).where(AuditEvent.event == AuditEventType.derived_data_purged)
        ).scalar_one()
    assert purged["removed"] and all(entry.startswith("decoded/") for entry in purged["removed"])
