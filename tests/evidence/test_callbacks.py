"""Callbacks against a real HTTP receiver on 127.0.0.1: signed over the exact bytes, retried with backoff
on 5xx and connection errors, never raising when the receiver is down or refuses."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.callbacks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    deliver_callback,
    flush_callbacks,
    notify_requests,
    sign_body,
    verify_signature,
)

SECRET = "callback-secret-0123456789abcdef0123456789"
RESOURCE = {"id": "req_1", "status": "succeeded", "progress": 1.0, "external_ref": "ticket-ü"}


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    at: float


@dataclass
class Receiver:
    """Answers `fail_status` to the first `failures` POSTs, then `final_status`; records every POST."""

    failures: int = 0
    fail_status: int = 503
    final_status: int = 204
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    url: str = ""


@contextmanager
def running_receiver(state: Receiver, port: int = 0) -> Iterator[Receiver]:
    """Serve `state` on 127.0.0.1:`port` (0: any free port) until the block ends."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.received.append(Received(body, dict(self.headers.items()), time.monotonic()))
            if state.delay_s and len(state.received) == 1:
                time.sleep(state.delay_s)
            status = state.fail_status if len(state.received) <= state.failures else state.final_status
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/unlearn"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver(Receiver()) as state:
        yield state


def test_signed_delivery_succeeds_after_retries_with_growing_backoff(receiver: Receiver) -> None:
    receiver.failures = 2
    outcome = deliver_callback(receiver.url, RESOURCE, SECRET, attempts=5, backoff_s=0.1)
    assert (
        outcome.delivered and outcome.attempts == 3 and outcome.status_code == 204 and outcome.error is None
    )
    assert len(receiver.received) == 3
    first_gap = receiver.received[1].at - receiver.received[0].at
    second_gap = receiver.received[2].at - receiver.received[1].at
    assert first_gap >= 0.1 and second_gap >= 0.2  # 0.1 s, then doubled
    bodies = {r.body for r in receiver.received}
    assert len(bodies) == 1
    body = bodies.pop()
    assert json.loads(body) == RESOURCE
    for got in receiver.received:
        assert got.headers["Content-Type"] == "application/json"
        assert got.headers[DELIVERY_HEADER] == outcome.delivery_id  # retries carry the same delivery id
        assert verify_signature(got.body, got.headers[SIGNATURE_HEADER], SECRET)
    header = receiver.received[0].headers[SIGNATURE_HEADER]
    assert header == sign_body(body, SECRET) and header.startswith("sha256=") and len(header) == 7 + 64
    assert not verify_signature(body, header, "another-secret")
    assert not verify_signature(body.replace(b"succeeded", b"failed"), header, SECRET)
    assert not verify_signature(body, None, SECRET) and not verify_signature(body, header[7:], SECRET)
    assert not verify_signature(body, "sha256=" + "é" * 64, SECRET)  # an untrusted header never raises


def test_persistent_5xx_gives_up_after_the_attempts_without_raising(receiver: Receiver) -> None:
    receiver.failures, receiver.fail_status = 100, 500
    outcome = deliver_callback(receiver.url, RESOURCE, SECRET, attempts=3, backoff_s=0.01)
    assert not outcome.delivered and outcome.attempts == 3 and outcome.status_code == 500
    assert "500" in (outcome.error or "") and len(receiver.received) == 3


def test_a_4xx_refusal_is_not_retried(receiver: Receiver) -> None:
    receiver.failures, receiver.fail_status = 100, 410
    outcome = deliver_callback(receiver.url, RESOURCE, SECRET, attempts=4, backoff_s=0.01)
    assert not outcome.delivered and outcome.attempts == 1 and outcome.status_code == 410
    assert len(receiver.received) == 1


def test_a_timeout_is_retried(receiver: Receiver) -> None:
    receiver.delay_s = 1.0
    outcome = deliver_callback(receiver.url, RESOURCE, SECRET, attempts=3, backoff_s=0.01, timeout_s=0.3)
    assert outcome.delivered and outcome.attempts == 2, outcome
    assert len(receiver.received) == 2


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_receiver_that_is_down_or_a_bad_url_never_raises() -> None:
    down = deliver_callback(
        f"http://127.0.0.1:{_closed_port()}/x", RESOURCE, SECRET, attempts=3, backoff_s=0.01
    )
    assert not down.delivered and down.attempts == 3 and down.status_code is None
    assert "Connect" in (down.error or ""), down.error
    for url in ("ftp://127.0.0.1/x", "not a url", "http://[::1"):
        outcome = deliver_callback(url, RESOURCE, SECRET, attempts=2, backoff_s=0.01)
        assert not outcome.delivered and outcome.error, (url, outcome)
    unserialisable = deliver_callback("http://127.0.0.1:9/", {"x": object()}, SECRET, attempts=1)
    assert not unserialisable.delivered and "TypeError" in (unserialisable.error or "")


