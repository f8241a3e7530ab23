"""The whole service over HTTP with real processes: uvicorn, a Celery worker, Redis, a database.

One test walks the life of a model: register digits, train a base model on the worker, forget 20
samples (queued -> running with progress -> succeeded), download and verify the checkpoint, read the
audit, forget 20 more on top of the new head (its retain set excludes the first 20), and get a clear
problem+json refusal for an ID that is already forgotten.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from e2e_client import (
    admin_client,
    all_pages,
    download,
    ids_digest,
    ok,
    post_request,
    trained_digits_model,
    unlearn,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_deletion_requests_end_to_end(stack: Any, callback_receiver: Any, tmp_path: Path) -> None:
    client = admin_client(stack)
    model, train_ids = trained_digits_model(client)
    base_version_id = model["head_version_id"]

    # First request: queued -> running with progress -> succeeded, on the base version.
    first_ids = train_ids[:20]
    first, states = unlearn(client, model["id"], first_ids)
    running = [state for state in states if state["status"] == "running"]
    assert running, f"never saw the request running: {[state['status'] for state in states]}"
    assert any(0 < state["progress"] < 1 for state in running), [state["progress"] for state in running]
    assert [state["progress"] for state in running] == sorted(state["progress"] for state in running)
    assert first["progress"] == 1.0 and first["finished_at"] is not None

    version = ok(client.get(f"/v1/model-versions/{first['result_version_id']}"), 200)
    assert (version["parent_id"], version["number"], version["forgotten_count"]) == (base_version_id, 2, 20)
    sha256, etag = download(client, version, tmp_path / "first.safetensors")
    assert sha256 == version["sha256"] == etag

    from models.checkpoint import load_checkpoint

    loaded = load_checkpoint(tmp_path / "first.safetensors")
    assert loaded.metadata["job_id"] == version["job_id"] and loaded.model.spec.architecture == "mlp"

    audit = ok(client.get(f"/v1/deletion-requests/{first['id']}/audit"), 200)
    report = audit["report"]
    assert audit["version_id"] == version["id"]
    for side in ("before", "after"):
        for metric in ("UA", "RA", "TA", "MIA"):
            assert isinstance(report[side][metric], float) and 0 <= report[side][metric] <= 100
    provenance = report["provenance"]
    assert provenance["parent"]["version_id"] == base_version_id
    assert provenance["new"]["version_id"] == version["id"] and provenance["new"]["sha256"] == sha256
    assert provenance["sets"]["forget"] == 20
    assert provenance["sets"]["retain_ids_sha256"] == ids_digest(set(train_ids) - set(first_ids))

    # Second request: runs on the new head; its retain set excludes the first request's IDs.
    second_ids = train_ids[20:40]
    second, _ = unlearn(client, model["id"], second_ids, callback_url=callback_receiver.url)
    second_version = ok(client.get(f"/v1/model-versions/{second['result_version_id']}"), 200)
    assert (second_version["parent_id"], second_version["number"]) == (version["id"], 3)
    assert second_version["forgotten_count"] == 40
    second_report = ok(client.get(f"/v1/deletion-requests/{second['id']}/audit"), 200)["report"]
    sets = second_report["provenance"]["sets"]
    assert second_report["provenance"]["parent"] == {"version_id": version["id"], "sha256": version["sha256"]}
    assert sets["excluded_tombstones"] == 20
    assert sets["retain"] == len(train_ids) - 40
    assert sets["forget_ids_sha256"] == ids_digest(set(second_ids))
    assert sets["retain_ids_sha256"] == ids_digest(set(train_ids) - set(first_ids) - set(second_ids))
    assert ok(client.get(f"/v1/models/{model['id']}"), 200)["head_version_id"] == second_version["id"]

    # Naming an already-forgotten ID is refused, clearly, and nothing is queued.
    refused = post_request(client, model["id"], [first_ids[3], train_ids[100]])
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["status"] == 422 and "already forgotten" in problem["detail"]
    assert [(error["field"], error["value"]) for error in problem["errors"]] == [("sample_ids", first_ids[3])]
    assert first["id"] in problem["errors"][0]["message"]
    listed = all_pages(client, "/v1/deletion-requests", model_id=model["id"])
    assert sorted(request["id"] for request in listed) == sorted([first["id"], second["id"]])

    # The second request's status changes reached its callback URL, signed, in order (the outbox rows of
    # the API's `queued` and the worker's `running` and `succeeded`, delivered by the worker). At least
    # once: a receiver drops a repeated X-Unlearn-Delivery.
    from core.callbacks import DELIVERY_HEADER, SIGNATURE_HEADER, verify_signature

    def deliveries() -> dict[str, bytes]:
        return {headers[DELIVERY_HEADER]: body for body, headers in list(callback_receiver.received)}

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(deliveries()) < 3:
        time.sleep(0.1)
    statuses = []
    for body, headers in callback_receiver.received:
        assert verify_signature(body, headers[SIGNATURE_HEADER], stack.extra_env["UNLEARN_SERVER_SECRET"])
        resource = json.loads(body)
        assert resource["id"] == second["id"]
        if not statuses or headers[DELIVERY_HEADER] != statuses[-1][0]:
            statuses.append((headers[DELIVERY_HEADER], resource["status"]))
    assert [status for _, status in statuses] == ["queued", "running", "succeeded"], statuses

    verify = ok(client.get("/v1/audit-log/verify"), 200)
    assert verify["ok"] is True
