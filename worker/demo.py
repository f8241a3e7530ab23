"""The client flow of `unlearn demo`: everything over HTTP, as a compliance system would do it.

Register the digits dataset, train a base model through a worker, post a deletion request for train
samples, poll it with a progress bar, download the new checkpoint and check its sha256 against the
version row, print the audit summary. Any deviation raises `DemoFailed` with what was expected.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

DEMO_DATASET_NAME = "digits"
POLL_INTERVAL_S = 0.25
TRAIN_TIMEOUT_S = 15 * 60
UNLEARN_TIMEOUT_S = 30 * 60
FINISHED = ("succeeded", "failed", "cancelled")
HEADLINE = ("UA", "RA", "TA", "MIA")


class DemoFailed(RuntimeError):
    """The demo could not complete; the message says which step and what the service answered."""


def _check(response: httpx.Response, *expected: int) -> dict[str, Any]:
    if response.status_code not in expected:
        raise DemoFailed(
            f"{response.request.method} {response.request.url.path} answered {response.status_code}, "
            f"expected {' or '.join(map(str, expected))}: {response.text[:2000]}"
        )
    body: dict[str, Any] = response.json()
    return body


class DemoClient:
    def __init__(self, base_url: str, api_key: str) -> None:
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60
        )

    def dataset(self) -> dict[str, Any]:
        """The digits dataset, registered now or by an earlier demo in the same var dir."""
        created = self.http.post("/v1/datasets", json={"name": DEMO_DATASET_NAME, "format": "digits"})
        if created.status_code == 409:
            for dataset in self.pages("/v1/datasets"):
                if dataset["name"] == DEMO_DATASET_NAME:
                    return dataset
            raise DemoFailed(f"dataset {DEMO_DATASET_NAME!r} exists (409) but is not listed")
        return _check(created, 201)

    def pages(self, path: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            page = _check(self.http.get(path, params=query), 200)
            items += page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    def train_model(self, dataset_id: str, epochs: int) -> dict[str, Any]:
        body = {
            "name": f"digits-mlp-demo-{time.strftime('%Y%m%d-%H%M%S')}",
            "architecture": "mlp",
            "dataset_id": dataset_id,
            "train": {"epochs": epochs, "batch_size": 64, "lr_max": 0.1},
        }
        return _check(self.http.post("/v1/models", json=body), 202)

    def get(self, path: str) -> dict[str, Any]:
        return _check(self.http.get(path), 200)


def _wait_for(
    poll: Callable[[], dict[str, Any]],
    done: Callable[[dict[str, Any]], bool],
    timeout_s: float,
    on_update: Callable[[dict[str, Any]], None],
    check_alive: Callable[[], None],
    what: str,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        check_alive()
        state = poll()
        on_update(state)
        if done(state):
            return state
        time.sleep(POLL_INTERVAL_S)
    raise DemoFailed(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def download_checkpoint(
    client: DemoClient, version: dict[str, Any], target_dir: Path
) -> tuple[Path, str, str]:
    """Stream the checkpoint to `target_dir`; returns (path, sha256 of the bytes, ETag header)."""
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / f"{version['id']}.safetensors"
    digest = hashlib.sha256()
    with client.http.stream("GET", f"/v1/model-versions/{version['id']}/checkpoint") as response:
        if response.status_code != 200:
            response.read()
            _check(response, 200)
        etag = response.headers.get("etag", "").strip('"')
        with path.open("wb") as handle:
            for chunk in response.iter_bytes():
                digest.update(chunk)
                handle.write(chunk)
    return path, digest.hexdigest(), etag


def audit_table(report: dict[str, Any], forget_count: int) -> Table:
    table = Table(title=f"Audit: parent vs unlearned model ({forget_count} forgotten samples)")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    meaning = {
        "UA": "100 - forget accuracy",
        "RA": "retain accuracy",
        "TA": "test accuracy",
        "MIA": "forget samples judged non-members (SVM)",
    }
    for metric in HEADLINE:
        before, after = report["before"][metric], report["after"][metric]
        table.add_row(f"{metric}  [dim]{meaning[metric]}[/dim]", f"{before:.2f}", f"{after:.2f}")
    return table


def run_demo(
    base_url: str,
    api_key: str,
    var_dir: Path,
    console: Console,
    *,
    forget_count: int,
    epochs: int,
    check_alive: Callable[[], None],
) -> dict[str, Any]:
    """The demo flow against a running stack; returns a summary (the tests read it)."""
    client = DemoClient(base_url, api_key)

    dataset = client.dataset()
    console.print(
        f"dataset [bold]{dataset['id']}[/bold]: digits, {dataset['split_counts']} samples per split"
    )

    model = client.train_model(dataset["id"], epochs)
    console.print(f"training base model [bold]{model['id']}[/bold] (MLP, {epochs} epochs) on a worker ...")
    with _progress_bar(console) as bar:
        task = bar.add_task("training", total=None)
        model = _wait_for(
            lambda: client.get(f"/v1/models/{model['id']}"),
            lambda state: state["status"] != "training",
            TRAIN_TIMEOUT_S,
            lambda state: bar.update(task, description=f"model {state['status']}"),
            check_alive,
            "the base model to train",
        )
        bar.update(task, total=1, completed=1)
    if model["status"] != "ready":
        raise DemoFailed(f"base model training ended {model['status']}: {model.get('error')}")
    base_version = client.get(f"/v1/model-versions/{model['head_version_id']}")
    console.print(
        f"base model ready: version {base_version['number']}, "
        f"test accuracy {base_version['metrics'].get('test_accuracy', float('nan')):.1f}%"
    )

    train_ids = [
        sample["sample_id"]
        for sample in _check(
            client.http.get(
                f"/v1/datasets/{dataset['id']}/samples", params={"split": "train", "limit": forget_count}
            ),
            200,
        )["data"]
    ]
    if len(train_ids) < forget_count:
        raise DemoFailed(f"asked for {forget_count} train samples, the dataset listed {len(train_ids)}")
    body = {
        "model_id": model["id"],
        "sample_ids": train_ids,
        "method": "dau",
        "external_ref": f"demo-{uuid.uuid4().hex[:8]}",
    }
    created = client.http.post(
        "/v1/deletion-requests", json=body, headers={"Idempotency-Key": str(uuid.uuid4())}
    )
    request = _check(created, 202)
    console.print(
        f"deletion request [bold]{request['id']}[/bold] for {len(train_ids)} samples "
        f"({train_ids[0]} ...): {request['status']}, due {request['due_at']}"
    )

    with _progress_bar(console) as bar:
        task = bar.add_task("queued", total=1.0)
        request = _wait_for(
            lambda: client.get(f"/v1/deletion-requests/{request['id']}"),
            lambda state: state["status"] in FINISHED,
            UNLEARN_TIMEOUT_S,
            lambda state: bar.update(
                task,
                completed=state["progress"],
                description=f"{state['status']}: {state['stage'] or ''}"[:34],
            ),
            check_alive,
            "the deletion request to finish",
        )
    if request["status"] != "succeeded":
        raise DemoFailed(f"deletion request ended {request['status']}: {request.get('error')}")

    version = client.get(f"/v1/model-versions/{request['result_version_id']}")
    path, sha256, etag = download_checkpoint(client, version, var_dir / "downloads")
    if sha256 != version["sha256"] or etag != version["sha256"]:
        raise DemoFailed(
            f"checkpoint {path}: sha256 {sha256}, ETag {etag}, version row says {version['sha256']}"
        )
    console.print(
        f"new version {version['number']} ({version['id']}) downloaded to {path}: "
        f"sha256 {sha256[:16]}... matches the version row and the ETag"
    )

    audit = client.get(f"/v1/deletion-requests/{request['id']}/audit")["report"]
    console.print(audit_table(audit, len(train_ids)))
    return {
        "dataset": dataset,
        "model": model,
        "request": request,
        "version": version,
        "audit": audit,
        "checkpoint": str(path),
    }
