"""The callback outbox under several deliverers (SQLite, and PostgreSQL with FOR UPDATE SKIP LOCKED):
disjoint claims, a lost attempt redelivered after its lease under the same delivery id, per-request
order, and the reaper's sweep. Real HTTP receivers on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from core.callbacks import DELIVERY_HEADER, claim_due, deliver_due, lease_s
from core.db.models import CallbackDelivery
from core.netguard import parse_networks

DATASET_ID = "ds_digits_template"


@dataclass
class Receiver:
    status: int = 204
    delay_s: float = 0.0
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(delivery id, body)"""
    url: str = ""


@contextmanager
def running_receiver(state: Receiver) -> Iterator[Receiver]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            with lock:
                state.received.append((self.headers[DELIVERY_HEADER], body))
            time.sleep(state.delay_s)
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver(Receiver()) as state:
        yield state


@pytest.fixture
def outbox_settings(settings: Any) -> Any:
    return settings.model_copy(
        update={
            "callback_allow_networks": parse_networks("127.0.0.1/32"),
            "callback_attempts": 3,
            "callback_backoff_s": 0.05,
            "callback_timeout_s": 2.0,
        }
    )


@pytest.fixture
def engine(outbox_settings: Any) -> Any:
    from core.db.session import get_engine

    return get_engine(outbox_settings.database_url)


@pytest.fixture
def model_id(outbox_settings: Any) -> str:
    from core.db import Model, ModelStatus, session_scope

    with session_scope(outbox_settings.database_url) as session:
        model = Model(name="m", architecture="mlp", dataset_id=DATASET_ID, status=ModelStatus.ready)
        session.add(model)
        session.flush()
        return model.id


def new_requests(settings: Any, model_id: str, url: str, count: int = 1) -> list[str]:
    """`count` queued requests with callback URL `url`, stored the way the API stores them (their
    `queued` callbacks are written in the same transaction)."""
    from core import lifecycle
    from core.db import RequestKind, new_id, session_scope, utcnow

    now = utcnow()
    with session_scope(settings.database_url) as session:
        requests: list[dict[str, Any]] = [
            {
                "id": new_id("req"),
                "model_id": model_id,
                "kind": RequestKind.class_,
                "forget_class": index,
                "due_at": now + timedelta(days=30),
                "request_hash": "0" * 64,
                "callback_url": url,
            }
            for index in range(count)
        ]
        lifecycle.requests_received(session, requests, received_at=now)
        return [request["id"] for request in requests]


def cancel(settings: Any, request_id: str) -> None:
    from core import lifecycle
    from core.db import DeletionRequest, session_scope, utcnow

    with session_scope(settings.database_url) as session:
        request = session.get(DeletionRequest, request_id)
        assert request is not None
        lifecycle.request_cancelled(session, request, utcnow(), actor="test")


def rows(settings: Any) -> list[CallbackDelivery]:
    from core.db import session_scope

    with session_scope(settings.database_url, readonly=True) as session:
        return list(session.execute(select(CallbackDelivery).order_by(CallbackDelivery.id)).scalars())


def test_concurrent_deliverers_deliver_each_row_once(
    outbox_settings: Any, engine: Any, model_id: str, receiver: Receiver
) -> None:
    receiver.delay_s = 0.05  # deliveries overlap: both deliverers are busy at the same time
    new_requests(outbox_settings, model_id, receiver.url, count=10)
    reports = []
    deliverers = [
        threading.Thread(target=lambda: reports.append(deliver_due(engine, outbox_settings)))
        for _ in range(2)
    ]
    for deliverer in deliverers:
        deliverer.start()
    for deliverer in deliverers:
        deliverer.join(60)
    assert sum(report.delivered for report in reports) == 10
    ids = [delivery_id for delivery_id, _ in receiver.received]
    assert sorted(ids) == sorted(row.delivery_id for row in rows(outbox_settings)) and len(set(ids)) == 10
    assert {row.status for row in rows(outbox_settings)} == {"delivered"}


def test_an_attempt_lost_with_its_worker_is_made_again_after_the_lease(
    outbox_settings: Any, engine: Any, model_id: str, receiver: Receiver
) -> None:
    from core.db import utcnow

    new_requests(outbox_settings, model_id, receiver.url)
    (claimed,) = claim_due(engine, outbox_settings, utcnow())  # a worker claims it, then dies
    assert deliver_due(engine, outbox_settings).delivered == 0, "leased: nobody else takes it"
    (row,) = rows(outbox_settings)
    assert (row.status, row.attempts) == ("pending", 1)

    later = utcnow() + timedelta(seconds=lease_s(outbox_settings) + 1)
    assert deliver_due(engine, outbox_settings, now=later).delivered == 1
    (row,) = rows(outbox_settings)
    assert (row.status, row.attempts) == ("delivered", 2)
    assert [delivery_id for delivery_id, _ in receiver.received] == [claimed.delivery_id]


def test_a_lost_last_attempt_fails_the_row(
    outbox_settings: Any, engine: Any, model_id: str, receiver: Receiver
) -> None:
    from core.db import utcnow

    once = outbox_settings.model_copy(update={"callback_attempts": 1})
    new_requests(once, model_id, receiver.url)
    claim_due(engine, once, utcnow())
    later = utcnow() + timedelta(seconds=lease_s(once) + 1)
    assert deliver_due(engine, once, now=later).delivered == 0
    (row,) = rows(once)
    assert row.status == "failed" and "lost" in (row.last_error or "")
    assert receiver.received == []


def test_a_request_waits_for_its_earlier_callback_and_no_other_request_does(
    outbox_settings: Any, engine: Any, model_id: str, receiver: Receiver
) -> None:
    with running_receiver(Receiver(status=503)) as failing:
        (stuck,) = new_requests(outbox_settings, model_id, failing.url)
        cancel(outbox_settings, stuck)  # its second callback, behind the first
        (other,) = new_requests(outbox_settings, model_id, receiver.url)
        deliver_due(engine, outbox_settings)
        by_request = {(row.request_id, json.loads(row.body)["status"]): row for row in rows(outbox_settings)}
        assert by_request[(other, "queued")].status == "delivered"
        first, second = by_request[(stuck, "queued")], by_request[(stuck, "cancelled")]
        assert (first.status, second.status, second.attempts) == ("pending", "pending", 0)
        assert all(body["status"] == "queued" for _, body in failing.received)

        deadline = time.monotonic() + 30
        while first.status == "pending" and time.monotonic() < deadline:
            deliver_due(engine, outbox_settings)
            time.sleep(0.02)
            first = next(row for row in rows(outbox_settings) if row.id == first.id)
        assert (first.status, first.attempts) == ("failed", 3)
        # Only now, the earlier one given up, does the later one go.
        deliver_due(engine, outbox_settings)
        assert [body["status"] for _, body in failing.received] == ["queued"] * 3 + ["cancelled"]


def test_the_reaper_delivers_what_no_task_announced(
    outbox_settings: Any, model_id: str, receiver: Receiver
) -> None:
    from worker.reaper import Reaper

    (request_id,) = new_requests(outbox_settings, model_id, receiver.url)
    reaper = Reaper.from_settings(outbox_settings, lambda *call: True)
    try:
        reaper.run_once()
    finally:
        reaper.stop()
    (row,) = rows(outbox_settings)
    assert row.status == "delivered"
    assert [(delivery_id, body["id"]) for delivery_id, body in receiver.received] == [
        (row.delivery_id, request_id)
    ]
