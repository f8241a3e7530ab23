"""The write path: pending rows instead of a scan of every pending request, the batch endpoint, the audit
chain's group commit, cached keys, per-key rate limits and 503 (never 500) while the database or the
broker is unreachable. No test here times anything (bench/load_api.py measures)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from api_helpers import assert_problem, count_rows
from fastapi.testclient import TestClient
from sqlalchemy import event, select, text

from core import lifecycle
from core.db import DeletionRequest, PendingItem, session_scope, utcnow, verify_audit_chain


def post(client: TestClient, headers: dict[str, str], body: Any, key: str | None = None) -> Any:
    extra = {"Idempotency-Key": key} if key else {}
    return client.post("/v1/deletion-requests", json=body, headers={**headers, **extra})


def post_batch(client: TestClient, headers: dict[str, str], items: list[Any], key: str | None = None) -> Any:
    extra = {"Idempotency-Key": key} if key else {}
    return client.post("/v1/deletion-requests/batch", json={"requests": items}, headers={**headers, **extra})


def pending(db: str) -> set[tuple[str, str, str]]:
    with session_scope(db, readonly=True) as session:
        rows = session.execute(select(PendingItem.kind, PendingItem.item, PendingItem.request_id))
        return {tuple(row) for row in rows}  # type: ignore[misc]


# -- pending rows ---------------------------------------------------------------------------------------


def test_a_request_holds_its_ids_until_it_leaves_the_active_statuses(client, admin, ready_model, db) -> None:
    ids = ready_model.train_ids[:3]
    created = post(client, admin, {"model_id": ready_model.model_id, "sample_ids": ids}).json()
    by_class = post(client, admin, {"model_id": ready_model.model_id, "class": 4}).json()
    assert pending(db) == {("s", sid, created["id"]) for sid in ids} | {("c", "4", by_class["id"])}

    assert client.post(f"/v1/deletion-requests/{by_class['id']}/cancel", headers=admin).status_code == 200
    assert pending(db) == {("s", sid, created["id"]) for sid in ids}
    with session_scope(db) as session:  # what the worker's transitions do: claim, retry, then fail
        row = session.get(DeletionRequest, created["id"])
        job = lifecycle.job_created(session, ready_model.model_id, "unlearn")
        lifecycle.request_started(row, job, utcnow())
    assert len(pending(db)) == 3, "a running request still holds its ids"
    with session_scope(db) as session:
        lifecycle.request_requeued(session.get(DeletionRequest, created["id"]), "retrying", keep_job=True)
    assert len(pending(db)) == 3, "a request back in the queue still holds its ids"
    with session_scope(db) as session:
        lifecycle.request_failed(
            session, session.get(DeletionRequest, created["id"]), {}, utcnow(), actor="t"
        )
    assert pending(db) == set()
    again = post(client, admin, {"model_id": ready_model.model_id, "sample_ids": ids})
    assert again.status_code == 202, "ids of a failed request can be requested again"


def test_a_pending_class_holds_its_samples_and_itself(client, admin, ready_model, db) -> None:
    from core.db import Sample

    with session_scope(db, readonly=True) as session:
        labels = dict(
            session.execute(
                select(Sample.sample_id, Sample.label).where(Sample.sample_id.in_(ready_model.train_ids[:40]))
            ).all()
        )
    threes = [sid for sid in ready_model.train_ids[:40] if labels[sid] == 3]
    others = [sid for sid in ready_model.train_ids[:40] if labels[sid] != 3][:2]
    held = post(client, admin, {"model_id": ready_model.model_id, "class": 3}).json()
    body = assert_problem(
        post(client, admin, {"model_id": ready_model.model_id, "sample_ids": [*others, threes[0]]}), 422
    )
    assert [item["value"] for item in body["errors"]] == [threes[0]]
    assert held["id"] in body["errors"][0]["message"]
    assert_problem(post(client, admin, {"model_id": ready_model.model_id, "class": "3"}), 422, "class")
    assert post(client, admin, {"model_id": ready_model.model_id, "sample_ids": others}).status_code == 202


def test_the_overlap_check_costs_the_same_with_many_pending_requests(client, admin, ready_model, db) -> None:
    """The statements a POST sends do not depend on how many requests are pending (no scan of them)."""
    from core.db.session import get_engine

    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    def post_and_count(sample_id: str) -> list[str]:
        statements.clear()
        event.listen(get_engine(db), "before_cursor_execute", record)
        try:
            assert post(
                client, admin, {"model_id": ready_model.model_id, "sample_ids": [sample_id]}
            ).status_code
        finally:
            event.remove(get_engine(db), "before_cursor_execute", record)
        return [" ".join(s.split())[:48] for s in statements]

    first = post_and_count(ready_model.train_ids[0])
    items = [{"model_id": ready_model.model_id, "sample_ids": [sid]} for sid in ready_model.train_ids[1:301]]
    assert post_batch(client, admin, items).json()["accepted"] == 300
    assert post_and_count(ready_model.train_ids[301]) == first
    reads = [s for s in statements if s.startswith("SELECT") and "FROM deletion_requests" in s]
    assert reads == [], "no request is read to check the overlap"


# -- batch ----------------------------------------------------------------------------------------------


def test_batch_answers_each_item_and_stores_the_accepted_ones(
    client, admin, ready_model, enqueued, db
) -> None:
    ids = ready_model.train_ids
    items: list[Any] = [
        {"model_id": ready_model.model_id, "sample_ids": ids[0:2], "external_ref": "a"},
        {"model_id": ready_model.model_id, "sample_ids": [ids[1], ids[2]], "external_ref": "b"},
        {"model_id": ready_model.model_id, "sample_ids": ["nope"], "external_ref": "c"},
        {"model_id": "mdl_missing", "sample_ids": ids[3:4], "external_ref": "d"},
        "not an object",
        {"model_id": ready_model.model_id, "class": 2, "method": "nope", "external_ref": "f"},
        {"model_id": ready_model.model_id, "class": 5, "external_ref": "g"},
        {"model_id": ready_model.model_id, "class": 5, "external_ref": "h"},
    ]
    response = post_batch(client, admin, items)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["accepted"], answer["refused"], answer["replayed"]) == (2, 6, False)
    results = answer["results"]
    assert [r["index"] for r in results] == list(range(8))
    assert [r["status"] for r in results] == [202, 422, 422, 422, 422, 422, 202, 422]
    assert [r["external_ref"] for r in results] == ["a", "b", "c", "d", None, "f", "g", "h"]
    assert results[0]["request"]["status"] == "queued" and results[6]["request"]["class"] == 5
    fields = [[e["field"] for e in r["problem"]["errors"]] for r in results if r["problem"]]
    assert fields == [
        ["requests.1.sample_ids"],
        ["requests.2.sample_ids"],
        ["requests.3.model_id"],
        ["requests.4"],
        ["requests.5.method"],
        ["requests.7.class"],
    ]
    assert "requested by item 0 of this batch" in results[1]["problem"]["errors"][0]["message"]
    assert all(r["problem"]["type"].startswith("urn:unlearn:problem:") for r in results if r["problem"])
    assert count_rows(db, "deletion_requests") == 2
    assert enqueued.calls == [("worker.process_model", ready_model.model_id)], "one enqueue per model"
    with session_scope(db, readonly=True) as session:
        received = session.execute(text("SELECT COUNT(*) FROM audit_events WHERE event = 'request.received'"))
        assert received.scalar_one() == 2 and verify_audit_chain(session).ok


def test_batch_is_idempotent_as_a_whole(client, admin, ready_model, enqueued, db) -> None:
    items = [
        {"model_id": ready_model.model_id, "sample_ids": [sid], "external_ref": f"r{i}"}
        for i, sid in enumerate(ready_model.train_ids[:5])
    ] + [{"model_id": ready_model.model_id, "sample_ids": ["nope"]}]
    first = post_batch(client, admin, items, key="batch-1")
    assert first.json()["accepted"] == 5
    again = post_batch(client, admin, items, key="batch-1")
    assert again.status_code == 200 and again.json()["replayed"] is True

    def outcomes(answer: dict[str, Any]) -> list[Any]:
        return [(r["status"], (r["request"] or {}).get("id"), r["problem"]) for r in answer["results"]]

    assert outcomes(again.json()) == outcomes(first.json())
    assert count_rows(db, "deletion_requests") == 5 and len(enqueued.calls) == 1
    assert_problem(post_batch(client, admin, items[:2], key="batch-1"), 422, "Idempotency-Key")
    assert count_rows(db, "deletion_requests") == 5


def test_batch_envelope_errors_write_nothing(client, admin, ready_model, settings, db) -> None:
    one = {"model_id": ready_model.model_id, "sample_ids": ready_model.train_ids[:1]}
    events = count_rows(db, "audit_events")
    client.app.state.settings = settings.model_copy(update={"max_batch_requests": 3})
    assert_problem(post_batch(client, admin, [one] * 4), 413, "requests")
    assert_problem(post_batch(client, admin, []), 422, "requests")
    assert_problem(client.post("/v1/deletion-requests/batch", json={"items": [one]}, headers=admin), 422)
    assert_problem(post_batch(client, admin, [one], key="bad key"), 422, "Idempotency-Key")
    assert count_rows(db, "deletion_requests") == 0 and count_rows(db, "audit_events") == events


# -- audit chain ----------------------------------------------------------------------------------------


def test_answered_requests_are_in_the_chain_and_appends_keep_causal_order(
    client, admin, ready_model, db
) -> None:
    from core.db import append_audit_event

    created = post(client, admin, {"model_id": ready_model.model_id, "sample_ids": ready_model.train_ids[:2]})
    with session_scope(db) as session:  # an immediate append after the request was seen (the worker)
        append_audit_event(session, "job.started", model_id=ready_model.model_id, data={})
    with session_scope(db, readonly=True) as session:
        events = session.execute(text("SELECT event, request_id FROM audit_events ORDER BY id")).all()
        assert verify_audit_chain(session).ok
    assert events[-2:] == [("request.received", created.json()["id"]), ("job.started", None)]


def test_deferred_events_are_chained_at_commit_in_order_and_dropped_on_rollback(db) -> None:
    from core.db import append_audit_event
    from core.db.audit import defer_audit

    with session_scope(db) as session:
        defer_audit(session)
        for step in range(3):
            append_audit_event(session, "request.received", request_id=f"req_{step}", data={"step": step})
        append_audit_event(session, "job.started", data={})
    try:
        with session_scope(db) as session:
            defer_audit(session)
            append_audit_event(session, "request.received", request_id="req_rolled_back", data={})
            raise RuntimeError("the transaction fails")
    except RuntimeError:
        pass
    with session_scope(db) as session:
        defer_audit(session)
        append_audit_event(session, "request.received", request_id="req_3", data={})
    with session_scope(db, readonly=True) as session:
        names = session.execute(text("SELECT request_id FROM audit_events ORDER BY id")).scalars().all()
        assert verify_audit_chain(session).ok
    assert names == ["req_0", "req_1", "req_2", None, "req_3"]


# -- keys and rate limits -------------------------------------------------------------------------------


def test_a_key_revoked_elsewhere_stops_working_within_the_cache_bound(client, keys, settings, db) -> None:
    client.app.state.settings = settings.model_copy(update={"api_key_cache_s": 0.5})
    reader = keys.headers("reader")
    assert client.get("/v1/deletion-requests", headers=reader).status_code == 200
    with session_scope(db) as session:  # as `unlearn keys revoke` in another process does
        session.execute(
            text("UPDATE api_keys SET revoked_at = :now WHERE id = :id"),
            {"now": utcnow(), "id": keys.ids["reader"]},
        )
    time.sleep(0.6)
    assert_problem(client.get("/v1/deletion-requests", headers=reader), 401)


def test_a_key_over_its_rate_limit_gets_429_with_the_limit_and_retry_after(settings, enqueued, keys) -> None:
    from app.main import create_app

    app = create_app(settings.model_copy(update={"rate_limit": "3/minute"}), enqueue=enqueued)
    with TestClient(app, raise_server_exceptions=False) as limited:
        answers = [limited.get("/v1/deletion-requests", headers=keys.headers("reader")) for _ in range(4)]
        other = limited.get("/v1/deletion-requests", headers=keys.headers("admin"))
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    body = assert_problem(answers[3], 429, "Authorization")
    assert "3 per 1 minute" in body["detail"] and int(answers[3].headers["retry-after"]) >= 1
    assert other.status_code == 200, "the limit is per key"


# -- outages --------------------------------------------------------------------------------------------


def test_every_endpoint_is_503_with_retry_after_while_the_database_is_unreachable(
    settings, enqueued, keys
) -> None:
    from app.main import create_app

    if not settings.database_url.startswith("postgresql"):
        pytest.skip("an unreachable server is a PostgreSQL URL (a SQLite file is always there)")
    from sqlalchemy.engine import make_url

    down = make_url(settings.database_url).set(port=1).render_as_string(hide_password=False)
    app = create_app(
        settings.model_copy(update={"database_url": down, "db_connect_timeout_s": 1}), enqueue=enqueued
    )
    headers = keys.headers("admin")
    calls = [
        ("GET", "/v1/deletion-requests", None),
        ("GET", "/v1/deletion-requests/req_x", None),
        ("POST", "/v1/deletion-requests", {"model_id": "m", "class": 1}),
        ("POST", "/v1/deletion-requests/batch", {"requests": [{"model_id": "m", "class": 1}]}),
        ("GET", "/v1/models", None),
        ("GET", "/v1/audit-log", None),
        ("GET", "/v1/datasets", None),
    ]
    with TestClient(app, raise_server_exceptions=False) as offline:
        for method, path, body in calls:
            response = offline.request(
                method, path, json=body, headers={"Authorization": "Bearer ulk_unknown"}
            )
            assert_problem(response, 503, "database")
            assert int(response.headers["retry-after"]) >= 1, path
        for method, path, body in calls:  # a cached key too
            response = offline.request(method, path, json=body, headers=headers)
            assert response.status_code == 503 and response.headers["retry-after"], path
        assert offline.get("/healthz").status_code == 200
        assert_problem(offline.get("/readyz"), 503)
    assert enqueued.calls == []


def test_endpoints_that_enqueue_are_503_while_the_broker_is_unreachable(
    settings, keys, ready_model, db
) -> None:
    from app.main import create_app

    app = create_app(settings.model_copy(update={"broker_breaker_s": 60}))  # the real sender, no broker
    app.state.broker_probe = lambda url: "ConnectionError: refused"
    admin = keys.headers("admin")
    with TestClient(app, raise_server_exceptions=False) as offline:
        first = post(
            offline, admin, {"model_id": ready_model.model_id, "sample_ids": ready_model.train_ids[:1]}
        )
        assert first.status_code == 202, "stored: the reaper sends its task once the broker is back"
        app.state.enqueue.flush()  # the background sender found the broker down
        refused = post(
            offline, admin, {"model_id": ready_model.model_id, "sample_ids": ready_model.train_ids[1:2]}
        )
        body = assert_problem(refused, 503, "broker")
        assert refused.headers["retry-after"] and "broker" in body["detail"]
        assert_problem(post_batch(offline, admin, [{"model_id": ready_model.model_id, "class": 1}]), 503)
        assert offline.get(first.headers["location"], headers=admin).status_code == 200, "reads go on"
        app.state.broker_breaker.cooldown_s = 0
        app.state.broker_breaker.trip("still down")
        assert_problem(post(offline, admin, {"model_id": ready_model.model_id, "class": 2}), 503)
        app.state.broker_probe = lambda url: None  # the broker is back: the probe closes the breaker
        assert post(offline, admin, {"model_id": ready_model.model_id, "class": 2}).status_code == 202
    assert count_rows(db, "deletion_requests") == 2


def test_one_enqueue_per_model_until_its_task_starts(settings, keys, ready_model, db) -> None:
    import os
    import uuid

    import redis

    from app.main import create_app
    from core.tasks import PROCESS_MODEL_TASK, clear_queued_mark

    broker = os.environ.get("UNLEARN_TEST_REDIS_URL")
    if not broker:
        pytest.skip("UNLEARN_TEST_REDIS_URL is not set: this test counts the tasks in a real Redis queue")
    queue = f"test-{uuid.uuid4().hex[:8]}"
    app = create_app(settings.model_copy(update={"broker_url": broker, "queue_name": queue}))
    admin, ids = keys.headers("admin"), ready_model.train_ids
    client = redis.Redis.from_url(broker)
    try:
        with TestClient(app, raise_server_exceptions=False) as api:
            for n in range(5):
                assert (
                    post(api, admin, {"model_id": ready_model.model_id, "sample_ids": [ids[n]]}).status_code
                    == 202
                )
                app.state.enqueue.flush()
            assert client.llen(queue) == 1, "one task while it waits"
            clear_queued_mark(broker, queue, PROCESS_MODEL_TASK, ready_model.model_id)  # the task starts
            assert (
                post(api, admin, {"model_id": ready_model.model_id, "sample_ids": [ids[9]]}).status_code
                == 202
            )
            app.state.enqueue.flush()
            assert client.llen(queue) == 2, "a request after the task started sends the next one"
    finally:
        client.delete(queue, *client.scan_iter(f"unlearn:queued:{queue}:*"))


def test_a_request_beyond_capacity_is_shed_with_503_and_retry_after(settings, enqueued, keys) -> None:
    import asyncio

    from app.main import create_app
    from app.overload import AdmissionControl

    app = create_app(
        settings.model_copy(update={"api_max_concurrency": 1, "api_max_queue": 0}), enqueue=enqueued
    )
    gate = asyncio.Event()

    @app.get("/v1/slow")
    async def slow() -> dict[str, str]:
        await gate.wait()
        return {"ok": "yes"}

    async def scenario() -> list[Any]:
        import httpx

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            first = asyncio.create_task(http.get("/v1/slow"))
            await asyncio.sleep(0.05)
            second = await http.get("/v1/datasets", headers=keys.headers("admin"))
            gate.set()
            return [await first, second]

    first, second = asyncio.run(scenario())
    assert first.status_code == 200
    body = assert_problem(second, 503, "service")
    assert second.headers["retry-after"] == "1" and "capacity" in body["detail"]
    assert AdmissionControl  # the middleware under test


def test_a_queued_request_whose_client_left_is_not_worked_on(settings) -> None:
    import asyncio
    from types import SimpleNamespace

    from app.overload import AdmissionControl, Breaker

    ran: list[str] = []
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        ran.append(scope["path"])
        body = await receive()
        assert body["body"] == b"payload"
        if scope["path"] == "/first":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    state = SimpleNamespace(db_breaker=Breaker("database", 1), broker_breaker=Breaker("broker", 1))
    gate = AdmissionControl(app, settings.model_copy(update={"api_max_concurrency": 1}), state)

    def client(gone: bool) -> Any:
        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"} if gone else {"type": "http.request", "body": b"payload"}

        return receive

    async def noop(message: Any) -> None:
        pass

    async def scenario() -> None:
        scope = {"type": "http", "method": "GET"}
        first = asyncio.create_task(gate({**scope, "path": "/first"}, client(False), noop))
        await asyncio.sleep(0.01)
        left = asyncio.create_task(gate({**scope, "path": "/left"}, client(True), noop))
        stayed = asyncio.create_task(gate({**scope, "path": "/stayed"}, client(False), noop))
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(first, left, stayed)

    asyncio.run(scenario())
    assert ran == ["/first", "/stayed"]
