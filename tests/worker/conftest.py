"""Fixtures for the worker tests: a migrated database (SQLite, and PostgreSQL in CI) holding a digits
dataset and a trained MLP as version 1 of a model, plus settings with short heartbeats."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from worker_helpers import SeededModel, services

from core.storage import local_path

DATASET_ID = "ds_digits_template"


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Two shared cores: torch's default thread pool oversubscribes them and runs 10x slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MLP trained on digits once per session (a few seconds on one core)."""
    from models.checkpoint import save_checkpoint
    from unlearning.pipeline import load_dataset, train_base_model
    from unlearning.training import TrainRecipe

    dataset = load_dataset("digits")
    model = train_base_model(dataset, "mlp", TrainRecipe(epochs=4, batch_size=128, lr_max=0.1), device="cpu")
    path = tmp_path_factory.mktemp("base") / "digits-mlp.safetensors"
    save_checkpoint(model, path)
    return path


@pytest.fixture(scope="session", params=services.database_backends())
def database_template(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database holding the digits dataset and its samples, prepared once per backend."""
    from core.db import Dataset, Sample, session_scope
    from core.db.migrate import upgrade
    from core.db.session import dispose_engine
    from unlearning.pipeline import load_dataset

    tmp_dir = str(tmp_path_factory.mktemp(f"template-{request.param}"))
    with services.database_url_for(request.param, tmp_dir) as url:
        upgrade(url)
        dataset = load_dataset("digits")
        with session_scope(url) as session:
            row = Dataset(
                id=DATASET_ID,
                name="digits",
                format="digits",
                uri=None,
                options={},
                num_classes=dataset.num_classes,
                class_names=list(dataset.class_names),
                split_counts={name: len(getattr(dataset, name)) for name in ("train", "val", "test")},
            )
            session.add(row)
            session.flush()
            for split in ("train", "val", "test"):
                images = getattr(dataset, split)
                session.add_all(
                    Sample(dataset_id=row.id, sample_id=sample_id, label=int(label), split=split)
                    for sample_id, label in zip(images.sample_ids, images.labels.tolist(), strict=True)
                )
        dispose_engine(url)
        yield url


@pytest.fixture
def database_url(database_template: str, tmp_path: Path) -> Iterator[str]:
    with services.clone_database(database_template, str(tmp_path)) as url:
        yield url
        from core.db.session import dispose_engine

        dispose_engine(url)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Any:
    from core.settings import Settings

    return Settings(
        env="test",
        var_dir=tmp_path / "var",
        database_url=database_url,
        broker_url="redis://127.0.0.1:1/0",  # never used: the tests inject the enqueue function
        heartbeat_interval_s=0.2,
        heartbeat_stale_s=2.0,
        max_attempts=3,
    )


@pytest.fixture
def seeded_model(settings: Any, digits_checkpoint: Path) -> SeededModel:
    """A `ready` model on the template's digits dataset, version 1 a copy of the trained checkpoint."""
    from core import lifecycle
    from core.db import Model, ModelStatus, Sample, session_scope
    from models.checkpoint import file_sha256

    with session_scope(settings.database_url) as session:
        model = Model(
            name="digits-mlp",
            architecture="mlp",
            dataset_id=DATASET_ID,
            status=ModelStatus.ready,
            train_params={"recipe": {"epochs": 4}},
        )
        session.add(model)
        session.flush()
        target = local_path(settings.artifact_url) / "models" / model.id / "v1.safetensors"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(digits_checkpoint, target)
        info = file_sha256(target)
        version = lifecycle.version_created(
            session,
            model,
            checkpoint_uri=target.as_uri(),
            sha256=info.sha256,
            size_bytes=info.size_bytes,
            method="train",
            params={"recipe": {"epochs": 4}},
        )
        train_ids = (
            session.execute(
                select(Sample.sample_id)
                .where(Sample.dataset_id == DATASET_ID, Sample.split == "train")
                .order_by(Sample.id)
            )
            .scalars()
            .all()
        )
        return SeededModel(model.id, DATASET_ID, version.id, list(train_ids))
