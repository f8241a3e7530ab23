"""An s3:// dataset registered through the API and used by jobs on a worker that shares no directory with
the API: the API records the sha256 of the dataset's objects, the worker fetches its own copy (checked
against it), trains and unlearns, and writes checkpoints and audit pages into an s3:// artifact store that
the API then serves (streamed, or as a redirect to a presigned URL)."""

from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from s3_server import S3Server
from storage_helpers import make_settings

from core.db import JobKind
from core.jobs.loop import run_jobs

FAST_DAU: dict[str, Any] = {
    "iterations": 4,
    "attacker_warmup": 4,
    "batch_size": 32,
    "eval_every": 2,
    "retain_probe": 32,
    "sensitivity_copies": 1,
    "attacker": {"token_dim": 8, "layers": 1, "heads": 2, "ff_dim": 16, "hidden_dim": 8},
}


def digits_npz() -> bytes:
    """scikit-learn's digits as an .npz (x, y, sample_id, split)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    count = len(digits.target)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x=(digits.images * 255 / 16).round().astype(np.uint8),
        y=digits.target.astype(np.int64),
        sample_id=np.array([f"digit-{index:04d}" for index in range(count)]),
        split=np.array([("train", "train", "train", "val", "test")[index % 5] for index in range(count)]),
    )
    return buffer.getvalue()


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (value, 255 - value, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def checkpoint_uris(database_url: str, model_id: str) -> dict[str, str]:
    """version id -> the store URL its row records."""
    from sqlalchemy import select

    from core.db import ModelVersion, session_scope

    with session_scope(database_url) as session:
        rows = session.execute(
            select(ModelVersion.id, ModelVersion.checkpoint_uri).where(ModelVersion.model_id == model_id)
        ).all()
    return {version_id: uri for version_id, uri in rows}


def run(kind: JobKind, model_id: str, settings: Any) -> list[Any]:
    return run_jobs(kind, model_id, settings=settings, enqueue=lambda *call: True, notify=None)


def test_an_image_folder_prefix_is_catalogued_with_the_sha256_of_its_objects(
    api_on, s3_server: S3Server, bucket: str
) -> None:
    objects = {f"{label}/{index}.png": png(index * 30) for label in ("cat", "dog") for index in range(6)}
    for key, body in objects.items():
        s3_server.put(bucket, f"datasets/pets/{key}", body)
    api = api_on(dataset_roots=[f"s3://{bucket}/datasets"], s3_endpoint_url=s3_server.endpoint_url)
    created = api.post(
        "/v1/datasets", json={"name": "pets", "format": "imagefolder", "uri": f"s3://{bucket}/datasets/pets"}
    )
    assert created.status_code == 201, created.text
    dataset = created.json()
    manifest = "".join(f"{hashlib.sha256(objects[key]).hexdigest()}  {key}\n" for key in sorted(objects))
    assert dataset["content_sha256"] == hashlib.sha256(manifest.encode()).hexdigest()
    assert dataset["class_names"] == ["cat", "dog"] and sum(dataset["split_counts"].values()) == 12
    samples = api.get(f"/v1/datasets/{dataset['id']}/samples", params={"limit": 100}).json()["data"]
    assert {sample["sample_id"] for sample in samples} == set(objects)

    empty = api.post(
        "/v1/datasets", json={"name": "none", "format": "imagefolder", "uri": f"s3://{bucket}/datasets/none"}
    )
    assert empty.status_code == 422 and empty.json()["errors"][0]["field"] == "uri"
    assert "cache" not in empty.text, "messages name the dataset's uri, not the API's local copy"


def test_an_s3_dataset_trains_and_unlearns_on_a_worker_sharing_nothing_with_the_api(
    api_on, s3_server: S3Server, bucket: str, database_url: str, tmp_path: Path
) -> None:
    data = digits_npz()
    uri = f"s3://{bucket}/datasets/digits.npz"
    s3_server.put(bucket, "datasets/digits.npz", data)
    shared = {
        "artifact_url": f"s3://{bucket}/artifacts",
        "dataset_roots": [f"s3://{bucket}/datasets"],
    }
    api = api_on(**shared, s3_endpoint_url=s3_server.endpoint_url, s3_region="us-east-1")
    worker = make_settings(database_url, tmp_path / "worker-host", s3=s3_server, **shared)
    assert worker.cache_root != api.settings.cache_root

    dataset = api.post("/v1/datasets", json={"name": "digits-s3", "format": "npz", "uri": uri}).json()
    assert dataset["content_sha256"] == hashlib.sha256(data).hexdigest()
    body = {
        "name": "digits-mlp",
        "architecture": "mlp",
        "dataset_id": dataset["id"],
        "train": {"epochs": 2, "batch_size": 128},
    }
    model = api.post("/v1/models", json=body).json()
    [trained] = run(JobKind.train, model["id"], worker)
    assert trained.outcome == "succeeded", trained
    copy = worker.cache_root / "datasets" / dataset["content_sha256"] / "digits.npz"
    assert copy.read_bytes() == data, "the worker loads its own copy, named by the content hash"

    train_ids = [
        sample["sample_id"]
        for sample in api.get(
            f"/v1/datasets/{dataset['id']}/samples", params={"split": "train", "limit": 50}
        ).json()["data"]
    ]
    created = api.post(
        "/v1/deletion-requests",
        json={"model_id": model["id"], "sample_ids": train_ids[:5], "method": "dau", "params": FAST_DAU},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert created.status_code == 202, created.text
    [unlearned] = run(JobKind.unlearn, model["id"], worker)
    assert unlearned.outcome == "succeeded", unlearned
    request = api.get(f"/v1/deletion-requests/{created.json()['id']}").json()
    assert request["status"] == "succeeded"

    versions = api.get(f"/v1/models/{model['id']}/versions").json()["data"]
    first, second = sorted(versions, key=lambda version: version["number"])
    uris = checkpoint_uris(database_url, model["id"])
    assert uris[second["id"]].startswith(f"s3://{bucket}/artifacts/models/{model['id']}/")
    streamed = api.get(f"/v1/models/{model['id']}/checkpoint")
    assert streamed.status_code == 200 and streamed.headers["etag"] == f'"{second["sha256"]}"'
    assert hashlib.sha256(streamed.content).hexdigest() == second["sha256"]
    assert int(streamed.headers["content-length"]) == second["size_bytes"]
    assert api.get(f"/v1/model-versions/{first['id']}/checkpoint").status_code == 410
    first_key = uris[first["id"]].removeprefix(f"s3://{bucket}/")
    assert first_key not in s3_server.keys(bucket), "the retired version is purged from the store"
    page = api.get(f"/v1/deletion-requests/{request['id']}/audit.html")
    assert page.status_code == 200 and "offline-verification" in page.text
    assert not list((worker.cache_root / "staging").glob("*")), "the downloaded parent is gone"
    assert not (tmp_path / "api-host" / "artifacts").exists() and not (worker.var_dir / "artifacts").exists()

    presigning = api_on(**shared, s3_endpoint_url=s3_server.endpoint_url, presign_downloads_s=120)
    redirect = presigning.get(f"/v1/model-versions/{second['id']}/checkpoint")
    assert redirect.status_code == 307, redirect.text
    fetched = httpx.get(redirect.headers["location"], timeout=30)
    assert hashlib.sha256(fetched.content).hexdigest() == second["sha256"]


def test_a_worker_refuses_a_dataset_whose_objects_changed_since_registration(
    api_on, s3_server: S3Server, bucket: str, database_url: str, tmp_path: Path
) -> None:
    s3_server.put(bucket, "datasets/digits.npz", digits_npz())
    shared = {"artifact_url": f"s3://{bucket}/artifacts", "dataset_roots": [f"s3://{bucket}/datasets"]}
    api = api_on(**shared, s3_endpoint_url=s3_server.endpoint_url)
    uri = f"s3://{bucket}/datasets/digits.npz"
    dataset = api.post("/v1/datasets", json={"name": "digits-s3", "format": "npz", "uri": uri}).json()
    body = {"name": "m", "architecture": "mlp", "dataset_id": dataset["id"], "train": {"epochs": 1}}
    model = api.post("/v1/models", json=body).json()
    s3_server.put(bucket, "datasets/digits.npz", digits_npz()[:-10] + b"0123456789")  # replaced in place
    worker = make_settings(database_url, tmp_path / "fresh-worker", s3=s3_server, **shared)
    [outcome] = run(JobKind.train, model["id"], worker)
    assert outcome.outcome == "failed"
    failed = api.get(f"/v1/models/{model['id']}").json()
    assert failed["status"] == "failed" and "changed since the dataset was registered" in str(failed)
    assert s3_server.keys(bucket, "artifacts/") == []
