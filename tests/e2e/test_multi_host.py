"""Beyond one machine: the API and two Celery workers, each on its own local directory (own var_dir, own
cache), sharing only PostgreSQL, Redis and an S3 store (moto's server, a real S3 protocol endpoint).

The dataset is an .npz object on S3 that every host copies into its own cache by content hash; every
checkpoint and audit page goes through the s3:// artifact store. A worker that has never seen a model
unlearns it from the checkpoint another worker wrote; then both workers serve deletion requests on two
models at once. Every request succeeds exactly once, and every live checkpoint downloads through the API
with the sha256 of its version row; retired ones answer 410 and are gone from the store.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from e2e_client import E2E_DAU, FINISHED, all_pages, ok, post_request, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(600)]


def _s3_server_module() -> Any:
    name = "unlearn_test_s3_server"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "storage" / "s3_server.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[Any]:
    with _s3_server_module().running_s3_server(tmp_path / "moto.log") as server:
        yield server


def digits_npz() -> bytes:
    from sklearn.datasets import load_digits

    digits = load_digits()
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x=(digits.images * 255 / 16).round().astype(np.uint8),
        y=digits.target.astype(np.int64),
        sample_id=np.array([f"digit-{index:04d}" for index in range(len(digits.target))]),
        split=np.array(
            [("train", "train", "train", "val", "test")[i % 5] for i in range(len(digits.target))]
        ),
    )
    return buffer.getvalue()


class Host:
    """One machine: its own var_dir and cache; the database, broker and store come from the environment."""

    def __init__(self, name: str, root: Path, shared: Any, env: dict[str, str]) -> None:
        from cli.stack import EmbeddedStack, free_tcp_port

        var_dir = (root / name).resolve()
        (var_dir / "logs").mkdir(parents=True)
        self.stack = EmbeddedStack(
            var_dir=var_dir,
            port=free_tcp_port(),
            database_url=shared.database_url,
            broker_url=shared.broker_url,
            queue_name=shared.queue_name,
            torch_threads=1,
            extra_env={**env, "UNLEARN_CACHE_DIR": str(var_dir / "cache")},
        )

    @property
    def var_dir(self) -> Path:
        return self.stack.var_dir

    def dataset_copy(self, content_sha256: str) -> Path:
        return self.var_dir / "cache" / "datasets" / content_sha256 / "digits.npz"


def finished(client: Any, request_id: str) -> dict[str, Any]:
    return wait_for(client, f"/v1/deletion-requests/{request_id}", FINISHED, timeout_s=300)[-1]


def test_two_workers_and_the_api_share_nothing_but_the_database_broker_and_store(
    shared_services: Any, s3_server: Any, tmp_path: Path
) -> None:
    import httpx

    from cli.stack import ensure_admin_key
    from core.db.migrate import upgrade

    bucket = s3_server.new_bucket()
    data = digits_npz()
    s3_server.put(bucket, "datasets/digits.npz", data)
    env = {
        **shared_services.env,
        **s3_server.env(),
        "UNLEARN_ARTIFACT_URL": f"s3://{bucket}/artifacts",
        "UNLEARN_DATASET_ROOTS": f"s3://{bucket}/datasets",
    }
    upgrade(shared_services.database_url)
    api, first, second = (
        Host(name, tmp_path, shared_services, env) for name in ("api", "worker-1", "worker-2")
    )
    with ExitStack() as running:
        for host in (api, first, second):
            running.callback(host.stack.stop)
        admin_key = ensure_admin_key(shared_services.database_url, api.var_dir / "admin-key")
        api.stack.start_api()
        first.stack.start_worker()
        client = httpx.Client(
            base_url=api.stack.url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=60
        )

        # The API registers the S3 dataset from its own copy and records the sha256 of the object.
        dataset = ok(
            client.post(
                "/v1/datasets",
                json={"name": "digits-s3", "format": "npz", "uri": f"s3://{bucket}/datasets/digits.npz"},
            ),
            201,
        )
        assert dataset["content_sha256"] == hashlib.sha256(data).hexdigest()
        train_ids = [
            s["sample_id"] for s in all_pages(client, f"/v1/datasets/{dataset['id']}/samples", split="train")
        ]

        # Worker 1 (the only one up) trains two models.
        models = []
        for name in ("left", "right"):
            body = {
                "name": name,
                "architecture": "mlp",
                "dataset_id": dataset["id"],
                "train": {"epochs": 3, "batch_size": 128, "lr_max": 0.1},
            }
            models.append(ok(client.post("/v1/models", json=body), 202))
        for model in models:
            state = wait_for(client, f"/v1/models/{model['id']}", {"ready", "failed"}, timeout_s=300)[-1]
            assert state["status"] == "ready", state
        assert first.dataset_copy(dataset["content_sha256"]).read_bytes() == data

        # Worker 2 alone: it has neither the dataset nor any checkpoint, and must fetch both from S3.
        first.stack.stop()
        second.stack.start_worker()
        assert not second.dataset_copy(dataset["content_sha256"]).exists()
        lone = ok(post_request(client, models[0]["id"], train_ids[:10]), 202)
        assert finished(client, lone["id"])["status"] == "succeeded"
        assert second.dataset_copy(dataset["content_sha256"]).read_bytes() == data

        # Both workers: requests on both models at once.
        first.stack.start_worker()
        batches = [(model["id"], train_ids[start : start + 10]) for model in models for start in (100, 200)]
        with ThreadPoolExecutor(max_workers=len(batches)) as pool:
            posted = list(pool.map(lambda batch: post_request(client, *batch, params=E2E_DAU), batches))
        request_ids = [lone["id"], *(ok(response, 202)["id"] for response in posted)]
        for request_id in request_ids:
            state = finished(client, request_id)
            assert state["status"] == "succeeded", state

        # Exactly once: one `request.succeeded` event per request, and its version holds its samples.
        succeeded = all_pages(client, "/v1/audit-log", event="request.succeeded")
        counts = {request_id: 0 for request_id in request_ids}
        for event in succeeded:
            counts[event["request_id"]] = counts.get(event["request_id"], 0) + 1
        assert counts == dict.fromkeys(request_ids, 1), counts
        assert ok(client.get("/v1/audit-log/verify"), 200)["ok"]

        # Every live checkpoint streams through the API with its row's sha256; retired ones are gone.
        stored = s3_server.keys(bucket, "artifacts/")
        for model in models:
            versions = all_pages(client, f"/v1/models/{model['id']}/versions")
            head = ok(client.get(f"/v1/models/{model['id']}"), 200)["head_version_id"]
            assert len(versions) >= 2
            for version in versions:
                response = client.get(f"/v1/model-versions/{version['id']}/checkpoint")
                if version["id"] != head:
                    assert response.status_code == 410, response.text
                    continue
                assert response.status_code == 200, response.text
                assert hashlib.sha256(response.content).hexdigest() == version["sha256"]
                assert response.headers["etag"] == f'"{version["sha256"]}"'
            live = [key for key in stored if key.startswith(f"artifacts/models/{model['id']}/")]
            assert len(live) == 1, f"only the head's checkpoint remains in the store: {live}"
        assert any(key.startswith("artifacts/reports/") for key in stored), "audit pages are in the store"
        page = client.get(f"/v1/deletion-requests/{lone['id']}/audit.html")
        assert page.status_code == 200 and "offline-verification" in page.text

        # No host kept an artifact of its own: everything it wrote is in the store.
        for host in (api, first, second):
            assert not (host.var_dir / "artifacts").exists(), host.var_dir
            staging = host.var_dir / "cache" / "staging"
            assert not staging.exists() or not any(staging.iterdir()), f"files left in {staging}"
        client.close()
