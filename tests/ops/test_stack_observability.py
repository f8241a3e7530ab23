"""The real stack (uvicorn, a Celery worker, Redis, SQLite) with JSON logs and worker metrics on:

- the worker's metrics endpoint shows a queued task while the one pool process trains another model,
  a running job, then the finished jobs with their stage durations, and its heartbeat moving;
- `grep req_...` over the API's and the worker's log files follows one deletion: accepted in the API
  (under the caller's X-Request-ID), claimed, started, committed and finished in the worker.

One scenario runs once for the module (two small models and one deletion); the tests read what it saw.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from e2e_client import E2E_DAU, FINISHED, admin_client, all_pages, ok, wait_for

from cli.stack import free_tcp_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
CORRELATION_ID = "ops-e2e-correlation-1"
Figures = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Figures:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(figures: Figures, name: str, **labels: str) -> float:
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass
class Observed:
    stack: Any
    metrics_port: int
    before: Figures
    during: list[Figures] = field(default_factory=list)
    trained: Figures = field(default_factory=dict)
    after: Figures = field(default_factory=dict)
    request_id: str = ""
    model_id: str = ""


def _model_body(dataset_id: str, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "architecture": "mlp",
        "dataset_id": dataset_id,
        "train": {"epochs": 4, "batch_size": 128, "lr_max": 0.1},
    }


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, start_e2e_stack: Any) -> Iterator[Observed]:
    port = free_tcp_port()
    env = {"UNLEARN_LOG_FORMAT": "json", "UNLEARN_WORKER_METRICS_PORT": str(port)}
    with ExitStack() as cleanup:
        stack = start_e2e_stack("embedded", tmp_path_factory.mktemp("ops"), cleanup, extra_env=env)
        url = f"http://127.0.0.1:{port}/metrics"

        def scrape() -> Figures:
            return parse(httpx.get(url, timeout=10).text)

        wait_until(
            lambda: value(scrape(), "unlearn_worker_heartbeat_timestamp_seconds") > 0,
            timeout_s=60,
            what="the worker's heartbeat on its metrics port",
            check=stack.check_alive,
        )
        seen = Observed(stack, port, before=scrape())
        client = admin_client(stack)
        dataset = ok(client.post("/v1/datasets", json={"name": "digits", "format": "digits"}), 201)
        # One pool process: the second model's task waits in the queue while the first one trains.
        models = [
            ok(client.post("/v1/models", json=_model_body(dataset["id"], f"mlp-{n}")), 202) for n in (1, 2)
        ]
        while True:
            seen.during.append(scrape())
            states = [ok(client.get(f"/v1/models/{model['id']}"), 200)["status"] for model in models]
            if all(state in ("ready", "failed") for state in states):
                break
            stack.check_alive()
            time.sleep(0.05)
        assert states == ["ready", "ready"]
        seen.trained = scrape()

        model_id = seen.model_id = models[0]["id"]
        samples = all_pages(client, f"/v1/datasets/{dataset['id']}/samples", split="train")
        body = {
            "model_id": model_id,
            "sample_ids": [sample["sample_id"] for sample in samples[:20]],
            "method": "dau",
            "params": E2E_DAU,
        }
        headers = {"Idempotency-Key": uuid.uuid4().hex, "X-Request-ID": CORRELATION_ID}
        created = client.post("/v1/deletion-requests", json=body, headers=headers)
        assert created.headers["x-request-id"] == CORRELATION_ID
        seen.request_id = ok(created, 202)["id"]
        final = wait_for(client, f"/v1/deletion-requests/{seen.request_id}", FINISHED)[-1]
        assert final["status"] == "succeeded", final
        time.sleep(2.5)  # one more Celery heartbeat (every 2 s) for the heartbeat check
        seen.after = scrape()
        yield seen


def test_worker_metrics_follow_the_queue_and_the_jobs(observed: Observed) -> None:
    before, during, trained, after = observed.before, observed.during, observed.trained, observed.after
    assert value(before, "unlearn_queue_length", queue="cpu") == 0
    assert value(before, "unlearn_jobs", kind="train", status="running") == 0
    assert value(before, "unlearn_state_source_up", source="database") == 1
    assert value(before, "unlearn_state_source_up", source="broker") == 1

    assert max(value(f, "unlearn_queue_length", queue="cpu") for f in during) >= 1
    assert max(value(f, "unlearn_jobs", kind="train", status="running") for f in during) == 1
    assert value(trained, "unlearn_queue_length", queue="cpu") == 0
    assert value(trained, "unlearn_jobs", kind="train", status="running") == 0
    outcome = {"kind": "train", "method": "train", "outcome": "succeeded"}
    assert value(trained, "unlearn_jobs_finished_total", **outcome) == 2
    trains = value(trained, "unlearn_job_duration_seconds_count", kind="train", method="train", stage="total")
    assert trains == 2

    finished = value(after, "unlearn_jobs_finished_total", kind="unlearn", method="dau", outcome="succeeded")
    assert finished == 1
    for stage in ("load", "method", "save", "audit", "total"):
        count = value(after, "unlearn_job_duration_seconds_count", kind="unlearn", method="dau", stage=stage)
        assert count == 1, stage
    total = value(after, "unlearn_job_duration_seconds_sum", kind="unlearn", method="dau", stage="total")
    method = value(after, "unlearn_job_duration_seconds_sum", kind="unlearn", method="dau", stage="method")
    assert 0 < method <= total
    assert value(after, "unlearn_deletion_requests", status="queued") == 0
    assert value(after, "unlearn_deletion_request_oldest_queued_age_seconds") == 0
    assert sum(v for (name, _), v in after.items() if name == "unlearn_deletion_requests_overdue") == 0
    beat_before = value(before, "unlearn_worker_heartbeat_timestamp_seconds")
    assert value(after, "unlearn_worker_heartbeat_timestamp_seconds") > beat_before


def test_the_compose_healthcheck_of_a_worker_passes_against_a_live_worker(observed: Observed) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    worker = compose["services"]["worker-gpu-0"]
    kind, *argv = worker["healthcheck"]["test"]
    assert kind == "CMD" and argv[:2] == ["python3", "-c"]
    port = worker["environment"]["UNLEARN_WORKER_METRICS_PORT"]
    code = argv[2].replace("$$", "$").replace(f":{port}/", f":{observed.metrics_port}/")  # compose's unescape
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0
    wrong_port = code.replace(f":{observed.metrics_port}/", f":{free_tcp_port()}/")
    assert subprocess.run([sys.executable, "-c", wrong_port], timeout=30, capture_output=True).returncode != 0


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a log file, each a JSON object (a line that is not one fails the test)."""
    return [json.loads(raw) for raw in path.read_text().splitlines() if raw.strip()]


