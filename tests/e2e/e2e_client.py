"""HTTP helpers the end-to-end tests share: JSON with status checks, pagination, polling, unlearning."""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

E2E_DAU = {
    "iterations": 20,
    "attacker_warmup": 20,
    "batch_size": 64,
    "eval_every": 5,
    "stop_patience": 100,
    "attacker": {"token_dim": 16, "layers": 1, "heads": 2, "ff_dim": 32, "hidden_dim": 16},
}
"""Small but not instant: long enough (a few seconds) for the test to watch the request running."""

FINISHED = {"succeeded", "failed", "cancelled"}


def ids_digest(sample_ids: set[str]) -> str:
    """What the worker records as retain_ids_sha256 (see core.jobs.artifacts.ids_digest)."""
    return hashlib.sha256("\n".join(sorted(sample_ids)).encode()).hexdigest()


def ok(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: {response.text}"
    )
    return response.json()


def all_pages(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = ok(
            client.get(path, params={**params, "limit": 500, **({"cursor": cursor} if cursor else {})}), 200
        )
        items += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def wait_for(
    client: httpx.Client, path: str, until: set[str], timeout_s: float = 180
) -> list[dict[str, Any]]:
    """Poll `path` every 50 ms until its status is in `until`; returns every state seen."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = ok(client.get(path), 200)
        seen.append(state)
        if state["status"] in until:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"{path} still {seen[-1]['status']} after {timeout_s} s: {seen[-1]}")


def admin_client(stack: Any) -> httpx.Client:
    return httpx.Client(
        base_url=stack.url, headers={"Authorization": f"Bearer {stack.admin_key}"}, timeout=30
    )


def trained_digits_model(client: httpx.Client) -> tuple[dict[str, Any], list[str]]:
    """Register digits and train a small MLP on the worker; returns the ready model and the train IDs."""
    dataset = ok(client.post("/v1/datasets", json={"name": "digits", "format": "digits"}), 201)
    samples = all_pages(client, f"/v1/datasets/{dataset['id']}/samples", split="train")
    train_ids = [sample["sample_id"] for sample in samples]
    assert len(train_ids) == dataset["split_counts"]["train"]
    body = {
        "name": "digits-mlp",
        "architecture": "mlp",
        "dataset_id": dataset["id"],
        "train": {"epochs": 4, "batch_size": 128, "lr_max": 0.1},
    }
    model = ok(client.post("/v1/models", json=body), 202)
    model = wait_for(client, f"/v1/models/{model['id']}", {"ready", "failed"})[-1]
    assert model["status"] == "ready", model
    return model, train_ids


def post_request(
    client: httpx.Client,
    model_id: str,
    sample_ids: list[str],
    callback_url: str | None = None,
    params: dict[str, Any] | None = None,
) -> httpx.Response:
    body = {"model_id": model_id, "sample_ids": sample_ids, "method": "dau", "params": params or E2E_DAU}
    if callback_url is not None:
        body["callback_url"] = callback_url
    return client.post("/v1/deletion-requests", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})


def unlearn(
    client: httpx.Client, model_id: str, sample_ids: list[str], callback_url: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    created = post_request(client, model_id, sample_ids, callback_url)
    body = ok(created, 202)
    assert body["status"] == "queued"
    assert created.headers["location"] == f"/v1/deletion-requests/{body['id']}"
    states = wait_for(client, f"/v1/deletion-requests/{body['id']}", FINISHED)
    final = states[-1]
    assert final["status"] == "succeeded", final
    return final, states


def download(client: httpx.Client, version: dict[str, Any], target: Path) -> tuple[str, str]:
    digest = hashlib.sha256()
    with client.stream("GET", f"/v1/model-versions/{version['id']}/checkpoint") as response:
        assert response.status_code == 200
        etag = response.headers["etag"].strip('"')
        assert int(response.headers["content-length"]) == version["size_bytes"]
        with target.open("wb") as handle:
            for chunk in response.iter_bytes():
                digest.update(chunk)
                handle.write(chunk)
    return digest.hexdigest(), etag
