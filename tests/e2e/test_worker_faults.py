"""A worker SIGKILLed in the middle of a job (real processes): a new worker finishes the request, exactly
one new version and one set of tombstones exist, and the audit log records the retry."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from e2e_client import E2E_DAU, admin_client, all_pages, ok, post_request, trained_digits_model, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LONG_DAU = {**E2E_DAU, "iterations": 100, "eval_every": 50}
"""Long enough (several seconds) to be killed mid-game; the second attempt runs the same budget."""


def test_sigkill_mid_job_is_recovered_exactly_once(embedded_stack: Any) -> None:
    client = admin_client(embedded_stack)
    model, train_ids = trained_digits_model(client)
    forget = train_ids[:20]

    created = ok(post_request(client, model["id"], forget, params=LONG_DAU), 202)
    path = f"/v1/deletion-requests/{created['id']}"
    deadline = time.monotonic() + 120
    while True:
        state = ok(client.get(path), 200)
        if state["status"] == "running" and state["progress"] > 0.1:
            break
        assert state["status"] in ("queued", "running") and time.monotonic() < deadline, state
        time.sleep(0.05)

    worker = embedded_stack.child("worker")
    os.killpg(worker.pid, signal.SIGKILL)  # the main process and its pool child, no goodbye
    worker.process.wait(timeout=10)
    assert ok(client.get(path), 200)["status"] == "running", "the DB still says running: nobody told it"

    embedded_stack.start_worker()  # its reaper finds the stale heartbeat and re-enqueues the job
    final = wait_for(client, path, {"succeeded", "failed", "cancelled"}, timeout_s=180)[-1]
    assert final["status"] == "succeeded", final

    versions = all_pages(client, f"/v1/models/{model['id']}/versions")
    assert sorted(version["number"] for version in versions) == [1, 2]
    new = next(version for version in versions if version["number"] == 2)
    assert new["id"] == final["result_version_id"] and new["forgotten_count"] == len(forget)

    events = all_pages(client, "/v1/audit-log", model_id=model["id"])
    job_events = [event for event in events if event["job_id"] == new["job_id"]]
    started = [event["data"]["attempt"] for event in job_events if event["event"] == "job.started"]
    retried = [event for event in job_events if event["event"] == "job.retried"]
    assert started == [1, 2]
    assert len(retried) == 1 and retried[0]["data"]["reason"] == "previous worker stopped heartbeating"
    assert [event["event"] for event in events].count("version.created") == 2  # training + this job
    assert ok(client.get("/v1/audit-log/verify"), 200)["ok"] is True

    # The killed attempt left no checkpoint behind; the survivor's is the version's.
    artifacts = embedded_stack.var_dir / "artifacts" / "models" / model["id"]
    attempt_files = sorted(path.name for path in artifacts.glob(f"{new['job_id']}-a*.safetensors"))
    assert attempt_files == [f"{new['job_id']}-a2.safetensors"]
