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

    # The parent still holds the forgotten samples: retired at the commit, never served again, its file
    # purged by the worker right after that commit (the request reads `succeeded` in between).
    parent_id = next(version for version in versions if version["number"] == 1)["id"]
    deadline = time.monotonic() + 60
    while (parent := ok(client.get(f"/v1/model-versions/{parent_id}"), 200))["state"] != "purged":
        assert parent["state"] == "retired" and time.monotonic() < deadline, parent
        time.sleep(0.2)
    assert parent["retired_by"] == new["id"]

    # The killed attempt left no checkpoint behind; the survivor's is the version's.
    artifacts = embedded_stack.var_dir / "artifacts" / "models" / model["id"]
    attempt_files = sorted(path.name for path in artifacts.glob(f"{new['job_id']}-a*.safetensors"))
    assert attempt_files == [f"{new['job_id']}-a2.safetensors"]
    gone = client.get(f"/v1/model-versions/{parent['id']}/checkpoint")
    assert gone.status_code == 410 and new["id"] in gone.json()["detail"]
    assert not any(artifacts.glob(f"*{parent['job_id']}*")), "the retired version's file is purged"
    head = client.get(f"/v1/models/{model['id']}/checkpoint")
    assert head.status_code == 200 and head.headers["etag"] == f'"{new["sha256"]}"'


GRACE_S = 6.0


def test_worker_killed_before_a_due_purge_purges_once_it_recovers(embedded_stack_with: Any) -> None:
    """Killed between the commit of the new version and the purge of the retired one (the purge waits
    for its grace): the retired checkpoint is never served meanwhile, and the next worker purges it."""
    stack = embedded_stack_with({"UNLEARN_RETIRED_VERSION_GRACE_S": str(GRACE_S)})
    client = admin_client(stack)
    model, train_ids = trained_digits_model(client)
    parent_id = model["head_version_id"]
    parent_file = stack.var_dir / "artifacts" / "models" / model["id"]
    parent_files_before = {path.name for path in parent_file.glob("*.safetensors")}

    created = ok(post_request(client, model["id"], train_ids[:10]), 202)
    wait_for(client, f"/v1/deletion-requests/{created['id']}", {"succeeded"}, timeout_s=120)
    worker = stack.child("worker")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)

    parent = ok(client.get(f"/v1/model-versions/{parent_id}"), 200)
    assert parent["state"] == "retired", "the kill came before the purge was due"
    assert client.get(f"/v1/model-versions/{parent_id}/checkpoint").status_code == 410
    time.sleep(max(0.0, GRACE_S - 1))
    still_there = {path.name for path in parent_file.glob("*.safetensors")} & parent_files_before
    assert still_there, "no worker ran: the due purge has not happened yet"

    stack.start_worker()  # its reaper purges what is due on its first pass
    deadline = time.monotonic() + 60
    while ok(client.get(f"/v1/model-versions/{parent_id}"), 200)["state"] != "purged":
        assert time.monotonic() < deadline, "the recovered worker did not purge the retired version"
        time.sleep(0.2)
    assert not {path.name for path in parent_file.glob("*.safetensors")} & parent_files_before
    events = [event["event"] for event in all_pages(client, "/v1/audit-log", model_id=model["id"])]
    assert events.count("version.retired") == 1 and events.count("checkpoint.purged") == 1
