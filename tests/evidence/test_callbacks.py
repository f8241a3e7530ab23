"""Callbacks against a real HTTP receiver on 127.0.0.1: signed over the exact bytes, retried with backoff
on 5xx and connection errors, never raising when the receiver is down or refuses."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from worker.callbacks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    deliver_callback,
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


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

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

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/unlearn"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


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
