"""Coalescing benchmark: N small deletion requests on one model, served by the real job loop, against one.

Sets up the embedded database (SQLite) with the digits dataset and a small MLP, posts N requests of
`--ids-per-request` fresh sample IDs each as the API stores them, runs `core.jobs.loop.run_jobs` in this
process with the service's default method (DAU, default params) and prints the seconds, the jobs used and
the job's own stage timings, for N = 1 and N = `--requests`, with their ratio. Figures come from one run.

    python bench/coalescing.py --requests 100
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from core.storage import local_path


def _prepare(root: Path) -> tuple[Any, Path, str, list[str]]:
    from app.datasets.schemas import DatasetCreate
    from app.datasets.service import register_dataset
    from core.db import session_scope
    from core.db.migrate import upgrade
    from core.settings import Settings
    from models.checkpoint import save_checkpoint
    from unlearning.pipeline import load_dataset, train_base_model
    from unlearning.training import TrainRecipe

    settings = Settings(env="test", var_dir=root / "var")
    upgrade(settings.database_url)
    with session_scope(settings.database_url) as session:  # registered as `POST /v1/datasets` does it
        registered = register_dataset(session, DatasetCreate(name="digits", format="digits"), actor="bench")
        dataset_id = registered.id
    dataset = load_dataset("digits")
    model = train_base_model(dataset, "mlp", TrainRecipe(epochs=10, batch_size=128, lr_max=0.1), device="cpu")
    checkpoint = root / "base.safetensors"
    save_checkpoint(model, checkpoint)
    return settings, checkpoint, dataset_id, list(dataset.train.sample_ids)


def _model(settings: Any, checkpoint: Path, dataset_id: str) -> str:
    from core import lifecycle
    from core.db import AuditEventType, Model, ModelStatus, session_scope
    from models.checkpoint import file_sha256

    with session_scope(settings.database_url) as session:
        model = lifecycle.model_created(
            session,
            Model(name="digits-mlp", architecture="mlp", dataset_id=dataset_id),
            ModelStatus.ready,
            actor="bench",
            event=AuditEventType.model_registered,
            data={},
        )
        target = local_path(settings.artifact_url) / "models" / model.id / "v1.safetensors"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint, target)
        info = file_sha256(target)
        lifecycle.version_created(
            session, model, checkpoint_uri=str(target), sha256=info.sha256, size_bytes=info.size_bytes
        )
        return model.id


def _post(settings: Any, model_id: str, groups: list[list[str]]) -> None:
    from core import lifecycle
    from core.db import RequestKind, new_id, session_scope, utcnow

    now = utcnow()
    with session_scope(settings.database_url) as session:
        for index, sample_ids in enumerate(groups):
            received = now + timedelta(microseconds=index)
            request = {
                "id": new_id("req"),
                "model_id": model_id,
                "kind": RequestKind.samples,
                "sample_ids": sample_ids,
                "method": "dau",
                "params": {},
                "due_at": received + timedelta(days=30),
                "request_hash": hashlib.sha256(json.dumps(sample_ids).encode()).hexdigest(),
            }
            lifecycle.requests_received(session, [request], received_at=received)


def _serve(settings: Any, checkpoint: Path, dataset_id: str, groups: list[list[str]]) -> dict[str, Any]:
    from core.db import JobKind, ModelVersion, session_scope
    from core.jobs.loop import run_jobs

    model_id = _model(settings, checkpoint, dataset_id)
    _post(settings, model_id, groups)
    started = time.perf_counter()
    outcomes = run_jobs(JobKind.unlearn, model_id, settings=settings, enqueue=lambda *call: True, notify=None)
    seconds = time.perf_counter() - started
    with session_scope(settings.database_url, readonly=True) as session:
        metrics = [session.get(ModelVersion, o.version_id).metrics for o in outcomes]
    return {
        "requests": len(groups),
        "jobs": len(outcomes),
        "outcomes": sorted({o.outcome for o in outcomes}),
        "seconds": round(seconds, 2),
        "job_timings_s": [m.get("timings_s") for m in metrics],
        "acceptance": [m.get("acceptance") for m in metrics],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--ids-per-request", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="unlearn-coalescing-") as tmp:
        settings, checkpoint, dataset_id, train_ids = _prepare(Path(tmp))
        per = args.ids_per_request
        one = _serve(settings, checkpoint, dataset_id, [train_ids[:per]])
        many_ids = train_ids[per : per + per * args.requests]
        groups = [many_ids[i : i + per] for i in range(0, len(many_ids), per)]
        many = _serve(settings, checkpoint, dataset_id, groups)
    figures = {"one": one, "many": many, "ratio": round(many["seconds"] / one["seconds"], 2)}
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
