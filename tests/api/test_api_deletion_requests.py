"""Deletion requests: creation (202 + Location + enqueue), idempotency, validation, status, cancel, lists."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from api_helpers import assert_problem, count_rows
from sqlalchemy import select, text

from core.db import DeletionRequest, ForgottenSample, RequestStatus, session_scope


def post(client, headers, body, key=None):
    extra = {"Idempotency-Key": key} if key else {}
    return client.post("/v1/deletion-requests", json=body, headers={**headers, **extra})


def test_create_returns_202_location_and_enqueues_the_model(client, keys, ready_model, enqueued, db) -> None:
    body = {
        "model_id": ready_model.model_id,
        "sample_ids": ready_model.train_ids[:20],
        "external_ref": "gdpr-1",
    }
    response = post(client, keys.headers("writer"), body)
    assert response.status_code == 202, response.text
    created = response.json()
    assert response.headers["location"] == f"/v1/deletion-requests/{created['id']}"
    assert created["status"] == "queued" and created["progress"] == 0 and created["sample_count"] == 20
    assert created["method"] == "dau" and created["class"] is None and created["overdue"] is False
    received = datetime.fromisoformat(created["received_at"])
    due = datetime.fromisoformat(created["due_at"])
    assert timedelta(days=28) <= due - received <= timedelta(days=31)
    assert enqueued.calls == [("worker.process_model", ready_model.model_id)]
    with session_scope(db, readonly=True) as session:
        events = (
            session.execute(
                text("SELECT event FROM audit_events WHERE request_id = :r"), {"r": created["id"]}
            )
            .scalars()
            .all()
        )
    assert events == ["request.received"]

    fetched = client.get(response.headers["location"], headers=keys.headers("reader"))
    assert fetched.status_code == 200 and fetched.json()["id"] == created["id"]
    assert fetched.headers["retry-after"] == "5"
    assert fetched.json()["links"]["audit"] is None


def test_class_request_by_index_and_by_name(client, admin, ready_model, db) -> None:
    by_index = post(client, admin, {"model_id": ready_model.model_id, "class": 3})
    assert by_index.status_code == 202, by_index.text
    assert by_index.json()["class"] == 3 and by_index.json()["kind"] == "class"
    by_name = post(client, admin, {"model_id": ready_model.model_id, "class": "7", "method": "dau"})
    assert by_name.status_code == 202 and by_name.json()["class"] == 7
    assert_problem(post(client, admin, {"model_id": ready_model.model_id, "class": 3}), 422, "class")


def test_idempotency_key_replays_the_same_request_and_refuses_a_different_body(
    client, admin, ready_model, enqueued, db
) -> None:
    body = {"model_id": ready_model.model_id, "sample_ids": ready_model.train_ids[:3]}
    first = post(client, admin, body, key="key-1")
    assert first.status_code == 202
    reordered = {"sample_ids": ready_model.train_ids[:3], "model_id": ready_model.model_id, "method": "dau"}
    again = post(client, admin, reordered, key="key-1")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    different = post(client, admin, {**body, "sample_ids": ready_model.train_ids[3:6]}, key="key-1")
    assert_problem(different, 422, "Idempotency-Key")
    assert count_rows(db, "deletion_requests") == 1
    assert len(enqueued.calls) == 1
    assert_problem(post(client, admin, body, key="bad key with spaces"), 422, "Idempotency-Key")


def _ids(model, start, count):
    return model.train_ids[start : start + count]


def test_unstorable_strings_and_nul_in_urls_are_refused(client, admin, ready_model, db) -> None:
    raw = b'{"model_id": "%s", "class": 1, "external_ref": "\\ud800"}' % ready_model.model_id.encode()
    response = client.post(
        "/v1/deletion-requests", content=raw, headers={**admin, "Content-Type": "application/json"}
    )
    assert_problem(response, 422, "external_ref")
    assert_problem(client.get("/v1/deletion-requests/req%00x", headers=admin), 400, "path")
    assert_problem(client.get("/v1/deletion-requests?external_ref=a%00b", headers=admin), 400, "query")
    assert_problem(post(client, admin, ["not", "an", "object"]), 422)
    assert count_rows(db, "deletion_requests") == 0


def test_already_forgotten_and_pending_ids_are_listed(client, admin, ready_model, db) -> None:
    first = post(client, admin, {"model_id": ready_model.model_id, "sample_ids": _ids(ready_model, 0, 5)})
    assert first.status_code == 202
    pending = post(client, admin, {"model_id": ready_model.model_id, "sample_ids": _ids(ready_model, 3, 4)})
    body = assert_problem(pending, 422, "sample_ids")
    flagged = {item["value"] for item in body["errors"]}
    assert flagged == set(_ids(ready_model, 3, 2))
    assert all(first.json()["id"] in item["message"] for item in body["errors"])

    with session_scope(db) as session:  # what the worker does on success: tombstones + finished request
        request = session.get(DeletionRequest, first.json()["id"])
        request.status = RequestStatus.succeeded
        session.add_all(
            ForgottenSample(
                model_id=ready_model.model_id,
                sample_id=s,
                request_id=request.id,
                version_id=ready_model.version_id,
            )
            for s in request.sample_ids
        )
    forgotten = post(client, admin, {"model_id": ready_model.model_id, "sample_ids": _ids(ready_model, 4, 3)})
    body = assert_problem(forgotten, 422, "sample_ids")
    assert [item["value"] for item in body["errors"]] == [ready_model.train_ids[4]]
    assert "already forgotten" in body["errors"][0]["message"]
    assert count_rows(db, "deletion_requests") == 1


def test_first_100_offenders_are_listed(client, admin, ready_model, settings) -> None:
    client.app.state.settings = settings.model_copy(update={"max_sample_ids": 1000})
    unknown = [f"nope/{i}" for i in range(150)]
    body = assert_problem(post(client, admin, {"model_id": ready_model.model_id, "sample_ids": unknown}), 422)
    assert len(body["errors"]) == 100 and "150 unknown" in body["detail"]


def test_model_not_ready_is_409(client, admin, ready_model, db) -> None:
    with session_scope(db) as session:
        session.execute(text("UPDATE models SET status = 'training'"))
    assert_problem(post(client, admin, {"model_id": ready_model.model_id, "class": 1}), 409, "model_id")


def test_cancel_transitions(client, admin, ready_model, db) -> None:
    queued = post(client, admin, {"model_id": ready_model.model_id, "class": 1}).json()
    cancelled = client.post(f"/v1/deletion-requests/{queued['id']}/cancel", headers=admin)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert "retry-after" not in cancelled.headers
    assert_problem(client.post(f"/v1/deletion-requests/{queued['id']}/cancel", headers=admin), 409)

    running = post(client, admin, {"model_id": ready_model.model_id, "class": 2}).json()
    with session_scope(db) as session:
        session.get(DeletionRequest, running["id"]).status = RequestStatus.running
    stopping = client.post(f"/v1/deletion-requests/{running['id']}/cancel", headers=admin)
    assert stopping.status_code == 202
    assert stopping.json()["status"] == "running" and stopping.json()["cancel_requested"] is True
    assert client.post(f"/v1/deletion-requests/{running['id']}/cancel", headers=admin).status_code == 202

    with session_scope(db) as session:
        session.get(DeletionRequest, running["id"]).status = RequestStatus.succeeded
    assert_problem(client.post(f"/v1/deletion-requests/{running['id']}/cancel", headers=admin), 409)
    assert_problem(client.post("/v1/deletion-requests/req_missing/cancel", headers=admin), 404)
    with session_scope(db, readonly=True) as session:
        events = session.execute(text("SELECT event FROM audit_events ORDER BY id")).scalars().all()
    assert events.count("request.cancelled") == 1 and events.count("request.cancel_requested") == 1


def test_list_paginates_with_signed_cursors_and_filters(client, admin, ready_model, db) -> None:
    ids = []
    for i in range(7):
        response = post(
            client,
            admin,
            {
                "model_id": ready_model.model_id,
                "sample_ids": _ids(ready_model, i, 1),
                "external_ref": "batch" if i % 2 else "solo",
            },
        )
        ids.append(response.json()["id"])
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/deletion-requests", params=params, headers=admin).json()
        seen += [item["id"] for item in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, each exactly once

    batch = client.get("/v1/deletion-requests", params={"external_ref": "batch"}, headers=admin).json()
    assert {item["id"] for item in batch["data"]} == set(ids[1::2])
    assert (
        client.get("/v1/deletion-requests", params={"status": "running"}, headers=admin).json()["data"] == []
    )
    assert_problem(
        client.get("/v1/deletion-requests", params={"status": "bogus"}, headers=admin), 422, "status"
    )


def test_tampered_or_foreign_cursors_are_400(client, admin, ready_model) -> None:
    for i in range(3):
        post(client, admin, {"model_id": ready_model.model_id, "sample_ids": _ids(ready_model, i, 1)})
    cursor = client.get("/v1/deletion-requests", params={"limit": 1}, headers=admin).json()["next_cursor"]
    payload, signature = cursor.split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    for bad in (
        f"{flipped}.{signature}",
        f"{payload}.{signature[:-1]}x",
        "garbage",
        f"{payload}.",
        "Zm9v.YmFy",
    ):
        response = client.get("/v1/deletion-requests", params={"limit": 1, "cursor": bad}, headers=admin)
        assert_problem(response, 400, "cursor")
    other_filters = {"limit": 1, "cursor": cursor, "status": "queued"}
    assert_problem(client.get("/v1/deletion-requests", params=other_filters, headers=admin), 400, "cursor")
    other_list = client.get("/v1/audit-log", params={"cursor": cursor}, headers=admin)
    assert_problem(other_list, 400, "cursor")


def test_overdue_filter(client, admin, ready_model, db) -> None:
    late = post(client, admin, {"model_id": ready_model.model_id, "class": 1}).json()
    on_time = post(client, admin, {"model_id": ready_model.model_id, "class": 2}).json()
    done_late = post(client, admin, {"model_id": ready_model.model_id, "class": 3}).json()
    past = datetime.now(UTC) - timedelta(days=2)
    with session_scope(db) as session:
        for request_id, status in (
            (late["id"], RequestStatus.running),
            (done_late["id"], RequestStatus.succeeded),
        ):
            row = session.get(DeletionRequest, request_id)
            row.due_at, row.status = past, status
    overdue = client.get("/v1/deletion-requests", params={"overdue": "true"}, headers=admin).json()["data"]
    assert [item["id"] for item in overdue] == [late["id"]] and overdue[0]["overdue"] is True
    not_overdue = client.get("/v1/deletion-requests", params={"overdue": "false"}, headers=admin).json()[
        "data"
    ]
    assert {item["id"] for item in not_overdue} == {on_time["id"], done_late["id"]}


def test_audit_report_is_404_until_written_then_served(client, keys, ready_model, db) -> None:
    from core.db import AuditReport

    created = post(client, keys.headers("admin"), {"model_id": ready_model.model_id, "class": 4}).json()
    auditor = keys.headers("auditor")
    assert_problem(client.get(f"/v1/deletion-requests/{created['id']}/audit", headers=auditor), 404)
    assert_problem(client.get("/v1/deletion-requests/req_missing/audit", headers=auditor), 404)
    report = {"parent": {"UA": 1.0, "MIA": 50.0}, "new": {"UA": 12.5, "MIA": 49.0}}
    with session_scope(db) as session:
        row = session.get(DeletionRequest, created["id"])
        row.status, row.result_version_id, row.finished_at = (
            RequestStatus.succeeded,
            ready_model.version_id,
            datetime.now(UTC),
        )
        session.add(AuditReport(request_id=row.id, version_id=ready_model.version_id, report=report))
    served = client.get(f"/v1/deletion-requests/{created['id']}/audit", headers=auditor)
    assert served.status_code == 200 and served.json()["report"] == report
    resource = client.get(f"/v1/deletion-requests/{created['id']}", headers=keys.headers("admin"))
    assert "retry-after" not in resource.headers
    links = resource.json()["links"]
    assert links["audit"] == f"/v1/deletion-requests/{created['id']}/audit"
    assert links["checkpoint"] == f"/v1/model-versions/{ready_model.version_id}/checkpoint"


def test_unknown_request_is_404(client, admin) -> None:
    assert_problem(client.get("/v1/deletion-requests/req_nope", headers=admin), 404, "id")


@pytest.mark.parametrize(
    "moment,expected",
    [
        (datetime(2025, 1, 31, 12, tzinfo=UTC), datetime(2025, 2, 28, 12, tzinfo=UTC)),
        (datetime(2024, 1, 31, tzinfo=UTC), datetime(2024, 2, 29, tzinfo=UTC)),
        (datetime(2025, 12, 15, tzinfo=UTC), datetime(2026, 1, 15, tzinfo=UTC)),
    ],
)
def test_due_date_is_one_calendar_month_later(moment, expected) -> None:
    from app.deletion.service import add_one_month

    assert add_one_month(moment) == expected


def test_dau_on_the_condensed_retain_set_is_accepted_and_stored(client, admin, ready_model, db) -> None:
    params = {"retain_source": "condensed", "condense": {"images_per_subclass": 5}}
    body = {"model_id": ready_model.model_id, "class": 1, "method": "dau", "params": params}
    response = post(client, admin, body)
    assert response.status_code == 202, response.text
    with session_scope(db, readonly=True) as session:
        row = session.execute(
            select(DeletionRequest).where(DeletionRequest.id == response.json()["id"])
        ).scalar_one()
    assert row.method == "dau" and row.params == params


def test_request_rows_hold_what_the_worker_needs(client, admin, ready_model, db, monkeypatch) -> None:
    import socket

    public = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: public)  # the hook's host is public
    body = {
        "model_id": ready_model.model_id,
        "sample_ids": _ids(ready_model, 0, 2),
        "params": {"reference": "retrain"},
        "callback_url": "https://compliance.example/hook",
    }
    created = post(client, admin, body, key="k-42").json()
    with session_scope(db, readonly=True) as session:
        row = session.execute(select(DeletionRequest).where(DeletionRequest.id == created["id"])).scalar_one()
    assert row.kind == "samples" and row.sample_ids == _ids(ready_model, 0, 2) and row.forget_class is None
    assert (
        row.params == {"reference": "retrain"}
        and row.idempotency_key == "k-42"
        and len(row.request_hash) == 64
    )
    assert row.callback_url == "https://compliance.example/hook" and row.cancel_requested is False
    assert row.due_at > row.received_at and row.received_at.tzinfo is not None