def test_notify_requests_posts_the_same_resource_the_api_serves(
    client, keys, admin, ready_model, settings, receiver: Receiver, tmp_path
) -> None:
    body = {
        "model_id": ready_model.model_id,
        "sample_ids": ready_model.train_ids[:2],
        "callback_url": receiver.url,
    }
    with_callback = client.post("/v1/deletion-requests", json=body, headers=admin).json()
    without = client.post(
        "/v1/deletion-requests", json={"model_id": ready_model.model_id, "class": 2}, headers=admin
    ).json()
    flush_callbacks(30)
    (announced,) = receiver.received  # the API's own callback: the request was created queued
    assert json.loads(announced.body)["status"] == "queued"
    receiver.received.clear()
    outcomes = notify_requests(
        settings.database_url, settings.server_secret, [with_callback["id"], without["id"]], backoff_s=0.01
    )
    assert set(outcomes) == {with_callback["id"]} and outcomes[with_callback["id"]].delivered
    (got,) = receiver.received
    assert verify_signature(got.body, got.headers[SIGNATURE_HEADER], settings.server_secret)
    served = client.get(f"/v1/deletion-requests/{with_callback['id']}", headers=keys.headers("reader")).json()
    assert json.loads(got.body) == served
    unreadable = f"sqlite:///{tmp_path}"  # a directory: the database cannot be opened
    assert notify_requests(unreadable, SECRET, [with_callback["id"]]) == {}


def _wait_for_posts(receiver: Receiver, count: int, timeout_s: float = 30.0) -> list[Received]:
    deadline = time.monotonic() + timeout_s
    while len(receiver.received) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return list(receiver.received)


def test_the_api_calls_back_when_it_creates_and_cancels_a_request(
    client, keys, admin, ready_model, settings, receiver: Receiver
) -> None:
    body = {
        "model_id": ready_model.model_id,
        "sample_ids": ready_model.train_ids[:3],
        "callback_url": receiver.url,
    }
    key = {"Idempotency-Key": "callback-order-1"}
    created = client.post("/v1/deletion-requests", json=body, headers={**admin, **key})
    assert created.status_code == 202 and created.json()["status"] == "queued", created.text
    request_id = created.json()["id"]
    cancelled = client.post(f"/v1/deletion-requests/{request_id}/cancel", headers=admin)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    # Neither a replay of the creation nor a refused second cancel changes the status: no callback.
    assert client.post("/v1/deletion-requests", json=body, headers={**admin, **key}).status_code == 200
    assert client.post(f"/v1/deletion-requests/{request_id}/cancel", headers=admin).status_code == 409

    got = _wait_for_posts(receiver, 2)
    flush_callbacks(30)
    assert len(receiver.received) == 2, [json.loads(r.body)["status"] for r in receiver.received]
    resources = [json.loads(r.body) for r in got]
    assert [r["status"] for r in resources] == ["queued", "cancelled"]
    assert resources[0] == created.json()
    served = client.get(f"/v1/deletion-requests/{request_id}", headers=keys.headers("reader")).json()
    assert resources[1] == served == cancelled.json()
    for post in got:
        assert post.headers["Content-Type"] == "application/json"
        assert verify_signature(post.body, post.headers[SIGNATURE_HEADER], settings.server_secret)
        assert not verify_signature(post.body, post.headers[SIGNATURE_HEADER], SECRET)
    assert got[0].headers[DELIVERY_HEADER] != got[1].headers[DELIVERY_HEADER]


def test_a_down_receiver_neither_fails_nor_slows_the_api(
    settings, enqueued, keys, admin, ready_model
) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    backoff_s = 6.0  # a synchronous delivery would wait this long before its second try
    patient = settings.model_copy(update={"callback_attempts": 3, "callback_backoff_s": backoff_s})
    port = _closed_port()
    body = {
        "model_id": ready_model.model_id,
        "class": 4,
        "callback_url": f"http://127.0.0.1:{port}/hooks/unlearn",
    }
    with TestClient(create_app(patient, enqueue=enqueued), raise_server_exceptions=False) as api:
        started = time.monotonic()
        created = api.post("/v1/deletion-requests", json=body, headers=admin)
        create_s = time.monotonic() - started
        assert created.status_code == 202 and created.json()["status"] == "queued", created.text
        request_id = created.json()["id"]
        started_cancel = time.monotonic()
        cancelled = api.post(f"/v1/deletion-requests/{request_id}/cancel", headers=admin)
        cancel_s = time.monotonic() - started_cancel
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
        assert create_s < backoff_s and cancel_s < backoff_s, (create_s, cancel_s)
        served = api.get(f"/v1/deletion-requests/{request_id}", headers=keys.headers("reader")).json()
        assert served["status"] == "cancelled" and served["error"] is None
        assert ("worker.process_model", ready_model.model_id) in enqueued.calls

        # The receiver stays down well past the first try (which starts at the commit), then comes back:
        # the retry delivers the creation, then the cancellation follows, in order.
        time.sleep(max(0.0, started + backoff_s / 2 - time.monotonic()))
        with running_receiver(Receiver(), port) as revived:
            got = _wait_for_posts(revived, 2, timeout_s=backoff_s * 4)
    statuses = [json.loads(post.body)["status"] for post in got]
    assert statuses == ["queued", "cancelled"], statuses
    assert got[0].at - started >= backoff_s * 0.9  # the first try met the dead port; a retry delivered it
    assert all(verify_signature(p.body, p.headers[SIGNATURE_HEADER], settings.server_secret) for p in got)