def test_grep_the_request_id_follows_one_deletion_through_api_and_worker(observed: Observed) -> None:
    logs = observed.stack.var_dir / "logs"
    request_id = observed.request_id
    api = [line for line in json_lines(logs / "api.log") if request_id in json.dumps(line)]
    worker = [line for line in json_lines(logs / "worker.log") if request_id in json.dumps(line)]
    assert request_id in (logs / "api.log").read_text() and request_id in (logs / "worker.log").read_text()

    accepted = [line for line in api if line["message"] == "deletion request accepted"]
    assert len(accepted) == 1, api
    assert accepted[0]["request_id"] == request_id and accepted[0]["model_id"] == observed.model_id
    assert accepted[0]["correlation_id"] == CORRELATION_ID and accepted[0]["service"] == "api"
    assert accepted[0]["status"] == "queued" and accepted[0]["level"] == "INFO"

    assert all(request_id in line["request_ids"] for line in worker), worker
    messages = [line["message"] for line in worker]
    job_id = worker[0]["job_id"]
    assert messages[0] == "job claimed"
    assert f"job {job_id} started (unlearn, attempt 1)" in messages
    assert any(message.startswith(f"job {job_id} committed: version ver_") for message in messages)
    assert messages[-1] == "job finished: succeeded"
    for line in worker:
        assert (line["job_id"], line["model_id"], line["attempt"]) == (job_id, observed.model_id, 1)
        assert line["service"] == "worker" and line["task"] == "worker.process_model" and line["task_id"]
