"""The client flow of `unlearn demo`: everything over HTTP, as a compliance system would do it.

Register the digits dataset, train a base model through a worker, ask it to forget one whole class
(every training image of a digit), poll the request with a progress bar, download the new checkpoint
and check its sha256 against the version row, fetch the HTML audit report and the signed certificate,
and print the audit before/after. Any deviation raises `DemoFailed` with what was expected.

Why a class: the digits MLP generalises almost as well as it fits (about 97% test accuracy against
100% on its training images), so forgetting a handful of random samples leaves nothing to measure: a
model that never saw them would classify them just as well, and the audit rightly shows no change.
Forgetting a class is visible and checkable in seconds: accuracy on that class must fall from about
100% to about 0 while the other classes keep theirs; `check_forgetting` enforces exactly that.
"""

from __future__ import annotations

import hashlib
import json
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
FORGET_ACCURACY_MAX = 10.0
"""Percent: after the demo, the forgotten class's training images must be recognised at most this often."""
KEPT_ACCURACY_DROP_MAX = 5.0
"""Percentage points the retain and other-class test accuracies may lose."""


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


def audit_rows(report: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(what, before, after) in percent, for the figures a reader checks first."""
    before, after = report["before"], report["after"]
    forget_class = after.get("forget_class")
    rows = [("forget set accuracy: the forgotten training images", 100 - before["UA"], 100 - after["UA"])]
    if forget_class is not None:
        rows.append(
            (
                f"class {forget_class} test accuracy (images never trained on)",
                before["forget_class_test_accuracy"],
                after["forget_class_test_accuracy"],
            )
        )
    rows += [
        ("retain accuracy: the training images kept", before["RA"], after["RA"]),
        (
            "test accuracy" + (" of the other classes" if forget_class is not None else ""),
            before["TA"],
            after["TA"],
        ),
        ("MIA efficacy: forget images judged non-members", before["MIA"], after["MIA"]),
    ]
    return rows


def audit_table(report: dict[str, Any]) -> Table:
    sizes = report["after"]["set_sizes"]
    table = Table(title=f"Audit: parent vs unlearned model ({sizes['forget']} forgotten training images)")
    table.add_column("%")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for what, before, after in audit_rows(report):
        table.add_row(what, f"{before:.1f}", f"{after:.1f}")
    return table


def check_forgetting(report: dict[str, Any]) -> list[str]:
    """What the audit of a class-forgetting request fails to show ([] when it shows the forgetting)."""
    before, after = report["before"], report["after"]
    problems = []
    forget_accuracy = 100 - after["UA"]
    if forget_accuracy > FORGET_ACCURACY_MAX:
        problems.append(f"the forgotten images are still recognised {forget_accuracy:.1f}% of the time")
    class_accuracy = after.get("forget_class_test_accuracy")
    if class_accuracy is not None and class_accuracy > FORGET_ACCURACY_MAX:
        problems.append(f"the forgotten class's test images are still recognised {class_accuracy:.1f}%")
    for metric, what in (("RA", "retain accuracy"), ("TA", "test accuracy")):
        if before[metric] - after[metric] > KEPT_ACCURACY_DROP_MAX:
            problems.append(f"{what} fell from {before[metric]:.1f}% to {after[metric]:.1f}%")
    return problems


def download(client: DemoClient, path: str, target: Path) -> Path:
    """GET `path` into `target` (a small document: the HTML report or the certificate)."""
    response = client.http.get(path)
    if response.status_code != 200:
        _check(response, 200)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(response.content)
    return target


def run_demo(
    base_url: str,
    api_key: str,
    var_dir: Path,
    console: Console,
    *,
    forget_class: int,
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

    body = {
        "model_id": model["id"],
        "class": forget_class,
        "method": "dau",
        "external_ref": f"demo-{uuid.uuid4().hex[:8]}",
    }
    created = client.http.post(
        "/v1/deletion-requests", json=body, headers={"Idempotency-Key": str(uuid.uuid4())}
    )
    request = _check(created, 202)
    console.print(
        f"deletion request [bold]{request['id']}[/bold]: forget every training image of digit "
        f"{forget_class} (DAU): {request['status']}, due {request['due_at']}"
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

    downloads = var_dir / "downloads"
    version = client.get(f"/v1/model-versions/{request['result_version_id']}")
    path, sha256, etag = download_checkpoint(client, version, downloads)
    if sha256 != version["sha256"] or etag != version["sha256"]:
        raise DemoFailed(
            f"checkpoint {path}: sha256 {sha256}, ETag {etag}, version row says {version['sha256']}"
        )
    console.print(
        f"new version {version['number']} ({version['id']}) downloaded: "
        f"sha256 {sha256[:16]}... matches the version row and the ETag"
    )

    audit = client.get(f"/v1/deletion-requests/{request['id']}/audit")["report"]
    console.print(audit_table(audit))
    problems = check_forgetting(audit)
    if problems:
        raise DemoFailed("the audit does not show the class forgotten: " + "; ".join(problems))

    links = request["links"]
    html_url = f"{links['self']}/audit.html"
    certificate_url = f"{links['self']}/certificate"
    html = download(client, html_url, downloads / f"{request['id']}.audit.html")
    certificate_path = download(client, certificate_url, downloads / f"{request['id']}.certificate.json")
    certificate = json.loads(certificate_path.read_bytes())
    verdict = _check(client.http.post("/v1/certificates/verify", json=certificate), 200)
    if verdict.get("valid") is not True:
        raise DemoFailed(f"the service does not verify its own certificate: {verdict}")
    console.print(f"evidence (GET with the API key; a copy of each saved in {downloads}):", soft_wrap=True)
    for what, url, saved in (
        ("HTML audit report", html_url, html),
        ("signed certificate (verified)", certificate_url, certificate_path),
        ("new checkpoint (safetensors)", links["checkpoint"], path),
    ):
        console.print(f"  {what:<30} GET {url}  ->  {saved.name}", soft_wrap=True, highlight=False)
    return {
        "dataset": dataset,
        "model": model,
        "request": request,
        "version": version,
        "audit": audit,
        "checkpoint": str(path),
        "html_report": str(html),
        "certificate": str(certificate_path),
    }
